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

/// An error and its causes on one line, `outer: cause: cause`, leaving out a cause whose
/// text the line already holds (many of our errors put their source in their own
/// message, so that a plain `Display` tells the whole story).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod chain_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("open {path}: {source}")]
    struct Open {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot import")]
    struct Import(#[source] Open);

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let e = Import(Open {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(2),
        });
        assert_eq!(
            super::error_chain(&e),
            "cannot import: open /x: No such file or directory (os error 2)"
        );
    }
}
