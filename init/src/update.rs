//! Updates in PID 1: what the boot loader did, the health gate, and the update agent.
//!
//! - **At boot** the ESP is mounted at `/run/gantry/esp` and `grubenv` read. A booted slot
//!   that is not marked good is **on trial**: the health gate runs. A good slot while the
//!   update state names another slot as pending means GRUB gave up on that slot: the
//!   update **rolled back**, and PID 1 says which version failed and why (the reasons the
//!   health gate recorded on each trial boot, or, when none reached it, that the slot
//!   never got that far: a kernel panic, a hang, a boot failure). That version is not
//!   installed again until the channel offers a newer one.
//! - **The health gate** passes when the config loaded, the network has an address, and
//!   every container marked `required` runs and is healthy. Then the slot is marked good
//!   in `grubenv` (an atomic rename on the ESP). If it has not passed within
//!   `update.health_timeout_secs`, PID 1 records the reason and reboots; GRUB's counter
//!   does the rest.
//! - **The agent** (a thread, only once the running slot is good and `update.server` is
//!   set) looks at the channel every `check_interval_secs`, downloads and installs a newer
//!   bundle into the inactive slot, and asks for a reboot as `update.reboot` says.
//!
//! Every line starts with [`UPDATE_LINE`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gantry_updater::esp::{Esp, MOUNTED_DIR};
use gantry_updater::fetch::{FetchOptions, Fetcher};
use gantry_updater::grubenv::GrubEnv;
use gantry_updater::here::{check_server, Check};
use gantry_updater::install::Step;
use gantry_updater::policy::{LeaseError, RebootAt, RebootLease, UpdatePolicy};
use gantry_updater::state::{UpdateState, STATE_DIR};
use gantry_updater::{Slot, SlotState};
use tracing::{error, info, warn};

use gantry_runtime::error_chain;

use crate::shutdown::Action;

pub const UPDATE_LINE: &str = "gantry-init: update";
/// Where the ESP is mounted; `grubenv` and the slots' kernels are under `EFI/gantry`.
pub const ESP_MOUNT: &str = "/run/gantry/esp";
/// How often the event loop looks at the gate and the agent while either is active.
const POLL: Duration = Duration::from_secs(1);
/// How soon a failed renewal of the reboot lease is tried again.
const RENEW_RETRY: Duration = Duration::from_secs(3);
/// The first look at the server after the slot is good.
const FIRST_CHECK: Duration = Duration::from_secs(2);

/// What the health gate looks at, from the rest of PID 1.
#[derive(Debug, Clone, Default)]
pub struct GateInputs {
    pub config_loaded: bool,
    pub has_address: bool,
    pub required_not_ready: Vec<String>,
}

impl GateInputs {
    /// Why the gate does not pass yet; empty when it does.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.config_loaded {
            out.push("no machine config loaded".to_owned());
        }
        if !self.has_address {
            out.push("the network has no address".to_owned());
        }
        if !self.required_not_ready.is_empty() {
            out.push(format!(
                "required containers not running and healthy: {}",
                self.required_not_ready.join(", ")
            ));
        }
        out
    }
}

#[derive(Debug)]
struct Trial {
    deadline: Instant,
    version: String,
}

#[derive(Debug)]
enum AgentEvent {
    Installed { version: String, slot: Slot },
}

/// PID 1's update state; inert when the machine was not booted from a slot.
#[derive(Debug)]
pub struct Updates {
    booted: Option<Slot>,
    esp: Option<Esp>,
    policy: UpdatePolicy,
    trial: Option<Trial>,
    agent: Option<Receiver<AgentEvent>>,
    /// An installed update waits for this time (unix seconds) to reboot.
    reboot_at: Option<(u64, String)>,
    /// Shared with the threads that ask for it, renew it and give it back.
    lease: Arc<Mutex<Box<dyn RebootLease + Send>>>,
    /// Set while a trial boot renews the lease (see [`Updates::start_renewing`]).
    renewing: Arc<AtomicBool>,
    /// A thread asks for the lease (and reports the reboot) to reboot into this version.
    asking: Option<(Receiver<Result<bool, LeaseError>>, String)>,
    /// This version is settled (marked good, or rolled back): its outcome to record in the
    /// fleet store, then its reboot lease to give back (see [`Updates::settle`]).
    release: Option<(String, Option<Settled>)>,
}

impl Updates {
    /// Looks at what GRUB did and starts the gate or the agent. `version` is the running
    /// release's.
    pub fn at_boot(booted: Option<Slot>, policy: UpdatePolicy, version: &str) -> Updates {
        let lease = policy.reboot_lease(Path::new(gantry_updater::here::MACHINE_ID));
        let mut u = Updates {
            booted,
            esp: None,
            policy,
            trial: None,
            agent: None,
            reboot_at: None,
            lease: Arc::new(Mutex::new(lease)),
            renewing: Arc::new(AtomicBool::new(false)),
            asking: None,
            release: None,
        };
        let Some(slot) = booted else {
            info!("{UPDATE_LINE} off: not booted from a slot");
            return u;
        };
        match mount_esp() {
            Ok(()) => u.esp = Some(Esp::new(MOUNTED_DIR)),
            Err(e) => {
                error!(error = %e, "{UPDATE_LINE} cannot mount the ESP; this boot cannot be marked good");
            }
        }
        let state_dir = Path::new(STATE_DIR);
        let mut state = UpdateState::load(state_dir).unwrap_or_else(|e| {
            warn!(error = %e, "{UPDATE_LINE} state unreadable; starting afresh");
            UpdateState::default()
        });
        let Some(esp) = u.esp.clone() else {
            return u;
        };
        let env = match esp.read_env() {
            Ok(env) => env,
            Err(e) => {
                // GRUB booted us with its defaults. This slot runs: make it the good one.
                error!(error = %e, slot = %slot, "{UPDATE_LINE} grubenv unusable; rewriting it with this slot good");
                let env = GrubEnv::initial(slot);
                if let Err(e) = esp.write_env(&env) {
                    error!(error = %e, "{UPDATE_LINE} cannot rewrite grubenv");
                }
                env
            }
        };
        let here = env.slot(slot).unwrap_or(SlotState::EMPTY);
        if !here.good {
            let timeout = u.policy.health_timeout();
            info!(
                slot = %slot,
                version,
                tries_left = here.tries,
                health_timeout_secs = timeout.as_secs(),
                "{UPDATE_LINE} trial boot: waiting for the health gate"
            );
            u.trial = Some(Trial {
                deadline: Instant::now() + timeout,
                version: version.to_owned(),
            });
            u.start_renewing();
            return u;
        }
        match state.pending.clone() {
            Some(p) if p.slot != slot => {
                let reason = rollback_reason(&p.gate_failures, p.tries, p.slot);
                error!(
                    version = %p.version,
                    slot = %p.slot,
                    running_version = version,
                    running_slot = %slot,
                    reason = %reason,
                    "{UPDATE_LINE} rolled back"
                );
                state.roll_back(reason.clone());
                save(&state);
                u.release = Some((
                    p.version.clone(),
                    Some((gantry_updater::fleet::State::RolledBack, Some(reason))),
                ));
                let mut env = env;
                env.set_order(&[slot, slot.other()]);
                env.set_slot(slot.other(), SlotState::EMPTY);
                if let Err(e) = esp.write_env(&env) {
                    error!(error = %e, "{UPDATE_LINE} cannot rewrite grubenv");
                }
            }
            Some(p) => {
                // Marked good, then the power went before the state said so.
                info!(version = %p.version, slot = %slot, "{UPDATE_LINE} committed");
                u.release = Some((
                    p.version.clone(),
                    Some((gantry_updater::fleet::State::Good, None)),
                ));
                state.pending = None;
                save(&state);
            }
            None => {}
        }
        u.start_agent();
        u
    }

    /// When [`Updates::tick`] is next due.
    pub fn deadline(&self) -> Option<Instant> {
        (self.trial.is_some()
            || self.agent.is_some()
            || self.reboot_at.is_some()
            || self.asking.is_some()
            || self.release.is_some())
        .then(|| Instant::now() + POLL)
    }

    /// Whether a trial boot waits for the health gate.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// Runs the gate and the agent's requests; `Some` asks PID 1 to reboot.
    pub fn tick(&mut self, now: Instant, inputs: &GateInputs) -> Option<Action> {
        if let Some((version, outcome)) = self.release.take() {
            self.settle(version, outcome);
        }
        if let Some(trial) = &self.trial {
            let problems = inputs.problems();
            if problems.is_empty() {
                let version = trial.version.clone();
                self.trial = None;
                self.mark_good(&version);
                self.start_agent();
            } else if now >= trial.deadline {
                let reason = problems.join("; ");
                let slot = self.booted.map_or("none", Slot::as_str);
                error!(slot, reason = %reason, "{UPDATE_LINE} health gate failed; rebooting");
                let mut state = UpdateState::load(Path::new(STATE_DIR)).unwrap_or_default();
                if let Some(p) = state.pending.as_mut() {
                    p.gate_failures.push(reason);
                }
                save(&state);
                self.trial = None;
                return Some(Action::Reboot);
            }
            return None;
        }
        if let Some(rx) = &self.agent {
            match rx.try_recv() {
                Ok(AgentEvent::Installed { version, slot }) => {
                    self.agent = None;
                    match self.policy.reboot_at(unix_now()) {
                        RebootAt::Now => return self.reboot_into(&version, slot),
                        RebootAt::At(t) => {
                            info!(version = %version, slot = %slot, reboot_at_unix = t, "{UPDATE_LINE} installed; rebooting in the maintenance window");
                            self.reboot_at = Some((t, version));
                        }
                        RebootAt::Manual => {
                            info!(version = %version, slot = %slot, "{UPDATE_LINE} installed; reboot to apply (update.reboot = \"off\")");
                        }
                    }
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => self.agent = None,
            }
        }
        if let Some((rx, version)) = &self.asking {
            let answer = match rx.try_recv() {
                Ok(answer) => answer,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => Err(LeaseError {
                    reason: "the thread asking for it died".into(),
                }),
            };
            let version = version.clone();
            self.asking = None;
            match answer {
                Ok(true) => return Some(Action::Reboot),
                Ok(false) => {
                    info!(
                        version,
                        "{UPDATE_LINE} reboot lease not granted; trying again later"
                    );
                    self.reboot_at = Some((unix_now() + 60, version));
                }
                Err(e) => {
                    warn!(error = %e, "{UPDATE_LINE} reboot lease failed; trying again later");
                    self.reboot_at = Some((unix_now() + 60, version));
                }
            }
        }
        if let Some((t, version)) = self.reboot_at.clone() {
            if unix_now() >= t {
                self.reboot_at = None;
                let slot = self.booted.map_or(Slot::B, Slot::other);
                return self.reboot_into(&version, slot);
            }
        }
        None
    }

    /// Asks for the reboot lease on a thread (etcd or a lock server may be slow or away,
    /// and PID 1's loop must not wait for them); once granted, the thread records
    /// `rebooting` and [`Updates::tick`] reboots.
    fn reboot_into(&mut self, version: &str, slot: Slot) -> Option<Action> {
        let (tx, rx) = mpsc::channel();
        let lease = Arc::clone(&self.lease);
        let policy = self.policy.clone();
        let v = version.to_owned();
        let spawned = std::thread::Builder::new()
            .name("update-lease".into())
            .spawn(move || {
                let granted = lock(&lease).acquire(&v);
                if let Ok(true) = granted {
                    info!(version = %v, slot = %slot, "{UPDATE_LINE} installed; rebooting into it");
                    report_rebooting(&policy, &v);
                }
                let _ = tx.send(granted);
            });
        match spawned {
            Ok(_) => self.asking = Some((rx, version.to_owned())),
            Err(e) => {
                warn!(error = %e, "{UPDATE_LINE} cannot ask for the reboot lease; trying again later");
                self.reboot_at = Some((unix_now() + 60, version.to_owned()));
            }
        }
        None
    }

    /// On a trial boot, renews the lease taken before the reboot for as long as the trial
    /// lasts, for leases that expire (etcd's): the TTL then covers the reboot only, and a
    /// machine that dies on trial frees its slot a TTL later.
    fn start_renewing(&self) {
        let every = lock(&self.lease).renew_every();
        let Some(every) = every else {
            return;
        };
        self.renewing.store(true, Ordering::SeqCst);
        let lease = Arc::clone(&self.lease);
        let on = Arc::clone(&self.renewing);
        let spawned = std::thread::Builder::new()
            .name("update-lease-renew".into())
            .spawn(move || {
                let mut said = false;
                loop {
                    let renewed = {
                        let mut l = lock(&lease);
                        // Checked under the lock: `settle` clears it under the same lock
                        // as it gives the lease back, so no renewal follows the release.
                        if !on.load(Ordering::SeqCst) {
                            return;
                        }
                        l.renew().map_err(|e| e.to_string())
                    };
                    match renewed {
                        Ok(true) if !said => {
                            said = true;
                            info!(
                                every_secs = every.as_secs(),
                                "{UPDATE_LINE} reboot lease held; renewing it while on trial"
                            );
                        }
                        Ok(true) => {}
                        Ok(false) => {
                            warn!("{UPDATE_LINE} this machine holds no reboot lease (it expired while the machine was down, or was never taken); another machine may reboot now");
                            return;
                        }
                        Err(e) => {
                            // Early in the boot the network may not be up yet: soon again.
                            warn!(error = %e, "{UPDATE_LINE} cannot renew the reboot lease; trying again");
                            std::thread::sleep(every.min(RENEW_RETRY));
                            continue;
                        }
                    }
                    std::thread::sleep(every);
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "{UPDATE_LINE} cannot renew the reboot lease; it expires by itself");
        }
    }

    /// Records `outcome` for `version` in the fleet store (if there is one), then gives the
    /// reboot lease back, in that order, so that the record shows this machine up before
    /// another may reboot. On a thread of its own: the store may be slow or away (at boot
    /// the network may not be up yet) and PID 1's loop must not wait for it. The record is
    /// tried for five minutes, the lease until it is given back (or expires by itself).
    fn settle(&self, version: String, outcome: Option<Settled>) {
        let lease = Arc::clone(&self.lease);
        let renewing = Arc::clone(&self.renewing);
        let fleet = self.policy.fleet_store();
        let spawned = std::thread::Builder::new()
            .name("update-settle".into())
            .spawn(move || {
                if let (Some(fleet), Some((state, reason))) = (fleet, outcome) {
                    record(&fleet, &version, state, reason);
                }
                loop {
                    // Renewals stop under the lock that gives the lease back: the renewal
                    // thread looks at the flag under it, so none follows the release, and
                    // the lease is kept while the record above is written.
                    let given = {
                        let mut l = lock(&lease);
                        renewing.store(false, Ordering::SeqCst);
                        l.release(&version).map_err(|e| e.to_string())
                    };
                    match given {
                        Ok(()) => {
                            info!(version = %version, "{UPDATE_LINE} reboot lease given back");
                            return;
                        }
                        Err(e) => {
                            warn!(error = %e, version = %version, "{UPDATE_LINE} cannot give the reboot lease back yet; trying again in 30 s");
                            std::thread::sleep(Duration::from_secs(30));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "{UPDATE_LINE} cannot settle the update; the lease expires by itself");
        }
    }

    fn mark_good(&mut self, version: &str) {
        let Some(slot) = self.booted else {
            return;
        };
        let Some(esp) = &self.esp else {
            // GRUB keeps counting: a later reboot of this slot spends another try.
            error!(slot = %slot, version, "{UPDATE_LINE} health gate passed, but without the ESP the slot cannot be marked good");
            return;
        };
        let marked = esp.read_env().and_then(|mut env| {
            env.set_slot(slot, SlotState::GOOD);
            env.set_order(&[slot, slot.other()]);
            esp.write_env(&env)
        });
        if let Err(e) = marked {
            // Not rebooting either: the slot is not held for the group any longer.
            error!(error = %e, "{UPDATE_LINE} cannot mark slot {slot} good; the reboot lease expires by itself");
            self.renewing.store(false, Ordering::SeqCst);
            return;
        }
        info!(slot = %slot, version, "{UPDATE_LINE} health gate passed; slot marked good");
        self.release = Some((
            version.to_owned(),
            Some((gantry_updater::fleet::State::Good, None)),
        ));
        let mut state = UpdateState::load(Path::new(STATE_DIR)).unwrap_or_default();
        if state.pending.as_ref().is_some_and(|p| p.slot == slot) {
            state.pending = None;
            save(&state);
        }
    }

    fn start_agent(&mut self) {
        let Some(server) = self.policy.server.clone() else {
            return;
        };
        if self.esp.is_none() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let policy = self.policy.clone();
        let spawned = std::thread::Builder::new()
            .name("update-agent".into())
            .spawn(move || {
                let fetcher = Fetcher::new(FetchOptions {
                    insecure: policy.insecure,
                    ..FetchOptions::default()
                });
                std::thread::sleep(FIRST_CHECK);
                crate::tasks::supervise_thread("update-agent", crate::tasks::Backoff::PID1, || loop {
                    info!(server = %server, insecure = policy.insecure, "{UPDATE_LINE} checking");
                    // Each step on the console: the power-cut tests cut at them.
                    let mut log_step = |step: Step| info!(step = ?step, "{UPDATE_LINE} install step");
                    match check_server(&policy, &server, &fetcher, &mut log_step) {
                        Ok(Check::Installed(i)) => {
                            info!(
                                version = %i.version,
                                slot = %i.slot,
                                verify_ms = i.verify.as_millis() as u64,
                                stream_ms = i.stream.as_millis() as u64,
                                read_back_ms = i.read_back.as_millis() as u64,
                                total_ms = i.total.as_millis() as u64,
                                "{UPDATE_LINE} bundle installed"
                            );
                            let _ = tx.send(AgentEvent::Installed {
                                version: i.version,
                                slot: i.slot,
                            });
                            return;
                        }
                        Ok(Check::UpToDate { version }) => {
                            info!(version = %version, "{UPDATE_LINE} up to date")
                        }
                        Ok(Check::FailedBefore { version, reason }) => {
                            info!(version = %version, reason = %reason, "{UPDATE_LINE} not retrying a version that rolled back")
                        }
                        Ok(Check::AlreadyPending { version }) => {
                            info!(version = %version, "{UPDATE_LINE} installed already; waiting for the reboot")
                        }
                        Ok(Check::Paused { version, why }) => {
                            info!(version = %version, why = %why, "{UPDATE_LINE} release paused in the fleet store; not installing")
                        }
                        Ok(Check::Halted { version, reason }) => {
                            warn!(version = %version, reason = %reason, "{UPDATE_LINE} release halted: its failure budget is spent; not installing")
                        }
                        Ok(Check::Pinned { pinned, offered }) => {
                            info!(pinned = %pinned, offered = %offered, "{UPDATE_LINE} pinned to another version; not installing")
                        }
                        Ok(Check::WaitingForWave { version, place, opens_at }) => match opens_at {
                            Some(t) => info!(version = %version, place = format!("{place:.3}"), opens_at = t, "{UPDATE_LINE} waiting for this machine's wave"),
                            None => info!(version = %version, place = format!("{place:.3}"), "{UPDATE_LINE} no wave of this rollout reaches this machine yet"),
                        },
                        Err(e) => warn!(error = %error_chain(&e), "{UPDATE_LINE} check failed"),
                    }
                    std::thread::sleep(policy.check_interval());
                }, std::thread::sleep);
            });
        match spawned {
            Ok(_) => self.agent = Some(rx),
            Err(e) => error!(error = %e, "{UPDATE_LINE} cannot start the agent"),
        }
    }
}

/// Records `rebooting` for `version` before the reboot, waiting for it (at most a few
/// seconds): a thread would die with the reboot, and the record is what shows the fleet's
/// operator which machines were down at once.
fn report_rebooting(policy: &UpdatePolicy, version: &str) {
    let Some(mut fleet) = policy.fleet_store() else {
        return;
    };
    fleet.etcd.fetcher = Fetcher::new(FetchOptions {
        connect_timeout: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(5),
        insecure: policy.insecure,
    });
    let outcome = gantry_updater::fleet::Outcome {
        state: gantry_updater::fleet::State::Rebooting,
        reason: None,
        at: unix_now(),
    };
    let done =
        gantry_updater::rollout::read_machine_id(Path::new(gantry_updater::here::MACHINE_ID))
            .and_then(|id| fleet.report(version, &id, &outcome));
    match done {
        Ok(()) => info!(
            version,
            state = "rebooting",
            "{UPDATE_LINE} reported to the fleet store"
        ),
        Err(e) => warn!(error = %e, "{UPDATE_LINE} cannot report the reboot to the fleet store"),
    }
}

/// The lease, also when a thread panicked holding it (its state is etcd's or the lock
/// server's, not the struct's: nothing to distrust).
fn lock(
    lease: &Mutex<Box<dyn RebootLease + Send>>,
) -> std::sync::MutexGuard<'_, Box<dyn RebootLease + Send>> {
    lease
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An outcome to record: the state and its reason.
type Settled = (gantry_updater::fleet::State, Option<String>);

/// Writes this machine's outcome for `version`, tried every 10 s for five minutes.
fn record(
    fleet: &gantry_updater::fleet::Fleet,
    version: &str,
    state: gantry_updater::fleet::State,
    reason: Option<String>,
) {
    let id =
        match gantry_updater::rollout::read_machine_id(Path::new(gantry_updater::here::MACHINE_ID))
        {
            Ok(id) => id,
            Err(e) => {
                warn!(error = %e, "{UPDATE_LINE} no machine id to report to the fleet store");
                return;
            }
        };
    let outcome = gantry_updater::fleet::Outcome {
        state,
        reason,
        at: unix_now(),
    };
    for attempt in 1..=30 {
        match fleet.report(version, &id, &outcome) {
            Ok(()) => {
                info!(
                    version,
                    state = state.as_str(),
                    "{UPDATE_LINE} reported to the fleet store"
                );
                return;
            }
            Err(e) if attempt < 30 => {
                warn!(error = %e, "{UPDATE_LINE} cannot report to the fleet store yet; trying again");
                std::thread::sleep(Duration::from_secs(10));
            }
            Err(e) => {
                warn!(error = %e, "{UPDATE_LINE} cannot report to the fleet store; giving up")
            }
        }
    }
}

/// Why a pending update's slot ended up not booted.
fn rollback_reason(gate_failures: &[String], tries: u8, slot: Slot) -> String {
    let early = usize::from(tries).saturating_sub(gate_failures.len());
    match gate_failures.last() {
        Some(last) if early == 0 => format!("health gate failed on every trial boot: {last}"),
        Some(last) => format!(
            "health gate failed ({last}); {early} of {tries} trial boots of slot {slot} ended \
             before it (kernel panic, hang or boot failure)"
        ),
        None => format!(
            "slot {slot} never reached the health gate in {tries} trial boots (kernel panic, \
             hang or boot failure)"
        ),
    }
}

fn save(state: &UpdateState) {
    if let Err(e) = state.save(Path::new(STATE_DIR)) {
        error!(error = %e, "{UPDATE_LINE} cannot save the update state");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mounts the ESP of the booted disk at [`ESP_MOUNT`] (vfat, dirsync; no exec, suid or
/// devices).
fn mount_esp() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/")
        .map_err(|e| format!("stat /: {e}"))?
        .dev();
    let root = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let slots = gantry_updater::disk::BlockPaths::host()
        .slot_partitions(root)
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(ESP_MOUNT).map_err(|e| format!("{ESP_MOUNT}: {e}"))?;
    mount(
        Some(&slots.esp.device),
        ESP_MOUNT,
        Some("vfat"),
        // dirsync: a rename on FAT (no journal) reaches the disk before it returns.
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_DIRSYNC,
        Some("umask=0077,shortname=mixed,errors=remount-ro"),
    )
    .map_err(|e| format!("mount {} on {ESP_MOUNT}: {e}", slots.esp.device.display()))?;
    info!(device = %slots.esp.device.display(), "{UPDATE_LINE} ESP mounted at {ESP_MOUNT}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_names_every_unmet_condition() {
        let all_bad = GateInputs {
            config_loaded: false,
            has_address: false,
            required_not_ready: vec!["web".into(), "db".into()],
        };
        assert_eq!(
            all_bad.problems(),
            [
                "no machine config loaded",
                "the network has no address",
                "required containers not running and healthy: web, db"
            ]
        );
        let good = GateInputs {
            config_loaded: true,
            has_address: true,
            required_not_ready: vec![],
        };
        assert!(good.problems().is_empty());
    }

    #[test]
    fn rollback_reasons_tell_gate_failures_from_early_deaths() {
        assert_eq!(
            rollback_reason(&[], 3, Slot::B),
            "slot B never reached the health gate in 3 trial boots (kernel panic, hang or boot failure)"
        );
        let r = rollback_reason(&["x".into(), "x".into()], 2, Slot::B);
        assert_eq!(r, "health gate failed on every trial boot: x");
        let r = rollback_reason(&["x".into()], 3, Slot::A);
        assert!(
            r.contains("2 of 3 trial boots of slot A ended before it"),
            "{r}"
        );
    }
}
