//! `linux.cgroupsPath`, as containerd, CRI-O and podman (cgroupfs manager) set it: the
//! container's cgroup is made there, holds the init, and goes with `delete`; systemd's
//! `slice:prefix:name` form is refused by name. Needs root (CI runs as root) and runc (for
//! `runc spec`); cgroup v2 here is a bare `cgroup2` mount (`--cgroup-root`), the host being
//! hybrid.

mod common;

use serde_json::{json, Value};

use common::bundle::{require_root, runtime_to_files, Cgroup2, OURS};

#[test]
fn the_cgroup_is_made_at_cgroups_path_and_removed_by_delete_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let cg = Cgroup2::mount(dir.path());
    let root = cg.0.to_str().expect("utf-8").to_owned();
    let unique = format!("gantry-test-{}", std::process::id());
    for (i, (path, want)) in [
        (format!("/{unique}/pod/c1"), format!("{unique}/pod/c1")),
        (format!("{unique}/c2"), format!("gantry/{unique}/c2")),
    ]
    .into_iter()
    .enumerate()
    {
        let b = common::bundle::bundle(&dir.path().join(i.to_string()), |c| {
            c["process"]["args"] = json!(["/bin/busybox", "sleep", "60"]);
            c["linux"]["cgroupsPath"] = path.clone().into();
        });
        let state = dir.path().join("state");
        let id = "cgpath";
        let args = |a: &[&str]| -> Vec<String> {
            ["--cgroup-root", &root]
                .iter()
                .chain(a)
                .map(|s| s.to_string())
                .collect()
        };
        let run = |a: &[&str]| {
            let a = args(a);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            runtime_to_files(OURS, &state, dir.path(), &a)
        };
        let (ok, out) = run(&["create", "--bundle", b.to_str().expect("utf-8"), id]);
        assert!(ok, "create with cgroupsPath {path}: {out}");
        let (_, out) = run(&["state", id]);
        let st: Value = serde_json::from_str(&out).expect("state");
        let pid = st["pid"].as_i64().expect("pid");
        let procs = std::fs::read_to_string(cg.0.join(&want).join("cgroup.procs"))
            .unwrap_or_else(|e| panic!("{path}: no cgroup at {want}: {e}"));
        assert_eq!(
            procs.trim(),
            pid.to_string(),
            "{path}: the init is in {want}"
        );
        let (ok, out) = run(&["delete", "--force", id]);
        assert!(ok, "delete: {out}");
        assert!(
            !cg.0.join(&want).exists(),
            "{path}: {want} must go with delete"
        );
    }

    // A parent of other cgroups is not taken over: `/<unique>` now has `pod` below it.
    let b = common::bundle::bundle(&dir.path().join("parent"), |c| {
        c["linux"]["cgroupsPath"] = format!("/{unique}").into();
    });
    let state = dir.path().join("state");
    let a: Vec<String> = [
        "--cgroup-root",
        &root,
        "create",
        "--bundle",
        b.to_str().expect("utf-8"),
        "parent",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (ok, out) = runtime_to_files(OURS, &state, dir.path(), &a);
    assert!(!ok, "a cgroup with cgroups below it must not be reused");
    assert!(out.contains("cgroups below it"), "{out}");
    assert!(
        cg.0.join(&unique).join("pod").is_dir(),
        "what was there stays"
    );

    // cgroupfs directories go with rmdir, deepest first.
    for d in [
        cg.0.join(&unique).join("pod"),
        cg.0.join(&unique),
        cg.0.join("gantry").join(&unique),
    ] {
        let _ = std::fs::remove_dir(d);
    }
}

#[test]
fn systemd_cgroups_paths_are_refused_by_name_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = common::bundle::bundle(dir.path(), |c| {
        c["linux"]["cgroupsPath"] = "system.slice:crio:abc".into();
    });
    let state = dir.path().join("state");
    let (ok, out) = runtime_to_files(
        OURS,
        &state,
        dir.path(),
        &["create", "--bundle", b.to_str().expect("utf-8"), "sd"],
    );
    assert!(!ok, "must be refused");
    assert!(
        out.contains("linux.cgroupsPath") && out.contains("cgroupfs"),
        "{out}"
    );
}
