//! The ext4 side of `/var`: the superblock fields PID 1 reads before mounting, and the
//! online grow (`EXT4_IOC_RESIZE_FS`), which is the kernel's own resize2fs for a mounted
//! file system.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the primary superblock starts, whatever the block size.
const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
/// `s_state`: the file system was unmounted cleanly (without a journal, the only sign).
const STATE_VALID: u16 = 0x0001;
/// `s_state`: the kernel found errors.
const STATE_ERRORS: u16 = 0x0002;
/// `s_feature_incompat`: the journal holds transactions to replay (set while mounted
/// read-write, cleared on a clean unmount or a remount read-only).
const INCOMPAT_RECOVER: u32 = 0x0004;
/// `s_feature_incompat`: block counts have a high half.
const INCOMPAT_64BIT: u32 = 0x0080;
/// `s_feature_compat`: the file system has a journal.
const COMPAT_HAS_JOURNAL: u32 = 0x0004;

/// `_IOW('f', 16, __u64)` from `linux/ext4.h`.
pub(crate) const EXT4_IOC_RESIZE_FS: u64 = ioc(1, b'f', 16, 8);

/// The `_IOC()` encoding of an ioctl number on x86-64 (and every architecture Gantry
/// builds for): direction in bits 30–31, argument size in 16–29, type in 8–15, number 0–7.
pub(crate) const fn ioc(dir: u64, ty: u8, nr: u8, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((ty as u64) << 8) | nr as u64
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("cannot read the ext4 superblock of {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no ext4 file system (magic {magic:#06x})")]
    NotExt4 { path: PathBuf, magic: u16 },
    #[error("{path}: unsupported ext4 block size 2^(10+{log})")]
    BlockSize { path: PathBuf, log: u32 },
    #[error("cannot open {path} to resize it: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot grow the ext4 file system on {path} to {blocks} blocks: {source}")]
    Resize {
        path: PathBuf,
        blocks: u64,
        source: std::io::Error,
    },
}

/// What PID 1 needs to know about an ext4 file system before and after mounting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
    pub label: String,
    pub has_journal: bool,
    /// The journal must be replayed: the file system was not unmounted cleanly (a power
    /// cut). The kernel replays it on mount; no fsck is needed for that.
    pub needs_recovery: bool,
    /// The kernel recorded errors on it earlier.
    pub errors: bool,
    /// `s_state` says "cleanly unmounted" (meaningful for file systems without a journal).
    pub valid: bool,
}

impl Superblock {
    /// Parses the 1024 bytes at offset 1024 of the device.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, Ext4Error> {
        let u16_at = |o: usize| {
            bytes
                .get(o..o + 2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |o: usize| {
            bytes
                .get(o..o + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let magic = u16_at(0x38);
        if bytes.len() < SUPERBLOCK_LEN || magic != EXT4_MAGIC {
            return Err(Ext4Error::NotExt4 {
                path: path.to_owned(),
                magic,
            });
        }
        let log = u32_at(0x18);
        // ext4 blocks are 1 KiB to 64 KiB.
        if log > 6 {
            return Err(Ext4Error::BlockSize {
                path: path.to_owned(),
                log,
            });
        }
        let incompat = u32_at(0x60);
        let high = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(u32_at(0x150))
        } else {
            0
        };
        let state = u16_at(0x3A);
        let label = bytes
            .get(0x78..0x88)
            .map(|b| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).into_owned()
            })
            .unwrap_or_default();
        Ok(Superblock {
            block_size: 1024 << log,
            blocks: (high << 32) | u64::from(u32_at(0x04)),
            label,
            has_journal: u32_at(0x5C) & COMPAT_HAS_JOURNAL != 0,
            needs_recovery: incompat & INCOMPAT_RECOVER != 0,
            errors: state & STATE_ERRORS != 0,
            valid: state & STATE_VALID != 0,
        })
    }

    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }

    /// Whether the last unmount was clean: nothing in the journal to replay (or, without
    /// a journal, the valid bit).
    pub fn clean(&self) -> bool {
        if self.has_journal {
            !self.needs_recovery
        } else {
            self.valid
        }
    }
}

/// Reads the superblock of the ext4 file system on `device` (mounted or not: the block
/// device's page cache is where the mounted file system keeps its superblock too).
pub fn read_superblock(device: &Path) -> Result<Superblock, Ext4Error> {
    let read = |device: &Path| -> std::io::Result<Vec<u8>> {
        let mut f = File::open(device)?;
        f.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
        let mut buf = vec![0u8; SUPERBLOCK_LEN];
        f.read_exact(&mut buf)?;
        Ok(buf)
    };
    let bytes = read(device).map_err(|source| Ext4Error::Read {
        path: device.to_owned(),
        source,
    })?;
    Superblock::parse(&bytes, device)
}

/// Grows the ext4 file system mounted at `mount_point` to `blocks` blocks, online.
/// Asking for the size it already has is a no-op in the kernel.
pub fn resize(mount_point: &Path, blocks: u64) -> Result<(), Ext4Error> {
    let dir = File::open(mount_point).map_err(|source| Ext4Error::Open {
        path: mount_point.to_owned(),
        source,
    })?;
    let count: u64 = blocks;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer; `count` lives on this
    // stack frame for the whole call, and `dir` is an open descriptor owned by this frame.
    let rc = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            EXT4_IOC_RESIZE_FS as libc::Ioctl,
            &count as *const u64,
        )
    };
    if rc < 0 {
        return Err(Ext4Error::Resize {
            path: mount_point.to_owned(),
            blocks,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(blocks: u64, log: u32, incompat: u32, state: u16) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_LEN];
        b[0x04..0x08].copy_from_slice(&(blocks as u32).to_le_bytes());
        b[0x18..0x1C].copy_from_slice(&log.to_le_bytes());
        b[0x38..0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        b[0x3A..0x3C].copy_from_slice(&state.to_le_bytes());
        b[0x5C..0x60].copy_from_slice(&COMPAT_HAS_JOURNAL.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        b[0x78..0x7C].copy_from_slice(b"DATA");
        b[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        b
    }

    #[test]
    fn the_ioctl_number_is_the_kernels() {
        // linux/ext4.h: #define EXT4_IOC_RESIZE_FS _IOW('f', 16, __u64)
        assert_eq!(EXT4_IOC_RESIZE_FS, 0x4008_6610);
    }

    #[test]
    fn reads_size_label_and_the_journal_state() {
        let p = Path::new("/dev/vda4");
        let sb = Superblock::parse(&superblock(16384, 2, INCOMPAT_64BIT, STATE_VALID), p).unwrap();
        assert_eq!(sb.block_size, 4096);
        assert_eq!(sb.blocks, 16384);
        assert_eq!(sb.size_bytes(), 64 << 20);
        assert_eq!(sb.label, "DATA");
        assert!(sb.clean());
        assert!(!sb.errors);

        let dirty = Superblock::parse(
            &superblock(16384, 2, INCOMPAT_64BIT | INCOMPAT_RECOVER, 0),
            p,
        )
        .unwrap();
        assert!(dirty.needs_recovery);
        assert!(!dirty.clean());
    }

    #[test]
    fn the_high_half_of_the_block_count_counts_only_with_64bit() {
        let p = Path::new("/dev/vda4");
        let big = (1u64 << 32) + 5;
        let sb = Superblock::parse(&superblock(big, 2, INCOMPAT_64BIT, STATE_VALID), p).unwrap();
        assert_eq!(sb.blocks, big);
        let sb = Superblock::parse(&superblock(big, 2, 0, STATE_VALID), p).unwrap();
        assert_eq!(sb.blocks, 5);
    }

    #[test]
    fn refuses_what_is_not_ext4() {
        let p = Path::new("/dev/vda4");
        let mut b = superblock(1, 2, 0, 1);
        b[0x38] = 0;
        assert!(matches!(
            Superblock::parse(&b, p),
            Err(Ext4Error::NotExt4 { .. })
        ));
        assert!(matches!(
            Superblock::parse(&b[..100], p),
            Err(Ext4Error::NotExt4 { .. })
        ));
        let b = superblock(1, 40, 0, 1);
        assert!(matches!(
            Superblock::parse(&b, p),
            Err(Ext4Error::BlockSize { .. })
        ));
    }

    #[test]
    fn reads_a_real_mkfs_ext4_superblock() {
        let Ok(mkfs) = which("mkfs.ext4") else {
            eprintln!("skipped: no mkfs.ext4");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let out = std::process::Command::new(mkfs)
            .args(["-q", "-F", "-L", "DATA", "-b", "4096"])
            .arg(&img)
            .arg("8M")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let sb = read_superblock(&img).unwrap();
        assert_eq!(sb.size_bytes(), 8 << 20);
        assert_eq!(sb.label, "DATA");
        assert!(sb.has_journal && sb.clean());
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
