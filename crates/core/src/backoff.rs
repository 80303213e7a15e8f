//! Backoff schedules with jitter.
//!
//! [`Backoff`] implements the reconnect schedule of SPEC §3: 1 s doubling to a
//! 30 s cap, each delay then loses a random 0–50 %, and the schedule resets
//! after 60 s of healthy connection. The Wrapper client uses the same type with
//! a shorter base for its request retries.

use std::time::Duration;

use rand::Rng;

/// A doubling delay with a cap and "lose up to half" jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    base: Duration,
    /// Largest delay before jitter.
    cap: Duration,
    /// Failures since the last reset.
    attempt: u32,
}

impl Backoff {
    /// The reconnect schedule: 1 s doubling to 30 s.
    pub fn reconnect() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// A schedule from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The un-jittered delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay: nominal minus a random 0–50 %. Advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let keep = rand::rng().random_range(0.5..=1.0);
        nominal.mul_f64(keep)
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// After a session ends: back to the first delay only when the consumer
    /// was *connected* (subscribed and resynced) for at least [`HEALTHY_RESET`]
    /// in it. A long session spent failing its reloads does not count.
    pub fn after_session(&mut self, connected_for: Duration) {
        if connected_for >= HEALTHY_RESET {
            self.reset();
        }
    }
}

/// How long a healthy connection resets the reconnect schedule (SPEC §3).
pub const HEALTHY_RESET: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_cap_with_bounded_jitter() {
        let mut b = Backoff::reconnect();
        let expect = [1, 2, 4, 8, 16, 30, 30, 30];
        for secs in expect {
            let nominal = Duration::from_secs(secs);
            assert_eq!(b.nominal(), nominal);
            let d = b.next_delay();
            assert!(d <= nominal && d >= nominal / 2, "{d:?} vs {nominal:?}");
        }
        b.reset();
        assert_eq!(b.nominal(), Duration::from_secs(1));
    }

    #[test]
    fn only_a_healthy_minute_resets_the_schedule() {
        let mut b = Backoff::reconnect();
        b.next_delay();
        b.next_delay();
        b.after_session(Duration::from_secs(59));
        assert_eq!(b.nominal(), Duration::from_secs(4), "59 s connected: kept");
        b.after_session(Duration::ZERO);
        assert_eq!(b.nominal(), Duration::from_secs(4), "never connected: kept");
        b.after_session(HEALTHY_RESET);
        assert_eq!(b.nominal(), Duration::from_secs(1));
    }
}
