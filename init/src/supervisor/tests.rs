//! The supervisor against a fake launcher and a clock of the test's own.

use super::*;
use crate::config::MachineConfig;

#[derive(Default)]
struct Fake {
    next_pid: u32,
    spawned: Vec<(u32, String)>,
    signals: Vec<(u32, bool)>,
    killed_containers: Vec<(String, u32)>,
    fail_spawn: bool,
}

impl Launcher for Fake {
    fn spawn(&mut self, job: &Job<'_>) -> Result<u32, String> {
        if self.fail_spawn {
            return Err("no such binary".into());
        }
        self.next_pid += 1;
        let what = match job {
            Job::Pull { name, .. } => format!("pull {name}"),
            Job::Run { name, .. } => format!("run {name}"),
            Job::Check { name, .. } => format!("check {name}"),
        };
        self.spawned.push((self.next_pid, what));
        Ok(self.next_pid)
    }
    fn signal(&mut self, pid: u32, kill: bool) {
        self.signals.push((pid, kill));
    }
    fn kill_container(&mut self, name: &str, pid: u32) {
        self.killed_containers.push((name.to_owned(), pid));
    }
}

impl Fake {
    fn pid_of(&self, what: &str) -> u32 {
        self.spawned
            .iter()
            .rev()
            .find(|(_, w)| w == what)
            .map(|(p, _)| *p)
            .unwrap_or_else(|| panic!("{what} never spawned: {:?}", self.spawned))
    }
    fn count(&self, what: &str) -> usize {
        self.spawned.iter().filter(|(_, w)| w == what).count()
    }
}

fn sup(toml: &str) -> Supervisor {
    let c = MachineConfig::parse(&format!("version = 1\n{toml}"), "test").unwrap();
    Supervisor::new(&c.containers)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Pulls and starts `name`, returning the run pid.
fn bring_up(s: &mut Supervisor, f: &mut Fake, name: &str, now: Instant) -> u32 {
    s.tick(now, f);
    let pull = f.pid_of(&format!("pull {name}"));
    assert!(s.on_exit(pull, 0, now, f));
    f.pid_of(&format!("run {name}"))
}

#[test]
fn pulls_then_runs_and_restarts_always_with_doubling_backoff_capped() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup("[containers.web]\nimage = \"busybox\"\n");
    let mut pid = bring_up(&mut s, &mut f, "web", t0);
    assert_eq!(s.status()["web"].state, "running");
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..9 {
        s.on_exit(pid, 0, now, &mut f);
        assert_eq!(s.status()["web"].state, "backoff");
        let at = s.deadline().unwrap();
        delays.push((at - now).as_secs());
        now = at;
        s.tick(now, &mut f);
        pid = f.pid_of("run web");
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(s.status()["web"].restarts, 9);
    assert_eq!(f.count("pull web"), 1, "pulled once");
    // A run that lasts past the stable period resets the back-off.
    now += STABLE_AFTER;
    s.on_exit(pid, 1, now, &mut f);
    assert_eq!(s.deadline().unwrap() - now, secs(1));
    assert_eq!(s.status()["web"].last_exit, Some(1));
}

#[test]
fn on_failure_max_stops_after_that_many_failures_and_no_never_restarts() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup(
        "[containers.job]\nimage = \"busybox\"\nrestart = \"on-failure:2\"\n\
         [containers.once]\nimage = \"busybox\"\nrestart = \"no\"\n\
         [containers.ok]\nimage = \"busybox\"\nrestart = \"on-failure\"\n",
    );
    s.tick(t0, &mut f);
    for n in ["job", "once", "ok"] {
        let p = f.pid_of(&format!("pull {n}"));
        s.on_exit(p, 0, t0, &mut f);
    }
    let mut now = t0;
    for _ in 0..2 {
        let p = f.pid_of("run job");
        s.on_exit(p, 3, now, &mut f);
        assert_eq!(s.status()["job"].state, "backoff");
        now = s.deadline().unwrap();
        s.tick(now, &mut f);
    }
    s.on_exit(f.pid_of("run job"), 3, now, &mut f);
    assert_eq!(
        s.status()["job"].state,
        "exited",
        "the third failure in a row is the end"
    );
    assert_eq!(s.status()["job"].restarts, 2);

    s.on_exit(f.pid_of("run once"), 1, now, &mut f);
    assert_eq!(s.status()["once"].state, "exited");
    s.on_exit(f.pid_of("run ok"), 0, now, &mut f);
    assert_eq!(
        s.status()["ok"].state,
        "exited",
        "on-failure: a clean exit is final"
    );
}

#[test]
fn dependencies_start_first_and_wait_for_health() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup(
        "[containers.web]\nimage = \"busybox\"\ndepends_on = [\"db\"]\n\
         [containers.db]\nimage = \"busybox\"\nhealth = { tcp = 5432, interval_secs = 5, retries = 2 }\n",
    );
    s.tick(t0, &mut f);
    assert_eq!(f.count("pull web"), 0, "web waits for db");
    s.on_exit(f.pid_of("pull db"), 0, t0, &mut f);
    s.tick(t0, &mut f);
    assert_eq!(f.count("pull web"), 0, "db runs but is not healthy yet");
    assert_eq!(s.status()["db"].health, Health::Starting);
    let first_check = s.deadline().unwrap();
    assert_eq!(first_check - t0, secs(1));
    s.tick(first_check, &mut f);
    s.on_exit(f.pid_of("check db"), 0, first_check, &mut f);
    assert_eq!(s.status()["db"].health, Health::Healthy);
    s.tick(first_check, &mut f);
    assert_eq!(f.count("pull web"), 1, "db healthy: web starts");
}

#[test]
fn health_checks_count_failures_after_the_start_period_and_time_out() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup(
        "[containers.api]\nimage = \"busybox\"\n\
         health = { http = \"http://127.0.0.1:8080/\", interval_secs = 10, timeout_secs = 2, retries = 2, start_period_secs = 15 }\n",
    );
    bring_up(&mut s, &mut f, "api", t0);
    // In the start period a failure does not count.
    let t = s.deadline().unwrap();
    s.tick(t, &mut f);
    s.on_exit(f.pid_of("check api"), 1, t, &mut f);
    assert_eq!(s.status()["api"].health, Health::Starting);
    // After it, a check that hangs is killed at its timeout and counts as failed.
    let t = s.deadline().unwrap();
    assert_eq!(t - t0, secs(11));
    s.tick(t, &mut f);
    let t = t + secs(10);
    s.tick(t, &mut f);
    let hung = f.pid_of("check api");
    s.tick(s.deadline().unwrap(), &mut f);
    assert!(f.signals.contains(&(hung, true)), "{:?}", f.signals);
    s.on_exit(hung, 137, t + secs(2), &mut f);
    assert_eq!(
        s.status()["api"].health,
        Health::Starting,
        "one failure of two"
    );
    let t = s.deadline().unwrap();
    s.tick(t, &mut f);
    s.on_exit(f.pid_of("check api"), 1, t, &mut f);
    assert_eq!(s.status()["api"].health, Health::Unhealthy);
    assert_eq!(
        s.status()["api"].state,
        "running",
        "unhealthy is reported, not restarted"
    );
    assert_eq!(
        s.required_not_ready(),
        Vec::<String>::new(),
        "api is not required"
    );
    let t = s.deadline().unwrap();
    s.tick(t, &mut f);
    s.on_exit(f.pid_of("check api"), 0, t, &mut f);
    assert_eq!(s.status()["api"].health, Health::Healthy);
}

#[test]
fn shutdown_stops_dependants_first_then_kills_after_the_grace_period() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup(
        "[containers.web]\nimage = \"busybox\"\ndepends_on = [\"db\"]\nstop_grace_secs = 5\n\
         [containers.db]\nimage = \"busybox\"\nstop_grace_secs = 7\n",
    );
    let db = bring_up(&mut s, &mut f, "db", t0);
    s.tick(t0, &mut f);
    s.on_exit(f.pid_of("pull web"), 0, t0, &mut f);
    let web = f.pid_of("run web");
    s.stop(t0, &mut f);
    assert_eq!(f.signals, [(web, false)], "web first; db still serves it");
    assert!(!s.all_stopped());
    s.tick(t0 + secs(5), &mut f);
    assert_eq!(
        f.killed_containers,
        [("web".to_owned(), web)],
        "the container itself is killed after web's grace"
    );
    assert_eq!(
        f.signals,
        [(web, false)],
        "`gantry run` is left to clean up after its container"
    );
    assert_eq!(
        s.deadline(),
        Some(t0 + secs(15)),
        "until its cleanup grace ends"
    );
    s.on_exit(web, 137, t0 + secs(5), &mut f);
    assert_eq!(f.signals.last(), Some(&(db, false)), "then db");
    assert_eq!(s.deadline(), Some(t0 + secs(12)));
    s.on_exit(db, 0, t0 + secs(6), &mut f);
    assert!(s.all_stopped());
    assert_eq!(s.status()["db"].state, "exited");
    assert_eq!(f.count("run web"), 1, "nothing restarts during shutdown");
}

#[test]
fn a_gantry_run_stuck_after_its_container_was_killed_gets_sigkill_after_the_cleanup_grace() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup("[containers.web]\nimage = \"busybox\"\nstop_grace_secs = 2\n");
    let web = bring_up(&mut s, &mut f, "web", t0);
    s.stop(t0, &mut f);
    s.tick(t0 + secs(2), &mut f);
    assert_eq!(f.killed_containers, [("web".to_owned(), web)]);
    s.tick(t0 + secs(11), &mut f);
    assert_eq!(f.signals, [(web, false)], "still inside the cleanup grace");
    s.tick(t0 + secs(12), &mut f);
    assert_eq!(f.signals, [(web, false), (web, true)]);
    assert_eq!(s.deadline(), None, "only its exit is left to wait for");
    assert!(!s.all_stopped());
    s.on_exit(web, 137, t0 + secs(12), &mut f);
    assert!(s.all_stopped());
}

#[test]
fn failed_pulls_and_spawns_back_off_and_are_reported() {
    let t0 = Instant::now();
    let mut f = Fake::default();
    let mut s = sup("[containers.web]\nimage = \"busybox\"\nrequired = true\n");
    s.tick(t0, &mut f);
    s.on_exit(f.pid_of("pull web"), 1, t0, &mut f);
    let st = &s.status()["web"];
    assert_eq!(st.state, "backoff");
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("pull of busybox failed"),
        "{st:?}"
    );
    assert_eq!(s.required_not_ready(), ["web"]);
    f.fail_spawn = true;
    let t = s.deadline().unwrap();
    s.tick(t, &mut f);
    assert_eq!(
        s.status()["web"].last_error.as_deref(),
        Some("no such binary")
    );
    assert_eq!(s.deadline().unwrap() - t, secs(2));
    f.fail_spawn = false;
    let t = s.deadline().unwrap();
    s.tick(t, &mut f);
    s.on_exit(f.pid_of("pull web"), 0, t, &mut f);
    assert_eq!(s.status()["web"].state, "running");
    assert!(s.required_not_ready().is_empty());
    assert!(
        !s.on_exit(9999, 0, t, &mut f),
        "a stranger's exit is not ours"
    );
}
