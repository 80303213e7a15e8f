//! The Wrapper circuit breaker.
//!
//! After `circuitBreaker.failures` (default [`FAILURES_TO_OPEN`]) consecutive calls that ended `WRAPPER_UNAVAILABLE`
//! (each already retried), the circuit opens: calls fail at once, without a
//! request, for `circuitBreaker.coolDownMs` (default [`COOL_DOWN`]). Then one call is let through as a probe
//! (half-open): its success closes the circuit, its failure opens it again. Any
//! answer from the Wrapper — including 4xx — counts as success, since it shows
//! the Wrapper is up. A probe that never reports (its caller went away) is
//! replaced by a new one after another cool-down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default: consecutive unavailable calls that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 5;
/// Default: how long the circuit stays open before a probe is allowed.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// The circuit's state, as `health()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Calls flow.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

impl Circuit {
    /// The name used in `health()`.
    pub fn name(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
struct State {
    /// Current state.
    circuit: Circuit,
    /// Consecutive failures while closed.
    failures: u32,
    /// When the open state (or the probe) times out.
    until: Instant,
}

/// See the module docs. Thread-safe; every method takes a short lock.
#[derive(Debug)]
pub struct Breaker {
    /// Closed/open/half-open with its counters.
    state: Mutex<State>,
    /// Failures that open the circuit.
    threshold: u32,
    /// How long it stays open before a probe.
    cool_down: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(FAILURES_TO_OPEN, COOL_DOWN)
    }
}

impl Breaker {
    /// A closed breaker opening after `threshold` failures for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            state: Mutex::new(State {
                circuit: Circuit::Closed,
                failures: 0,
                until: Instant::now(),
            }),
            threshold: threshold.max(1),
            cool_down,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when a call may go out now (possibly as the half-open probe).
    pub fn admit(&self) -> bool {
        let mut s = self.lock();
        let now = Instant::now();
        match s.circuit {
            Circuit::Closed => true,
            Circuit::Open | Circuit::HalfOpen if now >= s.until => {
                s.circuit = Circuit::HalfOpen;
                s.until = now + self.cool_down;
                true
            }
            Circuit::Open | Circuit::HalfOpen => false,
        }
    }

    /// The Wrapper answered.
    pub fn success(&self) {
        let mut s = self.lock();
        s.circuit = Circuit::Closed;
        s.failures = 0;
    }

    /// A call ended `WRAPPER_UNAVAILABLE`.
    pub fn failure(&self) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.circuit == Circuit::HalfOpen || s.failures >= self.threshold {
            s.circuit = Circuit::Open;
            s.until = Instant::now() + self.cool_down;
        }
    }

    /// The current state.
    pub fn circuit(&self) -> Circuit {
        self.lock().circuit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_closes_after_a_good_probe() {
        let b = Breaker::new(FAILURES_TO_OPEN, Duration::from_millis(30));
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert!(b.admit());
            b.failure();
        }
        assert_eq!(b.circuit(), Circuit::Closed);
        b.failure();
        assert_eq!(b.circuit(), Circuit::Open);
        assert!(!b.admit(), "open: fail fast");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "one probe after the cool-down");
        assert_eq!(b.circuit(), Circuit::HalfOpen);
        assert!(!b.admit(), "only one probe");
        b.failure();
        assert_eq!(b.circuit(), Circuit::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        b.success();
        assert_eq!(b.circuit(), Circuit::Closed);
        assert!(b.admit());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::default();
        for _ in 0..10 {
            b.failure();
            b.success();
        }
        assert_eq!(b.circuit(), Circuit::Closed);
    }
}
