//! A kernel command line with a machine config in it: `BootParams::parse`, then
//! `gantry.config=`'s base64 (`sources::decode_cmdline`), then the document
//! (`sources::accept`), the path PID 1 takes at boot.
//!
//! Checks: the decoded bytes encode back to a value that decodes to them; an accepted
//! config is exactly what parsing its text gives.
#![no_main]

use base64::Engine as _;
use gantry_init::cmdline::BootParams;
use gantry_init::config::sources::{accept, decode_cmdline, Document, Source};
use gantry_init::config::user_data::MetaData;
use gantry_init::config::MachineConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cmdline) = std::str::from_utf8(data) else {
        return;
    };
    let params = BootParams::parse(cmdline);
    let Some(value) = params.config else {
        return;
    };
    let Ok(bytes) = decode_cmdline(&value) else {
        return;
    };
    let again = base64::engine::general_purpose::STANDARD.encode(&bytes);
    assert_eq!(
        decode_cmdline(&again).expect("our own base64 decodes"),
        bytes
    );
    let doc = Document {
        source: Source::KernelCmdline,
        bytes,
        meta: MetaData::default(),
    };
    if let Ok((accepted, text)) = accept(doc) {
        let direct = MachineConfig::parse(&text, &Source::KernelCmdline.to_string());
        assert_eq!(direct.as_ref(), Ok(&accepted.config));
    }
});
