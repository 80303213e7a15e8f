//! The outbox: ships replica batches to the JS side, coalescing while it is busy.
//!
//! Producers (the subscription task, reloads) merge their changes into one
//! pending [`Delta`] and call [`Outbox::flush`]. A single flusher task turns
//! the pending delta into JSON *off the JS thread* and hands it to the
//! [`Sink`]. At most one batch is in flight: until the JS side has taken it
//! (the [`Batch`] is dropped), further changes keep merging into the pending
//! delta, so a storm of events costs the JS thread one batch per turn of its
//! event loop instead of one call per event, and memory stays bounded by the
//! number of distinct keys. Batches are delivered in order.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
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

struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.store(false, SeqCst);
        self.0.wake.notify_one();
    }
}

struct Shared {
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
}

/// See the module docs. Cheap to clone; all methods are thread-safe.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            shared: Arc::new(Shared {
                pending: Mutex::new(Delta::default()),
                wake: Notify::new(),
                in_flight: AtomicBool::new(false),
                sink: Mutex::new(None),
                listen_changes: AtomicBool::new(false),
            }),
        }
    }
}

impl Outbox {
    /// Runs `f` on the pending delta under its lock. Keep `f` short.
    pub fn with<R>(&self, f: impl FnOnce(&mut Delta) -> R) -> R {
        let mut guard = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Appends a notice and wakes the flusher.
    pub fn notice(&self, n: Notice) {
        self.with(|d| d.notice(n));
        self.flush();
    }

    /// Sends what is pending as soon as the JS side is free.
    pub fn flush(&self) {
        self.shared.wake.notify_one();
    }

    /// Installs or removes the sink. Removing it releases the JS callback.
    pub fn set_sink(&self, sink: Option<Arc<dyn Sink>>) {
        *self.shared.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink;
        self.flush();
    }

    /// Turns `'change'` notices on or off.
    pub fn set_listen_changes(&self, on: bool) {
        self.shared.listen_changes.store(on, SeqCst);
    }

    /// Whether `'change'` notices are wanted.
    pub fn listen_changes(&self) -> bool {
        self.shared.listen_changes.load(SeqCst)
    }

    /// The flusher loop; returns on `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.shared.wake.notified() => {}
            }
            if self.shared.in_flight.load(SeqCst) {
                continue; // the in-flight batch's drop wakes us again
            }
            let sink = self
                .shared
                .sink
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(sink) = sink else { continue };
            let delta = self.with(std::mem::take);
            if delta.is_empty() {
                continue;
            }
            self.shared.in_flight.store(true, SeqCst);
            let batch = Batch {
                json: delta.to_json(),
                _guard: InFlight(self.shared.clone()),
            };
            sink.deliver(batch);
        }
    }
}
