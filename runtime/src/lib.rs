//! Gantry's container runtime.
//!
//! This crate will hold the image store (registry pulls, OCI/Docker archive import, layers
//! on overlayfs) and container execution (namespaces, cgroup v2, capabilities, seccomp,
//! networking), linked into PID 1 and shipped as an OCI-runtime command line. Today it holds
//! the one type every part of it shares: [`ContainerId`].

mod id;

pub use id::{ContainerId, InvalidContainerId};
