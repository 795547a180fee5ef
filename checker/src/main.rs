//! `gantry-checker`: reports what a container's process really sees, as one JSON document
//! on standard output. See the README. Every probe reports what happened (a value or an
//! errno name); nothing here decides what is right: the tests do.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use serde_json::{json, Value};

/// Paths Docker masks and makes read-only; the report says what each looks like.
const MASKED: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY: [(&str, &str); 3] = [
    ("/proc/sys", "/proc/sys/kernel/domainname"),
    ("/proc/sysrq-trigger", "/proc/sysrq-trigger"),
    ("/proc/irq", "/proc/irq/default_smp_affinity"),
];

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EROFS) => "EROFS".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::ENOSYS) => "ENOSYS".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

fn namespaces() -> Value {
    let mut m = BTreeMap::new();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        let v = std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .map(|md| json!(md.ino()))
            .unwrap_or_else(|e| json!(errno_name(&e)));
        m.insert(ns.to_owned(), v);
    }
    json!(m)
}

fn status_fields() -> Value {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if matches!(
                k,
                "CapInh"
                    | "CapPrm"
                    | "CapEff"
                    | "CapBnd"
                    | "CapAmb"
                    | "NoNewPrivs"
                    | "Seccomp"
                    | "SigIgn"
                    | "SigBlk"
            ) {
                m.insert(k.to_owned(), json!(v.trim()));
            }
        }
    }
    json!(m)
}

fn rlimits() -> Value {
    let mut m = BTreeMap::new();
    for (name, res) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
        ("core", libc::RLIMIT_CORE),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
        let rc = unsafe { libc::getrlimit(res, &mut lim) };
        m.insert(
            name.to_owned(),
            if rc == 0 {
                json!([lim.rlim_cur, lim.rlim_max])
            } else {
                json!(null)
            },
        );
    }
    json!(m)
}

/// What reading a masked path gives: its size read, entries listed, or the error.
fn masked() -> Value {
    let mut m = BTreeMap::new();
    for p in MASKED {
        let v = match std::fs::metadata(p) {
            Err(e) => json!(errno_name(&e)),
            Ok(md) if md.is_dir() => match std::fs::read_dir(p) {
                Ok(rd) => json!(format!("dir with {} entries", rd.count())),
                Err(e) => json!(errno_name(&e)),
            },
            Ok(_) => {
                use std::io::Read;
                let mut buf = vec![0u8; 4096];
                match std::fs::File::open(p).and_then(|mut f| f.read(&mut buf)) {
                    Ok(n) => json!(format!("read {n} bytes")),
                    Err(e) => json!(errno_name(&e)),
                }
            }
        };
        m.insert(p.to_owned(), v);
    }
    json!(m)
}

/// What opening a file under each read-only path for writing gives.
fn readonly() -> Value {
    let mut m = BTreeMap::new();
    for (p, file) in READONLY {
        let v = match std::fs::OpenOptions::new().write(true).open(file) {
            Ok(_) => json!("writable"),
            Err(e) => json!(errno_name(&e)),
        };
        m.insert(p.to_owned(), v);
    }
    json!(m)
}

/// Mount points with their file system type and per-mount options, from mountinfo.
fn mounts() -> Value {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let list: Vec<Value> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(json!([f.get(4)?, f.get(sep + 1)?, f.get(5)?]))
        })
        .collect();
    json!(list)
}

/// Open descriptors and what they point at (the listing's own descriptor left out).
fn fds() -> Value {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                continue;
            }
            out.insert(name, target);
        }
    }
    json!(out)
}

/// `/proc/self/uid_map` or `gid_map` as [container, host, size] triples.
fn id_map(file: &str) -> Value {
    match std::fs::read_to_string(format!("/proc/self/{file}")) {
        Ok(text) => json!(text
            .lines()
            .map(|l| l
                .split_whitespace()
                .filter_map(|x| x.parse::<u64>().ok())
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()),
        Err(e) => json!(errno_name(&e)),
    }
}

fn dev() -> Value {
    let mut names: Vec<String> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    json!(names)
}

/// Every node in `/dev` and one level of directories below it (not the runtime's own
/// `pts`, `shm`, `mqueue`): type, numbers, mode, owner, and whether a read-only open
/// works (non-blocking, so a FIFO or a device without a driver answers at once).
fn dev_nodes() -> Value {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::path::Path;
    let mut out = serde_json::Map::new();
    let mut dirs = vec![std::path::PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                let skip = ["pts", "shm", "mqueue"]
                    .iter()
                    .any(|n| path == Path::new("/dev").join(n));
                if dir == Path::new("/dev") && !skip {
                    dirs.push(path);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else if ft.is_fifo() {
                "p"
            } else {
                continue;
            };
            let open = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&path)
                .map(|_| "ok".to_owned())
                .unwrap_or_else(|e| errno_name(&e));
            let rdev = md.rdev();
            out.insert(
                path.display().to_string(),
                json!({
                    "type": kind,
                    "major": libc::major(rdev),
                    "minor": libc::minor(rdev),
                    "mode": format!("{:04o}", md.mode() & 0o7777),
                    "uid": md.uid(),
                    "gid": md.gid(),
                    "open": open,
                }),
            );
        }
    }
    Value::Object(out)
}

/// A syscall Docker's default seccomp profile refuses: creating a user namespace.
fn blocked_syscall() -> Value {
    // SAFETY: unshare takes a flag word and touches no memory of ours; if it succeeds the
    // process merely sits in a new user namespace, which the checker no longer needs.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    if rc == 0 {
        json!("allowed")
    } else {
        json!(errno_name(&std::io::Error::last_os_error()))
    }
}

/// `clone3` with a null, zero-sized argument: the kernel answers EINVAL; Docker's profile
/// answers ENOSYS first. Nothing is cloned either way.
fn clone3_probe() -> Value {
    // SAFETY: a null pointer with size 0 is refused by the kernel before it is read.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    if rc >= 0 {
        json!("allowed")
    } else {
        json!(errno_name(&std::io::Error::last_os_error()))
    }
}

/// `--udp-echo PORT`: answers every datagram on PORT with itself, forever; the network
/// tests' UDP peer inside a container (busybox's `nc` has no UDP).
fn udp_echo(port: &str) -> ! {
    let sock = match std::net::UdpSocket::bind(format!("0.0.0.0:{port}")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp-echo: bind port {port}: {e}");
            std::process::exit(1);
        }
    };
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--udp-echo") {
        udp_echo(args.get(i + 1).map(String::as_str).unwrap_or("7"));
    }
    // SAFETY: getuid/getgid/getpid cannot fail and touch no memory.
    let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
    let mut groups = vec![0 as libc::gid_t; 64];
    // SAFETY: the buffer has room for 64 gids, which is the size passed.
    let n = unsafe { libc::getgroups(64, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(n).unwrap_or(0));
    // SAFETY: umask only swaps the process mask; it is put back at once.
    let umask = unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let want_blocked = std::env::args().any(|a| a == "--probe-seccomp");
    let mut report = json!({
        "pid": pid,
        "uid": uid,
        "gid": gid,
        "groups": groups,
        "umask": format!("{umask:04o}"),
        "hostname": hostname,
        "cwd": cwd,
        "namespaces": namespaces(),
        "status": status_fields(),
        "rlimits": rlimits(),
        "masked": masked(),
        "readonly": readonly(),
        "mounts": mounts(),
        "dev": dev(),
        "dev_nodes": dev_nodes(),
        "fds": fds(),
        "cgroup": std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        "uid_map": id_map("uid_map"),
        "gid_map": id_map("gid_map"),
        "setgroups": std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| errno_name(&e)),
        "env": std::env::vars().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    });
    // Only on request: under libseccomp filters a foreign ABI kills the process.
    if std::env::args().any(|a| a == "--probe-x32") {
        // An x32-ABI call (bit 30 set in the number): a filter must not let it past.
        // SAFETY: getpid through the x32 ABI takes no arguments and touches no memory.
        let rc = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
        report["x32_getpid"] = if rc >= 0 {
            json!("allowed")
        } else {
            json!(errno_name(&std::io::Error::last_os_error()))
        };
    }
    if want_blocked {
        report["unshare_user"] = blocked_syscall();
        report["clone3"] = clone3_probe();
    }
    println!("{report}");
}
