//! Supervision of PID 1's long-lived tasks (a DHCP client per interface, the API server, the
//! update agent): a task that panics is logged with its name and the panic's message and
//! started again after a back-off (1 s doubling to 60 s, back to 1 s after a run of 5 min
//! without a panic). A task that returns is finished and not restarted.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use tracing::error;

/// Logged when a supervised task panics; the restart follows after `restart_in_ms`.
pub const TASK_PANICKED: &str = "task panicked; restarting";

/// How long to wait before restarting a task after panics in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first panic.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long without a panic starts the count again.
    pub healthy_after: Duration,
}

impl Backoff {
    /// PID 1's policy.
    pub const PID1: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
        healthy_after: Duration::from_secs(300),
    };

    /// The delay before restart number `panics` (1 for the first panic in a row).
    pub fn delay(&self, panics: u32) -> Duration {
        let doublings = panics.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Counts panics in a row and says how long to wait before the next start.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: Backoff,
    panics: u32,
}

impl Restarts {
    /// No panics yet.
    pub fn new(policy: Backoff) -> Restarts {
        Restarts { policy, panics: 0 }
    }

    /// The task panicked after running for `ran_for`: the delay before it starts again.
    pub fn after_panic(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.healthy_after {
            self.panics = 0;
        }
        self.panics = self.panics.saturating_add(1);
        self.policy.delay(self.panics)
    }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn log_panic(task: &str, payload: &(dyn Any + Send), delay: Duration) {
    error!(
        task,
        panic = %panic_message(payload),
        restart_in_ms = delay.as_millis() as u64,
        "{TASK_PANICKED}"
    );
}

/// Runs `body` on the calling thread, again after each panic, until it returns.
/// `sleep` waits out the back-off (`std::thread::sleep` in PID 1).
pub fn supervise_thread(
    task: &str,
    policy: Backoff,
    mut body: impl FnMut(),
    mut sleep: impl FnMut(Duration),
) {
    let mut restarts = Restarts::new(policy);
    loop {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(()) => return,
            Err(payload) => {
                let delay = restarts.after_panic(started.elapsed());
                log_panic(task, payload.as_ref(), delay);
                sleep(delay);
            }
        }
    }
}

/// Runs the future `start` makes as a tokio task, and a new one after each panic, until
/// one finishes. `sleep` waits out the back-off (`tokio::time::sleep` in PID 1).
pub async fn supervise_async<F, Fut, S, SFut>(task: &str, policy: Backoff, mut start: F, sleep: S)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    S: Fn(Duration) -> SFut,
    SFut: Future<Output = ()>,
{
    let mut restarts = Restarts::new(policy);
    loop {
        let started = Instant::now();
        match tokio::spawn(start()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let delay = restarts.after_panic(started.elapsed());
                log_panic(task, payload.as_ref(), delay);
                sleep(delay).await;
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn back_off_doubles_from_one_second_to_a_minute() {
        let b = Backoff::PID1;
        let got: Vec<u64> = (1..=9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn a_long_healthy_run_resets_the_back_off() {
        let mut r = Restarts::new(Backoff::PID1);
        let quick = Duration::from_millis(10);
        assert_eq!(r.after_panic(quick), Duration::from_secs(1));
        assert_eq!(r.after_panic(quick), Duration::from_secs(2));
        assert_eq!(r.after_panic(quick), Duration::from_secs(4));
        assert_eq!(
            r.after_panic(Duration::from_secs(300)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_panicking_thread_task_is_restarted_until_it_returns() {
        let mut runs = 0;
        let mut slept = Vec::new();
        supervise_thread(
            "test",
            Backoff::PID1,
            || {
                runs += 1;
                if runs < 4 {
                    panic!("run {runs}");
                }
            },
            |d| slept.push(d.as_secs()),
        );
        assert_eq!(runs, 4);
        assert_eq!(slept, [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_panicking_async_task_is_restarted_until_it_finishes() {
        let runs = Arc::new(AtomicU32::new(0));
        let slept = Arc::new(Mutex::new(Vec::new()));
        let r = runs.clone();
        let s = slept.clone();
        supervise_async(
            "test",
            Backoff::PID1,
            move || {
                let r = r.clone();
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) < 2 {
                        panic!("boom");
                    }
                }
            },
            move |d| {
                if let Ok(mut v) = s.lock() {
                    v.push(d.as_secs());
                }
                std::future::ready(())
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(*slept.lock().unwrap(), [1, 2]);
    }

    #[test]
    fn the_panic_message_is_recovered() {
        let p = catch_unwind(|| panic!("index {} out of range", 255)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "index 255 out of range");
    }
}
