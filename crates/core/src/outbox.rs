//! The outbox: ships replica batches to the JS side, coalescing while it is busy.
//!
//! Producers (the subscription task, reloads) merge their changes into one
//! pending [`Delta`] and call [`Outbox::flush`]. When no batch is in flight,
//! `flush` serialises the pending delta right there, on the producer's thread
//! (never the JS thread), and hands it to the [`Sink`]: one event costs one
//! wake-up of the JS thread and no other hop. At most one batch is in flight:
//! until the JS side has taken it (the [`Batch`] is dropped), further changes
//! keep merging into the pending delta, and the flusher task sends them when
//! the slot frees. A storm of events thus costs the JS thread one batch per
//! turn of its event loop instead of one call per event, and memory stays
//! bounded by the number of distinct keys. Batches are delivered in order and
//! counted ([`Outbox::batches_sent`]), so the JS side can tell whether it has
//! applied every batch sent so far.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::delta::{Delta, Notice};

/// Where batches go (the binding implements it with a threadsafe function).
pub trait Sink: Send + Sync + 'static {
    /// Queues `batch` for the JS thread. Must not block. Dropping the batch
    /// (after taking its JSON, or on failure) lets the next one go.
    fn deliver(&self, batch: Batch);
}

/// One serialised replica batch.
pub struct Batch {
    /// The wire form of [`Delta::to_json`].
    pub json: String,
    /// Released on drop: marks the batch taken and wakes the flusher.
    _guard: InFlight,
}

struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.store(false, SeqCst);
        self.0.wake.notify_one();
    }
}

struct State {
    /// Changes not yet serialised.
    pending: Mutex<Delta>,
    /// Wakes the flusher.
    wake: Notify,
    /// A batch is queued for, or being taken by, the JS thread.
    in_flight: AtomicBool,
    /// The current sink; `None` before start and after shutdown.
    sink: Mutex<Option<Arc<dyn Sink>>>,
    /// Whether `'change'` notices are wanted (a JS listener is attached).
    listen_changes: AtomicBool,
    /// Batches taken from `pending` so far (incremented before the take).
    batches_sent: AtomicU64,
}

/// See the module docs. Cheap to clone; all methods are thread-safe.
#[derive(Clone)]
pub struct Outbox {
    state: Arc<State>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            state: Arc::new(State {
                pending: Mutex::new(Delta::default()),
                wake: Notify::new(),
                in_flight: AtomicBool::new(false),
                sink: Mutex::new(None),
                listen_changes: AtomicBool::new(false),
                batches_sent: AtomicU64::new(0),
            }),
        }
    }
}

impl Outbox {
    /// Runs `f` on the pending delta under its lock. Keep `f` short.
    pub fn with<R>(&self, f: impl FnOnce(&mut Delta) -> R) -> R {
        let mut guard = self.state.pending.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Appends a notice and wakes the flusher.
    pub fn notice(&self, n: Notice) {
        self.with(|d| d.notice(n));
        self.flush();
    }

    /// Batches sent so far. A reader that holds the store lock and sees this
    /// equal to the number of batches the JS side has applied knows that no
    /// batch older than its read is still on its way.
    pub fn batches_sent(&self) -> u64 {
        self.state.batches_sent.load(SeqCst)
    }

    /// Sends what is pending now if no batch is in flight (serialising on the
    /// calling thread), else as soon as the JS side takes the current one.
    /// Does nothing without a sink.
    pub fn flush(&self) {
        let sh = &self.state;
        if sh
            .in_flight
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_err()
        {
            return; // the in-flight batch's drop wakes the flusher
        }
        let sink = sh.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let delta = match &sink {
            Some(_) => self.with(|d| {
                if d.is_empty() {
                    None
                } else {
                    sh.batches_sent.fetch_add(1, SeqCst);
                    Some(std::mem::take(d))
                }
            }),
            None => None,
        };
        match (sink, delta) {
            (Some(sink), Some(delta)) => {
                let batch = Batch {
                    json: delta.to_json(),
                    _guard: InFlight(sh.clone()),
                };
                sink.deliver(batch);
            }
            _ => {
                sh.in_flight.store(false, SeqCst);
                // A producer that flushed while we held the slot found it busy.
                let pending = sink_is_set(sh) && !self.with(|d| d.is_empty());
                if pending {
                    sh.wake.notify_one();
                }
            }
        }
    }

    /// Installs or removes the sink. Removing it releases the JS callback.
    pub fn set_sink(&self, sink: Option<Arc<dyn Sink>>) {
        *self.state.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink;
        self.flush();
    }

    /// Turns `'change'` notices on or off.
    pub fn set_listen_changes(&self, on: bool) {
        self.state.listen_changes.store(on, SeqCst);
    }

    /// Whether `'change'` notices are wanted.
    pub fn listen_changes(&self) -> bool {
        self.state.listen_changes.load(SeqCst)
    }

    /// The flusher loop: sends what accumulated while a batch was in flight.
    /// Returns on `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.state.wake.notified() => {}
            }
            self.flush();
        }
    }
}

fn sink_is_set(sh: &State) -> bool {
    sh.sink.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}
