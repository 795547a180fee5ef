//! The GPT disk: ESP, ROOT-A, ROOT-B and DATA at 1 MiB boundaries, typed with the
//! Discoverable Partitions Specification GUIDs, written by `sfdisk` on a plain file, filled
//! in place, and converted to qcow2 by `qemu-img`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::fsio::{AtPath, PathError};
use crate::tool::{self, ToolError};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// Partition type GUIDs (Discoverable Partitions Specification).
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
pub const TYPE_VAR: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("partition {name}: {bytes} bytes of content do not fit in {size} bytes")]
    TooBig { name: String, bytes: u64, size: u64 },
}

/// One partition of the layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    pub name: String,
    pub type_guid: String,
    pub uuid: String,
    pub offset: u64,
    pub size: u64,
}

/// Lays partitions out back to back from 1 MiB; returns them and the disk size, which
/// leaves 1 MiB at the end for the backup GPT.
pub fn layout(parts: &[(&str, &str, String, u64)]) -> (Vec<Partition>, u64) {
    let mut offset = MIB;
    let mut out = Vec::new();
    for (name, type_guid, uuid, mib) in parts {
        out.push(Partition {
            name: (*name).to_owned(),
            type_guid: (*type_guid).to_owned(),
            uuid: uuid.clone(),
            offset,
            size: mib * MIB,
        });
        offset += mib * MIB;
    }
    (out, offset + MIB)
}

/// The `sfdisk` script for the layout.
pub fn sfdisk_script(disk_guid: &str, parts: &[Partition], disk_size: u64) -> String {
    let mut s = format!(
        "label: gpt\nlabel-id: {disk_guid}\nunit: sectors\nsector-size: {SECTOR}\n\
         first-lba: {}\nlast-lba: {}\n\n",
        MIB / SECTOR,
        (disk_size - MIB) / SECTOR - 1
    );
    for p in parts {
        s.push_str(&format!(
            "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
            p.offset / SECTOR,
            p.size / SECTOR,
            p.type_guid,
            p.uuid,
            p.name
        ));
    }
    s
}

/// Writes the disk: partition table, then each partition's content (`None` leaves it empty).
pub fn assemble(
    out: &Path,
    disk_guid: &str,
    parts: &[Partition],
    disk_size: u64,
    contents: &[Option<&Path>],
) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(out);
    File::create(out)
        .and_then(|f| f.set_len(disk_size))
        .at(out)?;
    tool::SFDISK
        .cmd()
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg("--quiet")
        .arg(out)
        .run_with_stdin(Some(sfdisk_script(disk_guid, parts, disk_size).as_bytes()))?;
    let mut disk = File::options().write(true).open(out).at(out)?;
    for (part, content) in parts.iter().zip(contents) {
        let Some(src) = content else { continue };
        let len = std::fs::metadata(src).at(src)?.len();
        if len > part.size {
            return Err(DiskError::TooBig {
                name: part.name.clone(),
                bytes: len,
                size: part.size,
            });
        }
        let mut f = File::open(src).at(src)?;
        copy_sparse(&mut f, &mut disk, part.offset).at(out)?;
    }
    disk.sync_all().at(out)?;
    Ok(())
}

/// Copies `src` into `dst` at `offset`, seeking over all-zero blocks so that the raw image
/// stays sparse (the file starts as a hole, so skipped blocks read as zeros).
fn copy_sparse(src: &mut File, dst: &mut File, offset: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = offset;
    loop {
        let n = read_full(src, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Makes the DATA file system: ext4 with a fixed UUID, hash seed and time.
pub fn mkfs_data(out: &Path, uuid: &str, size_mib: u64, epoch: u64) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(out);
    tool::MKFS_EXT4
        .cmd()
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .arg("-q")
        .arg("-F")
        .arg("-L")
        .arg("DATA")
        .arg("-U")
        .arg(uuid)
        .arg("-E")
        .arg(format!("hash_seed={uuid},root_owner=0:0"))
        .arg("-b")
        .arg("4096")
        .arg(out)
        .arg(format!("{size_mib}M"))
        .run()?;
    Ok(())
}

/// Converts the raw image to a compressed qcow2.
pub fn to_qcow2(raw: &Path, out: &Path) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(out);
    tool::QEMU_IMG
        .cmd()
        .arg("convert")
        .arg("-c")
        .arg("-f")
        .arg("raw")
        .arg("-O")
        .arg("qcow2")
        .arg(raw)
        .arg(out)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_mib_aligned_and_leave_room_for_the_backup_gpt() {
        let (parts, size) = layout(&[
            ("ESP", TYPE_ESP, "u1".into(), 64),
            ("ROOT-A", TYPE_ROOT_X86_64, "u2".into(), 128),
        ]);
        assert_eq!(parts[0].offset, MIB);
        assert_eq!(parts[1].offset, 65 * MIB);
        assert_eq!(size, (1 + 64 + 128 + 1) * MIB);
        let script = sfdisk_script("g", &parts, size);
        assert!(script.contains("start=2048, size=131072, type=C12A7328"));
        assert!(script.contains("start=133120, size=262144, type=4F68BCE3"));
        assert!(script.contains("last-lba: 395263"));
    }

    #[test]
    fn sfdisk_writes_the_layout_and_contents_land_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (parts, size) = layout(&[
            (
                "ESP",
                TYPE_ESP,
                "11111111-1111-4111-8111-111111111111".into(),
                2,
            ),
            (
                "DATA",
                TYPE_VAR,
                "22222222-2222-4222-8222-222222222222".into(),
                2,
            ),
        ]);
        let content = dir.path().join("c");
        std::fs::write(&content, b"gantry-part").unwrap();
        let img = dir.path().join("d.img");
        assemble(
            &img,
            "33333333-3333-4333-8333-333333333333",
            &parts,
            size,
            &[None, Some(&content)],
        )
        .unwrap();
        let dump = tool::SFDISK.cmd().arg("--dump").arg(&img).run().unwrap();
        assert!(
            dump.contains("label-id: 33333333-3333-4333-8333-333333333333"),
            "{dump}"
        );
        assert!(
            dump.contains("uuid=22222222-2222-4222-8222-222222222222, name=\"DATA\""),
            "{dump}"
        );
        let bytes = std::fs::read(&img).unwrap();
        let at = usize::try_from(parts[1].offset).unwrap();
        assert_eq!(&bytes[at..at + 11], b"gantry-part");
    }
}
