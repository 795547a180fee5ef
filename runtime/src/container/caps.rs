//! Capabilities and the user switch, with the `caps` crate for the capability system
//! calls. The defaults for containers started from images are Docker's 14.

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid};

use super::spec::{CapSets, ProcessSpec};

/// Docker's default capabilities for containers started from images.
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// [`DOCKER_DEFAULT`] in every set but ambient; without `device_rules` (no cgroup v2 to
/// enforce them) less CAP_MKNOD, with which a container could make a node for a host disk
/// and read it.
pub fn docker_default_sets(device_rules: bool) -> CapSets {
    let mask = DOCKER_DEFAULT
        .iter()
        .filter(|c| device_rules || **c != Capability::CAP_MKNOD)
        .fold(0u64, |m, c| m | c.bitmask());
    CapSets {
        bounding: mask,
        effective: mask,
        permitted: mask,
        inheritable: 0,
        ambient: 0,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct CapsError {
    pub step: &'static str,
    pub reason: String,
}

fn set_of(mask: u64) -> caps::CapsHashSet {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect()
}

fn caps_err(step: &'static str) -> impl Fn(caps::errors::CapsError) -> CapsError {
    move |e| CapsError {
        step,
        reason: e.to_string(),
    }
}

/// What can go before the user switch without losing what the switch needs: narrows the
/// bounding set (CAP_SETPCAP; the effective set, CAP_SYS_ADMIN included, stays), asks the
/// kernel to keep the permitted set across the switch, and empties the ambient set.
/// [`switch_user`] does the rest.
pub fn prepare_switch(p: &ProcessSpec) -> Result<(), CapsError> {
    let sets = p.caps;
    for c in caps::all() {
        if sets.bounding & c.bitmask() == 0
            && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false)
        {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(caps_err("drop from the bounding set"))?;
        }
    }
    // SAFETY: PR_SET_KEEPCAPS takes plain integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(CapsError {
            step: "keep capabilities",
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))
}

/// After [`prepare_switch`]: switches to the process's user and groups, then sets the
/// capability sets (capget/capset) and raises the ambient ones (prctl, only if any).
pub fn switch_user(p: &ProcessSpec) -> Result<(), CapsError> {
    let sets = p.caps;
    let groups: Vec<Gid> = p
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| CapsError {
        step: "setgroups",
        reason: e.to_string(),
    })?;
    let (gid, uid) = (Gid::from_raw(p.gid), Uid::from_raw(p.uid));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| CapsError {
        step: "setgid",
        reason: e.to_string(),
    })?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| CapsError {
        step: "setuid",
        reason: e.to_string(),
    })?;
    // Effective first: it must stay within permitted at every step.
    caps::set(
        None,
        CapSet::Effective,
        &set_of(sets.effective & sets.permitted),
    )
    .map_err(caps_err("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &set_of(sets.permitted))
        .map_err(caps_err("set the permitted set"))?;
    caps::set(None, CapSet::Effective, &set_of(sets.effective))
        .map_err(caps_err("set the effective set"))?;
    caps::set(None, CapSet::Inheritable, &set_of(sets.inheritable))
        .map_err(caps_err("set the inheritable set"))?;
    // The kernel lets a capability be ambient only when it is permitted and inheritable;
    // runc skips the others with a warning, and so do we (bundles from `runc spec` list
    // ambient capabilities without inheritable ones).
    for c in set_of(sets.ambient & sets.permitted & sets.inheritable) {
        caps::raise(None, CapSet::Ambient, c).map_err(caps_err("raise in the ambient set"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_less_mknod_and_none_ambient() {
        let s = docker_default_sets(true);
        assert_eq!(s.bounding.count_ones(), 14);
        assert_eq!(
            docker_default_sets(false).bounding.count_ones(),
            13,
            "less CAP_MKNOD"
        );
        assert_eq!(s.effective, s.bounding);
        assert_eq!(s.ambient, 0);
        assert_eq!(s.bounding & Capability::CAP_SYS_ADMIN.bitmask(), 0);
    }
}
