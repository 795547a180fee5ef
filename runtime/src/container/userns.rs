//! User namespaces: a bundle's uid/gid maps, checked, and the steps that put a container
//! in a user namespace of its own (new, or joined by path).
//!
//! The kernel dictates the order, so it is runc's: namespaces joined by path are joined
//! while the process still has the host's privileges (a joined user namespace first, so
//! that the others are joined with its privileges); a new user namespace is made before
//! the other new namespaces, so that it owns them (mounting `/proc`, `/sys` or `mqueue`
//! needs that); and a new PID namespace applies to children only. One `clone` cannot do
//! all of that, so a container with a user namespace takes one more process than one
//! without: the runtime clones a *helper* in no new namespace, which
//!
//! 1. joins the namespaces named by path (the PID namespace too, for its children),
//! 2. unshares the user namespace and asks the runtime to write its maps (`map`),
//! 3. becomes root in it, unshares the other new namespaces but the cgroup one (the init
//!    makes that one once it is in its cgroup, as without a user namespace),
//! 4. clones the container's init with `CLONE_PARENT`, so that the runtime is the init's
//!    parent as in the single-clone case, reports its pid (`pid N`) and exits.
//!
//! The maps go in from outside, written by the runtime into `/proc/<helper>/uid_map` and
//! `gid_map` in one `write` each (the kernel takes nothing else). As runc does,
//! `setgroups` is set to `deny` only when the runtime lacks CAP_SETGID (it must then, for
//! the kernel to take the gid map from it); a privileged runtime leaves it allowed, so the
//! container's process keeps its additional groups. Containers without a user namespace
//! keep the single clone: nothing here runs on their path.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sched::{CloneCb, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};

use super::spec::{ContainerConfig, NsKind};

pub const UID_MAPS: &str = "linux.uidMappings";
pub const GID_MAPS: &str = "linux.gidMappings";

/// The kernel's limits on a map: lines, and bytes in its one write.
const MAX_LINES: usize = 340;
const MAX_BYTES: usize = 4095;

/// The helper's request to the runtime for the maps, and its report of the init's pid.
const MAP_REQUEST: &[u8] = b"map\n";
const PID_PREFIX: &str = "pid ";

/// One line of a uid or gid map: `size` ids from `container` up are `host` and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdMap {
    fn contains(&self, id: u32) -> bool {
        id >= self.container && u64::from(id) < end(self.container, self.size)
    }
}

fn end(start: u32, size: u32) -> u64 {
    u64::from(start) + u64::from(size)
}

/// A map that the kernel would refuse, or that cannot run the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    pub key: String,
    pub reason: String,
}

impl MapError {
    pub fn new(key: &str, reason: &str) -> Self {
        MapError {
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// Checks the maps under `key` as the kernel will: at least one range, none empty, none
/// past the last 32-bit id (which is reserved), no two overlapping on either side.
pub fn check_maps(key: &str, maps: &[IdMap]) -> Result<(), MapError> {
    if maps.is_empty() {
        return Err(MapError::new(
            key,
            "a new user namespace needs at least one mapping",
        ));
    }
    for (i, m) in maps.iter().enumerate() {
        let at = format!("{key}[{i}]");
        if m.size == 0 {
            return Err(MapError::new(&at, "size is 0"));
        }
        for (side, start) in [("containerID", m.container), ("hostID", m.host)] {
            if end(start, m.size) > u64::from(u32::MAX) {
                return Err(MapError::new(
                    &at,
                    &format!(
                        "{side} {start} + size {} goes past the last id {}",
                        m.size,
                        u32::MAX - 1
                    ),
                ));
            }
        }
        for (j, n) in maps[..i].iter().enumerate() {
            let overlap =
                |a: u32, b: u32| u64::from(a) < end(b, n.size) && u64::from(b) < end(a, m.size);
            for (side, a, b) in [
                ("container", m.container, n.container),
                ("host", m.host, n.host),
            ] {
                if overlap(a, b) {
                    return Err(MapError::new(
                        &at,
                        &format!("its {side} ids overlap those of {key}[{j}]"),
                    ));
                }
            }
        }
    }
    if maps.len() > MAX_LINES {
        return Err(MapError::new(
            key,
            &format!(
                "{} ranges; the kernel takes at most {MAX_LINES}",
                maps.len()
            ),
        ));
    }
    let bytes = map_text(maps).len();
    if bytes > MAX_BYTES {
        return Err(MapError::new(
            key,
            &format!("{bytes} bytes of map; the kernel takes at most {MAX_BYTES}"),
        ));
    }
    Ok(())
}

/// Refuses `id` (named by `key`) unless the maps under `maps_key` cover it.
pub fn must_map(maps_key: &str, maps: &[IdMap], id: u32, key: &str) -> Result<(), MapError> {
    if maps.iter().any(|m| m.contains(id)) {
        return Ok(());
    }
    let reason = if key == maps_key {
        // Only root is checked under the maps' own key.
        format!("container id {id} (root) is not mapped; the init becomes root in the new user namespace to set it up")
    } else {
        format!("{id} is not mapped by {maps_key}")
    };
    Err(MapError::new(key, &reason))
}

/// The maps as `/proc/<pid>/uid_map` takes them.
fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// The host ids of root in the user namespace of `pid`, from its maps as the host sees
/// them; `None` when root is not mapped there.
pub(super) fn host_root(pid: Pid) -> Option<(Uid, Gid)> {
    let root_of = |file: &str| -> Option<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        text.lines().find_map(|line| {
            let f: Vec<u32> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3 && f[0] == 0 && f[2] > 0).then_some(f[1])
        })
    };
    Some((
        Uid::from_raw(root_of("uid_map")?),
        Gid::from_raw(root_of("gid_map")?),
    ))
}

/// Writes the maps of the new user namespace of `pid`; on failure, the file and why.
fn write_maps(pid: Pid, uid: &[IdMap], gid: &[IdMap]) -> Result<(), (PathBuf, std::io::Error)> {
    let write = |file: &str, text: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            // One write: the kernel refuses a map in pieces.
            .and_then(|mut f| f.write(text.as_bytes()))
            .and_then(|n| {
                if n == text.len() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "wrote {n} of {} bytes",
                        text.len()
                    )))
                }
            });
        result.map_err(|e| (path, e))
    };
    let may_setgid =
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETGID).unwrap_or(false);
    if !may_setgid {
        write("setgroups", "deny")?;
    }
    write("uid_map", &map_text(uid))?;
    write("gid_map", &map_text(gid))?;
    Ok(())
}

/// The runtime's side of the helper's steps: writes the maps when the helper asks, and
/// returns the container init's pid once the helper has cloned it (the helper is reaped).
/// On failure the reason; the caller kills the helper.
pub(super) fn await_init(
    config: &ContainerConfig,
    helper: Pid,
    sync: &mut UnixStream,
) -> Result<Pid, String> {
    loop {
        let line = super::read_line(sync);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if line.as_slice() == MAP_REQUEST {
            write_maps(helper, &config.uid_maps, &config.gid_maps).map_err(|(path, e)| {
                format!("write the user namespace's map {}: {e}", path.display())
            })?;
            sync.write_all(b"m")
                .map_err(|e| format!("tell the helper the maps are written: {e}"))?;
        } else if let Some(pid) = text.strip_prefix(PID_PREFIX) {
            let pid = pid
                .parse::<i32>()
                .map_err(|_| format!("the helper reported a bad pid {pid:?}"))?;
            let _ = nix::sys::wait::waitpid(helper, None);
            return Ok(Pid::from_raw(pid));
        } else if let Some(reason) = text.strip_prefix("error: ") {
            return Err(reason.to_owned());
        } else {
            return Err("the helper exited before it cloned the init".into());
        }
    }
}

/// Runs in the helper the runtime cloned; clones `init` into the container's namespaces
/// (see the module docs) and exits. Never returns.
/// `keep`: the init's hand-over descriptors, the only ones kept with the socket.
pub(super) fn helper(
    config: &ContainerConfig,
    mut sync: UnixStream,
    init: CloneCb,
    keep: &[std::os::fd::RawFd],
) -> ! {
    let mut keep = keep.to_vec();
    keep.push(std::os::fd::AsRawFd::as_raw_fd(&sync));
    if let Err(e) = super::init::close_fds_except(&keep) {
        let _ = sync.write_all(format!("error: {e}\n").as_bytes());
        // SAFETY: _exit ends the helper at once, without the runtime's atexit handlers.
        unsafe { libc::_exit(1) }
    }
    super::init::harden_child();
    // If the runtime dies, so does the set-up.
    // SAFETY: prctl with plain integers touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let code = match helper_steps(config, &mut sync, init) {
        Ok(pid) => {
            let _ = sync.write_all(format!("{PID_PREFIX}{pid}\n").as_bytes());
            0
        }
        Err(e) => {
            let _ = sync.write_all(format!("error: {e}\n").as_bytes());
            1
        }
    };
    // SAFETY: _exit ends the helper at once, without the runtime's atexit handlers or
    // its copies of the runtime's buffers.
    unsafe { libc::_exit(code) }
}

fn helper_steps(
    config: &ContainerConfig,
    sync: &mut UnixStream,
    init: CloneCb,
) -> Result<Pid, String> {
    let mut joins: Vec<_> = config
        .namespaces
        .iter()
        .filter_map(|n| n.path.as_ref().map(|p| (n.kind, p)))
        .collect();
    joins.sort_by_key(|(kind, _)| *kind != NsKind::User);
    // All opened first, as the host's root: once in a joined user namespace, /proc of
    // processes outside it is out of reach.
    let mut fds = Vec::new();
    for (kind, path) in joins {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("open namespace {}: {e}", path.display()))?;
        // SAFETY: open just returned this descriptor and nothing else owns it.
        fds.push((kind, path, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    for (kind, path, fd) in fds {
        nix::sched::setns(&fd, kind.clone_flag())
            .map_err(|e| format!("join namespace {}: {e}", path.display()))?;
    }
    if config.has_new(NsKind::User) {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("make the user namespace: {e}"))?;
        sync.write_all(MAP_REQUEST)
            .map_err(|e| format!("ask for the maps: {e}"))?;
        let mut ack = [0u8; 1];
        if !matches!(sync.read(&mut ack), Ok(1)) {
            return Err("the runtime did not write the maps".into());
        }
    }
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setresgid(root.1, root.1, root.1)
        .map_err(|e| format!("become gid 0 in the user namespace: {e}"))?;
    nix::unistd::setresuid(root.0, root.0, root.0)
        .map_err(|e| format!("become uid 0 in the user namespace: {e}"))?;
    let flags = config
        .namespaces
        .iter()
        .filter(|n| n.path.is_none() && !matches!(n.kind, NsKind::User | NsKind::Cgroup))
        .fold(CloneFlags::empty(), |f, n| f | n.kind.clone_flag());
    nix::sched::unshare(flags).map_err(|e| format!("make the namespaces: {e}"))?;
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: the helper is single-threaded (a clone of the single-threaded runtime), so
    // the init gets a consistent copy of memory; it runs on its own stack and ends in
    // execve or _exit, never returning into code that expects the helper's stack.
    unsafe {
        nix::sched::clone(
            init,
            &mut stack,
            CloneFlags::CLONE_PARENT,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| format!("clone the init: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(container: u32, host: u32, size: u32) -> IdMap {
        IdMap {
            container,
            host,
            size,
        }
    }

    #[test]
    fn good_maps_pass_and_are_written_one_line_each() {
        let maps = [m(0, 100000, 65536), m(65536, 300000, 1)];
        assert_eq!(check_maps(UID_MAPS, &maps), Ok(()));
        assert_eq!(map_text(&maps), "0 100000 65536\n65536 300000 1\n");
        assert!(must_map(UID_MAPS, &maps, 65536, "process.user.uid").is_ok());
    }

    #[test]
    fn empty_zero_sized_overflowing_and_overlapping_maps_are_refused_by_index() {
        let err = |maps: &[IdMap]| check_maps(UID_MAPS, maps).unwrap_err();
        assert_eq!(err(&[]).key, UID_MAPS);
        let e = err(&[m(0, 100000, 10), m(10, 200000, 0)]);
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("linux.uidMappings[1]", "size is 0")
        );
        let e = err(&[m(0, u32::MAX - 10, 11)]);
        assert_eq!(e.key, "linux.uidMappings[0]");
        assert!(e.reason.starts_with("hostID"), "{}", e.reason);
        let e = err(&[m(0, 100000, 100), m(50, 500000, 10)]);
        assert_eq!(e.key, "linux.uidMappings[1]");
        assert!(e
            .reason
            .contains("container ids overlap those of linux.uidMappings[0]"));
        let e = err(&[m(0, 100000, 100), m(1000, 100099, 10)]);
        assert!(e.reason.contains("host ids overlap"), "{}", e.reason);
        // Touching is not overlapping.
        assert!(check_maps(UID_MAPS, &[m(0, 100, 10), m(10, 110, 10)]).is_ok());
        let many: Vec<IdMap> = (0..341).map(|i| m(i * 2, 100000 + i * 2, 1)).collect();
        assert!(err(&many).reason.contains("340"));
    }

    #[test]
    fn unmapped_ids_are_named_by_their_key() {
        let maps = [m(1, 100000, 10)];
        let e = must_map(UID_MAPS, &maps, 0, UID_MAPS).unwrap_err();
        assert!(e.reason.contains("root"), "{}", e.reason);
        let e = must_map(GID_MAPS, &maps, 11, "process.user.gid").unwrap_err();
        assert_eq!(e.key, "process.user.gid");
        assert_eq!(e.reason, "11 is not mapped by linux.gidMappings");
    }
}
