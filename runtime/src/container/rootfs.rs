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
//! are opened without following a symlink and must be on procfs or sysfs; masked files
//! are bound from one descriptor of the null device, checked to be the char device 1:3.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};

use super::spec::{ContainerConfig, MountSpec};

mod destination;
use destination::{bind_destination, make_inside, open_in_root, Inside};

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

/// Everything up to and including `pivot_root`, run by the init process in its new mount
/// namespace, before it waits for `start`.
pub fn prepare(config: &ContainerConfig) -> Result<(), RootfsError> {
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
    // Device nodes in the image do not work (no device cgroup rules yet): only those in
    // the container's own /dev tmpfs do.
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
    }
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
        // SAFETY: an all-zero mount_attr changes nothing; the fields are set below.
        let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
        attr.attr_set = set;
        attr.attr_clr = clear;
        let mut at = libc::AT_EMPTY_PATH;
        if recursive {
            at |= libc::AT_RECURSIVE;
        }
        // SAFETY: the descriptor is open, the empty path a NUL-terminated string and
        // `attr` a mount_attr of the size passed, all outliving the call.
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
            return Err(fail("set the flags of the bind onto", dest)(Errno::last()));
        }
    }
    // SAFETY: both descriptors are open and the empty paths NUL-terminated strings, all
    // outliving the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.fd.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(fail("bind mount onto", dest)(Errno::last()));
    }
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
        let at = format!("/proc/self/fd/{}", target.as_raw_fd());
        mount(
            Some(at.as_str()),
            at.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail("bind", p))?;
        // The descriptor names the covered file; the new mount is reopened.
        let again = open_kernel_path(p, "readonlyPaths")?
            .ok_or_else(|| fail("reopen", p)(Errno::ENOENT))?;
        let at = format!("/proc/self/fd/{}", again.as_raw_fd());
        remount(Path::new(&at), MsFlags::MS_RDONLY).map_err(fail("make read-only", p))?;
    }
    if config.rootfs_readonly {
        remount(Path::new("/"), MsFlags::MS_RDONLY).map_err(fail("make read-only", "/"))?;
    }
    Ok(())
}

/// Opens a masked or read-only path (`key` names the list) `O_PATH`, following no symlink
/// on the way; `None` if it does not exist (as runc). It must be on procfs or sysfs.
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
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    let fs = fstatfs(&fd).map_err(fail("look at", p))?.filesystem_type();
    if fs != PROC_SUPER_MAGIC && fs != SYSFS_MAGIC {
        return Err(refused(key, p, "is not on procfs or sysfs"));
    }
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
