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
    checker_layout(
        &layout,
        &["/checker", "--probe-seccomp"],
        "example.com/checker:1",
    );
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
    let mounts_before = mounts_under(work.path());

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
    // /etc holds the image's two files and the runtime's hosts.
    assert_eq!(out, "hosts\nkept\nnew\n1\n", "{err}");
    // Nothing is left: no mount, no bundle, no state.
    assert_eq!(
        mounts_before,
        mounts_under(work.path()),
        "no mount left behind"
    );
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

/// Imports the standard busybox image as `example.com/busybox:1` into a new store.
fn busybox_store(work: &std::path::Path) -> (String, String) {
    store_with(work, &busybox_layers(), "example.com/busybox:1")
}

#[test]
fn volumes_persist_logs_rotate_and_leftovers_are_replaced_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = busybox_store(work.path());
    let log = work.path().join("logs/web.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let run = |name: &str, extra: &[&str], script: &str| {
        let mut args = vec!["--root", &s, "run", "--name", name, "--state-root", &st];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["example.com/busybox:1", "/bin/busybox", "sh", "-c", script]);
        gantry(&args, None)
    };
    let log_s = log.display().to_string();
    let (ok, out, err) = run(
        "vol-1",
        &[
            "-v",
            "data:/data",
            "-v",
            "conf:/conf:ro",
            "--log-file",
            &log_s,
        ],
        "echo kept > /data/f; touch /conf/x 2>/dev/null || echo read-only >&2; echo out",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "", "the container's output goes to the log file");
    assert_eq!(
        std::fs::read_to_string(work.path().join("store/volumes/data/f")).unwrap(),
        "kept\n"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F out\n"), "{text}");
    assert!(text.contains(" stderr F read-only\n"), "{text}");
    // The next container sees the volume's content.
    let (ok, _, err) = run(
        "vol-2",
        &["-v", "data:/data", "--log-file", &log_s],
        "cat /data/f",
    );
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains(" stdout F kept\n"));

    // Rotation: 300 lines of ~45 bytes through a 2000-byte limit, two old files kept.
    let (ok, _, err) = run(
        "rot-1",
        &[
            "--log-file",
            &log_s,
            "--log-max-bytes",
            "2000",
            "--log-keep",
            "2",
        ],
        "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done",
    );
    assert!(ok, "{err}");
    for (suffix, exists) in [("", true), (".1", true), (".2", true), (".3", false)] {
        let p = work.path().join(format!("logs/web.log{suffix}"));
        assert_eq!(p.exists(), exists, "{}", p.display());
        if exists {
            assert!(
                std::fs::metadata(&p).unwrap().len() <= 2000,
                "{}",
                p.display()
            );
        }
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains(" stdout F line-299\n"));

    // A named volume is never a host path.
    let (ok, _, err) = run("bad-1", &["-v", "/etc:/host-etc"], "true");
    assert!(!ok);
    assert!(err.contains("host paths are not allowed"), "{err}");

    // What a SIGKILLed run leaves behind is refused, or replaced with --replace.
    std::fs::create_dir_all(work.path().join("run/bundles/left-1")).unwrap();
    let (ok, _, err) = run("left-1", &[], "true");
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run("left-1", &["--replace"], "true");
    assert!(ok, "{err}");
}

#[test]
fn probes_check_tcp_http_and_exec_inside_the_container_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = busybox_store(work.path());
    std::fs::create_dir_all(work.path().join("www")).unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "--root",
            &s,
            "run",
            "--name",
            "web-p",
            "--state-root",
            &st,
            "-v",
            "www:/www",
        ])
        .args(["example.com/busybox:1", "/bin/busybox", "sh", "-c"])
        // sh stays PID 1 with a TERM trap: a PID 1 without a handler ignores SIGTERM.
        .arg(
            "echo ok > /www/index.html; touch /ready; trap 'exit 0' TERM; \
             /bin/busybox httpd -f -p 8080 -h /www & wait",
        )
        .spawn()
        .expect("gantry run");
    let probe = |check: &[&str]| {
        let mut args = vec![
            "probe",
            "--name",
            "web-p",
            "--state-root",
            &st,
            "--timeout-secs",
            "2",
        ];
        args.extend_from_slice(check);
        gantry(&args, None)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !probe(&["tcp", "8080"]).0 {
        assert!(std::time::Instant::now() < deadline, "httpd never listened");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(probe(&["http", "8080", "/index.html"]).0);
    let (ok, _, err) = probe(&["http", "8080", "/missing"]);
    assert!(!ok, "a 404 is unhealthy: {err}");
    assert!(!probe(&["tcp", "8081"]).0, "nothing listens on 8081");
    assert!(probe(&["exec", "--", "/bin/busybox", "test", "-f", "/ready"]).0);
    assert!(!probe(&["exec", "--", "/bin/busybox", "test", "-f", "/nope"]).0);
    // A check that hangs is killed at its timeout, inside the container too.
    let sleepers = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c == b"/bin/busybox\0sleep\x0037\0")
            })
            .count()
    };
    let started = std::time::Instant::now();
    assert!(!probe(&["exec", "--", "/bin/busybox", "sleep", "37"]).0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the 2 s timeout held"
    );
    assert_eq!(sleepers(), 0, "the hung check's process is gone");
    // A probe killed from outside (as PID 1 does at the deadline) takes it along too.
    let mut hung = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "probe",
            "--name",
            "web-p",
            "--state-root",
            &st,
            "--timeout-secs",
            "60",
        ])
        .args(["exec", "--", "/bin/busybox", "sleep", "37"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sleepers() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the check never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    hung.kill().unwrap();
    hung.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sleepers() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the check outlived its probe"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The probe joined the container's network namespace, not the host's: nothing on the
    // host listens on 8080 for it to find.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    server.wait().unwrap();
    let (ok, _, err) = probe(&["tcp", "8080"]);
    assert!(!ok, "the container is gone: {err}");
}

#[test]
fn a_running_container_sees_the_hosts_new_resolvers_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = busybox_store(work.path());
    // PID 1's file before the DHCP lease: the configured fallback only.
    let run_dir = work.path().join("host-run");
    std::fs::create_dir(&run_dir).unwrap();
    let host = run_dir.join("resolv.conf");
    gantry_runtime::fsutil::write_atomic(&host, b"nameserver 192.0.2.53\n").unwrap();
    let seen = work.path().join("store/volumes/dns/seen");
    let container = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--root", &s, "run", "--name", "dns-1", "--state-root", &st])
        .args(["--network", "host", "-v", "dns:/dns", "--host-resolv-conf"])
        .arg(&host)
        .args(["example.com/busybox:1", "/bin/busybox", "sh", "-c"])
        // What the process itself reads, copied out as a whole file at every turn.
        .arg(
            "trap 'exit 0' TERM; while true; do cat /etc/resolv.conf > /dns/.t; \
             mv /dns/.t /dns/seen; sleep 1; done",
        )
        .spawn()
        .expect("gantry run");
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = std::fs::read_to_string(&seen).unwrap_or_default();
            if got.contains(want) || std::time::Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let stop = |mut container: std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(container.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        container.wait().unwrap()
    };
    let before = wait_for("nameserver 192.0.2.53\n");
    // The lease arrives: PID 1 renames a new file into place.
    gantry_runtime::fsutil::write_atomic(&host, b"nameserver 10.0.2.3\nsearch lan\n").unwrap();
    let after = wait_for("nameserver 10.0.2.3\n");
    // Stopped before any assertion, so that a failure leaves no container behind.
    let status = stop(container);
    assert_eq!(before, "# generated by gantry\nnameserver 192.0.2.53\n");
    assert_eq!(
        after,
        "# generated by gantry\nnameserver 10.0.2.3\nsearch lan\n"
    );
    assert!(status.success(), "{status:?}");
}

#[test]
fn ensure_uses_the_stored_image_when_the_registry_cannot_be_reached() {
    let work = tempfile::tempdir().expect("tmp");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).expect("layout");
    let d = amd64_image(&layout, &busybox_layers(), Comp::Gzip);
    finish_layout(&layout, vec![("1", d)]);
    let store = work.path().join("store").display().to_string();
    // Port 9 on loopback: nothing listens, the pull fails at once, nothing leaves the host.
    let name = "127.0.0.1:9/demo/busybox:1";
    let ensure = |policy: &str| {
        gantry(
            &["--root", &store, "image", "ensure", "--pull", policy, name],
            None,
        )
    };
    for policy in ["missing", "always"] {
        let (ok, _, err) = ensure(policy);
        assert!(!ok, "nothing stored and no registry: a clear failure");
        assert!(err.contains("127.0.0.1:9"), "{err}");
    }
    let (ok, _, err) = gantry(
        &[
            "--root",
            &store,
            "image",
            "import",
            layout.to_str().expect("utf-8"),
            "--name",
            name,
        ],
        None,
    );
    assert!(ok, "{err}");
    // `always` asks the registry, fails, and falls back to the stored copy.
    let (ok, out, err) = ensure("always");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("127.0.0.1:9/demo/busybox:1 sha256:"),
        "{out}"
    );
    assert!(
        err.contains("warning:") && err.contains("from the store"),
        "{err}"
    );
    // `missing` (the default) never asks: no failed request, no warning.
    for args in [&["--pull", "missing", name][..], &[name][..]] {
        let mut line = vec!["--root", store.as_str(), "image", "ensure"];
        line.extend_from_slice(args);
        let (ok, again, err) = gantry(&line, None);
        assert!(ok, "{err}");
        assert_eq!(again, out);
        assert!(
            !err.contains("warning") && !err.contains("cannot pull"),
            "{err}"
        );
        assert!(
            err.contains("using the image in the store (pull policy: missing)"),
            "{err}"
        );
    }
    // A store that lost a layer does not count as having the image.
    let layers = work.path().join("store/layers");
    for e in std::fs::read_dir(&layers).expect("layers") {
        std::fs::remove_file(e.expect("entry").path().join("layer.json")).expect("unmark layer");
    }
    let (ok, _, err) = ensure("missing");
    assert!(!ok, "the registry was asked and cannot be reached");
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

/// `/etc/hosts` is the runtime's: localhost, the container's host name, each `--add-host`
/// (a cluster node's neighbours); with `--network host` the image's own unless hosts are
/// added. Root: it runs containers.
#[test]
fn a_container_gets_an_etc_hosts_with_its_name_and_the_added_hosts_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = busybox_store(work.path());
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["--root", &s, "run", "--name", name, "--state-root", &st];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["example.com/busybox:1", "/bin/busybox", "cat", "/etc/hosts"]);
        gantry(&args, None)
    };
    let (ok, out, err) = run(
        "hosts-1",
        &[
            "--network",
            "none",
            "--hostname",
            "web",
            "--add-host",
            "node-2:10.123.0.12",
            "--add-host",
            "v6:2001:db8::1",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb\n\
         10.123.0.12\tnode-2\n2001:db8::1\tv6\n"
    );
    let (ok, _, err) = run(
        "hosts-2",
        &["--network", "none", "--add-host", "bad name:1.2.3.4"],
    );
    assert!(!ok && err.contains("is not a host name"), "{err}");
}
