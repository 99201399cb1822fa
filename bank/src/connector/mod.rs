//! The connector: publishes each service's `/events` log to Kafka, to
//! `<service>.events`, keyed by aggregate id, with the event id, type and trace
//! id as headers. At-least-once: a page's cursor is stored only after every
//! event in it was acknowledged, so a restart resumes from the stored position
//! and may publish the tail of a page again (consumers are idempotent by event id).

use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use crate::kit::error::ApiResult;
use crate::kit::events::Envelope;
use crate::kit::hal::{BaseUrl, Hal};
use crate::kit::openapi::{Document, Links, Routes, get_with};
use crate::kit::{Check, Kit, ServiceSpec, kafka};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "connector",
    migrations: &[(100, "connector positions", include_str!("migrations/0100_connector.sql"))],
    links: &[("sources", "/sources")],
    actions: &[],
    router,
    document: crate::kit::own_document,
    start,
};

/// Events fetched per page; each long-poll waits this long for new ones.
const PAGE: usize = 100;
const WAIT_SECS: u64 = 5;

#[derive(Debug, Clone)]
struct Source {
    name: String,
    url: String,
}

impl Source {
    fn topic(&self) -> String {
        format!("{}.events", self.name)
    }
}

/// `CONNECT_SOURCES=accounts=http://accounts:8080,payments=http://payments:8080`
fn sources(kit: &Kit) -> anyhow::Result<Vec<Source>> {
    let raw = kit.require("CONNECT_SOURCES", "list the services to publish, as name=url,name=url")?;
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (name, url) =
                pair.split_once('=').with_context(|| format!("CONNECT_SOURCES entry `{pair}` is not name=url"))?;
            let url = url.trim().trim_end_matches('/').to_string();
            url::Url::parse(&url).with_context(|| format!("CONNECT_SOURCES: `{url}` is not a URL"))?;
            Ok(Source { name: name.trim().to_string(), url })
        })
        .collect()
}

fn start(kit: &Kit) -> anyhow::Result<()> {
    let sources = sources(kit)?;
    let brokers = kit.require("KAFKA_BROKERS", "point it at the Kafka bootstrap servers")?;
    let producer = kafka::producer(&brokers)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(WAIT_SECS + 5))
        // Only the event logs it was configured with: no redirect elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    kit.set_check("kafka", Check::Down("topics not created yet".into()));
    let topics: Vec<String> = sources.iter().map(Source::topic).collect();
    let linger = Duration::from_millis(kit.setting("CONNECT_LINGER_MS", 10)?);
    let k = kit.clone();
    kit.tasks.spawn(async move {
        // Topics first (rule 1 of KAFKA.md), retried until the broker answers.
        let mut retries = RETRY.retries();
        loop {
            match kafka::ensure_topics(&brokers, &topics).await {
                Ok(()) => break,
                Err(e) => {
                    k.set_check("kafka", Check::Down(format!("{e:#}")));
                    if wait(&mut retries, &k).await.is_err() {
                        return;
                    }
                }
            }
        }
        k.set_check("kafka", Check::Ok);
        for source in sources {
            let (k, producer, http) = (k.clone(), producer.clone(), http.clone());
            k.tasks.clone().spawn(async move { publish(k, source, producer, http, linger).await });
        }
    });
    Ok(())
}

/// Retries of the broker and of a source: 50 ms doubling, at most 2 s.
const RETRY: wire::backoff::Backoff = wire::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Wait out one failure of `retries`; `Err` when the service is shutting down.
async fn wait(retries: &mut wire::backoff::Retries, kit: &Kit) -> Result<(), ()> {
    tokio::select! {
        () = tokio::time::sleep(retries.failed()) => Ok(()),
        () = kit.shutdown.cancelled() => Err(()),
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    cursor: i64,
    head: i64,
    #[serde(rename = "_embedded")]
    embedded: Embedded,
}

#[derive(Debug, Deserialize)]
struct Embedded {
    events: Vec<Envelope>,
}

/// Publish `source`'s events from the stored position on, a page at a time.
/// After a page that was not full, the next is asked for `linger` later, so
/// that events written meanwhile go to the broker together: fewer, larger
/// batches (the embedded broker's work grows with the number of batches a
/// topic holds: docs/PERFORMANCE.md), for at most `linger` more latency.
async fn publish(kit: Kit, source: Source, producer: FutureProducer, http: reqwest::Client, linger: Duration) {
    let topic = source.topic();
    let mut retries = RETRY.retries();
    let mut cursor = match load_cursor(&kit, &source.name).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(source = %source.name, error = %e, "cannot read the stored position");
            return;
        }
    };
    tracing::info!(source = %source.name, cursor, %topic, "publishing");
    while !kit.shutdown.is_cancelled() {
        let url = format!("{}/events?after={cursor}&limit={PAGE}&wait={WAIT_SECS}", source.url);
        let page = tokio::select! {
            r = fetch(&http, &url) => r,
            () = kit.shutdown.cancelled() => break,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                record_error(&kit, &source.name, &format!("{e:#}")).await;
                if wait(&mut retries, &kit).await.is_err() {
                    break;
                }
                continue;
            }
        };
        // The page's events go to the broker together (each its own produce
        // request, in order: the producer is idempotent), not one ack at a
        // time. Until the broker has taken all of them the page is retried
        // from the first it refused: skipping would lose it, and a repeat of
        // one it took is a duplicate consumers drop by event id.
        let events = &page.embedded.events;
        let mut from = 0;
        while from < events.len() {
            let sends = futures::future::join_all(events[from..].iter().map(|e| send(&producer, &topic, e))).await;
            match sends.into_iter().enumerate().find_map(|(i, r)| r.err().map(|e| (i, e))) {
                None => from = events.len(),
                Some((i, e)) => {
                    from += i;
                    record_error(&kit, &source.name, &e).await;
                    if wait(&mut retries, &kit).await.is_err() {
                        return;
                    }
                }
            }
        }
        let sent = events.len() as u64;
        retries.reset();
        cursor = page.cursor;
        metrics::counter!("connector_published_total", "source" => source.name.clone()).increment(sent);
        metrics::gauge!("connector_lag_events", "source" => source.name.clone())
            .set((page.head - cursor).max(0) as f64);
        if let Err(e) = store_cursor(&kit, &source.name, cursor, sent, page.head).await {
            tracing::error!(source = %source.name, error = %e, "cannot store the position; will publish this page again");
        }
        if !events.is_empty() && events.len() < PAGE && !linger.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = kit.shutdown.cancelled() => break,
            }
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Page> {
    let resp = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("GET {url}: {status}");
    }
    resp.json().await.with_context(|| format!("GET {url}: not an event page"))
}

async fn send(producer: &FutureProducer, topic: &str, event: &Envelope) -> Result<(), String> {
    let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let id = event.id.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "event_id", value: Some(id.as_str()) })
        .insert(Header { key: "event_type", value: Some(event.kind.as_str()) })
        .insert(Header { key: "trace_id", value: Some(event.trace_id.as_str()) });
    let record = FutureRecord::to(topic).key(event.aggregate_id.as_str()).payload(&payload).headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| format!("cannot publish {} to {topic}: {e}", event.id))
}

async fn load_cursor(kit: &Kit, source: &str) -> anyhow::Result<i64> {
    let cursor: Option<i64> = sqlx::query_scalar("SELECT cursor FROM positions WHERE source = $1")
        .bind(source)
        .fetch_optional(&kit.pool)
        .await?;
    Ok(cursor.unwrap_or(0))
}

async fn store_cursor(kit: &Kit, source: &str, cursor: i64, sent: u64, head: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO positions (source, cursor, published, head) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source) DO UPDATE SET cursor = $2, published = positions.published + $3, head = $4,
             last_error = NULL, updated_at = now()",
    )
    .bind(source)
    .bind(cursor)
    .bind(sent as i64)
    .bind(head)
    .execute(&kit.pool)
    .await?;
    Ok(())
}

async fn record_error(kit: &Kit, source: &str, error: &str) {
    tracing::warn!(%source, %error, "connector retrying");
    let _ = sqlx::query(
        "INSERT INTO positions (source, cursor, last_error) VALUES ($1, 0, $2)
         ON CONFLICT (source) DO UPDATE SET last_error = $2, updated_at = now()",
    )
    .bind(source)
    .bind(error)
    .execute(&kit.pool)
    .await;
}

fn router() -> Routes {
    Routes::new().api_route(
        "/sources",
        get_with(list_sources, |op| {
            op.id("listSources")
                .summary("Each service whose events the connector publishes to Kafka: how far it got and how far behind it is")
                .answers::<SourceList>(200, "The sources, under `sources`")
                .busy()
        }),
    )
}

/// The connector's sources.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SourceList {
    count: u64,
    #[serde(rename = "_links")]
    links: Links,
    /// The sources, under `sources` (absent when there are none).
    #[serde(rename = "_embedded")]
    embedded: Option<std::collections::BTreeMap<String, Vec<SourceState>>>,
}

/// One service's event log, as the connector publishes it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Source")]
struct SourceState {
    /// The service.
    source: String,
    /// The Kafka topic its events go to.
    topic: String,
    /// The `seq` of the last event published.
    cursor: i64,
    /// Events published since the connector began.
    published: i64,
    /// Events in the service's log not yet published.
    lag: i64,
    /// The last error reading the log or publishing, if the last attempt failed.
    last_error: Option<String>,
}

/// Each source with its position, lag and last error.
async fn list_sources(State(kit): State<Kit>, base: BaseUrl) -> ApiResult<Hal> {
    let rows = sqlx::query("SELECT source, cursor, published, head, last_error FROM positions ORDER BY source")
        .fetch_all(&kit.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            let cursor: i64 = r.try_get("cursor")?;
            let head: i64 = r.try_get("head")?;
            let source: String = r.try_get("source")?;
            let source = SourceState {
                topic: format!("{source}.events"),
                source,
                cursor,
                published: r.try_get("published")?,
                lag: (head - cursor).max(0),
                last_error: r.try_get("last_error")?,
            };
            crate::kit::error::to_json(&source)
        })
        .collect::<ApiResult<Vec<Value>>>()?;
    Ok(Hal::new(&base, "/sources", json!({ "count": items.len() })).embed("sources", items))
}
