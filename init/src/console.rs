//! The console: PID 1 starts with no open files when the root has no `/dev/console`, so it
//! opens the console itself once devtmpfs is mounted, and logs there with `tracing`.

use std::fmt;
use std::os::fd::{AsRawFd, IntoRawFd};

use nix::time::{clock_gettime, ClockId};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Makes `/dev/console` the standard input, output and error of this process.
pub fn attach() -> std::io::Result<()> {
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")?;
    let fd = console.as_raw_fd();
    for target in 0..=2 {
        if target != fd {
            nix::unistd::dup2(fd, target)?;
        }
    }
    if fd <= 2 {
        // With no files open at start the console lands on 0, 1 or 2: keep it open.
        let _ = console.into_raw_fd();
    }
    Ok(())
}

/// Milliseconds since the kernel started (`CLOCK_BOOTTIME`).
pub fn boot_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
        })
        .unwrap_or(0)
}

/// Stamps each log line with the time since the kernel started, like the kernel's own
/// lines, so the two read as one timeline on the serial console.
#[derive(Debug, Clone, Copy)]
pub struct SinceBoot;

impl FormatTime for SinceBoot {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let ms = boot_ms();
        write!(w, "[{:>5}.{:03}]", ms / 1000, ms % 1000)
    }
}

/// Installs the console logger: one plain line per event on standard error.
pub fn init_logging() {
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_timer(SinceBoot)
        .with_writer(std::io::stderr)
        .finish();
    // Only fails when a logger is already installed, which then keeps logging.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
