//! Config drives: a FAT or ISO 9660 volume labelled `CIDATA` (cloud-init's NoCloud) or
//! `GANTRY`, holding `user-data` (the Gantry config) and optionally `meta-data`.
//!
//! The image has no udev, so there is no `/dev/disk/by-label`: [`find`] walks
//! `/sys/class/block` (whole disks and partitions, in name order), opens each `/dev/<name>`
//! and reads the label itself: for FAT, the volume label in the boot sector's extended BIOS
//! parameter block (where `mkfs.fat -n` and `fatlabel` write it); for ISO 9660, the volume
//! identifier of the primary volume descriptor. Labels compare without regard to case
//! (`genisoimage -V cidata` is common). The first match wins; more than one is logged.
//! [`read`] mounts it read-only (no exec, no devices, no set-uid) under
//! `/run/gantry/config-drive`, reads the two files and unmounts it again.
//!
//! For air-gapped hosts a drive may also carry image archives in `images/` (`*.tar`, as
//! `gantry image import` takes them). Such a drive **stays mounted read-only for the whole
//! boot**, so that each container's `gantry image ensure --from` ([`IMAGES_DIR`]) imports
//! its image straight from the drive: no copy in memory (`/run` is a tmpfs) or on `/var`
//! first, and nothing to coordinate about when the last import is done.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::user_data::MetaData;
use super::MAX_CONFIG_BYTES;

/// The labels a config drive may carry.
pub const LABELS: [&str; 2] = ["CIDATA", "GANTRY"];
/// Where PID 1 mounts the drive while it reads it.
pub const MOUNT_POINT: &str = "/run/gantry/config-drive";
/// The drive's image archives, where PID 1 leaves them mounted (`MOUNT_POINT/images`).
pub const IMAGES_DIR: &str = "/run/gantry/config-drive/images";
/// The name of the directory of image archives on a drive.
const IMAGES: &str = "images";

/// A file system a config drive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Vfat,
    Iso9660,
}

impl FsType {
    /// The kernel's name for it, as `mount(2)` wants it.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Iso9660 => "iso9660",
        }
    }
}

/// A labelled volume found on a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub device: PathBuf,
    pub fstype: FsType,
    pub label: String,
}

/// What a config drive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// `user-data`, when there is one (at most [`MAX_CONFIG_BYTES`] + 1 bytes are read, so
    /// that a larger file is refused as too large).
    pub user_data: Option<Vec<u8>>,
    /// `meta-data`, parsed; empty when absent.
    pub meta: MetaData,
    /// The drive's `images/`, when it has one: the drive is then left mounted.
    pub images: Option<PathBuf>,
}

/// Why a config drive that was found could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("cannot create the mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: io::Error },
    #[error("cannot mount {device} ({fstype}) read-only: {source}")]
    Mount {
        device: PathBuf,
        fstype: &'static str,
        source: io::Error,
    },
    #[error("cannot read {file}: {source}")]
    Read {
        file: &'static str,
        source: io::Error,
    },
}

/// Reads the label of the file system at the start of `dev` (a block device or an image
/// file): `Ok(None)` when it is neither FAT nor ISO 9660 or has no label.
pub fn probe(dev: &File) -> io::Result<Option<(FsType, String)>> {
    let mut sector = [0u8; 512];
    if read_full_at(dev, &mut sector, 0)? == sector.len() {
        if let Some(label) = fat_label(&sector) {
            return Ok(Some((FsType::Vfat, label)));
        }
    }
    let mut pvd = [0u8; 2048];
    if read_full_at(dev, &mut pvd, 16 * 2048)? == pvd.len() {
        if let Some(label) = iso9660_label(&pvd) {
            return Ok(Some((FsType::Iso9660, label)));
        }
    }
    Ok(None)
}

/// Reads into `buf` at `offset` until it is full or the end is reached; returns how much.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The volume label of a FAT12/16/32 boot sector, if it is one and has a label.
fn fat_label(s: &[u8; 512]) -> Option<String> {
    if s[510..512] != [0x55, 0xaa] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([s[11], s[12]]);
    let sectors_per_cluster = s[13];
    let fats = s[16];
    if ![512, 1024, 2048, 4096].contains(&bytes_per_sector)
        || !sectors_per_cluster.is_power_of_two()
        || fats == 0
    {
        return None;
    }
    // FAT32 has no 16-bit FAT size, and its extended BPB starts 28 bytes later.
    let fat32 = u16::from_le_bytes([s[22], s[23]]) == 0;
    let (signature, label) = if fat32 { (66, 71) } else { (38, 43) };
    if s[signature] != 0x29 {
        return None;
    }
    let label = String::from_utf8_lossy(&s[label..label + 11])
        .trim_end_matches([' ', '\0'])
        .to_owned();
    (!label.is_empty() && label != "NO NAME").then_some(label)
}

/// The volume identifier of an ISO 9660 primary volume descriptor (sector 16).
fn iso9660_label(d: &[u8; 2048]) -> Option<String> {
    if d[0] != 1 || &d[1..6] != b"CD001" {
        return None;
    }
    let label = String::from_utf8_lossy(&d[40..72])
        .trim_end_matches([' ', '\0'])
        .to_owned();
    (!label.is_empty()).then_some(label)
}

/// Whether `label` marks a config drive.
pub fn is_config_label(label: &str) -> bool {
    LABELS.iter().any(|l| l.eq_ignore_ascii_case(label))
}

/// Finds the config drive among the block devices in `sys_class_block`, opening each as
/// `dev_dir/<name>`. Devices that cannot be opened (an empty CD drive) or have no media are
/// skipped.
pub fn find(sys_class_block: &Path, dev_dir: &Path) -> Option<Volume> {
    let mut names: Vec<String> = match std::fs::read_dir(sys_class_block) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) => {
            warn!(dir = %sys_class_block.display(), error = %e, "cannot list block devices; no config drive");
            return None;
        }
    };
    names.sort();
    let mut found: Vec<Volume> = Vec::new();
    for name in names {
        let size = std::fs::read_to_string(sys_class_block.join(&name).join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if size == 0 {
            continue;
        }
        let device = dev_dir.join(&name);
        let probed = File::open(&device).and_then(|f| probe(&f));
        match probed {
            Ok(Some((fstype, label))) if is_config_label(&label) => found.push(Volume {
                device,
                fstype,
                label,
            }),
            Ok(_) => {}
            Err(e) => debug!(device = %device.display(), error = %e, "cannot probe"),
        }
    }
    let mut found = found.into_iter();
    let first = found.next()?;
    for other in found {
        warn!(
            device = %other.device.display(),
            label = %other.label,
            using = %first.device.display(),
            "more than one config drive; using the first"
        );
    }
    Some(first)
}

/// Mounting, behind a trait so that reading a drive can be tested without root.
pub trait Mounter {
    /// Mounts `device` read-only at `target`.
    fn mount_ro(&mut self, device: &Path, fstype: FsType, target: &Path) -> io::Result<()>;
    /// Unmounts `target`.
    fn unmount(&mut self, target: &Path) -> io::Result<()>;
}

/// The real thing: `mount(2)` and `umount2(2)`.
#[derive(Debug, Default)]
pub struct Kernel;

impl Mounter for Kernel {
    fn mount_ro(&mut self, device: &Path, fstype: FsType, target: &Path) -> io::Result<()> {
        use nix::mount::MsFlags;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        nix::mount::mount(
            Some(device),
            target,
            Some(fstype.as_str()),
            flags,
            None::<&str>,
        )
        .map_err(io::Error::from)
    }

    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        nix::mount::umount2(target, nix::mount::MntFlags::empty()).map_err(io::Error::from)
    }
}

/// Mounts `volume` at `target`, reads `user-data` and `meta-data`, and unmounts it (an
/// unmount failure is logged, not returned: the files were read) unless it has `images/`.
pub fn read(
    volume: &Volume,
    target: &Path,
    mounter: &mut dyn Mounter,
) -> Result<Contents, DriveError> {
    std::fs::create_dir_all(target).map_err(|source| DriveError::MountPoint {
        path: target.to_owned(),
        source,
    })?;
    mounter
        .mount_ro(&volume.device, volume.fstype, target)
        .map_err(|source| DriveError::Mount {
            device: volume.device.clone(),
            fstype: volume.fstype.as_str(),
            source,
        })?;
    let contents = read_files(target);
    if let Ok(Contents {
        images: Some(images),
        ..
    }) = &contents
    {
        info!(
            device = %volume.device.display(),
            images = %images.display(),
            "config drive has image archives; it stays mounted read-only"
        );
        return contents;
    }
    if let Err(e) = mounter.unmount(target) {
        warn!(target = %target.display(), error = %e, "cannot unmount the config drive");
    }
    contents
}

fn read_files(dir: &Path) -> Result<Contents, DriveError> {
    let user_data = read_limited(&dir.join("user-data")).map_err(|source| DriveError::Read {
        file: "user-data",
        source,
    })?;
    let meta = read_limited(&dir.join("meta-data"))
        .map_err(|source| DriveError::Read {
            file: "meta-data",
            source,
        })?
        .map(|b| MetaData::parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let images = dir.join(IMAGES);
    let images = images.is_dir().then_some(images);
    Ok(Contents {
        user_data,
        meta,
        images,
    })
}

/// A file's bytes, at most one more than [`MAX_CONFIG_BYTES`]; `None` when it is absent.
fn read_limited(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A FAT image made by `mkfs.fat` (dosfstools), as an operator would make one.
    fn mkfs_fat(dir: &Path, name: &str, args: &[&str], size_kib: &str) -> PathBuf {
        let img = dir.join(name);
        let out = Command::new("mkfs.fat")
            .args(args)
            .arg("-C")
            .arg(&img)
            .arg(size_kib)
            .output()
            .expect("mkfs.fat (apt-get install dosfstools)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        img
    }

    fn probe_file(p: &Path) -> Option<(FsType, String)> {
        probe(&File::open(p).unwrap()).unwrap()
    }

    #[test]
    fn reads_fat12_fat16_and_fat32_labels_from_mkfs_fat_images() {
        let dir = tempfile::tempdir().unwrap();
        let fat12 = mkfs_fat(dir.path(), "a.img", &["-n", "CIDATA"], "1440");
        assert_eq!(probe_file(&fat12), Some((FsType::Vfat, "CIDATA".into())));
        let fat16 = mkfs_fat(dir.path(), "b.img", &["-F", "16", "-n", "gantry"], "20480");
        // mkfs.fat stores labels upper-case; the comparison ignores case anyway.
        let (fs, label) = probe_file(&fat16).unwrap();
        assert_eq!(fs, FsType::Vfat);
        assert!(is_config_label(&label), "{label}");
        let fat32 = mkfs_fat(dir.path(), "c.img", &["-F", "32", "-n", "DATA"], "40000");
        assert_eq!(probe_file(&fat32), Some((FsType::Vfat, "DATA".into())));
        let unlabelled = mkfs_fat(dir.path(), "d.img", &[], "1440");
        assert_eq!(probe_file(&unlabelled), None);
    }

    #[test]
    fn reads_an_iso9660_volume_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = vec![0u8; 17 * 2048];
        let pvd = &mut img[16 * 2048..];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        pvd[40..72].copy_from_slice(format!("{:<32}", "cidata").as_bytes());
        let path = dir.path().join("seed.iso");
        std::fs::write(&path, &img).unwrap();
        assert_eq!(probe_file(&path), Some((FsType::Iso9660, "cidata".into())));
        assert!(is_config_label("cidata"));
    }

    #[test]
    fn short_and_foreign_devices_have_no_label() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, [0x55u8; 100]).unwrap();
        assert_eq!(probe_file(&short), None);
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 40_000]).unwrap();
        assert_eq!(probe_file(&zeros), None);
    }

    #[test]
    fn finds_the_labelled_device_among_sysfs_entries() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        for (name, size) in [
            ("sr0", "0"),
            ("vda", "4096"),
            ("vdb", "2880"),
            ("vdc", "2880"),
        ] {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::write(sys.join(name).join("size"), size).unwrap();
        }
        std::fs::write(dev.join("vda"), vec![0u8; 4096]).unwrap();
        mkfs_fat(&dev, "vdb", &["-n", "CIDATA"], "1440");
        mkfs_fat(&dev, "vdc", &["-n", "GANTRY"], "1440");
        let v = find(&sys, &dev).expect("a config drive");
        assert_eq!(v.device, dev.join("vdb"), "the first in name order wins");
        assert_eq!(v.fstype, FsType::Vfat);
        assert_eq!(v.label, "CIDATA");
    }

    /// "Mounts" by copying a prepared directory's files into the target.
    struct CopyMounter {
        from: PathBuf,
        unmounted: bool,
    }

    impl Mounter for CopyMounter {
        fn mount_ro(&mut self, _: &Path, _: FsType, target: &Path) -> io::Result<()> {
            for e in std::fs::read_dir(&self.from)? {
                let e = e?;
                if e.path().is_dir() {
                    std::fs::create_dir(target.join(e.file_name()))?;
                } else {
                    std::fs::copy(e.path(), target.join(e.file_name()))?;
                }
            }
            Ok(())
        }
        fn unmount(&mut self, _: &Path) -> io::Result<()> {
            self.unmounted = true;
            Ok(())
        }
    }

    #[test]
    fn reads_user_data_and_meta_data_and_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir(&seed).unwrap();
        std::fs::write(seed.join("user-data"), "version = 1\n").unwrap();
        std::fs::write(seed.join("meta-data"), "local-hostname: n1\n").unwrap();
        let volume = Volume {
            device: "/dev/vdb".into(),
            fstype: FsType::Vfat,
            label: "CIDATA".into(),
        };
        let mut m = CopyMounter {
            from: seed,
            unmounted: false,
        };
        let c = read(&volume, &dir.path().join("mnt"), &mut m).unwrap();
        assert_eq!(c.user_data.as_deref(), Some(&b"version = 1\n"[..]));
        assert_eq!(c.meta.local_hostname.as_deref(), Some("n1"));
        assert_eq!(c.images, None);
        assert!(m.unmounted);
    }

    #[test]
    fn a_drive_with_images_stays_mounted_for_the_imports() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join("images")).unwrap();
        std::fs::write(seed.join("user-data"), "version = 1\n").unwrap();
        let volume = Volume {
            device: "/dev/vdb".into(),
            fstype: FsType::Vfat,
            label: "CIDATA".into(),
        };
        let mut m = CopyMounter {
            from: seed,
            unmounted: false,
        };
        let mnt = dir.path().join("mnt");
        let c = read(&volume, &mnt, &mut m).unwrap();
        assert_eq!(c.images, Some(mnt.join("images")));
        assert!(!m.unmounted);
    }
}
