//! User namespaces, tested by what the container's process sees (`gantry-checker`) and
//! against runc: a bundle mapping container ids 0..65536 to host 100000.. gives the same
//! report under both; a user namespace joined by path (with `exec` into it); and maps the
//! kernel or runc would refuse, refused with the key and the reason, leaving nothing
//! behind. Needs root and runc.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::bundle::{bundle, edit_config, host_ns, report, require_root, run_with, runtime, OURS};
use common::mounts_under;
use serde_json::{json, Value};

const HOST_ROOT: u32 = 100_000;
const SIZE: u32 = 65_536;

/// A temporary directory the mapped root can walk through (the rootfs lies below it).
fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

/// Gives every file under `path` to the mapped root, as an image unpacked for the user
/// namespace would be.
fn chown_tree(path: &Path) {
    std::os::unix::fs::lchown(path, Some(HOST_ROOT), Some(HOST_ROOT)).expect("chown");
    if std::fs::symlink_metadata(path).expect("stat").is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&e.expect("entry").path());
        }
    }
}

/// Adds a new user namespace with the standard maps to a `runc spec` config.
fn with_userns(c: &mut Value) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "user"}));
    let maps = json!([{"containerID": 0, "hostID": HOST_ROOT, "size": SIZE}]);
    c["linux"]["uidMappings"] = maps.clone();
    c["linux"]["gidMappings"] = maps;
}

fn userns_bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let b = bundle(dir, |c| {
        with_userns(c);
        edit(c);
    });
    chown_tree(&b.join("rootfs"));
    b
}

#[test]
fn a_user_namespace_looks_the_same_as_under_runc_as_root() {
    require_root();
    let dir = tempdir();
    let b = userns_bundle(dir.path(), |_| {});
    let ours = report(OURS, &b, &dir.path().join("state-ours"), "userns-ours");
    let runc = report("runc", &b, &dir.path().join("state-runc"), "userns-runc");
    let map = json!([[0, HOST_ROOT, SIZE]]);
    assert_eq!(ours["uid_map"], map, "{ours}");
    assert_eq!(ours["gid_map"], map);
    assert_eq!(
        ours["setgroups"], "allow",
        "a privileged runtime leaves setgroups"
    );
    assert_eq!(
        (ours["uid"].as_u64(), ours["gid"].as_u64()),
        (Some(0), Some(0))
    );
    assert_ne!(ours["namespaces"]["user"].as_u64(), Some(host_ns("user")));
    assert_ne!(ours["namespaces"]["mnt"].as_u64(), Some(host_ns("mnt")));
    // runc spec's capabilities, now in the container's user namespace.
    assert_eq!(ours["status"]["CapBnd"], "0000000020000420");
    assert_eq!(ours["pid"], 1);
    assert_eq!(ours["hostname"], "runc");
    for field in [
        "uid_map",
        "gid_map",
        "setgroups",
        "uid",
        "gid",
        "groups",
        "pid",
        "hostname",
        "cwd",
        "umask",
        "rlimits",
        "masked",
        "readonly",
        "dev",
        "env",
        "unshare_user",
    ] {
        assert_eq!(
            ours[field], runc[field],
            "field {field}: ours {} runc {}",
            ours[field], runc[field]
        );
    }
    let status = |r: &Value| {
        let mut s = r["status"].clone();
        // runc leaves signal 32 ignored (its Go runtime); see oci.rs.
        s.as_object_mut().expect("status").remove("SigIgn");
        s
    };
    assert_eq!(status(&ours), status(&runc));
    let points = |r: &Value| {
        let mut v: Vec<(String, String)> = r["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| {
                (
                    m[0].as_str().unwrap_or("").into(),
                    m[1].as_str().unwrap_or("").into(),
                )
            })
            .filter(|(p, _): &(String, String)| !p.starts_with("/sys/fs/cgroup"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(points(&ours), points(&runc));
}

#[test]
fn the_mapped_root_writes_the_root_file_system_as_root() {
    require_root();
    let dir = tempdir();
    let b = userns_bundle(dir.path(), |c| {
        c["root"]["readonly"] = false.into();
        c["process"]["args"] = json!([
            "/bin/busybox",
            "sh",
            "-c",
            "echo hi > /written && /bin/busybox stat -c '%u %g' /written"
        ]);
    });
    let (ok, out, err) = run_with(OURS, &dir.path().join("state"), &b, "writes");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "0 0", "root inside");
    let md = std::fs::metadata(b.join("rootfs/written")).expect("written");
    assert_eq!(
        (md.uid(), md.gid()),
        (HOST_ROOT, HOST_ROOT),
        "the mapped root outside"
    );
}

#[test]
fn a_user_namespace_is_joined_by_path_and_exec_enters_it_as_root() {
    require_root();
    let dir = tempdir();
    let state = dir.path().join("state");
    let a = userns_bundle(&dir.path().join("a"), |c| {
        c["process"]["args"] = json!(["/bin/busybox", "sleep", "60"]);
    });
    let a_str = a.to_str().expect("utf-8");
    // The init inherits `create`'s stdio and outlives it: nothing to wait for there.
    let created = std::process::Command::new(OURS)
        .arg("--root")
        .arg(&state)
        .args(["create", "--bundle", a_str, "holder"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("create");
    assert!(created.success());
    let (ok, out, err) = runtime(OURS, &state, &["state", "holder"]);
    assert!(ok, "{err}");
    let pid = serde_json::from_str::<Value>(&out).expect("state")["pid"]
        .as_u64()
        .expect("pid");
    let ns_of = |ns: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
            .expect("ns")
            .ino()
    };
    let b = bundle(&dir.path().join("b"), |c| {
        let list = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
        list.retain(|n| n["type"] != "network");
        list.push(json!({"type": "user", "path": format!("/proc/{pid}/ns/user")}));
        list.push(json!({"type": "network", "path": format!("/proc/{pid}/ns/net")}));
    });
    chown_tree(&b.join("rootfs"));
    let joined = report(OURS, &b, &state, "joiner");
    assert_eq!(joined["namespaces"]["user"].as_u64(), Some(ns_of("user")));
    assert_eq!(joined["namespaces"]["net"].as_u64(), Some(ns_of("net")));
    assert_ne!(joined["namespaces"]["mnt"].as_u64(), Some(ns_of("mnt")));
    assert_eq!(joined["uid_map"], json!([[0, HOST_ROOT, SIZE]]));
    assert_eq!(joined["uid"], 0);
    assert_eq!(joined["pid"], 1);

    let (ok, _, err) = runtime(OURS, &state, &["start", "holder"]);
    assert!(ok, "{err}");
    let (ok, out, err) = runtime(OURS, &state, &["exec", "holder", "/checker"]);
    assert!(ok, "{err}");
    let inside: Value = serde_json::from_str(out.trim()).expect("exec report");
    assert_eq!(inside["namespaces"]["user"].as_u64(), Some(ns_of("user")));
    assert_eq!(inside["uid_map"], json!([[0, HOST_ROOT, SIZE]]));
    assert_eq!(inside["uid"], 0);
    assert_eq!(inside["status"]["CapBnd"], "0000000020000420");
    let (ok, _, err) = runtime(OURS, &state, &["delete", "--force", "holder"]);
    assert!(ok, "{err}");
}

#[test]
fn bad_maps_are_refused_clearly_and_leave_nothing_as_root() {
    require_root();
    let dir = tempdir();
    let state = dir.path().join("state");
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "overlap",
            Box::new(|c: &mut Value| {
                c["linux"]["uidMappings"] = json!([
                    {"containerID": 0, "hostID": HOST_ROOT, "size": 1000},
                    {"containerID": 500, "hostID": 300000, "size": 10},
                ])
            }),
            "linux.uidMappings[1]: its container ids overlap those of linux.uidMappings[0]",
        ),
        (
            "hostoverlap",
            Box::new(|c: &mut Value| {
                c["linux"]["gidMappings"] = json!([
                    {"containerID": 0, "hostID": HOST_ROOT, "size": 1000},
                    {"containerID": 5000, "hostID": HOST_ROOT + 999, "size": 10},
                ])
            }),
            "linux.gidMappings[1]: its host ids overlap those of linux.gidMappings[0]",
        ),
        (
            "zerosize",
            Box::new(|c: &mut Value| {
                c["linux"]["uidMappings"][0]["size"] = 0.into();
            }),
            "linux.uidMappings[0]: size is 0",
        ),
        (
            "overflow",
            Box::new(|c: &mut Value| {
                c["linux"]["uidMappings"][0]["hostID"] = (u32::MAX - 10).into();
            }),
            "linux.uidMappings[0]: hostID 4294967285 + size 65536 goes past the last id",
        ),
        (
            "nouserns",
            Box::new(|c: &mut Value| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .expect("namespaces")
                    .retain(|n| n["type"] != "user");
            }),
            "linux.uidMappings: given, but linux.namespaces has no user namespace",
        ),
        (
            "pathandmaps",
            Box::new(|c: &mut Value| {
                for n in c["linux"]["namespaces"].as_array_mut().expect("namespaces") {
                    if n["type"] == "user" {
                        n["path"] = "/proc/1/ns/user".into();
                    }
                }
            }),
            "linux.uidMappings: given with a user namespace joined by path",
        ),
        (
            "nomaps",
            Box::new(|c: &mut Value| {
                c["linux"]["uidMappings"] = json!([]);
            }),
            "linux.uidMappings: a new user namespace needs at least one mapping",
        ),
        (
            "unmappeduser",
            Box::new(|c: &mut Value| {
                c["process"]["user"]["uid"] = (SIZE + 1).into();
            }),
            "process.user.uid: 65537 is not mapped by linux.uidMappings",
        ),
    ];
    let mounts = || mounts_under(dir.path());
    let mounts_before = mounts();
    for (name, edit, expect) in cases {
        let b = userns_bundle(&dir.path().join(name), |_| {});
        edit_config(&b, edit);
        let (ok, _, err) = run_with(OURS, &state, &b, name);
        assert!(!ok, "{name}: a bad map ran");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            err.contains(&b.display().to_string()),
            "{name}: names the bundle: {err}"
        );
        let left: Vec<_> = std::fs::read_dir(&state)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{name}: state left behind: {left:?}");
    }
    assert_eq!(mounts_before, mounts(), "no mount leaked to the host");
}

#[test]
fn a_failing_init_in_a_user_namespace_leaves_nothing_as_root() {
    require_root();
    let dir = tempdir();
    let state = dir.path().join("state");
    let b = userns_bundle(dir.path(), |c| {
        c["process"]["args"] = json!(["/nonexistent"]);
    });
    let (ok, _, err) = run_with(OURS, &state, &b, "badexec");
    assert!(!ok && err.contains("/nonexistent"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "state left behind: {left:?}");
}

#[test]
fn sysfs_is_the_hosts_bound_read_only_without_an_own_network_namespace_as_root() {
    require_root();
    let dir = tempdir();
    // The host's network namespace is not the container's user namespace's to mount
    // sysfs for: the runtime binds the host's /sys instead.
    let b = userns_bundle(dir.path(), |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "network");
    });
    let r = report(OURS, &b, &dir.path().join("state"), "hostnet");
    assert_eq!(r["namespaces"]["net"].as_u64(), Some(host_ns("net")));
    let sys = r["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m[0] == "/sys")
        .unwrap_or_else(|| panic!("no /sys in {}", r["mounts"]))
        .clone();
    assert_eq!(sys[1], "sysfs", "{sys}");
    let opts = sys[2].as_str().expect("options");
    assert!(opts.split(',').any(|o| o == "ro"), "{sys}");
    // A recursive bind brings the host's mounts below /sys along; a new sysfs has none.
    let below: Vec<&Value> = r["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| {
            m[0].as_str()
                .is_some_and(|p| p.starts_with("/sys/fs/cgroup/"))
        })
        .collect();
    let host_below = mounts_under(Path::new("/sys/fs/cgroup/")).len();
    assert_eq!(below.len(), host_below, "{below:?}");
}
