//! Supervision of the containers the machine config names.
//!
//! PID 1 does not create containers in its own process: it is multi-threaded (the network
//! runs on a thread) and `clone(2)` of a container init is only safe from a single-threaded
//! process. Each container runs as a child process `gantry run …` in the foreground (as
//! containerd runs runc through a shim, and systemd runs `docker run`): the child builds
//! the bundle, networks it, runs the container and exits with its status, forwarding
//! SIGTERM to it. Image jobs (`gantry image ensure --pull POLICY`: the stored image as it
//! is under the default `pull = "missing"`; else an import from the config drive's
//! `images/` when an archive there names the image, for air-gapped hosts; else a pull)
//! and health checks (`gantry probe`) are child processes too. A crash in any of them costs
//! that child, never PID 1.
//!
//! The [`Supervisor`] is a state machine driven by PID 1's event loop: [`Supervisor::tick`]
//! at its [`Supervisor::deadline`], [`Supervisor::on_exit`] for every child PID 1 reaps,
//! and [`Supervisor::stop`] at shutdown. What it starts and signals goes through a
//! [`Launcher`], so the tests drive it with a fake one and a clock of their own.
//!
//! Rules:
//! - A container starts once every container it `depends_on` is running and, if that one
//!   has a health check, healthy.
//! - Its image is pulled first; a failed pull is retried with the same back-off as a
//!   restart.
//! - When it exits, the restart policy decides: `no` never, `on-failure[:max]` after a
//!   non-zero status (at most `max` times in a row), `always` and `unless-stopped` always.
//!   Restarts wait 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`]; a container that ran for
//!   [`STABLE_AFTER`] starts again from 1 s.
//! - Health checks run every `interval_secs`, each limited to `timeout_secs`; failures in
//!   the `start_period_secs` after a start do not count; `retries` failures in a row make
//!   the container unhealthy, one success healthy again. An unhealthy container is
//!   reported, not restarted (Docker's rule).
//! - Shutdown stops containers in reverse dependency order: SIGTERM, then SIGKILL to the
//!   container itself after its `stop_grace_secs` (its `gantry run` then cleans up), then
//!   SIGKILL to a `gantry run` still there `CLEANUP_GRACE` (10 s) later; a container is
//!   signalled only once everything that depends on it has stopped.

pub mod launcher;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::config::containers::start_order;
use crate::config::{ContainerSpec, RestartPolicy};

/// The first restart delay.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A container that ran this long starts its back-off afresh.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

pub use gantry_contract::CONTAINER_LINE;

/// What the supervisor asks of the system.
pub trait Launcher {
    /// Starts `job` as a child process; its pid.
    fn spawn(&mut self, job: &Job<'_>) -> Result<u32, String>;
    /// Sends SIGTERM (`kill` false) or SIGKILL (`kill` true) to a child.
    fn signal(&mut self, pid: u32, kill: bool);
    /// Kills the container that the `Job::Run` child `pid` runs, so that the child sees it
    /// die and cleans up after it (mounts, cgroup, network) before it exits; where the
    /// container cannot be reached, SIGKILL to the child.
    fn kill_container(&mut self, name: &str, pid: u32);
}

/// A child process the supervisor starts.
#[derive(Debug, Clone, Copy)]
pub enum Job<'a> {
    /// Get the container's image into the store: import it from an archive, or pull it.
    Pull {
        name: &'a str,
        spec: &'a ContainerSpec,
    },
    /// Run the container in the foreground.
    Run {
        name: &'a str,
        spec: &'a ContainerSpec,
    },
    /// Run its health check once.
    Check {
        name: &'a str,
        spec: &'a ContainerSpec,
    },
}

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the containers it depends on.
    Waiting,
    Pulling {
        pid: u32,
    },
    /// Waiting to try again (pull or start) at `until`.
    Backoff {
        until: Instant,
        pulled: bool,
    },
    Running {
        pid: u32,
        since: Instant,
    },
    /// Done for good: policy `no`, or `on-failure` out of tries, or stopped at shutdown.
    Exited,
    Stopping {
        pid: u32,
        /// When the next step of `stage` is due.
        kill_at: Instant,
        stage: StopStage,
    },
}

/// How far a stop has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopStage {
    /// SIGTERM sent; the container is killed at `kill_at`.
    Term,
    /// The container was killed; its `gantry run` cleans up, or gets SIGKILL at `kill_at`.
    ContainerKilled,
    /// SIGKILL sent to the child itself: only its exit is left.
    Killed,
}

/// How long `gantry run` gets to clean up after its killed container (unmount, delete the
/// cgroup, detach the network) before it is killed too.
const CLEANUP_GRACE: Duration = Duration::from_secs(10);

/// Health as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check configured.
    None,
    /// Not checked yet since the last start.
    Starting,
    Healthy,
    Unhealthy,
}

/// One container's status, as the status file and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStatus {
    /// `waiting`, `pulling`, `backoff`, `running`, `stopping` or `exited`.
    pub state: &'static str,
    /// The image reference.
    pub image: String,
    /// Restarts since boot.
    pub restarts: u32,
    /// Health.
    pub health: Health,
    /// The last exit status (128 + n for a signal).
    pub last_exit: Option<i32>,
    /// The last error (a failed pull or start).
    pub last_error: Option<String>,
    /// Whether the health gate waits for it.
    pub required: bool,
}

#[derive(Debug)]
struct Unit {
    spec: ContainerSpec,
    phase: Phase,
    pulled: bool,
    restarts: u32,
    /// Consecutive restarts that did not reach STABLE_AFTER (back-off exponent).
    quick_restarts: u32,
    /// Consecutive non-zero exits, for `on-failure:max`.
    failures: u32,
    last_exit: Option<i32>,
    last_error: Option<String>,
    health: Health,
    check_pid: Option<(u32, Instant)>,
    next_check: Option<Instant>,
    check_failures: u32,
}

/// The supervisor of every configured container.
#[derive(Debug)]
pub struct Supervisor {
    units: BTreeMap<String, Unit>,
    order: Vec<String>,
    stopping: bool,
}

impl Supervisor {
    /// A supervisor for `containers`; nothing starts before the first [`Supervisor::tick`].
    pub fn new(containers: &BTreeMap<String, ContainerSpec>) -> Supervisor {
        let units = containers
            .iter()
            .map(|(name, spec)| {
                (
                    name.clone(),
                    Unit {
                        spec: spec.clone(),
                        phase: Phase::Waiting,
                        pulled: false,
                        restarts: 0,
                        quick_restarts: 0,
                        failures: 0,
                        last_exit: None,
                        last_error: None,
                        health: if spec.health.is_some() {
                            Health::Starting
                        } else {
                            Health::None
                        },
                        check_pid: None,
                        next_check: None,
                        check_failures: 0,
                    },
                )
            })
            .collect();
        Supervisor {
            units,
            order: start_order(containers),
            stopping: false,
        }
    }

    /// The next time [`Supervisor::tick`] has something to do, if any.
    pub fn deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for u in self.units.values() {
            match &u.phase {
                Phase::Backoff { until, .. } => at(*until),
                Phase::Stopping { kill_at, stage, .. } if *stage != StopStage::Killed => {
                    at(*kill_at)
                }
                Phase::Running { .. } => {
                    if let Some((_, started)) = u.check_pid {
                        let timeout = u.spec.health.as_ref().map_or(0, |h| h.timeout_secs);
                        at(later(started, Duration::from_secs(timeout)));
                    } else if let Some(t) = u.next_check {
                        at(t);
                    }
                }
                _ => {}
            }
        }
        d
    }

    /// Starts what can start, retries what waited long enough, runs due health checks and
    /// kills checks and stopping containers that ran out of time.
    pub fn tick(&mut self, now: Instant, launcher: &mut dyn Launcher) {
        for name in self.order.clone() {
            self.tick_one(&name, now, launcher);
        }
        if self.stopping {
            self.advance_stop(now, launcher);
        }
    }

    fn tick_one(&mut self, name: &str, now: Instant, launcher: &mut dyn Launcher) {
        let ready = self.dependencies_ready(name);
        let stopping = self.stopping;
        let Some(u) = self.units.get_mut(name) else {
            return;
        };
        match u.phase.clone() {
            Phase::Waiting if !stopping && ready => start(name, u, now, launcher),
            Phase::Backoff { until, .. } if !stopping && now >= until => {
                start(name, u, now, launcher)
            }
            Phase::Running { since, .. } => {
                let Some(h) = u.spec.health.clone() else {
                    return;
                };
                if let Some((pid, started)) = u.check_pid {
                    if now >= later(started, Duration::from_secs(h.timeout_secs)) {
                        // The check's exit will be counted as a failure.
                        launcher.signal(pid, true);
                    }
                } else if u.next_check.is_some_and(|t| now >= t) && !stopping {
                    match launcher.spawn(&Job::Check {
                        name,
                        spec: &u.spec,
                    }) {
                        Ok(pid) => u.check_pid = Some((pid, now)),
                        Err(e) => {
                            u.last_error = Some(format!("health check: {e}"));
                            check_result(name, u, false, now, since);
                        }
                    }
                }
            }
            Phase::Stopping {
                pid,
                kill_at,
                stage: StopStage::Term,
            } if now >= kill_at => {
                // SIGKILL to `gantry run` would orphan the container (its PID 1 may ignore
                // SIGTERM, as busybox httpd does): it would run on without its cleanup.
                launcher.kill_container(name, pid);
                u.phase = Phase::Stopping {
                    pid,
                    kill_at: later(now, CLEANUP_GRACE),
                    stage: StopStage::ContainerKilled,
                };
                log_state(name, u, "grace period over; SIGKILL");
            }
            Phase::Stopping {
                pid,
                kill_at,
                stage: StopStage::ContainerKilled,
            } if now >= kill_at => {
                // Its container is gone, yet `gantry run` is still there (stuck in cleanup,
                // or waiting on processes that were not in the container's PID namespace).
                launcher.signal(pid, true);
                u.phase = Phase::Stopping {
                    pid,
                    kill_at,
                    stage: StopStage::Killed,
                };
                log_state(name, u, "cleanup took too long; SIGKILL to gantry run");
            }
            _ => {}
        }
    }

    /// Whether every dependency of `name` is running and, if it has a check, healthy.
    fn dependencies_ready(&self, name: &str) -> bool {
        let Some(u) = self.units.get(name) else {
            return false;
        };
        u.spec.depends_on.iter().all(|d| {
            self.units.get(d).is_none_or(|dep| {
                matches!(dep.phase, Phase::Running { .. })
                    && matches!(dep.health, Health::None | Health::Healthy)
            })
        })
    }

    /// A child exited: if it is one of ours, act on it and return true.
    pub fn on_exit(
        &mut self,
        pid: u32,
        code: i32,
        now: Instant,
        launcher: &mut dyn Launcher,
    ) -> bool {
        let Some(name) = self.units.iter().find_map(|(n, u)| {
            let ours = match u.phase {
                Phase::Pulling { pid: p }
                | Phase::Running { pid: p, .. }
                | Phase::Stopping { pid: p, .. } => p == pid,
                _ => false,
            } || u.check_pid.is_some_and(|(p, _)| p == pid);
            ours.then(|| n.clone())
        }) else {
            return false;
        };
        let stopping = self.stopping;
        let Some(u) = self.units.get_mut(&name) else {
            return false;
        };
        if let Some((p, _)) = u.check_pid {
            if p == pid {
                u.check_pid = None;
                if let Phase::Running { since, .. } = u.phase {
                    check_result(&name, u, code == 0, now, since);
                }
                return true;
            }
        }
        match u.phase.clone() {
            Phase::Pulling { .. } => {
                if code == 0 {
                    u.pulled = true;
                    u.last_error = None;
                    if stopping {
                        u.phase = Phase::Exited;
                    } else {
                        info!(name = %name, image = %u.spec.image, "{CONTAINER_LINE} image pulled");
                        start(&name, u, now, launcher);
                    }
                } else {
                    u.last_error = Some(format!(
                        "pull of {} failed with status {code}",
                        u.spec.image
                    ));
                    backoff(&name, u, now, stopping);
                }
            }
            Phase::Running { since, .. } => {
                u.last_exit = Some(code);
                u.check_pid = None;
                u.next_check = None;
                if now.duration_since(since) >= STABLE_AFTER {
                    u.quick_restarts = 0;
                }
                u.failures = if code == 0 { 0 } else { u.failures + 1 };
                let again = !stopping
                    && match u.spec.restart_policy() {
                        RestartPolicy::No => false,
                        RestartPolicy::OnFailure { max } => {
                            code != 0 && max.is_none_or(|m| u.failures <= m)
                        }
                        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                    };
                if again {
                    backoff(&name, u, now, stopping);
                } else {
                    u.phase = Phase::Exited;
                    log_state(&name, u, &format!("exited with status {code}"));
                }
            }
            Phase::Stopping { .. } => {
                u.last_exit = Some(code);
                u.phase = Phase::Exited;
                log_state(&name, u, &format!("stopped with status {code}"));
            }
            _ => {}
        }
        if self.stopping {
            self.advance_stop(now, launcher);
        }
        true
    }

    /// Begins an orderly stop of every container; call [`Supervisor::tick`] and
    /// [`Supervisor::on_exit`] until [`Supervisor::all_stopped`].
    pub fn stop(&mut self, now: Instant, launcher: &mut dyn Launcher) {
        self.stopping = true;
        for u in self.units.values_mut() {
            if matches!(u.phase, Phase::Waiting | Phase::Backoff { .. }) {
                u.phase = Phase::Exited;
            }
        }
        self.advance_stop(now, launcher);
    }

    /// Sends SIGTERM to every running container that nothing running depends on.
    fn advance_stop(&mut self, now: Instant, launcher: &mut dyn Launcher) {
        for name in self.order.clone().iter().rev() {
            let dependents_done = self.units.values().all(|other| {
                !other.spec.depends_on.contains(name) || matches!(other.phase, Phase::Exited)
            });
            let Some(u) = self.units.get_mut(name) else {
                continue;
            };
            if let Some((pid, _)) = u.check_pid.take() {
                launcher.signal(pid, true);
            }
            match u.phase {
                Phase::Pulling { pid } => {
                    launcher.signal(pid, true);
                    u.phase = Phase::Stopping {
                        pid,
                        kill_at: now,
                        stage: StopStage::Killed,
                    };
                }
                Phase::Running { pid, .. } if dependents_done => {
                    launcher.signal(pid, false);
                    let kill_at = later(now, Duration::from_secs(u.spec.stop_grace_secs));
                    u.phase = Phase::Stopping {
                        pid,
                        kill_at,
                        stage: StopStage::Term,
                    };
                    log_state(name, u, "SIGTERM");
                }
                _ => {}
            }
        }
    }

    /// True once no container (or pull) is left running.
    pub fn all_stopped(&self) -> bool {
        self.units.values().all(|u| {
            !matches!(
                u.phase,
                Phase::Pulling { .. } | Phase::Running { .. } | Phase::Stopping { .. }
            ) && u.check_pid.is_none()
        })
    }

    /// Every container's status.
    pub fn status(&self) -> BTreeMap<String, ContainerStatus> {
        self.units
            .iter()
            .map(|(n, u)| (n.clone(), status_of(u)))
            .collect()
    }

    /// The names of required containers that are not running and healthy.
    pub fn required_not_ready(&self) -> Vec<String> {
        self.units
            .iter()
            .filter(|(_, u)| {
                u.spec.required
                    && !(matches!(u.phase, Phase::Running { .. })
                        && matches!(u.health, Health::None | Health::Healthy))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn start(name: &str, u: &mut Unit, now: Instant, launcher: &mut dyn Launcher) {
    let job = if u.pulled {
        Job::Run {
            name,
            spec: &u.spec,
        }
    } else {
        Job::Pull {
            name,
            spec: &u.spec,
        }
    };
    match launcher.spawn(&job) {
        Ok(pid) => {
            if u.pulled {
                if u.last_exit.is_some() {
                    u.restarts += 1;
                }
                u.phase = Phase::Running { pid, since: now };
                if let Some(h) = &u.spec.health {
                    u.health = Health::Starting;
                    u.check_failures = 0;
                    // The first check comes soon, so that dependants need not wait a whole interval.
                    u.next_check = Some(later(now, Duration::from_secs(h.interval_secs.min(1))));
                }
                log_state(name, u, &format!("pid {pid}"));
            } else {
                u.phase = Phase::Pulling { pid };
                log_state(name, u, &u.spec.image.clone());
            }
        }
        Err(e) => {
            u.last_error = Some(e);
            backoff(name, u, now, false);
        }
    }
}

fn backoff(name: &str, u: &mut Unit, now: Instant, stopping: bool) {
    if stopping {
        u.phase = Phase::Exited;
        return;
    }
    let delay = MIN_BACKOFF
        .saturating_mul(1u32 << u.quick_restarts.min(10))
        .min(MAX_BACKOFF);
    u.quick_restarts = u.quick_restarts.saturating_add(1);
    u.phase = Phase::Backoff {
        until: now + delay,
        pulled: u.pulled,
    };
    let why = u.last_error.clone().unwrap_or_else(|| match u.last_exit {
        Some(c) => format!("exited with status {c}"),
        None => "failed".to_owned(),
    });
    log_state(name, u, &format!("{why}; again in {} s", delay.as_secs()));
}

fn check_result(name: &str, u: &mut Unit, ok: bool, now: Instant, since: Instant) {
    let Some(h) = u.spec.health.clone() else {
        return;
    };
    u.next_check = Some(later(now, Duration::from_secs(h.interval_secs)));
    let before = u.health;
    if ok {
        u.check_failures = 0;
        u.health = Health::Healthy;
    } else if now.duration_since(since) >= Duration::from_secs(h.start_period_secs) {
        u.check_failures += 1;
        if u.check_failures >= h.retries {
            u.health = Health::Unhealthy;
        }
    }
    if u.health != before {
        match u.health {
            Health::Unhealthy => {
                warn!(name = %name, health = "unhealthy", failures = u.check_failures, "{CONTAINER_LINE}")
            }
            _ => info!(name = %name, health = ?u.health, "{CONTAINER_LINE}"),
        }
    }
}

/// `t + d`, or a year after `t` if that overflows: PID 1 must not panic on a time sum.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(t)
}

fn state_name(p: &Phase) -> &'static str {
    match p {
        Phase::Waiting => "waiting",
        Phase::Pulling { .. } => "pulling",
        Phase::Backoff { .. } => "backoff",
        Phase::Running { .. } => "running",
        Phase::Exited => "exited",
        Phase::Stopping { .. } => "stopping",
    }
}

fn log_state(name: &str, u: &Unit, detail: &str) {
    info!(name = %name, state = state_name(&u.phase), restarts = u.restarts, detail, "{CONTAINER_LINE}");
}

fn status_of(u: &Unit) -> ContainerStatus {
    ContainerStatus {
        state: state_name(&u.phase),
        image: u.spec.image.clone(),
        restarts: u.restarts,
        health: u.health,
        last_exit: u.last_exit,
        last_error: u.last_error.clone(),
        required: u.spec.required,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lease_tests {
    #[test]
    fn stale_leases_go_and_everything_else_stays() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gantry0.json"), "{}").unwrap();
        std::fs::write(dir.path().join("gantry0.lock"), "").unwrap();
        super::forget_stale_leases(dir.path());
        assert!(!dir.path().join("gantry0.json").exists());
        assert!(dir.path().join("gantry0.lock").exists());
        super::forget_stale_leases(&dir.path().join("missing"));
    }
}

/// Drops the container network's address leases left by an earlier boot. Nothing runs
/// before PID 1 starts it, so every lease found now belongs to a container that ended
/// with the last boot (a power cut, or a SIGKILL when its grace ran out) and would hold
/// its address and published ports forever.
pub fn forget_stale_leases(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "json") {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    info!(file = %path.display(), "{CONTAINER_LINE} stale address leases dropped")
                }
                Err(err) => {
                    warn!(file = %path.display(), error = %err, "cannot drop stale address leases")
                }
            }
        }
    }
}

/// Where PID 1 writes every container's [`ContainerStatus`] as JSON.
pub const STATUS_FILE: &str = "/run/gantry/containers.json";

/// The supervisor with the real launcher and the status file, as PID 1 runs it.
#[derive(Debug)]
pub struct Containers {
    supervisor: Supervisor,
    launcher: launcher::Commands,
    last_status: Vec<u8>,
    total_grace: Duration,
}

impl Containers {
    /// Supervises the containers `config` names (none without a config).
    pub fn start(config: Option<&crate::config::MachineConfig>) -> Containers {
        let (containers, registries, hosts) = match config {
            Some(c) => (
                c.containers.clone(),
                c.registries.clone(),
                c.network.hosts.clone().into_iter().collect(),
            ),
            None => Default::default(),
        };
        forget_stale_leases(Path::new(launcher::NETWORK_STATE));
        let (launcher, problems) = launcher::Commands::for_pid1(registries, hosts);
        for p in problems {
            warn!(problem = %p, "{CONTAINER_LINE} setup");
        }
        info!(
            count = containers.len(),
            "{CONTAINER_LINE} supervision starts"
        );
        // Containers in a depends_on chain stop one after another: their graces add up,
        // each with the time its `gantry run` may take to clean up after a kill.
        let total_grace = Duration::from_secs(
            containers
                .values()
                .map(|c| c.stop_grace_secs.saturating_add(CLEANUP_GRACE.as_secs()))
                .fold(0u64, u64::saturating_add),
        );
        let mut c = Containers {
            supervisor: Supervisor::new(&containers),
            launcher,
            last_status: Vec::new(),
            total_grace,
        };
        c.tick();
        c
    }

    /// When [`Containers::tick`] is next due.
    pub fn deadline(&self) -> Option<Instant> {
        self.supervisor.deadline()
    }

    /// The required containers that are not running and healthy (for the health gate).
    pub fn required_not_ready(&self) -> Vec<String> {
        self.supervisor.required_not_ready()
    }

    /// A child exited; true if it was one of the supervisor's.
    pub fn on_exit(&mut self, pid: u32, code: i32) -> bool {
        let ours = self
            .supervisor
            .on_exit(pid, code, Instant::now(), &mut self.launcher);
        if ours {
            self.tick();
        }
        ours
    }

    /// Runs what is due and writes the status file when it changed.
    pub fn tick(&mut self) {
        self.supervisor.tick(Instant::now(), &mut self.launcher);
        let status = serde_json::to_vec_pretty(&self.supervisor.status()).unwrap_or_default();
        if status != self.last_status {
            let path = std::path::Path::new(STATUS_FILE);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| gantry_durable::write_atomic(path, &status));
            if let Err(e) = written {
                warn!(file = STATUS_FILE, error = %e, "cannot write the container status");
            }
            self.last_status = status;
        }
    }

    /// Stops every container in reverse dependency order; `wait` blocks until a child may
    /// have exited or the time given passes, `reap` collects exits as (pid, status).
    pub fn stop(
        &mut self,
        mut wait: impl FnMut(Duration),
        mut reap: impl FnMut() -> Vec<(u32, i32)>,
    ) {
        self.supervisor.stop(Instant::now(), &mut self.launcher);
        let give_up = later(
            Instant::now(),
            self.total_grace.saturating_add(Duration::from_secs(5)),
        );
        while !self.supervisor.all_stopped() && Instant::now() < give_up {
            let now = Instant::now();
            let next = self
                .supervisor
                .deadline()
                .map_or(Duration::from_millis(200), |d| {
                    d.saturating_duration_since(now)
                })
                .min(Duration::from_millis(200));
            wait(next);
            for (pid, code) in reap() {
                self.supervisor
                    .on_exit(pid, code, Instant::now(), &mut self.launcher);
            }
            self.tick();
        }
        if self.supervisor.all_stopped() {
            info!("{CONTAINER_LINE} all stopped");
        } else {
            warn!("{CONTAINER_LINE} some did not stop in time; the shutdown kills them");
        }
    }
}
