//! The install order and the tamper table: every refused bundle leaves the target slot,
//! the ESP and `grubenv` exactly as they were (hashed before and after).

use super::*;
use crate::bundle::tests::{fixture, key, verity_for, Fixture};
use crate::bundle::{write, BundleMeta};
use crate::grubenv::GrubEnv;

const TARGET_SIZE: u64 = 1 << 20;

struct Rig {
    f: Fixture,
    esp: Esp,
    target: Target,
    machine: Machine,
}

fn rig(rollback_index: u64) -> Rig {
    let f = fixture(rollback_index);
    let esp_dir = f.dir.path().join("esp/EFI/gantry");
    std::fs::create_dir_all(esp_dir.join("A")).unwrap();
    std::fs::write(
        esp_dir.join("A/boot.cfg"),
        "linux /EFI/gantry/A/vmlinuz-0\n",
    )
    .unwrap();
    let esp = Esp::new(&esp_dir);
    esp.write_env(&GrubEnv::initial(Slot::A)).unwrap();
    let device = f.dir.path().join("root-b.img");
    // Old contents of slot B: must survive any refused bundle.
    std::fs::write(
        &device,
        (0..TARGET_SIZE)
            .map(|i| (i * 7 % 253) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let target = Target {
        slot: Slot::B,
        device,
        size: TARGET_SIZE,
        partuuid: "d791a9c4-a17a-8e66-ad45-bf9d4e773398".into(),
    };
    let machine = Machine {
        running: Slot::A,
        release: Release {
            name: "gantry".into(),
            version: "0.1.0".into(),
            rollback_index: 1,
            board: "generic".into(),
        },
        running_root_hash: Some("99".repeat(32)),
        min_rollback_index: 1,
    };
    Rig {
        f,
        esp,
        target,
        machine,
    }
}

impl Rig {
    fn install(&self, bundle: &Path) -> Result<Installed, InstallError> {
        let keys = TrustedKeys::new([self.f.key.public_key()]);
        install(
            bundle,
            &keys,
            &self.machine,
            &self.target,
            &self.esp,
            3,
            &mut |_| {},
        )
    }

    /// Everything an install may change: the slot's bytes, every ESP file.
    fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            "slot".to_owned(),
            sha256(&std::fs::read(&self.target.device).unwrap()),
        )];
        let mut stack = vec![self.esp.dir().to_owned()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.display().to_string(), sha256(&std::fs::read(&p).unwrap())));
                }
            }
        }
        out.sort();
        out
    }
}

fn sha256(b: &[u8]) -> String {
    crate::hex::encode(ring::digest::digest(&SHA256, b).as_ref())
}

#[test]
fn an_install_writes_the_slot_then_the_boot_files_then_switches() {
    let r = rig(2);
    let mut steps = Vec::new();
    let keys = TrustedKeys::new([r.f.key.public_key()]);
    let done = install(
        &r.f.bundle,
        &keys,
        &r.machine,
        &r.target,
        &r.esp,
        3,
        &mut |s| steps.push(s),
    )
    .unwrap();
    assert_eq!(done.slot, Slot::B);
    assert_eq!(done.version, "0.2.0");
    let root = std::fs::read(r.f.dir.path().join("root.img")).unwrap();
    let slot = std::fs::read(&r.target.device).unwrap();
    assert_eq!(&slot[..root.len()], &root[..]);
    assert_eq!(
        slot.len() as u64,
        TARGET_SIZE,
        "the partition keeps its size"
    );
    assert_eq!(steps.first(), Some(&Step::Verified));
    assert_eq!(steps[1], Step::SlotCleared);
    assert_eq!(
        &steps[steps.len() - 3..],
        [Step::RootVerified, Step::BootFilesWritten, Step::Switched]
    );

    let env = r.esp.read_env().unwrap();
    assert_eq!(env.order().unwrap(), [Slot::B, Slot::A]);
    assert_eq!(
        env.slot(Slot::B).unwrap(),
        SlotState {
            good: false,
            tries: 3
        }
    );
    assert_eq!(env.slot(Slot::A).unwrap(), SlotState::GOOD);
    let cfg = std::fs::read_to_string(r.esp.dir().join("B/boot.cfg")).unwrap();
    assert!(cfg.contains("gantry.slot=B"), "{cfg}");
    assert!(
        cfg.contains(&format!("PARTUUID={}", r.target.partuuid)),
        "{cfg}"
    );
    assert!(cfg.contains("panic=10"), "{cfg}");
    assert!(
        cfg.contains(&"12".repeat(32)),
        "the verity root hash: {cfg}"
    );
}

/// One row of the tamper table: a name, how the bundle is made, what the error says.
type Case = (&'static str, Box<dyn Fn(&Rig) -> PathBuf>, &'static str);

fn flipped(r: &Rig, at: impl Fn(&[u8], &crate::bundle::Manifest) -> usize) -> PathBuf {
    let mut bytes = std::fs::read(&r.f.bundle).unwrap();
    let i = at(&bytes, &r.f.manifest);
    bytes[i] ^= 0x01;
    let out = r.f.dir.path().join("tampered.bundle");
    std::fs::write(&out, bytes).unwrap();
    out
}

fn payload_at(bytes: &[u8], m: &crate::bundle::Manifest, which: Payload) -> usize {
    let ml = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as u64;
    let sl = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as u64;
    let base = (24 + ml + sl).next_multiple_of(4096);
    let p = m.payload(which);
    (base + p.offset + p.size - 1) as usize
}

fn rebuilt(
    r: &Rig,
    edit: impl Fn(&mut BundleMeta),
    signer: Option<&crate::keys::SigningKey>,
) -> PathBuf {
    let mut meta = BundleMeta {
        os_version: "0.2.0".into(),
        rollback_index: 2,
        arch: ARCH.into(),
        board: "generic".into(),
        verity: verity_for(r.f.manifest.payloads.root.size),
    };
    edit(&mut meta);
    let out = r.f.dir.path().join("rebuilt.bundle");
    write(
        &out,
        &meta,
        &r.f.dir.path().join("vmlinuz"),
        &["console=ttyS0".into(), "panic=10".into()],
        &r.f.dir.path().join("root.img"),
        &[signer.unwrap_or(&r.f.key)],
    )
    .unwrap();
    out
}

#[test]
fn tamper_table_every_bad_bundle_is_refused_and_nothing_changes() {
    let cases: Vec<Case> = vec![
        (
            "flipped byte in kernel",
            Box::new(|r| flipped(r, |b, m| payload_at(b, m, Payload::Kernel))),
            "payload kernel: sha256 is",
        ),
        (
            "flipped byte in cmdline",
            Box::new(|r| flipped(r, |b, m| payload_at(b, m, Payload::Cmdline))),
            "payload cmdline: sha256 is",
        ),
        (
            "flipped byte in root",
            Box::new(|r| flipped(r, |b, m| payload_at(b, m, Payload::Root))),
            "payload root: sha256 is",
        ),
        (
            "flipped byte in manifest",
            Box::new(|r| {
                flipped(r, |b, _| {
                    b.windows(9).position(|w| w == b"\"0.2.0\",\"").unwrap() + 3
                })
            }),
            "manifest signature: signature by key",
        ),
        (
            "signed by an unknown key",
            Box::new(|r| rebuilt(r, |_| {}, Some(&key()))),
            "signed only by unknown key(s)",
        ),
        (
            "lower rollback index, valid signature",
            Box::new(|r| rebuilt(r, |m| m.rollback_index = 0, None)),
            "rollback index 0 is lower than 1",
        ),
        (
            "truncated by one byte",
            Box::new(|r| {
                let b = std::fs::read(&r.f.bundle).unwrap();
                let out = r.f.dir.path().join("short.bundle");
                std::fs::write(&out, &b[..b.len() - 1]).unwrap();
                out
            }),
            "truncated or extended",
        ),
        (
            "truncated inside the header",
            Box::new(|r| {
                let b = std::fs::read(&r.f.bundle).unwrap();
                let out = r.f.dir.path().join("stub.bundle");
                std::fs::write(&out, &b[..20]).unwrap();
                out
            }),
            "inside the header",
        ),
        (
            "other architecture",
            Box::new(|r| rebuilt(r, |m| m.arch = "aarch64".into(), None)),
            "for architecture aarch64",
        ),
        (
            "other board",
            Box::new(|r| rebuilt(r, |m| m.board = "rpi4".into(), None)),
            "for board rpi4",
        ),
        (
            "the running root",
            Box::new(|r| rebuilt(r, |m| m.verity.root_hash = "99".repeat(32), None)),
            "holds the root that slot A runs now",
        ),
        (
            "root larger than the slot",
            Box::new(|r| {
                let big = r.f.dir.path().join("root.img");
                std::fs::write(&big, vec![1u8; TARGET_SIZE as usize + 4096]).unwrap();
                rebuilt(r, |m| m.verity = verity_for(TARGET_SIZE + 4096), None)
            }),
            "slot B",
        ),
    ];
    let mut table = String::from("| tampering | refused with |\n| --- | --- |\n");
    for (name, make, want) in cases {
        let r = rig(2);
        let bundle = make(&r);
        let before = r.snapshot();
        let err = r.install(&bundle).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(r.snapshot(), before, "{name} changed the slot or the ESP");
        table.push_str(&format!("| {name} | {err} |\n"));
    }
    // The running slot as the target.
    let mut r = rig(2);
    r.target.slot = Slot::A;
    let before = r.snapshot();
    let err = r.install(&r.f.bundle.clone()).unwrap_err().to_string();
    assert!(err.contains("slot A is the running slot"), "{err}");
    assert_eq!(r.snapshot(), before);
    table.push_str(&format!("| target is the running slot | {err} |\n"));
    eprintln!("{table}");
}

#[test]
fn a_slot_that_reads_back_wrong_stays_out_of_the_boot_order() {
    // A target that drops writes: /dev/full would fail the write; a FIFO can't be read
    // back. Use a file the install cannot read back correctly: a bundle whose root
    // changes between verify and stream is caught by the stream's own hash instead.
    let r = rig(2);
    let keys = TrustedKeys::new([r.f.key.public_key()]);
    let base = {
        let b = std::fs::read(&r.f.bundle).unwrap();
        let ml = u32::from_le_bytes(b[12..16].try_into().unwrap()) as u64;
        let sl = u32::from_le_bytes(b[16..20].try_into().unwrap()) as u64;
        (24 + ml + sl).next_multiple_of(4096)
    };
    let root_at = base + r.f.manifest.payloads.root.offset;
    let bundle_path = r.f.bundle.clone();
    let mut flipped_once = false;
    let err = install(
        &r.f.bundle,
        &keys,
        &r.machine,
        &r.target,
        &r.esp,
        3,
        &mut |s| {
            // Right after verification, the bundle on disk is altered (a second writer).
            if s == Step::SlotCleared && !flipped_once {
                flipped_once = true;
                let mut f = File::options()
                    .read(true)
                    .write(true)
                    .open(&bundle_path)
                    .unwrap();
                f.seek(SeekFrom::Start(root_at + 10)).unwrap();
                f.write_all(&[0xee]).unwrap();
            }
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("payload root: sha256 is"), "{err}");
    let env = r.esp.read_env().unwrap();
    assert_eq!(env.slot(Slot::B).unwrap(), SlotState::EMPTY);
    assert_eq!(env.order().unwrap(), [Slot::A, Slot::B]);
    assert!(!r.esp.dir().join("B/boot.cfg").exists());
}
