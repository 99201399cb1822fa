//! Idempotency keys: the first answer to a (scope, key) is stored in the same
//! transaction as the change it describes; a repeat gets that answer back and
//! changes nothing. A concurrent repeat waits on the first one's key until it
//! commits, then rolls its own work back and replays the first answer.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::Kit;
use super::error::{ApiError, ApiResult};
use super::hal::{Hal, hal_response};
use crate::domain::IdempotencyKey;

pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The request a key was first used for: scope (method and resource) and body.
#[derive(Debug)]
pub struct Fingerprint {
    pub scope: String,
    pub request: String,
}

impl Fingerprint {
    pub fn new(scope: impl Into<String>, request: &impl serde::Serialize) -> Self {
        Self { scope: scope.into(), request: serde_json::to_string(request).unwrap_or_default() }
    }
}

/// The stored answer to `key`, if the key was used: the same request gets it
/// back, another request is refused.
async fn stored<'c, E>(conn: E, key: &IdempotencyKey, fp: &Fingerprint) -> ApiResult<Option<Response>>
where
    E: sqlx::PgExecutor<'c>,
{
    let row = sqlx::query("SELECT request, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(&fp.scope)
        .bind(key.as_str())
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let request: String = row.try_get("request")?;
    if request != fp.request {
        return Err(ApiError::unprocessable(
            "idempotency-key-reused",
            format!(
                "Idempotency-Key `{}` was already used for a different request to this resource; use a new key for a new request",
                key.as_str()
            ),
        ));
    }
    let status: i16 = row.try_get("status")?;
    let body: Value = row.try_get("body")?;
    let status = StatusCode::from_u16(status as u16).map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = hal_response(status, body);
    response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(Some(response))
}

/// Store the answer to `key` with the change it describes, in the caller's
/// transaction. `false` when the key is taken already: another request with
/// it committed first (a concurrent repeat waits here for that one to end),
/// and this transaction must be rolled back.
async fn remember(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    status: StatusCode,
    body: &Value,
) -> ApiResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request, status, body) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(&fp.scope)
    .bind(key.as_str())
    .bind(&fp.request)
    .bind(status.as_u16() as i16)
    .bind(body)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Run `work` once per idempotency key, in one transaction: a repeat gets the
/// stored answer and changes nothing; otherwise the work's answer is stored with
/// its changes. Without a key the work simply runs.
///
/// The key is written last, with the answer (one statement, not a claim first
/// and the answer later): a repeat does the work again in a transaction of its
/// own, finds the key taken, rolls all of it back and replays the first answer.
/// A repeat whose work fails because the first one's changes are in (the hold
/// is captured already, say) replays that answer too.
pub async fn once<F>(kit: &Kit, key: Option<&IdempotencyKey>, fp: Fingerprint, work: F) -> ApiResult<Response>
where
    F: AsyncFnOnce(&mut PgConnection) -> ApiResult<Hal>,
{
    let mut tx = kit.begin().await?;
    let Some(key) = key else {
        let hal = work(&mut tx).await?;
        kit.commit(tx).await?;
        return Ok(hal.into_response());
    };
    let done = match work(&mut tx).await {
        Ok(hal) => hal,
        Err(e) => {
            tx.rollback().await?;
            return stored(&kit.pool, key, &fp).await?.ok_or(e);
        }
    };
    let status = done.status_code();
    let body = done.into_value();
    if !remember(&mut tx, key, &fp, status, &body).await? {
        tx.rollback().await?;
        return stored(&kit.pool, key, &fp).await?.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("idempotency key `{}` taken but not stored", key.as_str()))
        });
    }
    kit.commit(tx).await?;
    Ok(hal_response(status, body))
}

/// A keyed request whose answer the work's own statement stores, with the
/// change it describes (`events::append_with` takes it): no transaction of
/// `once`'s, no statement for the key alone.
pub struct Remember<'a> {
    key: &'a IdempotencyKey,
    fp: &'a Fingerprint,
}

impl Remember<'_> {
    /// The answer `hal` will be, to store under the key: the work knows it
    /// before its statement runs.
    pub fn answer(&self, hal: Hal) -> Answer {
        Answer {
            scope: self.fp.scope.clone(),
            key: self.key.as_str().to_string(),
            request: self.fp.request.clone(),
            status: hal.status_code(),
            body: hal.into_value(),
        }
    }
}

/// The answer to a keyed request, stored by the statement that makes the
/// change (`events::append_with` binds it).
#[derive(Debug)]
pub struct Answer {
    pub(super) scope: String,
    pub(super) key: String,
    pub(super) request: String,
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

/// Run `work` once per idempotency key, where the work's one writing
/// statement stores its answer (through [`Remember::answer`] and
/// `events::append_with`), in whatever transaction the work chose, or none:
/// a keyed change in one round trip. A repeat finds the key taken (its
/// statement fails on the key, having waited for the first to commit, or
/// changes nothing) and gets the first answer back; so does a repeat whose
/// work fails because the first one's changes are in.
pub async fn once_stored<F>(kit: &Kit, key: &IdempotencyKey, fp: Fingerprint, work: F) -> ApiResult<Response>
where
    F: AsyncFnOnce(&Remember<'_>) -> ApiResult<Answer>,
{
    let remember = Remember { key, fp: &fp };
    match work(&remember).await {
        Ok(answer) => {
            kit.appended.bump();
            Ok(hal_response(answer.status, answer.body))
        }
        Err(e) => stored(&kit.pool, key, &fp).await?.ok_or(e),
    }
}

/// [`once_stored`] for work that must call another service first (place a
/// hold, say): a key already answered is replayed without the call (a
/// different request under it is refused before it changes anything
/// anywhere); otherwise `call` runs with no database connection held (it must
/// be idempotent itself: a request retried after a crash calls again), then
/// `record` stores its result and the answer in one statement.
pub async fn once_calling<T, C, F>(
    kit: &Kit,
    key: &IdempotencyKey,
    fp: Fingerprint,
    call: C,
    record: F,
) -> ApiResult<Response>
where
    C: AsyncFnOnce() -> ApiResult<T>,
    F: AsyncFnOnce(&Remember<'_>, T) -> ApiResult<Answer>,
{
    if let Some(replay) = stored(&kit.pool, key, &fp).await? {
        return Ok(replay);
    }
    let made = call().await?;
    once_stored(kit, key, fp, async |remember| record(remember, made).await).await
}
