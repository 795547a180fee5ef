//! Boots Gantry images in QEMU, for people (`gantry-qemu boot`) and for the end-to-end tests
//! (the [`Vm`] type).
//!
//! Each VM gets its own directory with a qcow2 overlay over the image (the built image is
//! never modified), a copy of the OVMF variable store, its serial log and its QMP socket.
//! Networking is QEMU's user network with `restrict=on`: the guest reaches nothing but the
//! `hostfwd`/`guestfwd` forwards to 127.0.0.1 given in the [`VmConfig`]. Acceleration is TCG
//! unless `GANTRY_QEMU_ACCEL=kvm` (KVM fails on the build machines this project runs on).
//! A VM may instead boot its slot's kernel directly, without OVMF and GRUB
//! ([`direct_boot`], `cluster up --fast`).

pub mod cluster;
mod config;
pub mod direct_boot;
mod qmp;
mod vm;

pub use config::{
    Accel, DiskBus, Firmware, GuestForward, HostForward, SegmentNic, VmConfig, VmFiles,
    SEGMENT_NETDEV,
};
pub use qmp::{Qmp, QmpError};
pub use vm::{Vm, VmError};
