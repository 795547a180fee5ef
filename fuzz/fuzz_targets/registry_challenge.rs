//! `WWW-Authenticate` challenges from a registry or its redirect targets
//! (`Challenge::parse`).
//!
//! Checks: a challenge that parses names the scheme its header starts with; parameter
//! names are case-insensitive; leading white space changes nothing.
#![no_main]

use gantry_runtime::{Challenge, Scheme};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Challenge::parse(header);
    let Ok(c) = &parsed else {
        return;
    };
    let scheme = header.trim_start().get(..6).unwrap_or(header.trim_start());
    match c.scheme {
        Scheme::Bearer => assert!(scheme.eq_ignore_ascii_case("bearer")),
        Scheme::Basic => assert!(scheme
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("basic"))),
    }
    for name in ["realm", "service", "scope"] {
        assert_eq!(c.param(name), c.param(&name.to_ascii_uppercase()));
    }
    assert_eq!(
        Challenge::parse(&format!(" \t{header}")).ok().as_ref(),
        Some(c)
    );
});
