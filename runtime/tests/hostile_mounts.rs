//! Hostile images against the mounts `gantry run` makes, in the style of runc's and crun's
//! CVE regression tests: each case's doc comment says what the image attacks and what the
//! host must see. Needs root (CI runs as root).

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::hostile::*;
use common::*;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
}

/// Opens the FIFO `gate` for writing, which succeeds once the container has opened it
/// for reading (so the container is running); fails the test after 60 s, with gantry's
/// stderr if it has exited.
fn wait_for_reader(gate: &Path, child: &mut Child) -> std::fs::File {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = gate.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::OpenOptions::new().write(true).open(path));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(f) => f.expect("open the gate"),
        Err(_) => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the container never opened {}: {err}", gate.display());
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The per-mount options of the host's mount at `target`.
fn host_mount_options(target: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let target = target.display().to_string();
    info.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&target.as_str())).then(|| fields[5].to_owned())
    })
}

/// Attacks the host through the image's merged overlay: the image carries a setuid file and
/// a device node (`/dev/mem`'s 1:1), which any host process could use through the bundle's
/// `rootfs` while the container runs (or through a volume it writes them to). The host
/// must see the overlay mounted `nodev,nosuid` (opening the node there is refused) and the
/// bundle, state, layer and volumes directories 0700, including ones an older runtime left
/// 0755.
#[test]
fn the_hosts_view_of_an_image_is_nodev_nosuid_and_private_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = hostile_store(
        work.path(),
        &[
            Entry::Dir("hostile"),
            Entry::File("hostile/suid", b"#!/bin/sh\nid\n", 0o4755),
            Entry::CharDevice("hostile/mem", 1, 1),
        ],
    );
    // What an older runtime left: world-readable directories are tightened when opened.
    let state = PathBuf::from(&st);
    let store = PathBuf::from(&s);
    for d in [state.join("bundles"), state.join("containers")] {
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(store.join("layers"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let volume = store.join("volumes/gate");
    std::fs::create_dir_all(&volume).expect("volume");
    std::fs::set_permissions(
        store.join("volumes"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let gate = volume.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");

    let mut child = spawn_run(
        &s,
        &st,
        "hostile-1",
        &["-v", "gate:/gate"],
        "cat /gate/gate",
    );
    let writer = wait_for_reader(&gate, &mut child);

    let bundle = state.join("bundles/hostile-1");
    let rootfs = bundle.join("rootfs");
    let options = host_mount_options(&rootfs)
        .unwrap_or_else(|| panic!("no host mount at {}", rootfs.display()));
    let flags: Vec<&str> = options.split(',').collect();
    let node = std::fs::File::open(rootfs.join("hostile/mem"));
    let mut modes = vec![
        (state.join("bundles"), mode(&state.join("bundles"))),
        (bundle.clone(), mode(&bundle)),
        (state.join("containers"), mode(&state.join("containers"))),
        (
            state.join("containers/hostile-1"),
            mode(&state.join("containers/hostile-1")),
        ),
        (store.join("layers"), mode(&store.join("layers"))),
        (store.join("tmp"), mode(&store.join("tmp"))),
        (store.join("volumes"), mode(&store.join("volumes"))),
    ];
    for e in std::fs::read_dir(store.join("layers")).expect("layers") {
        let p = e.expect("entry").path();
        let m = mode(&p);
        modes.push((p, m));
    }
    drop(writer);
    let out = child.wait_with_output().expect("gantry");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(
        flags.contains(&"nodev") && flags.contains(&"nosuid"),
        "the host's overlay at {} is mounted {options}",
        rootfs.display()
    );
    match node {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        other => panic!("the image's device node opened on the host: {other:?}"),
    }
    for (path, m) in modes {
        assert_eq!(m, 0o700, "{} is {m:o}", path.display());
    }
}

/// Attacks `/dev` through a volume: the image makes `/vol` a symlink to `/dev` and the run
/// asks for `data:/vol`, which would put a writable host directory over the container's
/// device nodes (and, on the next start, let the container plant a symlink where the
/// runtime makes `/dev/null`). The run must be refused, naming the mount and `/dev`.
#[test]
fn a_volume_redirected_onto_dev_by_an_image_symlink_is_refused_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = hostile_store(work.path(), &[Entry::Symlink("vol", "/dev")]);
    let (ok, _, err) = run(&s, &st, "vol-dev", &["-v", "data:/vol"], "ls /vol");
    assert!(!ok, "the run must be refused");
    assert!(
        err.contains("mounts[") && err.contains(".destination") && err.contains("under /dev"),
        "{err}"
    );
    let volume = PathBuf::from(&s).join("volumes/data");
    assert_eq!(
        std::fs::read_dir(&volume).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing of /dev reached the volume"
    );
}

/// Attacks a kernel knob through a file the runtime binds: the image makes
/// `/etc/resolv.conf` a symlink to `/proc/sys/kernel/core_pattern`, where `gantry run`
/// binds its generated resolver file. The bind must not land on `/proc/sys`: the run is
/// refused naming `/proc`, and the host's `core_pattern` is unchanged. (`/etc/hosts`, also
/// bound by the runtime, goes through the same rule, as does every bind destination;
/// `/etc/hostname` is not bound.)
#[test]
fn a_resolv_conf_symlink_into_proc_sys_is_refused_as_root() {
    require_root();
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("core_pattern");
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = hostile_store(
        work.path(),
        &[Entry::Symlink(
            "etc/resolv.conf",
            "/proc/sys/kernel/core_pattern",
        )],
    );
    let host_resolv = work.path().join("resolv.conf");
    std::fs::write(&host_resolv, "nameserver 192.0.2.53\n").expect("resolv.conf");
    let (ok, out, err) = run(
        &s,
        &st,
        "resolv-proc",
        &[
            "--network",
            "host",
            "--host-resolv-conf",
            host_resolv.to_str().expect("utf-8"),
        ],
        "cat /proc/sys/kernel/core_pattern",
    );
    assert!(!ok, "the run must be refused: {out}");
    assert!(
        err.contains("mounts[") && err.contains("under /proc"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("core_pattern"),
        before
    );
}

/// Benign in-root symlinks keep working: the image makes `/var/run` a symlink to `/run`
/// (as most distributions do) and a volume is asked for at `/var/run/app`. The run must
/// succeed and the container's write must reach the volume.
#[test]
fn a_volume_through_a_benign_in_root_symlink_works_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = hostile_store(
        work.path(),
        &[
            Entry::Dir("run"),
            Entry::Dir("var"),
            Entry::Symlink("var/run", "/run"),
        ],
    );
    let (ok, _, err) = run(
        &s,
        &st,
        "var-run",
        &["-v", "app:/var/run/app"],
        "echo hello > /run/app/f",
    );
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(PathBuf::from(&s).join("volumes/app/f")).expect("volume file"),
        "hello\n"
    );
}

/// Attacks the device nodes the runtime makes: an OCI bundle puts a tmpfs where
/// `/dev/zero` is to be made, so the container's `/dev/zero` would be whatever the mount
/// holds. An existing entry where a node is to be made must be an error naming the path.
#[test]
fn an_existing_entry_where_a_device_node_is_made_is_refused_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let b = bundle::bundle(work.path(), |c| {
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(serde_json::json!({
                "destination": "/dev/zero", "type": "tmpfs", "source": "tmpfs",
            }));
        }
    });
    let state = work.path().join("state");
    let (ok, _, err) = bundle::run_with(bundle::OURS, &state, &b, "dev-exists");
    assert!(!ok, "the run must be refused");
    assert!(
        err.contains("/dev/zero") && err.contains("already there"),
        "{err}"
    );
}

/// The reproduction from issue 15 (CVE-2025-31133's class): the root's `/dev/null` is a
/// symlink to `/proc/sys/kernel/core_pattern` (what a container could leave in a volume
/// over `/dev` for its next start; here a bundle with no `/dev` tmpfs). Masking binds the
/// null device over `/proc/keys` and the others: it must refuse a `/dev/null` that is not
/// the char device 1:3 instead of binding the knob read-write over the masked paths.
#[test]
fn masking_refuses_a_dev_null_that_is_not_the_null_device_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let b = bundle::bundle(work.path(), |c| {
        if let Some(m) = c["mounts"].as_array_mut() {
            m.retain(|m| m["destination"] != "/dev");
        }
        c["process"]["args"] = serde_json::json!(["/bin/busybox", "cat", "/proc/keys"]);
    });
    std::fs::create_dir_all(b.join("rootfs/dev")).expect("dev");
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", b.join("rootfs/dev/null"))
        .expect("symlink");
    let state = work.path().join("state");
    let (ok, out, err) = bundle::run_with(bundle::OURS, &state, &b, "null-link");
    assert!(
        !ok,
        "masking must be refused; the container read /proc/keys as: {out}"
    );
    assert!(
        err.contains("/dev/null") && err.contains("not the null device"),
        "{err}"
    );
}

/// Masked paths off procfs and sysfs (as runc allows): a file of the image and a
/// directory of it. Must see, from inside: the file reads as empty (the null device bound
/// over it), the directory is an empty read-only tmpfs, and a symlink in the list is
/// still refused.
#[test]
fn masked_paths_of_the_image_are_hidden_and_symlinks_still_refused_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let b = bundle::bundle(work.path(), |c| {
        c["linux"]["maskedPaths"] = serde_json::json!(["/proc/keys", "/secret.txt", "/secrets"]);
        c["process"]["args"] = serde_json::json!([
            "/bin/busybox",
            "sh",
            "-c",
            "cat /secret.txt; echo; ls -A /secrets; echo; touch /secrets/x 2>&1 || true"
        ]);
    });
    std::fs::write(b.join("rootfs/secret.txt"), "top-secret").expect("file");
    std::fs::create_dir_all(b.join("rootfs/secrets")).expect("dir");
    std::fs::write(b.join("rootfs/secrets/key"), "key-material").expect("file");
    let state = work.path().join("state");
    let (ok, out, err) = bundle::run_with(bundle::OURS, &state, &b, "mask-image");
    assert!(ok, "run failed: {err}");
    assert!(
        !out.contains("top-secret") && !out.contains("key"),
        "masked content leaked: {out}"
    );
    assert!(
        out.contains("Read-only file system"),
        "the masked directory must be read-only: {out}"
    );

    std::os::unix::fs::symlink("/etc", b.join("rootfs/link")).expect("symlink");
    bundle::edit_config(&b, |c| {
        c["linux"]["maskedPaths"] = serde_json::json!(["/link"]);
    });
    let (ok, _, err) = bundle::run_with(bundle::OURS, &state, &b, "mask-link");
    assert!(!ok, "a symlink in maskedPaths must be refused");
    assert!(
        err.contains("maskedPaths /link") && err.contains("symlink"),
        "{err}"
    );
}

/// A bind mount first in the bundle's list, before the runtime's `/dev` is mounted, so
/// that anything made for it lands in the bundle's own root file system.
fn bind_first(c: &mut serde_json::Value, destination: &str, source: &Path, options: &[&str]) {
    let mounts = c["mounts"].as_array_mut().expect("mounts");
    mounts.insert(
        0,
        serde_json::json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": options,
        }),
    );
}

/// Attacks the host through the order of check and mount: the image makes `/vol` a
/// symlink to `/dev`, and a bind asks for `/vol/new/deeper`, which does not exist yet.
/// The refusal must come before anything is made: the image's `/dev` (the bundle's own
/// directory on the host) must stay empty.
#[test]
fn a_bind_under_dev_through_a_symlink_is_refused_before_anything_is_made_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).expect("volume");
    let b = bundle::bundle(work.path(), |c| {
        bind_first(c, "/vol/new/deeper", &volume, &["rbind"]);
    });
    let rootfs = b.join("rootfs");
    std::fs::create_dir_all(rootfs.join("dev")).expect("dev");
    std::os::unix::fs::symlink("/dev", rootfs.join("vol")).expect("symlink");
    let state = work.path().join("state");
    let (ok, _, err) = bundle::run_with(bundle::OURS, &state, &b, "bind-dev-new");
    assert!(!ok, "the run must be refused");
    assert!(
        err.contains("mounts[0].destination") && err.contains("under /dev"),
        "{err}"
    );
    let made: Vec<_> = std::fs::read_dir(rootfs.join("dev"))
        .expect("dev")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(made.is_empty(), "made in the image's /dev: {made:?}");
}

/// The bind lands where its checked descriptor is: a read-only bind at
/// `/var/run/app/data` (missing) through the image's benign `/var/run -> /run`. The
/// container must see the source's file at `/run/app/data`, a read-only mount there, and
/// be unable to write; the directories were made under the image's `/run`, and its
/// `/var/run` is still the link.
#[test]
fn a_bind_lands_on_the_checked_descriptor_with_its_flags_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).expect("volume");
    std::fs::write(volume.join("marker"), "from the host\n").expect("marker");
    let b = bundle::bundle(work.path(), |c| {
        bind_first(c, "/var/run/app/data", &volume, &["rbind", "ro"]);
        c["process"]["args"] = serde_json::json!([
            "/bin/busybox",
            "sh",
            "-c",
            "cat /run/app/data/marker; touch /run/app/data/new 2>/dev/null && echo writable; \
             grep ' /run/app/data ' /proc/self/mountinfo"
        ]);
    });
    let rootfs = b.join("rootfs");
    std::fs::create_dir_all(rootfs.join("run")).expect("run");
    std::fs::create_dir_all(rootfs.join("var")).expect("var");
    std::os::unix::fs::symlink("/run", rootfs.join("var/run")).expect("symlink");
    let state = work.path().join("state");
    let (ok, out, err) = bundle::run_with(bundle::OURS, &state, &b, "bind-lands");
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("from the host"), "{out}");
    let mount = lines.next().unwrap_or_default();
    let options: Vec<&str> = mount.split(' ').nth(5).unwrap_or("").split(',').collect();
    assert!(options.contains(&"ro"), "not a read-only mount: {out}");
    assert!(
        !volume.join("new").exists(),
        "the container wrote the source"
    );
    assert!(rootfs.join("run/app/data").is_dir());
    assert!(std::fs::symlink_metadata(rootfs.join("var/run"))
        .expect("var/run")
        .file_type()
        .is_symlink());
}

/// A read-only path with a volume below it, and masked paths in a bundle without procfs
/// at `/proc` (where the image's own tree would sit, and decide where masks land). Must
/// see: the volume is read-only too (the whole tree below the path); the masks refused,
/// naming `/proc`.
#[test]
fn read_only_paths_cover_what_is_below_and_masks_need_procfs_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let vol = work.path().join("vol");
    std::fs::create_dir_all(&vol).expect("vol");
    let b = bundle::bundle(work.path(), |c| {
        c["linux"]["readonlyPaths"] = serde_json::json!(["/data"]);
        c["linux"]["maskedPaths"] = serde_json::json!([]);
        c["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
            "destination": "/data/vol", "type": "bind", "source": vol, "options": ["rbind", "rw"]
        }));
        c["process"]["args"] = serde_json::json!([
            "/bin/busybox",
            "sh",
            "-c",
            "touch /data/vol/x 2>&1; touch /data/y 2>&1; true"
        ]);
    });
    std::fs::create_dir_all(b.join("rootfs/data")).expect("data");
    let state = work.path().join("state");
    let (ok, out, err) = bundle::run_with(bundle::OURS, &state, &b, "ro-below");
    assert!(ok, "run failed: {err}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(
        !vol.join("x").exists(),
        "the volume below a read-only path was written"
    );

    bundle::edit_config(&b, |c| {
        c["linux"]["readonlyPaths"] = serde_json::json!([]);
        c["linux"]["maskedPaths"] = serde_json::json!(["/secret"]);
        let mounts = c["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| m["destination"] != "/proc");
    });
    let (ok, _, err) = bundle::run_with(bundle::OURS, &state, &b, "mask-noproc");
    assert!(!ok, "masks without procfs must be refused");
    assert!(
        err.contains("maskedPaths /proc") && err.contains("procfs"),
        "{err}"
    );
}
