//! The ACPI power button. The kernel's ACPI button driver turns a press into a `KEY_POWER`
//! event on an evdev device named "Power Button"; that is what `virsh shutdown`, a cloud's
//! "stop instance" and QEMU's `system_powerdown` produce.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The size of `struct input_event` on 64-bit Linux: a 16-byte timeval, u16 type, u16 code,
/// i32 value.
pub const EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

/// Whether a buffer of raw input events holds a press of the power key. A trailing partial
/// event is ignored.
pub fn has_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(|ev| {
        let kind = u16::from_ne_bytes([ev[16], ev[17]]);
        let code = u16::from_ne_bytes([ev[18], ev[19]]);
        let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// The evdev devices whose name says they are a power button.
pub fn find() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") {
                return None;
            }
            let dev_name = std::fs::read_to_string(entry.path().join("device/name")).ok()?;
            (dev_name.trim() == "Power Button").then(|| PathBuf::from("/dev/input").join(name))
        })
        .collect();
    found.sort();
    found
}

/// Opens a power button device for non-blocking reads.
pub fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Reads what is pending on a power button device; true when it was pressed.
pub fn pressed(dev: &mut File) -> bool {
    let mut buf = [0u8; EVENT_SIZE * 16];
    let mut seen = false;
    while let Ok(n) = dev.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen |= has_power_press(&buf[..n]);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut ev = vec![0u8; 16];
        ev.extend(kind.to_ne_bytes());
        ev.extend(code.to_ne_bytes());
        ev.extend(value.to_ne_bytes());
        ev
    }

    #[test]
    fn a_power_key_press_is_seen_among_other_events() {
        let mut buf = event(0, 0, 0); // EV_SYN
        buf.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(has_power_press(&buf));
    }

    #[test]
    fn release_other_keys_and_partial_events_are_not_presses() {
        let mut buf = event(EV_KEY, KEY_POWER, 0);
        buf.extend(event(EV_KEY, 115, 1));
        buf.extend(&event(EV_KEY, KEY_POWER, 1)[..20]);
        assert!(!has_power_press(&buf));
    }
}
