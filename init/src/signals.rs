//! How PID 1 receives signals: every handled signal is blocked and read from a `signalfd`;
//! if one cannot be made, the pending set is drained on a timer with `sigtimedwait`. Either
//! way no signal is lost (a signal PID 1 neither blocks nor handles is dropped by the kernel).

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc;
use nix::poll::PollTimeout;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals PID 1 handles.
pub const HANDLED: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
    Signal::SIGPWR,
];

#[derive(Debug)]
pub struct Signals {
    mask: SigSet,
    fd: Option<SignalFd>,
}

/// What went wrong setting up, for the log (the set-up itself never fails).
#[derive(Debug, Default)]
pub struct SetupErrors {
    pub mask: Option<Errno>,
    pub signalfd: Option<Errno>,
}

/// The handled signals, blocked: the first thing PID 1 does, so that none is lost (a
/// blocked signal stays pending until it is read).
#[derive(Debug)]
pub struct Blocked {
    mask: SigSet,
    pub error: Option<Errno>,
}

/// Blocks the handled signals.
pub fn block() -> Blocked {
    let mut mask = SigSet::empty();
    for sig in HANDLED {
        mask.add(*sig);
    }
    let error = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).err();
    Blocked { mask, error }
}

impl Signals {
    /// Opens the signalfd for the blocked signals. Call it after the console is attached:
    /// PID 1 may start with descriptors 0 to 2 closed, and a signalfd made earlier would
    /// take one of them and be closed when the console is put there.
    pub fn open(blocked: Blocked) -> (Self, SetupErrors) {
        let mut errors = SetupErrors {
            mask: blocked.error,
            signalfd: None,
        };
        let fd = match SignalFd::with_flags(
            &blocked.mask,
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        ) {
            Ok(fd) => Some(fd),
            Err(e) => {
                errors.signalfd = Some(e);
                None
            }
        };
        (
            Self {
                mask: blocked.mask,
                fd,
            },
            errors,
        )
    }

    /// The descriptor to poll, when there is a signalfd.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// How long a poll may block: forever with a signalfd, a second without one.
    pub fn poll_timeout(&self) -> PollTimeout {
        if self.fd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(1000u16)
        }
    }

    /// Takes every pending signal, without blocking.
    pub fn drain(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        match &self.fd {
            Some(fd) => {
                while let Ok(Some(info)) = fd.read_signal() {
                    if let Some(sig) = i32::try_from(info.ssi_signo)
                        .ok()
                        .and_then(|n| Signal::try_from(n).ok())
                    {
                        out.push(sig);
                    }
                }
            }
            None => loop {
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: the set is a valid, initialised sigset_t owned by self; a null
                // siginfo pointer is allowed; `zero` is a valid timespec that outlives the call.
                let n =
                    unsafe { libc::sigtimedwait(self.mask.as_ref(), std::ptr::null_mut(), &zero) };
                match Signal::try_from(n) {
                    Ok(sig) if n > 0 => out.push(sig),
                    _ => break,
                }
            },
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Masks are per thread and each test runs on its own thread, so raising a handled
    // signal here reaches only this test (it stays pending on this thread).

    #[test]
    fn a_blocked_signal_is_read_from_the_signalfd() {
        let (signals, errors) = Signals::open(block());
        assert!(errors.mask.is_none() && errors.signalfd.is_none());
        assert!(signals.fd().is_some());
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        assert_eq!(signals.drain(), vec![Signal::SIGUSR1]);
        assert_eq!(signals.drain(), vec![], "a signal is read once");
    }

    #[test]
    fn without_a_signalfd_pending_signals_are_drained_with_sigtimedwait() {
        let blocked = block();
        let signals = Signals {
            mask: blocked.mask,
            fd: None,
        };
        assert_eq!(signals.poll_timeout(), PollTimeout::from(1000u16));
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        assert_eq!(signals.drain(), vec![Signal::SIGUSR2]);
        assert_eq!(signals.drain(), vec![]);
    }
}
