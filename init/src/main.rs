//! `gantry-init`: Gantry's PID 1. See the library docs for what it does; this file is the
//! boot sequence and the event loop.

use std::fs::File;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use gantry_init::api;
use gantry_init::cmdline::{valid_hostname, BootParams};
use gantry_init::config::sources::{BootConfig, Sources};
use gantry_init::config::MachineConfig;
use gantry_init::machine_id::{self, MachineId, MACHINE_ID_LINE};
use gantry_init::mounts::{self, Outcome};
use gantry_init::net::{self, Network};
use gantry_init::reaper::{exit_code, reap};
use gantry_init::shutdown::{self, Action};
use gantry_init::signals::{self, Signals};
use gantry_init::store_check::{self, StoreCheck};
use gantry_init::supervisor::Containers;
use gantry_init::update::{GateInputs, Updates};
use gantry_init::var;
use gantry_init::watchdog::{self, Watchdog};
use gantry_init::{
    console, power_button, MOUNT_LINE, POWER_BUTTON_PRESSED, READY_MARKER, ROOT_DEVICE_LINE,
    SHUTDOWN_REQUESTED, VERSION,
};
use gantry_updater::release::{Release, OS_RELEASE};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{error, info, warn};

const DEFAULT_HOSTNAME: &str = "gantry";
const NETWORK_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the event loop looks whether the config has settled (IMDS).
const CONFIG_POLL: Duration = Duration::from_millis(500);

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "gantry-init: must run as PID 1 (this is PID {})",
            std::process::id()
        );
        std::process::exit(1);
    }
    std::panic::set_hook(Box::new(|info| error!(%info, "gantry-init: panic caught")));
    // Before anything else: a SIGCHLD or SIGTERM from now on stays pending until read.
    let blocked = signals::block();
    let mount_results = mounts::mount_all(&mut mounts::Host, mounts::EARLY_MOUNTS);
    let console_result = console::attach();
    console::init_logging();
    let (signals, signal_errors) = Signals::open(blocked);
    // As soon as there is a console to say so: from here on a hang resets the machine.
    let params = BootParams::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let watchdog = watchdog::open(params.watchdog);
    let pet_every = watchdog.as_ref().map(Watchdog::pet_interval);
    if let Err(e) = console_result {
        warn!(error = %e, "cannot open /dev/console");
    }
    if let Some(e) = signal_errors.mask {
        error!(error = %e, "cannot block signals");
    }
    if let Some(e) = signal_errors.signalfd {
        error!(error = %e, "cannot create a signalfd; polling for signals every second");
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
    // /var before the config and the network: both keep their state there.
    let var_status = catch_unwind(var::prepare).unwrap_or_else(|_| {
        error!("gantry-init: panic while preparing /var; going on without it");
        var::VarStatus::default()
    });
    // Once /var is there, before anything that names the machine.
    let machine_id = machine_id();
    // After a power cut the store is checked first; the containers wait for it.
    let mut checks = store_check::Host::default();
    let mut store_check = catch_unwind(AssertUnwindSafe(|| {
        StoreCheck::after_mount(&var_status, Instant::now(), &mut checks)
    }))
    .unwrap_or_else(|_| {
        error!("gantry-init: panic while starting the store check; skipping it");
        StoreCheck::skipped(Instant::now())
    });

    for p in &params.ignored {
        warn!(parameter = %p, "ignoring unknown or invalid boot parameter");
    }
    let boot_config = load_config(&params);
    let config = boot_config.at_boot().cloned();
    let config_handle = boot_config.handle();
    // Started once the config has settled (at once, unless the metadata service is asked).
    let mut containers: Option<Containers> = None;
    // Started with the containers: the policy is in the settled config.
    let mut updates: Option<Updates> = None;
    // Started once the config has settled, when it has an [api] section.
    let mut api_checked = false;
    let (hostname, chosen) = set_hostname(&params, config.as_ref());
    let network_config = config.map(|c| c.network).unwrap_or_default();
    let mut network = Some(Network::start(net::Options::for_pid1(
        network_config,
        Some(hostname),
        !chosen,
    )));
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of resetting at once.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        warn!(error = %e, "cannot route Ctrl-Alt-Del to init");
    }
    let mut buttons = open_power_buttons();
    let slot = params.slot.map_or("none", |s| s.as_str());
    // The release of the running root (its own, dm-verity-protected /etc/os-release).
    let os_version = Release::read(Path::new(OS_RELEASE))
        .map(|r| r.version)
        .unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the release file");
            VERSION.to_owned()
        });
    info!(
        version = VERSION,
        os_version = %os_version,
        slot,
        machine_id = %machine_id,
        boot_ms = console::boot_ms(),
        "{READY_MARKER}"
    );

    // Kept outside the panic boundary: a request read just before a panic still counts.
    let mut pending: Option<Action> = None;
    loop {
        // The watchdog is petted here and in the shutdown's waits, never from another
        // thread: if this loop hangs, the machine resets.
        if let Some(w) = &watchdog {
            w.pet();
        }
        // A bug in one event must not take the machine down with it.
        let event = catch_unwind(AssertUnwindSafe(|| {
            if !api_checked {
                if let Some(settled) = config_handle.get() {
                    api_checked = true;
                    start_api(settled.config(), &os_version, machine_id);
                }
            }
            if containers.is_none() && store_check.done() {
                if let Some(settled) = config_handle.get() {
                    containers = Some(Containers::start(settled.config()));
                    let policy = settled
                        .config()
                        .map(|c| c.update.clone())
                        .unwrap_or_default();
                    updates = Some(Updates::at_boot(params.slot, policy, &os_version));
                }
            }
            let deadline = [
                containers.as_ref().and_then(Containers::deadline),
                updates.as_ref().and_then(Updates::deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = match (&containers, deadline) {
                (None, _) => Some(CONFIG_POLL),
                (Some(_), Some(at)) => Some(at.saturating_duration_since(Instant::now())),
                (Some(_), None) => None,
            };
            let timeout = watchdog::bound(timeout, pet_every);
            for (pid, code) in wait_for_event(&signals, &mut buttons, &mut pending, timeout) {
                let ours = store_check.on_exit(pid, code, Instant::now(), &mut checks)
                    || containers.as_mut().is_some_and(|c| c.on_exit(pid, code));
                if !ours {
                    info!(pid, code, "child exited");
                }
            }
            // While it runs, containers is None and the loop wakes every CONFIG_POLL.
            store_check.tick(Instant::now(), &mut checks);
            if let Some(c) = containers.as_mut() {
                c.tick();
            }
            if let Some(u) = updates.as_mut() {
                let inputs = GateInputs {
                    config_loaded: config_handle
                        .get()
                        .is_some_and(|settled| settled.config().is_some()),
                    has_address: network.as_ref().is_some_and(|n| n.status().has_address()),
                    required_not_ready: containers
                        .as_ref()
                        .map(Containers::required_not_ready)
                        .unwrap_or_default(),
                };
                if let Some(action) = u.tick(Instant::now(), &inputs) {
                    pending.get_or_insert(action);
                }
            }
        }));
        if event.is_err() {
            error!("gantry-init: recovered from a panic in the event loop");
        }
        if let Some(action) = pending.take() {
            if let Some(mut c) = containers.take() {
                // Containers first, in reverse dependency order, while the network is up.
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    c.stop(
                        |left| pet_and_wait(&signals, watchdog.as_ref(), left),
                        reaped,
                    )
                }));
            }
            if let Some(n) = network.take() {
                // Leases are released before the processes go; a hung network is not waited for.
                let _ = catch_unwind(AssertUnwindSafe(|| n.stop(NETWORK_STOP_TIMEOUT)));
            }
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let mut host = shutdown::Host {
                    wait: |left| pet_and_wait(&signals, watchdog.as_ref(), left),
                };
                shutdown::shutdown(action, &mut host, watchdog.as_ref())
            }));
            // shutdown() never returns: only a panic gets here. End the machine anyway.
            error!("gantry-init: panic during shutdown; syncing and ending now");
            shutdown::end(action, watchdog.as_ref());
        }
    }
}

/// Every child that has exited, as (pid, exit code).
fn reaped() -> Vec<(u32, i32)> {
    reap()
        .exited
        .iter()
        .filter_map(|status| {
            let pid = u32::try_from(status.pid()?.as_raw()).ok()?;
            Some((pid, exit_code(status).unwrap_or(-1)))
        })
        .collect()
}

/// Blocks until something happens or `timeout` passes; a shutdown it asks for goes into
/// `pending`. Returns the children that exited.
fn wait_for_event(
    signals: &Signals,
    buttons: &mut Vec<File>,
    pending: &mut Option<Action>,
    timeout: Option<Duration>,
) -> Vec<(u32, i32)> {
    let revents: Vec<PollFlags> = {
        let mut fds: Vec<PollFd> = buttons
            .iter()
            .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN))
            .collect();
        if let Some(fd) = signals.fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let limit = match timeout {
            Some(t) => PollTimeout::from(u16::try_from(t.as_millis()).unwrap_or(u16::MAX)),
            None => signals.poll_timeout(),
        };
        match poll(&mut fds, limit) {
            Ok(_) => fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    for sig in signals.drain() {
        if let Some(a) = Action::for_signal(sig) {
            info!(signal = %sig, "{SHUTDOWN_REQUESTED}");
            *pending = Some(a);
        }
    }
    let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
    let mut index = 0;
    buttons.retain_mut(|button| {
        let flags = revents.get(index).copied().unwrap_or(PollFlags::empty());
        index += 1;
        if flags.intersects(gone) {
            // A device that errors would make every poll return at once: stop watching.
            warn!(?flags, "power button device failed; no longer watching it");
            return false;
        }
        if flags.contains(PollFlags::POLLIN) && power_button::pressed(button) {
            info!("{POWER_BUTTON_PRESSED}");
            *pending = Some(Action::PowerOff);
        }
        true
    });
    reaped()
}

/// A wait of the shutdown, which the event loop runs: pets the watchdog and wakes in time to
/// pet it again, so a long but progressing stop is not reset, and a hung one is.
fn pet_and_wait(signals: &Signals, watchdog: Option<&Watchdog>, left: Duration) {
    if let Some(w) = watchdog {
        w.pet();
    }
    let pet_every = watchdog.map(Watchdog::pet_interval);
    wait_readable(
        signals,
        watchdog::bound(Some(left), pet_every).unwrap_or(left),
    );
}

/// Waits until a signal arrives (a child exited) or `left` passes.
fn wait_readable(signals: &Signals, left: Duration) {
    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
    match signals.fd() {
        Some(fd) => {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
        None => std::thread::sleep(Duration::from_millis(u64::from(ms.min(100)))),
    }
    signals.drain();
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
                    "{MOUNT_LINE}"
                );
            }
        }
        Err(e) => warn!(error = %e, "cannot read the mount table"),
    }
    match mounts::root_device() {
        Some(root) => info!(
            device = %root.path,
            dm_name = root.dm_name.as_deref().unwrap_or("-"),
            "{ROOT_DEVICE_LINE}"
        ),
        None => warn!("cannot tell which device holds the root file system"),
    }
}

/// This boot's machine id (kept on DATA, else SMBIOS, else random), logged and published.
fn machine_id() -> MachineId {
    let found = machine_id::determine(&machine_id::Paths::for_pid1(), machine_id::getrandom);
    for problem in &found.problems {
        warn!(error = %problem, "machine id");
    }
    info!(id = %found.id, source = %found.source.as_str(), "{MACHINE_ID_LINE}");
    found.id
}

/// Sets the host name from, in order: the machine config, `gantry.hostname=`, the image's
/// `/etc/hostname`, the default. Returns it, and whether it came from the config or the
/// command line (then DHCP may not replace it).
fn set_hostname(params: &BootParams, config: Option<&MachineConfig>) -> (String, bool) {
    let from_image = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned());
    let from_config = config.and_then(|c| c.hostname.clone());
    let candidates = [
        (from_config, true),
        (params.hostname.clone(), true),
        (from_image, false),
    ];
    let (name, chosen) = candidates
        .into_iter()
        .filter_map(|(n, chosen)| n.map(|n| (n, chosen)))
        .find(|(n, _)| {
            let ok = valid_hostname(n);
            if !ok {
                warn!(hostname = %n, "ignoring invalid host name");
            }
            ok
        })
        .unwrap_or_else(|| (DEFAULT_HOSTNAME.to_owned(), false));
    match nix::unistd::sethostname(&name) {
        Ok(()) => info!(hostname = %name, "host name set"),
        Err(e) => error!(hostname = %name, error = %e, "cannot set host name"),
    }
    (name, chosen)
}

/// The machine config from the first source that has one (kernel command line, fw_cfg,
/// config drive; the metadata service later, on its own thread), or the last good copy
/// under /var; every acceptance and refusal is logged. The containers wait for
/// `BootConfig::handle`, which settles once IMDS has answered when it is asked.
fn load_config(params: &BootParams) -> BootConfig {
    Sources::for_pid1(params).load()
}

/// Starts the HTTPS API on its own thread when `config` has an `[api]` section.
fn start_api(config: Option<&MachineConfig>, os_version: &str, machine_id: MachineId) {
    let Some((api, config)) = config.and_then(|c| Some((c.api.as_ref()?, c))) else {
        info!("no [api] section; the API is off");
        return;
    };
    let handler = api::Handler::new(
        api.tokens.clone(),
        config.containers.keys().cloned().collect(),
        os_version.to_owned(),
        machine_id.to_string(),
    );
    if let Err(e) = api::spawn(api, handler, api::Host::for_pid1()) {
        error!(error = %e, "cannot start the API");
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
