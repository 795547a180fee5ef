//! The OCI runtime, tested by what the container's process sees: `gantry-checker` (built
//! static by the test) runs as the container's program and reports its namespaces,
//! capabilities, mounts and so on. Differential: the same bundle under runc must give the
//! same report. Needs root and runc (`.ci/deps` installs it; CI runs as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{checker, mounts_under};

use serde_json::Value;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
}

/// A bundle made by `runc spec`, terminal off, running the checker.
fn bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let b = dir.join("bundle");
    let bin = b.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy(checker(), b.join("rootfs/checker")).expect("checker");
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

/// `<runtime> run` of the bundle; returns (exit ok, stdout, stderr).
fn run_with(runtime: &str, state: &Path, bundle: &Path, id: &str) -> (bool, String, String) {
    let out = Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .expect("runtime");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(runtime: &str, bundle: &Path, state: &Path, id: &str) -> Value {
    let (ok, out, err) = run_with(runtime, state, bundle, id);
    assert!(ok, "{runtime} run failed: {err}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{runtime}: report is not JSON ({e}): {out}"))
}

/// The report's `status` without `SigIgn`: runc leaves signal 32 ignored in the container
/// (a leftover of its Go runtime), which this runtime does not; compared on its own.
fn status_of_report(r: &Value) -> Value {
    let mut s = r["status"].clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("SigIgn");
    }
    s
}

/// (succeeded, stdout, stderr) of a runtime command.
type Outcome = (bool, String, String);
/// Breaks a good bundle in one way.
type Spoil = Box<dyn Fn(&Path)>;

const OURS: &str = env!("CARGO_BIN_EXE_gantry-runtime");

#[test]
fn the_container_sees_the_same_as_under_runc_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |_| {});
    let ours = report(OURS, &b, &dir.path().join("state-ours"), "diff-ours");
    let runc = report("runc", &b, &dir.path().join("state-runc"), "diff-runc");
    for field in [
        "pid",
        "uid",
        "gid",
        "groups",
        "umask",
        "hostname",
        "cwd",
        "status",
        "rlimits",
        "masked",
        "readonly",
        "dev",
        "env",
        "unshare_user",
    ] {
        let (a, b) = if field == "status" {
            (status_of_report(&ours), status_of_report(&runc))
        } else {
            (ours[field].clone(), runc[field].clone())
        };
        assert_eq!(
            a, b,
            "field {field}: ours {} runc {}",
            ours[field], runc[field]
        );
    }
    // Mount points: the same, except the cgroup tree, which runc builds from the host's
    // v1 hierarchies and this runtime mounts only where cgroup v2 is there.
    let points = |r: &Value| {
        let mut v: Vec<(String, String)> = r["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| {
                (
                    m[0].as_str().unwrap_or("").to_owned(),
                    m[1].as_str().unwrap_or("").to_owned(),
                )
            })
            .filter(|(p, _)| !p.starts_with("/sys/fs/cgroup"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(points(&ours), points(&runc));
    // Namespaces are new ones in both (inode numbers differ between the two containers,
    // but each differs from the host's), and the user namespace is the host's.
    let host = |ns: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .expect("host ns")
            .ino()
    };
    let config: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).expect("config"))
            .expect("json");
    let asked: Vec<&str> = config["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| match n["type"].as_str().unwrap_or("") {
            "mount" => "mnt",
            "network" => "net",
            other => other,
        })
        .collect();
    assert!(asked.len() >= 5, "{asked:?}");
    for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        if !asked.contains(&ns) {
            assert_eq!(
                ours["namespaces"][ns], runc["namespaces"][ns],
                "{ns} is shared with the host by both"
            );
            continue;
        }
        assert_ne!(
            ours["namespaces"][ns].as_u64(),
            Some(host(ns)),
            "{ns} namespace is the host's"
        );
    }
    assert_eq!(ours["namespaces"]["user"].as_u64(), Some(host("user")));
    // What runc spec asks for, seen from inside.
    assert_eq!(ours["pid"], 1);
    assert_eq!(ours["hostname"], "runc");
    assert_eq!(ours["status"]["NoNewPrivs"], "1");
    // runc spec's capabilities: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
    assert_eq!(ours["status"]["CapBnd"], "0000000020000420");
    assert_eq!(ours["masked"]["/proc/keys"], "read 0 bytes");
    assert_eq!(ours["masked"]["/sys/firmware"], "dir with 0 entries");
    assert_eq!(ours["readonly"]["/proc/sys"], "EROFS");
    assert_eq!(ours["rlimits"]["nofile"], serde_json::json!([1024, 1024]));
}

#[test]
fn user_groups_cwd_umask_capabilities_and_rlimits_are_applied_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["user"] =
            serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [20, 30], "umask": 63});
        c["process"]["cwd"] = "/bin".into();
        c["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        });
        c["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048}]);
        c["hostname"] = "checked".into();
    });
    let ours = report(OURS, &b, &dir.path().join("state-ours"), "apply-ours");
    let runc = report("runc", &b, &dir.path().join("state-runc"), "apply-runc");
    assert_eq!(
        (ours["uid"].as_u64(), ours["gid"].as_u64()),
        (Some(1000), Some(1001))
    );
    assert_eq!(ours["groups"], serde_json::json!([20, 30]));
    assert_eq!(ours["cwd"], "/bin");
    assert_eq!(ours["umask"], "0077");
    assert_eq!(ours["hostname"], "checked");
    assert_eq!(ours["rlimits"]["nofile"], serde_json::json!([512, 2048]));
    // Non-root after exec: only the ambient capability survives, as the kernel rules say.
    let bit = |n: u32| format!("{:016x}", 1u64 << n);
    assert_eq!(ours["status"]["CapAmb"], bit(10));
    assert_eq!(ours["status"]["CapEff"], bit(10));
    assert_eq!(
        ours["status"]["CapBnd"],
        format!("{:016x}", (1u64 << 0) | (1 << 10) | (1 << 5))
    );
    for field in [
        "uid", "gid", "groups", "cwd", "umask", "hostname", "rlimits", "status",
    ] {
        let (a, b) = if field == "status" {
            (status_of_report(&ours), status_of_report(&runc))
        } else {
            (ours[field].clone(), runc[field].clone())
        };
        assert_eq!(a, b, "field {field}");
    }
}

#[test]
fn create_start_state_kill_delete_follow_the_lifecycle_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "60"]);
    });
    let state = dir.path().join("state");
    let rt = |args: &[&str]| {
        let out = Command::new(OURS)
            .arg("--root")
            .arg(&state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The init inherits stdio of `create`: read nothing from it there.
        let out = out.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let status_of = |rt: &dyn Fn(&[&str]) -> Outcome| {
        let (ok, out, err) = rt(&["state", "life"]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).expect("state json");
        v["status"].as_str().unwrap_or("").to_owned()
    };
    let create = Command::new(OURS)
        .arg("--root")
        .arg(&state)
        .args(["create", "--bundle"])
        .arg(&b)
        .arg("life")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("create");
    assert!(create.success());
    assert_eq!(status_of(&rt), "created");
    let (ok, _, err) = rt(&["create", "--bundle", b.to_str().expect("utf-8"), "life"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = rt(&["delete", "life"]);
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = rt(&["start", "life"]);
    assert!(ok, "{err}");
    assert_eq!(status_of(&rt), "running");
    let (ok, _, err) = rt(&["start", "life"]);
    assert!(!ok && err.contains("only a created container"), "{err}");
    // exec: same namespaces and security as the container's process, another pid.
    let (ok, out, err) = rt(&["exec", "life", "-e", "EXTRA=2", "/checker"]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let st: Value = serde_json::from_str(&rt(&["state", "life"]).1).expect("state");
    let init_pid = st["pid"].as_i64().expect("pid");
    for ns in ["mnt", "pid", "net", "uts", "ipc"] {
        use std::os::unix::fs::MetadataExt;
        let init_ns = std::fs::metadata(format!("/proc/{init_pid}/ns/{ns}"))
            .expect("ns")
            .ino();
        assert_eq!(
            r["namespaces"][ns].as_u64(),
            Some(init_ns),
            "exec joined {ns}"
        );
    }
    assert_ne!(r["pid"], 1);
    assert_eq!(r["status"]["CapBnd"], "0000000020000420");
    assert_eq!(r["status"]["NoNewPrivs"], "1");
    assert!(r["env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|e| e == "EXTRA=2"));
    let code = Command::new(OURS)
        .arg("--root")
        .arg(&state)
        .args(["exec", "life", "/bin/busybox", "sh", "-c", "exit 7"])
        .status()
        .expect("exec")
        .code();
    assert_eq!(code, Some(7), "exec exits with the process's status");
    let (ok, _, err) = rt(&["kill", "life", "KILL"]);
    assert!(ok, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_of(&rt) != "stopped" {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not stop after SIGKILL"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, _, err) = rt(&["delete", "life"]);
    assert!(ok, "{err}");
    let (ok, _, err) = rt(&["state", "life"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[test]
fn bad_bundles_are_refused_clearly_and_leave_nothing_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "norootfs",
            Box::new(|b: &Path| std::fs::remove_dir_all(b.join("rootfs")).expect("rm")),
            "root.path",
        ),
        (
            "badjson",
            Box::new(|b: &Path| std::fs::write(b.join("config.json"), "{ not json").expect("w")),
            "config.json",
        ),
        (
            "unknownns",
            Box::new(|b: &Path| {
                edit_config(b, |c| c["linux"]["namespaces"][0]["type"] = "bogus".into())
            }),
            "config.json",
        ),
        (
            "dotdot",
            Box::new(|b: &Path| {
                edit_config(b, |c| {
                    c["mounts"][0]["destination"] = "/proc/../../etc".into()
                })
            }),
            "\"..\"",
        ),
        (
            "seccomp",
            Box::new(|b: &Path| {
                edit_config(b, |c| {
                    c["linux"]["seccomp"] = serde_json::json!({
                        "defaultAction": "SCMP_ACT_ALLOW",
                        "architectures": ["SCMP_ARCH_AARCH64"],
                    })
                })
            }),
            "SCMP_ARCH_X86_64",
        ),
        (
            "badexec",
            Box::new(|b: &Path| {
                edit_config(b, |c| {
                    c["process"]["args"] = serde_json::json!(["/nonexistent"])
                })
            }),
            "",
        ),
    ];
    let mounts_before = mounts_under(dir.path());
    for (name, spoil, expect) in cases {
        let case_dir = dir.path().join(name);
        std::fs::create_dir_all(&case_dir).expect("dir");
        let b = bundle(&case_dir, |_| {});
        spoil(&b);
        let (ok, _, err) = run_with(OURS, &state, &b, name);
        assert!(!ok, "{name}: a bad bundle ran");
        assert!(err.contains(expect), "{name}: {err}");
        if name != "badexec" {
            assert!(
                err.contains(&b.display().to_string()),
                "{name}: the error names the bundle: {err}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(&state)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{name}: state left behind: {left:?}");
    }
    assert_eq!(
        mounts_before,
        mounts_under(dir.path()),
        "no mount leaked to the host"
    );
}

fn edit_config(b: &Path, f: impl FnOnce(&mut Value)) {
    let path = b.join("config.json");
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    f(&mut c);
    std::fs::write(&path, serde_json::to_vec(&c).expect("json")).expect("write");
}

#[test]
fn dockers_default_seccomp_profile_blocks_what_it_should_like_runc_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    // runc spec's capabilities (AUDIT_WRITE, KILL, NET_BIND_SERVICE): no CAP_SYS_ADMIN.
    let caps = (1u64 << 29) | (1 << 5) | (1 << 10);
    let profile = gantry_runtime::container::seccomp::Profile::docker_default(caps).to_oci_json();
    for nnp in [true, false] {
        let b = bundle(&dir.path().join(format!("nnp-{nnp}")), |c| {
            c["linux"]["seccomp"] = profile.clone();
            c["process"]["noNewPrivileges"] = nnp.into();
        });
        let ours = report(
            OURS,
            &b,
            &dir.path().join("state-ours"),
            &format!("sc-ours-{nnp}"),
        );
        let runc = report(
            "runc",
            &b,
            &dir.path().join("state-runc"),
            &format!("sc-runc-{nnp}"),
        );
        assert_eq!(ours["status"]["Seccomp"], "2", "filter mode");
        assert_eq!(
            ours["unshare_user"], "EPERM",
            "creating a user namespace is refused"
        );
        assert_eq!(
            ours["clone3"], "ENOSYS",
            "clone3 answers ENOSYS so libcs fall back to clone"
        );
        for field in ["status", "unshare_user", "clone3", "uid", "hostname", "dev"] {
            let (a, b) = if field == "status" {
                (status_of_report(&ours), status_of_report(&runc))
            } else {
                (ours[field].clone(), runc[field].clone())
            };
            assert_eq!(a, b, "nnp={nnp} field {field}");
        }
    }
    // The x32 ABI is refused by our filter (libseccomp kills the process instead).
    let b = bundle(&dir.path().join("x32"), |c| {
        c["linux"]["seccomp"] = profile.clone();
        c["process"]["args"] = serde_json::json!(["/checker", "--probe-x32"]);
    });
    let ours = report(OURS, &b, &dir.path().join("state-ours"), "sc-x32");
    assert_eq!(ours["x32_getpid"], "EPERM");
}

#[test]
fn limits_need_cgroup_v2_or_an_explicit_opt_out_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let b = bundle(dir.path(), |c| {
        c["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 67108864 });
    });
    if gantry_runtime::container::cgroup::is_v2(Path::new("/sys/fs/cgroup")) {
        return; // a v2 host applies them; the VM tests cover that
    }
    let (ok, _, err) = run_with(OURS, &state, &b, "limits");
    assert!(!ok);
    assert!(
        err.contains("not a cgroup v2 hierarchy") && err.contains("--no-cgroups"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0), 0);
    let out = Command::new(OURS)
        .arg("--root")
        .arg(&state)
        .args(["--no-cgroups", "run", "--bundle"])
        .arg(&b)
        .arg("limits")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_container_gets_its_own_cgroup_as_its_cgroup_namespace_root_as_root() {
    require_root();
    // The hybrid host's v2 mount has no controllers, but cgroups, cgroup.procs, cgroup
    // namespaces and cgroup.kill work there all the same.
    let unified = Path::new("/sys/fs/cgroup/unified");
    let root = if gantry_runtime::container::cgroup::is_v2(Path::new("/sys/fs/cgroup")) {
        Path::new("/sys/fs/cgroup")
    } else {
        assert!(
            gantry_runtime::container::cgroup::is_v2(unified),
            "no cgroup v2 mount on this host"
        );
        unified
    };
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "60"]);
        let ns = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
        if !ns.iter().any(|n| n["type"] == "cgroup") {
            ns.push(serde_json::json!({"type": "cgroup"}));
        }
        // CAP_MKNOD is allowed here: the device rules of the cgroup keep it harmless.
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .expect("caps")
                .push("CAP_MKNOD".into());
        }
    });
    let state = dir.path().join("state");
    let rt = |args: &[&str], quiet: bool| {
        let mut c = Command::new(OURS);
        c.arg("--root")
            .arg(&state)
            .arg("--cgroup-root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null());
        if quiet {
            c.stdout(Stdio::null()).stderr(Stdio::null());
            let ok = c.status().expect("runtime").success();
            (ok, String::new())
        } else {
            let out = c.output().expect("runtime");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    assert!(
        rt(
            &["create", "--bundle", b.to_str().expect("utf-8"), "cg"],
            true
        )
        .0
    );
    let cg = root.join("gantry/cg");
    // However the test ends, the container and its cgroup go.
    struct Cleanup<'a>(&'a Path, &'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = Command::new(OURS)
                .arg("--root")
                .arg(self.0)
                .arg("--cgroup-root")
                .arg(self.1)
                .args(["delete", "--force", "cg"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _cleanup = Cleanup(&state, root);
    let st: Value = serde_json::from_str(&rt(&["state", "cg"], false).1).expect("state");
    let pid = st["pid"].as_i64().expect("pid");
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).expect("cgroup.procs");
    assert_eq!(procs.trim(), pid.to_string(), "the init is in its cgroup");
    assert_eq!(st["oomKills"], serde_json::json!(0));
    assert!(rt(&["start", "cg"], true).0);
    let (ok, out) = rt(&["exec", "cg", "/checker"], false);
    assert!(ok, "{out}");
    let r: Value = serde_json::from_str(out.trim()).expect("report");
    assert!(
        r["cgroup"]
            .as_str()
            .expect("cgroup")
            .lines()
            .any(|l| l == "0::/"),
        "the cgroup namespace is rooted at the container's cgroup: {}",
        r["cgroup"]
    );
    // Device rules: a node for a host disk can be made but not opened; /dev/zero opens.
    let (ok, out) = rt(
        &[
            "exec",
            "cg",
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/busybox mknod /dev/sda b 8 0 && /bin/busybox head -c1 /dev/sda",
        ],
        false,
    );
    assert!(!ok && out.contains("Operation not permitted"), "{out}");
    let (ok, out) = rt(
        &["exec", "cg", "/bin/busybox", "head", "-c1", "/dev/zero"],
        false,
    );
    assert!(ok, "{out}");
    let (ok, out) = rt(&["delete", "--force", "cg"], false);
    assert!(ok, "{out}");
    assert!(!cg.exists(), "the cgroup is removed on delete");
}

#[test]
fn nothing_of_the_runtime_leaks_into_the_container_as_root() {
    require_root();
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["linux"]["sysctl"] = serde_json::json!({ "net.ipv4.ip_forward": "1" });
    });
    let host_root = std::fs::File::open("/").expect("open /");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&host_root);
    let mut cmd = Command::new(OURS);
    cmd.arg("--root")
        .arg(dir.path().join("state"))
        .args(["run", "--bundle"])
        .arg(&b)
        .arg("leak")
        .stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; the child gets the host's / as fd 8, not
    // close-on-exec, as a careless caller might leave it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 8) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("report");
    let fds: Vec<&String> = r["fds"].as_object().expect("fds").keys().collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "only stdio reaches the container: {}",
        r["fds"]
    );
    // Nothing blocked, and only SIGPIPE ignored, which the checker's own Rust start-up does
    // (the runtime's dispositions stay behind; runc leaves signal 32 ignored).
    assert_eq!(r["status"]["SigBlk"], "0000000000000000");
    assert_eq!(r["status"]["SigIgn"], "0000000000001000");
    // The sysctl of the container's own network namespace took effect, before /proc/sys
    // became read-only.
    assert_eq!(r["readonly"]["/proc/sys"], "EROFS");
}

#[test]
fn a_host_wide_sysctl_and_cap_mknod_are_refused_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let b = bundle(&dir.path().join("a"), |c| {
        c["linux"]["sysctl"] = serde_json::json!({ "kernel.core_pattern": "|/evil" });
    });
    let (ok, _, err) = run_with(OURS, &state, &b, "sysctl");
    assert!(!ok);
    assert!(
        err.contains("kernel.core_pattern is not in a separate kernel namespace"),
        "{err}"
    );
    let b = bundle(&dir.path().join("b"), |c| {
        c["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_MKNOD"]);
    });
    let (ok, _, err) = run_with(OURS, &state, &b, "mknod");
    assert!(!ok);
    assert!(err.contains("CAP_MKNOD"), "{err}");
}

#[test]
fn run_passes_signals_on_to_the_container_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        // busybox sh as PID 1 ignores SIGTERM unless it traps it.
        c["process"]["args"] = serde_json::json!([
            "/bin/busybox",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo trapped; while true; do /bin/busybox sleep 0.1; done"
        ]);
    });
    let mut child = Command::new(OURS)
        .arg("--root")
        .arg(dir.path().join("state"))
        .args(["run", "--bundle"])
        .arg(&b)
        .arg("sig")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run");
    // Once the container says its trap is set, signal the runtime, not the container.
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "trapped\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(42),
        "the container got SIGTERM and its exit code came back"
    );
}

#[test]
fn container_output_goes_to_a_timestamped_log_file_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["args"] = serde_json::json!([
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello; echo oops >&2; printf 'no newline'"
        ]);
    });
    let log = dir.path().join("c.log");
    let out = Command::new(OURS)
        .arg("--root")
        .arg(dir.path().join("state"))
        .args(["run", "--bundle"])
        .arg(&b)
        .arg("--container-log")
        .arg(&log)
        .arg("logged")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "the output went to the log, not to the caller"
    );
    // The logger writes the last record when the pipes close; wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 3 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log incomplete: {text:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut records: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let (time, stream, tag, msg) = (
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
            );
            assert!(time.ends_with('Z') && time.contains('T'), "{l}");
            assert_eq!(tag, "F", "{l}");
            (stream.to_owned(), msg.to_owned())
        })
        .collect();
    records.sort();
    assert_eq!(
        records,
        [
            ("stderr".to_owned(), "oops".to_owned()),
            ("stdout".to_owned(), "hello".to_owned()),
            ("stdout".to_owned(), "no newline".to_owned()),
        ]
    );
}
