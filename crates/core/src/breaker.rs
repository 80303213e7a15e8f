//! A Wrapper circuit breaker.
//!
//! After `circuitBreaker.failures` (default [`FAILURES_TO_OPEN`]) consecutive calls that ended `WRAPPER_UNAVAILABLE`
//! (each already retried), the circuit opens: calls fail at once, without a
//! request, for `circuitBreaker.coolDownMs` (default [`COOL_DOWN`]). Then one call is let through as a probe
//! (half-open): its success closes the circuit, its failure opens it again. Any
//! answer from the Wrapper — including 4xx — counts as success, since it shows
//! the Wrapper is up.
//!
//! A call is admitted by [`Breaker::try_acquire`], which hands out a [`Permit`];
//! the call reports through it ([`Permit::success`], [`Permit::failure`]). What
//! one "call" is belongs to the caller: the Wrapper client makes a whole snapshot
//! load one call (so a half-open probe admits every request of that load) and
//! each reference request one call. A probe whose permit is dropped without a
//! report (its caller went away) frees the probe slot at once, so the next call
//! probes instead of failing fast for another cool-down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default: consecutive unavailable calls that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 5;
/// Default: how long the circuit stays open before a probe is allowed.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// The circuit's state, as `health()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Circuit {
    /// Calls flow.
    Closed,
    /// One probe is in flight.
    HalfOpen,
    /// Calls fail fast.
    Open,
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

/// See the module docs. Thread-safe; every method takes a short lock, never
/// across an await.
#[derive(Debug)]
pub struct Breaker {
    /// Closed/open/half-open with its counters.
    state: Mutex<State>,
    /// Failures that open the circuit.
    threshold: u32,
    /// How long it stays open before a probe.
    cool_down: Duration,
}

/// Leave to make one call; report its outcome through it. Dropping it without
/// a report is "the call was abandoned" (see the module docs).
#[derive(Debug)]
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Permit<'a> {
    /// The breaker that admitted the call.
    breaker: &'a Breaker,
    /// True when this call is the half-open probe.
    probe: bool,
    /// Set once the outcome is reported, so `Drop` does nothing more.
    reported: bool,
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

    /// A permit when a call may go out now (possibly as the half-open probe),
    /// `None` while the circuit fails fast.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut s = self.lock();
        let now = Instant::now();
        let probe = match s.circuit {
            Circuit::Closed => false,
            Circuit::Open | Circuit::HalfOpen if now >= s.until => {
                s.circuit = Circuit::HalfOpen;
                s.until = now + self.cool_down;
                true
            }
            Circuit::Open | Circuit::HalfOpen => return None,
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// The Wrapper answered.
    fn success(&self) {
        let mut s = self.lock();
        s.circuit = Circuit::Closed;
        s.failures = 0;
    }

    /// A call ended `WRAPPER_UNAVAILABLE`.
    fn failure(&self) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.circuit == Circuit::HalfOpen || s.failures >= self.threshold {
            s.circuit = Circuit::Open;
            s.until = Instant::now() + self.cool_down;
        }
    }

    /// An abandoned probe: the next call may probe at once.
    fn release_probe(&self) {
        let mut s = self.lock();
        if s.circuit == Circuit::HalfOpen {
            s.until = Instant::now();
        }
    }

    /// The current state.
    pub fn circuit(&self) -> Circuit {
        self.lock().circuit
    }
}

impl Permit<'_> {
    /// The Wrapper answered (any status that is not an outage).
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.success();
    }

    /// The call ended `WRAPPER_UNAVAILABLE`.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.failure();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_closes_after_a_good_probe() {
        let b = Breaker::new(FAILURES_TO_OPEN, Duration::from_millis(30));
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.try_acquire().expect("closed").failure();
        }
        assert_eq!(b.circuit(), Circuit::Closed);
        b.try_acquire().expect("still closed").failure();
        assert_eq!(b.circuit(), Circuit::Open);
        assert!(b.try_acquire().is_none(), "open: fail fast");
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.try_acquire().expect("one probe after the cool-down");
        assert_eq!(b.circuit(), Circuit::HalfOpen);
        assert!(b.try_acquire().is_none(), "only one probe");
        probe.failure();
        assert_eq!(b.circuit(), Circuit::Open, "a failed probe reopens");
        assert!(b.try_acquire().is_none());
        std::thread::sleep(Duration::from_millis(40));
        b.try_acquire().expect("probe").success();
        assert_eq!(b.circuit(), Circuit::Closed);
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::default();
        for _ in 0..10 {
            b.try_acquire().unwrap().failure();
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.circuit(), Circuit::Closed);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot_at_once() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.try_acquire().unwrap().failure();
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.try_acquire().expect("probe");
        assert!(b.try_acquire().is_none());
        drop(probe);
        assert!(
            b.try_acquire().is_some(),
            "no second cool-down after an abandoned probe"
        );
    }

    #[test]
    fn dropping_a_closed_permit_changes_nothing() {
        let b = Breaker::new(1, Duration::from_secs(60));
        drop(b.try_acquire().unwrap());
        assert_eq!(b.circuit(), Circuit::Closed);
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn circuits_order_from_closed_to_open() {
        assert!(Circuit::Closed < Circuit::HalfOpen && Circuit::HalfOpen < Circuit::Open);
    }
}
