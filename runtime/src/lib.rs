//! Gantry's container runtime.
//!
//! This crate will hold the image store (registry pulls, OCI/Docker archive import, layers
//! on overlayfs) and container execution (namespaces, cgroup v2, capabilities, seccomp,
//! networking), linked into PID 1 and shipped as an OCI-runtime command line. Today it holds
//! [`ContainerId`], image references ([`ImageRef`]) parsed and normalised as Docker does,
//! and the verified, crash-safe blob directory of the image store ([`Blobs`]).

mod blobs;
mod id;
mod reference;

pub use blobs::{BlobError, Blobs};

pub use id::{ContainerId, InvalidContainerId};
pub use reference::{Digest, ImageRef, InvalidReference, DEFAULT_REGISTRY};
