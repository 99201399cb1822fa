//! The payments service: outbound and inbound Faster Payments.
//!
//! Outbound: `POST /payments` reserves the funds with a hold on the debtor's
//! account (found by following its links), answers 202, and a background
//! submitter sends the payment to the scheme, retrying with backoff while the
//! scheme is down or slow, always under the payment's own id so that the scheme
//! never sees it twice. The scheme's webhook finishes it: settled captures the
//! hold (`payment.completed`), rejected releases it (`payment.failed` with the
//! scheme's reason code). Every step is idempotent, so a restart anywhere
//! finishes the payment exactly once.
//!
//! Inbound: the scheme's `payment.received` credits the named account, or, when
//! no account has those details, returns the payment to the scheme.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reqwest::Method;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tokio::sync::Notify;
use uuid::Uuid;
use wire::payloads::{
    Amount, Details, InboundPayment, PaymentCompleted, PaymentCreated, PaymentFailed, PaymentReceived, PaymentReturned,
    PaymentSubmitted, SchemeWebhook,
};
use wire::providers::{SchemePayment, SchemePaymentStatus, SchemeReturn};

use crate::domain::{AccountNumber, AccountRef, Currency, IdempotencyKey, Money, MoneyInput, SortCode, amount};
use crate::kit::client::{self, Client, Reply, link};
use crate::kit::error::{ApiError, ApiResult, to_json};
use crate::kit::events::{self, NewEvent};
use crate::kit::hal::{self, BaseUrl, Hal, rfc3339};
use crate::kit::http::{ApiJson, ApiQuery, TraceId};
use crate::kit::idempotency::{Fingerprint, once_calling};
use crate::kit::openapi::{Document, Id, List, Resource, Routes, get_with, post_with};
use crate::kit::{Check, Kit, ServiceSpec, listing, worker};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "payments",
    migrations: &[
        (100, "payments", include_str!("migrations/0100_payments.sql")),
        (101, "inbound claims", include_str!("migrations/0101_inbound_claims.sql")),
        (102, "hold actions", include_str!("migrations/0102_hold_actions.sql")),
    ],
    links: &[("payments", "/payments")],
    actions: &[("create-payment", "/payments")],
    router,
    document: crate::kit::own_document,
    start,
};

/// Payment ids derive from the idempotency key, so a request retried after a
/// crash places the same hold and sends the same payment.
const PAYMENT_IDS: Uuid = Uuid::from_u128(0x6261_6e6b_2d70_6179_6d65_6e74_732d_6964);

struct Payments {
    accounts: String,
    scheme: String,
    /// Calls to the accounts service.
    client: Client,
    /// Calls to the payment scheme.
    scheme_client: Client,
    /// How long a submitter's claim on a payment lasts.
    lease: Duration,
    /// Wakes the submitter when a payment is created.
    wake: Notify,
    /// Each debtor account's `place-hold` link, as the account gave it: read
    /// once per account, not before every payment.
    place_hold: std::sync::Mutex<HashMap<String, String>>,
    /// A payment submitted this long ago with no word from the scheme is
    /// asked about (`RECONCILE_AFTER_MS`).
    reconcile_after: Duration,
}

/// Accounts whose `place-hold` link is kept, at most; past that the links
/// are forgotten and read again.
const KEPT_LINKS: usize = 10_000;

fn start(kit: &Kit) -> anyhow::Result<()> {
    let accounts = kit.require("ACCOUNTS_URL", "point it at the accounts service")?.trim_end_matches('/').to_string();
    let scheme = kit.require("SCHEME_URL", "point it at the payment scheme")?.trim_end_matches('/').to_string();
    // The kit's guard checks the scheme's webhooks with it.
    kit.require("WEBHOOK_SECRET", "the secret the payment scheme signs its webhooks with")?;
    let timeout = Duration::from_millis(kit.setting("SCHEME_TIMEOUT_MS", 2000)?);
    let scheme_client = Client::new(kit, timeout)?.watched(kit.checks(), "payment-scheme");
    let client = Client::new(kit, Duration::from_millis(kit.setting("ACCOUNTS_TIMEOUT_MS", 2000)?))?
        .watched(kit.checks(), "accounts");
    let submitters: usize = kit.setting("SUBMITTERS", 8)?;
    let lease = worker::lease(kit, timeout)?;
    let place_hold = std::sync::Mutex::default();
    // The scheme's webhooks are retried for about 13 s; a payment still
    // submitted well after that lost its webhook.
    let reconcile_after = Duration::from_millis(kit.setting("RECONCILE_AFTER_MS", 30_000)?);
    kit.set_own(Payments {
        accounts,
        scheme,
        client,
        scheme_client,
        lease,
        wake: Notify::new(),
        place_hold,
        reconcile_after,
    });
    let k = kit.clone();
    kit.tasks.spawn(async move { reconciler(k).await });
    // Several submitters: each claims a different due payment, so a slow scheme
    // call holds up one payment, not the queue (and no database connection).
    let of = submitters.max(1) as u32;
    for index in 0..of {
        let k = kit.clone();
        kit.tasks.spawn(async move { submitter(k, worker::Turn { index, of }).await });
    }
    Ok(())
}

fn router() -> Routes {
    Routes::new()
        .api_route(
            "/payments",
            get_with(list, |op| {
                op.id("listPayments")
                    .summary("The newest payments, or an account's (`?account=<its URL>`)")
                    .answers::<List<Payment>>(200, "Payments, the newest first, under `payments`")
                    .refuses(400, "`limit` is not 1 to 500")
                    .busy()
            })
            .post_with(create, |op| {
                op.id("createPayment")
                    .summary("Pay someone at another bank (Faster Payments): the funds are held at once, the scheme called after")
                    .answers::<Resource<Payment>>(202, "The payment, `reserved`: its hold is placed and the scheme will be called")
                    .leads_to(202, "getPayment", "id")
                    .refuses(422, "A field is out of its limits (the detail names it), `from` is not an account of this bank, or the account has insufficient funds")
                    .refuses(503, "The accounts service did not answer; retry with the same `Idempotency-Key`")
                    .busy()
            }),
        )
        .api_route(
            "/payments/{id}",
            get_with(show, |op| {
                op.id("getPayment")
                    .summary("A payment and how far it got")
                    .answers::<Resource<Payment>>(200, "The payment, with links to its debtor account and hold")
                    .refuses(404, "No payment with this id")
                    .busy()
            }),
        )
        .api_route(
            "/webhooks/payment-scheme",
            post_with(scheme_webhook, |op| {
                op.id("paymentSchemeWebhook")
                    .summary("The payment scheme's word on a payment: settled, rejected, or one received for a customer")
                    .signed_webhook("")
                    .answers_as::<WebhookAck>(200, "application/json", "Processed, or a repeat of one already processed")
                    .refuses(404, "The webhook names a payment this bank did not make")
                    .refuses(422, "The webhook names something that is not a payment id, or a payment in a state it cannot move from")
                    .refuses(503, "The accounts service or the scheme did not answer; the scheme will deliver again")
            }),
        )
}

/// What the bank answers a provider's webhook.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WebhookAck {
    /// The payment (or top-up) it was about, when the bank knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<Uuid>,
    /// The provider's own id, for an inbound payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme_id: Option<String>,
    /// `processed`, or the status the payment already had.
    pub status: String,
    /// True when the webhook repeats one already processed: nothing changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

impl WebhookAck {
    fn answer(self) -> Response {
        (StatusCode::OK, axum::Json(self)).into_response()
    }
}

/// A payment to another bank, as its resource shows it.
#[derive(Debug, Serialize, JsonSchema)]
struct Payment {
    id: Uuid,
    /// `reserved` (funds held, not yet accepted by the scheme), `submitted`,
    /// `completed` (settled, hold captured) or `failed` (hold released).
    status: String,
    amount: Amount,
    to: Details,
    reference: String,
    /// The scheme's id for it, once submitted.
    scheme_id: Option<String>,
    /// Calls made to the scheme so far.
    attempts: i32,
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
    #[schemars(extend("format" = "date-time"))]
    updated_at: String,
    /// Why it failed (the scheme's reason code), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
    /// The last error calling the scheme, while it is still `reserved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
struct Failure {
    reason: String,
    description: Option<String>,
}

/// Who is paid: a UK bank account.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Party {
    /// The account holder's name, 1 to 140 characters.
    #[schemars(length(min = 1, max = 140), example = &"Carol")]
    name: String,
    /// Six digits, with or without dashes.
    #[schemars(pattern(r"^[0-9]{2}-?[0-9]{2}-?[0-9]{2}$"), example = &"20-00-00")]
    sort_code: String,
    /// Eight digits.
    #[schemars(pattern(r"^[0-9]{8}$"), example = &"12345678")]
    account_number: String,
}

/// A payment to make.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewPayment {
    /// The debtor account's URL, as the accounts service (or the gateway) gave it: an account of this bank.
    from: String,
    to: Party,
    amount: MoneyInput,
    /// Shown to the payee; at most 18 characters (a Faster Payments limit).
    #[serde(default)]
    #[schemars(length(max = 18), example = &"explorer")]
    reference: String,
}

/// A payment as its resource shows it.
struct PaymentView {
    id: Uuid,
    status: String,
    amount: i64,
    currency: Currency,
    creditor_name: String,
    sort_code: SortCode,
    account_number: String,
    reference: String,
    scheme_id: Option<String>,
    attempts: i32,
    failure: Option<(String, Option<String>)>,
    last_error: Option<String>,
    debtor_account: String,
    hold: String,
    created_at: time::OffsetDateTime,
    updated_at: time::OffsetDateTime,
}

impl PaymentView {
    fn of(row: &PgRow) -> ApiResult<Self> {
        let internal = |e: crate::domain::DomainError| ApiError::Internal(e.into());
        let reason: Option<String> = row.try_get("failure_reason")?;
        Ok(Self {
            id: row.try_get("id")?,
            status: row.try_get("status")?,
            amount: row.try_get("amount")?,
            currency: Currency::parse(row.try_get::<String, _>("currency")?.as_str()).map_err(internal)?,
            creditor_name: row.try_get("creditor_name")?,
            sort_code: SortCode::parse(row.try_get::<String, _>("creditor_sort_code")?.as_str()).map_err(internal)?,
            account_number: row.try_get("creditor_account_number")?,
            reference: row.try_get("reference")?,
            scheme_id: row.try_get("scheme_id")?,
            attempts: row.try_get("attempts")?,
            failure: match reason {
                Some(reason) => Some((reason, row.try_get("failure_description")?)),
                None => None,
            },
            last_error: row.try_get("last_error")?,
            debtor_account: row.try_get("debtor_account")?,
            hold: row.try_get("hold")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    fn hal(&self, base: &BaseUrl) -> Hal {
        let id = self.id;
        let state = Payment {
            id,
            status: self.status.clone(),
            amount: amount(self.amount, self.currency),
            to: Details {
                name: self.creditor_name.clone(),
                sort_code: self.sort_code.display(),
                account_number: self.account_number.clone(),
            },
            reference: self.reference.clone(),
            scheme_id: self.scheme_id.clone(),
            attempts: self.attempts,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
            failure: self
                .failure
                .as_ref()
                .map(|(reason, description)| Failure { reason: reason.clone(), description: description.clone() }),
            last_error: self.last_error.clone().filter(|_| self.status == "reserved"),
        };
        Hal::of(base, &format!("/payments/{id}"), &state)
            .link_url("debtor-account", &self.debtor_account)
            .link_url("hold", &self.hold)
    }
}

fn payment_hal(base: &BaseUrl, row: &PgRow) -> ApiResult<Hal> {
    Ok(PaymentView::of(row)?.hal(base))
}

async fn create(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<NewPayment>,
) -> ApiResult<Response> {
    let own = kit.own::<Payments>()?;
    let money =
        Money::try_from(input.amount.clone()).map_err(|e| ApiError::unprocessable("invalid-amount", e.to_string()))?;
    let sort_code = SortCode::parse(&input.to.sort_code)
        .map_err(|e| ApiError::unprocessable("invalid-sort-code", e.to_string()))?;
    let account_number = AccountNumber::parse(&input.to.account_number)
        .map_err(|e| ApiError::unprocessable("invalid-account-number", e.to_string()))?;
    let name = input.to.name.trim();
    if name.is_empty() || name.len() > 140 {
        return Err(ApiError::unprocessable("invalid-name", "`to.name` must be 1 to 140 characters"));
    }
    if input.reference.len() > 18 {
        return Err(ApiError::unprocessable(
            "invalid-reference",
            "`reference` must be at most 18 characters (a Faster Payments limit)",
        ));
    }
    // Only this bank's accounts: a stranger's server that agrees to every
    // hold must never make a payment.
    AccountRef::parse(&input.from, &own.accounts, base.origin())
        .map_err(|e| ApiError::unprocessable("invalid-account", format!("`from` {e}")))?;
    let fp = Fingerprint::new("POST /payments", &input);
    let id = Uuid::new_v5(&PAYMENT_IDS, format!("{}\n{}", fp.scope, key.as_str()).as_bytes());
    // The hold is placed with no connection held (under a key per payment, so a
    // retried request places it once), then the payment is recorded.
    let reserve = async || reserve(&own, &trace, &input.from, id, money, &input.reference).await;
    let response = once_calling(&kit, &key, fp, reserve, async |remember, hold| {
        let now = hal::now();
        let payment = PaymentView {
            id,
            status: "reserved".into(),
            amount: money.amount,
            currency: money.currency,
            creditor_name: name.to_string(),
            sort_code: sort_code.clone(),
            account_number: account_number.as_str().to_string(),
            reference: input.reference.clone(),
            scheme_id: None,
            attempts: 0,
            failure: None,
            last_error: None,
            debtor_account: input.from.clone(),
            hold: hold.url,
            created_at: now,
            updated_at: now,
        };
        let created = PaymentCreated {
            payment: base.url(&format!("/payments/{id}")),
            debtor_account: input.from.clone(),
            to: Details {
                name: name.to_string(),
                sort_code: payment.sort_code.display(),
                account_number: payment.account_number.clone(),
            },
            amount: amount(money.amount, money.currency),
            reference: input.reference.clone(),
        };
        let created = NewEvent::of(id.to_string(), &created)?;
        let answer = remember.answer(payment.hal(&base).status(StatusCode::ACCEPTED));
        // The payment, its event and the answer: one statement (a repeat
        // fails on the payment's id or the key, and is answered the same).
        events::append_with(
            &kit.pool,
            &trace,
            &[&created],
            Some(&answer),
            "change AS (
                 INSERT INTO payments (id, debtor_account, creditor_name, creditor_sort_code, creditor_account_number,
                                       amount, currency, reference, status, hold, hold_capture, hold_release, trace_id,
                                       created_at, updated_at)
                 VALUES ($11, $12, $13, $14, $15, $16, $17, $18, 'reserved', $19, $20, $21, $22, $23, $23)
                 RETURNING id
             )",
            |q| {
                q.bind(id)
                    .bind(&payment.debtor_account)
                    .bind(&payment.creditor_name)
                    .bind(payment.sort_code.digits())
                    .bind(&payment.account_number)
                    .bind(money.amount)
                    .bind(money.currency.code())
                    .bind(&payment.reference)
                    .bind(&payment.hold)
                    .bind(hold.capture)
                    .bind(hold.release)
                    .bind(&trace.0)
                    .bind(now)
            },
        )
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("payment {id} was not recorded")))?;
        Ok(answer)
    })
    .await?;
    own.wake.notify_one();
    Ok(response)
}

/// A hold placed for a payment: its URL and the links that settle it.
struct Hold {
    url: String,
    capture: Option<String>,
    release: Option<String>,
}

/// Place a hold for the payment on the debtor's account, following the
/// account's `place-hold` link (kept from the account's last read; read again
/// when the link is no longer there).
async fn reserve(
    own: &Payments,
    trace: &TraceId,
    account_url: &str,
    id: Uuid,
    money: Money,
    reference: &str,
) -> ApiResult<Hold> {
    let body = json!({ "amount": money.amount, "currency": money.currency.code(), "reference": format!("payment {reference}") });
    let key = format!("payment-{id}");
    let kept = own.place_hold.lock().unwrap_or_else(|e| e.into_inner()).get(account_url).cloned();
    if let Some(place) = kept {
        match own.client.post(&place, trace, &key, &body).await {
            Reply::Answered(404 | 405 | 410, _) => {
                own.place_hold.lock().unwrap_or_else(|e| e.into_inner()).remove(account_url);
            }
            answer => return hold_placed(answer),
        }
    }
    let place = place_hold_link(own, trace, account_url).await?;
    hold_placed(own.client.post(&place, trace, &key, &body).await)
}

/// The hold the accounts service placed, or why it did not.
fn hold_placed(answer: Reply) -> ApiResult<Hold> {
    match answer {
        Reply::Answered(201, hold) => Ok(Hold {
            url: link(&hold, "self")
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a hold without a self link")))?,
            capture: link(&hold, "capture"),
            release: link(&hold, "release"),
        }),
        Reply::Answered(422, problem) => {
            let kind = problem["type"].as_str().unwrap_or_default().rsplit(':').next().unwrap_or("refused").to_string();
            let detail = problem["detail"].as_str().unwrap_or("the accounts service refused the hold").to_string();
            let kind: &'static str = match kind.as_str() {
                "insufficient-funds" => "insufficient-funds",
                "currency-mismatch" => "currency-mismatch",
                _ => "hold-refused",
            };
            Err(ApiError::unprocessable(kind, detail))
        }
        Reply::Answered(status, body) => {
            Err(ApiError::Unavailable(format!("accounts answered {status} to the hold: {body}")))
        }
        Reply::Unreachable(e) => Err(ApiError::Unavailable(format!("cannot reach the accounts service: {e}"))),
    }
}

/// The account's `place-hold` link, read from the account and kept.
async fn place_hold_link(own: &Payments, trace: &TraceId, account_url: &str) -> ApiResult<String> {
    let account = match own.client.get(account_url, trace).await {
        Reply::Answered(200, account) => account,
        Reply::Answered(404, _) => {
            return Err(ApiError::unprocessable("unknown-account", format!("no account at {account_url}")));
        }
        Reply::Answered(status, body) => {
            return Err(ApiError::Unavailable(format!("accounts answered {status} for {account_url}: {body}")));
        }
        Reply::Unreachable(e) => return Err(ApiError::Unavailable(format!("cannot reach the accounts service: {e}"))),
    };
    let place = link(&account, "place-hold")
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("account {account_url} advertises no place-hold link")))?;
    let mut kept = own.place_hold.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= KEPT_LINKS {
        kept.clear();
    }
    kept.insert(account_url.to_string(), place.clone());
    Ok(place)
}

const PAYMENTS: listing::Collection = listing::Collection {
    noun: "payment",
    path: "/payments",
    rel: "payments",
    table: "payments",
    account_column: Some("debtor_account"),
    item: payment_hal,
};

/// The newest payments, or an account's (`?account=<its URL>`).
async fn list(State(kit): State<Kit>, base: BaseUrl, ApiQuery(q): ApiQuery<listing::Recent>) -> ApiResult<Hal> {
    listing::recent(&kit, &base, &PAYMENTS, q).await
}

async fn show(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    listing::one(&kit, &base, &PAYMENTS, &id).await
}

// ---- the submitter ----

async fn submitter(kit: Kit, turn: worker::Turn) {
    let Ok(own) = kit.own::<Payments>() else { return };
    worker::drain(&kit, &own.wake, "the payment submitter", turn, || submit_next(&kit, &own)).await;
}

/// Submit one due payment. `Ok(false)` when none is due.
///
/// The payment is claimed (a lease), the scheme called with no connection held,
/// and the outcome recorded in a transaction of its own, guarded by the claim:
/// a submitter that died or outlived its lease changes nothing, and the payment
/// is submitted again under its own id, which the scheme answers the same.
async fn submit_next(kit: &Kit, own: &Payments) -> ApiResult<bool> {
    let Some(row) = worker::claim(kit, "payments", "status = 'reserved'", own.lease).await? else {
        return Ok(false);
    };
    let id: Uuid = row.try_get("id")?;
    let trace = TraceId(row.try_get("trace_id")?);
    let attempts: i32 = row.try_get("attempts")?;
    let currency: String = row.try_get("currency")?;
    let body = to_json(&SchemePayment {
        payment_id: id.to_string(),
        debtor_account: row.try_get("debtor_account")?,
        creditor: Details {
            name: row.try_get("creditor_name")?,
            sort_code: row.try_get("creditor_sort_code")?,
            account_number: row.try_get("creditor_account_number")?,
        },
        amount: Amount { amount: row.try_get("amount")?, currency: currency.trim().into() },
        reference: row.try_get("reference")?,
    })?;
    match own.scheme_client.post(&format!("{}/payments", own.scheme), &trace, &id.to_string(), &body).await {
        Reply::Answered(202, accepted) => {
            let scheme_id = accepted["scheme_id"].as_str().unwrap_or_default();
            if submitted(kit, &trace, id, scheme_id, attempts).await? {
                tracing::info!(trace_id = %trace.0, payment = %id, attempt = attempts, %scheme_id, "submitted to the scheme");
            }
        }
        Reply::Answered(status, problem) if client::refused(status) => {
            // The scheme refused the request itself: it will never take it.
            let description = format!("the scheme refused the payment ({status}): {problem}");
            settle_hold(own, &trace, &row, id, Settle::Release).await?;
            let mut tx = kit.begin().await?;
            fail(&mut tx, &trace, id, "SCHEME_REFUSED", &description).await?;
            kit.commit(tx).await?;
        }
        Reply::Answered(status, _) => {
            worker::retry_later(kit, "payments", id, &trace, attempts, &format!("scheme answered {status}")).await?
        }
        Reply::Unreachable(e) => worker::retry_later(kit, "payments", id, &trace, attempts, &e).await?,
    }
    Ok(true)
}

/// Record that the scheme took the payment, if it is still reserved and
/// still under the submitter's claim `attempt`, with its event, in one
/// statement. `false` when nothing changed.
async fn submitted(kit: &Kit, trace: &TraceId, id: Uuid, scheme_id: &str, attempt: i32) -> ApiResult<bool> {
    let change = events::append_on_change(
        kit,
        trace,
        &[&submitted_event(id, scheme_id, attempt)?],
        "change AS (
             UPDATE payments SET status = 'submitted', scheme_id = $12, last_error = NULL, updated_at = now()
             WHERE id = $11 AND status = 'reserved' AND attempts = $13 RETURNING id
         )",
        |q| q.bind(id).bind(scheme_id).bind(attempt),
    )
    .await?;
    Ok(change.is_some())
}

fn submitted_event(id: Uuid, scheme_id: &str, attempts: i32) -> ApiResult<NewEvent<'static>> {
    NewEvent::of(id.to_string(), &PaymentSubmitted { payment_id: id, scheme_id: scheme_id.into(), attempts })
}

fn failed_event(id: Uuid, reason: &str, description: &str) -> ApiResult<NewEvent<'static>> {
    NewEvent::of(
        id.to_string(),
        &PaymentFailed { payment_id: id, reason: reason.into(), description: description.into() },
    )
}

/// Fail a payment that is not final yet; a final one is left as it is.
async fn fail(conn: &mut PgConnection, trace: &TraceId, id: Uuid, reason: &str, description: &str) -> ApiResult<()> {
    let failed = sqlx::query(
        "UPDATE payments SET status = 'failed', failure_reason = $2, failure_description = $3, updated_at = now()
         WHERE id = $1 AND status IN ('reserved', 'submitted')",
    )
    .bind(id)
    .bind(reason)
    .bind(description)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if failed == 1 {
        events::append(&mut *conn, trace, failed_event(id, reason, description)?).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Capture,
    Release,
}

/// Settle the hold of the payment `row`, through the hold's own `capture` or
/// `release` link, under a key per payment so that a repeat is a no-op. The
/// link kept when the hold was placed is called at once; the hold is read
/// first only when there is none kept, or when the call finds it settled
/// already (then it must be settled the way asked).
async fn settle_hold(own: &Payments, trace: &TraceId, row: &PgRow, id: Uuid, how: Settle) -> ApiResult<()> {
    let (rel, wanted, kept) = match how {
        Settle::Capture => ("capture", "captured", row.try_get::<Option<String>, _>("hold_capture")?),
        Settle::Release => ("release", "released", row.try_get::<Option<String>, _>("hold_release")?),
    };
    let hold_url: String = row.try_get("hold")?;
    let key = format!("{rel}-{id}");
    if let Some(action) = kept {
        match own.client.post(&action, trace, &key, &Value::Null).await {
            Reply::Answered(200, _) => return Ok(()),
            // Settled already: by whom is read below.
            Reply::Answered(409, _) => {}
            other => {
                other.expect_status(200, &format!("{rel} of {hold_url}"))?;
            }
        }
    }
    let hold = own.client.get(&hold_url, trace).await.expect_status(200, &format!("hold {hold_url}"))?;
    if hold["status"] == wanted {
        return Ok(());
    }
    let action = link(&hold, rel).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("hold {hold_url} is {} and cannot be {wanted}", hold["status"]))
    })?;
    own.client.post(&action, trace, &key, &Value::Null).await.expect_status(200, &format!("{rel} of {hold_url}"))?;
    Ok(())
}

// ---- reconciliation: payments whose webhook never came ----

/// Ask the scheme what became of each payment submitted more than
/// `reconcile_after` ago that is still not final (its webhook lost: the
/// payments service or the gateway down longer than the scheme retries), and
/// finish it from the answer, as the webhook would have.
async fn reconciler(kit: Kit) {
    let Ok(own) = kit.own::<Payments>() else { return };
    let mut every =
        tokio::time::interval((own.reconcile_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut finished, mut last) = (0u64, None::<tokio::time::Instant>);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = kit.shutdown.cancelled() => return,
        }
        loop {
            match reconcile_next(&kit, &own).await {
                Ok(Reconciled::Finished) => (finished, last) = (finished + 1, Some(tokio::time::Instant::now())),
                Ok(Reconciled::Asked) => {}
                Ok(Reconciled::Nothing) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the payment reconciler failed; will try again");
                    break;
                }
            }
        }
        // `/health` says so for a minute after a payment had to be reconciled:
        // the scheme's webhooks are not arriving.
        let check = match last.map(|t| t.elapsed()) {
            Some(ago) if ago < RECONCILED_RECENTLY => Check::Degraded(format!(
                "{finished} payment(s) finished by asking the scheme, their webhooks never came; the last {} s ago",
                ago.as_secs()
            )),
            _ => Check::Ok,
        };
        kit.checks().set("scheme-webhooks", check);
    }
}

/// How long `/health` reports reconciled payments.
const RECONCILED_RECENTLY: Duration = Duration::from_secs(60);

/// What one step of the reconciler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconciled {
    /// A payment finished from the scheme's answer.
    Finished,
    /// A payment asked about, with no outcome yet.
    Asked,
    /// None overdue.
    Nothing,
}

/// Reconcile the longest-waiting overdue payment.
/// It is marked as asked first (its `updated_at`), so it is asked again only
/// after another `reconcile_after` if the scheme has no outcome yet.
async fn reconcile_next(kit: &Kit, own: &Payments) -> ApiResult<Reconciled> {
    let row = sqlx::query(
        "UPDATE payments SET updated_at = now()
         WHERE id = (SELECT id FROM payments
                     WHERE status = 'submitted' AND updated_at < now() - $1 * interval '1 millisecond'
                     ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .bind(own.reconcile_after.as_millis() as f64)
    .fetch_optional(&kit.pool)
    .await?;
    let Some(row) = row else { return Ok(Reconciled::Nothing) };
    let id: Uuid = row.try_get("id")?;
    let trace = TraceId(row.try_get("trace_id")?);
    let found = match own.scheme_client.get(&format!("{}/payments/{id}", own.scheme), &trace).await {
        Reply::Answered(200, answer) => serde_json::from_value::<SchemePaymentStatus>(answer)
            .map_err(|e| anyhow::anyhow!("the scheme's status of payment {id}: {e}"))?,
        other => {
            tracing::warn!(trace_id = %trace.0, payment = %id, answer = ?other, "the scheme could not say what became of the payment; asking again later");
            metrics::counter!("payments_reconciled_total", "outcome" => "unanswered").increment(1);
            return Ok(Reconciled::Asked);
        }
    };
    let base = created_base(kit, id).await?;
    let verdict = match found.status.as_str() {
        "settled" => None,
        "rejected" => {
            Some((found.reason.as_deref().unwrap_or("AB05"), found.description.as_deref().unwrap_or("rejected")))
        }
        _ => {
            metrics::counter!("payments_reconciled_total", "outcome" => "pending").increment(1);
            return Ok(Reconciled::Asked);
        }
    };
    outcome(kit, own, &base, &trace, &id.to_string(), &found.scheme_id, verdict).await?;
    tracing::info!(trace_id = %trace.0, payment = %id, status = %found.status, "reconciled with the scheme: its webhook never came");
    metrics::counter!("payments_reconciled_total", "outcome" => found.status).increment(1);
    Ok(Reconciled::Finished)
}

/// The base URL the payment was created under (its `payment.created` event
/// names it), so that its `payment.completed` names the same resource.
async fn created_base(kit: &Kit, id: Uuid) -> ApiResult<BaseUrl> {
    let url: Option<String> = sqlx::query_scalar(
        "SELECT data->>'payment' FROM events WHERE aggregate_id = $1 AND type = 'payment.created' ORDER BY seq LIMIT 1",
    )
    .bind(id.to_string())
    .fetch_optional(&kit.pool)
    .await?
    .flatten();
    let suffix = format!("/payments/{id}");
    Ok(BaseUrl::new(url.as_deref().and_then(|u| u.strip_suffix(&suffix)).unwrap_or_default()))
}

// ---- the scheme's webhooks (signed: checked by the kit's guard, here as at the gateway) ----

async fn scheme_webhook(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    ApiJson(hook): ApiJson<SchemeWebhook>,
) -> ApiResult<Response> {
    let own = kit.own::<Payments>()?;
    match hook {
        SchemeWebhook::Settled { payment_id, scheme_id, .. } => {
            outcome(&kit, &own, &base, &trace, &payment_id, &scheme_id, None).await
        }
        SchemeWebhook::Rejected { payment_id, scheme_id, reason, description, .. } => {
            outcome(&kit, &own, &base, &trace, &payment_id, &scheme_id, Some((&reason, &description))).await
        }
        SchemeWebhook::Received(payment) => inbound(&kit, &own, &trace, &payment).await,
    }
}

/// The scheme's verdict on an outbound payment. The hold is settled first,
/// with no connection held (under a key per payment, so a redelivered webhook
/// settles it once), then the payment is finished in one transaction; a
/// webhook that finds it final changes nothing.
async fn outcome(
    kit: &Kit,
    own: &Payments,
    base: &BaseUrl,
    trace: &TraceId,
    payment_id: &str,
    scheme_id: &str,
    rejected: Option<(&str, &str)>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(payment_id)
        .map_err(|_| ApiError::unprocessable("invalid-webhook", format!("`{payment_id}` is not a payment id")))?;
    let duplicate = |status: &str| {
        WebhookAck { payment: Some(id), scheme_id: None, status: status.into(), duplicate: true }.answer()
    };
    let row = sqlx::query("SELECT * FROM payments WHERE id = $1")
        .bind(id)
        .fetch_optional(&kit.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("payment `{id}`")))?;
    let status: String = row.try_get("status")?;
    if status == "completed" || status == "failed" {
        // A duplicate or late webhook changes nothing.
        return Ok(duplicate(&status));
    }
    let trace = TraceId(row.try_get("trace_id").unwrap_or_else(|_| trace.0.clone()));
    let settled = rejected.is_none();
    settle_hold(own, &trace, &row, id, if settled { Settle::Capture } else { Settle::Release }).await?;
    let (status, reason, description, last) = match rejected {
        None => {
            let completed = PaymentCompleted {
                payment: base.url(&format!("/payments/{id}")),
                payment_id: id,
                debtor_account: row.try_get("debtor_account")?,
                amount: Amount {
                    amount: row.try_get("amount")?,
                    currency: row.try_get::<String, _>("currency")?.trim().into(),
                },
                to: Details {
                    name: row.try_get("creditor_name")?,
                    sort_code: row.try_get("creditor_sort_code")?,
                    account_number: row.try_get("creditor_account_number")?,
                },
                scheme_id: scheme_id.to_string(),
            };
            ("completed", None, None, NewEvent::of(id.to_string(), &completed)?)
        }
        Some((reason, description)) => {
            ("failed", Some(reason), Some(description), failed_event(id, reason, description)?)
        }
    };
    // The payment finished in one statement, guarded by the status and
    // attempt it was read with; when either moved meanwhile (the submitter
    // recorded the scheme's answer, or another webhook finished it), it is
    // read again.
    let mut row = row;
    loop {
        let before: String = row.try_get("status")?;
        if before == "completed" || before == "failed" {
            return Ok(duplicate(&before));
        }
        let attempts: i32 = row.try_get("attempts")?;
        // The scheme may call back before the submitter has recorded its
        // answer: the callback proves the submission, so it is recorded first.
        let submitted = (before == "reserved").then(|| submitted_event(id, scheme_id, attempts)).transpose()?;
        let events: Vec<&NewEvent<'_>> = submitted.iter().chain([&last]).collect();
        let finished = events::append_on_change(
            kit,
            &trace,
            &events,
            "change AS (
                 UPDATE payments SET status = $13, scheme_id = $12, failure_reason = $14, failure_description = $15,
                                     last_error = NULL, updated_at = now()
                 WHERE id = $11 AND status = $16 AND attempts = $17 RETURNING id
             )",
            |q| q.bind(id).bind(scheme_id).bind(status).bind(reason).bind(description).bind(&before).bind(attempts),
        )
        .await?;
        if finished.is_some() {
            return Ok(WebhookAck { payment: Some(id), scheme_id: None, status: "processed".into(), duplicate: false }
                .answer());
        }
        row = sqlx::query("SELECT * FROM payments WHERE id = $1").bind(id).fetch_one(&kit.pool).await?;
    }
}

/// A payment the scheme delivers: recorded as `receiving` first (a claim on its
/// scheme id, committed on its own), then the account is credited, or the money
/// returned, with no connection held (under a key per scheme id, so a
/// redelivery after a crash does it once), then the outcome recorded.
async fn inbound(kit: &Kit, own: &Payments, trace: &TraceId, hook: &InboundPayment) -> ApiResult<Response> {
    let scheme_id = hook.scheme_id.as_str();
    let money = Money::try_from(MoneyInput { amount: hook.amount.amount, currency: hook.amount.currency.clone() })
        .map_err(|e| ApiError::unprocessable("invalid-webhook", e.to_string()))?;
    // The scheme may deliver twice: the first one to finish counts.
    let status: String = sqlx::query_scalar(
        "INSERT INTO inbound_payments (scheme_id, status, amount, currency, details) VALUES ($1, 'receiving', $2, $3, $4)
         ON CONFLICT (scheme_id) DO UPDATE SET scheme_id = EXCLUDED.scheme_id RETURNING status",
    )
    .bind(scheme_id)
    .bind(money.amount)
    .bind(money.currency.code())
    .bind(sqlx::types::Json(hook))
    .fetch_one(&kit.pool)
    .await?;
    if status != "receiving" {
        let ack = WebhookAck {
            payment: None,
            scheme_id: Some(scheme_id.into()),
            status: "processed".into(),
            duplicate: true,
        };
        return Ok(ack.answer());
    }
    let (to, from, reference) = (&hook.to, &hook.from, hook.reference.as_str());
    let (status, account, event) = match find_account(own, trace, &to.sort_code, &to.account_number).await? {
        Some(account) => {
            let credit =
                link(&account, "credit").ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no credit link")))?;
            let body = json!({
                "amount": money.amount,
                "currency": money.currency.code(),
                "reference": format!("from {}: {reference}", from.name).chars().take(140).collect::<String>(),
            });
            own.client
                .post(&credit, trace, &format!("inbound-{scheme_id}"), &body)
                .await
                .expect_status(201, "credit")?;
            let received = PaymentReceived {
                scheme_id: scheme_id.to_string(),
                to: to.clone(),
                from: from.clone(),
                amount: amount(money.amount, money.currency),
                reference: reference.to_string(),
                account: link(&account, "self").unwrap_or_default(),
            };
            ("credited", Some(received.account.clone()), NewEvent::of(scheme_id, &received)?)
        }
        None => {
            // No such account here: hand the money back to the scheme (AC01: incorrect account number).
            let body = to_json(&SchemeReturn { scheme_id: scheme_id.to_string(), reason: "AC01".into() })?;
            match own
                .scheme_client
                .post(&format!("{}/returns", own.scheme), trace, &format!("return-{scheme_id}"), &body)
                .await
            {
                Reply::Answered(status, _) if (200..300).contains(&status) => {}
                Reply::Answered(status, body) => return Err(ApiError::Unavailable(format!("return: {status} {body}"))),
                Reply::Unreachable(e) => return Err(ApiError::Unavailable(format!("cannot reach the scheme: {e}"))),
            }
            let returned = PaymentReturned {
                scheme_id: scheme_id.to_string(),
                to: to.clone(),
                from: from.clone(),
                amount: amount(money.amount, money.currency),
                reference: reference.to_string(),
                reason: "AC01".into(),
            };
            ("returned", None, NewEvent::of(scheme_id, &returned)?)
        }
    };
    let mut tx = kit.begin().await?;
    let recorded = sqlx::query(
        "UPDATE inbound_payments SET status = $2, account = $3 WHERE scheme_id = $1 AND status = 'receiving'",
    )
    .bind(scheme_id)
    .bind(status)
    .bind(account)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if recorded == 1 {
        events::append(&mut *tx, trace, event).await?;
    }
    kit.commit(tx).await?;
    Ok(WebhookAck { payment: None, scheme_id: Some(scheme_id.into()), status: "processed".into(), duplicate: false }
        .answer())
}

/// The account with these UK bank details, found through the accounts
/// service's discovery resource and its `accounts` link.
async fn find_account(
    own: &Payments,
    trace: &TraceId,
    sort_code: &str,
    account_number: &str,
) -> ApiResult<Option<Value>> {
    let root = own.client.get(&format!("{}/", own.accounts), trace).await.expect_status(200, "the accounts service")?;
    let template =
        link(&root, "find-account").ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no find-account link")))?;
    // The template's only expression is the query `{?sort_code,account_number}`.
    let accounts = template.split('{').next().unwrap_or_default();
    let (Ok(sort_code), Ok(account_number)) = (SortCode::parse(sort_code), AccountNumber::parse(account_number)) else {
        return Ok(None);
    };
    let url = format!("{accounts}?sort_code={}&account_number={}", sort_code.digits(), account_number.as_str());
    let found =
        own.client.call(Method::GET, &url, trace, None, None).await.expect_status(200, "the accounts service")?;
    Ok(found["_embedded"]["accounts"].get(0).cloned())
}
