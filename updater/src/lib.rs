//! Gantry's A/B updater: signed bundles ([`bundle`], [`keys`], [`channel`]), the install
//! into the inactive slot ([`install`], [`here`] on a running machine), the boot state GRUB
//! keeps ([`grubenv`], [`esp`], from `gantry-boot`), the slots on disk ([`disk`]), what the running image is
//! ([`release`]), staged rollouts ([`rollout`]), what the updater remembers ([`state`]), the update policy ([`policy`])
//! and downloads ([`fetch`]). PID 1 (the init crate) runs the health gate and the agent.

pub mod bundle;
pub mod channel;
pub mod cli;
pub mod disk;
pub mod etcd;
pub mod etcd_lease;
pub mod fetch;
pub mod fleet;
pub mod fleetlock;
pub mod here;
pub mod install;
pub mod keys;
pub mod policy;
pub mod release;
pub mod rollout;
pub mod state;
pub mod verity;

// The boot contract lives in `gantry-boot`; its paths stay reachable here.
use gantry_boot::hex;
pub use gantry_boot::{esp, grubenv, ParseSlotError, Slot, SlotState};
