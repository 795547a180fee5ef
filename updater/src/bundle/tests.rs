use super::*;
use crate::keys::PublicKey;
use crate::keys::SigningKey;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub bundle: PathBuf,
    pub manifest: Manifest,
}

pub(crate) fn key() -> SigningKey {
    SigningKey::from_pkcs8(
        &SigningKey::generate_pkcs8().unwrap(),
        Path::new("test.key"),
    )
    .unwrap()
}

pub(crate) fn verity_for(root_len: u64) -> Verity {
    Verity {
        root_hash: "12".repeat(32),
        salt: "34".repeat(32),
        data_blocks: 2,
        hash_offset_blocks: 2,
        total_bytes: root_len,
    }
}

/// A bundle with a 5000-byte kernel and a 3-block + tree root, signed by a fresh key.
pub(crate) fn fixture(rollback_index: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(
        &kernel,
        (0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let root = dir.path().join("root.img");
    std::fs::write(&root, vec![0x5au8; 3 * 4096 + 100]).unwrap();
    let key = key();
    let bundle = dir.path().join("b.bundle");
    let meta = BundleMeta {
        os_version: "0.2.0".into(),
        rollback_index,
        arch: ARCH.into(),
        board: "generic".into(),
        verity: verity_for(3 * 4096 + 100),
    };
    let manifest = write(
        &bundle,
        &meta,
        &kernel,
        &["console=ttyS0".into(), "panic=10".into()],
        &root,
        &[&key],
    )
    .unwrap();
    Fixture {
        dir,
        key,
        bundle,
        manifest,
    }
}

fn trusted(k: &SigningKey) -> TrustedKeys {
    TrustedKeys::new([k.public_key()])
}

#[test]
fn a_written_bundle_opens_verifies_and_gives_back_its_payloads() {
    let f = fixture(2);
    let mut b = Bundle::open(&f.bundle, &trusted(&f.key)).unwrap();
    assert_eq!(b.manifest(), &f.manifest);
    assert_eq!(b.signed_by(), [f.key.id()]);
    b.verify_payloads().unwrap();
    assert!(b.payloads_verified());
    assert_eq!(b.cmdline_args().unwrap(), ["console=ttyS0", "panic=10"]);
    let mut kernel = Vec::new();
    let mut r = b.payload(Payload::Kernel).unwrap();
    r.read_to_end(&mut kernel).unwrap();
    r.finish().unwrap();
    assert_eq!(kernel, std::fs::read(f.dir.path().join("vmlinuz")).unwrap());
    let len = std::fs::metadata(&f.bundle).unwrap().len();
    assert_eq!(
        len % 4096,
        (3 * 4096 + 100) % 4096,
        "the file ends with the root"
    );
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn base(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    let m = u32::from_le_bytes(b[12..16].try_into().unwrap()) as u64;
    let s = u32::from_le_bytes(b[16..20].try_into().unwrap()) as u64;
    (24 + m + s).next_multiple_of(4096)
}

#[test]
fn a_flipped_byte_in_any_payload_is_found_before_use() {
    for which in Payload::ALL {
        let f = fixture(2);
        let info = f.manifest.payload(which);
        flip(&f.bundle, base(&f.bundle) + info.offset + info.size / 2);
        // The manifest still verifies; the payload does not.
        let mut b = Bundle::open(&f.bundle, &trusted(&f.key)).unwrap();
        let err = b.verify_payloads().unwrap_err().to_string();
        assert!(
            err.contains(&format!("payload {which}: sha256 is")) && err.contains(&info.sha256),
            "{which}: {err}"
        );
        assert!(!b.payloads_verified());
    }
}

#[test]
fn a_flipped_byte_in_the_manifest_or_signature_fails_the_signature() {
    let f = fixture(2);
    let bytes = std::fs::read(&f.bundle).unwrap();
    let m = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as u64;
    // `rollback_index` sits in the manifest; change its digit, keep the JSON valid.
    let at = bytes
        .windows(18)
        .position(|w| w == b"\"rollback_index\":2")
        .unwrap() as u64
        + 17;
    flip(&f.bundle, at); // '2' -> '3'
    let err = Bundle::open(&f.bundle, &trusted(&f.key))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest signature") && err.contains("does not verify"),
        "{err}"
    );

    let f = fixture(2);
    // A byte inside the base64 signature.
    let sig_at = 24 + m + 40;
    flip(&f.bundle, sig_at);
    let err = Bundle::open(&f.bundle, &trusted(&f.key))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest signature") || err.contains("signature block"),
        "{err}"
    );
}

#[test]
fn bad_headers_truncation_padding_and_unknown_keys_are_refused_with_reasons() {
    let f = fixture(2);
    let keys = trusted(&f.key);
    let open = |p: &Path| Bundle::open(p, &keys).unwrap_err().to_string();

    let other = key();
    let err = Bundle::open(&f.bundle, &TrustedKeys::new([other.public_key()]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("signed only by unknown key(s)") && err.contains(&f.key.id().to_string()),
        "{err}"
    );

    let bytes = std::fs::read(&f.bundle).unwrap();
    let t = f.dir.path().join("t");
    for (cut, want) in [
        (bytes.len() - 1, "truncated or extended"),
        (10, "inside the header"),
        (base(&f.bundle) as usize, "truncated or extended"),
    ] {
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let err = open(&t);
        assert!(err.contains(want), "cut at {cut}: {err}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&t, &longer).unwrap();
    assert!(open(&t).contains("truncated or extended"));

    let mut bad = bytes.clone();
    bad[0] = b'X';
    std::fs::write(&t, &bad).unwrap();
    assert!(open(&t).contains("bad magic"));

    let mut bad = bytes.clone();
    let pad = base(&f.bundle) as usize - 1;
    bad[pad] = 1;
    std::fs::write(&t, &bad).unwrap();
    assert!(open(&t).contains(&format!("padding byte at offset {pad} is not zero")));

    let mut bad = bytes.clone();
    bad[12..16].copy_from_slice(&(1u32 << 30).to_le_bytes());
    std::fs::write(&t, &bad).unwrap();
    assert!(open(&t).contains("manifest length 1073741824"));
}

#[test]
fn the_manifest_check_names_what_is_wrong() {
    let f = fixture(1);
    let mut m = f.manifest.clone();
    m.payloads.cmdline.offset = 4096 - 1;
    assert!(m
        .check()
        .unwrap_err()
        .contains("payload cmdline at offset 4095"));
    let mut m = f.manifest.clone();
    m.verity.total_bytes += 1;
    assert!(m.check().unwrap_err().contains("verity covers"));
    let mut m = f.manifest.clone();
    m.os_version = "1.0 beta".into();
    assert!(m.check().unwrap_err().contains("os_version \"1.0 beta\""));
    let mut m = f.manifest.clone();
    m.payloads.kernel.sha256 = "x".into();
    assert!(m.check().unwrap_err().contains("payload kernel sha256"));
}

#[test]
fn command_lines_must_reboot_on_panic_and_leave_the_slot_arguments_alone() {
    assert_eq!(
        parse_cmdline(b"console=ttyS0 panic=5\n").unwrap(),
        ["console=ttyS0", "panic=5"]
    );
    for (line, want) in [
        ("console=ttyS0", "no panic=N"),
        ("panic=0", "no panic=N"),
        ("panic=-1", "no panic=N"),
        ("panic=5 root=/dev/sda1", "sets \"root=/dev/sda1\""),
        ("panic=5 dm-mod.create=x", "sets \"dm-mod.create=x\""),
        ("panic=5 gantry.slot=A", "sets \"gantry.slot=A\""),
        ("panic=5 ro", "sets \"ro\""),
        ("panic=5\tquiet\u{7}", "control character"),
    ] {
        let err = parse_cmdline(line.as_bytes()).unwrap_err();
        assert!(err.contains(want), "{line:?}: {err}");
    }
    assert!(
        parse_cmdline(b"panic=5 robust=1").is_ok(),
        "only the exact word ro is owned"
    );
}

#[test]
fn writing_refuses_a_command_line_that_would_not_boot_safely() {
    let f = fixture(1);
    let err = write(
        &f.dir.path().join("x.bundle"),
        &BundleMeta {
            os_version: "1".into(),
            rollback_index: 1,
            arch: ARCH.into(),
            board: "generic".into(),
            verity: verity_for(3 * 4096 + 100),
        },
        &f.dir.path().join("vmlinuz"),
        &["quiet".into()],
        &f.dir.path().join("root.img"),
        &[&f.key],
    )
    .unwrap_err();
    assert!(err.to_string().contains("no panic=N"), "{err}");
    assert!(!f.dir.path().join("x.bundle").exists());
    let _ = PublicKey::parse(&f.key.public_key().to_line(), Path::new("k")).unwrap();
}

/// A payload offset near `u64::MAX` overflowed `offset + size` in the check (a panic with
/// overflow checks, a wrapped end without), and so did verity block numbers near it.
/// Only a signed manifest reaches the check, but the check is what makes its numbers safe
/// to add up afterwards (`payload_span`, the file length, the dm table).
#[test]
fn the_manifest_check_refuses_numbers_that_overflow() {
    let f = fixture(1);
    let mut m = f.manifest.clone();
    m.payloads.root.offset = u64::MAX - 4095;
    assert!(
        m.check().unwrap_err().contains("payload root"),
        "{:?}",
        m.check()
    );
    let mut m = f.manifest.clone();
    m.verity.hash_offset_blocks = u64::MAX / 2;
    m.verity.data_blocks = 2;
    assert!(m.check().unwrap_err().contains("verity"), "{:?}", m.check());
}
