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

/// The console lines, shared with the host tools through `gantry-contract`.
pub use gantry_contract::{
    CONFIG_LOADED, CONFIG_REFUSED, MOUNT_LINE, NO_WATCHDOG_LINE, POWER_BUTTON_PRESSED,
    READY_MARKER, ROOT_DEVICE_LINE, SHUTDOWN_MARKER, SHUTDOWN_REQUESTED, WATCHDOG_LINE,
};

/// Gantry's version, as the image and its `/etc/os-release` carry it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
