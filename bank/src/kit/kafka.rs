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

/// Messages per produce batch, at most. A consumer resuming inside a batch
/// starts up to this many offsets earlier (see [`resume_from`]).
pub const MAX_BATCH: i64 = 100;

/// The only producer (the connector's): idempotent, no transactions (tansu has
/// none). Batches of up to [`MAX_BATCH`] messages, not one message per batch
/// as shared/KAFKA.md's rule 3 asks of tansu's memory storage: that storage
/// lists every batch of a partition on each fetch, so one message per batch
/// made the broker's work grow with every event ever published, and it bounded
/// the bank at ~100 events a second (docs/PERFORMANCE.md, "Money flows"). The
/// rule's reason, a consumer resuming inside a batch skipping the rest of it,
/// is met where consumers resume instead: [`resume_from`].
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    base(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("batch.num.messages", MAX_BATCH.to_string())
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .context("cannot create a Kafka producer")
}

/// Where to fetch from to resume at `next`: tansu's memory storage serves a
/// fetch from the first batch that *starts* at or after the offset asked for,
/// so asking for an offset inside a batch would skip the rest of that batch.
/// A batch holds at most [`MAX_BATCH`] messages, so the batch holding `next`
/// starts no earlier than this; the consumer skips what comes before `next`.
/// (Apache Kafka serves the holding batch itself; the rewind costs it nothing
/// but a few messages read and skipped.)
pub fn resume_from(next: i64) -> i64 {
    (next - (MAX_BATCH - 1)).max(0)
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
