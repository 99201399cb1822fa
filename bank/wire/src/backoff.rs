//! The one retry policy of the bank and its provider mocks: wait `first`, then
//! twice as long after each failure, never more than `max`. The submitters and
//! chargers (attempts counted in their tables), the Kafka consumer, the
//! connector and the mocks' webhooks all wait by it, so a retry behaves the
//! same wherever it happens.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The wait after failed attempt `attempt` (the first is 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// A run of retries that counts its own failures.
    pub fn retries(self) -> Retries {
        Retries { policy: self, failed: 0 }
    }
}

/// Failures counted since the last success.
#[derive(Debug, Clone)]
pub struct Retries {
    policy: Backoff,
    failed: u32,
}

impl Retries {
    /// Count a failure and say how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failed = self.failed.saturating_add(1);
        self.policy.delay(self.failed)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failed
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_start_over_after_a_success() {
        let policy = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(policy.delay(1), Duration::from_millis(100));
        assert_eq!(policy.delay(2), Duration::from_millis(200));
        assert_eq!(policy.delay(4), Duration::from_millis(800));
        assert_eq!(policy.delay(5), Duration::from_secs(1));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
        let mut retries = policy.retries();
        assert_eq!([retries.failed(), retries.failed()], [Duration::from_millis(100), Duration::from_millis(200)]);
        retries.reset();
        assert_eq!(retries.failed(), Duration::from_millis(100));
    }
}
