//! The API file systems PID 1 mounts at boot, and the mount table it reads back.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

/// One mount PID 1 makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The early mounts, in order (a target's parent comes first).
pub const EARLY_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmp",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// The system calls mounting needs; the host implementation is [`Host`], tests record.
pub trait MountOps {
    /// Whether something is already mounted on `target` (a kernel may mount `/dev` itself).
    fn is_mounted(&mut self, target: &str) -> bool;
    /// Creates `target` if missing, then mounts.
    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno>;
}

/// What happened to one early mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Mounted,
    AlreadyMounted,
    Failed(Errno),
}

/// Makes every early mount; a failure is recorded and the rest still run, because a
/// machine without `/tmp` is better than a machine that stopped booting.
pub fn mount_all(ops: &mut dyn MountOps, specs: &[MountSpec]) -> Vec<(MountSpec, Outcome)> {
    specs
        .iter()
        .map(|spec| {
            let outcome = if ops.is_mounted(spec.target) {
                Outcome::AlreadyMounted
            } else {
                match ops.mount(spec) {
                    Ok(()) => Outcome::Mounted,
                    Err(e) => Outcome::Failed(e),
                }
            };
            (spec.clone(), outcome)
        })
        .collect()
}

/// The real thing: `mkdir` and `mount(2)` on this machine.
#[derive(Debug, Default)]
pub struct Host;

impl MountOps for Host {
    fn is_mounted(&mut self, target: &str) -> bool {
        // Before /proc exists nothing can be mounted but the root.
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| parse_mountinfo(&text).iter().any(|m| m.target == target))
            .unwrap_or(false)
    }

    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
        match nix::unistd::mkdir(spec.target, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        nix::mount::mount(
            Some(spec.source),
            Path::new(spec.target),
            Some(spec.fstype),
            spec.flags,
            spec.data,
        )
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: String,
    pub fstype: String,
    pub source: String,
    /// Per-mount options (`ro,nosuid,…`).
    pub options: String,
}

/// Parses `/proc/self/mountinfo`; malformed lines are skipped (the kernel writes it, but a
/// parser in PID 1 must not trust any input enough to fail on it).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next()?;
            Some(MountEntry {
                target: unescape(left.get(4)?),
                options: (*left.get(5)?).to_owned(),
                fstype: fstype.to_owned(),
                source: unescape(source),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space) in mountinfo paths.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The block device the root file system lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// `/dev/dm-0` for a root opened through dm-verity.
    pub path: String,
    /// The device-mapper name (`vroot`), when it is a device-mapper device.
    pub dm_name: Option<String>,
}

/// Finds the root's device from `/`'s device number through `/sys/dev/block` (mountinfo
/// only says `/dev/root`).
pub fn root_device() -> Option<RootDevice> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").ok()?.dev();
    let sys = format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let uevent = std::fs::read_to_string(format!("{sys}/uevent")).ok()?;
    let name = devname_from_uevent(&uevent)?;
    let dm_name = std::fs::read_to_string(format!("{sys}/dm/name"))
        .ok()
        .map(|n| n.trim().to_owned());
    Some(RootDevice {
        path: format!("/dev/{name}"),
        dm_name,
    })
}

/// The `DEVNAME=` of a sysfs `uevent` file.
fn devname_from_uevent(uevent: &str) -> Option<&str> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty() && !n.contains(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        mounted: Vec<String>,
        fail: Option<&'static str>,
    }

    impl MountOps for Recorder {
        fn is_mounted(&mut self, target: &str) -> bool {
            self.mounted.iter().any(|t| t == target)
        }
        fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
            if self.fail == Some(spec.target) {
                return Err(Errno::ENODEV);
            }
            self.mounted.push(spec.target.to_owned());
            Ok(())
        }
    }

    #[test]
    fn mounts_every_api_file_system_parents_first() {
        let mut rec = Recorder::default();
        let results = mount_all(&mut rec, EARLY_MOUNTS);
        assert!(results.iter().all(|(_, o)| *o == Outcome::Mounted));
        let mut wanted = vec![
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/run",
            "/tmp",
            "/sys/fs/cgroup",
        ];
        let mut got = rec.mounted.clone();
        wanted.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, wanted);
        // Every mount whose target lies under another mount comes after that mount.
        for (i, target) in rec.mounted.iter().enumerate() {
            for (j, parent) in rec.mounted.iter().enumerate() {
                if target.starts_with(&format!("{parent}/")) {
                    assert!(j < i, "{target} is mounted before its parent {parent}");
                }
            }
        }
    }

    #[test]
    fn a_failed_mount_does_not_stop_the_others_and_existing_ones_are_kept() {
        let mut rec = Recorder {
            mounted: vec!["/dev".into()],
            fail: Some("/sys/fs/cgroup"),
        };
        let results = mount_all(&mut rec, EARLY_MOUNTS);
        let outcome = |t: &str| {
            results
                .iter()
                .find(|(s, _)| s.target == t)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(outcome("/dev"), Outcome::AlreadyMounted);
        assert_eq!(outcome("/sys/fs/cgroup"), Outcome::Failed(Errno::ENODEV));
        assert_eq!(outcome("/tmp"), Outcome::Mounted);
    }

    #[test]
    fn reads_the_device_name_from_a_uevent() {
        let uevent = "MAJOR=253\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\n";
        assert_eq!(devname_from_uevent(uevent), Some("dm-0"));
        assert_eq!(devname_from_uevent("MAJOR=1\n"), None);
        assert_eq!(devname_from_uevent("DEVNAME=../x\n"), None);
    }

    #[test]
    fn parses_mountinfo_with_escapes_and_optional_fields() {
        let text = "22 1 254:0 / / ro,relatime shared:1 - erofs /dev/dm-0 ro,user_xattr\n\
                    30 22 0:5 / /mnt/my\\040disk rw master:2 shared:3 - ext4 /dev/vda4 rw\n\
                    garbage\n";
        let entries = parse_mountinfo(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].target, "/");
        assert_eq!(entries[0].source, "/dev/dm-0");
        assert_eq!(entries[0].fstype, "erofs");
        assert_eq!(entries[0].options, "ro,relatime");
        assert_eq!(entries[1].target, "/mnt/my disk");
    }
}
