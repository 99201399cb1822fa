//! The service's own append-only event log, served at `GET /events`.
//!
//! A state change and its event are written in one transaction, and appends
//! never wait for each other. Readers page by an event's *position*, which a
//! sequencer gives only to committed events, in the order they were written,
//! one sequencer at a time: a reader can never skip an event that committed
//! late (the classic outbox gap, where numbers taken at insert become visible
//! out of order). Until 2026-12-03 every append took a per-service lock held
//! to commit instead, and a service's writers queued on it
//! (docs/PERFORMANCE.md, "Money flows").

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::sync::watch;
use uuid::Uuid;

use super::Kit;
use super::error::{ApiError, ApiResult};
use super::hal::{BaseUrl, Hal};
use super::http::{ApiQuery, TraceId};
use super::idempotency::Answer;
use super::openapi::{self, Document, Routes, get_with};

/// Events positioned by one run of the sequencer, at most.
const SEQUENCER_BATCH: i64 = 5000;
const MAX_PAGE: i64 = 1000;
const MAX_WAIT: Duration = Duration::from_secs(30);

pub use wire::Envelope;

/// An event about to be appended.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub aggregate_id: String,
    pub data: Value,
}

impl NewEvent<'static> {
    /// An event whose payload is one of the typed bodies services consume
    /// (`wire::payloads`): its type comes with it.
    pub fn of<P: wire::payloads::Payload>(aggregate_id: impl Into<String>, payload: &P) -> ApiResult<Self> {
        Ok(Self { kind: P::TYPE, aggregate_id: aggregate_id.into(), data: super::error::to_json(payload)? })
    }

    /// An event of type `P` whose payload the appending statement completes
    /// (its `event_data`, see [`append_with`]): `data` is what the service
    /// knows before it runs. The e2e runner checks every event read from
    /// Kafka against `P`'s schema, so the two parts must make a `P`.
    pub fn completed_by_statement<P: wire::payloads::Payload>(aggregate_id: impl Into<String>, data: Value) -> Self {
        Self { kind: P::TYPE, aggregate_id: aggregate_id.into(), data }
    }
}

/// Append `event` inside the caller's transaction; it becomes visible when that
/// transaction commits, and readers see it once the sequencer has positioned it.
pub async fn append<'c>(conn: impl sqlx::PgExecutor<'c>, trace: &TraceId, event: NewEvent<'_>) -> ApiResult<()> {
    append_with(conn, trace, &[&event], None, "change AS (SELECT 1 AS appended)", |q| q).await?;
    Ok(())
}

/// Append `event` as a change of its own: one statement outside any
/// transaction (one round trip, no BEGIN or COMMIT).
pub async fn append_alone(kit: &Kit, trace: &TraceId, event: NewEvent<'_>) -> ApiResult<()> {
    append(&kit.pool, trace, event).await?;
    kit.appended.bump();
    Ok(())
}

/// Make `change` and append `events`, in order, only if it returned a row:
/// one statement, one round trip, in the caller's transaction or, on the
/// pool, a transaction of its own (then the change and its events commit
/// together without BEGIN and COMMIT). With `answer`, the keyed request's
/// answer is stored in the same statement, with the change (a repeat fails on
/// the key and changes nothing: `idempotency::once_stored`). Returns the
/// change's row; `None` when it changed nothing.
///
/// `change` is the statement's common table expressions, the last one named
/// `change` and returning at most one row (`change AS (UPDATE … RETURNING
/// *)`, or `debit AS (…), change AS (…)`); its parameters are `$11` on, bound
/// by `bind` (`$1` to `$10` are the events' and the answer's). A column
/// `event_data` of the change (a JSON object) is merged into every event's
/// data: what only the statement knows, such as a balance after a debit.
pub async fn append_with<'q, 'c>(
    conn: impl sqlx::PgExecutor<'c>,
    trace: &'q TraceId,
    events: &'q [&'q NewEvent<'q>],
    answer: Option<&'q Answer>,
    change: &'static str,
    bind: impl FnOnce(PgQuery<'q>) -> PgQuery<'q>,
) -> ApiResult<Option<PgRow>> {
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    // `change` is compile-time text, never input.
    let sql = format!(
        "WITH {change},
         appended AS (
             INSERT INTO events (id, type, aggregate_id, trace_id, data)
             SELECT e.id, e.type, e.aggregate_id, $4, e.data || coalesce(to_jsonb(change) -> 'event_data', '{{}}')
             FROM change, unnest($1::uuid[], $2::text[], $3::text[], $5::jsonb[])
                  WITH ORDINALITY AS e(id, type, aggregate_id, data, n)
             ORDER BY e.n
         ),
         answered AS (
             INSERT INTO idempotency_keys (scope, key, request, status, body)
             SELECT $6, $7, $8, $9, $10 FROM change WHERE $6::text IS NOT NULL
         )
         SELECT * FROM change"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids.clone())
        .bind(events.iter().map(|e| e.kind).collect::<Vec<&str>>())
        .bind(events.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<&str>>())
        .bind(trace.0.as_str())
        .bind(events.iter().map(|e| &e.data).collect::<Vec<&Value>>())
        .bind(answer.map(|a| a.scope.as_str()))
        .bind(answer.map(|a| a.key.as_str()))
        .bind(answer.map(|a| a.request.as_str()))
        .bind(answer.map(|a| a.status.as_u16() as i16))
        .bind(answer.map(|a| &a.body));
    let row = bind(query).fetch_optional(conn).await?;
    if row.is_some() {
        for (id, event) in ids.into_iter().zip(events.iter().copied()) {
            logged(id, event);
        }
    }
    Ok(row)
}

/// [`append_with`] on the pool: the change and its events are a transaction
/// of their own, and the service's event readers are woken. `None` when
/// nothing changed.
pub async fn append_on_change<'q>(
    kit: &Kit,
    trace: &'q TraceId,
    events: &'q [&'q NewEvent<'q>],
    change: &'static str,
    bind: impl FnOnce(PgQuery<'q>) -> PgQuery<'q>,
) -> ApiResult<Option<PgRow>> {
    let row = append_with(&kit.pool, trace, events, None, change, bind).await?;
    if row.is_some() {
        kit.appended.bump();
    }
    Ok(row)
}

fn logged(id: Uuid, event: &NewEvent<'_>) {
    tracing::info!(event_id = %id, event_type = event.kind, aggregate_id = %event.aggregate_id, "event appended");
}

/// A query of [`append_with`], its change's parameters still to bind.
pub type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Wakes long-polling readers when something was committed.
#[derive(Debug, Clone)]
pub struct Appended(watch::Sender<u64>);

impl Appended {
    pub fn new() -> Self {
        Self(watch::Sender::new(0))
    }

    pub fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

impl Default for Appended {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Cursor: the `seq` of the last event the reader has seen (0, the default: from the start).
    #[schemars(range(min = 0))]
    after: Option<i64>,
    /// Events at most in the page (default 100).
    #[schemars(range(min = 1, max = MAX_PAGE))]
    limit: Option<i64>,
    /// Seconds to wait for a new event when there is none after the cursor (at most 30; default 0).
    #[schemars(range(min = 0, max = 30))]
    wait: Option<f64>,
}

/// A page of the service's event log.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct EventPage {
    /// Events in this page.
    count: u64,
    /// The `seq` of the page's last event: the `after` of the next page.
    cursor: i64,
    /// The `seq` of the newest event in the log.
    head: i64,
    #[serde(rename = "_links")]
    links: openapi::Links,
    /// The page's events, under `events` (absent when there are none).
    #[serde(rename = "_embedded")]
    embedded: Option<BTreeMap<String, Vec<EventRecord>>>,
}

/// One event as the log keeps it (`wire::Envelope`) and its place in the log.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct EventRecord {
    id: uuid::Uuid,
    /// The event's type (`payment.created`, ...): `/contracts/events` has its payload's schema.
    #[serde(rename = "type")]
    kind: String,
    aggregate_id: String,
    #[schemars(extend("format" = "date-time"))]
    occurred_at: String,
    trace_id: String,
    data: serde_json::Map<String, Value>,
    seq: i64,
}

pub fn router() -> Routes {
    Routes::new().api_route(
        "/events",
        get_with(list, |op| {
            op.id("events")
                .summary("The service's events, in the order they happened, a page at a time (a long poll with `wait`)")
                .answers::<EventPage>(200, "A page of events, maybe empty, with a `next` link")
                .refuses(400, "`after`, `limit` or `wait` is out of range")
                .busy()
        }),
    )
}

async fn list(State(kit): State<Kit>, base: BaseUrl, ApiQuery(q): ApiQuery<EventsQuery>) -> ApiResult<Hal> {
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request("bad-cursor", "`after` must be a cursor from a previous page (0 or more)"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("bad-limit", format!("`limit` must be between 1 and {MAX_PAGE}")));
    }
    let wait = match q.wait {
        None => Duration::ZERO,
        Some(w) if w.is_finite() && w >= 0.0 && w <= MAX_WAIT.as_secs_f64() => Duration::from_secs_f64(w),
        Some(_) => {
            return Err(ApiError::bad_request("bad-wait", "`wait` must be a number of seconds, 0 to 30"));
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut appended = kit.appended.subscribe();
    let (page, head) = loop {
        appended.borrow_and_update();
        // The page, and the newest event's cursor: readers (the connector)
        // report their lag from it.
        let (head, page) = read_page(&kit, after, limit).await?;
        if !page.is_empty() || tokio::time::Instant::now() >= deadline {
            break (page, head);
        }
        tokio::select! {
            changed = appended.changed() => if changed.is_err() { break (page, head) },
            () = tokio::time::sleep_until(deadline) => {}
            () = kit.shutdown.cancelled() => break (page, head),
        }
    };
    let last = page.last().map_or(after, |(seq, _)| *seq);
    let items = page
        .into_iter()
        .map(|(seq, e)| {
            let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
            v["seq"] = json!(seq);
            v
        })
        .collect::<Vec<_>>();
    let count = items.len();
    let self_path = format!("/events?after={after}&limit={limit}");
    Ok(Hal::new(&base, &self_path, json!({ "count": count, "cursor": last, "head": head.max(last) }))
        .link("next", &format!("/events?after={last}&limit={limit}"))
        .embed("events", items))
}

/// The sequencer, then the page after `after`: one round trip (the function,
/// migration 0006, runs `position_events`, migration 0005). The sequencer
/// gives every committed event without a position the next ones, in the
/// order the events were written, one run at a time (a lock held to its
/// commit), so positions become visible in increasing order: an event
/// committed later gets a later position, never one a reader has passed.
/// Returns the newest position and the page.
async fn read_page(kit: &Kit, after: i64, limit: i64) -> ApiResult<(i64, Vec<(i64, Envelope)>)> {
    let rows = sqlx::query("SELECT * FROM events_after($1, $2, $3)")
        .bind(after)
        .bind(limit)
        .bind(SEQUENCER_BATCH)
        .fetch_all(&kit.pool)
        .await?;
    let head = match rows.first() {
        Some(row) => row.try_get("head")?,
        None => 0,
    };
    let page = rows
        .iter()
        .filter_map(|row| match row.try_get::<Option<i64>, _>("event_position") {
            Ok(Some(position)) => Some(envelope(row).map(|e| (position, e))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((head, page))
}

fn envelope(row: &PgRow) -> Result<Envelope, sqlx::Error> {
    Ok(Envelope {
        id: row.try_get("event_id")?,
        kind: row.try_get("event_type")?,
        aggregate_id: row.try_get("event_aggregate_id")?,
        occurred_at: row.try_get("event_occurred_at")?,
        trace_id: row.try_get("event_trace_id")?,
        data: row.try_get("event_data")?,
    })
}
