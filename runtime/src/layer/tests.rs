//! Layers built in memory: ordinary ones built with `tar::Builder`, malicious ones from raw
//! headers (`tar::Builder` refuses `..` and the like). Tests named `…_as_root` need root
//! (whiteouts, device nodes, owners, trusted xattrs, mounts) and fail without it; CI runs
//! them as root.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::*;

const MTIME: u64 = 1_600_000_000;

/// An archive written header by header, so that it can hold anything.
#[derive(Default)]
struct Layer(Vec<u8>);

impl Layer {
    fn custom(
        mut self,
        typeflag: u8,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        tweak: impl FnOnce(&mut Header),
    ) -> Self {
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        old.linkflag = [typeflag];
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        tweak(&mut h);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.custom(b'0', name.as_bytes(), b"", data, |_| {})
    }

    fn dir(self, name: &str) -> Self {
        self.custom(b'5', name.as_bytes(), b"", b"", |h| h.set_mode(0o755))
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.custom(b'2', name.as_bytes(), target.as_bytes(), b"", |h| {
            h.set_mode(0o777)
        })
    }

    fn hard_link(self, name: &str, target: &str) -> Self {
        self.custom(b'1', name.as_bytes(), target.as_bytes(), b"", |_| {})
    }

    /// A PAX header for the next entry.
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.custom(b'x', b"PaxHeaders/next", b"", &data, |_| {})
    }

    fn tar(self) -> Vec<u8> {
        let mut bytes = self.0;
        bytes.extend_from_slice(&[0; 1024]);
        bytes
    }
}

/// `dest` in a temporary directory, next to a file and a directory a layer must not touch.
struct Fixture {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        fs::write(tmp.path().join("outside-file"), "original").unwrap();
        fs::create_dir(tmp.path().join("outside-dir")).unwrap();
        Fixture { tmp, dest }
    }

    fn outside(&self) -> &Path {
        self.tmp.path()
    }

    fn unpack(&self, tar: &[u8]) -> Result<Unpacked, LayerError> {
        unpack(tar, Compression::None, &self.dest)
    }

    /// Nothing next to `dest` was made or changed.
    fn assert_contained(&self) {
        let mut names: Vec<_> = fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "outside-dir", "outside-file"]);
        let outside_file = self.outside().join("outside-file");
        assert!(fs::symlink_metadata(&outside_file).unwrap().is_file());
        assert_eq!(fs::read_to_string(outside_file).unwrap(), "original");
        assert_eq!(
            fs::read_dir(self.outside().join("outside-dir"))
                .unwrap()
                .count(),
            0
        );
    }

    fn refuse(&self, tar: &[u8], entry: &str) -> LayerError {
        let err = self.unpack(tar).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{entry:?}")),
            "{err} does not name {entry:?}"
        );
        self.assert_contained();
        err
    }
}

fn sha256(data: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}").parse().unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and `buf` has `buf.len()` writable bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs it as root"
    );
}

/// Deterministic bytes that gzip cannot shrink.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// An ordinary layer as `tar::Builder` writes it, with a long name, a PAX mtime and xattr,
/// setuid and sticky bits, links, and a directory written into after its own entry.
fn ordinary_layer() -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    let mut add = |kind: EntryType, path: &str, mode: u32, mtime: u64, link: &str, data: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        if link.is_empty() {
            b.append_data(&mut h, path, data).unwrap();
        } else {
            b.append_link(&mut h, path, link).unwrap();
        }
    };
    add(EntryType::Directory, "etc/", 0o750, 1_000_000_000, "", b"");
    add(
        EntryType::Regular,
        "etc/passwd",
        0o644,
        1_100_000_000,
        "",
        b"root:x:0:0::/root:/bin/sh\n",
    );
    add(EntryType::Directory, "tmp/", 0o1777, 1_200_000_000, "", b"");
    add(
        EntryType::Regular,
        "bin/busybox",
        0o4755,
        MTIME,
        "",
        &noise(3000),
    );
    add(EntryType::Symlink, "bin/sh", 0o777, MTIME, "busybox", b"");
    add(EntryType::Symlink, "lib", 0o777, MTIME, "/usr/lib", b"");
    add(EntryType::Link, "bin/ls", 0o755, MTIME, "bin/busybox", b"");
    add(
        EntryType::Regular,
        "tmp/written-later",
        0o600,
        MTIME,
        "",
        b"x",
    );
    let long = format!("usr/share/{}/file", "long-directory-name".repeat(10));
    add(EntryType::Regular, &long, 0o644, MTIME, "", b"deep");
    b.append_pax_extensions([
        ("mtime", &b"1300000000.25"[..]),
        ("SCHILY.xattr.user.note", b"two\nlines"),
    ])
    .unwrap();
    let mut h = Header::new_gnu();
    h.set_mode(0o640);
    h.set_size(4);
    b.append_data(&mut h, "etc/noted", &b"note"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn unpacks_an_ordinary_layer_with_its_metadata() {
    let f = Fixture::new();
    let tar = ordinary_layer();
    let got = f.unpack(&tar).unwrap();
    assert_eq!(got.diff_id, sha256(&tar));
    assert_eq!(got.uncompressed_bytes, tar.len() as u64);
    assert_eq!(got.entries, 10);

    let d = &f.dest;
    let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!(
        fs::read_to_string(d.join("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\n"
    );
    assert_eq!(meta("etc").mode() & 0o7777, 0o750);
    assert_eq!(
        meta("etc").mtime(),
        1_000_000_000,
        "directory mtimes are set last"
    );
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("tmp").mtime(), 1_200_000_000);
    assert_eq!(meta("etc/passwd").mtime(), 1_100_000_000);
    assert_eq!(meta("bin/busybox").mode() & 0o7777, 0o4755);
    assert_eq!(fs::read(d.join("bin/busybox")).unwrap(), noise(3000));
    assert_eq!(
        meta("bin").mode() & 0o7777,
        0o755,
        "missing parents are made 0755"
    );
    assert_eq!(
        fs::read_link(d.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(fs::read_link(d.join("lib")).unwrap(), Path::new("/usr/lib"));
    assert_eq!(meta("bin/ls").ino(), meta("bin/busybox").ino());
    assert_eq!(meta("bin/ls").nlink(), 2);
    let long = format!("usr/share/{}/file", "long-directory-name".repeat(10));
    assert_eq!(fs::read_to_string(d.join(long)).unwrap(), "deep");
    assert_eq!(
        (meta("etc/noted").mtime(), meta("etc/noted").mtime_nsec()),
        (1_300_000_000, 250_000_000)
    );
    assert_eq!(meta("etc/noted").mode() & 0o7777, 0o640);
    assert_eq!(
        xattr(&d.join("etc/noted"), "user.note").as_deref(),
        Some(&b"two\nlines"[..])
    );
    f.assert_contained();
}

/// Every object under `root`, with its mode, mtime (but a directory's) and content or
/// target.
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                String::from("dir")
            } else if m.is_symlink() {
                format!("-> {:?}", fs::read_link(&p).unwrap())
            } else {
                format!("{:?}", sha256(&fs::read(&p).unwrap()))
            };
            // Parents the layer does not list get the current time.
            let mtime = match m.is_dir() {
                true => String::new(),
                false => format!("{}.{}", m.mtime(), m.mtime_nsec()),
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push(format!("{rel} {:o} {mtime} {what}", m.mode()));
        }
    }
    out.sort();
    out
}

#[test]
fn gzip_and_zstd_unpack_the_same_tree() {
    let tar = ordinary_layer();
    let plain = Fixture::new();
    let unpacked = plain.unpack(&tar).unwrap();
    for (compression, blob) in [
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd(&tar)),
    ] {
        let f = Fixture::new();
        let got = unpack(&blob[..], compression, &f.dest).unwrap();
        assert_eq!(got, unpacked, "{compression:?}");
        assert_eq!(snapshot(&f.dest), snapshot(&plain.dest), "{compression:?}");
    }
}

#[test]
fn diff_id_covers_everything_after_the_end_marker() {
    let mut tar = Layer::default().file("a", b"a").tar();
    tar.extend_from_slice(&[0; 9216]);
    for (compression, blob) in [
        (Compression::None, tar.clone()),
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd(&tar)),
    ] {
        let f = Fixture::new();
        let got = unpack(&blob[..], compression, &f.dest).unwrap();
        assert_eq!(
            (got.diff_id, got.uncompressed_bytes, got.entries),
            (sha256(&tar), tar.len() as u64, 1)
        );
    }
}

#[test]
fn accepts_a_missing_end_marker_only_between_entries() {
    let unterminated = Layer::default().file("a", b"aaa").file("b", &[b'b'; 600]).0;
    let f = Fixture::new();
    assert_eq!(f.unpack(&unterminated).unwrap().entries, 2);
    assert_eq!(fs::read(f.dest.join("b")).unwrap(), [b'b'; 600]);

    // "a" is a header and a block of data, then "b" has a header at 1024, data from 1536
    // and padding from 2136 to the end-of-archive marker at 2560.
    let entry_b = Location::Entry("b".into());
    for (cut, at) in [
        (1024 + 300, Location::Header { offset: 1024 }),
        (1536 + 300, entry_b.clone()),
        (2136 + 100, entry_b),
        (2560 + 100, Location::Header { offset: 2560 }),
    ] {
        let mut tar = Layer::default()
            .file("a", b"aaa")
            .file("b", &[b'b'; 600])
            .tar();
        tar.truncate(cut);
        let err = Fixture::new().unpack(&tar).unwrap_err();
        assert!(
            matches!(&err, LayerError::Truncated { at: got } if *got == at),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn refuses_an_entry_after_a_single_zero_block() {
    let mut tar = Layer::default().file("a", b"a").0;
    tar.extend_from_slice(&[0; 512]);
    tar.extend(Layer::default().file("hidden", b"h").tar());
    let err = Fixture::new().unpack(&tar).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Header {
                at: Location::Trailer { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn later_entries_replace_earlier_ones() {
    let tar = Layer::default()
        .file("twice", b"one")
        .file("twice", b"two")
        .dir("dir-then-file")
        .file("dir-then-file/child", b"c")
        .file("dir-then-file", b"file now")
        .file("file-then-dir", b"f")
        .dir("file-then-dir")
        .custom(b'5', b"kept", b"", b"", |h| h.set_mode(0o700))
        .file("kept/child", b"c")
        .custom(b'5', b"kept", b"", b"", |h| h.set_mode(0o751))
        .symlink("link-then-file", "twice")
        .file("link-then-file", b"file")
        .tar();
    let f = Fixture::new();
    f.unpack(&tar).unwrap();
    let d = &f.dest;
    assert_eq!(fs::read_to_string(d.join("twice")).unwrap(), "two");
    assert_eq!(
        fs::read_to_string(d.join("dir-then-file")).unwrap(),
        "file now"
    );
    assert!(fs::symlink_metadata(d.join("file-then-dir"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read_to_string(d.join("kept/child")).unwrap(), "c");
    assert_eq!(
        fs::symlink_metadata(d.join("kept")).unwrap().mode() & 0o7777,
        0o751
    );
    assert_eq!(
        fs::read_to_string(d.join("link-then-file")).unwrap(),
        "file"
    );
    assert_eq!(fs::read_to_string(d.join("twice")).unwrap(), "two");
}

#[test]
fn applies_a_root_directory_entry_to_dest_itself() {
    let tar = Layer::default()
        .custom(b'5', b"./", b"", b"", |h| {
            h.set_mode(0o751);
            h.set_mtime(1_234_567_890);
        })
        .file("./a", b"a")
        .tar();
    let f = Fixture::new();
    f.unpack(&tar).unwrap();
    let m = fs::metadata(&f.dest).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o751, 1_234_567_890));

    let err = Fixture::new().refuse(&Layer::default().file("./", b"x").tar(), "./");
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");
}

#[test]
fn skips_aufs_metadata() {
    let tar = Layer::default()
        .dir(".wh..wh.plnk")
        .file(".wh..wh.plnk/1234.5678", b"x")
        .file(".wh..wh.aufs", b"")
        .file("a/.wh..wh.orph", b"")
        .file("a/kept", b"k")
        .tar();
    let f = Fixture::new();
    assert_eq!(f.unpack(&tar).unwrap().entries, 5);
    let names: Vec<_> = fs::read_dir(&f.dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(fs::read_dir(f.dest.join("a")).unwrap().count(), 1);
}

#[test]
fn refuses_a_destination_that_is_not_empty() {
    let f = Fixture::new();
    fs::write(f.dest.join("x"), "").unwrap();
    let err = f.unpack(&Layer::default().tar()).unwrap_err();
    assert!(matches!(err, LayerError::Destination { .. }), "{err}");
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

#[test]
fn refuses_a_dotdot_name() {
    let f = Fixture::new();
    let err = f.refuse(&Layer::default().file("../escape", b"x").tar(), "../escape");
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");
}

#[test]
fn refuses_dotdot_inside_a_name() {
    let f = Fixture::new();
    let tar = Layer::default().dir("a").file("a/../../escape", b"x").tar();
    let err = f.refuse(&tar, "a/../../escape");
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");
}

#[test]
fn keeps_an_absolute_name_inside_the_layer() {
    let f = Fixture::new();
    f.unpack(&Layer::default().file("/abs", b"x").tar())
        .unwrap();
    assert_eq!(fs::read_to_string(f.dest.join("abs")).unwrap(), "x");
    f.assert_contained();
}

#[test]
fn refuses_writing_through_a_symlink_to_the_parent() {
    let f = Fixture::new();
    let tar = Layer::default()
        .symlink("link", "..")
        .file("link/escape", b"x")
        .tar();
    let err = f.refuse(&tar, "link/escape");
    assert_eq!(
        err.to_string(),
        r#"layer entry "link/escape": parent "link" is a symlink"#
    );
}

#[test]
fn refuses_writing_through_an_absolute_symlink() {
    let f = Fixture::new();
    let target = f.outside().join("outside-dir");
    let tar = Layer::default()
        .symlink("link", target.to_str().unwrap())
        .file("link/x", b"x")
        .tar();
    let err = f.refuse(&tar, "link/x");
    assert!(matches!(err, LayerError::Parent { .. }), "{err}");
    // A symlink deeper down, and a directory entry through one, are refused the same way.
    let tar = Layer::default()
        .dir("a")
        .symlink("a/b", "/")
        .dir("a/b/c/")
        .tar();
    let err = Fixture::new().refuse(&tar, "a/b/c/");
    assert!(
        matches!(&err, LayerError::Parent { parent, .. } if parent == "a/b"),
        "{err}"
    );
}

#[test]
fn refuses_a_hard_link_out_of_the_layer() {
    let f = Fixture::new();
    let err = f.refuse(
        &Layer::default().hard_link("hl", "../outside-file").tar(),
        "hl",
    );
    assert!(matches!(err, LayerError::LinkTarget { .. }), "{err}");
    assert!(fs::symlink_metadata(f.dest.join("hl")).is_err());
}

#[test]
fn reads_an_absolute_hard_link_target_inside_the_layer() {
    let f = Fixture::new();
    f.unpack(
        &Layer::default()
            .file("etc/passwd", b"p")
            .hard_link("hl", "/etc/passwd")
            .tar(),
    )
    .unwrap();
    let ino = |p: &str| fs::metadata(f.dest.join(p)).unwrap().ino();
    assert_eq!(ino("hl"), ino("etc/passwd"));
}

#[test]
fn refuses_hard_links_to_missing_targets_and_through_symlinks() {
    let err = Fixture::new().refuse(&Layer::default().hard_link("hl", "nowhere").tar(), "hl");
    assert_eq!(
        err.to_string(),
        r#"layer entry "hl": hard link target "nowhere": not found"#
    );
    let tar = Layer::default()
        .file("dir/file", b"f")
        .symlink("sym", "dir")
        .hard_link("hl", "sym/file")
        .tar();
    let err = Fixture::new().refuse(&tar, "hl");
    assert!(
        matches!(
            err,
            LayerError::LinkTarget {
                reason: "goes through a symlink",
                ..
            }
        ),
        "{err}"
    );
    let err = Fixture::new().refuse(&Layer::default().dir("d").hard_link("hl", "d").tar(), "hl");
    assert!(
        matches!(
            err,
            LayerError::LinkTarget {
                reason: "is a directory",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn replaces_a_hard_link_to_an_outside_symlink_instead_of_writing_through_it() {
    let f = Fixture::new();
    let tar = Layer::default()
        .symlink("sym", "../outside-file")
        .hard_link("hl", "sym")
        .file("hl", b"evil")
        .tar();
    f.unpack(&tar).unwrap();
    f.assert_contained();
    assert_eq!(fs::read_to_string(f.dest.join("hl")).unwrap(), "evil");
    assert_eq!(
        fs::read_link(f.dest.join("sym")).unwrap(),
        Path::new("../outside-file")
    );
}

#[test]
fn replaces_a_symlink_to_outside_with_a_file() {
    let f = Fixture::new();
    let tar = Layer::default()
        .symlink("link", "../outside-file")
        .file("link", b"evil")
        .tar();
    f.unpack(&tar).unwrap();
    f.assert_contained();
    let m = fs::symlink_metadata(f.dest.join("link")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read_to_string(f.dest.join("link")).unwrap(), "evil");
}

#[test]
fn refuses_whiteouts_of_nothing_dot_and_dotdot() {
    for name in [".wh...", ".wh..", ".wh.", "a/.wh..."] {
        let f = Fixture::new();
        let err = f.refuse(&Layer::default().file(name, b"").tar(), name);
        assert!(matches!(err, LayerError::Refused { .. }), "{err}");
        assert_eq!(fs::read_dir(&f.dest).unwrap().count(), 0, "{name}");
    }
}

#[test]
fn refuses_a_huge_pax_header_without_reading_it() {
    let tar = Layer::default()
        .custom(b'x', b"PaxHeaders/huge", b"", b"", |h| h.set_size(8 << 30))
        .0;
    let f = Fixture::new();
    let err = f.refuse(&tar, "PaxHeaders/huge");
    assert!(
        matches!(err, LayerError::ExtensionTooLarge { size, .. } if size == 8 << 30),
        "{err}"
    );
}

#[test]
fn refuses_a_huge_gnu_long_name() {
    let name = vec![b'a'; 2 << 20];
    let tar = Layer::default()
        .custom(b'L', b"././@LongLink", b"", &name, |_| {})
        .file("x", b"")
        .tar();
    let err = Fixture::new().refuse(&tar, "././@LongLink");
    assert!(matches!(err, LayerError::ExtensionTooLarge { .. }), "{err}");
}

#[test]
fn refuses_a_truncated_archive() {
    let mut tar = Layer::default().file("big", &noise(3000)).tar();
    tar.truncate(512 + 1000);
    let err = Fixture::new().refuse(&tar, "big");
    assert!(matches!(err, LayerError::Truncated { .. }), "{err}");
}

#[test]
fn refuses_truncated_gzip_and_zstd_streams() {
    let tar = Layer::default().file("big", &noise(200_000)).tar();
    for (compression, mut blob) in [
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd(&tar)),
    ] {
        blob.truncate(blob.len() / 2);
        let f = Fixture::new();
        let err = unpack(&blob[..], compression, &f.dest).unwrap_err();
        assert!(
            matches!(err, LayerError::Truncated { .. }),
            "{compression:?}: {err}"
        );
        assert!(
            err.to_string().contains("\"big\""),
            "{compression:?}: {err}"
        );
        f.assert_contained();
    }
    let mut blob = gzip(&tar);
    let last = blob.len() - 5;
    blob[last] ^= 0xff; // the length in the trailer
    let err = unpack(&blob[..], Compression::Gzip, &Fixture::new().dest).unwrap_err();
    assert!(
        matches!(err, LayerError::Read { .. } | LayerError::Truncated { .. }),
        "{err}"
    );
}

#[test]
fn refuses_unsupported_entry_types() {
    for (typeflag, name) in [
        (b'S', "sparse"),
        (b'V', "volume"),
        (b'D', "dumpdir"),
        (b'Z', "unknown"),
    ] {
        let err = Fixture::new().refuse(
            &Layer::default()
                .custom(typeflag, name.as_bytes(), b"", b"", |_| {})
                .tar(),
            name,
        );
        assert!(
            matches!(err, LayerError::UnsupportedType { typeflag: t, .. } if t == char::from(typeflag)),
            "{err}"
        );
    }
    let tar = Layer::default()
        .pax(&[("GNU.sparse.major", b"1")])
        .file("sparse", b"")
        .tar();
    let err = Fixture::new().refuse(&tar, "sparse");
    assert!(matches!(err, LayerError::Header { .. }), "{err}");
}

#[test]
fn refuses_overlay_xattrs_from_the_archive() {
    let tar = Layer::default()
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/x")])
        .dir("d")
        .tar();
    let err = Fixture::new().refuse(&tar, "d");
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");
}

#[test]
fn refuses_nul_bytes_and_overlong_names() {
    let tar = Layer::default()
        .pax(&[("path", b"a\0b")])
        .file("ignored", b"")
        .tar();
    let err = Fixture::new().refuse(&tar, "a\0b");
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");

    let long = "d/".repeat(2048) + "f";
    let mut name = long.clone().into_bytes();
    name.push(0);
    let tar = Layer::default()
        .custom(b'L', b"././@LongLink", b"", &name, |_| {})
        .file("ignored", b"")
        .tar();
    let err = Fixture::new().refuse(&tar, &long);
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");

    let component = "c".repeat(256);
    let tar = Layer::default()
        .pax(&[("path", component.as_bytes())])
        .file("ignored", b"")
        .tar();
    let err = Fixture::new().refuse(&tar, &component);
    assert!(matches!(err, LayerError::Refused { .. }), "{err}");
}

#[test]
fn refuses_a_corrupt_header() {
    let mut tar = Layer::default().file("a", b"a").tar();
    tar[0] = b'b';
    let err = Fixture::new().unpack(&tar).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Header {
                at: Location::Header { offset: 0 },
                ..
            }
        ),
        "{err}"
    );
}
