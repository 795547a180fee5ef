//! Reads of files from a container's root, on the host or in the init: the image decides
//! what they are. Opened in-root (`openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`, so an absolute symlink or `..` stays in the root),
//! `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` (a FIFO cannot block the open), a regular file
//! required by `fstat` on the descriptor (no check-then-open), and the read capped.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The most read from one file of a container's root.
pub const MAX_READ: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("{path} in the container's root {root}: open: {source}")]
    Open {
        root: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} in the container's root {root}: not a regular file")]
    NotRegular { root: PathBuf, path: PathBuf },
    #[error("{path} in the container's root {root}: a symbolic link, which is not followed")]
    Symlink { root: PathBuf, path: PathBuf },
    #[error("{path} in the container's root {root}: larger than the {cap} bytes read at most")]
    TooBig {
        root: PathBuf,
        path: PathBuf,
        cap: u64,
    },
    #[error("{path} in the container's root {root}: read: {source}")]
    Read {
        root: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bytes of `path` (relative to `root`, or absolute in it); `None` when it does not
/// exist.
pub fn read(root: &Path, path: &Path) -> Result<Option<Vec<u8>>, InRootError> {
    let (r, p) = (root.to_owned(), path.to_owned());
    let open_err = |source| InRootError::Open {
        root: r.clone(),
        path: p.clone(),
        source,
    };
    let dir = std::fs::File::open(root).map_err(open_err)?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        open_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NUL byte in the path",
        ))
    })?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let file = match open_in_root(&dir, &c_path, flags) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW refuses a final symlink with ELOOP, as it does a loop on the way: say
        // which, for the message (the link itself, opened O_PATH, is never read).
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let link = open_in_root(
                &dir,
                &c_path,
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
            .and_then(|fd| std::fs::File::from(fd).metadata());
            if link.is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(InRootError::Symlink { root: r, path: p });
            }
            return Err(open_err(e));
        }
        Err(e) => return Err(open_err(e)),
    };
    let meta = file.metadata().map_err(|source| InRootError::Read {
        root: r.clone(),
        path: p.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(InRootError::NotRegular { root: r, path: p });
    }
    let mut bytes = Vec::new();
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InRootError::Read {
            root: r.clone(),
            path: p.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_READ {
        return Err(InRootError::TooBig {
            root: r,
            path: p,
            cap: MAX_READ,
        });
    }
    Ok(Some(bytes))
}

/// `openat2(dir, path, flags)` resolved in the root `dir` names, magic links refused.
fn open_in_root(
    dir: &std::fs::File,
    path: &std::ffi::CStr,
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    // SAFETY: an all-zero open_how is valid (no flags); the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the directory descriptor is open, the path a NUL-terminated string and `how`
    // a valid open_how of the size passed, all outliving the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(dir),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// [`read`] as text (invalid UTF-8 replaced); empty when the file does not exist.
pub fn read_text(root: &Path, path: &Path) -> Result<String, InRootError> {
    Ok(read(root, path)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absolute_symlink_resolves_in_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("etc")).unwrap();
        std::fs::write(host.path().join("etc/passwd"), "host\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("alt")).unwrap();
        std::fs::write(root.path().join("alt/passwd"), "image\n").unwrap();
        // An absolute link to the host's directory resolves to the root's copy of the path.
        std::os::unix::fs::symlink(host.path().join("etc"), root.path().join("etc")).unwrap();
        assert!(read(root.path(), Path::new("etc/passwd"))
            .unwrap()
            .is_none());
        std::os::unix::fs::symlink("/alt", root.path().join("via")).unwrap();
        assert_eq!(
            read(root.path(), Path::new("via/passwd")).unwrap().unwrap(),
            b"image\n"
        );
        std::os::unix::fs::symlink("../../../../../../alt", root.path().join("up")).unwrap();
        assert_eq!(
            read_text(root.path(), Path::new("up/passwd")).unwrap(),
            "image\n"
        );
    }

    #[test]
    fn a_fifo_a_device_node_and_a_final_symlink_are_refused_at_once() {
        let root = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&root.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read(root.path(), Path::new("fifo")).unwrap_err();
        assert!(matches!(e, InRootError::NotRegular { .. }), "{e}");
        std::os::unix::fs::symlink("/dev/zero", root.path().join("zero")).unwrap();
        let e = read(root.path(), Path::new("zero")).unwrap_err();
        assert!(matches!(e, InRootError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("zero"), "{e}");
        if nix::unistd::geteuid().is_root() {
            nix::sys::stat::mknod(
                &root.path().join("null"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::S_IRUSR,
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
            let e = read(root.path(), Path::new("null")).unwrap_err();
            assert!(matches!(e, InRootError::NotRegular { .. }), "{e}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_naming_the_cap() {
        let root = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(root.path().join("big")).unwrap();
        f.set_len(MAX_READ + 1).unwrap();
        let e = read(root.path(), Path::new("big")).unwrap_err();
        assert!(e.to_string().contains(&MAX_READ.to_string()), "{e}");
        f.set_len(MAX_READ).unwrap();
        assert_eq!(
            read(root.path(), Path::new("big")).unwrap().unwrap().len() as u64,
            MAX_READ
        );
    }
}
