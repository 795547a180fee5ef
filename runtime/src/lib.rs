//! Gantry's container runtime.
//!
//! This crate will hold the image store (registry pulls, OCI/Docker archive import, layers
//! on overlayfs) and container execution (namespaces, cgroup v2, capabilities, seccomp,
//! networking), linked into PID 1 and shipped as an OCI-runtime command line. Today it holds
//! [`ContainerId`] and image references ([`ImageRef`]), parsed and normalised as Docker does.

mod id;
mod reference;

pub use id::{ContainerId, InvalidContainerId};
pub use reference::{Digest, ImageRef, InvalidReference, DEFAULT_REGISTRY};
