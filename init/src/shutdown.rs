//! Orderly shutdown: stop every process, sync, unmount in reverse order, then `reboot(2)`.

use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::mounts::{parse_mountinfo, MountEntry};
use crate::reaper::reap;

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

/// Runs the whole shutdown and ends the machine. `wait` blocks until a child may have
/// exited or the deadline passes (the signalfd, in PID 1).
pub fn shutdown(action: Action, mut wait: impl FnMut(Duration)) -> ! {
    info!(?action, "gantry-init: shutting down");
    stop_processes(&mut wait);
    nix::unistd::sync();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    for target in unmount_order(&mounts) {
        unmount(&target);
    }
    info!(?action, "{}", crate::SHUTDOWN_MARKER);
    end(action)
}

/// Unmounts `target`; when it is busy, makes it read-only (which flushes it) and detaches
/// it, so nothing is left to write when the machine stops.
fn unmount(target: &str) {
    use nix::mount::{mount, umount, umount2, MntFlags, MsFlags};
    let Err(e) = umount(target) else {
        return;
    };
    let remount = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    if let Err(e2) = umount2(target, MntFlags::MNT_DETACH) {
        warn!(target, error = %e, detach_error = %e2, read_only = remount.is_ok(), "cannot unmount");
    }
}

/// The last step of every shutdown: sync and `reboot(2)`. Used alone when the orderly path
/// itself failed.
pub fn end(action: Action) -> ! {
    nix::unistd::sync();
    match reboot(action.mode()) {
        Ok(never) => match never {},
        Err(e) => {
            // Not allowed (not the host's PID 1): nothing left to do but stay alive.
            warn!(error = %e, "reboot(2) failed; halting in place");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

/// SIGTERM to every process, a grace period while they exit, then SIGKILL to the rest.
fn stop_processes(wait: &mut impl FnMut(Duration)) {
    // kill(-1) reaches every process but PID 1 itself; ESRCH means there was none.
    if kill(Pid::from_raw(-1), Signal::SIGTERM).is_err() {
        reap();
        return;
    }
    let deadline = Instant::now() + GRACE;
    loop {
        if reap().none_left {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        wait(left);
    }
    warn!("processes left after the grace period; sending SIGKILL");
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(1);
    while !reap().none_left && Instant::now() < deadline {
        wait(Duration::from_millis(50));
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
