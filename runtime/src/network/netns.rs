//! Network namespaces held open by descriptor, and work done inside one.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, and
//! `/proc/sys/net` shows the namespace of the thread that reads it. So work for a
//! namespace runs on a short-lived thread that first `setns`es into it: the caller's
//! threads never change namespace, and a caller that is itself inside an async runtime
//! (PID 1) can call in without nesting runtimes.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

/// Which namespace: the device and inode of its nsfs file, as `ip netns identify` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enter network namespace {path}: {errno}")]
    Enter {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("the worker thread for network namespace {0} panicked")]
    Panicked(PathBuf),
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
    id: NetnsId,
}

impl Netns {
    /// The calling thread's namespace.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// A namespace by path: `/proc/<pid>/ns/net`, `/run/netns/<name>`, …
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let open = |source| NetnsError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open)?;
        let meta = file.metadata().map_err(open)?;
        Ok(Netns {
            fd: OwnedFd::from(file),
            path: path.to_owned(),
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// The namespace of process `pid`.
    pub fn of_pid(pid: i32) -> Result<Self, NetnsError> {
        Self::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    NetnsError::Enter {
                        path: self.path.clone(),
                        errno,
                    }
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Panicked(self.path.clone())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_namespace_is_the_one_of_this_process() {
        let me = Netns::current().unwrap();
        let by_pid = Netns::of_pid(std::process::id() as i32).unwrap();
        assert_eq!(me.id(), by_pid.id());
        assert_eq!(me.run(|| 7).unwrap(), 7);
    }
}
