//! What Gantry's PID 1 and the tools on the host agree on, without PID 1's code: the
//! console lines PID 1 prints and launchers and tests wait for, the files under `/run`
//! that the image's `/etc` links to, and the host-name rule that the image definition, the
//! machine config and the kernel command line share. The cluster launcher and the image
//! build take this crate instead of linking all of PID 1.

/// The line PID 1 logs once the machine is up; tests and operators wait for it. It is
/// followed by `version=… os_version=… slot=… machine_id=… boot_ms=…` (milliseconds since
/// the kernel started).
pub const READY_MARKER: &str = "gantry-init: ready";

/// Logged before the final `reboot(2)` of an orderly shutdown, with `action=`.
pub const SHUTDOWN_MARKER: &str = "gantry-init: shutdown complete";

/// Logged when a signal asks for a shutdown, with `signal=`.
pub const SHUTDOWN_REQUESTED: &str = "gantry-init: shutdown requested";

/// Logged when the ACPI power button is pressed.
pub const POWER_BUTTON_PRESSED: &str = "gantry-init: power button pressed";

/// Logged once per mount at boot, with `target= source= fstype= options=`.
pub const MOUNT_LINE: &str = "gantry-init: mount";

/// Logged once at boot with `device=` (e.g. `/dev/dm-0`) and `dm_name=`.
pub const ROOT_DEVICE_LINE: &str = "gantry-init: root file system";

/// Logged when a machine config is accepted, with `source=`.
pub const CONFIG_LOADED: &str = "gantry-init: config loaded";

/// Logged once per reason when a machine config is refused, with `error=`.
pub const CONFIG_REFUSED: &str = "gantry-init: config refused";

/// Logged once the hardware watchdog runs, with `device=` and `timeout_secs=` (what the
/// driver set); see `gantry_init::watchdog`.
pub const WATCHDOG_LINE: &str = "gantry-init: watchdog armed";

/// Logged when the machine has no watchdog device, with `device=`.
pub const NO_WATCHDOG_LINE: &str = "gantry-init: no watchdog";

/// Logged on each state change of a container, with `name= state=` and details
/// (`health=` among them).
pub const CONTAINER_LINE: &str = "gantry-init: container";

/// Logged once per boot with `id=` and `source=` (`persisted`, `smbios` or `random`).
pub const MACHINE_ID_LINE: &str = "gantry-init: machine id";

/// Where the running machine publishes its machine id (`/etc/machine-id` links here).
pub const RUN_MACHINE_ID: &str = "/run/machine-id";

/// The resolver file PID 1 writes from the config and DHCP (`/etc/resolv.conf` links
/// here).
pub const RESOLV_CONF: &str = "/run/gantry/resolv.conf";

/// Whether `name` is a valid host name: dot-separated labels of 1 to 63 letters, digits and
/// inner hyphens, 253 characters at most (RFC 1123).
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_rfc_1123() {
        assert!(valid_hostname("gantry"));
        assert!(valid_hostname("node-1.example"));
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a b",
            &"x".repeat(64),
            &"a.".repeat(127),
        ] {
            assert!(!valid_hostname(bad), "{bad:?}");
        }
    }
}
