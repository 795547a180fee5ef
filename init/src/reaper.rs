//! Reaping: PID 1 inherits every orphan and must collect each one's exit status, or the
//! process table fills with zombies.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// What one round of reaping found.
#[derive(Debug, Default)]
pub struct Reaped {
    pub exited: Vec<WaitStatus>,
    /// No child is left at all (`ECHILD`).
    pub none_left: bool,
}

/// Collects every child that has exited, without blocking, until `waitpid` says there is no
/// more (`0`) or no child at all (`ECHILD`).
pub fn reap() -> Reaped {
    let mut out = Reaped::default();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return out,
            Ok(status) => out.exited.push(status),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                out.none_left = true;
                return out;
            }
            Err(_) => return out,
        }
    }
}

/// Exit code convention of catatonit/tini: the child's code, or 128 + the signal.
pub fn exit_code(status: &WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(*code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + *sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_follow_the_128_plus_signal_convention() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_code(&WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(&WaitStatus::StillAlive), None);
    }

    #[test]
    fn reaps_an_exited_child_and_then_reports_none_left() {
        // This test is the only one in the crate that makes children, so whatever reap()
        // collects is ours. reap() is what waits for it, not Child::wait.
        #[allow(clippy::zombie_processes)] // reason: reaped by reap() below, which is under test
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut none_left = false;
        while !none_left && std::time::Instant::now() < deadline {
            let r = reap();
            seen.extend(r.exited);
            none_left = r.none_left;
            std::thread::yield_now();
        }
        assert_eq!(seen, vec![WaitStatus::Exited(pid, 0)]);
        assert!(none_left);
    }
}
