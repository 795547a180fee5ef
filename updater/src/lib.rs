//! Gantry's A/B updater: signed bundles ([`bundle`], [`keys`], [`channel`]), the install
//! into the inactive slot ([`install`], [`here`] on a running machine), the boot state GRUB
//! keeps ([`grubenv`], [`esp`]), the slots on disk ([`disk`]), what the running image is
//! ([`release`]), staged rollouts ([`rollout`]), what the updater remembers ([`state`]), the update policy ([`policy`])
//! and downloads ([`fetch`]). PID 1 (the init crate) runs the health gate and the agent.

pub mod bundle;
pub mod channel;
pub mod disk;
pub mod esp;
pub mod etcd;
pub mod etcd_lease;
pub mod fetch;
pub mod fleet;
pub mod fleetlock;
pub mod grubenv;
pub mod here;
mod hex;
pub mod install;
pub mod keys;
pub mod policy;
pub mod release;
pub mod rollout;
mod slot;
pub mod state;
pub mod verity;

pub use slot::{ParseSlotError, Slot, SlotState};
