//! `gantry-init`: Gantry's PID 1. See the library docs for what it does; this file is the
//! boot sequence and the event loop.

use std::fs::File;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use gantry_init::cmdline::{valid_hostname, BootParams};
use gantry_init::mounts::{self, Outcome};
use gantry_init::reaper::{exit_code, reap};
use gantry_init::shutdown::{shutdown, Action};
use gantry_init::{console, power_button, READY_MARKER, VERSION};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::{error, info, warn};

const DEFAULT_HOSTNAME: &str = "gantry";

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "gantry-init: must run as PID 1 (this is PID {})",
            std::process::id()
        );
        std::process::exit(1);
    }
    // Signals are read from a signalfd, so none may be delivered the classic way.
    let mask = handled_signals();
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        // Without a mask the signalfd still reads; default actions are ignored for PID 1.
        eprintln!("gantry-init: cannot block signals: {e}");
    }
    let mount_results = mounts::mount_all(&mut mounts::Host, mounts::EARLY_MOUNTS);
    let console_result = console::attach();
    console::init_logging();
    std::panic::set_hook(Box::new(|info| error!(%info, "gantry-init: panic caught")));
    if let Err(e) = console_result {
        warn!(error = %e, "cannot open /dev/console");
    }
    for (spec, outcome) in &mount_results {
        match outcome {
            Outcome::Mounted => {}
            Outcome::AlreadyMounted => info!(target = spec.target, "already mounted"),
            Outcome::Failed(e) => {
                error!(target = spec.target, fstype = spec.fstype, error = %e, "cannot mount")
            }
        }
    }
    log_mounts();

    let params = BootParams::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    for p in &params.ignored {
        warn!(parameter = %p, "ignoring unknown or invalid boot parameter");
    }
    set_hostname(&params);
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of resetting at once.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        warn!(error = %e, "cannot route Ctrl-Alt-Del to init");
    }
    let mut buttons = open_power_buttons();

    let signals = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    {
        Ok(fd) => Some(fd),
        Err(e) => {
            error!(error = %e, "cannot create signalfd; reaping on a timer");
            None
        }
    };
    let slot = params.slot.map_or("none", |s| s.as_str());
    info!(
        version = VERSION,
        slot,
        boot_ms = console::boot_ms(),
        "{READY_MARKER}"
    );

    loop {
        // A bug in one event must not take the machine down with it.
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Some(action) = wait_for_event(signals.as_ref(), &mut buttons) {
                shutdown(action, |left| wait_readable(signals.as_ref(), left));
            }
        }));
        if result.is_err() {
            error!("gantry-init: recovered from a panic in the event loop");
        }
    }
}

fn handled_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGHUP,
        Signal::SIGPWR,
    ] {
        mask.add(sig);
    }
    mask
}

/// Blocks until something happens; returns a shutdown to perform, if any.
fn wait_for_event(signals: Option<&SignalFd>, buttons: &mut [File]) -> Option<Action> {
    let ready = {
        let mut fds: Vec<PollFd> = Vec::with_capacity(1 + buttons.len());
        if let Some(s) = signals {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        fds.extend(
            buttons
                .iter()
                .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN)),
        );
        let timeout = if signals.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(1000u16)
        };
        match poll(&mut fds, timeout) {
            Ok(_) => fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        }
    };
    let mut action = None;
    if let Some(s) = signals {
        while let Ok(Some(info)) = s.read_signal() {
            let Ok(sig) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
                continue;
            };
            if let Some(a) = Action::for_signal(sig) {
                info!(signal = %sig, "shutdown requested");
                action = Some(a);
            }
        }
    }
    let offset = usize::from(signals.is_some());
    for (i, button) in buttons.iter_mut().enumerate() {
        if ready.get(offset + i).copied().unwrap_or(false) && power_button::pressed(button) {
            info!("power button pressed");
            action = Some(Action::PowerOff);
        }
    }
    for status in reap().exited {
        info!(status = ?status, code = ?exit_code(&status), "child exited");
    }
    action
}

/// Waits until the signalfd has something (a child exited) or `left` passes.
fn wait_readable(signals: Option<&SignalFd>, left: Duration) {
    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
    match signals {
        Some(s) => {
            let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(ms));
            while let Ok(Some(_)) = s.read_signal() {}
        }
        None => std::thread::sleep(Duration::from_millis(u64::from(ms.min(100)))),
    }
}

fn log_mounts() {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => {
            for m in mounts::parse_mountinfo(&text) {
                info!(
                    target = %m.target,
                    source = %m.source,
                    fstype = %m.fstype,
                    options = %m.options,
                    "mount"
                );
            }
        }
        Err(e) => warn!(error = %e, "cannot read the mount table"),
    }
    match mounts::root_device() {
        Some(root) => info!(
            device = %root.path,
            dm_name = root.dm_name.as_deref().unwrap_or("-"),
            "root file system"
        ),
        None => warn!("cannot tell which device holds the root file system"),
    }
}

fn set_hostname(params: &BootParams) {
    let from_image = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned());
    let candidates = [params.hostname.clone(), from_image];
    let name = candidates
        .into_iter()
        .flatten()
        .find(|n| {
            let ok = valid_hostname(n);
            if !ok {
                warn!(hostname = %n, "ignoring invalid host name");
            }
            ok
        })
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_owned());
    match nix::unistd::sethostname(&name) {
        Ok(()) => info!(hostname = %name, "host name set"),
        Err(e) => error!(hostname = %name, error = %e, "cannot set host name"),
    }
}

fn open_power_buttons() -> Vec<File> {
    let paths = power_button::find();
    if paths.is_empty() {
        warn!("no power button found; only signals can shut down");
    }
    paths
        .iter()
        .filter_map(|p| match power_button::open(p) {
            Ok(f) => {
                info!(device = %p.display(), "watching power button");
                Some(f)
            }
            Err(e) => {
                warn!(device = %p.display(), error = %e, "cannot open power button");
                None
            }
        })
        .collect()
}
