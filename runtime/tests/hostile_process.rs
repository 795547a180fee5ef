//! Hostile-image suite, the process settings: bundles whose working directory or user
//! lookup aim at the host (in the style of runc's and crun's CVE regression tests). Each
//! test says what it attacks and what it must see. Needs root (CI runs as root) and runc
//! (for `runc spec`); busybox in the rootfs is the container's program.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use common::bundle::Cgroup2;

const OURS: &str = env!("CARGO_BIN_EXE_gantry-runtime");

/// What the host's marker file holds; no file of the container's has it.
const MARKER: &str = "host-marker-7f3a9c";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
}

/// The shared fixture's bundle (`runc spec`, busybox in `/bin`), running `script` with
/// busybox's sh; `edit` changes config.json.
fn bundle(dir: &Path, script: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let b = common::bundle::bundle(dir, |config| {
        config["process"]["args"] = serde_json::json!(["/bin/busybox", "sh", "-c", script]);
        config["process"]["env"] = serde_json::json!(["PATH=/bin"]);
        edit(config);
    });
    std::os::unix::fs::symlink("busybox", b.join("rootfs/bin/sh")).expect("sh");
    b
}

fn set_cwd(b: &Path, cwd: &str) {
    let path = b.join("config.json");
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    c["process"]["cwd"] = cwd.into();
    std::fs::write(&path, serde_json::to_vec(&c).expect("json")).expect("write");
}

/// Tries to read the host's marker from wherever the process's cwd is: the file itself
/// and, one level up at a time, the marker's name at every level up to the host's root
/// (so a cwd on a host mount finds it by `../../..`).
fn walk_script(marker_dir: &Path) -> String {
    let name = marker_dir.join("marker");
    let rel = name.strip_prefix("/").expect("absolute temp dir");
    format!(
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do \
           /bin/busybox cat marker {rel} 2>/dev/null; cd .. 2>/dev/null; \
         done; /bin/busybox cat {abs} 2>/dev/null; exit 0",
        rel = rel.display(),
        abs = name.display()
    )
}

/// `create` and `start` without their output: the container's init inherits it and would
/// hold the pipe open.
fn rt_quiet(state: &Path, cgroup_root: &Path, args: &[&str]) -> bool {
    Command::new(OURS)
        .arg("--root")
        .arg(state)
        .arg("--cgroup-root")
        .arg(cgroup_root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runtime")
        .success()
}

fn rt(state: &Path, cgroup_root: &Path, args: &[&str]) -> (bool, String, String) {
    let cgroup_root = cgroup_root.to_str().expect("utf-8");
    let all: Vec<&str> = ["--cgroup-root", cgroup_root]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    common::bundle::runtime(OURS, state, &all)
}

/// Deletes the container however the test ends.
struct Delete<'a>(&'a Path, &'a Path, String);

impl Drop for Delete<'_> {
    fn drop(&mut self) {
        let _ = rt(self.0, self.1, &["delete", "--force", &self.2]);
    }
}

/// Attacks: the working directory through a descriptor the init holds before `execve`
/// (CVE-2024-21626): `process.cwd = /proc/self/fd/N`, N from 3 to 20, with the init
/// cloned into its cgroup (`clone3` + `CLONE_INTO_CGROUP` opens the host's cgroup
/// directory), then `cd ..` all the way up looking for a marker file of the host's.
/// Must see: each run refused with an error naming the working directory, or run with
/// the marker out of reach; never the marker.
#[test]
fn cwd_through_a_leaked_descriptor_never_reaches_the_host_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("marker"), MARKER).expect("marker");
    let cg = Cgroup2::mount(dir.path());
    let state = dir.path().join("state");
    let b = bundle(dir.path(), &walk_script(dir.path()), |_| {});
    for n in 3..=20 {
        let cwd = format!("/proc/self/fd/{n}");
        set_cwd(&b, &cwd);
        let id = format!("cwd{n}");
        let _delete = Delete(&state, &cg.0, id.clone());
        let (ok, out, err) = rt(
            &state,
            &cg.0,
            &["run", "--bundle", b.to_str().expect("utf-8"), &id],
        );
        assert!(
            !out.contains(MARKER) && !err.contains(MARKER),
            "cwd {cwd}: the container read the host's marker: {out}"
        );
        assert!(
            ok || err.contains(&cwd),
            "cwd {cwd}: refused without naming the working directory: {err}"
        );
    }
}

/// Attacks: `exec --cwd /proc/self/fd/N` into a running container, N from 3 to 20: the
/// exec helper holds the container's namespace descriptors and whatever the runtime had
/// open when it forked. Must see: each exec refused naming the working directory, or
/// run with the host's marker out of reach.
#[test]
fn exec_cwd_through_a_leaked_descriptor_never_reaches_the_host_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("marker"), MARKER).expect("marker");
    let cg = Cgroup2::mount(dir.path());
    let state = dir.path().join("state");
    let b = bundle(dir.path(), "exec /bin/busybox sleep 60", |_| {});
    let _delete = Delete(&state, &cg.0, "target".into());
    assert!(
        rt_quiet(
            &state,
            &cg.0,
            &["create", "--bundle", b.to_str().expect("utf-8"), "target"],
        ),
        "create"
    );
    assert!(rt_quiet(&state, &cg.0, &["start", "target"]), "start");
    let script = walk_script(dir.path());
    for n in 3..=20 {
        let cwd = format!("/proc/self/fd/{n}");
        let (ok, out, err) = rt(
            &state,
            &cg.0,
            &[
                "exec",
                "--cwd",
                &cwd,
                "target",
                "/bin/busybox",
                "sh",
                "-c",
                &script,
            ],
        );
        assert!(
            !out.contains(MARKER) && !err.contains(MARKER),
            "exec cwd {cwd}: the process read the host's marker: {out}"
        );
        assert!(
            ok || err.contains(&cwd),
            "exec cwd {cwd}: refused without naming the working directory: {err}"
        );
    }
}
