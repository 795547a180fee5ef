//! Mount destinations, resolved inside the container's root once, by descriptor.
//!
//! A destination is opened with `openat2(RESOLVE_IN_ROOT)` as far as it exists (an image
//! symlink on the way resolves inside the root); for a bind mount, the in-root path that
//! descriptor names, with what is still missing appended, is checked against `/dev`,
//! `/proc` and `/sys` before anything is made; what is missing is then made under that
//! descriptor, one component at a time, never following a symlink, and the final
//! descriptor is checked again. The caller mounts onto that descriptor, so nothing between
//! the check and the mount resolves the path a second time.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use super::{fail, refused, RootfsError};

/// Where the runtime mounts itself, and no bind may land.
const RUNTIME_DIRS: [&str; 3] = ["dev", "proc", "sys"];

/// A directory (or file) inside the root, opened `O_PATH`.
pub(super) struct Inside {
    pub(super) fd: OwnedFd,
}

impl Inside {
    pub(super) fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

pub(super) fn open_in_root(root: RawFd, rel: &Path, dir: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(root, rel, how)?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `name` directly under the directory `parent`, opened `O_PATH`; a symlink there is
/// refused (`ELOOP`), not followed, and another mount is not crossed into.
pub(super) fn open_child(parent: RawFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = openat2(parent, Path::new(name), how)?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path `fd` resolves to, relative to the directory `root` resolves to.
fn path_below(root: RawFd, fd: RawFd) -> Result<PathBuf, Errno> {
    let at = |fd: RawFd| nix::fcntl::readlink(format!("/proc/self/fd/{fd}").as_str());
    let (root_path, path) = (PathBuf::from(at(root)?), PathBuf::from(at(fd)?));
    path.strip_prefix(&root_path)
        .map(Path::to_owned)
        .map_err(|_| Errno::EXDEV)
}

/// Opens `dest` inside the root, making missing directories (and, for a file mount
/// target, an empty file) along the way. For the runtime's own mounts (`/proc`, `/dev`,
/// its nodes): no check of where it lands.
pub(super) fn make_inside(root: RawFd, dest: &Path, file: bool) -> Result<Inside, RootfsError> {
    resolve(root, dest, file, |_| Ok(()))
}

/// Bind mount `i`'s destination: refused with `mounts[i].destination` if it lands, once
/// resolved in the root, on or under `/dev`, `/proc` or `/sys` (checked before anything is
/// made, and again on the final descriptor); otherwise opened, made where missing.
pub(super) fn bind_destination(
    root: RawFd,
    i: usize,
    dest: &Path,
    file: bool,
) -> Result<Inside, RootfsError> {
    let key = format!("mounts[{i}].destination");
    resolve(root, dest, file, |below| {
        let Some(below) = below else {
            return Err(refused(&key, dest, "resolves outside the container's root"));
        };
        let first = below.components().next().map(|c| c.as_os_str().to_owned());
        match first.and_then(|c| c.into_string().ok()) {
            Some(dir) if RUNTIME_DIRS.contains(&dir.as_str()) => Err(refused(
                &key,
                dest,
                format!(
                    "resolves to /{}, on or under /{dir}, where the runtime mounts",
                    below.display()
                ),
            )),
            _ => Ok(()),
        }
    })
}

/// Resolves `dest` in the root as far as it exists, asks `check` about the in-root path it
/// will have (`None` if it is not under the root), makes what is missing under the
/// descriptor of what exists, and asks `check` again about the final descriptor.
fn resolve(
    root: RawFd,
    dest: &Path,
    file: bool,
    check: impl Fn(Option<&Path>) -> Result<(), RootfsError>,
) -> Result<Inside, RootfsError> {
    let parts: Vec<&OsStr> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    // The deepest part of the destination that exists, following in-root symlinks.
    let mut have = parts.len();
    let mut fd = loop {
        let prefix: PathBuf = parts[..have].iter().collect();
        let prefix = if have == 0 { Path::new(".") } else { &prefix };
        match open_in_root(root, prefix, false) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) if have > 0 => have -= 1,
            Err(e) => return Err(fail("open", dest)(e)),
        }
    };
    let missing = &parts[have..];
    let below = path_below(root, fd.as_raw_fd()).ok();
    let planned = below.map(|b| missing.iter().fold(b, |p, m| p.join(m)));
    check(planned.as_deref())?;
    for (n, part) in missing.iter().enumerate() {
        let last = n + 1 == missing.len();
        let made = if last && file {
            nix::fcntl::openat(
                Some(fd.as_raw_fd()),
                *part,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC
                    | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o644),
            )
            .map(|fd| {
                // SAFETY: openat just returned this descriptor; closing it is all we do.
                drop(unsafe { OwnedFd::from_raw_fd(fd) })
            })
        } else {
            mkdirat(Some(fd.as_raw_fd()), *part, Mode::from_bits_truncate(0o755))
        };
        // Something made it meanwhile (or it is a link that resolves nowhere, which the
        // open below refuses): what is there is opened, never followed.
        match made {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail("create", dest)(e)),
        }
        fd = open_child(fd.as_raw_fd(), part).map_err(fail("open", dest))?;
    }
    if !missing.is_empty() {
        check(path_below(root, fd.as_raw_fd()).ok().as_deref())?;
    }
    Ok(Inside { fd })
}
