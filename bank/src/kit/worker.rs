//! Background work that drains due rows (payments to submit, top-ups to charge):
//! run a step until it finds nothing due, then wait for a wake-up, a short poll
//! interval (retries fall due by time) or shutdown.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgRow;
use tokio::sync::Notify;

use super::Kit;
use super::error::ApiResult;

/// How often a group of workers looks for due work when nothing wakes it
/// (retries fall due by time, and a dead worker's lease runs out).
pub const POLL: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One worker's place in a group of `of` draining the same rows: the group
/// looks every [`POLL`] between them, each worker every `of` polls in its own
/// turn, not every worker every poll (eight submitters polled 160 times a
/// second, idle or not).
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub index: u32,
    pub of: u32,
}

/// Run `step` (one unit of due work; `Ok(false)` when none is due) until shutdown.
/// Work found by a poll wakes another worker to help with the rest of it.
pub async fn drain<F, Fut>(kit: &Kit, wake: &Notify, what: &'static str, turn: Turn, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<bool>>,
{
    let of = turn.of.max(1);
    let mut polls = tokio::time::interval_at(tokio::time::Instant::now() + POLL * (turn.index % of), POLL * of);
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polled = false;
    loop {
        loop {
            match step().await {
                Ok(true) if std::mem::take(&mut polled) => wake.notify_one(),
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "{what} failed; will try again");
                    break;
                }
            }
        }
        polled = false;
        tokio::select! {
            () = wake.notified() => {}
            _ = polls.tick() => polled = true,
            () = kit.shutdown.cancelled() => return,
        }
    }
}

/// Claim the oldest due row of `table` (which has `attempts`,
/// `next_attempt_at` and `created_at`) matching `due`, in a statement of its
/// own: the claim is a lease, not a lock. Its attempt is counted and the row is
/// not due again until `lease` has passed, so no other worker takes it while
/// the call it needs is under way, and none of the pool's connections is held
/// during that call. Record the outcome with a statement guarded by the
/// returned `attempts` (the lease's own number). If the worker dies before, the
/// lease runs out and the row is claimed again: the work must be idempotent
/// (made under the row's own id), so a repeat does it once.
pub async fn claim(kit: &Kit, table: &'static str, due: &'static str, lease: Duration) -> ApiResult<Option<PgRow>> {
    // `table` and `due` are compile-time text, never input.
    let sql = format!(
        "UPDATE {table} SET attempts = attempts + 1, next_attempt_at = now() + $1 * interval '1 millisecond'
         WHERE id = (SELECT id FROM {table} WHERE {due} AND next_attempt_at <= now()
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(lease.as_millis() as f64).fetch_optional(&kit.pool).await?)
}

/// Put a claimed row of `table` (see [`claim`]) back to wait,
/// `backoff(attempts)` from now, unless another lease has taken it since.
pub async fn retry_later(
    kit: &Kit,
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
        "UPDATE {table} SET last_error = $3, next_attempt_at = now() + $4 * interval '1 millisecond', updated_at = now()
         WHERE id = $1 AND attempts = $2"
    );
    // `table` is a compile-time name, never input.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(attempts)
        .bind(error)
        .bind(wait.as_millis() as f64)
        .execute(&kit.pool)
        .await?;
    Ok(())
}

/// How long a claim lasts (`LEASE_MS`) for work whose calls time out after
/// `timeout`: by default the calls a unit of work makes (a provider, then the
/// accounts service) with room to record the outcome. Shorter, a dead worker's
/// work is taken up sooner, but a slow call may be made twice (under the same
/// id, so answered the same).
pub fn lease(kit: &Kit, timeout: Duration) -> anyhow::Result<Duration> {
    let default = timeout * 3 + Duration::from_secs(5);
    Ok(Duration::from_millis(kit.setting("LEASE_MS", default.as_millis() as u64)?))
}

/// The retry policy of due work and of the consumer: 100 ms doubling, at most 5 s.
pub const RETRY: wire::backoff::Backoff = wire::backoff::Backoff::new(Duration::from_millis(100), MAX_BACKOFF);

/// The wait before attempt `attempts + 1`.
pub fn backoff(attempts: i32) -> Duration {
    RETRY.delay(attempts.max(0) as u32)
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
