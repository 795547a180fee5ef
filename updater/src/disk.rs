//! The partitions of the disk that holds the booted root, found through sysfs: the ESP and
//! the two root slots for the updater ([`BlockPaths::slot_partitions`]), and any partition by
//! its GPT name for PID 1 (`/var` on DATA, in `gantry-init`'s `var::locate`).
//!
//! The root is usually a dm-verity device (`dm-0`): its `slaves/` lead to the partition
//! under it (`vda2`, `nvme0n1p2`), whose parent in `/sys/devices` is the disk. A
//! partition's sysfs directory is a child of its disk's, so the disk's subdirectories with
//! a `partition` file are exactly its partitions: no name arithmetic (`vda` + `4` against
//! `nvme0n1` + `p4`) is needed. The kernel puts a partition's GPT name in its `uevent`
//! (`PARTNAME=`) and its length in `size` (512-byte sectors, whatever the disk's block
//! size).
//!
//! The partition's unique GUID (`PARTUUID`, which the kernel command line uses to find a
//! slot's root) is not in sysfs: it is read from the disk's primary GPT with the `gpt`
//! crate, and each entry's name must agree with what the kernel reports, or the kernel's
//! view and the table differ and nothing may be written by number. The backup GPT is not
//! consulted: on a machine that booted from this disk, a damaged primary table is a reason
//! to refuse an update, not to guess.
//!
//! The sysfs and `/dev` roots are injectable ([`BlockPaths`]) so tests run on a fake tree
//! and a GPT made by `sfdisk` on a plain file.

use std::fs::File;
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::header::HeaderError;

use crate::Slot;

/// The GPT name of the EFI system partition.
pub const ESP_NAME: &str = "ESP";
/// How many stacked devices (dm on dm on …) are followed down from the root.
const MAX_DEPTH: usize = 8;
/// The only GPT entry size in use (and the only one the `gpt` crate reads without panicking).
const ENTRY_SIZE: u32 = 128;
/// More entries than any table has; a bigger count is a broken header.
const MAX_ENTRIES: u32 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the root device {0} does not lie on a disk partition")]
    NotOnPartition(String),
    #[error("the root device {device} sits on {count} devices; cannot tell which disk holds it")]
    ManySlaves { device: String, count: usize },
    #[error("{path}: cannot read {what} from {content:?}")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        content: String,
    },
    #[error("no partition named {name} on {disk}")]
    Missing { disk: String, name: String },
    #[error("partitions {first} and {second} on {disk} are both named {name}")]
    Ambiguous {
        disk: String,
        name: String,
        first: String,
        second: String,
    },
    #[error("{path}: unsupported logical block size {size}")]
    BlockSize { path: PathBuf, size: u64 },
    #[error("cannot read the GPT header of {path}: {source}")]
    GptHeader { path: PathBuf, source: HeaderError },
    #[error("{path}: unsupported GPT layout: {entries} entries of {entry_size} bytes")]
    GptLayout {
        path: PathBuf,
        entries: u32,
        entry_size: u32,
    },
    #[error("cannot read the GPT entries of {path}: {source}")]
    GptEntries {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: GPT entry {number} ({device}) is {table:?} in the table but {kernel:?} to the kernel")]
    GptMismatch {
        path: PathBuf,
        number: u32,
        device: String,
        table: String,
        kernel: String,
    },
}

/// A partition as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysPartition {
    /// Kernel name: `vda4`, `nvme0n1p4`.
    pub name: String,
    /// Its GPT entry number (1-based).
    pub number: u32,
    /// Its GPT name (`PARTNAME=`), when the table has one.
    pub part_name: Option<String>,
    /// Its sysfs directory.
    pub sys_dir: PathBuf,
}

impl SysPartition {
    /// Its length in bytes as the kernel has it now.
    pub fn size_bytes(&self) -> Result<u64, DiskError> {
        size_bytes(&self.sys_dir)
    }

    /// The disk it is on.
    pub fn disk(&self) -> Result<SysDisk, DiskError> {
        let sys_dir = self
            .sys_dir
            .parent()
            .ok_or_else(|| DiskError::NotOnPartition(self.name.clone()))?
            .to_owned();
        Ok(SysDisk {
            name: file_name(&sys_dir),
            sys_dir,
        })
    }
}

/// A whole disk as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysDisk {
    /// Kernel name: `vda`, `nvme0n1`.
    pub name: String,
    pub sys_dir: PathBuf,
}

impl SysDisk {
    /// Its partitions, in sysfs name order.
    pub fn partitions(&self) -> Result<Vec<SysPartition>, DiskError> {
        let mut out = Vec::new();
        for child in list(&self.sys_dir)? {
            let number_file = child.join("partition");
            if !number_file.is_file() {
                continue;
            }
            let text = read(&number_file)?;
            let number = text
                .trim()
                .parse::<u32>()
                .map_err(|_| DiskError::Malformed {
                    path: number_file.clone(),
                    what: "a partition number",
                    content: text.clone(),
                })?;
            let uevent = read(&child.join("uevent"))?;
            out.push(SysPartition {
                name: devname(&uevent).map_or_else(|| file_name(&child), str::to_owned),
                number,
                part_name: partname(&uevent).map(str::to_owned),
                sys_dir: child,
            });
        }
        Ok(out)
    }

    /// The one partition whose GPT name is `name`; `None` when there is none, an error
    /// when there are two.
    pub fn partition_named(&self, name: &str) -> Result<Option<SysPartition>, DiskError> {
        let mut found: Option<SysPartition> = None;
        for p in self.partitions()? {
            if p.part_name.as_deref() != Some(name) {
                continue;
            }
            if let Some(first) = &found {
                return Err(DiskError::Ambiguous {
                    disk: self.name.clone(),
                    name: name.to_owned(),
                    first: first.name.clone(),
                    second: p.name,
                });
            }
            found = Some(p);
        }
        Ok(found)
    }

    /// The size of its logical blocks, in which the GPT counts.
    pub fn logical_block_size(&self) -> Result<u64, DiskError> {
        let path = self.sys_dir.join("queue/logical_block_size");
        let text = read(&path)?;
        text.trim().parse().map_err(|_| DiskError::Malformed {
            path,
            what: "a block size",
            content: text,
        })
    }
}

/// The partition under the root device `root` (`stat("/").st_dev` as major and minor),
/// following device-mapper `slaves/` down, in the sysfs mounted at `sys`.
pub fn root_partition(sys: &Path, root: (u64, u64)) -> Result<SysPartition, DiskError> {
    let start = sys.join(format!("dev/block/{}:{}", root.0, root.1));
    let mut dir = canonical(&start)?;
    let mut depth = 0;
    let partition_dir = loop {
        if dir.join("partition").is_file() {
            break dir;
        }
        let slaves = list(&dir.join("slaves")).unwrap_or_default();
        let [slave] = slaves.as_slice() else {
            let device = file_name(&dir);
            return Err(if slaves.is_empty() || depth >= MAX_DEPTH {
                DiskError::NotOnPartition(device)
            } else {
                DiskError::ManySlaves {
                    device,
                    count: slaves.len(),
                }
            });
        };
        dir = canonical(slave)?;
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(DiskError::NotOnPartition(file_name(&dir)));
        }
    };
    let name = file_name(&partition_dir);
    partition_dir
        .parent()
        .map(|disk_dir| SysDisk {
            name: file_name(disk_dir),
            sys_dir: disk_dir.to_owned(),
        })
        .ok_or_else(|| DiskError::NotOnPartition(name.clone()))?
        .partitions()?
        .into_iter()
        .find(|p| p.sys_dir == partition_dir)
        .ok_or(DiskError::NotOnPartition(name))
}

/// The length in bytes of the block device whose sysfs directory is `sys_dir`.
pub fn size_bytes(sys_dir: &Path) -> Result<u64, DiskError> {
    let path = sys_dir.join("size");
    let text = read(&path)?;
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(|s| s.checked_mul(512))
        .ok_or(DiskError::Malformed {
            path,
            what: "a sector count",
            content: text,
        })
}

/// One partition the updater works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its GPT name: `ESP`, `ROOT-A`, `ROOT-B`.
    pub name: String,
    /// Kernel name: `vda2`, `nvme0n1p2`.
    pub kernel_name: String,
    /// Its device node: `/dev/vda2`.
    pub device: PathBuf,
    /// Its GPT entry number (1-based).
    pub number: u32,
    pub size_bytes: u64,
    /// Its GPT unique partition GUID, lower-case as `PARTUUID=` spells it.
    pub part_uuid: String,
}

/// The ESP and both root slots, on the disk that holds the booted root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPartitions {
    /// The whole disk's device node: `/dev/vda`.
    pub disk: PathBuf,
    pub esp: Partition,
    pub root_a: Partition,
    pub root_b: Partition,
    /// The slot whose partition holds the booted root; `None` when the root is on another
    /// partition of the disk.
    pub booted: Option<Slot>,
}

impl SlotPartitions {
    pub fn slot(&self, slot: Slot) -> &Partition {
        match slot {
            Slot::A => &self.root_a,
            Slot::B => &self.root_b,
        }
    }
}

/// Where sysfs and the device nodes are: `/sys` and `/dev` on a machine, a fake tree in
/// tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPaths {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl BlockPaths {
    /// This machine's.
    pub fn host() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }

    /// The ESP, ROOT-A and ROOT-B on the disk of the root device `root` (major, minor).
    /// Each must exist exactly once, and the GPT must agree with the kernel about them.
    pub fn slot_partitions(&self, root: (u64, u64)) -> Result<SlotPartitions, DiskError> {
        let booted = root_partition(&self.sys, root)?;
        let disk = booted.disk()?;
        let disk_device = self.dev.join(&disk.name);
        let named = |name: &str| {
            disk.partition_named(name)?
                .ok_or_else(|| DiskError::Missing {
                    disk: disk.name.clone(),
                    name: name.to_owned(),
                })
        };
        let found = [
            named(ESP_NAME)?,
            named(Slot::A.partition_name())?,
            named(Slot::B.partition_name())?,
        ];
        let table = read_gpt(&disk_device, disk.logical_block_size()?)?;
        let [esp, root_a, root_b] = found.map(|p| {
            let entry = table.get(&p.number).filter(|e| e.is_used());
            let kernel = p.part_name.clone().unwrap_or_default();
            match entry {
                Some(e) if e.name == kernel => Ok(Partition {
                    size_bytes: p.size_bytes()?,
                    device: self.dev.join(&p.name),
                    part_uuid: e.part_guid.to_string(),
                    name: kernel,
                    kernel_name: p.name,
                    number: p.number,
                }),
                _ => Err(DiskError::GptMismatch {
                    path: disk_device.clone(),
                    number: p.number,
                    device: p.name,
                    table: entry.map(|e| e.name.clone()).unwrap_or_default(),
                    kernel,
                }),
            }
        });
        let (esp, root_a, root_b) = (esp?, root_a?, root_b?);
        let booted = Slot::ALL.into_iter().find(|s| match s {
            Slot::A => root_a.number == booted.number,
            Slot::B => root_b.number == booted.number,
        });
        Ok(SlotPartitions {
            disk: disk_device,
            esp,
            root_a,
            root_b,
            booted,
        })
    }
}

/// The primary GPT's entries of the disk at `path`, by entry number.
fn read_gpt(
    path: &Path,
    block_size: u64,
) -> Result<std::collections::BTreeMap<u32, gpt::partition::Partition>, DiskError> {
    let lbs = LogicalBlockSize::try_from(block_size).map_err(|_| DiskError::BlockSize {
        path: path.to_owned(),
        size: block_size,
    })?;
    let mut file = File::open(path).map_err(|source| DiskError::Read {
        path: path.to_owned(),
        source,
    })?;
    let header =
        gpt::header::read_header_from_arbitrary_device(&mut file, lbs).map_err(|source| {
            DiskError::GptHeader {
                path: path.to_owned(),
                source,
            }
        })?;
    if header.part_size != ENTRY_SIZE || header.num_parts > MAX_ENTRIES {
        return Err(DiskError::GptLayout {
            path: path.to_owned(),
            entries: header.num_parts,
            entry_size: header.part_size,
        });
    }
    gpt::partition::file_read_partitions(&mut file, &header, lbs).map_err(|source| {
        DiskError::GptEntries {
            path: path.to_owned(),
            source,
        }
    })
}

fn partname(uevent: &str) -> Option<&str> {
    uevent.lines().find_map(|l| l.strip_prefix("PARTNAME="))
}

fn devname(uevent: &str) -> Option<&str> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read(path: &Path) -> Result<String, DiskError> {
    std::fs::read_to_string(path).map_err(|source| DiskError::Read {
        path: path.to_owned(),
        source,
    })
}

fn canonical(path: &Path) -> Result<PathBuf, DiskError> {
    path.canonicalize().map_err(|source| DiskError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The entries of a directory, sorted (so that the result does not depend on the order
/// the kernel lists them in).
fn list(dir: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DiskError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::symlink;
    use std::process::{Command, Stdio};

    use super::*;

    const MIB_SECTORS: u64 = 2048;

    /// (kernel name, GPT name, size in MiB, PARTUUID) for a Gantry disk.
    const GANTRY: &[(&str, &str, u64, &str)] = &[
        ("vda1", "ESP", 2, "1D5C2A39-7A3B-4C61-9F0E-2B5A5E9C0A01"),
        ("vda2", "ROOT-A", 3, "2D5C2A39-7A3B-4C61-9F0E-2B5A5E9C0A02"),
        ("vda3", "ROOT-B", 3, "3D5C2A39-7A3B-4C61-9F0E-2B5A5E9C0A03"),
        ("vda4", "DATA", 1, "4D5C2A39-7A3B-4C61-9F0E-2B5A5E9C0A04"),
    ];

    /// A fake sysfs under `dir/sys` for `disk` with `parts` (kernel name, GPT name as the
    /// kernel reports it, MiB), a dm-0 on top of partition `dm_on` (1-based) when given,
    /// and `dir/dev/<disk>` as a GPT made by sfdisk from `table` (GPT name, MiB, uuid).
    fn fake(
        dir: &Path,
        disk: &str,
        parts: &[(&str, &str, u64, &str)],
        dm_on: Option<usize>,
        table: &[(&str, &str, u64, &str)],
    ) -> BlockPaths {
        let sys = dir.join("sys");
        let dev = dir.join("dev");
        let disk_dir = sys.join(format!("devices/pci0000:00/0000:00:04.0/block/{disk}"));
        std::fs::create_dir_all(disk_dir.join("queue")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(disk_dir.join("uevent"), format!("DEVNAME={disk}\n")).unwrap();
        std::fs::write(disk_dir.join("queue/logical_block_size"), "512\n").unwrap();
        for (i, (name, partname, mib, _)) in parts.iter().enumerate() {
            let p = disk_dir.join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("partition"), format!("{}\n", i + 1)).unwrap();
            std::fs::write(p.join("size"), format!("{}\n", mib * MIB_SECTORS)).unwrap();
            std::fs::write(
                p.join("uevent"),
                format!(
                    "MAJOR=254\nMINOR={n}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={n}\n\
                     PARTNAME={partname}\n",
                    n = i + 1
                ),
            )
            .unwrap();
            symlink(&p, sys.join(format!("dev/block/254:{}", i + 1))).unwrap();
        }
        if let Some(n) = dm_on {
            let dm = sys.join("devices/virtual/block/dm-0");
            std::fs::create_dir_all(dm.join("slaves")).unwrap();
            let under = parts[n - 1].0;
            symlink(disk_dir.join(under), dm.join("slaves").join(under)).unwrap();
            symlink(&dm, sys.join("dev/block/253:0")).unwrap();
        }
        sfdisk(&dev.join(disk), table);
        BlockPaths { sys, dev }
    }

    /// A GPT on a plain file, laid out as image-build's `sfdisk_script` does.
    fn sfdisk(path: &Path, table: &[(&str, &str, u64, &str)]) {
        let total: u64 = table.iter().map(|p| p.2).sum::<u64>() + 2;
        File::create(path)
            .unwrap()
            .set_len(total * MIB_SECTORS * 512)
            .unwrap();
        let mut script = String::from(
            "label: gpt\nlabel-id: 0D5C2A39-7A3B-4C61-9F0E-2B5A5E9C0A00\nunit: sectors\n\
             sector-size: 512\n\n",
        );
        let mut start = MIB_SECTORS;
        for (_, name, mib, uuid) in table {
            script.push_str(&format!(
                "start={start}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, \
                 uuid={uuid}, name=\"{name}\"\n",
                mib * MIB_SECTORS
            ));
            start += mib * MIB_SECTORS;
        }
        let mut child = Command::new("sfdisk")
            .args(["--no-reread", "--no-tell-kernel", "--quiet"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sfdisk (util-linux fdisk) runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "sfdisk:\n{script}");
    }

    #[test]
    fn finds_the_esp_and_both_slots_below_a_verity_root() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fake(dir.path(), "vda", GANTRY, Some(2), GANTRY);
        let found = paths.slot_partitions((253, 0)).unwrap();
        assert_eq!(found.disk, dir.path().join("dev/vda"));
        assert_eq!(found.booted, Some(Slot::A));
        assert_eq!(
            found.root_b,
            Partition {
                name: "ROOT-B".into(),
                kernel_name: "vda3".into(),
                device: dir.path().join("dev/vda3"),
                number: 3,
                size_bytes: 3 << 20,
                part_uuid: "3d5c2a39-7a3b-4c61-9f0e-2b5a5e9c0a03".into(),
            }
        );
        assert_eq!(found.esp.size_bytes, 2 << 20);
        assert_eq!(found.esp.part_uuid, "1d5c2a39-7a3b-4c61-9f0e-2b5a5e9c0a01");
        assert_eq!(found.slot(Slot::A).kernel_name, "vda2");
    }

    #[test]
    fn finds_the_slots_on_nvme_from_a_plain_partition_root() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=4).map(|i| format!("nvme0n1p{i}")).collect();
        let parts: Vec<_> = GANTRY
            .iter()
            .zip(&names)
            .map(|(p, n)| (n.as_str(), p.1, p.2, p.3))
            .collect();
        let paths = fake(dir.path(), "nvme0n1", &parts, None, GANTRY);
        let found = paths.slot_partitions((254, 3)).unwrap();
        assert_eq!(found.booted, Some(Slot::B));
        assert_eq!(found.disk, dir.path().join("dev/nvme0n1"));
        assert_eq!(found.root_a.device, dir.path().join("dev/nvme0n1p2"));
        // DATA is not a slot.
        assert_eq!(paths.slot_partitions((254, 4)).unwrap().booted, None);
    }

    #[test]
    fn a_missing_or_doubled_slot_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fake(dir.path(), "vda", &GANTRY[..2], Some(2), &GANTRY[..2]);
        let err = paths.slot_partitions((253, 0)).unwrap_err();
        assert!(
            matches!(&err, DiskError::Missing { disk, name } if disk == "vda" && name == "ROOT-B"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut two = GANTRY.to_vec();
        two[3].1 = "ROOT-B";
        let paths = fake(dir.path(), "vda", &two, Some(2), &two);
        let err = paths.slot_partitions((253, 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "partitions vda3 and vda4 on vda are both named ROOT-B"
        );
    }

    #[test]
    fn a_table_that_disagrees_with_the_kernel_or_is_broken_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = GANTRY.to_vec();
        table[2].1 = "SPARE";
        let paths = fake(dir.path(), "vda", GANTRY, Some(2), &table);
        let err = paths.slot_partitions((253, 0)).unwrap_err();
        assert!(
            matches!(&err, DiskError::GptMismatch { number: 3, table, kernel, .. }
                if table == "SPARE" && kernel == "ROOT-B"),
            "{err}"
        );

        let disk = dir.path().join("dev/vda");
        let mut bytes = std::fs::read(&disk).unwrap();
        bytes[512 + 60] ^= 0xff; // the disk GUID in the primary header, under its CRC
        std::fs::write(&disk, &bytes).unwrap();
        let err = paths.slot_partitions((253, 0)).unwrap_err();
        assert!(
            matches!(&err, DiskError::GptHeader { path, .. } if *path == disk),
            "{err}"
        );
        assert!(err.to_string().contains("dev/vda"), "{err}");

        std::fs::remove_file(&disk).unwrap();
        let err = paths.slot_partitions((253, 0)).unwrap_err();
        assert!(
            matches!(&err, DiskError::Read { path, .. } if *path == disk),
            "{err}"
        );
    }

    #[test]
    fn a_root_that_is_not_on_a_partition_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fake(dir.path(), "vda", GANTRY, None, GANTRY);
        // A device with no slaves and no partition file (a RAM disk, a whole disk).
        let ram = paths.sys.join("devices/virtual/block/ram0");
        std::fs::create_dir_all(&ram).unwrap();
        symlink(&ram, paths.sys.join("dev/block/1:0")).unwrap();
        assert!(matches!(
            root_partition(&paths.sys, (1, 0)),
            Err(DiskError::NotOnPartition(d)) if d == "ram0"
        ));
        assert!(matches!(
            root_partition(&paths.sys, (9, 9)),
            Err(DiskError::Read { .. })
        ));
        let data = root_partition(&paths.sys, (254, 4)).unwrap();
        assert_eq!(data.part_name.as_deref(), Some("DATA"));
        assert_eq!(data.size_bytes().unwrap(), 1 << 20);
        assert_eq!(data.disk().unwrap().name, "vda");
    }
}
