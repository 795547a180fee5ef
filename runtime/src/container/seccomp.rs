//! Seccomp: Docker's default profile for containers started from images, and a bundle's
//! `linux.seccomp`, compiled to BPF with `seccompiler` (rust-vmm's, as Firecracker uses).
//!
//! A profile is a default action plus rules (system calls, optional argument conditions,
//! an action). `seccompiler` builds a filter with one action for matches and one for the
//! rest, so a profile becomes several filters, which the kernel runs together and whose
//! most restrictive answer wins (`KILL` > `TRAP` > `ERRNO` > `TRACE` > `LOG` > `ALLOW`):
//!
//! - one filter returns the default action for every call no rule matches (and `ALLOW` for
//!   those that do);
//! - one filter per other action returns that action where its rules match.
//!
//! That is how libseccomp resolves overlapping rules too. Only x86_64 calls are allowed:
//! the filter refuses the 32-bit and x32 ABIs outright (Docker lets 32-bit calls through
//! by name; Gantry does not run 32-bit programs in containers).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::syscalls;

mod docker;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Errno(u32),
    Log,
    Trap,
    KillThread,
    KillProcess,
}

impl Action {
    fn to_seccompiler(&self) -> SeccompAction {
        match self {
            Action::Allow => SeccompAction::Allow,
            Action::Errno(e) => SeccompAction::Errno(*e),
            Action::Log => SeccompAction::Log,
            Action::Trap => SeccompAction::Trap,
            Action::KillThread => SeccompAction::KillThread,
            Action::KillProcess => SeccompAction::KillProcess,
        }
    }

    fn oci_name(&self) -> &'static str {
        match self {
            Action::Allow => "SCMP_ACT_ALLOW",
            Action::Errno(_) => "SCMP_ACT_ERRNO",
            Action::Log => "SCMP_ACT_LOG",
            Action::Trap => "SCMP_ACT_TRAP",
            Action::KillThread => "SCMP_ACT_KILL_THREAD",
            Action::KillProcess => "SCMP_ACT_KILL_PROCESS",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<&'static str>,
    pub action: Action,
    /// All must hold (an empty list always holds).
    pub conditions: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default: Action,
    pub rules: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {0}")]
    Invalid(String),
    #[error("seccomp filter: {0}")]
    Compile(String),
    #[error("install the seccomp filter: {0}")]
    Install(String),
}

/// A filter that refuses everything but the x86_64 ABI: other architectures (i386) and
/// x32 calls (number with bit 30 set) get EPERM.
fn abi_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    let (ld_abs_w, jeq_k, jset_k, ret_k) = (
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
        (libc::BPF_RET | libc::BPF_K) as u16,
    );
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    vec![
        ins(ld_abs_w, 0, 0, 4),              // seccomp_data.arch
        ins(jeq_k, 0, 3, AUDIT_ARCH_X86_64), // not x86_64: deny
        ins(ld_abs_w, 0, 0, 0),              // seccomp_data.nr
        ins(jset_k, 1, 0, X32_SYSCALL_BIT),  // x32: deny
        ins(ret_k, 0, 0, libc::SECCOMP_RET_ALLOW),
        ins(ret_k, 0, 0, deny),
    ]
}

impl Profile {
    /// The profile as OCI `linux.seccomp` JSON (what a bundle would carry).
    pub fn to_oci_json(&self) -> serde_json::Value {
        let action_json = |a: &Action, v: &mut serde_json::Value| {
            v["action"] = a.oci_name().into();
            if let Action::Errno(e) = a {
                v["errnoRet"] = (*e).into();
            }
        };
        let mut out = serde_json::json!({ "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [] });
        out["defaultAction"] = self.default.oci_name().into();
        if let Action::Errno(e) = self.default {
            out["defaultErrnoRet"] = e.into();
        }
        let mut syscalls = Vec::new();
        for r in &self.rules {
            let mut v = serde_json::json!({ "names": r.names });
            action_json(&r.action, &mut v);
            if !r.conditions.is_empty() {
                v["args"] = r
                    .conditions
                    .iter()
                    .map(|c| {
                        let (op, value, two) = match c.op {
                            Op::Eq => ("SCMP_CMP_EQ", c.value, 0),
                            Op::Ne => ("SCMP_CMP_NE", c.value, 0),
                            Op::Lt => ("SCMP_CMP_LT", c.value, 0),
                            Op::Le => ("SCMP_CMP_LE", c.value, 0),
                            Op::Gt => ("SCMP_CMP_GT", c.value, 0),
                            Op::Ge => ("SCMP_CMP_GE", c.value, 0),
                            Op::MaskedEq(mask) => ("SCMP_CMP_MASKED_EQ", mask, c.value),
                        };
                        serde_json::json!({ "index": c.index, "value": value, "valueTwo": two, "op": op })
                    })
                    .collect();
            }
            syscalls.push(v);
        }
        out["syscalls"] = syscalls.into();
        out
    }

    /// Reads a bundle's `linux.seccomp`. Names x86_64 does not have are skipped (as runc
    /// does: profiles are written for many architectures).
    pub fn from_oci(s: &oci_spec::runtime::LinuxSeccomp) -> Result<Profile, SeccompError> {
        let name_of = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
        let action = |a: &oci_spec::runtime::LinuxSeccompAction,
                      errno: Option<u32>|
         -> Result<Action, SeccompError> {
            let name = name_of(serde_json::to_value(a).unwrap_or_default());
            Ok(match name.as_str() {
                "SCMP_ACT_ALLOW" => Action::Allow,
                "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(libc::EPERM as u32)),
                "SCMP_ACT_LOG" => Action::Log,
                "SCMP_ACT_TRAP" => Action::Trap,
                "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
                "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
                other => {
                    return Err(SeccompError::Invalid(format!(
                        "action {other} is not supported"
                    )))
                }
            })
        };
        if let Some(arches) = s.architectures() {
            let names: Vec<String> = arches
                .iter()
                .map(|a| name_of(serde_json::to_value(a).unwrap_or_default()))
                .collect();
            if !names.is_empty() && !names.iter().any(|n| n == "SCMP_ARCH_X86_64") {
                return Err(SeccompError::Invalid(format!(
                    "architectures {names:?} do not include SCMP_ARCH_X86_64"
                )));
            }
        }
        if s.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(SeccompError::Invalid("flags are not supported".into()));
        }
        if s.listener_path().is_some() {
            return Err(SeccompError::Invalid(
                "listenerPath (notify) is not supported".into(),
            ));
        }
        let default = action(&s.default_action(), s.default_errno_ret())?;
        let mut rules = Vec::new();
        for (i, sc) in s.syscalls().iter().flatten().enumerate() {
            let act = action(&sc.action(), sc.errno_ret())?;
            let mut conditions = Vec::new();
            for a in sc.args().iter().flatten() {
                let op = name_of(serde_json::to_value(a.op()).unwrap_or_default());
                let index = u8::try_from(a.index())
                    .ok()
                    .filter(|i| *i < 6)
                    .ok_or_else(|| {
                        SeccompError::Invalid(format!(
                            "syscalls[{i}]: argument index {} is not 0-5",
                            a.index()
                        ))
                    })?;
                let (op, value) = match op.as_str() {
                    "SCMP_CMP_EQ" => (Op::Eq, a.value()),
                    "SCMP_CMP_NE" => (Op::Ne, a.value()),
                    "SCMP_CMP_LT" => (Op::Lt, a.value()),
                    "SCMP_CMP_LE" => (Op::Le, a.value()),
                    "SCMP_CMP_GT" => (Op::Gt, a.value()),
                    "SCMP_CMP_GE" => (Op::Ge, a.value()),
                    "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(a.value()), a.value_two().unwrap_or(0)),
                    other => {
                        return Err(SeccompError::Invalid(format!(
                            "syscalls[{i}]: operator {other} is not supported"
                        )))
                    }
                };
                conditions.push(Cond { index, op, value });
            }
            let names: Vec<&'static str> = sc
                .names()
                .iter()
                .filter_map(|n| {
                    // The table is sorted by name (as `syscalls::number` relies on too).
                    syscalls::SYSCALLS
                        .binary_search_by(|(name, _)| (*name).cmp(n.as_str()))
                        .ok()
                        .map(|i| syscalls::SYSCALLS[i].0)
                })
                .collect();
            if !names.is_empty() {
                rules.push(Rule {
                    names,
                    action: act,
                    conditions,
                });
            }
        }
        Ok(Profile { default, rules })
    }

    /// The BPF programs to install, in order.
    pub fn compile(&self) -> Result<Vec<BpfProgram>, SeccompError> {
        let arch = TargetArch::x86_64;
        let to_rules = |rules: &[&Rule]| -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
            let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
            // A call with one unconditional rule matches whatever else is listed for it.
            let mut unconditional = std::collections::BTreeSet::new();
            for r in rules {
                for name in &r.names {
                    let Some(nr) = syscalls::number(name) else {
                        continue;
                    };
                    if r.conditions.is_empty() {
                        unconditional.insert(nr);
                        map.insert(nr, vec![]);
                        continue;
                    }
                    if unconditional.contains(&nr) {
                        continue;
                    }
                    let conds = r
                        .conditions
                        .iter()
                        .map(|c| {
                            let (op, value) = match c.op {
                                Op::Eq => (SeccompCmpOp::Eq, c.value),
                                Op::Ne => (SeccompCmpOp::Ne, c.value),
                                Op::Lt => (SeccompCmpOp::Lt, c.value),
                                Op::Le => (SeccompCmpOp::Le, c.value),
                                Op::Gt => (SeccompCmpOp::Gt, c.value),
                                Op::Ge => (SeccompCmpOp::Ge, c.value),
                                Op::MaskedEq(mask) => (SeccompCmpOp::MaskedEq(mask), c.value),
                            };
                            SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, op, value)
                                .map_err(|e| SeccompError::Compile(format!("{name}: {e}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let rule = SeccompRule::new(conds)
                        .map_err(|e| SeccompError::Compile(format!("{name}: {e}")))?;
                    map.entry(nr).or_default().push(rule);
                }
            }
            Ok(map)
        };
        let build = |rules: BTreeMap<i64, Vec<SeccompRule>>,
                     mismatch: SeccompAction,
                     on_match: SeccompAction| {
            SeccompFilter::new(rules, mismatch, on_match, arch)
                .and_then(BpfProgram::try_from)
                .map_err(|e| SeccompError::Compile(e.to_string()))
        };
        // seccompiler checks the architecture but not the x32 bit of the call number
        // (x32 calls carry the x86_64 audit arch): without this, a rule-based filter whose
        // default is ALLOW could be bypassed through the x32 ABI.
        //
        // Each filter after the first is installed under the ones before it, so the
        // `seccomp` call that installs it must get through them: the filter that refuses
        // calls the profile does not list (and may not list `seccomp`) goes after the
        // filters of the other actions, and a filter of an action whose rules name
        // `seccomp` itself goes last. (Two such filters cannot both be installed; a
        // profile would need conditional rules for `seccomp` under two actions.)
        let mut programs = vec![abi_guard()];
        let mut last = Vec::new();
        let mut actions: Vec<&Action> = self
            .rules
            .iter()
            .map(|r| &r.action)
            .filter(|a| **a != Action::Allow)
            .collect();
        actions.sort();
        actions.dedup();
        for action in actions {
            let group: Vec<&Rule> = self.rules.iter().filter(|r| &r.action == action).collect();
            let map = to_rules(&group)?;
            if map.is_empty() {
                continue;
            }
            let names_seccomp = map.contains_key(&libc::SYS_seccomp);
            let program = build(map, SeccompAction::Allow, action.to_seccompiler())?;
            if names_seccomp {
                last.push(program);
            } else {
                programs.push(program);
            }
        }
        if self.default != Action::Allow {
            let all: Vec<&Rule> = self.rules.iter().collect();
            programs.push(build(
                to_rules(&all)?,
                self.default.to_seccompiler(),
                SeccompAction::Allow,
            )?);
        }
        programs.extend(last);
        Ok(programs)
    }

    /// Installs the filters on the calling thread. The kernel accepts them with
    /// `no_new_privs` set or with CAP_SYS_ADMIN. `seccompiler::apply_filter` would set
    /// `no_new_privs` itself, which a bundle with `noNewPrivileges: false` must not get, so
    /// the system call is made here.
    pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
        for p in programs {
            let len = u16::try_from(p.len()).map_err(|_| {
                SeccompError::Install(format!("a filter of {} instructions is too long", p.len()))
            })?;
            let prog = libc::sock_fprog {
                len,
                // seccompiler's sock_filter is #[repr(C)] with the kernel's fields (u16, u8, u8,
                // u32), the same layout as libc's.
                filter: p.as_ptr().cast::<libc::sock_filter>().cast_mut(),
            };
            // SAFETY: `prog` points at `p`'s instructions, which outlive the call; the
            // kernel copies the program and keeps no pointer to it.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(SeccompError::Install(
                    std::io::Error::last_os_error().to_string(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_depends_on_capabilities() {
        let plain = Profile::docker_default(0);
        let admin = Profile::docker_default(1 << 21);
        let allows = |p: &Profile, name: &str| {
            p.rules.iter().any(|r| {
                r.action == Action::Allow && r.conditions.is_empty() && r.names.contains(&name)
            })
        };
        assert!(allows(&plain, "read") && allows(&plain, "execve"));
        assert!(!allows(&plain, "unshare") && !allows(&plain, "mount"));
        assert!(allows(&admin, "unshare") && allows(&admin, "mount"));
        assert!(plain
            .rules
            .iter()
            .any(|r| r.names == ["clone3"] && r.action == Action::Errno(38)));
        assert!(!admin
            .rules
            .iter()
            .any(|r| r.names == ["clone3"] && r.action != Action::Allow));
        assert_eq!(plain.default, Action::Errno(1));
    }

    #[test]
    fn every_name_in_the_default_profile_exists_on_x86_64() {
        let p = Profile::docker_default(u64::MAX);
        for r in &p.rules {
            for n in &r.names {
                assert!(
                    syscalls::number(n).is_some(),
                    "{n} is not an x86_64 system call"
                );
            }
        }
    }

    #[test]
    fn compiles_to_one_filter_for_the_default_and_one_per_other_action() {
        let programs = Profile::docker_default(0).compile().unwrap();
        assert_eq!(
            programs.len(),
            3,
            "ABI guard + default EPERM filter + ENOSYS filter for clone3"
        );
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn the_filter_of_unlisted_calls_goes_in_after_the_other_actions() {
        // Docker's profile: the ABI guard, clone3's ENOSYS filter, then the EPERM filter
        // of everything unlisted (built from every rule, so by far the longest): in a
        // profile without `seccomp`, it would refuse installing anything after it.
        let programs = Profile::docker_default(0).compile().unwrap();
        assert!(programs[2].len() > 10 * programs[1].len());
    }

    #[test]
    fn the_oci_form_reads_back_as_the_same_profile() {
        let p = Profile::docker_default(1 << 18);
        let json = p.to_oci_json();
        let oci: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(json).unwrap();
        let back = Profile::from_oci(&oci).unwrap();
        assert_eq!(back, p);
    }
}
