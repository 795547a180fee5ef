//! Direct-kernel boot (`cluster up --fast`): QEMU loads the slot's kernel itself (`-kernel`,
//! `-append`), skipping OVMF and GRUB, which are most of a boot under TCG.
//!
//! What is booted is read out of the disk the VM will run on (a node's overlay, so a node
//! that installed an update is read as it is now), without root and without mounting: the
//! GPT's first sectors and then the ESP are copied out with `qemu-img dd` (any image format),
//! and the files are read off the ESP copy with mtools' `mcopy`:
//!
//! - `EFI/gantry/grubenv` picks the slot as GRUB's boot script would: the first slot in
//!   `gantry_order` that is good or has tries left (else the first in the order, else A);
//! - that slot's `boot.cfg` gives the kernel's path on the ESP and the command line, the
//!   same words GRUB would pass, so the root is opened through dm-verity with the slot's
//!   root hash exactly as in a full boot.
//!
//! **Boot counting.** This path spends no try: grubenv is read, never written. A slot on
//! trial is booted at every start until PID 1 marks it good or the updater changes the
//! order; GRUB's fallback after spent tries is not exercised. A guest reboot restarts the
//! same kernel with the same command line (QEMU keeps `-kernel` across resets), so a slot
//! switch takes effect only at the next `cluster start`, which reads the disk again.
//! Clusters that test updates, rollback or the boot chain boot without `--fast`.

use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_boot::esp::PREFIX;
use gantry_boot::grubenv::GrubEnv;
use gantry_boot::Slot;

/// The ESP's GPT partition name, as the image build writes it.
pub const ESP_NAME: &str = "ESP";
const SECTOR: u64 = 512;
/// The sectors that hold the protective MBR, the GPT header and 128 entries of 128 bytes.
const GPT_SECTORS: u64 = 34;

/// A kernel and its command line, for QEMU's `-kernel` and `-append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub append: String,
    /// The slot they are from.
    pub slot: Slot,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectBootError {
    #[error("cannot run {tool} (apt-get install {package}): {source}")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Tool { command: String, stderr: String },
    #[error("{image}: {reason}")]
    Gpt { image: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Esp { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the kernel and command line GRUB would boot now from `disk` (raw or qcow2,
/// by its extension); the kernel and the copies it needed go into `work`.
pub fn from_disk(disk: &Path, work: &Path) -> Result<DirectKernel, DirectBootError> {
    std::fs::create_dir_all(work).map_err(io(work))?;
    let format = crate::config::image_format(disk);
    let gpt = work.join("gpt.raw");
    dd(disk, format, &gpt, SECTOR, 0, GPT_SECTORS)?;
    let bytes = std::fs::read(&gpt).map_err(io(&gpt))?;
    let (first, sectors) = esp_extent(&bytes).map_err(|reason| DirectBootError::Gpt {
        image: disk.to_owned(),
        reason,
    })?;
    let esp = work.join("esp.raw");
    // Whole MiB blocks when the partition is MiB-aligned (it is in Gantry's images): far
    // fewer reads than sector by sector.
    let mib = (1 << 20) / SECTOR;
    if first % mib == 0 && sectors % mib == 0 {
        dd(disk, format, &esp, SECTOR * mib, first / mib, sectors / mib)?;
    } else {
        dd(disk, format, &esp, SECTOR, first, sectors)?;
    }
    let env_file = work.join("grubenv");
    mcopy(&esp, &format!("{PREFIX}/grubenv"), &env_file)?;
    let block = std::fs::read(&env_file).map_err(io(&env_file))?;
    let env = GrubEnv::parse(&block).map_err(|e| DirectBootError::Esp {
        path: format!("{PREFIX}/grubenv"),
        reason: e.to_string(),
    })?;
    let slot = pick_slot(&env);
    let cfg_on_esp = format!("{PREFIX}/{slot}/boot.cfg");
    let cfg_file = work.join("boot.cfg");
    mcopy(&esp, &cfg_on_esp, &cfg_file)?;
    let text = std::fs::read_to_string(&cfg_file).map_err(io(&cfg_file))?;
    let (kernel_on_esp, args) = parse_boot_cfg(&text).map_err(|reason| DirectBootError::Esp {
        path: cfg_on_esp.clone(),
        reason,
    })?;
    let kernel = work.join("vmlinuz");
    mcopy(&esp, &kernel_on_esp, &kernel)?;
    // The ESP copy is as big as the ESP; only the kernel is needed from here on.
    let _ = std::fs::remove_file(&esp);
    Ok(DirectKernel {
        kernel,
        append: kernel_cmdline(&args),
        slot,
    })
}

/// The ESP's first sector and length in sectors, from the disk's first [`GPT_SECTORS`].
pub fn esp_extent(disk_start: &[u8]) -> Result<(u64, u64), String> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            disk_start.get(o..o + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            disk_start.get(o..o + 8)?.try_into().ok()?,
        ))
    };
    let header = SECTOR as usize;
    if disk_start.get(header..header + 8) != Some(b"EFI PART") {
        return Err("no GPT header in sector 1".into());
    }
    let (Some(entries_lba), Some(count), Some(size)) = (
        u64_at(header + 72),
        u32_at(header + 80),
        u32_at(header + 84),
    ) else {
        return Err("truncated GPT header".into());
    };
    let size = size as usize;
    if size < 128 {
        return Err(format!("GPT entry size {size} is below 128"));
    }
    for i in 0..count as usize {
        let Some(start) = usize::try_from(entries_lba)
            .ok()
            .and_then(|lba| lba.checked_mul(SECTOR as usize))
            .and_then(|o| o.checked_add(i * size))
        else {
            break;
        };
        let Some(entry) = disk_start.get(start..start + 128) else {
            break;
        };
        let units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        if String::from_utf16_lossy(&units) == ESP_NAME {
            let (first, last) = (u64_at(start + 32), u64_at(start + 40));
            return match (first, last) {
                (Some(f), Some(l)) if l >= f => Ok((f, l - f + 1)),
                _ => Err("the ESP's entry has a bad extent".into()),
            };
        }
    }
    Err(format!(
        "no partition named {ESP_NAME} in the first {GPT_SECTORS} sectors"
    ))
}

/// The slot GRUB's boot script boots (see the module docs), without spending a try.
pub fn pick_slot(env: &GrubEnv) -> Slot {
    let order = env.order().unwrap_or_default();
    order
        .iter()
        .copied()
        .find(|&s| env.slot(s).is_ok_and(|st| st.bootable()))
        .or_else(|| order.first().copied())
        .unwrap_or(Slot::A)
}

/// A `boot.cfg`'s `linux` line: the kernel's path on the ESP and its arguments, with
/// GRUB's single quotes (the only quoting `slot_config` writes) undone.
pub fn parse_boot_cfg(text: &str) -> Result<(String, Vec<String>), String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("linux "))
        .ok_or("no `linux` line")?;
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line["linux ".len()..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated quote".into()),
                    }
                }
            }
            '\\' => {
                let next = chars.next().ok_or("a `\\` at the end of the line")?;
                word.get_or_insert_with(String::new).push(next);
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("the `linux` line names no kernel".into());
    }
    let kernel = words.remove(0);
    if !kernel.starts_with(PREFIX) {
        return Err(format!("kernel {kernel:?} is not under {PREFIX}"));
    }
    Ok((kernel, words))
}

/// The command line GRUB hands the kernel for `args`: a word with a space is wrapped in
/// double quotes (with `"` and `\` escaped), which the kernel's parser reads back as one
/// parameter (`dm-mod.create=` has spaces).
pub fn kernel_cmdline(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn dd(
    disk: &Path,
    format: &str,
    out: &Path,
    bs: u64,
    skip: u64,
    count: u64,
) -> Result<(), DirectBootError> {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new("qemu-img");
    cmd.args(["dd", "-f", format, "-O", "raw"])
        .arg(format!("bs={bs}"))
        .arg(format!("skip={skip}"))
        .arg(format!("count={count}"))
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", out.display()));
    run(cmd, "qemu-img", "qemu-utils")
}

fn mcopy(esp: &Path, on_esp: &str, out: &Path) -> Result<(), DirectBootError> {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new("mcopy");
    // The ESP copy is a bare FAT file system; mtools' geometry check is for floppies.
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(esp)
        .arg(format!("::{on_esp}"))
        .arg(out);
    run(cmd, "mcopy", "mtools")
}

fn run(mut cmd: Command, tool: &'static str, package: &'static str) -> Result<(), DirectBootError> {
    let out = cmd.output().map_err(|source| DirectBootError::Spawn {
        tool,
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(DirectBootError::Tool {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DirectBootError + '_ {
    move |source| DirectBootError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_boot::esp::slot_config;
    use gantry_boot::SlotState;

    #[test]
    fn boot_cfg_words_come_back_as_the_updater_wrote_them() {
        let args: Vec<String> = [
            "console=ttyS0",
            "dm-mod.create=vroot,,,ro,0 1024 verity 1 /dev/vda2 /dev/vda2 4096 4096 128 129 sha256 ab cd",
            "gantry.slot=A",
            "it's",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let cfg = slot_config(Slot::A, "0.1.0", "vmlinuz-0011223344556677", &args);
        let (kernel, parsed) = parse_boot_cfg(&cfg).unwrap();
        assert_eq!(kernel, format!("{PREFIX}/A/vmlinuz-0011223344556677"));
        assert_eq!(parsed, args);
        assert_eq!(
            kernel_cmdline(&parsed[..3]),
            "console=ttyS0 \"dm-mod.create=vroot,,,ro,0 1024 verity 1 /dev/vda2 /dev/vda2 \
             4096 4096 128 129 sha256 ab cd\" gantry.slot=A"
        );
        assert!(parse_boot_cfg("# nothing\n").is_err());
        assert!(parse_boot_cfg("linux /elsewhere/vmlinuz\n").is_err());
        assert!(parse_boot_cfg("linux '/EFI/gantry/A/v\n").is_err());
    }

    #[test]
    fn the_slot_is_the_one_grub_would_boot() {
        let mut env = GrubEnv::initial(Slot::A);
        assert_eq!(pick_slot(&env), Slot::A);
        // An update put B first on trial.
        env.set_order(&[Slot::B, Slot::A]);
        env.set_slot(
            Slot::B,
            SlotState {
                good: false,
                tries: 2,
            },
        );
        assert_eq!(pick_slot(&env), Slot::B);
        // Its tries spent, never marked good: GRUB falls back to A.
        env.set_slot(Slot::B, SlotState::EMPTY);
        assert_eq!(pick_slot(&env), Slot::A);
        assert_eq!(pick_slot(&GrubEnv::new()), Slot::A);
    }

    fn gpt_with(entries: &[(&str, u64, u64)]) -> Vec<u8> {
        let mut d = vec![0u8; (GPT_SECTORS * SECTOR) as usize];
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        for (i, (name, first, last)) in entries.iter().enumerate() {
            let e = 1024 + i * 128;
            d[e] = 1; // a type GUID that is not zero
            d[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
            d[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                d[e + 56 + 2 * j..e + 58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        d
    }

    #[test]
    fn finds_the_esp_by_its_gpt_name() {
        let d = gpt_with(&[("ROOT-A", 4096, 8191), ("ESP", 2048, 133119)]);
        assert_eq!(esp_extent(&d), Ok((2048, 131072)));
        assert!(esp_extent(&gpt_with(&[("ROOT-A", 1, 2)]))
            .unwrap_err()
            .contains("no partition named ESP"));
        assert!(esp_extent(&vec![0u8; 17408])
            .unwrap_err()
            .contains("no GPT header"));
        assert!(esp_extent(&gpt_with(&[("ESP", 10, 5)])).is_err());
    }
}
