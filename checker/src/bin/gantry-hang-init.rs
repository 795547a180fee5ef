//! `gantry-hang-init`: an init that hangs, for the watchdog rollback test (issue 8). It does
//! what Gantry's PID 1 does first (mount `/dev`, open `/dev/watchdog` with a timeout),
//! then stops making progress: no more keep-alives, as if PID 1's event loop were stuck.
//! The hardware watchdog must reset the machine, and GRUB's boot counter must roll back.
//! Never in a release image: the update tests build a broken variant with it as
//! `/sbin/init`.

use std::io::Write;

/// `_IOWR('W', 6, int)` (linux/watchdog.h).
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xc004_5706;
const TIMEOUT_SECS: libc::c_int = 10;

fn main() {
    // SAFETY: mount(2) with static NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"devtmpfs".as_ptr(),
            c"/dev".as_ptr(),
            c"devtmpfs".as_ptr(),
            libc::MS_NOSUID,
            std::ptr::null(),
        )
    };
    let mount_error = (rc != 0).then(std::io::Error::last_os_error);
    let mut console = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .ok();
    let mut say = |line: &str| {
        if let Some(c) = console.as_mut() {
            let _ = writeln!(c, "gantry-hang-init: {line}");
        }
    };
    if let Some(e) = mount_error {
        say(&format!("mount /dev: {e}"));
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/watchdog")
    {
        Ok(dog) => {
            let mut secs = TIMEOUT_SECS;
            // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the pointer.
            let rc = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&dog),
                    WDIOC_SETTIMEOUT,
                    &mut secs,
                )
            };
            say(&format!(
                "watchdog armed timeout_secs={secs} (ioctl {rc}); hanging"
            ));
            // Keep the device open and never write to it again.
            std::mem::forget(dog);
        }
        Err(e) => say(&format!("no watchdog ({e}); hanging anyway")),
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
