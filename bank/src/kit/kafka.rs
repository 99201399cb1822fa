//! Every Kafka client of the bank is made here, with the settings the sandbox's
//! embedded broker (tansu) needs. Each one is harmless against Apache Kafka, so
//! services run unchanged on a laptop's Docker (see shared/KAFKA.md).

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// How long the broker may hold a fetch. tansu holds every fetch for the full
/// wait even when data is ready, so this bounds each hop's latency; each idle
/// consumer costs CPU in proportion to 1/wait. Measured in docs/PERFORMANCE.md.
pub const FETCH_WAIT_MS: &str = "10";

fn base(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Advertised as 127.0.0.1 by the sandbox; no IPv6 detours.
        .set("broker.address.family", "v4")
        .set("socket.keepalive.enable", "true");
    config
}

/// The only producer (the connector's): idempotent, no transactions (tansu has
/// none), and one message per batch (with tansu's memory storage a consumer
/// resuming mid-batch would skip the rest of that batch).
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    base(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .context("cannot create a Kafka producer")
}

/// A consumer named `group`: starts from the earliest offset, reads uncommitted
/// (tansu's PostgreSQL storage fails under read_committed, and there are no
/// transactions to hide), and never commits to the broker: `consume` keeps its
/// positions in the service's database.
pub fn consumer(brokers: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    base(brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .context("cannot create a Kafka consumer")
}

/// Create `topics` if they do not exist. Topics are made up front: tansu does not
/// auto-create on produce, and Apache Kafka should not be relied on to.
pub async fn ensure_topics(brokers: &str, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        base(brokers).create().context("cannot create a Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics.iter().map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results =
        admin.create_topics(new.iter(), &options).await.context("cannot reach the Kafka broker to create topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}
