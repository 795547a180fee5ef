//! Orderly shutdown: stop every process, sync, unmount in reverse order, then `reboot(2)`.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::mounts::{parse_mountinfo, MountEntry};
use crate::reaper::reap;
use crate::watchdog::Watchdog;

/// What the machine does at the end of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

impl Action {
    /// What a signal to PID 1 asks for: SIGTERM, SIGUSR2 (busybox init's poweroff) and
    /// SIGPWR power off; SIGINT (Ctrl-Alt-Del) reboots; anything else nothing.
    pub fn for_signal(sig: Signal) -> Option<Action> {
        match sig {
            Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR => Some(Action::PowerOff),
            Signal::SIGINT => Some(Action::Reboot),
            _ => None,
        }
    }

    fn mode(self) -> RebootMode {
        match self {
            Action::PowerOff => RebootMode::RB_POWER_OFF,
            Action::Reboot => RebootMode::RB_AUTOBOOT,
        }
    }
}

/// How long processes get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// The mount points to unmount, innermost first: mountinfo lists mounts in the order they
/// were made, so the reverse never unmounts a parent before its child. The root stays: it
/// is read-only already and the kernel needs it to the end.
pub fn unmount_order(mounts: &[MountEntry]) -> Vec<String> {
    mounts
        .iter()
        .rev()
        .map(|m| m.target.clone())
        .filter(|t| t != "/")
        .collect()
}

/// The system calls of a shutdown. [`Host`] makes them; the tests record them.
pub trait ShutdownOps {
    /// Sends `sig` to every process but PID 1; false when there was none.
    fn signal_all(&mut self, sig: Signal) -> bool;
    /// Reaps what has exited; true when no child is left.
    fn reap_all(&mut self) -> bool;
    /// The processes still there (`pid name`), for the log.
    fn survivors(&mut self) -> Vec<String>;
    /// Blocks until a child may have exited, or `timeout` passes.
    fn wait(&mut self, timeout: Duration);
    fn now(&self) -> Instant;
    fn sync(&mut self);
    fn mounts(&mut self) -> Vec<MountEntry>;
    fn unmount(&mut self, target: &str) -> Result<(), Errno>;
    fn remount_read_only(&mut self, target: &str) -> Result<(), Errno>;
    fn detach(&mut self, target: &str) -> Result<(), Errno>;
}

/// This machine: `kill(-1)`, `waitpid`, `umount2`, `sync`. `wait` blocks on PID 1's signals.
#[derive(Debug)]
pub struct Host<W: FnMut(Duration)> {
    pub wait: W,
}

impl<W: FnMut(Duration)> ShutdownOps for Host<W> {
    fn signal_all(&mut self, sig: Signal) -> bool {
        kill(Pid::from_raw(-1), sig).is_ok()
    }
    fn reap_all(&mut self) -> bool {
        reap().none_left
    }
    fn survivors(&mut self) -> Vec<String> {
        user_processes(Path::new("/proc"))
    }
    fn wait(&mut self, timeout: Duration) {
        (self.wait)(timeout);
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sync(&mut self) {
        nix::unistd::sync();
    }
    fn mounts(&mut self) -> Vec<MountEntry> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default()
    }
    fn unmount(&mut self, target: &str) -> Result<(), Errno> {
        nix::mount::umount(target)
    }
    fn remount_read_only(&mut self, target: &str) -> Result<(), Errno> {
        use nix::mount::MsFlags;
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
    }
    fn detach(&mut self, target: &str) -> Result<(), Errno> {
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
    }
}

/// Runs the whole shutdown and ends the machine, disarming `watchdog` last.
pub fn shutdown(action: Action, ops: &mut impl ShutdownOps, watchdog: Option<&Watchdog>) -> ! {
    info!(?action, "gantry-init: shutting down");
    stop_processes(ops, GRACE);
    ops.sync();
    let mounts = ops.mounts();
    for target in unmount_order(&mounts) {
        unmount(ops, &target);
    }
    info!(?action, "{}", crate::SHUTDOWN_MARKER);
    end(action, watchdog)
}

/// Unmounts `target`; when it is busy, makes it read-only (which flushes it) and detaches
/// it, so nothing is left to write when the machine stops.
fn unmount(ops: &mut impl ShutdownOps, target: &str) {
    let Err(e) = ops.unmount(target) else {
        return;
    };
    let read_only = ops.remount_read_only(target).is_ok();
    match ops.detach(target) {
        Ok(()) => info!(target, error = %e, read_only, "busy; detached"),
        Err(e2) => warn!(target, error = %e, detach_error = %e2, read_only, "cannot unmount"),
    }
}

/// The last step of every shutdown: sync, disarm the watchdog (magic close) and
/// `reboot(2)`. Used alone when the orderly path itself failed. The watchdog stays armed
/// through the sync, so a sync that hangs still resets the machine.
pub fn end(action: Action, watchdog: Option<&Watchdog>) -> ! {
    nix::unistd::sync();
    if let Some(w) = watchdog {
        w.disarm();
    }
    match reboot(action.mode()) {
        Ok(never) => match never {},
        Err(e) => {
            // Not allowed (not the host's PID 1): stay alive, and keep reaping orphans.
            warn!(error = %e, "reboot(2) failed; halting in place");
            loop {
                reap();
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// `pid name` of every process under `proc` but PID 1 and kernel threads.
fn user_processes(proc: &Path) -> Vec<String> {
    /// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
    const KERNEL_THREAD: u64 = 0x0020_0000;
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, String)> = entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
            // `pid (comm) state ppid pgrp session tty tpgid flags …`; comm may hold anything.
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let flags: u64 = stat
                .get(close + 1..)?
                .split_whitespace()
                .nth(6)?
                .parse()
                .ok()?;
            (pid != 1 && flags & KERNEL_THREAD == 0)
                .then(|| (pid, stat.get(open + 1..close).unwrap_or("?").to_owned()))
        })
        .collect();
    out.sort();
    out.into_iter()
        .map(|(pid, name)| format!("{pid} {name}"))
        .collect()
}

/// SIGTERM to every process, up to `grace` while they exit, then SIGKILL to the rest.
fn stop_processes(ops: &mut impl ShutdownOps, grace: Duration) {
    if !ops.signal_all(Signal::SIGTERM) {
        ops.reap_all();
        return;
    }
    let deadline = ops.now() + grace;
    loop {
        if ops.reap_all() {
            return;
        }
        let left = deadline.saturating_duration_since(ops.now());
        if left.is_zero() {
            break;
        }
        ops.wait(left);
    }
    let left = ops.survivors().join(", ");
    warn!(%left, "processes left after the grace period; sending SIGKILL");
    ops.signal_all(Signal::SIGKILL);
    let deadline = ops.now() + Duration::from_secs(1);
    while !ops.reap_all() && ops.now() < deadline {
        ops.wait(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_alt_del_reboots_and_termination_signals_power_off() {
        assert_eq!(Action::for_signal(Signal::SIGINT), Some(Action::Reboot));
        for sig in [Signal::SIGTERM, Signal::SIGUSR2, Signal::SIGPWR] {
            assert_eq!(Action::for_signal(sig), Some(Action::PowerOff), "{sig}");
        }
        for sig in [Signal::SIGCHLD, Signal::SIGHUP, Signal::SIGUSR1] {
            assert_eq!(Action::for_signal(sig), None, "{sig}");
        }
    }

    /// Records calls; processes exit after `exits_after` reaps of the current signal
    /// round (None: never, until SIGKILL); `busy` mounts refuse a plain unmount.
    struct Fake {
        calls: Vec<String>,
        clock: Instant,
        exits_after: Option<usize>,
        reaps: usize,
        killed: bool,
        busy: Vec<&'static str>,
        mounts: &'static str,
    }

    impl Fake {
        fn new(exits_after: Option<usize>) -> Self {
            Fake {
                calls: Vec::new(),
                clock: Instant::now(),
                exits_after,
                reaps: 0,
                killed: false,
                busy: Vec::new(),
                mounts: "",
            }
        }
    }

    impl ShutdownOps for Fake {
        fn signal_all(&mut self, sig: Signal) -> bool {
            self.calls.push(format!("signal {sig}"));
            self.killed |= sig == Signal::SIGKILL;
            true
        }
        fn survivors(&mut self) -> Vec<String> {
            vec!["42 httpd".to_owned()]
        }
        fn reap_all(&mut self) -> bool {
            self.reaps += 1;
            self.killed || self.exits_after.is_some_and(|n| self.reaps > n)
        }
        fn wait(&mut self, timeout: Duration) {
            // Time passes in steps of at most one second.
            self.clock += timeout.min(Duration::from_secs(1));
        }
        fn now(&self) -> Instant {
            self.clock
        }
        fn sync(&mut self) {
            self.calls.push("sync".into());
        }
        fn mounts(&mut self) -> Vec<MountEntry> {
            parse_mountinfo(self.mounts)
        }
        fn unmount(&mut self, target: &str) -> Result<(), Errno> {
            self.calls.push(format!("umount {target}"));
            if self.busy.contains(&target) {
                Err(Errno::EBUSY)
            } else {
                Ok(())
            }
        }
        fn remount_read_only(&mut self, target: &str) -> Result<(), Errno> {
            self.calls.push(format!("remount-ro {target}"));
            Ok(())
        }
        fn detach(&mut self, target: &str) -> Result<(), Errno> {
            self.calls.push(format!("detach {target}"));
            Ok(())
        }
    }

    #[test]
    fn processes_that_exit_on_sigterm_are_not_killed() {
        let mut fake = Fake::new(Some(2));
        stop_processes(&mut fake, GRACE);
        assert_eq!(fake.calls, ["signal SIGTERM"]);
    }

    #[test]
    fn processes_that_ignore_sigterm_get_sigkill_after_the_grace_period() {
        let mut fake = Fake::new(None);
        let start = fake.clock;
        stop_processes(&mut fake, GRACE);
        assert_eq!(fake.calls, ["signal SIGTERM", "signal SIGKILL"]);
        assert!(
            fake.clock - start >= GRACE,
            "killed before the grace period ended"
        );
    }

    #[test]
    fn survivors_are_user_processes_named_by_pid_and_command() {
        let proc = tempfile::tempdir().unwrap();
        let stat = |pid: u32, comm: &str, flags: u64| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0"),
            )
            .unwrap();
        };
        stat(1, "gantry-init", 0x400100);
        stat(2, "kthreadd", 0x208040);
        stat(77, "kworker/0:1-events", 0x4208060);
        stat(310, "gantry run (x)", 0x400100);
        stat(44, "httpd", 0x400140);
        std::fs::create_dir(proc.path().join("self")).unwrap();
        assert_eq!(
            user_processes(proc.path()),
            ["44 httpd", "310 gantry run (x)"]
        );
    }

    #[test]
    fn a_busy_mount_is_made_read_only_and_detached() {
        let mut fake = Fake::new(Some(0));
        fake.mounts = "1 0 254:0 / / ro - erofs /dev/dm-0 ro\n\
                       2 1 0:2 / /dev rw - devtmpfs devtmpfs rw\n\
                       3 1 8:4 / /var rw - ext4 /dev/vda4 rw\n";
        fake.busy = vec!["/dev"];
        let mounts = fake.mounts();
        for target in unmount_order(&mounts) {
            unmount(&mut fake, &target);
        }
        assert_eq!(
            fake.calls,
            [
                "umount /var",
                "umount /dev",
                "remount-ro /dev",
                "detach /dev"
            ]
        );
    }

    #[test]
    fn unmounts_children_before_parents_and_keeps_the_root() {
        let mounts = parse_mountinfo(
            "1 0 254:0 / / ro - erofs /dev/dm-0 ro\n\
             2 1 0:1 / /sys rw - sysfs sysfs rw\n\
             3 1 0:2 / /dev rw - devtmpfs devtmpfs rw\n\
             4 3 0:3 / /dev/pts rw - devpts devpts rw\n\
             5 2 0:4 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(
            unmount_order(&mounts),
            ["/sys/fs/cgroup", "/dev/pts", "/dev", "/sys"]
        );
    }
}
