//! What needs root: whiteouts and opaque directories (and overlayfs reading them), device
//! nodes, owners and trusted xattrs. These fail rather than skip without root; CI runs
//! them as root.

use super::*;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs it as root"
    );
}

#[test]
fn makes_whiteouts_and_opaque_dirs_as_root() {
    require_root();
    let tar = Layer::default()
        .file("a/.wh.gone", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"n")
        .file("c/.wh..wh..opq", b"")
        .file(".wh.top", b"")
        .tar();
    let f = Fixture::new();
    f.unpack(&tar).unwrap();
    for whiteout in ["a/gone", "top"] {
        let m = fs::symlink_metadata(f.dest.join(whiteout)).unwrap();
        assert!(m.file_type().is_char_device(), "{whiteout}");
        assert_eq!(m.rdev(), 0, "{whiteout}");
    }
    for dir in ["b", "c"] {
        assert_eq!(
            xattr(&f.dest.join(dir), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..]),
            "{dir}"
        );
    }
    assert_eq!(xattr(&f.dest.join("a"), "trusted.overlay.opaque"), None);
    assert!(f.dest.join("b/new").is_file());
    for name in ["a/.wh.gone", "b/.wh..wh..opq", ".wh.top"] {
        assert!(fs::symlink_metadata(f.dest.join(name)).is_err(), "{name}");
    }
    f.assert_contained();
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn overlayfs_hides_whiteouts_and_opaque_dirs_as_root() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper, merged) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("merged"),
    );
    for d in [&lower, &upper, &merged] {
        fs::create_dir(d).unwrap();
    }
    let lower_tar = Layer::default()
        .file("a/gone", b"g")
        .file("a/stays", b"s")
        .file("b/old", b"o")
        .file("b/sub/older", b"o")
        .tar();
    let upper_tar = Layer::default()
        .file("a/.wh.gone", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"n")
        .tar();
    unpack(&lower_tar[..], Compression::None, &lower).unwrap();
    unpack(&upper_tar[..], Compression::None, &upper).unwrap();

    let options = format!("lowerdir={}:{}", upper.display(), lower.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
    let _mounted = Mounted(merged.clone());
    let names = |dir: &str| {
        let mut n: Vec<_> = fs::read_dir(merged.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("a"), ["stays"]);
    assert_eq!(names("b"), ["new"]);
    assert!(!merged.join("a/gone").exists());
    assert_eq!(fs::read_to_string(merged.join("b/new")).unwrap(), "n");
}

#[test]
fn makes_device_nodes_and_fifos_as_root() {
    require_root();
    let device = |major: u32, minor: u32, mode: u32| {
        move |h: &mut Header| {
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_mode(mode);
        }
    };
    let tar = Layer::default()
        .custom(b'3', b"dev/null", b"", b"", device(1, 3, 0o666))
        .custom(b'4', b"dev/loop9", b"", b"", device(7, 9, 0o660))
        .custom(b'6', b"run/fifo", b"", b"", |h| h.set_mode(0o620))
        .tar();
    let f = Fixture::new();
    f.unpack(&tar).unwrap();
    let meta = |p: &str| fs::symlink_metadata(f.dest.join(p)).unwrap();
    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777, null.mtime()),
        (nix::sys::stat::makedev(1, 3), 0o666, MTIME as i64)
    );
    let lo = meta("dev/loop9");
    assert!(lo.file_type().is_block_device());
    assert_eq!(
        (lo.rdev(), lo.mode() & 0o7777),
        (nix::sys::stat::makedev(7, 9), 0o660)
    );
    let fifo = meta("run/fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
}

#[test]
fn sets_owners_as_root() {
    require_root();
    let owner = |uid: u64, gid: u64, mode: u32| {
        move |h: &mut Header| {
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mode(mode);
        }
    };
    let tar = Layer::default()
        .custom(b'5', b"home/user", b"", b"", owner(1000, 1000, 0o700))
        .custom(
            b'0',
            b"home/user/setuid",
            b"",
            b"x",
            owner(1000, 2000, 0o6755),
        )
        .custom(
            b'2',
            b"home/user/link",
            b"setuid",
            b"",
            owner(1001, 2001, 0o777),
        )
        .pax(&[("uid", b"4000000000"), ("gid", b"70000")])
        .custom(b'0', b"big-ids", b"", b"", owner(0, 0, 0o644))
        .tar();
    let f = Fixture::new();
    f.unpack(&tar).unwrap();
    let meta = |p: &str| fs::symlink_metadata(f.dest.join(p)).unwrap();
    assert_eq!(
        (meta("home/user").uid(), meta("home/user").gid()),
        (1000, 1000)
    );
    let setuid = meta("home/user/setuid");
    assert_eq!(
        (setuid.uid(), setuid.gid(), setuid.mode() & 0o7777),
        (1000, 2000, 0o6755)
    );
    assert_eq!(
        (meta("home/user/link").uid(), meta("home/user/link").gid()),
        (1001, 2001)
    );
    assert_eq!(
        (meta("big-ids").uid(), meta("big-ids").gid()),
        (4_000_000_000, 70000)
    );
}

#[test]
fn sets_trusted_xattrs_on_files_and_symlinks_as_root() {
    require_root();
    let tar = Layer::default()
        .pax(&[("SCHILY.xattr.trusted.test", b"file")])
        .file("f", b"")
        .pax(&[("SCHILY.xattr.trusted.test", b"link")])
        .symlink("l", "/nowhere")
        .tar();
    let f = Fixture::new();
    f.unpack(&tar).unwrap();
    assert_eq!(
        xattr(&f.dest.join("f"), "trusted.test").as_deref(),
        Some(&b"file"[..])
    );
    assert_eq!(
        xattr(&f.dest.join("l"), "trusted.test").as_deref(),
        Some(&b"link"[..])
    );
}
