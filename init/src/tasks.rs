//! Long-lived tasks of PID 1 that must outlive their own panics: a DHCP client per
//! interface, the network manager, the update agent. A task that panics is logged with its
//! name and the panic's message and started again after a back-off (1 s, doubling to 60 s;
//! back to 1 s once a run has lasted a minute), so that one hostile packet or reply costs
//! a restart, not the task for the rest of the boot. A task that returns is done.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::error;

/// The console line of a restart.
pub const RESTART_LINE: &str = "gantry-init: task panicked; restarting";

/// The back-off between restarts of one task.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// A run at least this long resets the schedule.
    healthy: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }
}

impl Backoff {
    /// A schedule from `first`, doubling up to `max`, reset by a run of `healthy`.
    pub fn new(first: Duration, max: Duration, healthy: Duration) -> Backoff {
        Backoff {
            first,
            max,
            healthy,
            failures: 0,
        }
    }

    /// The wait before the next start, after a run that lasted `ran` and panicked.
    pub fn after_panic(&mut self, ran: Duration) -> Duration {
        if ran >= self.healthy {
            self.failures = 0;
        }
        let wait = self
            .first
            .checked_mul(1u32 << self.failures.min(16))
            .unwrap_or(self.max)
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        wait
    }
}

/// The message of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(not a string)".to_owned()
    }
}

/// Runs the future `make` gives on the current tokio runtime, again after each panic,
/// until one run returns or `stop` turns true.
pub async fn supervise<F, Fut>(
    task: &str,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let started = Instant::now();
        let why = match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => panic_message(&*e.into_panic()),
            Err(_) => return, // cancelled: the runtime is going away
        };
        if *stop.borrow() {
            return;
        }
        let wait = backoff.after_panic(started.elapsed());
        error!(task, panic = %why, retry_ms = wait.as_millis() as u64, "{RESTART_LINE}");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs `body` on this thread, again after each panic, until one run returns.
pub fn supervise_thread(task: &str, mut backoff: Backoff, mut body: impl FnMut()) {
    loop {
        let started = Instant::now();
        let why = match catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(()) => return,
            Err(payload) => panic_message(&*payload),
        };
        let wait = backoff.after_panic(started.elapsed());
        error!(task, panic = %why, retry_ms = wait.as_millis() as u64, "{RESTART_LINE}");
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn the_back_off_doubles_to_its_cap_and_a_long_run_resets_it() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(10);
        let waits: Vec<u64> = (0..9).map(|_| b.after_panic(short).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            b.after_panic(Duration::from_secs(61)),
            Duration::from_secs(1)
        );
        assert_eq!(b.after_panic(short), Duration::from_secs(2));
        for _ in 0..100 {
            b.after_panic(short);
        }
        assert_eq!(b.after_panic(short), Duration::from_secs(60), "no overflow");
    }

    fn no_wait() -> Backoff {
        Backoff::new(Duration::ZERO, Duration::ZERO, Duration::from_secs(60))
    }

    #[test]
    fn a_task_that_panics_is_started_again_until_it_returns() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let runs = Arc::new(AtomicU32::new(0));
        let (_keep, stop) = watch::channel(false);
        let counted = runs.clone();
        rt.block_on(supervise("flaky", no_wait(), stop, move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("hostile input");
                }
            }
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_stopped_task_is_not_started_again() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let runs = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let counted = runs.clone();
        rt.block_on(supervise("stopping", no_wait(), stop, move || {
            let _ = stop_tx.send(true);
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                panic!("while stopping");
            }
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_thread_body_that_panics_runs_again() {
        let mut runs = 0;
        supervise_thread("agent", no_wait(), || {
            runs += 1;
            if runs < 3 {
                panic!("bad reply {runs}");
            }
        });
        assert_eq!(runs, 3);
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let s: Box<dyn Any + Send> = Box::new("static");
        let owned: Box<dyn Any + Send> = Box::new(String::from("owned"));
        let other: Box<dyn Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(&*s), "static");
        assert_eq!(panic_message(&*owned), "owned");
        assert_eq!(panic_message(&*other), "(not a string)");
    }
}
