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
