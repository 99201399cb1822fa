//! Background work that drains due rows (payments to submit, top-ups to charge):
//! run a step until it finds nothing due, then wait for a wake-up, a short poll
//! interval (retries fall due by time) or shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;

use super::Kit;
use super::error::ApiResult;

/// How often due work is looked for when nothing wakes the worker.
pub const POLL: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Run `step` (one unit of due work; `Ok(false)` when none is due) until shutdown.
pub async fn drain<F, Fut>(kit: &Kit, wake: &Notify, what: &'static str, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<bool>>,
{
    loop {
        loop {
            match step().await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "{what} failed; will try again");
                    break;
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            () = kit.shutdown.cancelled() => return,
        }
    }
}

/// Put a due row of `table` (which has `attempts`, `last_error`,
/// `next_attempt_at` and `updated_at`) back to wait, `backoff(attempts)` from now.
pub async fn retry_later(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    id: uuid::Uuid,
    trace: &super::http::TraceId,
    attempts: i32,
    error: &str,
) -> ApiResult<()> {
    let wait = backoff(attempts);
    tracing::warn!(trace_id = %trace.0, table, %id, attempt = attempts, error, retry_in_ms = wait.as_millis() as u64,
        "not available; will retry");
    let sql = format!(
        "UPDATE {table} SET attempts = $2, last_error = $3, next_attempt_at = now() + $4 * interval '1 millisecond',
                            updated_at = now()
         WHERE id = $1"
    );
    // `table` is a compile-time name, never input.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(attempts)
        .bind(error)
        .bind(wait.as_millis() as f64)
        .execute(conn)
        .await?;
    Ok(())
}

/// The wait before attempt `attempts + 1`: 100 ms doubling, at most 5 s.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempts.clamp(0, 10))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
