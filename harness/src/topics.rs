//! What the bank published: one reader of every `<service>.events` topic on the
//! sandbox's broker, keeping each event it saw, so that many waiters (concurrent
//! scenarios, the audit, the TUI's events pane) share one consumer. Its settings
//! follow shared/KAFKA.md's rules for consumers: earliest, read_uncommitted, a
//! short fetch wait, topics listed (never auto-created), "seen" meaning read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// One event as read from Kafka.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub offset: i64,
    pub event: wire::Envelope,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    ids: std::collections::HashSet<uuid::Uuid>,
}

/// A running reader; stops when dropped.
pub struct Topics {
    inner: Arc<Mutex<Inner>>,
    count: watch::Receiver<usize>,
    topics: Vec<String>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").field("topics", &self.topics).field("seen", &*self.count.borrow()).finish()
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every service's event topic (`<service>.events`), as a librdkafka pattern.
const EVENTS_PATTERN: &str = "^.*[.]events$";

/// A consumer of the sandbox's broker under a group of its own. tansu holds
/// every fetch for the full `fetch_wait`: short for tests that time things,
/// longer for a viewer, which then wakes less often.
pub fn consumer(brokers: &str, group: &str, fetch_wait: Duration) -> Result<StreamConsumer> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        // How soon a topic created later matches a pattern subscription.
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .map_err(|e| Error::Kafka(format!("cannot create a Kafka consumer for {brokers}: {e}")))
}

impl Topics {
    /// Read every topic named `*.events` on `brokers` from the beginning, each
    /// event seen within tens of milliseconds of its publication.
    pub async fn start(brokers: &str) -> Result<Self> {
        Self::start_with(brokers, Duration::from_millis(10)).await
    }

    /// The same, holding each fetch up to `fetch_wait`.
    pub async fn start_with(brokers: &str, fetch_wait: Duration) -> Result<Self> {
        let consumer = consumer(brokers, &format!("sandbox-reader-{}", uuid::Uuid::new_v4()), fetch_wait)?;
        let (consumer, topics) = tokio::task::spawn_blocking(move || {
            let meta = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| Error::Kafka(format!("cannot list the broker's topics: {e}")))?;
            let mut topics: Vec<String> =
                meta.topics().iter().map(|t| t.name().to_string()).filter(|n| n.ends_with(".events")).collect();
            topics.sort();
            Ok::<_, Error>((consumer, topics))
        })
        .await
        .map_err(|e| Error::Panicked(e.to_string()))??;
        if topics.is_empty() {
            return Err(Error::Kafka(format!(
                "the broker at {brokers} has no `*.events` topics yet; the connector creates them when it starts"
            )));
        }
        // By pattern, not by the names seen now: services create their topics as
        // they start (monitoring those it consumes, the connector every
        // service's), and a topic made later is picked up at the next metadata
        // refresh.
        consumer
            .subscribe(&[EVENTS_PATTERN])
            .map_err(|e| Error::Kafka(format!("cannot subscribe to {EVENTS_PATTERN}: {e}")))?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (tx, count) = watch::channel(0);
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let msg = match consumer.recv().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!("Kafka reader: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Some(Ok(event)) = msg.payload().map(serde_json::from_slice::<wire::Envelope>) else { continue };
                let seen = Seen { topic: msg.topic().to_string(), offset: msg.offset(), event, at: Instant::now() };
                let n = {
                    let mut inner = shared.lock().unwrap_or_else(|e| e.into_inner());
                    // At-least-once delivery may repeat an event; keep the first.
                    if inner.ids.insert(seen.event.id) {
                        inner.seen.push(seen);
                    }
                    inner.seen.len()
                };
                let _ = tx.send(n);
            }
        });
        Ok(Self { inner, count, topics, task })
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn contains(&self, id: uuid::Uuid) -> bool {
        self.lock().ids.contains(&id)
    }

    /// The events read after the first `from`, and how many were read in all:
    /// a follower keeps the count and asks again.
    pub fn since(&self, from: usize) -> (Vec<Seen>, usize) {
        let inner = self.lock();
        let n = inner.seen.len();
        (inner.seen.get(from.min(n)..).map(<[Seen]>::to_vec).unwrap_or_default(), n)
    }

    /// Every event seen so far that `matches`, in the order read.
    pub fn find(&self, matches: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        self.lock().seen.iter().filter(|s| matches(s)).cloned().collect()
    }

    /// Wait for an event that `matches`; on the deadline, an error naming `what`.
    pub async fn wait_for(&self, what: &str, within: Duration, matches: impl Fn(&Seen) -> bool) -> Result<Seen> {
        let mut count = self.count.clone();
        let deadline = tokio::time::Instant::now() + within;
        let mut from = 0;
        loop {
            {
                let inner = self.lock();
                if let Some(s) = inner.seen[from..].iter().find(|s| matches(s)) {
                    return Ok(s.clone());
                }
                from = inner.seen.len();
            }
            tokio::select! {
                changed = count.changed() => if changed.is_err() {
                    return Err(Error::Kafka(format!("{what}: the Kafka reader stopped")));
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::Kafka(format!(
                        "{what}: not on Kafka within {} s ({} events read from {})",
                        within.as_secs_f32(), from, self.topics.join(", ")
                    )));
                }
            }
        }
    }
}
