//! Gantry's PID 1.
//!
//! The binary (`gantry-init`, installed as `/sbin/init`) mounts the API file systems, sends
//! its log to the serial console, mounts the DATA partition on `/var` and grows it to the
//! disk ([`var`]), determines the machine id ([`machine_id`]), reads the machine config
//! ([`config`]), sets the host name, starts the network on its own thread ([`net`]), prints
//! the [`READY_MARKER`], and then
//! lives in one loop: it reads signals from a `signalfd`, reaps every child, and turns
//! SIGTERM, SIGINT (Ctrl-Alt-Del) and the ACPI power button into an orderly shutdown.
//! It never exits and never panics out of its loop. The containers the config names start
//! from that loop ([`supervisor`]); after a power cut, only once the image store has been
//! checked ([`store_check`]). When the config has an `[api]` section, a read-only HTTPS API
//! (status and container logs, bearer tokens) runs on its own thread ([`api`]).
//!
//! The machine config comes from the first source that has one, in this order: the kernel
//! command line (`gantry.config=<base64>`), QEMU's `fw_cfg` file `opt/org.gantry/config`, a
//! config drive (a FAT or ISO 9660 volume labelled `CIDATA` or `GANTRY` with NoCloud
//! `user-data` and `meta-data`), and, only when none of those has one, an EC2-style instance
//! metadata service, asked on its own thread once the network is up
//! (`gantry.imds=host[:port]`, default `169.254.169.254`; `gantry.imds=off` skips it). Every
//! accepted config is kept in `/var/lib/gantry/config/current.toml`; a refused one is logged
//! with its key and reason, and the machine runs on that last good copy, which is also what
//! it uses when no source has a config. See [`config::sources`].
//!
//! The library holds the pieces the binary is made of, each testable on its own; system
//! calls a test cannot make sit behind small traits ([`mounts::MountOps`],
//! [`shutdown::ShutdownOps`], [`var::VarOps`]).

pub mod api;
pub mod cmdline;
pub mod config;
pub mod console;
pub mod machine_id;
pub mod mounts;
pub mod net;
pub mod power_button;
pub mod reaper;
pub mod shutdown;
pub mod signals;
pub mod store_check;
pub mod supervisor;
pub mod tasks;
pub mod update;
pub mod var;
pub mod watchdog;

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
/// driver set); see [`watchdog`].
pub const WATCHDOG_LINE: &str = "gantry-init: watchdog armed";

/// Logged when the machine has no watchdog device, with `device=`.
pub const NO_WATCHDOG_LINE: &str = "gantry-init: no watchdog";

/// Gantry's version, as the image and its `/etc/os-release` carry it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
