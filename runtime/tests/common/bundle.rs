//! OCI bundles for the runtime tests: made by `runc spec`, running `gantry-checker`, and
//! run with either runtime's command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The runtime under test.
pub const OURS: &str = env!("CARGO_BIN_EXE_gantry-runtime");

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
}

/// A bundle made by `runc spec` in `dir/bundle`, terminal off, running the checker, with
/// busybox in `/bin`; `edit` changes config.json.
pub fn bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let b = dir.join("bundle");
    let bin = b.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy(super::checker(), b.join("rootfs/checker")).expect("checker");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static");
    let out = Command::new("runc")
        .arg("spec")
        .current_dir(&b)
        .output()
        .expect("runc spec");
    assert!(
        out.status.success(),
        "runc spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = b.join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/checker", "--probe-seccomp"]);
    config["process"]["env"] = serde_json::json!(["PATH=/bin", "CHECK=1"]);
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
    b
}

/// Changes the bundle's config.json.
pub fn edit_config(b: &Path, f: impl FnOnce(&mut Value)) {
    let path = b.join("config.json");
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    f(&mut c);
    std::fs::write(&path, serde_json::to_vec(&c).expect("json")).expect("write");
}

/// `<runtime> [--root state] <args>`; returns (exit ok, stdout, stderr).
pub fn runtime(runtime: &str, state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runtime");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `<runtime> run` of the bundle; returns (exit ok, stdout, stderr).
pub fn run_with(runtime: &str, state: &Path, bundle: &Path, id: &str) -> (bool, String, String) {
    let b = bundle.to_str().expect("utf-8 path");
    self::runtime(runtime, state, &["run", "--bundle", b, id])
}

/// The checker's report from a `run` of the bundle.
pub fn report(runtime: &str, bundle: &Path, state: &Path, id: &str) -> Value {
    let (ok, out, err) = run_with(runtime, state, bundle, id);
    assert!(ok, "{runtime} run failed: {err}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{runtime}: report is not JSON ({e}): {out}"))
}

/// The inode of the test process's own namespace `ns` (`mnt`, `user`, …).
pub fn host_ns(ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{ns}"))
        .expect("host ns")
        .ino()
}

/// A cgroup2 mount of its own in `dir` (the host is hybrid v1: `--cgroup-root` on it gives
/// the runtime device rules and `CLONE_INTO_CGROUP`); unmounted on drop.
pub struct Cgroup2(pub PathBuf);

impl Cgroup2 {
    pub fn mount(dir: &Path) -> Cgroup2 {
        let mnt = dir.join("cgroup2");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(&mnt)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount -t cgroup2 on {}", mnt.display());
        Cgroup2(mnt)
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `<runtime> --root state <args>` with stdout and stderr in files of `dir` (a container's
/// init inherits them, and would hold a pipe open): returns (exit ok, stdout and stderr).
pub fn runtime_to_files(runtime: &str, state: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = dir.join("runtime.out");
    let file = std::fs::File::create(&out).expect("output file");
    let ok = Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .status()
        .expect("runtime")
        .success();
    (ok, std::fs::read_to_string(&out).unwrap_or_default())
}
