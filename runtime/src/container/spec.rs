//! A bundle's `config.json`, parsed with the `oci-spec` crate and turned, once, into the
//! typed [`ContainerConfig`] the rest of the runtime works on. Anything the runtime does not
//! implement yet is refused by name (`linux.seccomp`, `hooks`, …) rather than ignored: a
//! container that silently runs without the isolation its bundle asks for is worse than one
//! that does not start.

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

pub use super::userns::IdMap;
use super::userns::{check_maps, must_map, MapError, GID_MAPS, UID_MAPS};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bundle {bundle}: cannot read config.json: {reason}")]
    Load { bundle: PathBuf, reason: String },
    #[error("bundle {bundle}: {key}: {reason}")]
    Invalid {
        bundle: PathBuf,
        key: String,
        reason: String,
    },
    #[error("bundle {bundle}: {key} is not supported by gantry-runtime yet")]
    Unsupported { bundle: PathBuf, key: String },
}

/// A namespace the container gets: a new one, or an existing one joined by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsKind {
    Mount,
    Pid,
    Uts,
    Ipc,
    Net,
    Cgroup,
    User,
}

impl NsKind {
    pub fn clone_flag(self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags as F;
        match self {
            NsKind::Mount => F::CLONE_NEWNS,
            NsKind::Pid => F::CLONE_NEWPID,
            NsKind::Uts => F::CLONE_NEWUTS,
            NsKind::Ipc => F::CLONE_NEWIPC,
            NsKind::Net => F::CLONE_NEWNET,
            NsKind::Cgroup => F::CLONE_NEWCGROUP,
            NsKind::User => F::CLONE_NEWUSER,
        }
    }

    /// The name under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Mount => "mnt",
            NsKind::Pid => "pid",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Net => "net",
            NsKind::Cgroup => "cgroup",
            NsKind::User => "user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub kind: NsKind,
    /// Join this namespace instead of making a new one.
    pub path: Option<PathBuf>,
}

/// One mount of `mounts`, with its options split into flags and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Absolute, with no `..`: resolved inside the root file system.
    pub destination: PathBuf,
    pub fs_type: String,
    pub source: Option<PathBuf>,
    pub flags: MsFlags,
    /// Propagation to apply after mounting (`rprivate`, `shared`, …).
    pub propagation: MsFlags,
    /// Options the kernel reads as data (`mode=755`, `size=65536k`, …).
    pub data: String,
}

impl MountSpec {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// Capability sets, each a bit mask indexed by capability number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub caps: CapSets,
    /// `process.terminal`: a pty for stdio, handed to the caller over `--console-socket`.
    pub terminal: bool,
}

/// What the runtime needs from a bundle, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub rootfs_readonly: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub namespaces: Vec<Namespace>,
    pub mounts: Vec<MountSpec>,
    pub process: ProcessSpec,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub rootfs_propagation: MsFlags,
    pub sysctl: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// `linux.seccomp`, if the bundle has one.
    pub seccomp: Option<super::seccomp::Profile>,
    /// `linux.cgroupsPath`, relative to the cgroup root (see `cgroup::cgroups_path`).
    pub cgroups_path: Option<PathBuf>,
    /// `linux.resources` as cgroup v2 files.
    pub limits: super::cgroup::Limits,
    /// `linux.resources.devices`, in order.
    pub devices: Vec<super::devices::DeviceRule>,
    /// `linux.devices`: the nodes made in the container's `/dev`.
    pub nodes: Vec<super::devices::Node>,
    pub hooks: super::hooks::Hooks,
    /// `linux.uidMappings` and `linux.gidMappings`, checked: non-empty exactly when the
    /// container gets a new user namespace.
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
}

impl ContainerConfig {
    pub fn has_new(&self, kind: NsKind) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.kind == kind && n.path.is_none())
    }

    /// Whether the container has a user namespace of its own, new or joined by path.
    pub fn has_userns(&self) -> bool {
        self.namespaces.iter().any(|n| n.kind == NsKind::User)
    }

    /// Reads and checks `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<Self, SpecError> {
        let bundle = std::path::absolute(bundle).map_err(|e| SpecError::Load {
            bundle: bundle.to_owned(),
            reason: e.to_string(),
        })?;
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| SpecError::Load {
            bundle: bundle.clone(),
            reason: e.to_string(),
        })?;
        Self::from_spec(&bundle, &spec)
    }

    pub fn from_spec(bundle: &Path, spec: &Spec) -> Result<Self, SpecError> {
        let invalid = |key: &str, reason: String| SpecError::Invalid {
            bundle: bundle.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let unsupported = |key: &str| SpecError::Unsupported {
            bundle: bundle.to_owned(),
            key: key.to_owned(),
        };
        refuse_unsupported(spec).map_err(|key| unsupported(&key))?;

        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| invalid("root", "missing".into()))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(invalid(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ));
        }

        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("process", "missing".into()))?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(invalid("process.args", "empty".into()));
        }
        if !process.cwd().is_absolute() {
            return Err(invalid(
                "process.cwd",
                format!("{} is not absolute", process.cwd().display()),
            ));
        }
        let env = process.env().clone().unwrap_or_default();
        if let Some(bad) = env.iter().find(|e| !e.contains('=') || e.contains('\0')) {
            return Err(invalid("process.env", format!("{bad:?} is not NAME=value")));
        }
        let mut rlimits = Vec::new();
        for r in process.rlimits().iter().flatten() {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let resource = rlimit_resource(&name).ok_or_else(|| {
                invalid("process.rlimits", format!("{name:?} is not a known rlimit"))
            })?;
            if r.soft() > r.hard() {
                return Err(invalid(
                    "process.rlimits",
                    format!("{name}: soft {} is above hard {}", r.soft(), r.hard()),
                ));
            }
            rlimits.push(Rlimit {
                resource,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
        let caps = match process.capabilities() {
            Some(c) => CapSets {
                bounding: cap_mask(c.bounding().as_ref())
                    .map_err(|e| invalid("process.capabilities.bounding", e))?,
                effective: cap_mask(c.effective().as_ref())
                    .map_err(|e| invalid("process.capabilities.effective", e))?,
                permitted: cap_mask(c.permitted().as_ref())
                    .map_err(|e| invalid("process.capabilities.permitted", e))?,
                inheritable: cap_mask(c.inheritable().as_ref())
                    .map_err(|e| invalid("process.capabilities.inheritable", e))?,
                ambient: cap_mask(c.ambient().as_ref())
                    .map_err(|e| invalid("process.capabilities.ambient", e))?,
            },
            None => CapSets::default(),
        };
        let user = process.user();
        let process = ProcessSpec {
            args,
            env,
            cwd: process.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            rlimits,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            oom_score_adj: process.oom_score_adj(),
            caps,
            terminal: process.terminal().unwrap_or(false),
        };

        let linux = spec.linux().clone().unwrap_or_default();
        let mut namespaces: Vec<Namespace> = Vec::new();
        for ns in linux.namespaces().iter().flatten() {
            let kind = match ns.typ() {
                LinuxNamespaceType::Mount => NsKind::Mount,
                LinuxNamespaceType::Pid => NsKind::Pid,
                LinuxNamespaceType::Uts => NsKind::Uts,
                LinuxNamespaceType::Ipc => NsKind::Ipc,
                LinuxNamespaceType::Network => NsKind::Net,
                LinuxNamespaceType::Cgroup => NsKind::Cgroup,
                LinuxNamespaceType::User => NsKind::User,
                other => return Err(unsupported(&format!("linux.namespaces type {other}"))),
            };
            if namespaces.iter().any(|n| n.kind == kind) {
                return Err(invalid(
                    "linux.namespaces",
                    format!("{} appears twice", kind.proc_name()),
                ));
            }
            namespaces.push(Namespace {
                kind,
                path: ns.path().clone(),
            });
        }
        if !namespaces.iter().any(|n| n.kind == NsKind::Mount) {
            return Err(invalid(
                "linux.namespaces",
                "a mount namespace is required (the root file system is set up in it)".into(),
            ));
        }

        let mut mounts = Vec::new();
        for (i, m) in spec.mounts().iter().flatten().enumerate() {
            let key = format!("mounts[{i}]");
            let destination = inside_path(m.destination())
                .map_err(|r| invalid(&format!("{key}.destination"), r))?;
            let (flags, propagation, data) = mount_options(m.options().as_deref().unwrap_or(&[]));
            let fs_type = m.typ().clone().unwrap_or_else(|| {
                if flags.contains(MsFlags::MS_BIND) {
                    "bind".to_owned()
                } else {
                    String::new()
                }
            });
            if fs_type.is_empty() {
                return Err(invalid(&key, "no type and not a bind mount".into()));
            }
            if flags.contains(MsFlags::MS_BIND) && m.source().is_none() {
                return Err(invalid(&key, "bind mount without a source".into()));
            }
            // A relative bind source is relative to the bundle, as in runc.
            let source = m.source().clone().map(|src| {
                if flags.contains(MsFlags::MS_BIND) && src.is_relative() {
                    bundle.join(src)
                } else {
                    src
                }
            });
            mounts.push(MountSpec {
                destination,
                fs_type,
                source,
                flags,
                propagation,
                data,
            });
        }
        let paths = |list: &Option<Vec<String>>, key: &str| -> Result<Vec<PathBuf>, SpecError> {
            list.iter()
                .flatten()
                .map(|p| inside_path(Path::new(p)).map_err(|r| invalid(key, r)))
                .collect()
        };
        let masked_paths = paths(linux.masked_paths(), "linux.maskedPaths")?;
        let readonly_paths = paths(linux.readonly_paths(), "linux.readonlyPaths")?;
        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") | Some("rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            Some("private") => MsFlags::MS_PRIVATE,
            Some("rslave") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
            Some("slave") => MsFlags::MS_SLAVE,
            Some("rshared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
            Some("shared") => MsFlags::MS_SHARED,
            Some("runbindable") => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            Some("unbindable") => MsFlags::MS_UNBINDABLE,
            Some(other) => {
                return Err(invalid(
                    "linux.rootfsPropagation",
                    format!("{other:?} is not a propagation mode"),
                ))
            }
        };
        let mut sysctl: Vec<(String, String)> = linux
            .sysctl()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        sysctl.sort();
        for (k, _) in &sysctl {
            if k.is_empty() || k.contains("..") || k.starts_with('/') || k.starts_with('.') {
                return Err(invalid(
                    "linux.sysctl",
                    format!("{k:?} is not a sysctl name"),
                ));
            }
            // As runc: only sysctls of a namespace the container has its own of.
            let needs = sysctl_namespace(k).ok_or_else(|| {
                invalid(
                    "linux.sysctl",
                    format!("{k} is not in a separate kernel namespace"),
                )
            })?;
            if !namespaces
                .iter()
                .any(|n| n.kind == needs && n.path.is_none())
            {
                return Err(invalid(
                    "linux.sysctl",
                    format!(
                        "{k} needs the container's own {} namespace",
                        needs.proc_name()
                    ),
                ));
            }
        }
        let mut annotations: Vec<(String, String)> = spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        annotations.sort();
        let seccomp = linux
            .seccomp()
            .as_ref()
            .map(super::seccomp::Profile::from_oci)
            .transpose()
            .map_err(|e| invalid("linux.seccomp", e.to_string()))?;
        let devices = match linux.resources().as_ref().and_then(|r| r.devices().clone()) {
            Some(list) => {
                super::devices::from_oci(&list).map_err(|e| invalid("linux.resources", e))?
            }
            None => Vec::new(),
        };
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| super::cgroup::cgroups_path(&p.to_string_lossy()))
            .transpose()
            .map_err(|e| invalid("linux.cgroupsPath", e))?;
        let nodes = match linux.devices() {
            Some(list) => super::devices::nodes_from_oci(list)
                .map_err(|(i, e)| invalid(&format!("linux.devices[{i}]"), e))?,
            None => Vec::new(),
        };
        if !nodes.is_empty()
            && !mounts
                .iter()
                .any(|m| m.destination == Path::new("/dev") && m.fs_type == "tmpfs")
        {
            return Err(invalid(
                "linux.devices",
                "nodes need /dev to be a tmpfs in mounts (the root file system is mounted nodev)"
                    .into(),
            ));
        }
        let hooks = match spec.hooks() {
            Some(h) => super::hooks::Hooks::from_oci(h).map_err(|(key, r)| invalid(&key, r))?,
            None => super::hooks::Hooks::default(),
        };
        let limits = match linux.resources() {
            Some(r) => super::cgroup::Limits::from_oci(r)
                .map_err(|e| invalid("linux.resources", e.to_string()))?,
            None => super::cgroup::Limits::default(),
        };
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        if hostname.is_some() && !namespaces.iter().any(|n| n.kind == NsKind::Uts) {
            return Err(invalid(
                "hostname",
                "setting a host name needs a UTS namespace".into(),
            ));
        }
        let (uid_maps, gid_maps) =
            id_maps(&linux, &namespaces, &process).map_err(|e| invalid(&e.key, e.reason))?;
        Ok(ContainerConfig {
            bundle: bundle.to_owned(),
            rootfs,
            rootfs_readonly: root.readonly().unwrap_or(false),
            hostname,
            domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
            namespaces,
            mounts,
            process,
            masked_paths,
            readonly_paths,
            rootfs_propagation,
            sysctl,
            annotations,
            seccomp,
            cgroups_path,
            limits,
            devices,
            nodes,
            hooks,
            uid_maps,
            gid_maps,
        })
    }
}

/// `linux.uidMappings` and `linux.gidMappings`, checked against the namespaces and the
/// process's user. As in runc: maps without a user namespace are refused, and a new user
/// namespace without maps too. A user namespace joined by path keeps the maps it has, so
/// maps next to a path are refused rather than silently ignored.
fn id_maps(
    linux: &oci_spec::runtime::Linux,
    namespaces: &[Namespace],
    process: &ProcessSpec,
) -> Result<(Vec<IdMap>, Vec<IdMap>), MapError> {
    let convert = |list: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
        list.iter()
            .flatten()
            .map(|m| IdMap {
                container: m.container_id(),
                host: m.host_id(),
                size: m.size(),
            })
            .collect()
    };
    let (uid, gid) = (convert(linux.uid_mappings()), convert(linux.gid_mappings()));
    let refuse_any = |reason: &str| -> Result<(Vec<IdMap>, Vec<IdMap>), MapError> {
        for (key, maps) in [(UID_MAPS, &uid), (GID_MAPS, &gid)] {
            if !maps.is_empty() {
                return Err(MapError::new(key, reason));
            }
        }
        Ok((Vec::new(), Vec::new()))
    };
    match namespaces.iter().find(|n| n.kind == NsKind::User) {
        None => refuse_any("given, but linux.namespaces has no user namespace"),
        Some(Namespace { path: Some(_), .. }) => {
            refuse_any("given with a user namespace joined by path, which keeps its own maps")
        }
        Some(_) => {
            check_maps(UID_MAPS, &uid)?;
            check_maps(GID_MAPS, &gid)?;
            // The init becomes root in the new namespace to set the container up.
            must_map(UID_MAPS, &uid, 0, UID_MAPS)?;
            must_map(GID_MAPS, &gid, 0, GID_MAPS)?;
            must_map(UID_MAPS, &uid, process.uid, "process.user.uid")?;
            must_map(GID_MAPS, &gid, process.gid, "process.user.gid")?;
            for g in &process.additional_gids {
                must_map(GID_MAPS, &gid, *g, "process.user.additionalGids")?;
            }
            Ok((uid, gid))
        }
    }
}

/// The fields this runtime does not implement yet: present and non-empty means refused.
fn refuse_unsupported(spec: &Spec) -> Result<(), String> {
    let present = |cond: bool, key: &str| if cond { Err(key.to_owned()) } else { Ok(()) };
    present(spec.solaris().is_some(), "solaris")?;
    present(spec.windows().is_some(), "windows")?;
    present(spec.vm().is_some(), "vm")?;
    if let Some(p) = spec.process() {
        present(
            p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()),
            "process.apparmorProfile (no AppArmor or SELinux confinement here: refused, not run less confined)",
        )?;
        present(
            p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()),
            "process.selinuxLabel (no AppArmor or SELinux confinement here: refused, not run less confined)",
        )?;
        present(p.io_priority().is_some(), "process.ioPriority")?;
        present(p.scheduler().is_some(), "process.scheduler")?;
        present(p.exec_cpu_affinity().is_some(), "process.execCPUAffinity")?;
        present(
            p.user().username().as_ref().is_some_and(|s| !s.is_empty()),
            "process.user.username",
        )?;
    }
    for m in spec.mounts().iter().flatten() {
        present(
            m.uid_mappings().is_some() || m.gid_mappings().is_some(),
            "mounts[].uidMappings",
        )?;
    }
    if let Some(l) = spec.linux() {
        present(l.intel_rdt().is_some(), "linux.intelRdt")?;
        present(l.personality().is_some(), "linux.personality")?;
        present(l.time_offsets().is_some(), "linux.timeOffsets")?;
        present(l.memory_policy().is_some(), "linux.memoryPolicy")?;
        present(l.net_devices().is_some(), "linux.netDevices")?;
        present(
            l.mount_label().as_ref().is_some_and(|s| !s.is_empty()),
            "linux.mountLabel (no AppArmor or SELinux confinement here: refused, not run less confined)",
        )?;
        if let Some(r) = l.resources() {
            // Device rules are accepted (the deny-all default of `runc spec`; enforcing
            // them on v2 needs the device eBPF program, which comes next).
            if let Some(c) = r.cpu() {
                present(
                    c.realtime_runtime().is_some() || c.realtime_period().is_some(),
                    "linux.resources.cpu.realtime*",
                )?;
                present(c.idle().is_some(), "linux.resources.cpu.idle")?;
            }
            if let Some(c) = r.cpu() {
                present(c.burst().is_some(), "linux.resources.cpu.burst")?;
            }
            if let Some(b) = r.block_io() {
                present(
                    b.weight_device().as_ref().is_some_and(|v| !v.is_empty()),
                    "linux.resources.blockIO.weightDevice",
                )?;
                present(
                    b.throttle_read_bps_device()
                        .as_ref()
                        .is_some_and(|v| !v.is_empty()),
                    "linux.resources.blockIO.throttleReadBpsDevice",
                )?;
                present(
                    b.throttle_write_bps_device()
                        .as_ref()
                        .is_some_and(|v| !v.is_empty()),
                    "linux.resources.blockIO.throttleWriteBpsDevice",
                )?;
                present(
                    b.throttle_read_iops_device()
                        .as_ref()
                        .is_some_and(|v| !v.is_empty()),
                    "linux.resources.blockIO.throttleReadIOPSDevice",
                )?;
                present(
                    b.throttle_write_iops_device()
                        .as_ref()
                        .is_some_and(|v| !v.is_empty()),
                    "linux.resources.blockIO.throttleWriteIOPSDevice",
                )?;
                present(
                    b.leaf_weight().is_some(),
                    "linux.resources.blockIO.leafWeight",
                )?;
            }
            if let Some(m) = r.memory() {
                present(
                    m.swappiness().is_some(),
                    "linux.resources.memory.swappiness",
                )?;
                present(
                    m.kernel().is_some() || m.kernel_tcp().is_some(),
                    "linux.resources.memory.kernel*",
                )?;
                present(
                    m.disable_oom_killer().unwrap_or(false),
                    "linux.resources.memory.disableOOMKiller",
                )?;
            }
            present(
                r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
                "linux.resources.hugepageLimits",
            )?;
            present(r.network().is_some(), "linux.resources.network")?;
            present(r.rdma().is_some(), "linux.resources.rdma")?;
            present(
                r.unified().as_ref().is_some_and(|u| !u.is_empty()),
                "linux.resources.unified",
            )?;
        }
    }
    Ok(())
}

/// The namespace a sysctl belongs to, for those that have one.
fn sysctl_namespace(key: &str) -> Option<NsKind> {
    let key = key.replace('/', ".");
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        Some(NsKind::Ipc)
    } else if key.starts_with("net.") {
        Some(NsKind::Net)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NsKind::Uts)
    } else {
        None
    }
}

/// An absolute path with no `..`, as a destination inside the root file system.
fn inside_path(p: &Path) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err(format!("{} is not absolute", p.display()));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(format!("{} has a \"..\" component", p.display())),
            Component::Prefix(_) => return Err(format!("{} is not a Linux path", p.display())),
        }
    }
    Ok(out)
}

/// Splits mount(8)-style options into flags, propagation and data, as runc does.
fn mount_options(options: &[String]) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let rec = if o.starts_with('r') && o != "rw" {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                let kind = match o.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                propagation = kind | rec;
                continue;
            }
            other => {
                data.push(other);
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, propagation, data.join(","))
}

/// The `RLIMIT_*` resource number for a spec name.
fn rlimit_resource(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

/// A capability set from the spec as a bit mask.
fn cap_mask(set: Option<&oci_spec::runtime::Capabilities>) -> Result<u64, String> {
    let mut mask = 0u64;
    for cap in set.into_iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let c: caps::Capability = name
            .parse()
            .map_err(|_| format!("{name:?} is not a capability this kernel interface knows"))?;
        mask |= c.bitmask();
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = [
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rbind",
            "rslave",
            "ro",
        ]
        .map(String::from)
        .to_vec();
        let (flags, prop, data) = mount_options(&opts);
        assert!(flags.contains(
            MsFlags::MS_NOSUID
                | MsFlags::MS_STRICTATIME
                | MsFlags::MS_BIND
                | MsFlags::MS_REC
                | MsFlags::MS_RDONLY
        ));
        assert_eq!(prop, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(data, "mode=755,size=65536k");
        let (flags, _, _) = mount_options(&["ro".into(), "rw".into()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn destinations_must_be_absolute_without_dotdot() {
        assert_eq!(
            inside_path(Path::new("/a/./b")).unwrap(),
            PathBuf::from("/a/b")
        );
        assert!(inside_path(Path::new("/a/../../etc"))
            .unwrap_err()
            .contains(".."));
        assert!(inside_path(Path::new("relative"))
            .unwrap_err()
            .contains("absolute"));
    }

    /// A bundle with a new user namespace mapping 0..65536 to 100000.., edited.
    fn userns_config(
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Result<ContainerConfig, SpecError> {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("rootfs")).expect("rootfs");
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["/x"], "user": {"uid": 0, "gid": 0}},
            "linux": {
                "namespaces": [{"type": "mount"}, {"type": "user"}],
                "uidMappings": map,
                "gidMappings": map,
            },
        });
        edit(&mut v);
        let spec: Spec = serde_json::from_value(v).expect("spec");
        ContainerConfig::from_spec(dir.path(), &spec)
    }

    fn refused_key(r: Result<ContainerConfig, SpecError>) -> String {
        match r {
            Err(SpecError::Invalid { key, .. }) => key,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn user_namespace_maps_are_checked_against_the_namespaces_and_the_user() {
        let c = userns_config(|_| {}).expect("good maps");
        assert!(c.has_new(NsKind::User));
        let want = IdMap {
            container: 0,
            host: 100000,
            size: 65536,
        };
        assert_eq!(
            (c.uid_maps.as_slice(), c.gid_maps.as_slice()),
            (&[want][..], &[want][..])
        );
        let no_userns =
            userns_config(|v| v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]));
        assert_eq!(refused_key(no_userns), "linux.uidMappings");
        let no_gid_maps = userns_config(|v| v["linux"]["gidMappings"] = serde_json::json!([]));
        assert_eq!(refused_key(no_gid_maps), "linux.gidMappings");
        let unmapped =
            userns_config(|v| v["process"]["user"]["additionalGids"] = serde_json::json!([70000]));
        assert_eq!(refused_key(unmapped), "process.user.additionalGids");
        let joined = userns_config(|v| {
            let linux = &mut v["linux"];
            linux["namespaces"][1]["path"] = "/proc/1/ns/user".into();
            linux.as_object_mut().expect("linux").remove("uidMappings");
            linux.as_object_mut().expect("linux").remove("gidMappings");
        })
        .expect("joined by path, no maps");
        assert!(joined.has_userns() && !joined.has_new(NsKind::User));
        assert!(joined.uid_maps.is_empty());
    }

    #[test]
    fn rlimits_and_capabilities_map_to_kernel_numbers() {
        assert_eq!(
            rlimit_resource("RLIMIT_NOFILE"),
            Some(libc::RLIMIT_NOFILE as i32)
        );
        assert_eq!(rlimit_resource("RLIMIT_BOGUS"), None);
        let mut set = oci_spec::runtime::Capabilities::new();
        set.insert(oci_spec::runtime::Capability::Chown);
        set.insert(oci_spec::runtime::Capability::NetBindService);
        assert_eq!(cap_mask(Some(&set)).unwrap(), (1 << 0) | (1 << 10));
    }
}
