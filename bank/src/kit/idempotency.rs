//! Idempotency keys: the first answer to a (scope, key) is stored in the same
//! transaction as the change it describes; a repeat gets that answer back and
//! changes nothing. A concurrent repeat blocks on the first one's row until it
//! commits, then replays it.

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
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

/// Claim `key` for this request. `Ok(Some(response))` is the stored answer to
/// replay; `Ok(None)` means go ahead, then [`remember`] the answer before commit.
pub async fn claim(conn: &mut PgConnection, key: &IdempotencyKey, fp: &Fingerprint) -> ApiResult<Option<Response>> {
    let inserted =
        sqlx::query("INSERT INTO idempotency_keys (scope, key, request) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&fp.scope)
            .bind(key.as_str())
            .bind(&fp.request)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    stored(conn, key, fp).await
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

/// Store the answer to a claimed key, in the same transaction as the change.
pub async fn remember(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    status: StatusCode,
    body: &Value,
) -> ApiResult<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2")
        .bind(&fp.scope)
        .bind(key.as_str())
        .bind(status.as_u16() as i16)
        .bind(body)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Run `work` once per idempotency key, in one transaction: a repeat gets the
/// stored answer and changes nothing; otherwise the work's answer is stored with
/// its changes. Without a key the work simply runs.
pub async fn once<F>(kit: &Kit, key: Option<&IdempotencyKey>, fp: Fingerprint, work: F) -> ApiResult<Response>
where
    F: AsyncFnOnce(&mut PgConnection) -> ApiResult<Hal>,
{
    let mut tx = kit.begin().await?;
    if let Some(key) = key
        && let Some(replay) = claim(&mut tx, key, &fp).await?
    {
        return Ok(replay);
    }
    let hal = work(&mut tx).await?;
    let status = hal.status_code();
    let body = hal.into_value();
    if let Some(key) = key {
        remember(&mut tx, key, &fp, status, &body).await?;
    }
    kit.commit(tx).await?;
    Ok(hal_response(status, body))
}

/// [`once`] for work that must call another service first (place a hold, say):
/// a key already answered is replayed without the call; otherwise `call` runs
/// with no database connection held (it must be idempotent itself: a request
/// retried after a crash calls again), then `record` stores its result and the
/// answer in one transaction.
pub async fn once_calling<T, C, F>(
    kit: &Kit,
    key: &IdempotencyKey,
    fp: Fingerprint,
    call: C,
    record: F,
) -> ApiResult<Response>
where
    C: AsyncFnOnce() -> ApiResult<T>,
    F: AsyncFnOnce(&mut PgConnection, T) -> ApiResult<Hal>,
{
    if let Some(replay) = stored(&kit.pool, key, &fp).await? {
        return Ok(replay);
    }
    let made = call().await?;
    once(kit, Some(key), fp, async |conn| record(conn, made).await).await
}
