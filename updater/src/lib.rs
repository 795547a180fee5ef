//! Gantry's A/B updater.
//!
//! This first version holds what the image build and the boot loader already share: the
//! [`Slot`] type and the GRUB environment block ([`grubenv`]) whose variables the GRUB
//! script reads to pick a slot, count tries and fall back. Signed bundles, streaming
//! install and the health-gated commit build on these.

pub mod bundle;
pub mod disk;
pub mod esp;
pub mod fetch;
pub mod grubenv;
mod hex;
pub mod keys;
pub mod policy;
pub mod verity;
mod slot;

pub use slot::{ParseSlotError, Slot, SlotState};
