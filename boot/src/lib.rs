//! The boot contract between the image build, the updater and the firmware's GRUB: the two
//! root slots ([`Slot`], [`SlotState`]), GRUB's environment block that picks one and counts
//! its tries ([`grubenv`]), and the Gantry directory on the EFI system partition with each
//! slot's `boot.cfg` and kernel ([`esp`]).
//!
//! A crate of its own because the host tools (the image build, the QEMU launcher's direct
//! kernel boot) read and write this layout too, and must not link the updater's HTTP and
//! TLS stack to do it.

pub mod esp;
pub mod grubenv;
pub mod hex;
mod slot;

pub use slot::{ParseSlotError, Slot, SlotState};
