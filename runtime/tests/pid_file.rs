//! `--pid-file` on every verb that takes it (`create`, `run`, `exec`), as runc: the file
//! holds the pid, in the host's PID namespace, of the container's init (or of the exec'd
//! process), as a bare number. Checked against what the host's `/proc` says that pid is.
//! Needs root (CI runs as root) and runc (for `runc spec`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bundle::{require_root, OURS};

fn sleeper(dir: &Path) -> PathBuf {
    common::bundle::bundle(dir, |c| {
        c["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "60"]);
    })
}

fn rt(state: &Path, args: &[&str]) -> (bool, String, String) {
    common::bundle::runtime(OURS, state, args)
}

/// `create` and `start` without their output: the container's init inherits it and would
/// hold the pipe open.
fn rt_quiet(state: &Path, args: &[&str]) -> bool {
    spawn(state, args).wait().expect("runtime").success()
}

fn spawn(state: &Path, args: &[&str]) -> Child {
    Command::new(OURS)
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runtime")
}

/// The pid in `path`, once the file is there (a deadline, not a sleep).
fn wait_for_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text
                .parse()
                .unwrap_or_else(|e| panic!("pid file holds {text:?}, not a bare pid: {e}"));
        }
        assert!(Instant::now() < deadline, "no pid file {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the host sees running as `pid`: its command line, NUL-separated.
fn cmdline(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
}

fn pid_ns(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("pid ns")
}

fn state_pid(state: &Path, id: &str) -> i32 {
    let (ok, out, err) = rt(state, &["state", id]);
    assert!(ok, "state: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("state json");
    v["pid"].as_i64().expect("pid") as i32
}

/// Deletes the container however the test ends.
struct Delete<'a>(&'a Path, &'static str);

impl Drop for Delete<'_> {
    fn drop(&mut self) {
        let _ = rt(self.0, &["delete", "--force", self.1]);
    }
}

#[test]
fn create_and_exec_write_the_hosts_pid_of_their_process_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let b = sleeper(dir.path());
    let b = b.to_str().expect("utf-8");
    let init_file = dir.path().join("init.pid");
    let _delete = Delete(&state, "pidf");
    let ok = rt_quiet(
        &state,
        &[
            "create",
            "--pid-file",
            init_file.to_str().expect("utf-8"),
            "--bundle",
            b,
            "pidf",
        ],
    );
    assert!(ok, "create");
    let init = wait_for_pid(&init_file);
    assert_eq!(init, state_pid(&state, "pidf"), "the state's pid");
    assert!(rt_quiet(&state, &["start", "pidf"]), "start");

    let exec_file = dir.path().join("exec.pid");
    let mut exec = spawn(
        &state,
        &[
            "exec",
            "--pid-file",
            exec_file.to_str().expect("utf-8"),
            "pidf",
            "/bin/busybox",
            "sleep",
            "61",
        ],
    );
    let pid = wait_for_pid(&exec_file);
    assert_ne!(pid, init);
    assert_eq!(
        cmdline(pid),
        "/bin/busybox sleep 61 ",
        "the exec'd program itself, not the runtime's helper"
    );
    assert_eq!(
        pid_ns(pid),
        pid_ns(init),
        "in the container's PID namespace"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the exec'd process");
    let status = exec.wait().expect("exec");
    assert_eq!(status.code(), Some(137), "exec ends with its process");
}

#[test]
fn run_writes_the_hosts_pid_of_the_init_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let b = sleeper(dir.path());
    let file = dir.path().join("run.pid");
    let _delete = Delete(&state, "pidr");
    let mut run = spawn(
        &state,
        &[
            "run",
            "--pid-file",
            file.to_str().expect("utf-8"),
            "--bundle",
            b.to_str().expect("utf-8"),
            "pidr",
        ],
    );
    let pid = wait_for_pid(&file);
    assert_eq!(pid, state_pid(&state, "pidr"), "the state's pid");
    let (ok, _, err) = rt(&state, &["kill", "pidr", "KILL"]);
    assert!(ok, "kill: {err}");
    let status = run.wait().expect("run");
    assert_eq!(status.code(), Some(137), "run ends with the init");
}
