//! `gantry run`: a container from an image in the store gets Docker's secure defaults and
//! the image's merged file system, seen from inside by `gantry-checker`. Needs root.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn a_container_from_an_image_gets_dockers_defaults_and_the_merged_layers_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("tmp");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).expect("layout");
    let checker_bytes = std::fs::read(checker()).expect("checker");
    let mut layers = busybox_layers();
    layers.push(layer_tar(&[Entry::File("checker", &checker_bytes, 0o755)]));
    let d = add_image(
        &layout,
        &ImageSpec {
            arch: "amd64",
            layers: &layers,
            comp: Comp::Gzip,
            bad_diff_id: false,
            cmd: &["/checker", "--probe-seccomp"],
        },
    );
    finish_layout(&layout, vec![("example.com/checker:1", d)]);
    let store = work.path().join("store");
    let state = work.path().join("run");
    let (s, st) = (
        store.to_str().expect("utf-8"),
        state.to_str().expect("utf-8"),
    );
    let (ok, _, err) = gantry(
        &[
            "--root",
            s,
            "image",
            "import",
            layout.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "{err}");
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .count();

    let (ok, out, err) = gantry(
        &[
            "--root",
            s,
            "run",
            "--name",
            "web-1",
            "--state-root",
            st,
            "example.com/checker:1",
        ],
        None,
    );
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    // Docker's 14 capabilities less CAP_MKNOD (no device cgroup rules yet), nothing
    // ambient, no_new_privs, the seccomp filter.
    assert_eq!(r["status"]["CapBnd"], "00000000a00425fb");
    assert_eq!(r["status"]["CapEff"], "00000000a00425fb");
    assert_eq!(r["status"]["CapAmb"], "0000000000000000");
    assert_eq!(r["status"]["NoNewPrivs"], "1");
    assert_eq!(r["status"]["Seccomp"], "2");
    assert_eq!(r["unshare_user"], "EPERM");
    assert_eq!(r["clone3"], "ENOSYS");
    assert_eq!(r["masked"]["/proc/keys"], "read 0 bytes");
    assert_eq!(r["masked"]["/sys/firmware"], "dir with 0 entries");
    assert_eq!(r["readonly"]["/proc/sys"], "EROFS");
    assert_eq!(r["hostname"], "web-1");
    assert_eq!(r["pid"], 1);
    let dev = [
        "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
        "stdout", "tty", "urandom", "zero",
    ];
    assert_eq!(r["dev"], serde_json::json!(dev), "only the standard /dev");
    assert!(
        r["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e == "PATH=/bin"),
        "{}",
        r["env"]
    );

    // The merged view: the whiteout and the opaque directory take effect.
    let (ok, out, err) = gantry(
        &[
            "--root",
            s,
            "run",
            "--name",
            "ls-1",
            "--state-root",
            st,
            "-e",
            "X=1",
            "example.com/checker:1",
            "/bin/busybox",
            "sh",
            "-c",
            "ls /etc; ls /data; echo $X; exit 3",
        ],
        None,
    );
    assert!(!ok, "exit 3 must come through");
    assert_eq!(out, "kept\nnew\n1\n", "{err}");
    // Nothing is left: no mount, no bundle, no state.
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .count();
    assert_eq!(mounts_before, mounts_after);
    assert_eq!(
        std::fs::read_dir(state.join("bundles"))
            .expect("bundles")
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(state.join("containers"))
            .expect("containers")
            .count(),
        0
    );
}
