//! Transaction monitoring: consumes the payments and top-ups events from Kafka
//! (a consumer group, idempotent on event id), screens each transaction with
//! local rules and the screening vendor, and raises a suspicious-transaction
//! alert (`/alerts`, `alert.raised`) naming the transaction and the reasons.
//! While the vendor is down, screening waits and retries: no transaction is
//! skipped. Alerts are closed with an outcome.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;
use wire::payloads::{
    AlertClosed, AlertRaised, Amount, Payload, PaymentCreated, PaymentReceived, TopupSucceeded, TransactionScreened,
    payload,
};
use wire::providers::ScreeningRequest;

use crate::domain::amount;
use crate::kit::client::Client;
use crate::kit::consume::{self, Rule};
use crate::kit::error::{ApiError, ApiResult, to_json};
use crate::kit::events::{self, Envelope, NewEvent};
use crate::kit::hal::{BaseUrl, Hal};
use crate::kit::http::{ApiJson, ApiQuery, MaybeIdempotencyKey, TraceId, parse_id};
use crate::kit::idempotency::{Fingerprint, once};
use crate::kit::openapi::{Document, Id, List, Resource, Routes, get_with, post_with};
use crate::kit::{Kit, ServiceSpec};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "monitoring",
    migrations: &[(100, "monitoring", include_str!("migrations/0100_monitoring.sql"))],
    links: &[("alerts", "/alerts")],
    actions: &[],
    router,
    document: crate::kit::own_document,
    start,
};

/// Thresholds, from settings (defaults in brackets).
#[derive(Debug, Clone)]
struct Rules {
    /// A single amount at or over this (pence) is suspicious [£5,000.00].
    large_amount: i64,
    /// This many payments from one account within `velocity_window` [3 in 60 s].
    velocity_count: i64,
    velocity_window: Duration,
    /// A first payment to a payee at or over this (pence) [£1,000.00].
    new_payee_amount: i64,
    /// A vendor score at or over this [80].
    vendor_threshold: i64,
}

struct Monitoring {
    rules: Rules,
    vendor: String,
    client: Client,
}

fn start(kit: &Kit) -> anyhow::Result<()> {
    let brokers = kit.require("KAFKA_BROKERS", "point it at the Kafka bootstrap servers")?;
    let vendor = kit.require("SCREENING_URL", "point it at the screening vendor")?.trim_end_matches('/').to_string();
    let rules = Rules {
        large_amount: kit.setting("RULE_LARGE_AMOUNT", 500_000)?,
        velocity_count: kit.setting("RULE_VELOCITY_COUNT", 3)?,
        velocity_window: Duration::from_secs(kit.setting("RULE_VELOCITY_WINDOW_SECS", 60)?),
        new_payee_amount: kit.setting("RULE_NEW_PAYEE_AMOUNT", 100_000)?,
        vendor_threshold: kit.setting("RULE_VENDOR_THRESHOLD", 80)?,
    };
    let payments_topic = kit.vars("PAYMENTS_TOPIC").unwrap_or_else(|| "payments.events".into());
    let topups_topic = kit.vars("TOPUPS_TOPIC").unwrap_or_else(|| "topups.events".into());
    let group = kit.vars("CONSUMER_GROUP").unwrap_or_else(|| "monitoring".into());
    let client = Client::new(kit, Duration::from_millis(kit.setting("SCREENING_TIMEOUT_MS", 2000)?))?
        .watched(kit.checks(), "screening-vendor");
    kit.set_own(Monitoring { rules, vendor, client });
    let rules = vec![
        Rule { topic: payments_topic.clone(), event_type: PaymentCreated::TYPE, act: |k, e| Box::pin(screen(k, e)) },
        Rule { topic: payments_topic, event_type: PaymentReceived::TYPE, act: |k, e| Box::pin(screen(k, e)) },
        Rule { topic: topups_topic, event_type: TopupSucceeded::TYPE, act: |k, e| Box::pin(screen(k, e)) },
    ];
    consume::start(kit, brokers, group, rules);
    Ok(())
}

fn router() -> Routes {
    Routes::new()
        .api_route(
            "/alerts",
            get_with(list, |op| {
                op.id("listAlerts")
                    .summary("Suspicious-transaction alerts, the oldest first (500 at most), by status, account or transaction")
                    .answers::<List<Alert>>(200, "The alerts, under `alerts`")
                    .refuses(400, "`status` is neither `open` nor `closed`")
                    .busy()
            }),
        )
        .api_route(
            "/alerts/{id}",
            get_with(show, |op| {
                op.id("getAlert")
                    .summary("An alert: the transaction, why it was raised, and its outcome once closed")
                    .answers::<Resource<Alert>>(200, "The alert; while open, with its `close` action")
                    .leads_to(200, "closeAlert", "id")
                    .refuses(404, "No alert with this id")
                    .busy()
            }),
        )
        .api_route(
            "/alerts/{id}/close",
            post_with(close, |op| {
                op.id("closeAlert")
                    .summary("Close an open alert with its outcome")
                    .answers::<Resource<Alert>>(200, "The alert, `closed`")
                    .refuses(404, "No alert with this id")
                    .refuses(409, "The alert is already closed")
                    .refuses(422, "`outcome` is blank or longer than 64 characters")
                    .busy()
            }),
        )
}

/// A suspicious-transaction alert, as its resource shows it.
#[derive(Debug, Serialize, JsonSchema)]
struct Alert {
    id: Uuid,
    /// `open` or `closed`.
    status: String,
    /// The transaction screened: its URL, or its id when it has none.
    transaction: String,
    /// Why it was raised (the rules that matched, the vendor's word).
    reasons: Vec<String>,
    /// The screening vendor's risk score, 0 to 100, when it answered.
    score: Option<i32>,
    amount: wire::payloads::Amount,
    /// How it was closed (`false_positive`, `confirmed_fraud`, ...).
    outcome: Option<String>,
}

/// What one event says about a transaction.
struct Transaction {
    id: String,
    kind: &'static str,
    account: String,
    payee: Option<String>,
    counterparty: Value,
    amount: i64,
    currency: String,
}

/// What an event says about a transaction: read as the typed payload its
/// producer wrote (`wire::payloads`), `Err` when it is not one.
fn transaction(event: &Envelope) -> Result<Transaction, String> {
    Ok(match event.kind.as_str() {
        PaymentCreated::TYPE => {
            let p: PaymentCreated = payload(event)?;
            Transaction {
                id: p.payment,
                kind: "outbound payment",
                account: p.debtor_account,
                payee: Some(format!("{}/{}", p.to.sort_code, p.to.account_number)),
                counterparty: serde_json::to_value(&p.to).unwrap_or_default(),
                amount: p.amount.amount,
                currency: p.amount.currency,
            }
        }
        PaymentReceived::TYPE => {
            let p: PaymentReceived = payload(event)?;
            Transaction {
                id: format!("inbound/{}", p.scheme_id),
                kind: "inbound payment",
                account: p.account,
                payee: None,
                counterparty: serde_json::to_value(&p.from).unwrap_or_default(),
                amount: p.amount.amount,
                currency: p.amount.currency,
            }
        }
        TopupSucceeded::TYPE => {
            let p: TopupSucceeded = payload(event)?;
            Transaction {
                id: format!("topup/{}", p.topup_id),
                kind: "card top-up",
                account: p.account,
                payee: None,
                counterparty: Value::Null,
                amount: p.amount.amount,
                currency: p.amount.currency,
            }
        }
        other => return Err(format!("a `{other}` event is not screened")),
    })
}

fn pounds(pence: i64) -> String {
    format!("£{}.{:02}", pence / 100, pence % 100)
}

async fn screen(kit: Kit, event: Envelope) -> ApiResult<()> {
    let own = kit.own::<Monitoring>()?;
    let t = match transaction(&event) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(event_id = %event.id, error = %e, "event does not describe a transaction; skipped");
            return Ok(());
        }
    };
    let trace = TraceId(event.trace_id.clone());
    // Whether this event was screened already (a redelivery), and the
    // account's recent payments and its payments to this payee: one read.
    let r = &own.rules;
    let window_ms = r.velocity_window.as_millis() as f64;
    let history = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $5) AS processed,
                (SELECT count(*) FROM transactions WHERE account = $1 AND kind = 'outbound payment'
                   AND happened_at > $3 - $2 * interval '1 millisecond') AS recent,
                EXISTS (SELECT 1 FROM transactions WHERE account = $1 AND payee = $4) AS paid_before",
    )
    .bind(&t.account)
    .bind(window_ms)
    .bind(event.occurred_at)
    .bind(&t.payee)
    .bind(event.id)
    .fetch_one(&kit.pool)
    .await?;
    if history.try_get("processed")? {
        return Ok(());
    }
    // The vendor's view, with no connection held. Unreachable or failing:
    // the whole screening is retried, so no transaction goes unscreened; the
    // vendor answers a repeat (same event id) the same.
    let request = to_json(&ScreeningRequest {
        transaction_id: t.id.clone(),
        account: t.account.clone(),
        amount: Amount { amount: t.amount, currency: t.currency.clone() },
        counterparty: t.counterparty.clone(),
        kind: t.kind.into(),
    })?;
    let screening =
        own.client.post(&format!("{}/screenings", own.vendor), &trace, &event.id.to_string(), &request).await;
    let score = screening.expect_status(200, "the screening vendor")?["score"].as_i64().unwrap_or(0);
    let mut reasons: Vec<String> = Vec::new();
    if t.amount >= r.large_amount {
        reasons.push(format!("large amount: {} is at or over {}", pounds(t.amount), pounds(r.large_amount)));
    }
    if t.kind == "outbound payment" {
        let recent: i64 = history.try_get("recent")?;
        let paid_before: bool = history.try_get("paid_before")?;
        if recent + 1 >= r.velocity_count {
            reasons.push(format!(
                "velocity: {} payments from this account within {} s",
                recent + 1,
                r.velocity_window.as_secs()
            ));
        }
        if !paid_before && t.amount >= r.new_payee_amount {
            reasons.push(format!("new payee: first payment to this payee is {}", pounds(t.amount)));
        }
    }
    if score >= r.vendor_threshold {
        reasons.push(format!("screening vendor scored the transaction {score}"));
    }
    let alert = (!reasons.is_empty()).then(Uuid::now_v7);
    let mut raised = None;
    if let Some(id) = alert {
        let alert = AlertRaised {
            alert_id: id,
            transaction: t.id.clone(),
            kind: t.kind.into(),
            account: t.account.clone(),
            amount: Amount { amount: t.amount, currency: t.currency.clone() },
            reasons: reasons.clone(),
            score,
        };
        raised = Some(NewEvent::of(id.to_string(), &alert)?);
    }
    // Every screening is on record, alert or not: "screened, nothing found" is
    // an outcome a reader (an auditor, a test) can wait for.
    let screened = TransactionScreened {
        transaction: t.id.clone(),
        kind: t.kind.into(),
        account: t.account.clone(),
        score,
        alert_id: alert,
    };
    let screened = NewEvent::of(t.id.clone(), &screened)?;
    let events: Vec<&NewEvent<'_>> = raised.iter().chain([&screened]).collect();
    // The event marked screened (unless a redelivery got there first), the
    // transaction remembered with the screening's outcome (so a retried
    // screening sees the same history), the alert and the events: one
    // statement, no transaction around it.
    let screened = events::append_on_change(
        &kit,
        &trace,
        &events,
        "first AS (
             INSERT INTO processed_events (event_id) VALUES ($17) ON CONFLICT DO NOTHING RETURNING event_id
         ),
         remembered AS (
             INSERT INTO transactions (id, kind, account, payee, amount, currency, event_id, trace_id, score, happened_at)
             SELECT $11, $12, $13, $14, $15, $16, $17, $18, $19, $20 FROM first ON CONFLICT (id) DO NOTHING
         ),
         alerted AS (
             INSERT INTO alerts (id, transaction_id, account, reasons, score, status)
             SELECT $21, $11, $13, $22, $19, 'open' FROM first WHERE $21 IS NOT NULL
         ),
         change AS (SELECT $11 AS transaction FROM first)",
        |q| {
            q.bind(&t.id)
                .bind(t.kind)
                .bind(&t.account)
                .bind(&t.payee)
                .bind(t.amount)
                .bind(&t.currency)
                .bind(event.id)
                .bind(&event.trace_id)
                .bind(score as i32)
                .bind(event.occurred_at)
                .bind(alert)
                .bind(json!(reasons))
        },
    )
    .await?;
    if screened.is_some() && alert.is_some() {
        tracing::info!(trace_id = %trace.0, transaction = %t.id, ?reasons, "suspicious-transaction alert raised");
    }
    Ok(())
}

fn alert_hal(base: &BaseUrl, row: &PgRow) -> ApiResult<Hal> {
    let id: Uuid = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let transaction: String = row.try_get("transaction_id")?;
    let currency = crate::domain::Currency::parse(row.try_get::<String, _>("currency")?.trim())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let reasons: Value = row.try_get("reasons")?;
    let state = Alert {
        id,
        status: status.clone(),
        transaction: transaction.clone(),
        reasons: serde_json::from_value(reasons).map_err(|e| ApiError::Internal(e.into()))?,
        score: row.try_get("score")?,
        amount: amount(row.try_get("amount")?, currency),
        outcome: row.try_get("outcome")?,
    };
    let mut hal =
        Hal::of(base, &format!("/alerts/{id}"), &state).link_url("account", &row.try_get::<String, _>("account")?);
    if transaction.starts_with("http") {
        hal = hal.link_url("transaction", &transaction);
    }
    if status == "open" {
        hal = hal.action("close", "POST", &format!("/alerts/{id}/close"));
    }
    Ok(hal)
}

const ALERT_SELECT: &str =
    "SELECT a.*, t.amount, t.currency FROM alerts a JOIN transactions t ON t.id = a.transaction_id";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    /// `open` or `closed`.
    status: Option<AlertStatus>,
    /// An account's URL: only its alerts.
    account: Option<String>,
    /// A transaction's URL (or id): only its alerts.
    transaction: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum AlertStatus {
    Open,
    Closed,
}

impl AlertStatus {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

async fn list(State(kit): State<Kit>, base: BaseUrl, ApiQuery(q): ApiQuery<AlertQuery>) -> ApiResult<Hal> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{ALERT_SELECT} WHERE ($1::text IS NULL OR a.status = $1) AND ($2::text IS NULL OR a.account = $2)
           AND ($3::text IS NULL OR a.transaction_id = $3) ORDER BY a.raised_at LIMIT 500"
    )))
    .bind(q.status.as_ref().map(AlertStatus::as_str))
    .bind(&q.account)
    .bind(&q.transaction)
    .fetch_all(&kit.pool)
    .await?;
    let items = rows.iter().map(|r| alert_hal(&base, r).map(Hal::into_value)).collect::<ApiResult<Vec<_>>>()?;
    Ok(Hal::new(&base, "/alerts", json!({ "count": items.len() })).embed("alerts", items))
}

async fn show(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    let id = parse_id(&id, "alert")?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{ALERT_SELECT} WHERE a.id = $1")))
        .bind(id)
        .fetch_optional(&kit.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("alert `{id}`")))?;
    alert_hal(&base, &row)
}

/// How the alert ends.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Close {
    /// 1 to 64 characters, e.g. `false_positive`, `confirmed_fraud`, `customer_contacted`.
    #[schemars(length(min = 1, max = 64), example = &"false_positive")]
    outcome: String,
}

async fn close(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    Path(Id { id }): Path<Id>,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    ApiJson(input): ApiJson<Close>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "alert")?;
    let outcome = input.outcome.trim().to_string();
    if outcome.is_empty() || outcome.len() > 64 {
        return Err(ApiError::unprocessable(
            "invalid-outcome",
            "`outcome` must be 1 to 64 characters, e.g. false_positive",
        ));
    }
    let fp = Fingerprint::new(format!("POST /alerts/{id}/close"), &input);
    once(&kit, key.as_ref(), fp, async |conn| {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM alerts WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        match status.as_deref() {
            None => return Err(ApiError::not_found(format!("alert `{id}`"))),
            Some("closed") => {
                return Err(ApiError::conflict("alert-closed", format!("alert `{id}` is already closed")));
            }
            _ => {}
        }
        sqlx::query("UPDATE alerts SET status = 'closed', outcome = $2, closed_at = now() WHERE id = $1")
            .bind(id)
            .bind(&outcome)
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{ALERT_SELECT} WHERE a.id = $1")))
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        let closed = AlertClosed { alert_id: id, outcome: outcome.clone() };
        events::append(&mut *conn, &trace, NewEvent::of(id.to_string(), &closed)?).await?;
        alert_hal(&base, &row)
    })
    .await
}
