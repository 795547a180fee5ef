//! The machine id: 128 bits that name this machine for as long as its DATA partition lives,
//! written as 32 lower-case hex digits (systemd's `machine-id(5)` format). Fleet work keys
//! on it: a node's place in a rollout's waves, its lease holder id in etcd.
//!
//! Determined once per boot, after `/var` is mounted, the way systemd does it:
//!
//! 1. the id kept on DATA ([`PERSISTED`]), when it is there and well formed. A file that is
//!    there but is not 32 lower-case hex digits is reported and replaced, never trusted;
//! 2. else the SMBIOS system UUID ([`SMBIOS_UUID`], else read from the raw tables in
//!    [`DMI_TABLE`] as `dmidecode` does; QEMU's `-uuid`, a cloud's instance UUID), unless it is malformed or one of the placeholders firmware ships (all zeros,
//!    all `f`s);
//! 3. else 128 random bits (`getrandom(2)`), marked as a version 4 UUID as systemd does.
//!
//! An id that did not come from DATA is written there with [`write_atomic`] (temporary file,
//! fsync, rename, fsync of the directory), so a power cut leaves the old file or the new,
//! and the next boot finds the same id even if the UUID changes (a VM cloned onto new
//! hardware keeps its identity only through its disk, as with systemd). When `/var` is a
//! tmpfs the id lives for this boot only.
//!
//! The running machine shows it in three places: the [`MACHINE_ID_LINE`] (and the ready
//! line's `machine_id=`), the API's `GET /v1/status`, and [`RUN_MACHINE_ID`]. The root is
//! read-only erofs, so the image's `/etc/machine-id` is a symlink to [`RUN_MACHINE_ID`]
//! (made by the image build, like `/etc/resolv.conf`): programs that read
//! `/etc/machine-id` find it there.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use gantry_durable::write_atomic;

/// Where the id is kept, on DATA.
pub const PERSISTED: &str = "/var/lib/gantry/machine-id";
/// The SMBIOS system UUID as the kernel shows it (with `CONFIG_DMIID`).
pub const SMBIOS_UUID: &str = "/sys/class/dmi/id/product_uuid";
/// The raw SMBIOS tables (any kernel with `CONFIG_DMI`), read when [`SMBIOS_UUID`] is
/// not there: Gantry's kernel has no `CONFIG_DMIID`.
pub const DMI_ENTRY_POINT: &str = "/sys/firmware/dmi/tables/smbios_entry_point";
pub const DMI_TABLE: &str = "/sys/firmware/dmi/tables/DMI";
pub use gantry_contract::{MACHINE_ID_LINE, RUN_MACHINE_ID};

/// 128 bits, shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId([u8; 16]);

impl MachineId {
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        MachineId(bytes)
    }

    /// A machine-id file's content: exactly 32 lower-case hex digits, then at most one
    /// newline. Anything else (upper case, dashes, a short or torn write) is refused.
    pub fn parse(text: &str) -> Result<Self, IdFormat> {
        let hex = text.strip_suffix('\n').unwrap_or(text);
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if hex.len() != 32 || !hex.bytes().all(|b| lower_hex(&b)) {
            return Err(IdFormat {
                value: text.chars().take(64).collect(),
            });
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| IdFormat {
                value: text.to_owned(),
            })?;
        }
        Ok(MachineId(bytes))
    }

    /// An SMBIOS UUID as `/sys/class/dmi/id/product_uuid` shows it (`8-4-4-4-12` hex
    /// digits, either case); `None` for a malformed one and for the all-zero and all-`f`
    /// placeholders, which name no machine in particular.
    pub fn from_smbios_uuid(text: &str) -> Option<Self> {
        let text = text.trim();
        let groups: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return None;
        }
        let id = MachineId::parse(&groups.concat().to_ascii_lowercase()).ok()?;
        if id.0 == [0; 16] || id.0 == [0xff; 16] {
            return None;
        }
        Some(id)
    }

    /// Random bits as a version 4, variant 1 UUID (what systemd writes).
    pub fn from_random(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        MachineId(bytes)
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineId({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not 32 lower-case hex digits")]
pub struct IdFormat {
    pub value: String,
}

/// Where this boot's id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Persisted,
    Smbios,
    Random,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Persisted => "persisted",
            Source::Smbios => "smbios",
            Source::Random => "random",
        }
    }
}

/// Something that went wrong on the way; the boot goes on with the id it has.
#[derive(Debug, thiserror::Error)]
pub enum MachineIdError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt, replacing it: {source}")]
    Corrupt { path: PathBuf, source: IdFormat },
    #[error("ignoring the SMBIOS UUID {value:?} in {path}: malformed or a placeholder")]
    Smbios { path: PathBuf, value: String },
    #[error("no random bits ({reason}); the id is derived from the clock")]
    Random { reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The files [`determine`] reads and writes; [`Paths::for_pid1`] has the real ones.
#[derive(Debug, Clone)]
pub struct Paths {
    pub persisted: PathBuf,
    pub smbios_uuid: PathBuf,
    pub dmi_entry_point: PathBuf,
    pub dmi_table: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    pub fn for_pid1() -> Self {
        Paths {
            persisted: PERSISTED.into(),
            smbios_uuid: SMBIOS_UUID.into(),
            dmi_entry_point: DMI_ENTRY_POINT.into(),
            dmi_table: DMI_TABLE.into(),
            run: RUN_MACHINE_ID.into(),
        }
    }
}

/// What [`determine`] found.
#[derive(Debug)]
pub struct Determined {
    pub id: MachineId,
    pub source: Source,
    /// Every problem met, in order, for the log.
    pub problems: Vec<MachineIdError>,
}

/// This boot's machine id (see the module docs for the order), kept on DATA and published
/// at `paths.run`. `random` gives 16 random bytes; it is asked only when neither DATA nor
/// SMBIOS has an id. Never fails: problems are returned for the log.
pub fn determine(paths: &Paths, random: impl FnOnce() -> Result<[u8; 16], String>) -> Determined {
    let mut problems = Vec::new();
    let (id, source) = match read_persisted(&paths.persisted, &mut problems) {
        Some(id) => (id, Source::Persisted),
        None => {
            let found = match read_smbios(paths, &mut problems) {
                Some(id) => (id, Source::Smbios),
                None => (fresh_random(random, &mut problems), Source::Random),
            };
            if let Some(dir) = paths.persisted.parent() {
                // /var/lib/gantry exists after var::prepare; a fresh tmpfs /var may lack it.
                let _ = std::fs::create_dir_all(dir);
            }
            write(&paths.persisted, found.0, &mut problems);
            found
        }
    };
    write(&paths.run, id, &mut problems);
    Determined {
        id,
        source,
        problems,
    }
}

fn read_persisted(path: &Path, problems: &mut Vec<MachineIdError>) -> Option<MachineId> {
    match std::fs::read_to_string(path) {
        Ok(text) => match MachineId::parse(&text) {
            Ok(id) => Some(id),
            Err(source) => {
                problems.push(MachineIdError::Corrupt {
                    path: path.to_owned(),
                    source,
                });
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // Not UTF-8 is corrupt too.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            problems.push(MachineIdError::Corrupt {
                path: path.to_owned(),
                source: IdFormat {
                    value: "(not text)".into(),
                },
            });
            None
        }
        Err(source) => {
            problems.push(MachineIdError::Read {
                path: path.to_owned(),
                source,
            });
            None
        }
    }
}

fn read_smbios(paths: &Paths, problems: &mut Vec<MachineIdError>) -> Option<MachineId> {
    // Machines without DMI (some clouds, non-x86 boards) have neither file: not a problem.
    let (path, text) = match std::fs::read_to_string(&paths.smbios_uuid) {
        Ok(text) => (&paths.smbios_uuid, text),
        Err(_) => {
            let entry = std::fs::read(&paths.dmi_entry_point).ok()?;
            let table = std::fs::read(&paths.dmi_table).ok()?;
            (&paths.dmi_table, uuid_from_tables(&entry, &table)?)
        }
    };
    let id = MachineId::from_smbios_uuid(&text);
    if id.is_none() {
        problems.push(MachineIdError::Smbios {
            path: path.to_owned(),
            value: text.trim().chars().take(64).collect(),
        });
    }
    id
}

/// The system UUID (SMBIOS type 1, offset 8) from the raw tables, as text the way the
/// kernel's `product_uuid` shows it: from SMBIOS 2.6 on, the first three fields are stored
/// little-endian. `None` when the tables hold no type 1 structure with a UUID.
pub fn uuid_from_tables(entry_point: &[u8], table: &[u8]) -> Option<String> {
    let version = if entry_point.starts_with(b"_SM3_") {
        (*entry_point.get(7)?, *entry_point.get(8)?)
    } else if entry_point.starts_with(b"_SM_") {
        (*entry_point.get(6)?, *entry_point.get(7)?)
    } else {
        return None;
    };
    let mut at = 0usize;
    while at + 4 <= table.len() {
        let (kind, len) = (table[at], usize::from(table[at + 1]));
        if len < 4 {
            return None;
        }
        if kind == 1 && len >= 0x19 {
            let mut u: [u8; 16] = table.get(at + 8..at + 24)?.try_into().ok()?;
            if version >= (2, 6) {
                u[0..4].reverse();
                u[4..6].reverse();
                u[6..8].reverse();
            }
            let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
            return Some(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ));
        }
        if kind == 127 {
            return None;
        }
        // The strings after the formatted area end with two NULs.
        let strings = at + len;
        let end = table.get(strings..)?.windows(2).position(|w| w == [0, 0])?;
        at = strings + end + 2;
    }
    None
}

fn fresh_random(
    random: impl FnOnce() -> Result<[u8; 16], String>,
    problems: &mut Vec<MachineIdError>,
) -> MachineId {
    let bytes = random().unwrap_or_else(|reason| {
        problems.push(MachineIdError::Random { reason });
        // Unique enough for one machine's lifetime; getrandom does not fail on Linux ≥ 3.17
        // once the pool is initialised, so this is a last resort.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &nanos.to_le_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest.as_ref()[..16]);
        b
    });
    MachineId::from_random(bytes)
}

fn write(path: &Path, id: MachineId, problems: &mut Vec<MachineIdError>) {
    let text = format!("{id}\n");
    if let Err(source) = write_atomic(path, text.as_bytes()) {
        problems.push(MachineIdError::Write {
            path: path.to_owned(),
            source,
        });
    }
}

/// 16 bytes from `getrandom(2)` (through ring's `SystemRandom`).
pub fn getrandom() -> Result<[u8; 16], String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "getrandom failed".to_owned())?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8\n";
    const FROM_UUID: &str = "6ba7b8109dad11d180b400c04fd430c8";

    fn paths(dir: &Path) -> Paths {
        std::fs::create_dir_all(dir.join("var/lib/gantry")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        Paths {
            persisted: dir.join("var/lib/gantry/machine-id"),
            smbios_uuid: dir.join("product_uuid"),
            dmi_entry_point: dir.join("smbios_entry_point"),
            dmi_table: dir.join("DMI"),
            run: dir.join("run/machine-id"),
        }
    }

    fn no_random() -> Result<[u8; 16], String> {
        panic!("random bits asked for")
    }

    #[test]
    fn parses_only_32_lower_case_hex_digits() {
        let id = MachineId::parse("0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
        assert!(MachineId::parse("0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdef\n\n",
            " 0123456789abcdef0123456789abcdef",
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        ] {
            assert!(MachineId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn smbios_uuids_become_ids_and_placeholders_do_not() {
        assert_eq!(
            MachineId::from_smbios_uuid(UUID).unwrap().to_string(),
            FROM_UUID
        );
        assert_eq!(
            MachineId::from_smbios_uuid(&UUID.to_ascii_uppercase())
                .unwrap()
                .to_string(),
            FROM_UUID
        );
        for bad in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "6ba7b8109dad11d180b400c04fd430c8",
            "6ba7b810-9dad-11d1-80b4-00c04fd430c",
            "6ba7b810-9dad-11d1-80b4-00c04fd430cz",
            "Not Settable",
            "",
        ] {
            assert_eq!(MachineId::from_smbios_uuid(bad), None, "{bad:?}");
        }
    }

    /// A type 0 structure with one string, then type 1 with the UUID of [`UUID`] as
    /// SMBIOS ≥ 2.6 stores it, then the end.
    fn tables() -> Vec<u8> {
        let mut t = vec![0u8, 4, 0, 0];
        t.extend(b"BIOS\0\0");
        let mut one = vec![1u8, 0x1b, 1, 0, 1, 2, 3, 4];
        one.extend([
            0x10, 0xb8, 0xa7, 0x6b, 0xad, 0x9d, 0xd1, 0x11, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4,
            0x30, 0xc8,
        ]);
        one.extend([6, 0, 0]);
        t.extend(one);
        t.extend(b"QEMU\0\0");
        t.extend([127u8, 4, 2, 0, 0, 0]);
        t
    }

    #[test]
    fn the_uuid_is_read_from_raw_smbios_tables() {
        let sm = |major, minor| {
            let mut e = b"_SM_\0\0".to_vec();
            e.extend([major, minor]);
            e
        };
        assert_eq!(
            uuid_from_tables(&sm(2, 8), &tables()).as_deref(),
            Some(UUID.trim())
        );
        let mut sm3 = b"_SM3_\0\0".to_vec();
        sm3.extend([3, 0]);
        assert_eq!(
            uuid_from_tables(&sm3, &tables()).as_deref(),
            Some(UUID.trim())
        );
        // Before 2.6 the bytes are in order.
        assert_eq!(
            uuid_from_tables(&sm(2, 4), &tables()).as_deref(),
            Some("10b8a76b-ad9d-d111-80b4-00c04fd430c8")
        );
        assert_eq!(uuid_from_tables(b"junk", &tables()), None);
        assert_eq!(uuid_from_tables(&sm(2, 8), &tables()[..10]), None);
        assert_eq!(uuid_from_tables(&sm(2, 8), &[127, 4, 0, 0, 0, 0]), None);

        // determine() uses them when the kernel has no product_uuid.
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.dmi_entry_point, sm(2, 8)).unwrap();
        std::fs::write(&p.dmi_table, tables()).unwrap();
        let d = determine(&p, no_random);
        assert_eq!(
            (d.id.to_string().as_str(), d.source),
            (FROM_UUID, Source::Smbios)
        );
    }

    #[test]
    fn random_ids_are_version_4_uuids() {
        let id = MachineId::from_random([0xff; 16]).to_string();
        assert_eq!(&id[12..13], "4");
        assert_eq!(&id[16..17], "b");
        assert_ne!(getrandom().unwrap(), getrandom().unwrap());
    }

    #[test]
    fn first_boot_takes_the_smbios_uuid_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.smbios_uuid, UUID).unwrap();
        let d = determine(&p, no_random);
        assert_eq!(
            (d.id.to_string().as_str(), d.source),
            (FROM_UUID, Source::Smbios)
        );
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let kept = format!("{FROM_UUID}\n");
        assert_eq!(std::fs::read_to_string(&p.persisted).unwrap(), kept);
        assert_eq!(std::fs::read_to_string(&p.run).unwrap(), kept);
    }

    #[test]
    fn a_kept_id_wins_over_a_new_smbios_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.persisted, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::write(&p.smbios_uuid, UUID).unwrap();
        let d = determine(&p, no_random);
        assert_eq!(d.source, Source::Persisted);
        assert_eq!(d.id.to_string(), "0123456789abcdef0123456789abcdef");
        assert_eq!(
            std::fs::read_to_string(&p.run).unwrap(),
            "0123456789abcdef0123456789abcdef\n"
        );
    }

    #[test]
    fn a_corrupt_kept_id_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.persisted, "0123456789abcdef01234").unwrap();
        std::fs::write(&p.smbios_uuid, UUID).unwrap();
        let d = determine(&p, no_random);
        assert_eq!(d.source, Source::Smbios);
        assert!(
            matches!(&d.problems[..], [MachineIdError::Corrupt { .. }]),
            "{:?}",
            d.problems
        );
        assert_eq!(
            std::fs::read_to_string(&p.persisted).unwrap(),
            format!("{FROM_UUID}\n")
        );
        // Binary garbage too.
        std::fs::write(&p.persisted, [0xffu8, 0xfe, 0]).unwrap();
        let d = determine(&p, no_random);
        assert_eq!(d.source, Source::Smbios);
        assert!(matches!(&d.problems[..], [MachineIdError::Corrupt { .. }]));
    }

    #[test]
    fn without_a_usable_uuid_the_id_is_random_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.smbios_uuid, "00000000-0000-0000-0000-000000000000\n").unwrap();
        let d = determine(&p, || Ok([7; 16]));
        assert_eq!(d.source, Source::Random);
        assert!(matches!(&d.problems[..], [MachineIdError::Smbios { .. }]));
        assert_eq!(d.id, MachineId::from_random([7; 16]));
        let again = determine(&p, no_random);
        assert_eq!((again.id, again.source), (d.id, Source::Persisted));
        // No DMI at all is not a problem worth a line.
        std::fs::remove_file(&p.smbios_uuid).unwrap();
        std::fs::remove_file(&p.persisted).unwrap();
        let d = determine(&p, || Err("no entropy".into()));
        assert_eq!(d.source, Source::Random);
        assert!(matches!(&d.problems[..], [MachineIdError::Random { .. }]));
    }

    #[test]
    fn an_unwritable_data_partition_still_gives_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = paths(dir.path());
        p.persisted = dir.path().join("no-such-dir/and-deeper/machine-id");
        std::fs::write(dir.path().join("no-such-dir"), "a file").unwrap();
        std::fs::write(&p.smbios_uuid, UUID).unwrap();
        let d = determine(&p, no_random);
        assert_eq!(d.id.to_string(), FROM_UUID);
        // Reading through a file as if it were a directory fails too (ENOTDIR).
        assert!(
            matches!(
                &d.problems[..],
                [MachineIdError::Read { .. }, MachineIdError::Write { .. }]
            ),
            "{:?}",
            d.problems
        );
        assert_eq!(
            std::fs::read_to_string(&p.run).unwrap(),
            format!("{FROM_UUID}\n")
        );
    }
}
