//! The malicious corpus: each layer fails with an error naming its entry, or is contained
//! (an absolute name, a symlink replaced by a file), and nothing next to `dest` is made or
//! changed.

use super::*;

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
