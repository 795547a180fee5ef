//! cgroup v2: one cgroup per container under `<cgroup root>/gantry/<id>`, with the limits
//! of the bundle's `linux.resources` written as the v2 files (`memory.max`,
//! `memory.swap.max`, `cpu.max`, `cpu.weight`, `pids.max`, `io.weight`), OOM kills read
//! from `memory.events`, and the cgroup removed on delete (its processes killed through
//! `cgroup.kill` first).
//!
//! Only the unified (v2) hierarchy is supported. A host whose `/sys/fs/cgroup` is v1 or
//! hybrid (these build machines) has no v2 controllers: a bundle that asks for limits is
//! then refused with that reason, unless the caller asked to run without limits.
//! Device rules (`linux.resources.devices` plus the standard nodes) are enforced by a
//! device eBPF program attached to the cgroup (`devices.rs`).
//!
//! The container's init is cloned straight into its cgroup (`clone3` with
//! `CLONE_INTO_CGROUP`, as crun does) rather than moved there through `cgroup.procs`:
//! a move takes the kernel's cgroup threadgroup lock for writing, which waits for an RCU
//! grace period, 5-20 ms on these machines, more than the rest of a container's start.
//! Kernels without it (before 5.7) get the move.

use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
const SLICE: &str = "gantry";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path} is not a cgroup v2 hierarchy (this host has cgroup v1 or hybrid); limits cannot be applied. Run with --no-cgroups to run without them")]
    NoV2 { path: PathBuf },
    #[error("cgroup {path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: String,
        source: std::io::Error,
    },
    #[error("linux.resources.{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The limits, as the v2 files take them: (file, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub files: Vec<(&'static str, String)>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Translates OCI resources into v2 files, as runc and crun do (cpu shares map onto
    /// weights with the same formula).
    pub fn from_oci(r: &LinuxResources) -> Result<Limits, CgroupError> {
        let mut files = Vec::new();
        let max_or = |v: i64| {
            if v < 0 {
                "max".to_owned()
            } else {
                v.to_string()
            }
        };
        if let Some(m) = r.memory() {
            if let Some(limit) = m.limit() {
                files.push(("memory.max", max_or(limit)));
                if let Some(swap) = m.swap() {
                    // OCI's swap is memory+swap; v2 counts swap alone.
                    let value = match (limit, swap) {
                        (_, s) if s < 0 => "max".to_owned(),
                        (l, s) if l >= 0 && s >= l => (s - l).to_string(),
                        (l, s) => {
                            return Err(CgroupError::Invalid {
                                key: "memory.swap",
                                reason: format!("{s} is below the memory limit {l}"),
                            })
                        }
                    };
                    files.push(("memory.swap.max", value));
                }
            }
            if let Some(r) = m.reservation() {
                files.push(("memory.low", max_or(r)));
            }
        }
        if let Some(c) = r.cpu() {
            if c.quota().is_some() || c.period().is_some() {
                let quota = c.quota().map_or("max".to_owned(), |q| {
                    if q <= 0 {
                        "max".to_owned()
                    } else {
                        q.to_string()
                    }
                });
                let period = c.period().unwrap_or(100_000);
                files.push(("cpu.max", format!("{quota} {period}")));
            }
            if let Some(shares) = c.shares().filter(|s| *s > 0) {
                files.push(("cpu.weight", shares_to_weight(shares).to_string()));
            }
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                files.push(("cpuset.cpus", cpus.clone()));
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                files.push(("cpuset.mems", mems.clone()));
            }
        }
        // 0 means unset in OCI; a negative limit means none.
        if let Some(p) = r.pids().as_ref().filter(|p| p.limit() != 0) {
            files.push(("pids.max", max_or(p.limit())));
        }
        if let Some(b) = r.block_io() {
            if let Some(w) = b.weight() {
                if !(10..=1000).contains(&w) {
                    return Err(CgroupError::Invalid {
                        key: "blockIO.weight",
                        reason: format!("{w} is outside 10-1000"),
                    });
                }
                // blkio weights (10-1000) map onto io weights (1-10000).
                files.push((
                    "io.weight",
                    format!("default {}", 1 + (u32::from(w) - 10) * 9999 / 990),
                ));
            }
        }
        Ok(Limits { files })
    }
}

/// runc's conversion of cgroup v1 cpu shares (2-262144) to a v2 weight (1-10000).
fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Whether `path` is a cgroup2 mount.
pub fn is_v2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    fn io(&self, step: impl Into<String>) -> impl FnOnce(std::io::Error) -> CgroupError {
        let (path, step) = (self.path.clone(), step.into());
        move |source| CgroupError::Io { path, step, source }
    }

    /// Makes `<root>/gantry/<id>` with the controllers the limits need enabled on the way,
    /// and writes the limits.
    /// Makes the cgroup `rel` (relative, checked by [`cgroups_path`]) under `root`, its
    /// missing parents too, with the controllers the limits need enabled on the way down.
    pub fn create(
        root: &Path,
        rel: &Path,
        limits: &Limits,
        devices: &[super::devices::DeviceRule],
    ) -> Result<Cgroup, CgroupError> {
        if !is_v2(root) {
            return Err(CgroupError::NoV2 {
                path: root.to_owned(),
            });
        }
        let cg = Cgroup {
            path: root.join(rel),
        };
        let parent = cg.path.parent().unwrap_or(root);
        std::fs::create_dir_all(parent).map_err(cg.io("create its parent"))?;
        let mut controllers: Vec<&str> = limits
            .files
            .iter()
            .map(|(f, _)| f.split('.').next().unwrap_or(""))
            .collect();
        controllers.sort();
        controllers.dedup();
        let mut dir = root.to_owned();
        let mut ancestors = vec![dir.clone()];
        for part in rel.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            ancestors.push(dir.clone());
        }
        for dir in &ancestors {
            for c in &controllers {
                let file = dir.join("cgroup.subtree_control");
                std::fs::write(&file, format!("+{c}")).map_err(|source| CgroupError::Io {
                    path: dir.to_owned(),
                    step: format!("enable the {c} controller"),
                    source,
                })?;
            }
        }
        match std::fs::create_dir(&cg.path) {
            Ok(()) => {}
            // Left by a runtime that crashed: reuse it if nothing runs in it and nothing is
            // below it. A parent of other cgroups (a `cgroupsPath` of `/system.slice`) lists
            // no processes of its own, and `delete` would kill everything under it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let procs = std::fs::read_to_string(cg.path.join("cgroup.procs"))
                    .map_err(cg.io("read cgroup.procs"))?;
                let stat = std::fs::read_to_string(cg.path.join("cgroup.stat"))
                    .map_err(cg.io("read cgroup.stat"))?;
                let children = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("nr_descendants "))
                    .map(str::trim);
                if !procs.trim().is_empty() || children != Some("0") {
                    return Err(cg.io("create")(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "it exists and has processes or cgroups below it",
                    )));
                }
            }
            Err(e) => return Err(cg.io("create")(e)),
        }
        for (file, value) in &limits.files {
            if let Err(e) = std::fs::write(cg.path.join(file), value) {
                let _ = std::fs::remove_dir(&cg.path);
                return Err(cg.io(format!("write {value:?} to {file}"))(e));
            }
        }
        if let Err(reason) = super::devices::attach(&cg.path, devices) {
            let _ = std::fs::remove_dir(&cg.path);
            return Err(cg.io("device rules")(std::io::Error::other(reason)));
        }
        Ok(cg)
    }

    /// Where container `id`'s cgroup goes under the cgroup root: `linux.cgroupsPath` if the
    /// bundle has one (see [`cgroups_path`]), else `gantry/<id>`.
    pub fn relative_path(id: &str, cgroups_path: Option<&Path>) -> PathBuf {
        cgroups_path.map_or_else(|| Path::new(SLICE).join(id), Path::to_owned)
    }

    /// Clones a process straight into the cgroup (`clone3` with `CLONE_INTO_CGROUP`,
    /// Linux 5.7), with `flags` (namespaces) and SIGCHLD as its exit signal. The child runs
    /// `child` on a copy of the caller's stack, as after `fork`, and exits with what it
    /// returns. Returns the child's pid, or `None` where the kernel (or a seccomp filter
    /// around this runtime) does not offer `clone3` or `CLONE_INTO_CGROUP`: the caller then
    /// clones and [`add`](Self::add)s.
    ///
    /// Born in its cgroup, the process is never moved: writing a pid to `cgroup.procs`
    /// takes the cgroup threadgroup lock for writing, which waits for an RCU grace period
    /// (5-20 ms on these machines, as long as the rest of a container's start).
    ///
    /// # Safety
    ///
    /// The caller must be single-threaded (the child gets a copy of this thread only),
    /// and `child` must not return into code that expects to run in the parent: it ends
    /// in `execve` or its return value becomes the exit status.
    pub unsafe fn clone_into(
        &self,
        flags: nix::sched::CloneFlags,
        child: &mut dyn FnMut() -> isize,
    ) -> Result<Option<nix::unistd::Pid>, nix::errno::Errno> {
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let fd = nix::fcntl::open(
            &self.path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: open just returned this descriptor and nothing else owns it.
        let dir = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: `args` is a valid clone_args of the size passed; without a stack, the
        // child continues on a copy of this one in its own address space (no CLONE_VM),
        // as after fork, which the caller's single thread makes consistent.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match rc {
            0 => {
                let code = child();
                // SAFETY: _exit ends the child without running the parent's destructors
                // or flushing buffers it shares with the parent.
                unsafe { libc::_exit(code as i32) }
            }
            pid if pid > 0 => Ok(Some(nix::unistd::Pid::from_raw(pid as i32))),
            _ => match nix::errno::Errno::last() {
                // No clone3 (or filtered out), or no CLONE_INTO_CGROUP (Linux 5.3-5.6).
                nix::errno::Errno::ENOSYS
                | nix::errno::Errno::E2BIG
                | nix::errno::Errno::EINVAL => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .map_err(self.io(format!("add process {pid}")))
    }

    /// How many times the OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Kills what is left in the cgroup and removes it; a cgroup that is gone is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        if !self.path.exists() {
            return Ok(());
        }
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // Busy until the killed processes are reaped.
                Err(e)
                    if std::time::Instant::now() < deadline
                        && e.raw_os_error() == Some(libc::EBUSY) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(self.io("remove")(e)),
            }
        }
    }
}

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Checks `linux.cgroupsPath` and makes it relative to the cgroup root: an absolute path
/// is taken from the root (`/a/b` is `<root>/a/b`), a relative one goes under Gantry's own
/// `gantry/` (the spec leaves where to the runtime). Refused: systemd's `slice:prefix:name`
/// form (there is no systemd on Gantry; engines have a cgroupfs mode), `.` and `..`, a
/// path that is the root itself, and parts named like the kernel's interface files.
pub fn cgroups_path(value: &str) -> Result<PathBuf, String> {
    if value.contains(':') {
        return Err(format!(
            "{value:?} is systemd's slice:prefix:name form; gantry-runtime manages cgroupfs \
             paths only (set the engine's cgroup manager to cgroupfs)"
        ));
    }
    let p = Path::new(value);
    let mut rel = if p.is_absolute() {
        PathBuf::new()
    } else {
        PathBuf::from(SLICE)
    };
    for c in p.components() {
        match c {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(n) => {
                let name = n.to_string_lossy();
                if name.starts_with("cgroup.") || name.contains('\n') {
                    return Err(format!("{value:?}: part {name:?} is not a cgroup name"));
                }
                rel.push(n);
            }
            _ => return Err(format!("{value:?} has a \".\" or \"..\" part")),
        }
    }
    if rel.as_os_str().is_empty() || rel == Path::new(SLICE) {
        return Err(format!("{value:?} names no cgroup of its own"));
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_paths_are_taken_from_the_root_or_under_gantry_and_checked() {
        assert_eq!(
            cgroups_path("/kubepods/pod1/c1"),
            Ok(PathBuf::from("kubepods/pod1/c1"))
        );
        assert_eq!(cgroups_path("pod1/c1"), Ok(PathBuf::from("gantry/pod1/c1")));
        for bad in [
            "system.slice:crio:c1",
            "/a/../b",
            "/",
            "",
            "/gantry",
            "/a/cgroup.procs",
            "./x",
        ] {
            assert!(cgroups_path(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(cgroups_path("system.slice:crio:c1")
            .unwrap_err()
            .contains("cgroupfs"));
    }

    fn resources(json: serde_json::Value) -> LinuxResources {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn oci_resources_become_v2_files() {
        let r = resources(serde_json::json!({
            "memory": { "limit": 268435456, "swap": 536870912 },
            "cpu": { "quota": 50000, "period": 100000, "shares": 1024 },
            "pids": { "limit": 64 },
            "blockIO": { "weight": 500 },
        }));
        let l = Limits::from_oci(&r).unwrap();
        let get = |f: &str| {
            l.files
                .iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("memory.max").as_deref(), Some("268435456"));
        assert_eq!(get("memory.swap.max").as_deref(), Some("268435456"));
        assert_eq!(get("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(get("cpu.weight").as_deref(), Some("39"));
        assert_eq!(get("pids.max").as_deref(), Some("64"));
        assert_eq!(get("io.weight").as_deref(), Some("default 4950"));
    }

    #[test]
    fn unlimited_values_are_max_and_bad_swap_is_refused() {
        let l = Limits::from_oci(&resources(serde_json::json!({
            "memory": { "limit": -1, "swap": -1 }, "pids": { "limit": -1 }, "cpu": { "quota": -1 },
        })))
        .unwrap();
        assert!(l.files.contains(&("memory.max", "max".into())));
        assert!(l.files.contains(&("memory.swap.max", "max".into())));
        assert!(l.files.contains(&("pids.max", "max".into())));
        assert!(l.files.contains(&("cpu.max", "max 100000".into())));
        let err = Limits::from_oci(&resources(
            serde_json::json!({ "memory": { "limit": 100, "swap": 50 } }),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("memory.swap"), "{err}");
    }

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn a_v1_or_hybrid_root_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let err = Cgroup::create(dir.path(), Path::new("gantry/c1"), &Limits::default(), &[])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not a cgroup v2 hierarchy") && msg.contains("--no-cgroups"),
            "{msg}"
        );
    }
}
