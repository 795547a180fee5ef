//! After a power cut, the image store is checked before any container starts.
//!
//! When `/var` was mounted with a journal to replay (its last shutdown was not orderly,
//! [`VarStatus::clean`] is `Some(false)`), PID 1 runs `gantry --root /var/lib/gantry image
//! check` as a child and starts no container (and so no pull) until it has ended. The
//! store is built to survive a cut at any moment (see `gantry_runtime::store`), so the
//! check is evidence, not a repair tool; but a disk that lied about a flush would show up
//! here rather than as a container that fails to start.
//!
//! When the check finds problems, PID 1 runs `gantry image prune` and checks again. Prune
//! only frees what no image record names (layers, blobs, abandoned downloads, half-written
//! records); it never touches `volumes/`, `network/` or anything else under `/var`, so no
//! container data is ever deleted on PID 1's own judgement. A record that names a broken
//! blob or layer is reported and left for the operator (`gantry image rm`), because
//! removing it is a decision about what the machine runs.
//!
//! Whatever the result, one [`STORE_CHECK_LINE`] is logged and the containers start: the
//! machine's job is to run them, and the supervisor pulls every image before its first
//! start anyway (layers already in the store are not fetched again).
//!
//! Like the supervisor, this is a state machine driven by PID 1's event loop
//! ([`StoreCheck::on_exit`] for each reaped child, [`StoreCheck::tick`] for the time
//! limit), so PID 1 keeps reading signals and reaping while the check runs. The children
//! go through [`CheckOps`]; the tests drive it with a fake.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::supervisor::launcher::{GANTRY, STATE, STORE};
use crate::var::VarStatus;

/// Logged once when the check has ended, with `ok=` (the store is consistent now),
/// `problems=` (found by the first check), `pruned=`, `left=` (problems after the
/// prune), `reasons=` and `ms=`.
pub const STORE_CHECK_LINE: &str = "gantry-init: store check";

/// How long each step may take before it is killed and the containers start anyway.
/// The check hashes manifests and configs only (layer blobs are not kept once unpacked),
/// so this is generous even under emulation.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// One `gantry` child of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `gantry image check` after the power cut.
    Check,
    /// `gantry image prune`, when the check found problems.
    Prune,
    /// `gantry image check` again, after the prune.
    Recheck,
}

impl Step {
    /// The `gantry image` subcommand.
    pub fn subcommand(self) -> &'static str {
        match self {
            Step::Check | Step::Recheck => "check",
            Step::Prune => "prune",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::Check => "check",
            Step::Prune => "prune",
            Step::Recheck => "recheck",
        }
    }
}

/// What the check asks of the system. [`Host`] runs `gantry`; the tests record.
pub trait CheckOps {
    /// Starts `gantry --root <store> image <step>`; its pid.
    fn spawn(&mut self, step: Step) -> Result<u32, String>;
    /// What the step's child printed (standard output and error).
    fn output(&mut self, step: Step) -> String;
    /// SIGKILL to a child that ran out of time.
    fn kill(&mut self, pid: u32);
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Running {
        step: Step,
        pid: u32,
        until: Instant,
    },
    Done,
}

/// The check of one boot.
#[derive(Debug)]
pub struct StoreCheck {
    phase: Phase,
    started: Instant,
    /// What the first check found.
    found: Vec<String>,
    pruned: bool,
}

impl StoreCheck {
    /// Starts the check if `/var` is DATA and its journal was replayed; otherwise a check
    /// that is already done (and says nothing).
    pub fn after_mount(var: &VarStatus, now: Instant, ops: &mut dyn CheckOps) -> StoreCheck {
        let mut c = StoreCheck::skipped(now);
        if var.persistent && var.clean == Some(false) {
            c.run(Step::Check, now, ops);
        }
        c
    }

    /// A check that is done without having run (PID 1 could not start it).
    pub fn skipped(now: Instant) -> StoreCheck {
        StoreCheck {
            phase: Phase::Done,
            started: now,
            found: Vec::new(),
            pruned: false,
        }
    }

    /// True once the containers may start.
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// When [`StoreCheck::tick`] is next due.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { until, .. } => Some(until),
            Phase::Done => None,
        }
    }

    /// Kills a step that ran out of time; the check ends there.
    pub fn tick(&mut self, now: Instant, ops: &mut dyn CheckOps) {
        if let Phase::Running { step, pid, until } = self.phase {
            if now >= until {
                // Its exit is reaped (and logged) by the event loop as anyone's.
                ops.kill(pid);
                let why = format!(
                    "{} timed out after {} s",
                    step.name(),
                    STEP_TIMEOUT.as_secs()
                );
                self.finish(now, false, vec![why]);
            }
        }
    }

    /// A child exited: if it is the running step, go on and return true.
    pub fn on_exit(&mut self, pid: u32, code: i32, now: Instant, ops: &mut dyn CheckOps) -> bool {
        let Phase::Running { step, pid: p, .. } = self.phase else {
            return false;
        };
        if p != pid {
            return false;
        }
        let output = ops.output(step);
        match step {
            Step::Check if code == 0 => self.finish(now, true, Vec::new()),
            Step::Check => {
                self.found = problems(&output, code);
                warn!(
                    problems = self.found.len(),
                    reasons = %self.found.join("; "),
                    "gantry-init: image store inconsistent; pruning what no image names"
                );
                self.run(Step::Prune, now, ops);
            }
            Step::Prune => {
                self.pruned = code == 0;
                if code != 0 {
                    warn!(code, output = %output.trim(), "gantry-init: image store prune failed");
                }
                self.run(Step::Recheck, now, ops);
            }
            Step::Recheck => {
                let left = if code == 0 {
                    Vec::new()
                } else {
                    problems(&output, code)
                };
                self.finish(now, code == 0, left);
            }
        }
        true
    }

    fn run(&mut self, step: Step, now: Instant, ops: &mut dyn CheckOps) {
        match ops.spawn(step) {
            Ok(pid) => {
                self.phase = Phase::Running {
                    step,
                    pid,
                    until: now + STEP_TIMEOUT,
                }
            }
            Err(e) => {
                let why = format!("cannot start {}: {e}", step.name());
                self.finish(now, false, vec![why]);
            }
        }
    }

    /// Logs the one line and lets the containers start. `left` is what is still wrong.
    fn finish(&mut self, now: Instant, ok: bool, left: Vec<String>) {
        self.phase = Phase::Done;
        let ms = now.duration_since(self.started).as_millis() as u64;
        let reasons = self
            .found
            .iter()
            .chain(left.iter().filter(|l| !self.found.contains(l)))
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let (problems, pruned, left) = (self.found.len(), self.pruned, left.len());
        if ok {
            info!(ok, problems, pruned, left, reasons = %reasons, ms, "{STORE_CHECK_LINE}");
        } else {
            warn!(ok, problems, pruned, left, reasons = %reasons, ms, "{STORE_CHECK_LINE}");
        }
    }
}

/// The problem lines of a failed check: what it printed, without its summary lines.
fn problems(output: &str, code: i32) -> Vec<String> {
    let lines: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("error: ") && !l.ends_with(" is consistent"))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        // It could not even look (e.g. the store cannot be opened): its error is the reason.
        let error = output.lines().find(|l| l.starts_with("error: "));
        vec![error.map_or_else(
            || format!("check failed with status {code}"),
            |e| e.trim_start_matches("error: ").to_owned(),
        )]
    } else {
        lines
    }
}

/// Runs `gantry` children; each step's output goes to a file under the state directory.
#[derive(Debug, Clone)]
pub struct Host {
    pub gantry: PathBuf,
    pub store: PathBuf,
    /// Where each step's output is kept (`store-<step>.log`).
    pub out_dir: PathBuf,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            gantry: PathBuf::from(GANTRY),
            store: PathBuf::from(STORE),
            out_dir: PathBuf::from(STATE),
        }
    }
}

impl Host {
    fn output_path(&self, step: Step) -> PathBuf {
        self.out_dir.join(format!("store-{}.log", step.name()))
    }
}

impl CheckOps for Host {
    fn spawn(&mut self, step: Step) -> Result<u32, String> {
        let path = self.output_path(step);
        // Without a file the output goes to the console; the line then says only the status.
        let (out, err) = match std::fs::create_dir_all(&self.out_dir)
            .and_then(|()| File::create(&path))
            .and_then(|f| Ok((f.try_clone()?, f)))
        {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot keep the store check's output");
                (Stdio::inherit(), Stdio::inherit())
            }
        };
        let child = Command::new(&self.gantry)
            .arg("--root")
            .arg(&self.store)
            .args(["image", step.subcommand()])
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.gantry.display()))?;
        // PID 1's reaper collects the exit and hands it to StoreCheck::on_exit.
        Ok(child.id())
    }

    fn output(&mut self, step: Step) -> String {
        std::fs::read(self.output_path(step))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn kill(&mut self, pid: u32) {
        if let Ok(p) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Fake {
        spawned: Vec<Step>,
        killed: Vec<u32>,
        outputs: BTreeMap<&'static str, String>,
        refuse: bool,
    }

    impl CheckOps for Fake {
        fn spawn(&mut self, step: Step) -> Result<u32, String> {
            if self.refuse {
                return Err("no such file".into());
            }
            self.spawned.push(step);
            Ok(100 + self.spawned.len() as u32)
        }
        fn output(&mut self, step: Step) -> String {
            self.outputs.get(step.name()).cloned().unwrap_or_default()
        }
        fn kill(&mut self, pid: u32) {
            self.killed.push(pid);
        }
    }

    fn unclean() -> VarStatus {
        VarStatus {
            persistent: true,
            clean: Some(false),
            ..VarStatus::default()
        }
    }

    #[test]
    fn checks_nothing_after_a_clean_shutdown_or_on_tmpfs() {
        let now = Instant::now();
        for var in [
            VarStatus {
                persistent: true,
                clean: Some(true),
                ..VarStatus::default()
            },
            VarStatus::default(),
        ] {
            let mut ops = Fake::default();
            let c = StoreCheck::after_mount(&var, now, &mut ops);
            assert!(c.done());
            assert!(ops.spawned.is_empty());
        }
    }

    #[test]
    fn holds_the_containers_until_a_passing_check_exits() {
        let now = Instant::now();
        let mut ops = Fake::default();
        let mut c = StoreCheck::after_mount(&unclean(), now, &mut ops);
        assert_eq!(ops.spawned, [Step::Check]);
        assert!(!c.done());
        assert_eq!(c.deadline(), Some(now + STEP_TIMEOUT));
        assert!(!c.on_exit(7, 0, now, &mut ops), "not the check's pid");
        assert!(!c.done());
        assert!(c.on_exit(101, 0, now, &mut ops));
        assert!(c.done());
        assert_eq!(ops.spawned, [Step::Check]);
    }

    #[test]
    fn prunes_and_checks_again_when_the_store_is_inconsistent() {
        let now = Instant::now();
        let mut ops = Fake::default();
        ops.outputs.insert(
            "check",
            "layer directory /var/lib/gantry/layers/ab: no diff directory\n\
             error: 1 problems in store /var/lib/gantry\n"
                .into(),
        );
        let mut c = StoreCheck::after_mount(&unclean(), now, &mut ops);
        assert!(c.on_exit(101, 1, now, &mut ops));
        assert_eq!(
            c.found,
            ["layer directory /var/lib/gantry/layers/ab: no diff directory"]
        );
        assert_eq!(ops.spawned, [Step::Check, Step::Prune]);
        assert!(c.on_exit(102, 0, now, &mut ops));
        assert!(c.pruned);
        assert_eq!(ops.spawned, [Step::Check, Step::Prune, Step::Recheck]);
        assert!(!c.done());
        assert!(c.on_exit(103, 0, now, &mut ops));
        assert!(c.done());
    }

    #[test]
    fn a_check_that_runs_out_of_time_is_killed_and_the_containers_start() {
        let now = Instant::now();
        let mut ops = Fake::default();
        let mut c = StoreCheck::after_mount(&unclean(), now, &mut ops);
        c.tick(now + STEP_TIMEOUT / 2, &mut ops);
        assert!(!c.done());
        c.tick(now + STEP_TIMEOUT, &mut ops);
        assert!(c.done());
        assert_eq!(ops.killed, [101]);
        assert!(!c.on_exit(101, 137, now, &mut ops), "left to the reaper");
    }

    #[test]
    fn a_check_that_cannot_start_does_not_hold_the_containers() {
        let mut ops = Fake {
            refuse: true,
            ..Fake::default()
        };
        let c = StoreCheck::after_mount(&unclean(), Instant::now(), &mut ops);
        assert!(c.done());
    }

    #[test]
    fn a_check_that_cannot_open_the_store_gives_its_error_as_the_reason() {
        assert_eq!(
            problems("error: cannot open store /x: denied\n", 1),
            ["cannot open store /x: denied"]
        );
        assert_eq!(problems("", 137), ["check failed with status 137"]);
    }
}
