//! Consuming Kafka by rules, in the shape of Kroo's `vent`: from a topic, on an
//! event type, act. Each event is acted on once (its id is recorded in the same
//! transaction as the action), a failing action is retried with backoff until
//! it succeeds (nothing is skipped), and the offset is committed only after the
//! action, synchronously on shutdown.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use sqlx::PgConnection;

use super::error::ApiResult;
use super::events::Envelope;
use super::{Kit, kafka, worker};

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

/// Consume in `group` by `rules` until shutdown. Readiness (`/health`) reports
/// the consumer down until it has subscribed.
pub fn start(kit: &Kit, brokers: String, group: String, rules: Vec<Rule>) {
    kit.set_check("consumer", Err("not subscribed yet".into()));
    let k = kit.clone();
    kit.tasks.spawn(async move {
        if let Err(e) = run(&k, &brokers, &group, &rules).await {
            tracing::error!(error = format!("{e:#}"), "consumer stopped");
            k.set_check("consumer", Err(format!("{e:#}")));
        }
    });
}

async fn run(kit: &Kit, brokers: &str, group: &str, rules: &[Rule]) -> anyhow::Result<()> {
    let mut topics: Vec<String> = rules.iter().map(|r| r.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    // Topics up front (KAFKA.md rule 1); retried until the broker answers.
    let mut attempts = 0;
    while let Err(e) = kafka::ensure_topics(brokers, &topics).await {
        attempts += 1;
        kit.set_check("consumer", Err(format!("{e:#}")));
        tokio::select! {
            () = tokio::time::sleep(worker::backoff(attempts)) => {}
            () = kit.shutdown.cancelled() => return Ok(()),
        }
    }
    let consumer = kafka::consumer(brokers, group)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    kit.set_check("consumer", Ok(()));
    tracing::info!(?topics, group, "consuming");
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
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
        let envelope = message.payload().map(serde_json::from_slice::<Envelope>);
        match envelope {
            Some(Ok(envelope)) => {
                if let Some(rule) = rules.iter().find(|r| r.topic == message.topic() && r.event_type == envelope.kind) {
                    let mut attempts = 0;
                    loop {
                        match (rule.act)(kit.clone(), envelope.clone()).await {
                            Ok(()) => break,
                            Err(e) => {
                                attempts += 1;
                                let wait = worker::backoff(attempts);
                                tracing::warn!(error = %e, event_id = %envelope.id, event_type = %envelope.kind,
                                    trace_id = %envelope.trace_id, retry_in_ms = wait.as_millis() as u64, "action failed; retrying");
                                tokio::select! {
                                    () = tokio::time::sleep(wait) => {}
                                    // Not committed: the next consumer of the group acts on it.
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
        consumer.commit_message(&message, CommitMode::Async)?;
    }
    // Commit what was acted on before leaving the group.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final commit failed; redelivery will be absorbed");
    }
    Ok(())
}
