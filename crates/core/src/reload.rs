//! Full reloads of critical data: why one runs, when it starts, how requests
//! coalesce, how a failure is retried, and the events recorded meanwhile.
//!
//! One [`Reloads`] lives in each subscription session (a reconnect starts a
//! new one, which aborts whatever the old one was doing). Its rules:
//!
//! * **A reload in progress always completes.** A request that arrives while
//!   one runs is remembered as *one* more reload, whatever the number of such
//!   requests; it starts after the running one is installed.
//! * **`resync-required` is jittered and spaced.** Its reload starts after a
//!   random 0–`resyncJitterMs` wait (so a fleet does not hit the Wrapper at
//!   the same instant), and never sooner than `resyncJitterMs` after the
//!   previous `resync-required` reload started (so a storm of them costs at
//!   most one reload per interval). Requests that arrive during the wait join
//!   it. A reconnect or the initial load starts at once.
//! * **A failure is retried** with the reconnect backoff (SPEC §3) until a
//!   reload succeeds; meanwhile `health()` says `resync-failed`.
//! * **Nothing outlives it.** The download runs in its own task, aborted when
//!   the [`Reloads`] (or its session) is dropped.
//! * **Events applied during a download are recorded**, bounded by count and
//!   bytes, and re-applied on the new store before it is swapped in (see
//!   `apply.rs`), so neither an event newer than the snapshot nor one that
//!   looked stale against the *old* store is lost. When the bound is hit the
//!   recording stops, the reload still completes and is installed, and one
//!   more reload follows at once (counted in `queueOverflows`).
//! * **The replay fence moves when a reload starts**: with a signing secret,
//!   signed events stamped more than `maxClockSkewMs` before the start of the
//!   latest load are `expired` (its snapshot already holds their effect).

use std::time::Duration;

use rand::Rng;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::background::Priority;
use crate::backoff::Backoff;
use crate::error::{CoreError, Result};
use crate::fleet::{FleetContext, Loaded, Source, Wants};
use crate::metrics::now_ms;
use crate::protocol::Event;
use crate::replay::ReplayWindow;
use crate::stream::StreamId;
use crate::wrapper::WrapperClient;

/// Why a full reload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The periodic refresh (`refreshIntervalMs`).
    Refresh,
    /// A `resync-required` event.
    ResyncRequired,
    /// The subscription was re-established after a loss.
    Reconnect,
    /// The first load of the consumer.
    Initial,
}

impl Reason {
    /// The name used in logs and the `'resync'` event.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Refresh => "refresh",
            Reason::ResyncRequired => "resync-required",
            Reason::Reconnect => "reconnect",
            Reason::Initial => "initial",
        }
    }

    /// Whether reference data is dropped when this reload completes (events
    /// may have been missed, or the publisher asked for it).
    pub fn drops_reference(self) -> bool {
        matches!(self, Reason::ResyncRequired | Reason::Reconnect)
    }
}

/// Bounds of the events recorded during one reload.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Most events.
    pub events: usize,
    /// Most bytes of their raw messages.
    pub bytes: usize,
}

/// An event recorded during a download, with its stream entry id (stream
/// transport) so that installation can skip what the new data already holds.
pub type Recorded = (Option<StreamId>, Event);

/// A reload whose download is running.
struct Running {
    /// The download-and-build task; aborted on drop.
    task: AbortOnDropHandle<Result<Option<Loaded>>>,
    /// Why it runs.
    reason: Reason,
    /// Epoch ms at which it started (the data is at least that fresh).
    started_ms: i64,
    /// Events applied since it started; `None` once the bound was hit.
    recorded: Option<Vec<Recorded>>,
    /// Bytes of the recorded events' messages.
    recorded_bytes: usize,
}

/// A reload that finished downloading, ready to be installed.
pub struct Finished {
    /// Why it ran.
    pub reason: Reason,
    /// The new data, or why it could not be loaded; `Ok(None)` when there
    /// is nothing to install (a refresh another instance of the fleet does).
    pub result: Result<Option<Loaded>>,
    /// The events recorded meanwhile (empty after an overflow).
    pub recorded: Vec<Recorded>,
    /// Epoch ms at which it started.
    pub started_ms: i64,
}

/// See the module docs. Owned by one session; not shared.
pub struct Reloads {
    /// Where snapshots come from.
    wrapper: WrapperClient,
    /// `resyncJitterMs`.
    jitter: Duration,
    /// Bounds of `Running::recorded`.
    limits: RecordLimits,
    /// The reload downloading now.
    running: Option<Running>,
    /// The next reload and when it starts (a jitter wait or a retry backoff).
    scheduled: Option<(Instant, Reason)>,
    /// Asked for while one was running: at most one more.
    pending: Option<Reason>,
    /// Retry schedule after failures.
    backoff: Backoff,
    /// When the latest `resync-required` reload started, for spacing.
    last_resync_start: Option<Instant>,
    /// In a tenant pool: a download waits for one of these permits, so a
    /// reconnect of the pool's link cannot start every tenant's load at once.
    gate: Option<Arc<Semaphore>>,
    /// With the stream transport: how loads use Redis (`fleet.rs`).
    fleet: Option<FleetContext>,
    /// What the next stream-transport load must satisfy (accumulated by
    /// requests, taken by the launch).
    wants: Wants,
}

impl Reloads {
    /// An idle reload manager.
    pub fn new(
        wrapper: WrapperClient,
        jitter: Duration,
        limits: RecordLimits,
        gate: Option<Arc<Semaphore>>,
        fleet: Option<FleetContext>,
    ) -> Reloads {
        Reloads {
            gate,
            fleet,
            wants: Wants::default(),
            wrapper,
            jitter,
            limits,
            running: None,
            scheduled: None,
            pending: None,
            backoff: Backoff::reconnect(),
            last_resync_start: None,
        }
    }

    /// Nothing running, waiting or pending.
    pub fn is_idle(&self) -> bool {
        self.running.is_none() && self.scheduled.is_none() && self.pending.is_none()
    }

    /// Asks for a reload (see the module docs for how requests combine). A
    /// periodic refresh is dropped when any reload is already on its way.
    pub fn request(&mut self, reason: Reason) {
        if reason == Reason::Refresh && !self.is_idle() {
            return;
        }
        if self.running.is_some() {
            self.pending = self.pending.max(Some(reason));
            return;
        }
        self.scheduled = Some(match self.scheduled {
            // A resync-required joins the wait; a reconnect cuts it short.
            Some((t, r)) if reason == Reason::ResyncRequired => (t, r.max(reason)),
            Some((t, r)) => (t.min(self.start_time(reason)), r.max(reason)),
            None => (self.start_time(reason), reason),
        });
    }

    /// When a reload asked now for `reason` may start.
    fn start_time(&self, reason: Reason) -> Instant {
        let now = Instant::now();
        if reason != Reason::ResyncRequired || self.jitter.is_zero() {
            return now;
        }
        let wait = rand::rng().random_range(Duration::ZERO..=self.jitter);
        let spaced = self.last_resync_start.map_or(now, |t| t + self.jitter);
        (now + wait).max(spaced)
    }

    /// True while a download runs and its events are being recorded.
    pub fn is_recording(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.recorded.is_some())
    }

    /// The next load must be as of `id` or later (a `resync-required` entry).
    pub fn require(&mut self, id: StreamId) {
        self.wants.at_least = self.wants.at_least.max(Some(id));
    }

    /// Another instance announced a new shared snapshot as of `id`: load it.
    pub fn follow(&mut self, id: StreamId) {
        self.wants.follow = true;
        self.require(id);
        self.request(Reason::Refresh);
    }

    /// Records an event applied (or found stale) while a download runs.
    /// Returns true when this overflowed the bound (to be counted).
    pub fn record(&mut self, ev: &Event, id: Option<StreamId>, bytes: usize) -> bool {
        let Some(run) = self.running.as_mut() else {
            return false;
        };
        let Some(list) = run.recorded.as_mut() else {
            return false;
        };
        if list.len() >= self.limits.events || run.recorded_bytes + bytes > self.limits.bytes {
            run.recorded = None;
            self.pending = self.pending.max(Some(run.reason));
            return true;
        }
        run.recorded_bytes += bytes;
        list.push((id, ev.clone()));
        false
    }

    /// Starts the scheduled reload once its time has come (moving the
    /// replay window's load fence to its start), then waits for the running
    /// one to finish. Pending for ever when idle. Cancel-safe: dropping this
    /// future loses nothing (the task stays in `self`).
    pub async fn next(&mut self, replay: &ReplayWindow) -> Finished {
        if self.running.is_none() {
            match self.scheduled {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
            if let Some((_, reason)) = self.scheduled.take() {
                self.launch(reason);
                if let Some(run) = &self.running {
                    replay.set_fence(run.started_ms);
                }
            }
        }
        let Some(run) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let result = match (&mut run.task).await {
            Ok(r) => r,
            Err(_) => Err(CoreError::WrapperUnavailable(
                "the snapshot task stopped".into(),
            )),
        };
        let run = self.running.take().expect("running was checked above");
        Finished {
            reason: run.reason,
            result,
            recorded: run.recorded.unwrap_or_default(),
            started_ms: run.started_ms,
        }
    }

    fn launch(&mut self, reason: Reason) {
        if reason == Reason::ResyncRequired {
            self.last_resync_start = Some(Instant::now());
        }
        let wrapper = self.wrapper.clone();
        let gate = self.gate.clone();
        let fleet = self.fleet.clone();
        let mut wants = std::mem::take(&mut self.wants);
        wants.refresh = reason == Reason::Refresh;
        // The first load is waited for; a reload yields to the JS thread and
        // the live events (background.rs).
        let priority = if reason == Reason::Initial {
            Priority::Normal
        } else {
            Priority::Low
        };
        wants.priority = priority;
        let task = tokio::spawn(async move {
            let _permit = match gate {
                Some(g) => Some(g.acquire_owned().await.map_err(|_| CoreError::Shutdown)?),
                None => None,
            };
            if let Some(ctx) = &fleet {
                return crate::fleet::load(ctx, &wrapper, wants).await;
            }
            // Conditional (SPEC §4 ETags) except for the first load.
            let built = wrapper
                .snapshot_if(reason != Reason::Initial, priority)
                .await?;
            crate::metrics::Metrics::inc(&wrapper.metrics().snapshot_loads_wrapper);
            let unchanged = built.unchanged;
            Ok(Some(Loaded {
                store: built.store,
                source: Source::Wrapper,
                position: None,
                catchup: Vec::new(),
                unchanged,
            }))
        });
        self.running = Some(Running {
            task: AbortOnDropHandle::new(task),
            reason,
            started_ms: now_ms(),
            recorded: Some(Vec::new()),
            recorded_bytes: 0,
        });
    }

    /// The outcome of [`Reloads::next`] was handled: schedules what follows
    /// (the pending reload after a success, a retry with backoff after a
    /// failure) and returns the retry delay when there is one.
    pub fn done(&mut self, reason: Reason, ok: bool) -> Option<Duration> {
        if ok {
            self.backoff.reset();
            if let Some(next) = self.pending.take() {
                self.request(next);
            }
            None
        } else {
            let delay = self.backoff.next_delay();
            let reason = self.pending.take().map_or(reason, |p| p.max(reason));
            self.scheduled = Some((Instant::now() + delay, reason));
            Some(delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    fn reloads(jitter_ms: u64) -> Reloads {
        let config = Config::from_json(
            &serde_json::json!({ "tenantId": "t", "wrapperUrl": "http://127.0.0.1:9" }),
            &Default::default(),
        )
        .unwrap();
        let wrapper = WrapperClient::new(&config, Arc::new(Metrics::default())).unwrap();
        Reloads::new(
            wrapper,
            Duration::from_millis(jitter_ms),
            RecordLimits {
                events: 1000,
                bytes: 1 << 20,
            },
            None,
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_while_waiting_join_the_wait() {
        let mut r = reloads(5000);
        r.request(Reason::ResyncRequired);
        let (at, _) = r.scheduled.unwrap();
        assert!(at <= Instant::now() + Duration::from_millis(5000));
        for _ in 0..100 {
            r.request(Reason::ResyncRequired);
        }
        assert_eq!(r.scheduled.unwrap().0, at, "joined, not rescheduled");
        assert!(r.running.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn resync_required_reloads_are_spaced_by_the_jitter() {
        let mut r = reloads(5000);
        r.last_resync_start = Some(Instant::now());
        r.request(Reason::ResyncRequired);
        let (at, _) = r.scheduled.unwrap();
        assert!(at >= Instant::now() + Duration::from_millis(5000));
        // A reconnect does not wait.
        let mut r = reloads(5000);
        r.request(Reason::Reconnect);
        assert!(r.scheduled.unwrap().0 <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_while_running_become_one_more() {
        let mut r = reloads(0);
        r.request(Reason::ResyncRequired);
        r.scheduled = None;
        r.launch(Reason::ResyncRequired);
        for _ in 0..10 {
            r.request(Reason::ResyncRequired);
        }
        r.request(Reason::Refresh);
        assert_eq!(r.pending, Some(Reason::ResyncRequired));
        assert!(r.scheduled.is_none());
        r.running = None;
        assert_eq!(r.done(Reason::ResyncRequired, true), None);
        assert!(r.scheduled.is_some(), "the one more is scheduled");
        assert_eq!(r.pending, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_record_bound_stops_recording_and_asks_for_one_more() {
        let mut r = reloads(0);
        r.limits = RecordLimits {
            events: 2,
            bytes: 1000,
        };
        r.launch(Reason::Refresh);
        let ev = Event {
            event_id: None,
            event_type: "resync-required",
            version: None,
            change: crate::protocol::Change::ResyncRequired,
        };
        assert!(!r.record(&ev, None, 10));
        assert!(!r.record(&ev, None, 10));
        assert!(r.record(&ev, None, 10), "third overflows");
        assert!(!r.record(&ev, None, 10), "counted once");
        assert_eq!(r.pending, Some(Reason::Refresh));
        assert!(r.running.as_ref().unwrap().recorded.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_retried_with_backoff() {
        let mut r = reloads(0);
        r.pending = Some(Reason::ResyncRequired);
        let delay = r.done(Reason::Refresh, false).unwrap();
        assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1));
        assert_eq!(r.scheduled.unwrap().1, Reason::ResyncRequired);
    }
}
