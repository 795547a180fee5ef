//! A bundle's command-line payload (`bundle::parse_cmdline`), read from a bundle whose
//! payloads have verified.
//!
//! Checks: the arguments of a line that is accepted are words without white space, none
//! of them one the installer writes for the slot, one of them `panic=N` with N > 0; the
//! arguments joined with spaces parse to themselves.
#![no_main]

use gantry_updater::bundle::parse_cmdline;
use gantry_updater::verity::slot_owned;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(args) = parse_cmdline(data) else {
        return;
    };
    for a in &args {
        assert!(!a.is_empty() && !a.contains(char::is_whitespace), "{a:?}");
        assert!(!slot_owned(a), "{a:?}");
    }
    assert!(args.iter().any(|a| a
        .strip_prefix("panic=")
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|n| n > 0)));
    assert_eq!(parse_cmdline(args.join(" ").as_bytes()).as_ref(), Ok(&args));
});
