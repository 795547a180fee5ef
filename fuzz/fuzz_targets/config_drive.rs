//! A config drive: the label probe of the block device (`drive::probe`, FAT boot sector
//! and ISO 9660 volume descriptor), `meta-data` (`MetaData::parse`) and `user-data`
//! (`sources::accept`: `config_text`, then the TOML). The input is the device's first
//! bytes for the probe, and also `user-data`, `fuzz::SEPARATOR`, `meta-data`.
//!
//! Checks: a probed label is not empty and has no trailing spaces or NULs; meta-data
//! values are single non-empty lines; an accepted config's host name is valid and, when
//! the document gives none, is meta-data's `local-hostname`.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use gantry_init::cmdline::valid_hostname;
use gantry_init::config::drive::probe;
use gantry_init::config::sources::{accept, Document, Source};
use gantry_init::config::user_data::MetaData;
use libfuzzer_sys::fuzz_target;

fn device() -> &'static File {
    static DEV: OnceLock<File> = OnceLock::new();
    DEV.get_or_init(|| tempfile::tempfile().expect("a temporary file for the device"))
}

fuzz_target!(|data: &[u8]| {
    let dev = device();
    dev.set_len(0).expect("truncate");
    dev.write_all_at(data, 0).expect("write");
    if let Ok(Some((_, label))) = probe(dev) {
        assert!(!label.is_empty());
        assert!(!label.ends_with([' ', '\0']), "{label:?}");
    }

    let parts = gantry_fuzz::parts(data);
    let user_data = parts[0].to_vec();
    let meta = parts
        .get(1)
        .map(|m| MetaData::parse(&String::from_utf8_lossy(m)))
        .unwrap_or_default();
    for v in meta.instance_id.iter().chain(&meta.local_hostname) {
        assert!(!v.is_empty() && !v.contains('\n'), "{v:?}");
    }
    let source = Source::ConfigDrive {
        device: "/dev/vdb".into(),
        label: "CIDATA".into(),
    };
    let had_hostname = std::str::from_utf8(&user_data).is_ok_and(|t| t.contains("hostname"));
    if let Ok((accepted, _)) = accept(Document {
        source,
        bytes: user_data,
        meta: meta.clone(),
    }) {
        if let Some(h) = &accepted.config.hostname {
            assert!(valid_hostname(h), "{h:?}");
        }
        if !had_hostname {
            let from_meta = meta.local_hostname.filter(|h| valid_hostname(h));
            assert_eq!(accepted.config.hostname, from_meta);
        }
    }
});
