//! Work of a full load that must not compete with the JS thread: parsing and
//! building the pages of a large list, and freeing a replaced store.
//!
//! A load's CPU work (parsing a million rows, inserting them) runs on a
//! thread of its own ([`LoadThread`]), not on the tokio workers that also
//! carry the live events and the answers to the JS thread. A reload (any load
//! but the first) lowers that thread ([`Priority::Low`]: `SCHED_IDLE` on
//! Linux, and nice 19), so on a machine with few cores the JS thread and the
//! event path get the CPU first and the reload takes what is left. A replaced
//! store is freed the same way ([`drop_low`]): a million entries take
//! milliseconds to free, then `malloc_trim` (memory.rs) gives the pages back.
//!
//! A panic in a job is caught: the job's answer is `None`, the thread goes on.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::OnceLock;

/// How a load's thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// The first load: the application waits for it.
    #[default]
    Normal,
    /// A reload: the old data answers meanwhile, so it yields (`SCHED_IDLE`,
    /// nice 19). On a host whose CPUs are all busy with normal work it gets
    /// very little, so the reload takes longer; events keep being applied.
    Low,
}

/// A job for a [`LoadThread`].
type Job = Box<dyn FnOnce() + Send>;

/// The thread of one load, started on its first job; it ends when the load
/// drops it (after the jobs already queued).
pub struct LoadThread {
    /// Its scheduling.
    priority: Priority,
    /// The queue to the thread, once started (`None` inside: it could not be
    /// started; jobs then run where they are asked).
    tx: OnceLock<Option<mpsc::Sender<Job>>>,
}

impl LoadThread {
    /// A thread for one load, not started yet.
    pub fn new(priority: Priority) -> LoadThread {
        LoadThread {
            priority,
            tx: OnceLock::new(),
        }
    }

    /// The queue, starting the thread on first use.
    fn sender(&self) -> Option<&mpsc::Sender<Job>> {
        self.tx
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel::<Job>();
                let priority = self.priority;
                std::thread::Builder::new()
                    .name("smart-crm-load".into())
                    .spawn(move || {
                        if priority == Priority::Low {
                            lower_this_thread();
                        }
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })
                    .ok()
                    .map(|_| tx)
            })
            .as_ref()
    }

    /// Runs `f` on the load's thread; `None` when it panicked. When the
    /// thread cannot be started, `f` runs at once on the caller's.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl Future<Output = Option<R>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)).ok());
        });
        if let Some(s) = self.sender() {
            if let Err(mpsc::SendError(job)) = s.send(job) {
                job();
            }
        } else {
            job();
        }
        async move { rx.await.ok().flatten() }
    }
}

/// Lowers the calling thread (not the process): on Linux to the `SCHED_IDLE`
/// policy, which a waking thread of normal policy (the JS thread, the event
/// path) preempts at once, instead of waiting for the end of the low
/// thread's time slice as it does for a nice-19 thread (bench/PROFILE.md,
/// "Row 7b"); the thread still gets every CPU nobody else wants. Also nice
/// 19, which is what remains where `SCHED_IDLE` is refused, and what other
/// Unixes with a per-thread nice value get.
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, setpriority and sched_setscheduler take no pointers
        // but `param`, a live local; on Linux the nice value and the policy
        // of PRIO_PROCESS / pid = a thread id are that thread's.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
        }
    }
}

/// Frees `value` on a new low thread (as [`Priority::Low`]), then, with
/// `trim`, gives the freed memory back (memory.rs). Returns at once; when no
/// thread can be started it frees on the caller's.
pub fn drop_low<T: Send + 'static>(value: T, trim: bool) {
    let job = move || {
        lower_this_thread();
        drop(value);
        if trim {
            crate::memory::give_back();
        }
    };
    // A failed spawn drops the closure, and with it the value, here.
    let _ = std::thread::Builder::new()
        .name("smart-crm-free".into())
        .spawn(job);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn policy_of_this_thread() -> i32 {
        // SAFETY: reads this thread's policy; no pointers.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[cfg(target_os = "linux")]
    fn nice_of_this_thread() -> i32 {
        // SAFETY: as above; getpriority only reads.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[tokio::test]
    async fn a_low_load_thread_is_idle_policy_and_nice_19_and_the_caller_is_not() {
        let low = LoadThread::new(Priority::Low);
        let normal = LoadThread::new(Priority::Normal);
        #[cfg(target_os = "linux")]
        {
            let before = nice_of_this_thread();
            assert_eq!(low.run(nice_of_this_thread).await, Some(19));
            assert_eq!(normal.run(nice_of_this_thread).await, Some(before));
            assert_eq!(nice_of_this_thread(), before, "the caller is unchanged");
            assert_eq!(low.run(policy_of_this_thread).await, Some(libc::SCHED_IDLE));
            let normal_policy = normal.run(policy_of_this_thread).await;
            assert_eq!(normal_policy, Some(policy_of_this_thread()));
            assert_ne!(normal_policy, Some(libc::SCHED_IDLE));
        }
        // one thread per load: jobs run in order on it
        let a = low.run(|| std::thread::current().id());
        let b = low.run(|| std::thread::current().id());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(a, b);
        assert_ne!(a, std::thread::current().id());
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_the_thread_goes_on() {
        let t = LoadThread::new(Priority::Low);
        let r: Option<u8> = t.run(|| panic!("a bad page")).await;
        assert_eq!(r, None);
        assert_eq!(t.run(|| 7).await, Some(7));
    }

    #[test]
    fn drop_low_frees_on_another_thread() {
        struct Probe(std::sync::mpsc::Sender<(std::thread::ThreadId, i32)>);
        impl Drop for Probe {
            fn drop(&mut self) {
                #[cfg(target_os = "linux")]
                let nice = nice_of_this_thread();
                #[cfg(not(target_os = "linux"))]
                let nice = 19;
                let _ = self.0.send((std::thread::current().id(), nice));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop_low(Probe(tx), false);
        let (id, nice) = rx.recv().unwrap();
        assert_ne!(id, std::thread::current().id());
        assert_eq!(nice, 19);
    }
}
