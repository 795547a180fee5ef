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
        // A real child of this test process: spawn, let it exit, reap it by hand.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        // Block until it has exited, then our non-blocking reap sees nothing or ECHILD for it.
        let status = waitpid(pid, None).unwrap();
        assert_eq!(status, WaitStatus::Exited(pid, 0));
        assert_eq!(exit_code(&status), Some(0));
    }
}
