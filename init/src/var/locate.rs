//! Finds the DATA partition: the partition whose GPT name is `DATA`, on the disk that
//! holds the booted root. The sysfs walk (root device, through device-mapper slaves, to its
//! partition and disk) is the updater's, which finds the slots the same way
//! ([`gantry_updater::disk`]).

use std::path::{Path, PathBuf};

use gantry_updater::disk::{self, DiskError};

use super::gpt_grow::DATA_NAME;

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("no partition named {DATA_NAME} on {disk}")]
    NotFound { disk: String },
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

    /// Its length in bytes as the kernel has it now.
    pub fn length(&self) -> Result<u64, LocateError> {
        Ok(disk::size_bytes(&self.sys_dir)?)
    }
}

/// Finds DATA next to the root, whose device number is `root` (`stat("/").st_dev`), in
/// the sysfs mounted at `sys`.
pub fn locate(sys: &Path, root: (u64, u64)) -> Result<DataPartition, LocateError> {
    let disk = disk::root_partition(sys, root)?.disk()?;
    let data = disk
        .partition_named(DATA_NAME)?
        .ok_or_else(|| LocateError::NotFound {
            disk: disk.name.clone(),
        })?;
    Ok(DataPartition {
        name: data.name,
        disk: disk.name,
        number: data.number,
        sys_dir: data.sys_dir,
    })
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
            Err(LocateError::Disk(DiskError::Ambiguous { .. }))
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
            Err(LocateError::Disk(DiskError::NotOnPartition(d))) if d == "ram0"
        ));
        assert!(matches!(
            locate(&sys, (9, 9)),
            Err(LocateError::Disk(DiskError::Read { .. }))
        ));
    }
}
