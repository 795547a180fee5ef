//! Containers started from images in the store get a bundle made here, with Docker's secure
//! defaults: the image's layers as overlayfs lower dirs under a per-container upper dir,
//! the 14 default capabilities (none ambient; CAP_MKNOD only where cgroup v2 device rules
//! can be enforced), `no_new_privs`, Docker's default seccomp
//! profile, Docker's masked and read-only paths, and new mount, PID, IPC, UTS, network and
//! cgroup namespaces. The process comes from the image config (`Entrypoint` + `Cmd`,
//! `Env`, `WorkingDir`, `User`), overridden by the caller.
//!
//! Networking follows [`RunOptions::network`]: `none` and `bridge` get a new network
//! namespace (the bridge is attached by [`crate::network::attach`] once the container
//! exists), `host` shares the caller's. A generated `resolv.conf` is written into the
//! bundle and bind-mounted read-only over the image's `/etc/resolv.conf`.
//!
//! **DNS that changes while a container runs.** A machine often starts a container before
//! its DHCP lease arrives (the image is in the store; nothing else waits for the network),
//! and a renewed lease may name other servers. Choice: a running container follows the
//! host. `gantry run` lives as long as its container, and its [`ResolvFollower`] watches
//! the host's resolver file (PID 1's `/run/gantry/resolv.conf`) with inotify and rewrites
//! the bundle's copy *in place* when it changes, as Docker does with its per-container
//! file. In place, not temp file and rename: the bind mount holds the inode, and a file
//! renamed over it would never be seen inside. The new text is written over the old and
//! the file then cut to length, so a reader sees whole old or new lines, never an empty
//! file; there is no fsync, as the file is on tmpfs and made afresh at every start. The
//! alternative, PID 1 holding containers back until the network is up, would delay every
//! container (even `network = "none"` ones) by the DHCP wait, hang on a network that never
//! answers, and still miss a later lease with other servers. glibc (2.26 and later)
//! re-reads a changed `resolv.conf` and musl and busybox read it at every lookup; a
//! program that caches it itself sees the new servers when it restarts.

use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Value};

use super::caps::docker_default_sets;
use super::seccomp::Profile;
use crate::manifest::ImageConfig;
use crate::network::dns::{self, HostDns};
use crate::network::NetworkMode;
use crate::store::{ImageRecord, Store};
use crate::Digest;

/// Docker's masked paths.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum FromImageError {
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount the root file system at {path}: {errno}")]
    Mount {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("cannot watch {path} for resolver changes: {errno}")]
    Watch {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// What the caller sets on top of the image.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's `Cmd` (and, with `entrypoint`, its `Entrypoint`).
    pub command: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub hostname: Option<String>,
    /// `uid[:gid]` or a name from the image's `/etc/passwd`.
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub network: NetworkMode,
    /// The container's `/etc/resolv.conf` (see [`crate::network::dns`]); the image's own
    /// when absent.
    pub resolv_conf: Option<String>,
    /// The container's `/etc/hosts` (see [`hosts_file`]); the image's own when absent.
    pub hosts: Option<String>,
    /// Bind mounts of host directories (named volumes): host path, container path, read-only.
    pub volumes: Vec<(PathBuf, String, bool)>,
    /// cgroup v2 limits: `memory.max` in bytes, CPU in thousandths of a CPU, `pids.max`.
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub pids: Option<u64>,
    /// `process.terminal`, with `TERM=xterm` unless the image or caller set `TERM`, as
    /// Docker does for `-t`.
    pub terminal: bool,
}

/// A named volume, `NAME:/path[:ro|:rw]`: the name (letters, digits, `_.-`, at most 63,
/// never a host path), the absolute path in the container, and whether it is read-only.
pub fn parse_volume(v: &str) -> Result<(String, String, bool), String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (name, path, ro) = match parts[..] {
        [n, p] => (n, p, false),
        [n, p, "ro"] => (n, p, true),
        [n, p, "rw"] => (n, p, false),
        _ => return Err(format!("{v:?} is not NAME:/path[:ro]")),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !name_ok {
        return Err(format!(
            "{v:?}: {name:?} is not a volume name (host paths are not allowed)"
        ));
    }
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!(
            "{v:?}: {path:?} is not an absolute path inside the container"
        ));
    }
    Ok((name.to_owned(), path.to_owned(), ro))
}

/// Makes `<bundle>/config.json` and mounts `<bundle>/rootfs` (overlayfs of the image's
/// layers over `<bundle>/upper`). Undo with [`remove_bundle`].
///
/// The bundle and its parent are 0700 and the overlay is mounted `nodev,nosuid`, so that no
/// host process can use the image's device nodes or setuid files. The container's root
/// inherits `nosuid`, which changes nothing: its processes run with `no_new_privs`.
pub fn make_bundle(
    store: &Store,
    image: &ImageRecord,
    bundle: &Path,
    opts: &RunOptions,
) -> Result<(), FromImageError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FromImageError::Io { path, source }
    };
    let bad = |reason: String| FromImageError::Image {
        image: image.name.clone(),
        reason,
    };
    let config_digest: Digest = image.config.parse().map_err(|e: &str| bad(e.to_owned()))?;
    let config_path = store.blobs().path(&config_digest);
    let config_bytes = std::fs::read(&config_path).map_err(io(&config_path))?;
    let config = ImageConfig::parse(&config_bytes, &config_digest, image.layers.len())
        .map_err(|e| bad(e.to_string()))?;

    let (rootfs, upper, work) = (
        bundle.join("rootfs"),
        bundle.join("upper"),
        bundle.join("work"),
    );
    // The merged view holds the image's device nodes and setuid files: only root may
    // enter the bundle, and the host's mount is nodev,nosuid.
    if let Some(parent) = bundle.parent() {
        crate::fsutil::private_dir(parent).map_err(io(parent))?;
    }
    crate::fsutil::private_dir(bundle).map_err(io(bundle))?;
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut lowers = Vec::new();
    for l in image.layers.iter().rev() {
        let chain: Digest = l.chain_id.parse().map_err(|e: &str| bad(e.to_owned()))?;
        if !store.has_layer(&chain) {
            return Err(bad(format!("layer {} is not in the store", l.chain_id)));
        }
        lowers.push(store.layer_dir(&chain).display().to_string());
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(data.as_str()),
    )
    .map_err(|errno| FromImageError::Mount {
        path: rootfs.clone(),
        errno,
    })?;
    let mut spec = spec_for(&config, &rootfs, opts).map_err(bad)?;
    let generated = [
        (
            &opts.resolv_conf,
            resolv_conf_path(bundle),
            "/etc/resolv.conf",
        ),
        (&opts.hosts, bundle.join("hosts"), "/etc/hosts"),
    ];
    for (text, path, destination) in generated {
        let Some(text) = text else {
            continue;
        };
        std::fs::write(&path, text).map_err(io(&path))?;
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            mounts.push(json!({
                "destination": destination, "type": "bind", "source": path,
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
            }));
        }
    }
    let path = bundle.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap_or_default())
        .map_err(io(&path))?;
    Ok(())
}

/// A container's `/etc/hosts`, as Docker writes one: localhost for IPv4 and IPv6, the
/// container's own host name on 127.0.1.1 (Debian's habit; its address on the bridge is
/// not known before the network is attached), then `extra` (`--add-host`, the machine's
/// `network.hosts`) in order.
pub fn hosts_file(hostname: Option<&str>, extra: &[(String, std::net::IpAddr)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(h) = hostname {
        out.push_str(&format!("127.0.1.1\t{h}\n"));
    }
    for (name, addr) in extra {
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    out
}

/// Parses `--add-host NAME:IP` (IPv6 too: the name ends at the first `:`).
pub fn parse_add_host(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:IP"))?;
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !valid {
        return Err(format!("{s:?}: {name:?} is not a host name"));
    }
    let addr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    Ok((name.to_owned(), addr))
}

/// The bundle's copy of the container's `/etc/resolv.conf`.
pub fn resolv_conf_path(bundle: &Path) -> PathBuf {
    bundle.join("resolv.conf")
}

/// How a container's `/etc/resolv.conf` is made from the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDns {
    pub network: NetworkMode,
    /// Servers for a bridged container when the host has only loopback ones.
    pub upstream: Vec<Ipv4Addr>,
}

impl ContainerDns {
    /// The file's text for these host settings; None for `none`, which keeps the image's.
    pub fn render(&self, host: &HostDns) -> Option<String> {
        match self.network {
            NetworkMode::Bridge => Some(dns::bridged_resolv_conf(host, &self.upstream)),
            NetworkMode::Host => Some(dns::host_resolv_conf(host)),
            NetworkMode::None => None,
        }
    }
}

/// The host's resolver settings from `path`; none when the file does not exist (yet).
pub fn read_host_dns(path: &Path) -> std::io::Result<HostDns> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(HostDns::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostDns::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the content of the existing file `path` with `text`, keeping its inode (a
/// bind mount of it shows the new text); false when it already held `text`. The new text
/// goes over the old before the file is cut to length, so it is never seen empty.
pub fn rewrite_in_place(path: &Path, text: &str) -> std::io::Result<bool> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // One byte past the new text is enough to know the file differs; a file grown huge
    // (it is bound read-only, but still) is never read whole.
    let mut old = Vec::new();
    (&mut file)
        .take(text.len() as u64 + 1)
        .read_to_end(&mut old)?;
    if old == text.as_bytes() {
        return Ok(false);
    }
    file.rewind()?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)?;
    Ok(true)
}

/// Logged (with `container=` and `file=`) when a running container's `/etc/resolv.conf`
/// was rewritten because the host's changed.
pub const RESOLV_UPDATED: &str = "container resolv.conf updated from the host's";

/// Keeps a running container's `/etc/resolv.conf` (the bundle's copy) in step with the
/// host's resolver file, on a thread of its own, until dropped. See the module docs.
#[derive(Debug)]
pub struct ResolvFollower {
    /// Dropping it wakes the thread (its read end sees the hang-up) to end.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl ResolvFollower {
    /// Watches `host` and rewrites `target` from it with `dns`, at once and at every change.
    ///
    /// `host` is followed through symlinks as they are now, and the directory holding the
    /// file is watched (the file is usually replaced by a rename). Start it after the
    /// container exists, not before a fork: it is a thread.
    pub fn start(
        host: &Path,
        target: &Path,
        dns: ContainerDns,
        container: &str,
    ) -> Result<ResolvFollower, FromImageError> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let watch_err = |path: &Path| {
            let path = path.to_owned();
            move |errno| FromImageError::Watch { path, errno }
        };
        let host = std::fs::canonicalize(host).unwrap_or_else(|_| host.to_owned());
        let (dir, name) = match (host.parent(), host.file_name()) {
            (Some(d), Some(n)) if !d.as_os_str().is_empty() => (d.to_owned(), n.to_owned()),
            _ => (PathBuf::from("."), host.as_os_str().to_owned()),
        };
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(watch_err(&dir))?;
        inotify
            .add_watch(
                &dir,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE,
            )
            .map_err(watch_err(&dir))?;
        let (stop_rx, stop_tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(watch_err(&dir))?;
        let sync = Sync {
            host: dir.join(&name),
            target: target.to_owned(),
            dns,
            container: container.to_owned(),
        };
        // What changed between the bundle being made and the watch being set.
        sync.run();
        let thread = std::thread::Builder::new()
            .name("resolv-follow".into())
            .spawn(move || follow(&inotify, &stop_rx, &name, &sync))
            .map_err(|e| FromImageError::Io {
                path: dir.clone(),
                source: e,
            })?;
        Ok(ResolvFollower {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for ResolvFollower {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One rewrite of a container's file from the host's.
struct Sync {
    host: PathBuf,
    target: PathBuf,
    dns: ContainerDns,
    container: String,
}

impl Sync {
    fn run(&self) {
        let text = match read_host_dns(&self.host) {
            Ok(host) => self.dns.render(&host),
            Err(e) => {
                tracing::warn!(container = %self.container, file = %self.host.display(), error = %e, "cannot read the host's resolver file");
                return;
            }
        };
        let Some(text) = text else { return };
        match rewrite_in_place(&self.target, &text) {
            Ok(true) => {
                tracing::info!(container = %self.container, file = %self.target.display(), "{RESOLV_UPDATED}")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(container = %self.container, file = %self.target.display(), error = %e, "cannot update the container's resolv.conf")
            }
        }
    }
}

/// The follower thread: a rewrite for every event naming the host file, until `stop`
/// hangs up.
fn follow(inotify: &nix::sys::inotify::Inotify, stop: &OwnedFd, name: &OsString, sync: &Sync) {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::AddWatchFlags;
    loop {
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(container = %sync.container, error = %e, "resolver watch failed; the container keeps its resolv.conf");
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        match inotify.read_events() {
            Ok(events) => {
                if events.iter().any(|e| {
                    e.name.as_ref() == Some(name) || e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                }) {
                    sync.run();
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(container = %sync.container, error = %e, "resolver watch failed; the container keeps its resolv.conf");
                return;
            }
        }
    }
}

/// Unmounts the root file system and removes the bundle directory.
pub fn remove_bundle(bundle: &Path) -> Result<(), FromImageError> {
    let rootfs = bundle.join("rootfs");
    match umount2(&rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => {
            return Err(FromImageError::Mount {
                path: rootfs,
                errno,
            })
        }
    }
    match std::fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FromImageError::Io {
            path: bundle.to_owned(),
            source,
        }),
    }
}

/// The OCI config for a container of this image, with Docker's defaults.
fn spec_for(config: &ImageConfig, rootfs: &Path, opts: &RunOptions) -> Result<Value, String> {
    let d = &config.config;
    let entrypoint = opts
        .entrypoint
        .clone()
        .or_else(|| d.entrypoint.clone())
        .unwrap_or_default();
    let cmd = if opts.command.is_empty() {
        if opts.entrypoint.is_some() {
            Vec::new()
        } else {
            d.cmd.clone().unwrap_or_default()
        }
    } else {
        opts.command.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err("no command: the image has no Entrypoint or Cmd and none was given".into());
    }
    let mut env: Vec<String> = d.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if opts.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    let user_text = opts
        .user
        .clone()
        .or_else(|| d.user.clone())
        .unwrap_or_default();
    let (uid, gid) = resolve_user(rootfs, &user_text)?;
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| d.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let sets = docker_default_sets(super::cgroup::is_v2(Path::new(super::cgroup::DEFAULT_ROOT)));
    let cap_names: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| sets.bounding & c.bitmask() != 0)
        .map(|c| c.to_string())
        .collect();
    let mut spec = json!({
        "ociVersion": super::state::OCI_VERSION,
        "root": { "path": rootfs, "readonly": false },
        "process": {
            "terminal": opts.terminal,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": cap_names, "effective": cap_names, "permitted": cap_names,
            },
            "noNewPrivileges": true,
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                { "type": "network" }, { "type": "cgroup" },
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": Profile::docker_default(sets.bounding).to_oci_json(),
        },
    });
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for (host, path, ro) in &opts.volumes {
            let mut options = vec!["rbind", "nosuid", "nodev"];
            if *ro {
                options.push("ro");
            }
            mounts.push(json!({
                "destination": path, "type": "bind", "source": host, "options": options,
            }));
        }
    }
    let mut resources = serde_json::Map::new();
    if let Some(m) = opts.memory_bytes {
        resources.insert("memory".into(), json!({ "limit": m }));
    }
    if let Some(c) = opts.cpu_millis {
        // cpu.max = quota per period; 100 ms periods.
        resources.insert(
            "cpu".into(),
            json!({ "quota": c.saturating_mul(100), "period": 100_000 }),
        );
    }
    if let Some(p) = opts.pids {
        resources.insert("pids".into(), json!({ "limit": p }));
    }
    if !resources.is_empty() {
        spec["linux"]["resources"] = Value::Object(resources);
    }
    if opts.network == NetworkMode::Host {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    if let Some(h) = &opts.hostname {
        spec["hostname"] = h.clone().into();
    }
    Ok(spec)
}

/// The text of `path` in the image (see [`super::inroot`]); `None` if it has none.
fn image_file(rootfs: &Path, path: &str) -> Result<Option<String>, super::inroot::InRootError> {
    Ok(super::inroot::read(rootfs, Path::new(path))?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// `uid[:gid]`, `name[:group]` or empty (root), resolved in the image's own files.
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd =
        image_file(rootfs, "/etc/passwd").map_err(|e| format!("look up user {u:?}: {e}"))?;
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd
                .iter()
                .flat_map(|p| p.lines())
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[2].parse::<u32>() == Ok(uid))
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(0),
        ),
        Err(_) => passwd
            .iter()
            .flat_map(|p| p.lines())
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == u)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| match passwd {
                None => format!("user {u:?}: the image has no /etc/passwd"),
                Some(_) => format!("user {u:?} is not in the image's /etc/passwd"),
            })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = image_file(rootfs, "/etc/group")
                    .map_err(|e| format!("look up group {g:?}: {e}"))?;
                group
                    .iter()
                    .flat_map(|t| t.lines())
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| match group {
                        None => format!("group {g:?}: the image has no /etc/group"),
                        Some(_) => format!("group {g:?} is not in the image's /etc/group"),
                    })?
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    #[test]
    fn hosts_files_name_localhost_the_container_and_the_extra_hosts() {
        let extra = vec![
            parse_add_host("node-2:10.123.0.12").unwrap(),
            parse_add_host("v6.example:[2001:db8::1]").unwrap(),
        ];
        assert_eq!(
            hosts_file(Some("web"), &extra),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             127.0.1.1\tweb\n10.123.0.12\tnode-2\n2001:db8::1\tv6.example\n"
        );
        assert_eq!(
            parse_add_host("v6:2001:db8::2").unwrap().1.to_string(),
            "2001:db8::2"
        );
        for (bad, why) in [
            ("node-2", "is not NAME:IP"),
            ("bad name:10.0.0.1", "is not a host name"),
            ("-x:10.0.0.1", "is not a host name"),
            ("x:10.0.0", "is not an IP address"),
            ("a\nb:10.0.0.1", "is not a host name"),
        ] {
            let e = parse_add_host(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rewrites_keep_the_inode_and_cut_the_old_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch a.example\n",
        )
        .unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert!(rewrite_in_place(&path, "nameserver 10.0.2.3\n").unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        assert!(!rewrite_in_place(&path, "nameserver 10.0.2.3\n").unwrap());
        let missing = dir.path().join("gone");
        assert!(
            rewrite_in_place(&missing, "x").is_err(),
            "never creates a file"
        );
        assert!(!missing.exists());
    }

    fn wait_for_text(path: &Path, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = std::fs::read_to_string(path).unwrap();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} holds {got:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_containers_resolv_conf_follows_the_hosts_renames_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("run");
        std::fs::create_dir(&host_dir).unwrap();
        let host = host_dir.join("resolv.conf");
        let target = dir.path().join("bundle-resolv.conf");
        let dns = ContainerDns {
            network: NetworkMode::Bridge,
            upstream: vec![Ipv4Addr::new(8, 8, 8, 8)],
        };
        // Made before the lease: no host file yet, the fallback server.
        let first = dns.render(&read_host_dns(&host).unwrap()).unwrap();
        assert_eq!(first, "# generated by gantry\nnameserver 8.8.8.8\n");
        std::fs::write(&target, &first).unwrap();
        let ino = std::fs::metadata(&target).unwrap().ino();
        // A change before the watch starts is caught up at once.
        crate::fsutil::write_atomic(&host, b"nameserver 127.0.0.53\nsearch lan\n").unwrap();
        let follower = ResolvFollower::start(&host, &target, dns, "web").unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "# generated by gantry\nnameserver 8.8.8.8\nsearch lan\n"
        );
        // PID 1 renames a new file into place when the lease arrives.
        crate::fsutil::write_atomic(&host, b"nameserver 10.0.2.3\n").unwrap();
        wait_for_text(&target, "# generated by gantry\nnameserver 10.0.2.3\n");
        // Other files in the directory are not the host's resolver file.
        std::fs::write(host_dir.join("network.json"), "{}").unwrap();
        std::fs::write(host_dir.join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        wait_for_text(&target, "# generated by gantry\nnameserver 192.0.2.1\n");
        assert_eq!(std::fs::metadata(&target).unwrap().ino(), ino, "same inode");
        drop(follower);
        crate::fsutil::write_atomic(&host, b"nameserver 192.0.2.2\n").unwrap();
        assert!(
            std::fs::read_to_string(&target)
                .unwrap()
                .contains("192.0.2.1"),
            "a dropped follower has stopped (its thread was joined)"
        );
    }

    #[test]
    fn users_resolve_by_number_and_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/srv:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(dir.path(), "").unwrap(), (0, 0));
        assert_eq!(resolve_user(dir.path(), "web").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(dir.path(), "1000").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(dir.path(), "web:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_user(dir.path(), "7:8").unwrap(), (7, 8));
        assert!(resolve_user(dir.path(), "nobody")
            .unwrap_err()
            .contains("nobody"));
    }

    /// Hostile image: `etc/passwd` a link to the host's `/dev/zero`, a FIFO, or a link out
    /// of the root. The lookup must end at once with an error naming the file, never
    /// block on the FIFO, read the device or the host's file.
    #[test]
    fn a_hostile_passwd_fails_the_lookup_at_once() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "web:x:1:1::/:/bin/sh\n").unwrap();
        for make in ["zero", "fifo", "host"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("etc")).unwrap();
            let passwd = dir.path().join("etc/passwd");
            match make {
                "zero" => std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap(),
                "fifo" => nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::S_IRWXU).unwrap(),
                _ => std::os::unix::fs::symlink(host.path().join("passwd"), &passwd).unwrap(),
            }
            let e = resolve_user(dir.path(), "web").unwrap_err();
            assert!(e.contains("etc/passwd"), "{make}: {e}");
        }
    }
}
