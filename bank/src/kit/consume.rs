//! Consuming Kafka by rules, in the shape of Kroo's `vent`: from a topic, on an
//! event type, act. Each event is acted on once (its id is recorded in the same
//! transaction as the action), a failing action is retried with backoff until
//! it succeeds (nothing is skipped), and the position is stored only after the
//! action: every [`SAVE_EVERY`] at most, not after each message (a restart
//! may read the last fraction of a second again; the events acted on are
//! recorded, so they are not acted on twice).
//!
//! Positions live in the service's own database (`consumer_positions`), and the
//! consumer is assigned every partition of its topics instead of joining a
//! consumer group: tansu 0.6 never expires a group member that died without
//! leaving, so a service killed mid-stream would wait forever for its
//! partitions. One consumer per service is what the sandbox runs; Apache Kafka
//! serves assigned partitions the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::{PgConnection, Row};

use super::error::ApiResult;
use super::events::Envelope;
use super::{Check, Kit, kafka, worker};

/// How often the consumer stores its positions, at most.
pub const SAVE_EVERY: Duration = Duration::from_millis(250);

pub type Action = fn(Kit, Envelope) -> Pin<Box<dyn Future<Output = ApiResult<()>> + Send>>;

/// From `topic`, on `event_type`, `act`.
#[derive(Clone)]
pub struct Rule {
    pub topic: String,
    pub event_type: &'static str,
    pub act: Action,
}

/// Record `event_id` as processed in the caller's transaction; `false` when it
/// already was (a redelivery: do nothing).
pub async fn first_time(conn: &mut PgConnection, event_id: uuid::Uuid) -> ApiResult<bool> {
    let inserted = sqlx::query("INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(event_id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Consume by `rules` until shutdown (`group` names the client to the broker).
/// Readiness (`/health`) reports the consumer down until it has its partitions.
pub fn start(kit: &Kit, brokers: String, group: String, rules: Vec<Rule>) {
    kit.set_check("consumer", Check::Down("not subscribed yet".into()));
    let k = kit.clone();
    kit.tasks.spawn(async move {
        if let Err(e) = run(&k, &brokers, &group, &rules).await {
            tracing::error!(error = format!("{e:#}"), "consumer stopped");
            k.set_check("consumer", Check::Down(format!("{e:#}")));
        }
    });
}

async fn run(kit: &Kit, brokers: &str, group: &str, rules: &[Rule]) -> anyhow::Result<()> {
    let mut topics: Vec<String> = rules.iter().map(|r| r.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    // Topics up front (KAFKA.md rule 1); retried until the broker answers.
    let mut retries = worker::RETRY.retries();
    while let Err(e) = kafka::ensure_topics(brokers, &topics).await {
        kit.set_check("consumer", Check::Down(format!("{e:#}")));
        tokio::select! {
            () = tokio::time::sleep(retries.failed()) => {}
            () = kit.shutdown.cancelled() => return Ok(()),
        }
    }
    let consumer = kafka::consumer(brokers, group)?;
    let (assignment, mut resume) = positions(kit, &consumer, &topics).await?;
    consumer.assign(&assignment)?;
    kit.set_check("consumer", Check::Ok);
    tracing::info!(?topics, group, partitions = assignment.count(), "consuming");
    // Positions acted past and not stored yet.
    let mut unsaved: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut saves = tokio::time::interval(SAVE_EVERY);
    saves.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = saves.tick() => {
                if let Err(e) = save_positions(kit, &mut unsaved).await {
                    tracing::warn!(error = format!("{e:#}"), "cannot store the consumer's positions; will try again");
                }
                continue;
            }
            () = kit.shutdown.cancelled() => break,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Read again only to reach the stored position (see `kafka::resume_from`);
        // a partition past it is dropped from `resume`, so once caught up this costs nothing.
        if !resume.is_empty() {
            let at = (message.topic().to_string(), message.partition());
            match resume.get(&at) {
                Some(&next) if message.offset() < next => continue,
                Some(_) => _ = resume.remove(&at),
                None => {}
            }
        }
        let envelope = message.payload().map(serde_json::from_slice::<Envelope>);
        match envelope {
            Some(Ok(envelope)) => {
                if let Some(rule) = rules.iter().find(|r| r.topic == message.topic() && r.event_type == envelope.kind) {
                    let mut retries = worker::RETRY.retries();
                    loop {
                        match (rule.act)(kit.clone(), envelope.clone()).await {
                            Ok(()) => break,
                            Err(e) => {
                                let wait = retries.failed();
                                tracing::warn!(error = %e, event_id = %envelope.id, event_type = %envelope.kind,
                                    trace_id = %envelope.trace_id, retry_in_ms = wait.as_millis() as u64, "action failed; retrying");
                                tokio::select! {
                                    () = tokio::time::sleep(wait) => {}
                                    // Not stored: the next start acts on it.
                                    () = kit.shutdown.cancelled() => return Ok(()),
                                }
                            }
                        }
                    }
                }
            }
            other => tracing::warn!(
                topic = message.topic(),
                offset = message.offset(),
                ?other,
                "not an event envelope; skipped"
            ),
        }
        unsaved.insert((message.topic().to_string(), message.partition()), message.offset() + 1);
    }
    save_positions(kit, &mut unsaved).await
}

/// Every partition of `topics`, each from its stored position (or the
/// beginning), and those positions: the fetch starts up to a batch earlier
/// (`kafka::resume_from`), and what comes before a position is skipped.
async fn positions(
    kit: &Kit,
    consumer: &rdkafka::consumer::StreamConsumer,
    topics: &[String],
) -> anyhow::Result<(TopicPartitionList, BTreeMap<(String, i32), i64>)> {
    let stored =
        sqlx::query("SELECT topic, partition, next_offset FROM consumer_positions").fetch_all(&kit.pool).await?;
    let mut list = TopicPartitionList::new();
    let mut resume = BTreeMap::new();
    for topic in topics {
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in meta.topics() {
            for p in t.partitions() {
                let next = stored
                    .iter()
                    .find(|r| r.get::<String, _>("topic") == *topic && r.get::<i32, _>("partition") == p.id())
                    .map(|r| r.get::<i64, _>("next_offset"));
                let at = match next {
                    Some(next) => {
                        resume.insert((topic.clone(), p.id()), next);
                        Offset::Offset(kafka::resume_from(next))
                    }
                    None => Offset::Beginning,
                };
                list.add_partition_offset(topic, p.id(), at)?;
            }
        }
    }
    Ok((list, resume))
}

/// Store the positions acted past since the last save; those it could not
/// store stay for the next.
async fn save_positions(kit: &Kit, unsaved: &mut BTreeMap<(String, i32), i64>) -> anyhow::Result<()> {
    while let Some(((topic, partition), next)) = unsaved.pop_first() {
        let stored = sqlx::query(
            "INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ($1, $2, $3)
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = $3, updated_at = now()",
        )
        .bind(&topic)
        .bind(partition)
        .bind(next)
        .execute(&kit.pool)
        .await;
        if let Err(e) = stored {
            unsaved.insert((topic, partition), next);
            return Err(e.into());
        }
    }
    Ok(())
}
