//! Gantry's container runtime.
//!
//! The image half is here: references ([`ImageRef`]) parsed and normalised as Docker does;
//! a registry client for the OCI distribution API ([`registry`]) with basic and bearer
//! auth; manifests, indexes and configs ([`manifest`]); safe layer extraction into
//! overlayfs form ([`layer`]); and the crash-safe, content-addressed [`store`] that
//! [`pull`] and [`import`] fill ([`archives`] tells which archive of a directory provides
//! an image). Container execution (namespaces, cgroup v2, capabilities,
//! seccomp) is in [`container`], container networks (bridge, veth, IPAM, DNS, nftables)
//! in [`network`]. The `gantry` binary puts the image store and `run` on the command line.

pub mod archives;
mod blobs;
mod challenge;
pub mod container;
pub mod fsutil;
mod id;
pub mod import;
pub mod layer;
pub mod manifest;
pub mod network;
pub mod pull;
mod reference;
pub mod registry;
pub mod store;
mod token_realm;

pub use blobs::{BlobError, Blobs, PartialBlob};
pub use challenge::{Challenge, InvalidChallenge, Scheme};
pub use id::{ContainerId, InvalidContainerId};
pub use reference::{Digest, ImageRef, InvalidReference, Sha256, DEFAULT_REGISTRY};

/// How errors are told on one line, shared with PID 1 and the updater.
pub use gantry_report::error_chain;
