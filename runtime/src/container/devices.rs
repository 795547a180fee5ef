//! Device access rules on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built from
//! the bundle's `linux.resources.devices` plus the nodes every container gets, attached to
//! the container's cgroup, as runc and crun do. The kernel asks the program on every
//! `mknod` and `open` of a device node; it answers with the last rule that matches (rules
//! are checked last to first), and denies what no rule matches.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// Access bits as the kernel passes them: mknod, read, write.
pub const MKNOD: u32 = 1;
pub const READ: u32 = 2;
pub const WRITE: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `Some('c')`, `Some('b')`, or `None` for both.
    pub kind: Option<char>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

/// The nodes every container's `/dev` holds, and `mknod` of anything (opening what was
/// made is still checked), as runc allows them.
pub fn defaults() -> Vec<DeviceRule> {
    let c = |major, minor| DeviceRule {
        allow: true,
        kind: Some('c'),
        major: Some(major),
        minor,
        access: MKNOD | READ | WRITE,
    };
    let mut rules = vec![
        DeviceRule {
            allow: true,
            kind: Some('c'),
            major: None,
            minor: None,
            access: MKNOD,
        },
        DeviceRule {
            allow: true,
            kind: Some('b'),
            major: None,
            minor: None,
            access: MKNOD,
        },
    ];
    for (major, minor) in super::rootfs::DEFAULT_DEVICES
        .iter()
        .map(|(_, ma, mi)| (*ma as u32, *mi as u32))
    {
        rules.push(c(major, Some(minor)));
    }
    rules.push(c(5, Some(2))); // /dev/ptmx
    rules.push(c(136, None)); // /dev/pts/*
    rules
}

/// Reads `linux.resources.devices`.
pub fn from_oci(list: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, String> {
    let mut out = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let kind = match d.typ().map(|t| {
            serde_json::to_value(t)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }) {
            None => None,
            Some(Some(t)) if t == "a" => None,
            Some(Some(t)) if t == "c" => Some('c'),
            Some(Some(t)) if t == "b" => Some('b'),
            Some(other) => return Err(format!("devices[{i}]: type {other:?} is not a, b or c")),
        };
        let mut access = 0;
        for ch in d.access().as_deref().unwrap_or("rwm").chars() {
            access |= match ch {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                other => return Err(format!("devices[{i}]: access {other:?} is not r, w or m")),
            };
        }
        let num = |v: Option<i64>| match v {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| format!("devices[{i}]: number {n} is out of range")),
        };
        out.push(DeviceRule {
            allow: d.allow(),
            kind,
            major: num(d.major())?,
            minor: num(d.minor())?,
            access,
        });
    }
    Ok(out)
}

/// A node of `linux.devices`, made in the container's `/dev` (see `rootfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Absolute, under `/dev`, with no `..`.
    pub path: std::path::PathBuf,
    pub kind: NodeKind,
    pub major: u64,
    pub minor: u64,
    /// Permission bits (`fileMode`), 0666 when not given, as runc.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

impl Node {
    /// The allow rule the node needs in the device program (read, write, mknod), as
    /// runc adds for every node it makes; none for a FIFO.
    pub fn rule(&self) -> Option<DeviceRule> {
        let kind = match self.kind {
            NodeKind::Char => 'c',
            NodeKind::Block => 'b',
            NodeKind::Fifo => return None,
        };
        Some(DeviceRule {
            allow: true,
            kind: Some(kind),
            major: u32::try_from(self.major).ok(),
            minor: u32::try_from(self.minor).ok(),
            access: MKNOD | READ | WRITE,
        })
    }
}

/// Reads `linux.devices`: each path absolute, under `/dev` (the only place the container
/// has a file system that allows device nodes), given once.
pub fn nodes_from_oci(
    list: &[oci_spec::runtime::LinuxDevice],
) -> Result<Vec<Node>, (usize, String)> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let mut out: Vec<Node> = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let path = d.path();
        let mut clean = std::path::PathBuf::from("/");
        for c in path.components() {
            match c {
                std::path::Component::RootDir | std::path::Component::CurDir => {}
                std::path::Component::Normal(n) => clean.push(n),
                _ => return Err((i, format!("path {} has a \"..\"", path.display()))),
            }
        }
        if !path.is_absolute()
            || !clean.starts_with("/dev")
            || clean == std::path::Path::new("/dev")
        {
            return Err((
                i,
                format!(
                    "path {} is not a file under /dev (the root file system is mounted nodev)",
                    path.display()
                ),
            ));
        }
        if out.iter().any(|n| n.path == clean) {
            return Err((i, format!("path {} is given twice", clean.display())));
        }
        let kind = match d.typ() {
            T::C | T::U => NodeKind::Char,
            T::B => NodeKind::Block,
            T::P => NodeKind::Fifo,
            T::A => return Err((i, "type \"a\" is a cgroup rule, not a node".into())),
        };
        let num = |n: i64, what: &str| {
            u32::try_from(n)
                .map(u64::from)
                .map_err(|_| (i, format!("{what} {n} is out of range")))
        };
        let (major, minor) = match kind {
            NodeKind::Fifo => (0, 0),
            _ => (num(d.major(), "major")?, num(d.minor(), "minor")?),
        };
        out.push(Node {
            path: clean,
            kind,
            major,
            minor,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(out)
}

/// One eBPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_K: u8 = 0xb4;
const MOV32_X: u8 = 0xbc;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

/// The program for `rules` (in bundle order; the last matching one decides).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx).
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(k) = r.kind {
            let t = if k == 'b' { DEV_BLOCK } else { DEV_CHAR };
            checks.push(vec![insn(JNE_K, 2, 0, 0, t)]);
        }
        if r.access & (MKNOD | READ | WRITE) != (MKNOD | READ | WRITE) {
            // What is asked must be within the rule's access: (asked & rule) == asked.
            checks.push(vec![
                insn(MOV32_X, 6, 3, 0, 0),
                insn(AND32_K, 6, 0, 0, r.access as i32),
                insn(JNE_X, 6, 3, 0, 0),
            ]);
        }
        if let Some(m) = r.major {
            checks.push(vec![insn(JNE_K, 4, 0, 0, m as i32)]);
        }
        if let Some(m) = r.minor {
            checks.push(vec![insn(JNE_K, 5, 0, 0, m as i32)]);
        }
        let unconditional = checks.is_empty();
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        block.push(insn(MOV32_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // Each jump skips to the end of this rule's block.
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
        if unconditional {
            // Matches everything: rules before it never decide (and the verifier refuses
            // code it cannot reach).
            return p;
        }
    }
    p.push(insn(MOV32_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Loads the program for `rules` and attaches it to the cgroup at `cgroup`.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> Result<(), String> {
    let insns = program(rules);
    let license = b"Apache-2.0\0";
    // Without a log first (a verifier log that does not fit fails the load); if the
    // kernel refuses the program, once more with a log, for the reason.
    let load_with = |log: &mut Vec<u8>| {
        let load = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            ..Default::default()
        };
        // SAFETY: `load` points at `insns`, `license` and `log`, all alive for the call;
        // the kernel reads the instructions and writes at most log_size bytes of log.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &load as *const ProgLoad,
                std::mem::size_of::<ProgLoad>(),
            )
        }
    };
    let fd = load_with(&mut Vec::new());
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let mut log = vec![0u8; 1 << 20];
        let _ = load_with(&mut log);
        let text = String::from_utf8_lossy(&log)
            .trim_end_matches('\0')
            .lines()
            .last()
            .unwrap_or("")
            .to_owned();
        return Err(format!("load the device program: {err} ({text})"));
    }
    // SAFETY: the bpf call just returned this descriptor and nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir = std::fs::File::open(cgroup).map_err(|e| format!("open {}: {e}", cgroup.display()))?;
    let attach = ProgAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: `attach` is valid for the call and names two open descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "attach the device program to {}: {}",
            cgroup.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_skip_to_the_end_of_their_rule() {
        let p = program(&[DeviceRule {
            allow: true,
            kind: Some('c'),
            major: Some(1),
            minor: Some(3),
            access: READ | WRITE,
        }]);
        // 6 loads, then: type check, 3 access insns, major, minor, mov, exit; then deny.
        assert_eq!(p.len(), 6 + 8 + 2);
        let block = &p[6..14];
        for (i, ins) in block.iter().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                assert_eq!(i + 1 + ins.off as usize, block.len(), "jump at {i}");
            }
        }
        assert_eq!(p[p.len() - 2].imm, 0, "no rule matched: deny");
    }

    #[test]
    fn an_unconditional_rule_ends_the_program() {
        let deny_all = DeviceRule {
            allow: false,
            kind: None,
            major: None,
            minor: None,
            access: 7,
        };
        let null = DeviceRule {
            allow: true,
            kind: Some('c'),
            major: Some(1),
            minor: Some(3),
            access: 7,
        };
        let p = program(&[deny_all, null]);
        // null's block (type, major, minor, mov, exit), then deny-all's (mov, exit), no tail.
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!((p[p.len() - 2].code, p[p.len() - 2].imm), (MOV32_K, 0));
    }

    #[test]
    fn oci_rules_parse_with_wildcards() {
        let list: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
            serde_json::from_value(serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": -1, "access": "rw"},
            ]))
            .unwrap();
        let r = from_oci(&list).unwrap();
        assert_eq!(
            r[0],
            DeviceRule {
                allow: false,
                kind: None,
                major: None,
                minor: None,
                access: 7
            }
        );
        assert_eq!(
            r[1],
            DeviceRule {
                allow: true,
                kind: Some('c'),
                major: Some(1),
                minor: None,
                access: READ | WRITE
            }
        );
    }
}
