//! OCI hooks, driven through the runtime's command line as an engine does (`create`,
//! `state`, `start`, `delete`): each kind at its point of the lifecycle, in the namespaces
//! the spec names, with the state on stdin; failing hooks with the spec's consequences; a
//! hanging hook killed at its timeout. Needs root (CI runs as root) and runc (for
//! `runc spec`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::bundle::{require_root, runtime_to_files, OURS};

/// A hook that runs `script` with the host's busybox (the runtime's file system), or the
/// container's when `in_container` (a `startContainer` hook resolves in the container).
fn hook(script: &str, timeout: Option<u64>) -> Value {
    let mut h = json!({
        "path": "/bin/busybox",
        "args": ["sh", "-c", script],
        "env": ["PATH=/bin:/usr/bin", "HOOK_ENV=given"],
    });
    if let Some(t) = timeout {
        h["timeout"] = t.into();
    }
    h
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    bundle: PathBuf,
    state: PathBuf,
    /// Where the hooks of the runtime (and `createContainer`) write: the bundle's root,
    /// whose `/order` the container's hooks and program append to as well.
    rootfs: PathBuf,
}

impl Setup {
    fn new(edit: impl FnOnce(&mut Value, &Path)) -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().to_owned();
        let rootfs = path.join("bundle/rootfs");
        let bundle = common::bundle::bundle(&path, |c| {
            c["annotations"] = json!({"org.example.test": "hooks"});
            // The container's hooks and program write /order.
            c["root"]["readonly"] = false.into();
            edit(c, &rootfs);
        });
        Setup {
            state: path.join("state"),
            dir: path,
            bundle,
            rootfs,
            _dir: dir,
        }
    }

    fn rt(&self, args: &[&str]) -> (bool, String) {
        runtime_to_files(OURS, &self.state, &self.dir, args)
    }

    /// `create`, its output in a file of its own: the init keeps the runtime's stderr.
    fn create(&self, id: &str) -> (bool, String) {
        let out = self.dir.join("create");
        std::fs::create_dir_all(&out).expect("mkdir");
        let b = self.bundle.to_str().expect("utf-8");
        runtime_to_files(OURS, &self.state, &out, &["create", "--bundle", b, id])
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.rootfs.join(name)).unwrap_or_default()
    }

    fn json(&self, name: &str) -> Value {
        let text = self.read(name);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text:?}"))
    }

    fn wait_stopped(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out) = self.rt(&["state", id]);
            assert!(ok, "state: {out}");
            if out.contains("\"stopped\"") {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never stopped: {out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for id in ["hooks", "fail"] {
            let _ = self.rt(&["delete", "--force", id]);
        }
    }
}

/// Every kind, each writing its state and its mount namespace and appending its name to
/// `/order`. Must see: the `create` hooks have run when `create` returns and the program
/// has not; the runtime's hooks in the runtime's mount namespace, `createContainer` and
/// `startContainer` in the container's; `startContainer` before the program, `poststart`
/// once it runs, `poststop` after `delete`; each state with the id, the bundle, the
/// annotations, the status of its point and the pid `state` reports.
#[test]
fn every_hook_kind_runs_at_its_point_in_its_namespaces_with_the_state_as_root() {
    require_root();
    let s = Setup::new(|c, rootfs| {
        let host = |kind: &str| {
            hook(
                &format!(
                    "cat > {r}/{kind}.json; readlink /proc/self/ns/mnt > {r}/{kind}.mnt; \
                     echo \"$HOOK_ENV\" > {r}/{kind}.env; echo {kind} >> {r}/order",
                    r = rootfs.display()
                ),
                Some(10),
            )
        };
        c["hooks"] = json!({
            "prestart": [host("prestart")],
            "createRuntime": [host("createRuntime")],
            "createContainer": [host("createContainer")],
            // Resolved in the container: its /bin/busybox, its /order.
            "startContainer": [hook(
                "cat > /startContainer.json; readlink /proc/self/ns/mnt > /startContainer.mnt; \
                 echo startContainer >> /order",
                Some(10),
            )],
            "poststart": [host("poststart")],
            "poststop": [host("poststop")],
        });
        c["process"]["args"] = json!(["/bin/busybox", "sh", "-c", "echo program >> /order"]);
    });
    let (ok, out) = s.create("hooks");
    assert!(ok, "create: {out}");
    assert_eq!(
        s.read("order"),
        "prestart\ncreateRuntime\ncreateContainer\n",
        "after create"
    );
    let (ok, out) = s.rt(&["state", "hooks"]);
    assert!(ok, "state: {out}");
    let st: Value = serde_json::from_str(&out).expect("state JSON");
    let pid = st["pid"].as_i64().expect("pid");

    let (ok, out) = s.rt(&["start", "hooks"]);
    assert!(ok, "start: {out}");
    s.wait_stopped("hooks");
    let (ok, out) = s.rt(&["delete", "hooks"]);
    assert!(ok, "delete: {out}");

    let order = s.read("order");
    let lines: Vec<&str> = order.lines().collect();
    // poststart runs once the program has been exec'd; the two may write in either order.
    let without: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| *l != "poststart")
        .collect();
    assert_eq!(
        without,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "program",
            "poststop"
        ],
        "{order}; create's output: {}",
        std::fs::read_to_string(s.dir.join("create/runtime.out")).unwrap_or_default()
    );
    let poststart = lines
        .iter()
        .position(|l| *l == "poststart")
        .expect("poststart ran");
    assert!(poststart > 3 && poststart < lines.len() - 1, "{order}");

    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").expect("ns");
    let host_mnt = host_mnt.to_string_lossy();
    for kind in ["prestart", "createRuntime", "poststart", "poststop"] {
        assert_eq!(
            s.read(&format!("{kind}.mnt")).trim(),
            host_mnt,
            "{kind} runs in the runtime's mount namespace"
        );
        assert_eq!(
            s.read(&format!("{kind}.env")).trim(),
            "given",
            "{kind} gets its env"
        );
    }
    for kind in ["createContainer", "startContainer"] {
        let mnt = s.read(&format!("{kind}.mnt"));
        assert!(
            !mnt.trim().is_empty() && mnt.trim() != host_mnt,
            "{kind} runs in the container's mount namespace: {mnt}"
        );
    }
    let bundle = s.bundle.to_str().expect("utf-8");
    for (kind, status) in [
        ("prestart", "created"),
        ("createRuntime", "created"),
        ("createContainer", "created"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let st = s.json(&format!("{kind}.json"));
        assert_eq!(st["id"], "hooks", "{kind}: {st}");
        assert_eq!(st["status"], status, "{kind}: {st}");
        assert_eq!(st["bundle"], bundle, "{kind}: {st}");
        assert_eq!(
            st["annotations"]["org.example.test"], "hooks",
            "{kind}: {st}"
        );
        assert!(st["ociVersion"].is_string(), "{kind}: {st}");
        if kind != "poststop" {
            assert_eq!(
                st["pid"].as_i64(),
                Some(pid),
                "{kind}: the init's pid as the host sees it: {st}"
            );
        }
    }
}

/// A failing hook of each kind of `create` (prestart, createRuntime, createContainer).
/// Must see: `create` fails naming the hook and how it ended; no container is left
/// (`state` finds none); the program never ran; `poststop` ran (the spec's lifecycle goes
/// on at destroy) and the hooks after the failing one did not.
#[test]
fn a_failing_hook_of_create_fails_it_and_leaves_nothing_but_poststop_runs_as_root() {
    require_root();
    for (i, kind) in ["prestart", "createRuntime", "createContainer"]
        .into_iter()
        .enumerate()
    {
        let s = Setup::new(|c, rootfs| {
            let r = rootfs.display();
            let mut hooks = json!({
                "prestart": [hook(&format!("echo prestart >> {r}/order"), None)],
                "createRuntime": [hook(&format!("echo createRuntime >> {r}/order"), None)],
                "createContainer": [hook(&format!("echo createContainer >> {r}/order"), None)],
                "poststop": [hook(&format!("echo poststop >> {r}/order"), None)],
            });
            hooks[kind] = json!([
                hook(&format!("echo {kind}-fails >> {r}/order; exit 3"), None),
                hook(&format!("echo {kind}-second >> {r}/order"), None),
            ]);
            c["hooks"] = hooks;
            c["process"]["args"] = json!(["/bin/busybox", "sh", "-c", "echo program >> /order"]);
        });
        let (ok, out) = s.create("fail");
        assert!(!ok, "{kind}: create must fail");
        assert!(
            out.contains(&format!("hooks.{kind}[0]")) && out.contains("exited with status 3"),
            "{kind}: {out}"
        );
        let (ok, out) = s.rt(&["state", "fail"]);
        assert!(!ok, "{kind}: no container may be left: {out}");
        let before = ["prestart", "createRuntime", "createContainer"][..i].join("\n");
        let want = if before.is_empty() {
            format!("{kind}-fails\npoststop\n")
        } else {
            format!("{before}\n{kind}-fails\npoststop\n")
        };
        assert_eq!(s.read("order"), want, "{kind}");
    }
}

/// A `createRuntime` hook that never ends, with a timeout of 1 s. Must see: `create`
/// fails within a few seconds naming the timeout, and the hook's process is gone.
#[test]
fn a_hanging_hook_is_killed_at_its_timeout_and_fails_create_as_root() {
    require_root();
    let s = Setup::new(|c, rootfs| {
        c["hooks"] = json!({
            "createRuntime": [hook(&format!("echo $$ > {}/hook.pid; exec sleep 600", rootfs.display()), Some(1))],
        });
    });
    let started = Instant::now();
    let (ok, out) = s.create("fail");
    let took = started.elapsed();
    assert!(!ok, "create must fail: {out}");
    assert!(
        out.contains("hooks.createRuntime[0]") && out.contains("timeout of 1 s"),
        "{out}"
    );
    assert!(took < Duration::from_secs(15), "create took {took:?}");
    let pid = s.read("hook.pid");
    let pid = pid.trim();
    assert!(!pid.is_empty(), "the hook ran");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the hook {pid} must be killed"
    );
}

/// Failing `poststart` and `poststop` hooks, each followed by one that works. Must see:
/// `start` and `delete` succeed with a warning naming the hook, and the hooks after the
/// failing one still run.
#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_lifecycle_goes_on_as_root() {
    require_root();
    let s = Setup::new(|c, rootfs| {
        let r = rootfs.display();
        c["hooks"] = json!({
            "poststart": [hook("exit 1", None), hook(&format!("echo poststart >> {r}/order"), None)],
            "poststop": [hook("exit 2", None), hook(&format!("echo poststop >> {r}/order"), None)],
        });
        c["process"]["args"] = json!(["/bin/busybox", "true"]);
    });
    let (ok, out) = s.create("hooks");
    assert!(ok, "create: {out}");
    let (ok, out) = s.rt(&["start", "hooks"]);
    assert!(ok, "start must succeed: {out}");
    assert!(
        out.contains("warning") && out.contains("hooks.poststart[0]"),
        "{out}"
    );
    s.wait_stopped("hooks");
    let (ok, out) = s.rt(&["delete", "hooks"]);
    assert!(ok, "delete must succeed: {out}");
    assert!(
        out.contains("warning") && out.contains("hooks.poststop[0]") && out.contains("status 2"),
        "{out}"
    );
    assert_eq!(s.read("order"), "poststart\npoststop\n");
    let (ok, _) = s.rt(&["state", "hooks"]);
    assert!(!ok, "the container is gone");
}

/// A failing `startContainer` hook. Must see: `start` fails naming the hook, the program
/// never runs, the container ends stopped, and the container's stderr says why too.
#[test]
fn a_failing_start_container_hook_stops_the_container_before_the_program_as_root() {
    require_root();
    let s = Setup::new(|c, _| {
        c["hooks"] = json!({ "startContainer": [hook("echo start-hook >> /order; exit 4", None)] });
        c["process"]["args"] = json!(["/bin/busybox", "sh", "-c", "echo program >> /order"]);
    });
    let (ok, out) = s.create("hooks");
    assert!(ok, "create: {out}");
    let (ok, out) = s.rt(&["start", "hooks"]);
    assert!(!ok, "start must fail");
    assert!(
        out.contains("hooks.startContainer[0]") && out.contains("status 4"),
        "{out}"
    );
    s.wait_stopped("hooks");
    assert_eq!(s.read("order"), "start-hook\n", "the program must not run");
    // The init's stderr is the one `create` had.
    let log = std::fs::read_to_string(s.dir.join("create/runtime.out")).unwrap_or_default();
    assert!(
        log.contains("hooks.startContainer[0]") && log.contains("status 4"),
        "{log}"
    );
}

/// A `startContainer` hook runs with the program's user and capabilities, not the init's
/// (as runc: after the privilege drop). Must see: the hook's uid is the bundle's user and
/// its effective capabilities are the program's.
#[test]
fn a_start_container_hook_runs_as_the_programs_user_with_its_capabilities_as_root() {
    require_root();
    let s = Setup::new(|c, _| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["hooks"] = json!({ "startContainer": [hook(
            "id -u > /out/hook.uid; grep CapEff /proc/self/status > /out/hook.caps",
            Some(10),
        )] });
        c["process"]["args"] = json!([
            "/bin/busybox",
            "sh",
            "-c",
            "grep CapEff /proc/self/status > /out/program.caps"
        ]);
    });
    let out = s.rootfs.join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let (ok, o) = s.create("hooks");
    assert!(ok, "create: {o}");
    let (ok, o) = s.rt(&["start", "hooks"]);
    assert!(ok, "start: {o}");
    s.wait_stopped("hooks");
    assert_eq!(s.read("out/hook.uid").trim(), "1000");
    let hook_caps = s.read("out/hook.caps");
    assert!(hook_caps.starts_with("CapEff:"), "{hook_caps:?}");
    assert_eq!(
        hook_caps,
        s.read("out/program.caps"),
        "the hook has the program's capabilities"
    );
    assert_ne!(
        hook_caps.trim(),
        "CapEff:\t000001ffffffffff",
        "not the init's full set"
    );
}
