//! Gantry's kernel configuration: the fragments that say what the kernel must have, and a
//! checker (like Docker's `check-config.sh`) that reads any kernel `.config` and lists each
//! required option that is missing or set wrong, grouped by feature.
//!
//! The fragments in `fragments/` are the single source of truth: `image-build` merges them
//! over `allnoconfig` to build Gantry's kernel, and the checker verifies the result, so an
//! option that Kconfig silently dropped (an unmet dependency) is caught.

mod check;
mod fragments;

pub use check::{check, Finding, KernelConfig, Problem};
pub use fragments::{
    merged_text, parse_fragment, requirements, FragmentError, Requirement, Want, FRAGMENTS,
};
