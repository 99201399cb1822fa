//! The top-ups service: card top-ups. `POST /topups` records the top-up and
//! answers 202; a background charger asks the card acquirer to charge the card
//! (under the top-up's own id, so a retry never charges twice), retrying while
//! the acquirer is down. The outcome, from the acquirer's answer or its webhook,
//! whichever comes first, is applied once: succeeded credits the account
//! (`topup.succeeded`), declined credits nothing (`topup.failed` with the
//! reason); a duplicate or late webhook changes nothing.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;
use wire::payloads::{AcquirerWebhook, Amount, Charge, ChargeStatus, TopupCreated, TopupFailed, TopupSucceeded};
use wire::providers::ChargeRequest;

use crate::domain::{AccountRef, Currency, IdempotencyKey, Money, MoneyInput, amount};
use crate::kit::client::{self, Client, Reply, link};
use crate::kit::error::{ApiError, ApiResult, to_json};
use crate::kit::events::{self, NewEvent};
use crate::kit::hal::{BaseUrl, Hal};
use crate::kit::http::{ApiJson, ApiQuery, TraceId};
use crate::kit::idempotency::{Fingerprint, once};
use crate::kit::openapi::{Document, Id, List, Resource, Routes, get_with, post_with};
use crate::kit::{Kit, ServiceSpec, listing, worker};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "topups",
    migrations: &[(100, "topups", include_str!("migrations/0100_topups.sql"))],
    links: &[("topups", "/topups")],
    actions: &[("create-topup", "/topups")],
    router,
    document: crate::kit::own_document,
    start,
};

const TOPUP_IDS: Uuid = Uuid::from_u128(0x6261_6e6b_2d74_6f70_7570_732d_6964_7321);

struct Topups {
    /// The accounts service's base URL: a top-up's account must be one of its.
    accounts: String,
    acquirer: String,
    /// Calls to the card acquirer.
    acquirer_client: Client,
    /// Calls to the accounts service.
    client: Client,
    /// How long a charger's claim on a top-up lasts.
    lease: Duration,
    wake: Notify,
}

fn start(kit: &Kit) -> anyhow::Result<()> {
    let accounts = kit.require("ACCOUNTS_URL", "point it at the accounts service")?.trim_end_matches('/').to_string();
    let acquirer = kit.require("ACQUIRER_URL", "point it at the card acquirer")?.trim_end_matches('/').to_string();
    // The kit's guard checks the acquirer's webhooks with it.
    kit.require("WEBHOOK_SECRET", "the secret the card acquirer signs its webhooks with")?;
    let timeout = Duration::from_millis(kit.setting("ACQUIRER_TIMEOUT_MS", 2000)?);
    let acquirer_client = Client::new(kit, timeout)?.watched(kit.checks(), "card-acquirer");
    let client = Client::new(kit, Duration::from_millis(kit.setting("ACCOUNTS_TIMEOUT_MS", 2000)?))?
        .watched(kit.checks(), "accounts");
    let lease = worker::lease(kit, timeout)?;
    kit.set_own(Topups { accounts, acquirer, acquirer_client, client, lease, wake: Notify::new() });
    // Several chargers, each claiming a different due top-up.
    const CHARGERS: u32 = 4;
    for index in 0..CHARGERS {
        let k = kit.clone();
        kit.tasks.spawn(async move {
            let Ok(own) = k.own::<Topups>() else { return };
            let turn = worker::Turn { index, of: CHARGERS };
            worker::drain(&k, &own.wake, "the top-up charger", turn, || charge_next(&k, &own)).await;
        });
    }
    Ok(())
}

fn router() -> Routes {
    Routes::new()
        .api_route(
            "/topups",
            get_with(list, |op| {
                op.id("listTopups")
                    .summary("The newest top-ups, or an account's (`?account=<its URL>`)")
                    .answers::<List<Topup>>(200, "Top-ups, the newest first, under `topups`")
                    .refuses(400, "`limit` is not 1 to 500")
                    .busy()
            })
            .post_with(create, |op| {
                op.id("createTopup")
                    .summary("Top an account up from a card: the acquirer is charged after the answer")
                    .answers::<Resource<Topup>>(202, "The top-up, `pending` until the acquirer answers")
                    .leads_to(202, "getTopup", "id")
                    .refuses(422, "A field is out of its limits (the detail names it), `account` is not an account of this bank, or not in the amount's currency")
                    .refuses(503, "The accounts service did not answer; retry with the same `Idempotency-Key`")
                    .busy()
            }),
        )
        .api_route(
            "/topups/{id}",
            get_with(show, |op| {
                op.id("getTopup")
                    .summary("A top-up and how far it got")
                    .answers::<Resource<Topup>>(200, "The top-up, with a link to its account")
                    .refuses(404, "No top-up with this id")
                    .busy()
            }),
        )
        .api_route(
            "/webhooks/card-acquirer",
            post_with(acquirer_webhook, |op| {
                op.id("cardAcquirerWebhook")
                    .summary("The card acquirer's word on a charge: succeeded or declined")
                    .signed_webhook("")
                    .answers_as::<TopupAck>(200, "application/json", "Processed, or a repeat of one already processed")
                    .refuses(404, "The webhook names a top-up this bank did not make")
                    .refuses(422, "The charge id is not a top-up id, or the charge does not match the top-up")
                    .refuses(503, "The accounts service did not answer; the acquirer will deliver again")
            }),
        )
}

/// A top-up from a card, as its resource shows it.
#[derive(Debug, Serialize, JsonSchema)]
struct Topup {
    id: Uuid,
    /// `pending` (the acquirer not yet answered), `succeeded` (the account credited) or `failed`.
    status: String,
    amount: Amount,
    card_token: String,
    /// The acquirer's id for the charge, once it answered.
    acquirer_id: Option<String>,
    /// Calls made to the acquirer so far.
    attempts: i32,
    /// Why the card was declined, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    decline_reason: Option<String>,
    /// The last error calling the acquirer, while it is `pending`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// What the bank answers the acquirer's webhook.
#[derive(Debug, Serialize, JsonSchema)]
struct TopupAck {
    topup: Uuid,
    /// True when the webhook repeats one already processed: nothing changed.
    duplicate: bool,
}

/// A top-up to make.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewTopup {
    /// The account's URL, as the accounts service (or the gateway) gave it: an account of this bank.
    account: String,
    /// The card's token at the acquirer, 1 to 64 characters.
    #[schemars(length(min = 1, max = 64), example = &"tok_visa")]
    card_token: String,
    amount: MoneyInput,
}

fn topup_hal(base: &BaseUrl, row: &PgRow) -> ApiResult<Hal> {
    let id: Uuid = row.try_get("id")?;
    let currency =
        Currency::parse(row.try_get::<String, _>("currency")?.trim()).map_err(|e| ApiError::Internal(e.into()))?;
    let status: String = row.try_get("status")?;
    let last_error: Option<String> = row.try_get("last_error")?;
    let state = Topup {
        id,
        amount: amount(row.try_get("amount")?, currency),
        card_token: row.try_get("card_token")?,
        acquirer_id: row.try_get("acquirer_id")?,
        attempts: row.try_get("attempts")?,
        decline_reason: row.try_get("decline_reason")?,
        last_error: last_error.filter(|_| status == "pending"),
        status,
    };
    Ok(Hal::of(base, &format!("/topups/{id}"), &state).link_url("account", &row.try_get::<String, _>("account")?))
}

async fn create(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<NewTopup>,
) -> ApiResult<Response> {
    let own = kit.own::<Topups>()?;
    let money =
        Money::try_from(input.amount.clone()).map_err(|e| ApiError::unprocessable("invalid-amount", e.to_string()))?;
    let token = input.card_token.trim();
    if token.is_empty() || token.len() > 64 {
        return Err(ApiError::unprocessable("invalid-card-token", "`card_token` must be 1 to 64 characters"));
    }
    // Only this bank's accounts are credited, or even asked.
    AccountRef::parse(&input.account, &own.accounts, base.origin())
        .map_err(|e| ApiError::unprocessable("invalid-account", format!("`account` {e}")))?;
    // The account must exist and hold this currency, or nothing is charged.
    let account = match own.client.get(&input.account, &trace).await {
        Reply::Answered(200, account) => account,
        Reply::Answered(404, _) => {
            return Err(ApiError::unprocessable("unknown-account", format!("no account at {}", input.account)));
        }
        Reply::Answered(status, body) => {
            return Err(ApiError::Unavailable(format!("accounts answered {status}: {body}")));
        }
        Reply::Unreachable(e) => return Err(ApiError::Unavailable(format!("cannot reach the accounts service: {e}"))),
    };
    if account["currency"] != money.currency.code() {
        return Err(ApiError::unprocessable(
            "currency-mismatch",
            format!(
                "the account holds {}, the top-up is in {}",
                account["currency"].as_str().unwrap_or("?"),
                money.currency
            ),
        ));
    }
    let fp = Fingerprint::new("POST /topups", &input);
    let id = Uuid::new_v5(&TOPUP_IDS, format!("{}\n{}", fp.scope, key.as_str()).as_bytes());
    let response = once(&kit, Some(&key), fp, async |conn| {
        let row = sqlx::query(
            "INSERT INTO topups (id, account, card_token, amount, currency, status, trace_id)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6) RETURNING *",
        )
        .bind(id)
        .bind(&input.account)
        .bind(token)
        .bind(money.amount)
        .bind(money.currency.code())
        .bind(&trace.0)
        .fetch_one(&mut *conn)
        .await?;
        let created =
            TopupCreated { topup_id: id, account: input.account.clone(), amount: amount(money.amount, money.currency) };
        events::append(&mut *conn, &trace, NewEvent::of(id.to_string(), &created)?).await?;
        Ok(topup_hal(&base, &row)?.status(StatusCode::ACCEPTED))
    })
    .await?;
    own.wake.notify_one();
    Ok(response)
}

const TOPUPS: listing::Collection = listing::Collection {
    noun: "top-up",
    path: "/topups",
    rel: "topups",
    table: "topups",
    account_column: Some("account"),
    item: topup_hal,
};

/// The newest top-ups, or an account's (`?account=<its URL>`).
async fn list(State(kit): State<Kit>, base: BaseUrl, ApiQuery(q): ApiQuery<listing::Recent>) -> ApiResult<Hal> {
    listing::recent(&kit, &base, &TOPUPS, q).await
}

async fn show(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    listing::one(&kit, &base, &TOPUPS, &id).await
}

/// Charge one due top-up. `Ok(false)` when none is due.
///
/// Claimed (a lease), charged with no connection held, and the outcome recorded
/// in a transaction of its own, guarded by the claim; a charger that dies
/// leaves the lease to run out, and the charge is made again under the
/// top-up's own id, which the acquirer answers the same.
async fn charge_next(kit: &Kit, own: &Topups) -> ApiResult<bool> {
    let Some(row) = worker::claim(kit, "topups", "status = 'pending' AND NOT charged", own.lease).await? else {
        return Ok(false);
    };
    let id: Uuid = row.try_get("id")?;
    let trace = TraceId(row.try_get("trace_id")?);
    let attempts: i32 = row.try_get("attempts")?;
    let body = to_json(&ChargeRequest {
        charge_id: id.to_string(),
        card_token: row.try_get("card_token")?,
        amount: Amount {
            amount: row.try_get("amount")?,
            currency: row.try_get::<String, _>("currency")?.trim().into(),
        },
        reference: format!("top-up {id}"),
    })?;
    match own.acquirer_client.post(&format!("{}/charges", own.acquirer), &trace, &id.to_string(), &body).await {
        Reply::Answered(201, answer) => {
            let charge: Charge = serde_json::from_value(answer).map_err(|e| {
                ApiError::Unavailable(format!("the acquirer's answer to charge {id} is not a charge: {e}"))
            })?;
            apply(kit, own, &trace, &row, &charge, Some(attempts)).await?
        }
        Reply::Answered(status, problem) if client::refused(status) => {
            let reason = format!("acquirer refused the charge ({status}): {problem}");
            let mut tx = kit.begin().await?;
            decline(&mut tx, &trace, &row, &reason, Some(attempts)).await?;
            kit.commit(tx).await?;
        }
        reply => {
            let error = match reply {
                Reply::Answered(status, _) => format!("acquirer answered {status}"),
                Reply::Unreachable(e) => e,
            };
            worker::retry_later(kit, "topups", id, &trace, attempts, &error).await?;
        }
    }
    Ok(true)
}

/// Apply the acquirer's verdict (its answer or its webhook) to a pending
/// top-up (and, for the charger, still under its claim `attempt`); anything
/// already final is left alone.
async fn apply(
    kit: &Kit,
    own: &Topups,
    trace: &TraceId,
    row: &PgRow,
    charge: &Charge,
    attempt: Option<i32>,
) -> ApiResult<()> {
    let status: String = row.try_get("status")?;
    if status != "pending" {
        return Ok(());
    }
    let tx = match charge.status {
        ChargeStatus::Succeeded => succeed(kit, own, trace, row, &charge.acquirer_id, attempt).await?,
        ChargeStatus::Declined => {
            let mut tx = kit.begin().await?;
            decline(&mut tx, trace, row, charge.reason.as_deref().unwrap_or("declined"), attempt).await?;
            tx
        }
    };
    kit.commit(tx).await
}

/// Credit the account (with no connection held, under a key per top-up), then
/// open the transaction that records the success.
async fn succeed(
    kit: &Kit,
    own: &Topups,
    trace: &TraceId,
    row: &PgRow,
    acquirer_id: &str,
    attempt: Option<i32>,
) -> ApiResult<Transaction<'static, Postgres>> {
    let id: Uuid = row.try_get("id")?;
    let account_url: String = row.try_get("account")?;
    let amount: i64 = row.try_get("amount")?;
    let currency =
        Currency::parse(row.try_get::<String, _>("currency")?.trim()).map_err(|e| ApiError::Internal(e.into()))?;
    let account = own.client.get(&account_url, trace).await.expect_status(200, &format!("account {account_url}"))?;
    let credit =
        link(&account, "credit").ok_or_else(|| ApiError::Internal(anyhow::anyhow!("account has no credit link")))?;
    let body = json!({ "amount": amount, "currency": currency.code(), "reference": "card top-up" });
    own.client.post(&credit, trace, &format!("topup-{id}"), &body).await.expect_status(201, "credit")?;
    let mut tx = kit.begin().await?;
    if finish(&mut tx, id, "succeeded", Some(acquirer_id), None, attempt).await? {
        let succeeded = TopupSucceeded {
            topup_id: id,
            account: account_url,
            amount: Amount { amount, currency: currency.code().to_string() },
            acquirer_id: acquirer_id.to_string(),
        };
        events::append(&mut *tx, trace, NewEvent::of(id.to_string(), &succeeded)?).await?;
    }
    Ok(tx)
}

async fn decline(
    conn: &mut PgConnection,
    trace: &TraceId,
    row: &PgRow,
    reason: &str,
    attempt: Option<i32>,
) -> ApiResult<()> {
    let id: Uuid = row.try_get("id")?;
    if finish(conn, id, "failed", None, Some(reason), attempt).await? {
        let failed = TopupFailed { topup_id: id, account: row.try_get("account")?, reason: reason.into() };
        events::append(&mut *conn, trace, NewEvent::of(id.to_string(), &failed)?).await?;
    }
    Ok(())
}

/// Make a pending top-up final (and charged); `false` when it already was, or
/// another claim than `attempt` holds it.
async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    status: &str,
    acquirer_id: Option<&str>,
    reason: Option<&str>,
    attempt: Option<i32>,
) -> ApiResult<bool> {
    let changed = sqlx::query(
        "UPDATE topups SET status = $2, acquirer_id = coalesce($3, acquirer_id), decline_reason = $4, charged = true,
                           last_error = NULL, updated_at = now()
         WHERE id = $1 AND status = 'pending' AND ($5::int IS NULL OR attempts = $5)",
    )
    .bind(id)
    .bind(status)
    .bind(acquirer_id)
    .bind(reason)
    .bind(attempt)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// The acquirer's confirmation (signed: checked by the kit's guard, here as at the gateway).
async fn acquirer_webhook(
    State(kit): State<Kit>,
    trace: TraceId,
    ApiJson(hook): ApiJson<AcquirerWebhook>,
) -> ApiResult<Response> {
    let own = kit.own::<Topups>()?;
    let charge = hook.charge();
    let id = Uuid::parse_str(&charge.charge_id).map_err(|_| {
        ApiError::unprocessable("invalid-webhook", format!("`{}` is not a top-up id", charge.charge_id))
    })?;
    let row = sqlx::query("SELECT * FROM topups WHERE id = $1")
        .bind(id)
        .fetch_optional(&kit.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("top-up `{id}`")))?;
    let before: String = row.try_get("status")?;
    let trace = TraceId(row.try_get("trace_id").unwrap_or(trace.0));
    apply(&kit, &own, &trace, &row, charge, None).await?;
    Ok((StatusCode::OK, axum::Json(TopupAck { topup: id, duplicate: before != "pending" })).into_response())
}
