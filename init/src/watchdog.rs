//! The hardware watchdog (`/dev/watchdog`; QEMU's `i6300esb`): once PID 1 opens it, the
//! machine resets unless PID 1 pets it within the timeout, so a hang reboots and GRUB's boot
//! counter does the rest.
//!
//! - **Armed early**: right after the early mounts and the console, so a boot that hangs
//!   preparing `/var`, reading the config or starting the network is reset too.
//! - **Petted from the main event loop only** (`WDIOC_KEEPALIVE` once per iteration), and
//!   from the waits of an orderly shutdown, which that loop runs on the same thread. Never
//!   from a thread of its own: it would go on petting while the loop hangs. The loop's poll
//!   timeout is bounded by [`pet_interval`], a third of the watchdog timeout ([`bound`]), so
//!   an idle loop pets in time with two intervals to spare for a slow iteration.
//! - **Disarmed last**: an orderly shutdown ends with the magic close (`V`, then close)
//!   right before `reboot(2)`, so the watchdog does not cut the next boot's firmware and
//!   GRUB short (Gantry's kernel does not set `CONFIG_WATCHDOG_NOWAYOUT`). A shutdown that
//!   hangs before that point is reset by the watchdog.
//! - `gantry.watchdog=<secs>` sets the timeout ([`TIMEOUT_SECS`], default
//!   [`DEFAULT_TIMEOUT_SECS`]); `gantry.watchdog=0` leaves the device closed. The driver
//!   may round the timeout (`WDIOC_SETTIMEOUT` writes back the one it set): that one is
//!   logged and bounds the loop. A machine without `/dev/watchdog` logs one line and boots.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::var::ext4::ioc;
use crate::{NO_WATCHDOG_LINE, WATCHDOG_LINE};

/// The watchdog device.
pub const DEVICE: &str = "/dev/watchdog";
pub const DEFAULT_TIMEOUT_SECS: u32 = 60;
/// The timeouts `gantry.watchdog=` accepts: long enough for a slow loop iteration under
/// emulation, short enough that a hung machine comes back within minutes.
pub const TIMEOUT_SECS: RangeInclusive<u32> = 5..=600;

/// `_IOR('W', 5, int)` (linux/watchdog.h).
const WDIOC_KEEPALIVE: u64 = ioc(2, b'W', 5, 4);
/// `_IOWR('W', 6, int)`: seconds in, the timeout the driver set out.
const WDIOC_SETTIMEOUT: u64 = ioc(3, b'W', 6, 4);
/// Written before close, it tells the driver that the close is deliberate: stop.
const MAGIC_CLOSE: &[u8] = b"V";

/// What `gantry.watchdog=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogSetting {
    /// `0`: do not open the device.
    Off,
    /// The timeout in seconds, within [`TIMEOUT_SECS`].
    Timeout(u32),
}

impl Default for WatchdogSetting {
    fn default() -> Self {
        WatchdogSetting::Timeout(DEFAULT_TIMEOUT_SECS)
    }
}

impl FromStr for WatchdogSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u32>() {
            Ok(0) => Ok(WatchdogSetting::Off),
            Ok(secs) if TIMEOUT_SECS.contains(&secs) => Ok(WatchdogSetting::Timeout(secs)),
            _ => Err(format!(
                "{s:?} is not 0 (off) or a timeout of {} to {} seconds",
                TIMEOUT_SECS.start(),
                TIMEOUT_SECS.end()
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot set the timeout of {path} to {secs} s: {source}")]
    SetTimeout {
        path: PathBuf,
        secs: u32,
        source: io::Error,
    },
}

/// An open, running watchdog. Its methods take `&self` so that the event loop and the
/// shutdown's waits can pet it while the shutdown holds it to disarm at the end.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    /// `None` once disarmed.
    device: RefCell<Option<File>>,
    timeout: Duration,
    /// A failed pet is logged once, not once per loop iteration.
    pet_failed: Cell<bool>,
}

impl Watchdog {
    /// Opens `path`, which starts the watchdog, and sets its timeout to `secs`. `Ok(None)`
    /// when there is no such device. If the timeout cannot be set, the watchdog is stopped
    /// again (magic close) and the error returned.
    pub fn arm(path: &Path, secs: u32) -> Result<Option<Watchdog>, WatchdogError> {
        let file = match File::options().write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(WatchdogError::Open {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the pointer, which
        // points at `value` on this stack frame; `file` is open for the whole call.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                WDIOC_SETTIMEOUT as libc::Ioctl,
                &mut value,
            )
        };
        if rc < 0 {
            let source = io::Error::last_os_error();
            magic_close(file);
            return Err(WatchdogError::SetTimeout {
                path: path.to_owned(),
                secs,
                source,
            });
        }
        // A driver that reports nothing sensible back: trust what was asked.
        let set = u64::try_from(value)
            .ok()
            .filter(|v| *v > 0)
            .unwrap_or(secs.into());
        Ok(Some(Watchdog {
            path: path.to_owned(),
            device: RefCell::new(Some(file)),
            timeout: Duration::from_secs(set),
            pet_failed: Cell::new(false),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The timeout the driver set.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long the event loop may wait between two pets.
    pub fn pet_interval(&self) -> Duration {
        pet_interval(self.timeout)
    }

    /// Restarts the countdown. A failure is logged once; the loop carries on, and if the
    /// device really stopped taking pets, it resets the machine, as it should.
    pub fn pet(&self) {
        let Ok(device) = self.device.try_borrow() else {
            return;
        };
        let Some(file) = device.as_ref() else {
            return;
        };
        let mut unused: libc::c_int = 0;
        // SAFETY: WDIOC_KEEPALIVE takes a pointer to an int it does not use; it points at
        // `unused` on this stack frame, and `file` is open for the whole call.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                WDIOC_KEEPALIVE as libc::Ioctl,
                &mut unused,
            )
        };
        if rc < 0 && !self.pet_failed.replace(true) {
            error!(device = %self.path.display(), error = %io::Error::last_os_error(), "cannot pet the watchdog");
        }
    }

    /// Stops the watchdog (magic close). Called right before `reboot(2)`; later pets do
    /// nothing.
    pub fn disarm(&self) {
        let Ok(mut device) = self.device.try_borrow_mut() else {
            return;
        };
        if let Some(file) = device.take() {
            magic_close(file);
        }
    }
}

/// Writes the magic character and closes: the driver stops the watchdog.
fn magic_close(mut file: File) {
    if let Err(e) = file.write_all(MAGIC_CLOSE) {
        warn!(error = %e, "cannot disarm the watchdog; it may reset the machine during the next boot");
    }
}

/// A third of the watchdog timeout.
pub fn pet_interval(timeout: Duration) -> Duration {
    timeout / 3
}

/// The event loop's poll timeout: `wait` (`None` waits for an event however long it
/// takes), but no longer than `pet_every` when a watchdog is armed.
pub fn bound(wait: Option<Duration>, pet_every: Option<Duration>) -> Option<Duration> {
    match (wait, pet_every) {
        (Some(w), Some(p)) => Some(w.min(p)),
        (w, p) => w.or(p),
    }
}

/// PID 1's watchdog as `setting` asks, with one log line saying what it is: armed (with
/// [`WATCHDOG_LINE`]), absent ([`NO_WATCHDOG_LINE`]), off, or failed.
pub fn open(setting: WatchdogSetting) -> Option<Watchdog> {
    let WatchdogSetting::Timeout(secs) = setting else {
        info!("gantry-init: watchdog off (gantry.watchdog=0)");
        return None;
    };
    match Watchdog::arm(Path::new(DEVICE), secs) {
        Ok(Some(w)) => {
            info!(
                device = DEVICE,
                timeout_secs = w.timeout().as_secs(),
                "{WATCHDOG_LINE}"
            );
            Some(w)
        }
        Ok(None) => {
            info!(device = DEVICE, "{NO_WATCHDOG_LINE}");
            None
        }
        Err(e) => {
            error!(error = %e, "gantry-init: watchdog not armed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // linux/watchdog.h, as a C program prints them on x86-64.
        assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT, 0xc004_5706);
    }

    #[test]
    fn the_setting_is_off_or_a_timeout_in_range() {
        assert_eq!("0".parse(), Ok(WatchdogSetting::Off));
        assert_eq!("5".parse(), Ok(WatchdogSetting::Timeout(5)));
        assert_eq!("600".parse(), Ok(WatchdogSetting::Timeout(600)));
        for bad in ["4", "601", "-1", "", "60s", "4294967296"] {
            assert!(bad.parse::<WatchdogSetting>().is_err(), "{bad:?}");
        }
        assert_eq!(
            WatchdogSetting::default(),
            WatchdogSetting::Timeout(DEFAULT_TIMEOUT_SECS)
        );
    }

    #[test]
    fn the_loop_waits_at_most_a_third_of_the_timeout() {
        let third = pet_interval(Duration::from_secs(60));
        assert_eq!(third, Duration::from_secs(20));
        assert_eq!(bound(None, Some(third)), Some(third));
        assert_eq!(
            bound(Some(Duration::from_secs(90)), Some(third)),
            Some(third)
        );
        let soon = Duration::from_millis(500);
        assert_eq!(bound(Some(soon), Some(third)), Some(soon));
        assert_eq!(bound(Some(soon), None), Some(soon));
        assert_eq!(bound(None, None), None);
        // The shortest timeout still leaves the loop over a second.
        let min = pet_interval(Duration::from_secs((*TIMEOUT_SECS.start()).into()));
        assert!(min > Duration::from_secs(1), "{min:?}");
    }

    #[test]
    fn no_device_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Watchdog::arm(&dir.path().join("watchdog"), 60),
            Ok(None)
        ));
    }

    #[test]
    fn a_file_that_is_not_a_watchdog_is_refused_and_closed_with_the_magic_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").unwrap();
        let err = Watchdog::arm(&path, 60).unwrap_err();
        assert!(
            matches!(&err, WatchdogError::SetTimeout { path: p, secs: 60, .. } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("watchdog"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC_CLOSE);
    }
}
