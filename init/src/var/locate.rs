//! Finds the DATA partition through sysfs: the partition whose GPT name (`PARTNAME=` in
//! its `uevent`) is `DATA`, on the disk that holds the booted root.
//!
//! The root is usually a dm-verity device (`dm-0`): its `slaves/` lead to the partition
//! under it (`vda2`, `nvme0n1p2`), whose parent in `/sys/devices` is the disk. A
//! partition's sysfs directory is a child of its disk's, so the disk's subdirectories with
//! a `partition` file are exactly its partitions: no name arithmetic (`vda` + `4` against
//! `nvme0n1` + `p4`) is needed.

use std::path::{Path, PathBuf};

use super::gpt_grow::DATA_NAME;

/// How many stacked devices (dm on dm on …) are followed down from the root.
const MAX_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the root device {0} does not lie on a disk partition")]
    NotOnPartition(String),
    #[error("the root device {device} sits on {count} devices; cannot tell which disk holds it")]
    ManySlaves { device: String, count: usize },
    #[error("no partition named {DATA_NAME} on {disk}")]
    NotFound { disk: String },
    #[error("partitions {first} and {second} on {disk} are both named {DATA_NAME}")]
    Ambiguous {
        disk: String,
        first: String,
        second: String,
    },
    #[error("{path}: cannot read {what} from {content:?}")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        content: String,
    },
}

/// The DATA partition and the disk it is on, as the kernel sees them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPartition {
    /// Kernel name: `vda4`, `nvme0n1p4`.
    pub name: String,
    /// The whole disk: `vda`, `nvme0n1`.
    pub disk: String,
    /// Its GPT entry number (1-based).
    pub number: u32,
    /// Its sysfs directory, to read its current size from.
    pub sys_dir: PathBuf,
}

impl DataPartition {
    pub fn device(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    pub fn disk_device(&self) -> PathBuf {
        Path::new("/dev").join(&self.disk)
    }

    /// Its length in bytes as the kernel has it now (`size` counts 512-byte sectors
    /// whatever the disk's block size).
    pub fn length(&self) -> Result<u64, LocateError> {
        let path = self.sys_dir.join("size");
        let text = read(&path)?;
        text.trim()
            .parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(512))
            .ok_or(LocateError::Malformed {
                path,
                what: "a sector count",
                content: text,
            })
    }
}

/// Finds DATA next to the root, whose device number is `root` (`stat("/").st_dev`), in
/// the sysfs mounted at `sys`.
pub fn locate(sys: &Path, root: (u64, u64)) -> Result<DataPartition, LocateError> {
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
                LocateError::NotOnPartition(device)
            } else {
                LocateError::ManySlaves {
                    device,
                    count: slaves.len(),
                }
            });
        };
        dir = canonical(slave)?;
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(LocateError::NotOnPartition(file_name(&dir)));
        }
    };
    let disk_dir = partition_dir
        .parent()
        .ok_or_else(|| LocateError::NotOnPartition(file_name(&partition_dir)))?
        .to_owned();
    let disk = file_name(&disk_dir);
    let mut found: Option<DataPartition> = None;
    for child in list(&disk_dir)? {
        let number_file = child.join("partition");
        if !number_file.is_file() {
            continue;
        }
        let uevent = read(&child.join("uevent"))?;
        if partname(&uevent) != Some(DATA_NAME) {
            continue;
        }
        let text = read(&number_file)?;
        let number = text
            .trim()
            .parse::<u32>()
            .map_err(|_| LocateError::Malformed {
                path: number_file.clone(),
                what: "a partition number",
                content: text.clone(),
            })?;
        let name = devname(&uevent).map_or_else(|| file_name(&child), str::to_owned);
        if let Some(first) = &found {
            return Err(LocateError::Ambiguous {
                disk,
                first: first.name.clone(),
                second: name,
            });
        }
        found = Some(DataPartition {
            name,
            disk: disk.clone(),
            number,
            sys_dir: child,
        });
    }
    found.ok_or(LocateError::NotFound { disk })
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

fn read(path: &Path) -> Result<String, LocateError> {
    std::fs::read_to_string(path).map_err(|source| LocateError::Read {
        path: path.to_owned(),
        source,
    })
}

fn canonical(path: &Path) -> Result<PathBuf, LocateError> {
    path.canonicalize().map_err(|source| LocateError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The entries of a directory, sorted (so that the result does not depend on the order
/// the kernel lists them in).
fn list(dir: &Path) -> Result<Vec<PathBuf>, LocateError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LocateError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree: `disk` with partitions (name, GPT name), optionally a dm device on
    /// top of partition 2 as the root. Returns the sysfs root.
    fn fake_sys(dir: &Path, disk: &str, parts: &[(&str, &str)], dm_root: bool) -> PathBuf {
        let sys = dir.join("sys");
        let disk_dir = sys.join(format!("devices/pci0000:00/0000:00:04.0/block/{disk}"));
        std::fs::create_dir_all(disk_dir.join("slaves")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::fs::write(disk_dir.join("uevent"), format!("DEVNAME={disk}\n")).unwrap();
        for (i, (name, partname)) in parts.iter().enumerate() {
            let p = disk_dir.join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("partition"), format!("{}\n", i + 1)).unwrap();
            std::fs::write(p.join("size"), "131072\n").unwrap();
            std::fs::write(
                p.join("uevent"),
                format!("MAJOR=254\nMINOR={}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={partname}\n", i + 1, i + 1),
            )
            .unwrap();
            symlink(&p, sys.join(format!("dev/block/254:{}", i + 1))).unwrap();
        }
        if dm_root {
            let dm = sys.join("devices/virtual/block/dm-0");
            std::fs::create_dir_all(dm.join("slaves")).unwrap();
            symlink(
                disk_dir.join(parts[1].0),
                dm.join("slaves").join(parts[1].0),
            )
            .unwrap();
            symlink(&dm, sys.join("dev/block/253:0")).unwrap();
        }
        sys
    }

    const GANTRY: &[(&str, &str)] = &[
        ("vda1", "ESP"),
        ("vda2", "ROOT-A"),
        ("vda3", "ROOT-B"),
        ("vda4", "DATA"),
    ];

    #[test]
    fn finds_data_below_a_verity_root_on_virtio() {
        let dir = tempfile::tempdir().unwrap();
        let sys = fake_sys(dir.path(), "vda", GANTRY, true);
        let data = locate(&sys, (253, 0)).unwrap();
        assert_eq!(data.name, "vda4");
        assert_eq!(data.disk, "vda");
        assert_eq!(data.number, 4);
        assert_eq!(data.device(), Path::new("/dev/vda4"));
        assert_eq!(data.disk_device(), Path::new("/dev/vda"));
        assert_eq!(data.length().unwrap(), 64 << 20);
    }

    #[test]
    fn finds_data_on_nvme_and_on_a_plain_partition_root() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<(String, &str)> = GANTRY
            .iter()
            .enumerate()
            .map(|(i, (_, n))| (format!("nvme0n1p{}", i + 1), *n))
            .collect();
        let parts: Vec<(&str, &str)> = parts.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let sys = fake_sys(dir.path(), "nvme0n1", &parts, false);
        let data = locate(&sys, (254, 2)).unwrap();
        assert_eq!(data.name, "nvme0n1p4");
        assert_eq!(data.disk_device(), Path::new("/dev/nvme0n1"));
    }

    #[test]
    fn data_must_exist_once_on_the_roots_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sys = fake_sys(dir.path(), "vda", &GANTRY[..3], true);
        assert!(matches!(
            locate(&sys, (253, 0)),
            Err(LocateError::NotFound { disk }) if disk == "vda"
        ));
        let dir = tempfile::tempdir().unwrap();
        let two = [GANTRY[0], GANTRY[1], ("vda3", "DATA"), GANTRY[3]];
        let sys = fake_sys(dir.path(), "vda", &two, true);
        assert!(matches!(
            locate(&sys, (253, 0)),
            Err(LocateError::Ambiguous { .. })
        ));
    }

    #[test]
    fn a_root_that_is_not_on_a_partition_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sys = fake_sys(dir.path(), "vda", GANTRY, false);
        // A device with no slaves and no partition file (a RAM disk, a whole disk).
        let ram = sys.join("devices/virtual/block/ram0");
        std::fs::create_dir_all(&ram).unwrap();
        symlink(&ram, sys.join("dev/block/1:0")).unwrap();
        assert!(matches!(
            locate(&sys, (1, 0)),
            Err(LocateError::NotOnPartition(d)) if d == "ram0"
        ));
        assert!(matches!(
            locate(&sys, (9, 9)),
            Err(LocateError::Read { .. })
        ));
    }
}
