//! The layer's directory tree on disk, changed only through `*at` calls on descriptors of
//! directories opened beneath its root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//! | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so no symlink is ever followed and nothing
//! outside the root is ever reached. Last components are never followed either: files
//! are made with `O_CREAT | O_EXCL | O_NOFOLLOW` after removing what was there, and
//! metadata is set through the new object's descriptor or with `AT_SYMLINK_NOFOLLOW`.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::archive::Member;
use super::header::Mtime;
use super::path::{is_within, LayerPath};
use super::LayerError;

const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

pub(super) struct Tree {
    root: OwnedFd,
    /// Only root may give files away, so only root chowns.
    as_root: bool,
    /// Directories' mode and mtime, set at the end (children first): writing into a
    /// directory changes its mtime, and a read-only mode would stop the writing.
    dirs: BTreeMap<Vec<u8>, Deferred>,
}

struct Deferred {
    entry: String,
    mode: u32,
    mtime: Mtime,
}

/// Where a new object's metadata is set: through its own descriptor, or by name in its
/// parent without following it (symlinks, device nodes and FIFOs, which must not be
/// opened).
#[derive(Clone, Copy)]
enum Object<'a> {
    Fd(BorrowedFd<'a>),
    Name(BorrowedFd<'a>, &'a [u8]),
}

/// A free name in an open parent, made ready for a new entry.
struct Slot {
    parent: OwnedFd,
    name: Vec<u8>,
    /// A directory was there and, the new entry being one too, was kept.
    kept_dir: bool,
}

impl Tree {
    /// Opens `dest`, which must be an empty directory.
    pub(super) fn open(dest: &Path) -> Result<Self, LayerError> {
        let fail = |source| LayerError::Destination {
            path: dest.to_owned(),
            source,
        };
        let root = nix::fcntl::open(
            dest,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(own)
        .map_err(|e| fail(e.into()))?;
        let dir = openat(
            Some(root.as_raw_fd()),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(own)
        .map_err(|e| fail(e.into()))?;
        if !names(dir).map_err(fail)?.is_empty() {
            return Err(fail(io::ErrorKind::DirectoryNotEmpty.into()));
        }
        Ok(Tree {
            root,
            as_root: nix::unistd::geteuid().is_root(),
            dirs: BTreeMap::new(),
        })
    }

    /// Sets the deferred modes and mtimes of directories, deepest first.
    pub(super) fn finish(self) -> Result<(), LayerError> {
        for (path, dir) in self.dirs.iter().rev() {
            let fd = beneath(
                self.root.as_fd(),
                dot_if_empty(path),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            )
            .map_err(io(&dir.entry, "open directory"))?;
            fchmod(fd.as_raw_fd(), mode(dir.mode)).map_err(io(&dir.entry, "set mode"))?;
            let t = timespec(dir.mtime);
            futimens(fd.as_raw_fd(), &t, &t).map_err(io(&dir.entry, "set times"))?;
        }
        Ok(())
    }

    pub(super) fn dir(
        &mut self,
        entry: &str,
        path: &LayerPath,
        m: &Member,
    ) -> Result<(), LayerError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = if path.as_bytes().is_empty() {
            // `./` in the archive: the root's own metadata.
            openat(Some(self.root.as_raw_fd()), ".", flags, Mode::empty())
        } else {
            let slot = self.slot(entry, path, true)?;
            if !slot.kept_dir {
                mkdirat(Some(slot.parent.as_raw_fd()), &slot.name[..], Mode::S_IRWXU)
                    .map_err(io(entry, "create directory"))?;
            }
            openat(
                Some(slot.parent.as_raw_fd()),
                &slot.name[..],
                flags,
                Mode::empty(),
            )
        }
        .map(own)
        .map_err(io(entry, "open directory"))?;
        let obj = Object::Fd(fd.as_fd());
        self.owner(entry, obj, m)?;
        xattrs(entry, obj, m)?;
        self.dirs.insert(
            path.as_bytes().to_vec(),
            Deferred {
                entry: entry.to_owned(),
                mode: m.mode,
                mtime: m.mtime,
            },
        );
        Ok(())
    }

    /// A new, empty regular file; its data goes in before [`Tree::finish_file`].
    pub(super) fn create_file(
        &mut self,
        entry: &str,
        path: &LayerPath,
    ) -> Result<File, LayerError> {
        let slot = self.slot(entry, path, false)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(
            Some(slot.parent.as_raw_fd()),
            &slot.name[..],
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map(|fd| File::from(own(fd)))
        .map_err(io(entry, "create file"))
    }

    /// Owner, then mode (chown clears setuid and setgid), then xattrs (a write or chown
    /// would drop `security.capability`), then times.
    pub(super) fn finish_file(
        &self,
        entry: &str,
        file: &File,
        m: &Member,
    ) -> Result<(), LayerError> {
        let obj = Object::Fd(file.as_fd());
        self.owner(entry, obj, m)?;
        set_mode(entry, obj, m.mode)?;
        xattrs(entry, obj, m)?;
        set_times(entry, obj, m.mtime)
    }

    pub(super) fn symlink(
        &mut self,
        entry: &str,
        path: &LayerPath,
        target: &[u8],
        m: &Member,
    ) -> Result<(), LayerError> {
        let slot = self.slot(entry, path, false)?;
        symlinkat(target, Some(slot.parent.as_raw_fd()), &slot.name[..])
            .map_err(io(entry, "create symlink"))?;
        let obj = Object::Name(slot.parent.as_fd(), &slot.name);
        self.owner(entry, obj, m)?;
        xattrs(entry, obj, m)?;
        set_times(entry, obj, m.mtime)
    }

    /// A hard link shares its target's inode, so it takes no metadata from its header.
    /// `linkat` without `AT_SYMLINK_FOLLOW` links a symlink itself, not what it points to.
    pub(super) fn hard_link(
        &mut self,
        entry: &str,
        path: &LayerPath,
        target: &LayerPath,
    ) -> Result<(), LayerError> {
        let fail = |reason| LayerError::LinkTarget {
            entry: entry.to_owned(),
            target: target.lossy(),
            reason,
        };
        let Some((target_parent, target_name)) = target.split_last() else {
            return Err(fail("is the layer root"));
        };
        if target == path {
            return Err(fail("is the entry itself"));
        }
        let target_dir = self
            .resolve(&target_parent, false)
            .map_err(|(_, errno)| match errno {
                Errno::ENOENT => fail("not found"),
                Errno::ELOOP => fail("goes through a symlink"),
                Errno::ENOTDIR => fail("goes through a non-directory"),
                e => io(entry, "open hard link target directory")(e),
            })?;
        match fstatat(
            Some(target_dir.as_raw_fd()),
            target_name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Err(Errno::ENOENT) => return Err(fail("not found")),
            Err(e) => return Err(io(entry, "inspect hard link target")(e)),
            Ok(st) if is_dir(&st) => return Err(fail("is a directory")),
            Ok(_) => {}
        }
        let slot = self.slot(entry, path, false)?;
        linkat(
            Some(target_dir.as_raw_fd()),
            target_name,
            Some(slot.parent.as_raw_fd()),
            &slot.name[..],
            AtFlags::empty(),
        )
        .map_err(|e| match e {
            // Making room removed it: the entry was a directory holding its own target.
            Errno::ENOENT => fail("not found"),
            e => io(entry, "create hard link")(e),
        })
    }

    /// A character or block device or a FIFO.
    pub(super) fn node(
        &mut self,
        entry: &str,
        path: &LayerPath,
        kind: SFlag,
        major: u32,
        minor: u32,
        m: &Member,
    ) -> Result<(), LayerError> {
        let slot = self.slot(entry, path, false)?;
        let dev = makedev(u64::from(major), u64::from(minor));
        mknodat(
            Some(slot.parent.as_raw_fd()),
            &slot.name[..],
            kind,
            Mode::empty(),
            dev,
        )
        .map_err(|e| match e {
            Errno::EPERM if kind != SFlag::S_IFIFO => LayerError::NeedsRoot {
                entry: entry.to_owned(),
                what: "creating a device node",
                capability: "CAP_MKNOD",
            },
            e => io(entry, "create node")(e),
        })?;
        let obj = Object::Name(slot.parent.as_fd(), &slot.name);
        self.owner(entry, obj, m)?;
        set_mode(entry, obj, m.mode)?;
        xattrs(entry, obj, m)?;
        set_times(entry, obj, m.mtime)
    }

    /// An overlay whiteout: a character device 0:0 named for what it hides.
    pub(super) fn whiteout(&mut self, entry: &str, hidden: &LayerPath) -> Result<(), LayerError> {
        let slot = self.slot(entry, hidden, false)?;
        mknodat(
            Some(slot.parent.as_raw_fd()),
            &slot.name[..],
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(|e| match e {
            Errno::EPERM => LayerError::NeedsRoot {
                entry: entry.to_owned(),
                what: "creating a whiteout",
                capability: "CAP_MKNOD",
            },
            e => io(entry, "create whiteout")(e),
        })
    }

    /// Marks `dir` (made if missing) opaque: overlayfs shows none of the lower layers'
    /// entries in it.
    pub(super) fn opaque(&self, entry: &str, dir: &LayerPath) -> Result<(), LayerError> {
        let fd = self
            .resolve(dir, true)
            .map_err(|e| parent_error(entry, e))?;
        let fd = openat(
            Some(fd.as_raw_fd()),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(own)
        .map_err(io(entry, "open directory"))?;
        fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y").map_err(|source| {
            if source.raw_os_error() == Some(libc::EPERM) {
                LayerError::NeedsRoot {
                    entry: entry.to_owned(),
                    what: "marking an opaque directory",
                    capability: "CAP_SYS_ADMIN",
                }
            } else {
                LayerError::Xattr {
                    entry: entry.to_owned(),
                    name: lossy(OPAQUE_XATTR.to_bytes()),
                    source,
                }
            }
        })
    }

    /// Opens the parent of `path` (making missing directories) and removes what is at
    /// `path`, unless it is a directory and `keep_dir` says the new entry is one too.
    fn slot(&mut self, entry: &str, path: &LayerPath, keep_dir: bool) -> Result<Slot, LayerError> {
        let Some((parent_path, name)) = path.split_last() else {
            return Err(LayerError::Refused {
                entry: entry.to_owned(),
                reason: "only a directory may name the layer root",
            });
        };
        let parent = self
            .resolve(&parent_path, true)
            .map_err(|e| parent_error(entry, e))?;
        let kept_dir = match fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => false,
            Err(e) => return Err(io(entry, "inspect the entry it replaces")(e)),
            Ok(st) if is_dir(&st) && keep_dir => true,
            Ok(st) => {
                if is_dir(&st) {
                    remove_tree(parent.as_fd(), name).map_err(|source| LayerError::Io {
                        entry: entry.to_owned(),
                        step: "remove the directory it replaces",
                        source,
                    })?;
                    self.dirs.retain(|dir, _| !is_within(dir, path.as_bytes()));
                } else {
                    unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                        .map_err(io(entry, "remove the entry it replaces"))?;
                }
                false
            }
        };
        Ok(Slot {
            parent,
            name: name.to_vec(),
            kept_dir,
        })
    }

    /// Opens directory `path` beneath the root as `O_PATH`, making missing directories
    /// (0755) when `create` says so. On failure, returns how far it got and why.
    fn resolve(&self, path: &LayerPath, create: bool) -> Result<OwnedFd, (LayerPath, Errno)> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        if let Ok(fd) = beneath(self.root.as_fd(), dot_if_empty(path.as_bytes()), dir_flags) {
            return Ok(fd);
        }
        // Walk one component at a time, to make what is missing and name what is wrong.
        let mut walked = LayerPath::root();
        let mut dir =
            beneath(self.root.as_fd(), b".", dir_flags).map_err(|e| (walked.clone(), e))?;
        for name in path.components() {
            walked = walked.join(name);
            dir = match beneath(dir.as_fd(), name, dir_flags) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    let made =
                        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                            // The umask may have narrowed it.
                            .and_then(|()| {
                                fchmodat(
                                    Some(dir.as_raw_fd()),
                                    name,
                                    Mode::from_bits_truncate(0o755),
                                    FchmodatFlags::NoFollowSymlink,
                                )
                            })
                            .and_then(|()| beneath(dir.as_fd(), name, dir_flags));
                    made.map_err(|e| (walked.clone(), e))?
                }
                Err(e) => return Err((walked, e)),
            };
        }
        Ok(dir)
    }

    fn owner(&self, entry: &str, obj: Object<'_>, m: &Member) -> Result<(), LayerError> {
        if !self.as_root {
            return Ok(());
        }
        let (uid, gid) = (Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)));
        match obj {
            Object::Fd(fd) => fchown(fd.as_raw_fd(), uid, gid),
            Object::Name(dir, name) => fchownat(
                Some(dir.as_raw_fd()),
                name,
                uid,
                gid,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
        }
        .map_err(io(entry, "set owner"))
    }
}

fn set_mode(entry: &str, obj: Object<'_>, bits: u32) -> Result<(), LayerError> {
    match obj {
        Object::Fd(fd) => fchmod(fd.as_raw_fd(), mode(bits)),
        Object::Name(dir, name) => fchmodat(
            Some(dir.as_raw_fd()),
            name,
            mode(bits),
            FchmodatFlags::NoFollowSymlink,
        ),
    }
    .map_err(io(entry, "set mode"))
}

fn set_times(entry: &str, obj: Object<'_>, mtime: Mtime) -> Result<(), LayerError> {
    let t = timespec(mtime);
    match obj {
        Object::Fd(fd) => futimens(fd.as_raw_fd(), &t, &t),
        Object::Name(dir, name) => utimensat(
            Some(dir.as_raw_fd()),
            name,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        ),
    }
    .map_err(io(entry, "set times"))
}

/// Xattrs of objects that cannot be opened are set through the parent's descriptor in
/// `/proc/self/fd` with `lsetxattr`, which does not follow the last component.
fn xattrs(entry: &str, obj: Object<'_>, m: &Member) -> Result<(), LayerError> {
    for (name, value) in &m.xattrs {
        let fail = |source| LayerError::Xattr {
            entry: entry.to_owned(),
            name: lossy(name),
            source,
        };
        let cname = CString::new(name.as_slice())
            .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        match obj {
            Object::Fd(fd) => fsetxattr(fd, &cname, value),
            Object::Name(dir, child) => {
                let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                path.extend_from_slice(child);
                CString::new(path)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                    .and_then(|path| lsetxattr(&path, &cname, value))
            }
        }
        .map_err(fail)?;
    }
    Ok(())
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `value` is `value.len()` readable bytes; the
    // kernel only reads both during the call and `fd` stays open for it.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn lsetxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated and `value` is `value.len()` readable
    // bytes; the kernel only reads them during the call.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `openat2` relative to `dir` that refuses symlinks, magic links, mount crossings and
/// anything not beneath `dir`.
fn beneath(dir: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    openat2(dir.as_raw_fd(), path, how).map(own)
}

/// Removes `name` in `dir` and, if it is a directory, everything beneath it.
fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) => {}
        done => return done.map_err(Into::into),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let sub = openat(Some(dir.as_raw_fd()), name, flags, Mode::empty()).map(own)?;
    let listing = openat(Some(sub.as_raw_fd()), ".", flags, Mode::empty()).map(own)?;
    for child in names(listing)? {
        remove_tree(sub.as_fd(), &child)?;
    }
    drop(sub);
    unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir).map_err(Into::into)
}

/// The names in the directory open as `dir`, without `.` and `..`. (nix's `Dir` would do,
/// but the crate does not enable nix's `dir` feature.)
fn names(dir: OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let raw = dir.into_raw_fd();
    // SAFETY: `raw` is an open directory descriptor that we own; on success the stream
    // owns it and closedir below closes it.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        drop(own(raw));
        return Err(e);
    }
    let mut names = Vec::new();
    let result = loop {
        Errno::clear();
        // SAFETY: `stream` is a valid directory stream until closedir below.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break match Errno::last_raw() {
                0 => Ok(names),
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        // SAFETY: readdir returned a valid entry whose `d_name` is NUL-terminated; it is
        // copied out before the next readdir call can reuse it.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    };
    // SAFETY: `stream` came from fdopendir and is closed exactly once, which closes `raw`.
    unsafe { libc::closedir(stream) };
    result
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open, so it is a valid descriptor
    // that nothing else owns or will close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn parent_error(entry: &str, (parent, errno): (LayerPath, Errno)) -> LayerError {
    let reason = match errno {
        Errno::ELOOP => "is a symlink",
        Errno::ENOTDIR => "is not a directory",
        Errno::EXDEV => "is a mount point",
        e => return io(entry, "open parent directory")(e),
    };
    LayerError::Parent {
        entry: entry.to_owned(),
        parent: parent.lossy(),
        reason,
    }
}

fn io<'a>(entry: &'a str, step: &'static str) -> impl FnOnce(Errno) -> LayerError + 'a {
    move |e| LayerError::Io {
        entry: entry.to_owned(),
        step,
        source: e.into(),
    }
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn dot_if_empty(path: &[u8]) -> &[u8] {
    if path.is_empty() {
        b"."
    } else {
        path
    }
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits & 0o7777)
}

fn timespec(t: Mtime) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
