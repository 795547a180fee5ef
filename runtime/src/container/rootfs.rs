//! The container's root file system, set up by its init process inside its new mount
//! namespace: propagation, the bundle's mounts, a `/dev` with only the standard nodes,
//! `pivot_root`, then masked and read-only paths.
//!
//! In a user namespace the kernel refuses device nodes made with `mknod` and a `sysfs`
//! mount when the namespace does not own the network namespace. As runc does, `/dev`'s
//! standard nodes are then bind mounts of the host's (empty files as mount points), and
//! `/sys` falls back to a recursive bind of the host's, with the flags the bundle asked
//! for. The root file system's files must belong to the mapped ids (the bundle's job).
//!
//! Every mount destination is resolved inside the root file system with
//! `openat2(RESOLVE_IN_ROOT)`, once, and the mount is made on the resulting descriptor
//! (`/proc/self/fd/N`; for a bind, `move_mount` of a detached clone whose flags were set
//! before it is attached), so a symlink in the image (`/proc -> /`, `/dev -> /etc`) cannot
//! send a mount outside the container's root and nothing resolves the path again between
//! the check below and the mount ([`destination`]).
//!
//! Where the runtime itself mounts (`/dev`, `/proc`, `/sys`) no bind mount may land: a
//! bind whose destination, once resolved in the root, is on or under one of them is
//! refused (`mounts[i].destination`), whatever its path says, so an image symlink
//! (`/data -> /dev`, `/etc/resolv.conf -> /proc/sys/...`) cannot put a volume over the
//! container's device nodes or a host file over a kernel knob. The decision is made on the
//! resolved descriptor (its path relative to the root), not on the destination's text,
//! and before any missing part of the destination is made, so benign in-root symlinks
//! (`/var/run -> /run`) keep working; the runtime's own mounts there (`/dev/pts`,
//! `/dev/shm`, `/dev/mqueue`) are not bind mounts. A device node is
//! made only where nothing is: an existing entry is an error. Masked and read-only paths
//! are opened after `pivot_root` without following a symlink (any path of the container,
//! as runc); masked files are bound from one descriptor of the null device, checked to be
//! the char device 1:3.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};

use super::spec::{ContainerConfig, MountSpec};

mod destination;
use destination::{bind_destination, make_inside, open_child, open_in_root, Inside};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{step} {path}: {errno}")]
    Sys {
        step: &'static str,
        path: String,
        errno: Errno,
    },
    #[error("{key} {path}: {reason}")]
    Refused {
        key: String,
        path: String,
        reason: String,
    },
}

fn fail(step: &'static str, path: impl AsRef<Path>) -> impl FnOnce(Errno) -> RootfsError {
    let path = path.as_ref().display().to_string();
    move |errno| RootfsError::Sys { step, path, errno }
}

fn refused(
    key: impl Into<String>,
    path: impl AsRef<Path>,
    reason: impl Into<String>,
) -> RootfsError {
    RootfsError::Refused {
        key: key.into(),
        path: path.as_ref().display().to_string(),
        reason: reason.into(),
    }
}

fn bind_source_is_file(m: &MountSpec) -> bool {
    m.is_bind()
        && m.source
            .as_ref()
            .is_some_and(|s| std::fs::metadata(s).is_ok_and(|md| !md.is_dir()))
}

/// The device nodes every container gets: (name, major, minor).
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Everything before `pivot_root`, run by the init process in its new mount namespace:
/// propagation, the bundle's mounts, `/dev`'s nodes. Returns the new root, for [`pivot`]
/// (hooks of `create` run in between).
pub fn prepare(config: &ContainerConfig) -> Result<OwnedFd, RootfsError> {
    // Nothing the container mounts may leak back to the host: slave first, whatever
    // the bundle asks (it gets its propagation on the new root after pivot_root).
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(fail("set propagation of", "/"))?;
    let rootfs = &config.rootfs;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail("bind", rootfs))?;
    // Device nodes in the image do not work: only those in the container's own /dev
    // tmpfs do, where the device program decides which may be opened.
    remount(rootfs, MsFlags::MS_NODEV).map_err(fail("make nodev", rootfs))?;
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open", rootfs))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let mut dev_is_tmpfs = false;
    let userns = config.has_userns();
    for (i, m) in config.mounts.iter().enumerate() {
        mount_one(root.as_raw_fd(), i, m, userns)?;
        if m.destination == Path::new("/dev") && m.fs_type == "tmpfs" {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        populate_dev(root.as_raw_fd(), userns)?;
        make_nodes(root.as_raw_fd(), &config.nodes, userns)?;
    }
    Ok(root)
}

/// `pivot_root` into `root` (from [`prepare`]) and the bundle's propagation on it.
pub fn pivot(config: &ContainerConfig, root: OwnedFd) -> Result<(), RootfsError> {
    let rootfs = &config.rootfs;
    // pivot_root(".", ".") then detaching the old root: no put_old directory needed.
    nix::unistd::fchdir(root.as_raw_fd()).map_err(fail("chdir to", rootfs))?;
    nix::unistd::pivot_root(".", ".").map_err(fail("pivot_root to", rootfs))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("detach the old root from", rootfs))?;
    nix::unistd::chdir("/").map_err(fail("chdir to", "/"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        config.rootfs_propagation,
        None::<&str>,
    )
    .map_err(fail("set propagation of", "/"))?;
    Ok(())
}

/// Mounts `mounts[i]`. A bind's destination is resolved and checked once
/// ([`bind_destination`]) and the bind made onto that descriptor ([`bind`]).
fn mount_one(root: RawFd, i: usize, m: &MountSpec, userns: bool) -> Result<(), RootfsError> {
    let dest = &m.destination;
    let source_is_file = bind_source_is_file(m);
    if m.is_bind() {
        let target = bind_destination(root, i, dest, source_is_file)?;
        return bind(m, &target);
    }
    let target = make_inside(root, dest, source_is_file)?;
    let at = target.proc_path();
    let source = m
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from(&m.fs_type));
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    let result = mount(
        Some(&source),
        at.as_str(),
        Some(m.fs_type.as_str()),
        m.flags,
        data,
    );
    match (result, m.fs_type.as_str()) {
        (Ok(()), _) => {}
        // Without a new cgroup namespace or on a v1 host, a cgroup mount is not
        // essential; runc also carries on.
        (Err(Errno::EPERM | Errno::EBUSY | Errno::ENOENT), "cgroup" | "cgroup2") => {}
        // A user namespace that does not own the network namespace may not mount
        // sysfs: the host's, bound, instead (the runtime's own bind: no destination
        // check, /sys is where it belongs).
        (Err(Errno::EPERM), "sysfs") if userns => {
            let host_sys = MountSpec {
                fs_type: "bind".into(),
                source: Some(PathBuf::from("/sys")),
                flags: m.flags | MsFlags::MS_BIND | MsFlags::MS_REC,
                data: String::new(),
                ..m.clone()
            };
            return bind(&host_sys, &target);
        }
        (Err(e), _) => return Err(fail("mount", dest)(e)),
    }
    if !m.propagation.is_empty() {
        let again = make_inside(root, dest, source_is_file)?;
        mount(
            None::<&str>,
            again.proc_path().as_str(),
            None::<&str>,
            m.propagation,
            None::<&str>,
        )
        .map_err(fail("set propagation of", dest))?;
    }
    Ok(())
}

/// Binds `m.source` onto `target` with the new mount API: the source is cloned into a
/// detached mount (`open_tree`), its per-mount flags set there (`mount_setattr`, so a
/// read-only bind is never writable, and no remount has to find the new mount again by
/// path), and the clone attached onto the descriptor (`move_mount`). The clone's
/// descriptor then names the attached mount, for its propagation.
fn bind(m: &MountSpec, target: &Inside) -> Result<(), RootfsError> {
    let dest = &m.destination;
    let source = m.source.as_deref().unwrap_or(Path::new(""));
    let recursive = m.flags.contains(MsFlags::MS_REC);
    let c_source = std::ffi::CString::new(source.as_os_str().as_encoded_bytes())
        .map_err(|_| fail("bind", source)(Errno::EINVAL))?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a NUL-terminated string that outlives the call; open_tree takes
    // no other pointers.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_source.as_ptr(),
            flags,
        )
    };
    if tree < 0 {
        return Err(fail("clone the mount of", source)(Errno::last()));
    }
    // SAFETY: open_tree just returned this descriptor and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let (set, clear) = mount_attrs(m.flags);
    if set != 0 || clear != 0 {
        set_attrs(&tree, set, clear, recursive)
            .map_err(fail("set the flags of the bind onto", dest))?;
    }
    move_onto(&tree, target.fd.as_raw_fd()).map_err(fail("bind mount onto", dest))?;
    if !m.propagation.is_empty() {
        mount(
            None::<&str>,
            format!("/proc/self/fd/{}", tree.as_raw_fd()).as_str(),
            None::<&str>,
            m.propagation,
            None::<&str>,
        )
        .map_err(fail("set propagation of", dest))?;
    }
    Ok(())
}

/// `mount_setattr` on the detached or attached mount `tree` (and the mounts below it
/// with `recursive`).
fn set_attrs(tree: &OwnedFd, set: u64, clear: u64, recursive: bool) -> Result<(), Errno> {
    // SAFETY: an all-zero mount_attr changes nothing; the fields are set below.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = set;
    attr.attr_clr = clear;
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= libc::AT_RECURSIVE;
    }
    // SAFETY: the descriptor is open, the empty path a NUL-terminated string and `attr` a
    // mount_attr of the size passed, all outliving the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Attaches the detached mount `tree` onto the directory or file `target` names.
fn move_onto(tree: &OwnedFd, target: RawFd) -> Result<(), Errno> {
    // SAFETY: both descriptors are open and the empty paths NUL-terminated strings, all
    // outliving the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target,
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// A detached recursive copy of the mount `at` names (`open_tree` on the descriptor).
fn clone_tree(at: &OwnedFd) -> Result<OwnedFd, Errno> {
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: the descriptor is open and the empty path a NUL-terminated string.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, at.as_raw_fd(), c"".as_ptr(), flags) };
    if tree < 0 {
        return Err(Errno::last());
    }
    // SAFETY: open_tree just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) })
}

/// The `mount_setattr` bits (set, clear) for a bind's per-mount flags; the others
/// (`MS_SYNCHRONOUS`, …) belong to the file system, which a bind does not change.
fn mount_attrs(flags: MsFlags) -> (u64, u64) {
    let mut set = 0;
    let mut clear = 0;
    for (f, a) in [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(f) {
            set |= a;
        }
    }
    // The access-time mode is one field: clear it to set one.
    for (f, a) in [
        (MsFlags::MS_NOATIME, libc::MOUNT_ATTR_NOATIME),
        (MsFlags::MS_STRICTATIME, libc::MOUNT_ATTR_STRICTATIME),
        (MsFlags::MS_RELATIME, libc::MOUNT_ATTR_RELATIME),
    ] {
        if flags.contains(f) {
            clear |= libc::MOUNT_ATTR__ATIME;
            set = (set & !libc::MOUNT_ATTR__ATIME) | a;
            break;
        }
    }
    (set, clear)
}

/// The standard nodes and links in a fresh `/dev` tmpfs; in a user namespace, the
/// host's nodes bound onto empty files.
fn populate_dev(root: RawFd, userns: bool) -> Result<(), RootfsError> {
    let dev_dir = open_in_root(root, Path::new("dev"), true).map_err(fail("open", "/dev"))?;
    let old = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for (name, major, minor) in DEFAULT_DEVICES {
            let path = format!("/dev/{name}");
            // Whatever is already there (a mount, a volume, a link) is not our node.
            match nix::sys::stat::fstatat(
                Some(dev_dir.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Err(Errno::ENOENT) => {}
                Ok(_) => return Err(refused("device node", &path, "an entry is already there")),
                Err(e) => return Err(fail("look at", &path)(e)),
            }
            if userns {
                let target = make_inside(root, Path::new(&path), true)?;
                mount(
                    Some(path.as_str()),
                    target.proc_path().as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(fail("bind the host's node onto", &path))?;
                continue;
            }
            match mknodat(
                Some(dev_dir.as_raw_fd()),
                name,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(major, minor),
            ) {
                Ok(()) => {}
                Err(e) => return Err(fail("mknod", &path)(e)),
            }
        }
        for (name, target) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            match nix::unistd::symlinkat(target, Some(dev_dir.as_raw_fd()), name) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    return Err(refused(
                        "device link",
                        format!("/dev/{name}"),
                        "an entry is already there",
                    ))
                }
                Err(e) => return Err(fail("symlink", format!("/dev/{name}"))(e)),
            }
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    result
}

/// The nodes of `linux.devices`, each made on the container's `/dev` tmpfs (missing
/// directories made in-root on the way, never following a symlink) with its mode and
/// owner. An entry already there is accepted only if it is that very node (the spec's
/// rule), a default one such as `/dev/null` included. In a user namespace, where `mknod`
/// of a device is refused, the host's node of the same path is bound onto an empty file,
/// as runc does, and must be the same device.
fn make_nodes(
    root: RawFd,
    nodes: &[super::devices::Node],
    userns: bool,
) -> Result<(), RootfsError> {
    use super::devices::NodeKind;
    if nodes.is_empty() {
        return Ok(());
    }
    let dev_dir = open_in_root(root, Path::new("dev"), true).map_err(fail("open", "/dev"))?;
    let dev_fs = nix::sys::stat::fstat(dev_dir.as_raw_fd())
        .map_err(fail("look at", "/dev"))?
        .st_dev;
    let old = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for node in nodes {
            let path = &node.path;
            let (parent, name) = match (path.parent(), path.file_name()) {
                (Some(p), Some(n)) => (p, n),
                _ => return Err(refused("linux.devices", path, "has no file name")),
            };
            let parent = dev_subdir(&dev_dir, parent, path)?;
            let st = nix::sys::stat::fstat(parent.fd.as_raw_fd()).map_err(fail("look at", path))?;
            if st.st_dev != dev_fs {
                return Err(refused(
                    "linux.devices",
                    path,
                    "its directory is not on the container's /dev tmpfs (another mount, or a link out of it)",
                ));
            }
            let (sflag, rdev) = match node.kind {
                NodeKind::Char => (
                    SFlag::S_IFCHR,
                    nix::sys::stat::makedev(node.major, node.minor),
                ),
                NodeKind::Block => (
                    SFlag::S_IFBLK,
                    nix::sys::stat::makedev(node.major, node.minor),
                ),
                NodeKind::Fifo => (SFlag::S_IFIFO, 0),
            };
            let is_it = |st: &libc::stat| {
                st.st_mode & libc::S_IFMT == sflag.bits()
                    && (node.kind == NodeKind::Fifo || st.st_rdev == rdev)
            };
            match nix::sys::stat::fstatat(
                Some(parent.fd.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Err(Errno::ENOENT) => {}
                Ok(st) if is_it(&st) => continue,
                Ok(_) => {
                    return Err(refused(
                        "linux.devices",
                        path,
                        "an entry is already there and it is not this device",
                    ))
                }
                Err(e) => return Err(fail("look at", path)(e)),
            }
            if userns && node.kind != NodeKind::Fifo {
                let host = nix::sys::stat::lstat(path).map_err(|e| {
                    refused(
                        "linux.devices",
                        path,
                        format!("in a user namespace the host's node is bound, and the host has none: {e}"),
                    )
                })?;
                if !is_it(&host) {
                    return Err(refused(
                        "linux.devices",
                        path,
                        "in a user namespace the host's node is bound, and the host's is another device",
                    ));
                }
                let target = make_inside(root, path, true)?;
                mount(
                    Some(path.as_path()),
                    target.proc_path().as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(fail("bind the host's node onto", path))?;
                continue;
            }
            mknodat(
                Some(parent.fd.as_raw_fd()),
                name,
                sflag,
                Mode::from_bits_truncate(node.mode as libc::mode_t),
                rdev,
            )
            .map_err(fail("mknod", path))?;
            nix::unistd::fchownat(
                Some(parent.fd.as_raw_fd()),
                name,
                Some(nix::unistd::Uid::from_raw(node.uid)),
                Some(nix::unistd::Gid::from_raw(node.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(fail("chown", path))?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    result
}

/// The directory `dir` (`/dev` or below it) of the node `node`, walked from `/dev` one
/// component at a time, made where missing, never following a symlink nor leaving the
/// `/dev` mount.
fn dev_subdir(dev_dir: &OwnedFd, dir: &Path, node: &Path) -> Result<Inside, RootfsError> {
    let below = dir
        .strip_prefix("/dev")
        .map_err(|_| refused("linux.devices", node, "is not under /dev"))?;
    let mut fd = dev_dir.try_clone().map_err(|e| {
        fail("open", "/dev")(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })?;
    for part in below.components() {
        let std::path::Component::Normal(name) = part else {
            return Err(refused(
                "linux.devices",
                node,
                "has a part that is not a name",
            ));
        };
        match nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail("create the directory of", node)(e)),
        }
        fd = match open_child(fd.as_raw_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::EXDEV) => {
                return Err(refused(
                    "linux.devices",
                    node,
                    "its directory is a link or another mount, not the container's /dev tmpfs",
                ))
            }
            Err(e) => return Err(fail("open the directory of", node)(e)),
        };
    }
    Ok(Inside { fd })
}

/// After `pivot_root`: hide masked paths, make read-only paths read-only, and make the
/// root read-only if asked.
pub fn finish(config: &ContainerConfig) -> Result<(), RootfsError> {
    // Sysctls first: /proc/sys is about to become read-only.
    for (key, value) in &config.sysctl {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value.as_bytes()).map_err(|e| RootfsError::Sys {
            step: "set sysctl",
            path: path.display().to_string(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    }
    if !config.masked_paths.is_empty() {
        // Masks are mounted onto /proc/self/fd/N: that must be the kernel's, not a tree of
        // the image's that happens to be there when the bundle mounts no procfs.
        proc_is_procfs()?;
    }
    let mut null: Option<OwnedFd> = None;
    for p in &config.masked_paths {
        let Some(target) = open_kernel_path(p, "maskedPaths")? else {
            continue;
        };
        let at = format!("/proc/self/fd/{}", target.as_raw_fd());
        let is_dir = nix::sys::stat::fstat(target.as_raw_fd())
            .map_err(fail("look at", p))?
            .st_mode
            & libc::S_IFMT
            == libc::S_IFDIR;
        let result = if is_dir {
            mount(
                Some("tmpfs"),
                at.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            let null = match &null {
                Some(fd) => fd,
                None => null.insert(open_null()?),
            };
            let from = format!("/proc/self/fd/{}", null.as_raw_fd());
            mount(
                Some(from.as_str()),
                at.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(fail("mask", p))?;
    }
    for p in &config.readonly_paths {
        let Some(target) = open_kernel_path(p, "readonlyPaths")? else {
            continue;
        };
        // A recursive copy of what is there, read-only all the way down (volumes below
        // the path too), put over it; all by descriptor.
        let tree = clone_tree(&target).map_err(fail("clone the mount of", p))?;
        set_attrs(&tree, libc::MOUNT_ATTR_RDONLY, 0, true).map_err(fail("make read-only", p))?;
        move_onto(&tree, target.as_raw_fd()).map_err(fail("bind read-only onto", p))?;
    }
    if config.rootfs_readonly {
        remount(Path::new("/"), MsFlags::MS_RDONLY).map_err(fail("make read-only", "/"))?;
    }
    Ok(())
}

/// Opens a masked or read-only path (`key` names the list) `O_PATH`, following no symlink
/// on the way; `None` if it does not exist (as runc). After `pivot_root` nothing but the
/// container's own tree is reachable, so any path of it may be listed (as with runc).
fn open_kernel_path(p: &Path, key: &str) -> Result<Option<OwnedFd>, RootfsError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(libc::AT_FDCWD, p, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(refused(key, p, "is or passes through a symlink")),
        Err(e) => return Err(fail("open", p)(e)),
    };
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(fail("look at", p))?
        .st_mode
        & libc::S_IFMT
        == libc::S_IFLNK
    {
        return Err(refused(key, p, "is a symlink"));
    }
    Ok(Some(fd))
}

/// Refuses masked paths when `/proc` (reached without a symlink) is not procfs.
fn proc_is_procfs() -> Result<(), RootfsError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let not_proc = || {
        refused(
            "maskedPaths",
            "/proc",
            "needs procfs mounted at /proc (in mounts)",
        )
    };
    let fd = openat2(libc::AT_FDCWD, "/proc", how).map_err(|_| not_proc())?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let fs = nix::sys::statfs::fstatfs(&fd)
        .map_err(fail("look at", "/proc"))?
        .filesystem_type();
    if fs != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(not_proc());
    }
    Ok(())
}

/// The container's `/dev/null`, opened once without following a symlink and checked to be
/// the character device 1:3, for every masked file to be bound from.
fn open_null() -> Result<OwnedFd, RootfsError> {
    let path = "/dev/null";
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(libc::AT_FDCWD, path, how) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Err(refused("maskedPaths", path, "is a symlink")),
        Err(e) => return Err(fail("open", path)(e)),
    };
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(fail("look at", path))?;
    let null = nix::sys::stat::makedev(1, 3);
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != null {
        return Err(refused(
            "maskedPaths",
            path,
            "is not the null device (char 1:3)",
        ));
    }
    Ok(fd)
}

/// Remounts the bind mount at `path` with `add` on top of the flags it has: a bind
/// remount replaces the per-mount flags, so nosuid, nodev, noexec and the atime flags are
/// read back first (and the kernel refuses to clear locked ones anyway).
fn remount(path: &Path, add: MsFlags) -> Result<(), Errno> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let have = statvfs(path)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | add;
    for (f, m) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}
