//! The two block-layer ioctls growing DATA needs: the disk's logical block size, and
//! `BLKPG_RESIZE_PARTITION`, which tells the kernel a partition's new length without
//! re-reading the whole table (that would fail: the root partition is in use).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::ext4::ioc;

/// `_IO(0x12, 104)`: logical sector size, an `int`.
const BLKSSZGET: u64 = ioc(0, 0x12, 104, 0);
/// `_IO(0x12, 105)`: partition table operations.
const BLKPG: u64 = ioc(0, 0x12, 105, 0);
/// `linux/blkpg.h`.
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
const BLKPG_DEVNAMELTH: usize = 64;
const BLKPG_VOLNAMELTH: usize = 64;

/// `struct blkpg_partition`: byte offsets and lengths, the partition number.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; BLKPG_DEVNAMELTH],
    volname: [libc::c_char; BLKPG_VOLNAMELTH],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// The disk's logical block size in bytes (512 or 4096).
pub fn logical_block_size(disk: &File) -> io::Result<u64> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `size` on
    // this stack frame; `disk` is an open descriptor for the whole call.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKSSZGET as libc::Ioctl, &mut size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Tells the kernel that partition `number` of `disk` now spans `length` bytes from
/// `start` (the start cannot change; the kernel refuses overlaps with other partitions).
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(invalid)?,
        length: i64::try_from(length).map_err(invalid)?,
        pno: libc::c_int::try_from(number).map_err(invalid)?,
        devname: [0; BLKPG_DEVNAMELTH],
        volname: [0; BLKPG_VOLNAMELTH],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads a blkpg_ioctl_arg whose `data` points at a blkpg_partition of
    // `datalen` bytes; both are repr(C) copies of the kernel's structs and live on this
    // stack frame for the whole call; `disk` is an open descriptor of the whole disk.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as libc::Ioctl, &mut arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_layouts_are_the_kernels() {
        // linux/fs.h: BLKSSZGET _IO(0x12,104), BLKPG _IO(0x12,105).
        assert_eq!(BLKSSZGET, 0x1268);
        assert_eq!(BLKPG, 0x1269);
        // struct blkpg_partition on x86-64: 2 × 8 + 4 + 64 + 64, padded to 8.
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert!(logical_block_size(&f).is_err());
        assert!(resize_partition(&f, 4, 1 << 20, 1 << 20).is_err());
    }
}
