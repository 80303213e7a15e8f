//! The background tasks a handle owns (a consumer's, a pool's): stopped the
//! same way everywhere, joined with a grace period on shutdown and aborted
//! on drop.

use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

/// How long shutdown waits for a task to end by itself before aborting it.
const GRACE: Duration = Duration::from_secs(2);

/// Tasks owned by one handle. Thread-safe.
#[derive(Default)]
pub(crate) struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    /// Owns `tasks` too.
    pub fn extend(&self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
    }

    /// Waits for each task (after its cancellation was signalled) up to the
    /// grace period, then aborts it.
    pub async fn join(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(GRACE, t).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Aborts every task at once (from `Drop`: nothing can be awaited).
    pub fn abort(&mut self) {
        for t in self
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}
