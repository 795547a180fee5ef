//! [`setup`]'s decisions, against a recording fake of the system calls.

use super::*;

const MIB: u64 = 1 << 20;

/// A machine whose DATA is `table` bytes long in the GPT after growing, `kernel` bytes
/// as the kernel sees it, holding an ext4 of `fs_blocks` 4 KiB blocks.
struct Fake {
    calls: Vec<String>,
    table_before: u64,
    table: u64,
    kernel: u64,
    fs_blocks: u64,
    needs_recovery: bool,
    fail: Vec<&'static str>,
    count: u64,
}

impl Fake {
    fn new(table_before: u64, table: u64) -> Self {
        Fake {
            calls: Vec::new(),
            table_before,
            table,
            kernel: table_before,
            fs_blocks: table_before / 4096,
            needs_recovery: false,
            fail: Vec::new(),
            count: 0,
        }
    }

    fn failing(mut self, step: &'static str) -> Self {
        self.fail.push(step);
        self
    }

    fn call(&mut self, name: &'static str) -> bool {
        self.calls.push(name.to_owned());
        self.fail.contains(&name)
    }
}

fn data() -> DataPartition {
    DataPartition {
        name: "vda4".into(),
        disk: "vda".into(),
        number: 4,
        sys_dir: "/sys/block/vda/vda4".into(),
    }
}

impl VarOps for Fake {
    fn locate(&mut self) -> Result<DataPartition, VarError> {
        if self.call("locate") {
            return Err(LocateError::NotFound { disk: "vda".into() }.into());
        }
        Ok(data())
    }
    fn grow_table(&mut self, _: &DataPartition) -> Result<DataExtent, VarError> {
        if self.call("grow_table") {
            return Err(VarError::Grow {
                path: "/dev/vda".into(),
                source: GrowError::NotLast { other: 5 },
            });
        }
        Ok(DataExtent {
            start: 321 * MIB,
            length: self.table,
            grown_from: (self.table != self.table_before).then_some(self.table_before),
        })
    }
    fn tell_kernel(&mut self, _: &DataPartition, extent: &DataExtent) -> Result<(), VarError> {
        if self.call("tell_kernel") {
            return Err(VarError::TellKernel {
                device: "/dev/vda4".into(),
                length: extent.length,
                source: io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        self.kernel = extent.length;
        Ok(())
    }
    fn partition_length(&mut self, _: &DataPartition) -> Result<u64, LocateError> {
        Ok(self.kernel)
    }
    fn read_superblock(&mut self, _: &Path) -> Result<Superblock, Ext4Error> {
        if self.call("read_superblock") {
            return Err(Ext4Error::NotExt4 {
                path: "/dev/vda4".into(),
                magic: 0,
            });
        }
        Ok(Superblock {
            block_size: 4096,
            blocks: self.fs_blocks,
            label: "DATA".into(),
            has_journal: true,
            needs_recovery: self.needs_recovery,
            errors: false,
            valid: true,
        })
    }
    fn mount_ext4(&mut self, _: &Path) -> Result<(), Errno> {
        if self.call("mount_ext4") {
            return Err(Errno::EUCLEAN);
        }
        Ok(())
    }
    fn mount_tmpfs(&mut self) -> Result<(), Errno> {
        self.call("mount_tmpfs");
        Ok(())
    }
    fn resize_fs(&mut self, blocks: u64) -> Result<(), Ext4Error> {
        if self.call("resize_fs") {
            return Err(Ext4Error::Resize {
                path: "/var".into(),
                blocks,
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        self.fs_blocks = blocks;
        Ok(())
    }
    fn count_boot(&mut self) -> io::Result<u64> {
        self.call("count_boot");
        self.count += 1;
        Ok(self.count)
    }
}

#[test]
fn first_boot_on_a_bigger_disk_grows_the_partition_before_mounting_and_the_fs_after() {
    let mut fake = Fake::new(64 * MIB, 1088 * MIB);
    let status = setup(&mut fake);
    assert_eq!(
        fake.calls,
        [
            "locate",
            "grow_table",
            "tell_kernel",
            "read_superblock",
            "mount_ext4",
            "resize_fs",
            "read_superblock",
            "count_boot"
        ]
    );
    assert!(status.persistent);
    assert_eq!(status.size_bytes, 1088 * MIB);
    assert_eq!(status.partition_bytes, Some(1088 * MIB));
    assert_eq!(status.partition_grown_from, Some(64 * MIB));
    assert_eq!(status.grown_from, Some(64 * MIB));
    assert_eq!(status.boot_count, Some(1));
    assert!(status.problems.is_empty(), "{:?}", status.problems);
}

#[test]
fn a_later_boot_has_nothing_to_grow() {
    let mut fake = Fake::new(1088 * MIB, 1088 * MIB);
    let status = setup(&mut fake);
    assert!(!fake
        .calls
        .iter()
        .any(|c| c == "tell_kernel" || c == "resize_fs"));
    assert!(status.persistent);
    assert_eq!(status.grown_from, None);
    assert_eq!(status.partition_grown_from, None);
    assert_eq!(status.clean, Some(true));
}

#[test]
fn a_table_grown_before_a_power_cut_is_not_told_to_the_kernel_again() {
    // The table was rewritten last boot, the cut came before BLKPG; the kernel read the
    // grown table at this boot, and the file system still has its old size.
    let mut fake = Fake::new(1088 * MIB, 1088 * MIB);
    fake.fs_blocks = 64 * MIB / 4096;
    fake.needs_recovery = true;
    let status = setup(&mut fake);
    assert!(!fake.calls.iter().any(|c| c == "tell_kernel"));
    assert!(fake.calls.iter().any(|c| c == "resize_fs"));
    assert_eq!(status.grown_from, Some(64 * MIB));
    assert_eq!(status.clean, Some(false));
}

#[test]
fn a_failed_grow_still_mounts_the_smaller_var() {
    for step in ["grow_table", "tell_kernel", "resize_fs"] {
        let mut fake = Fake::new(64 * MIB, 1088 * MIB).failing(step);
        let status = setup(&mut fake);
        assert!(status.persistent, "{step}");
        assert!(!fake.calls.iter().any(|c| c == "mount_tmpfs"), "{step}");
        assert_eq!(status.size_bytes, 64 * MIB, "{step}");
        assert_eq!(status.grown_from, None, "{step}");
        assert_eq!(status.problems.len(), 1, "{step}: {:?}", status.problems);
        assert_eq!(status.boot_count, Some(1));
    }
}

#[test]
fn no_data_partition_or_an_unmountable_one_means_a_tmpfs_var() {
    for step in ["locate", "read_superblock", "mount_ext4"] {
        let mut fake = Fake::new(64 * MIB, 64 * MIB).failing(step);
        let status = setup(&mut fake);
        assert!(!status.persistent, "{step}");
        assert_eq!(status.size_bytes, 0);
        assert!(fake.calls.iter().any(|c| c == "mount_tmpfs"), "{step}");
        assert!(!fake.calls.iter().any(|c| c == "resize_fs"), "{step}");
        assert_eq!(status.problems.len(), 1, "{step}: {:?}", status.problems);
        // The boot is counted on the tmpfs all the same (and restarts at 1 every boot).
        assert_eq!(fake.calls.last().map(String::as_str), Some("count_boot"));
    }
}

#[test]
fn counts_boots_in_a_file_that_survives_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib/gantry/boot-count");
    assert_eq!(count_boot(&path).unwrap(), 1);
    assert_eq!(count_boot(&path).unwrap(), 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
    std::fs::write(&path, "not a number").unwrap();
    assert_eq!(count_boot(&path).unwrap(), 1);
}

#[test]
fn the_status_report_is_json() {
    let mut fake = Fake::new(64 * MIB, 64 * MIB);
    let json = serde_json::to_value(setup(&mut fake)).unwrap();
    assert_eq!(json["persistent"], true);
    assert_eq!(json["device"], "/dev/vda4");
    assert_eq!(json["boot_count"], 1);
}
