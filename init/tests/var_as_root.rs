//! `/var`'s kernel side on a loop device: the mount options, the superblock of a mounted
//! file system, and the online grow. Needs root, `losetup` and `mkfs.ext4` (and fails
//! without them). `BLKPG_RESIZE_PARTITION` needs a partitioned disk and is covered by the
//! QEMU tests (`tests/tests/var.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_init::var::{blkdev, ext4, MOUNT_FLAGS, MOUNT_OPTIONS};

const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop device over a file, mounted somewhere; both undone on drop.
struct Loop {
    dev: PathBuf,
    mounted: Option<PathBuf>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = nix::mount::umount(&m);
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn grows_a_mounted_ext4_online_as_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("data.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "DATA", "-b", "4096"])
        .arg(&img));
    let dev = PathBuf::from(run(Command::new("losetup")
        .args(["--show", "-f"])
        .arg(&img)));
    let mut lo = Loop {
        dev: dev.clone(),
        mounted: None,
    };
    let before = ext4::read_superblock(&dev).unwrap();
    assert!(before.clean());
    assert_eq!(before.size_bytes(), 16 * MIB);

    let mnt = dir.path().join("var");
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some(dev.as_path()),
        &mnt,
        Some("ext4"),
        MOUNT_FLAGS,
        Some(MOUNT_OPTIONS),
    )
    .expect("the kernel takes /var's mount options");
    lo.mounted = Some(mnt.clone());
    assert!(
        !ext4::read_superblock(&dev).unwrap().clean(),
        "a mounted journal is marked for recovery"
    );
    let options = mount_options(&mnt);
    for o in ["nodev", "nosuid", "noatime"] {
        assert!(options.split(',').any(|x| x == o), "{o} missing: {options}");
    }

    // The disk grows under the mounted file system.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    run(Command::new("losetup").arg("-c").arg(&dev));
    let disk = std::fs::File::open(&dev).unwrap();
    assert_eq!(blkdev::logical_block_size(&disk).unwrap(), 512);

    // Growing ext4 takes CAP_SYS_RESOURCE, which PID 1 has but some sandboxes withhold
    // from their root; there the QEMU tests cover it.
    let grows = has_cap_sys_resource();
    if grows {
        ext4::resize(&mnt, 64 * MIB / 4096).unwrap();
        assert_eq!(ext4::read_superblock(&dev).unwrap().size_bytes(), 64 * MIB);
        let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
        assert!(st.blocks() * st.fragment_size() > 48 * MIB, "{st:?}");
        // Asking again for the same size is a no-op.
        ext4::resize(&mnt, 64 * MIB / 4096).unwrap();
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: the online grow itself is not tried");
        assert!(matches!(
            ext4::resize(&mnt, 64 * MIB / 4096),
            Err(ext4::Ext4Error::Resize { blocks: 16384, .. })
        ));
    }
    std::fs::write(mnt.join("kept"), b"yes").unwrap();

    nix::mount::umount(&mnt).unwrap();
    lo.mounted = None;
    let after = ext4::read_superblock(&dev).unwrap();
    assert!(after.clean(), "a clean unmount leaves nothing to replay");
    assert_eq!(after.size_bytes(), if grows { 64 * MIB } else { 16 * MIB });
}

fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

fn mount_options(target: &Path) -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("the mount table");
    gantry_init::mounts::parse_mountinfo(&text)
        .into_iter()
        .find(|m| Path::new(&m.target) == target)
        .map(|m| m.options)
        .unwrap_or_default()
}
