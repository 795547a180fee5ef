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

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Value};

use super::caps::docker_default_sets;
use super::seccomp::Profile;
use crate::manifest::ImageConfig;
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
    /// Bind mounts of host directories (named volumes): host path, container path, read-only.
    pub volumes: Vec<(PathBuf, String, bool)>,
    /// cgroup v2 limits: `memory.max` in bytes, CPU in thousandths of a CPU, `pids.max`.
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub pids: Option<u64>,
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
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|errno| FromImageError::Mount {
        path: rootfs.clone(),
        errno,
    })?;
    let mut spec = spec_for(&config, &rootfs, opts).map_err(bad)?;
    if let Some(text) = &opts.resolv_conf {
        let path = bundle.join("resolv.conf");
        std::fs::write(&path, text).map_err(io(&path))?;
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            mounts.push(json!({
                "destination": "/etc/resolv.conf", "type": "bind", "source": path,
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
            }));
        }
    }
    let path = bundle.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap_or_default())
        .map_err(io(&path))?;
    Ok(())
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
            "terminal": false,
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

/// `uid[:gid]`, `name[:group]` or empty (root), resolved in the image's own files.
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[2].parse::<u32>() == Ok(uid))
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(0),
        ),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == u)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => std::fs::read_to_string(rootfs.join("etc/group"))
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
