//! Layers built in memory: ordinary ones with `tar::Builder`, malicious ones (in
//! `malicious.rs`) from raw headers, since `tar::Builder` refuses `..` and the like. The
//! tests in `as_root.rs`, named `…_as_root`, need root and fail without it.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::*;

mod as_root;
mod malicious;

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
fn walk_lists_members_and_hashes_the_stream_without_writing() {
    let tar = ordinary_layer();
    let mut names = Vec::new();
    let walked = walk(&tar[..], |m| names.push(m.entry())).unwrap();
    assert_eq!(walked.diff_id, sha256(&tar));
    assert_eq!(walked.uncompressed_bytes, tar.len() as u64);
    assert_eq!(walked.entries, names.len() as u64);
    let unpacked = Fixture::new().unpack(&tar).unwrap();
    assert_eq!(walked, unpacked);
}

#[test]
fn walk_refuses_what_unpack_refuses() {
    for tar in [
        Layer::default().file("../escape", b"x").tar(),
        Layer::default().hard_link("a", "../b").tar(),
        Layer::default()
            .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
            .file("a", b"")
            .tar(),
        Layer::default().file("dir/.wh.", b"").tar(),
    ] {
        let walked = walk(&tar[..], |_| {});
        assert!(
            matches!(
                walked,
                Err(LayerError::Refused { .. } | LayerError::LinkTarget { .. })
            ),
            "{walked:?}"
        );
    }
}
