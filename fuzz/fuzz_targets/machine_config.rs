//! The machine config's TOML parser and checks (`MachineConfig::parse`), as every source
//! feeds it after `user_data::config_text`.
//!
//! Checks: a config that parses keeps what the checks promise (the format version, a
//! valid host name, interface names the kernel takes, MTUs in range, at most three name
//! servers, valid search domains, a carrier timeout of at most an hour); a refusal names
//! its source and a key; parsing is deterministic.
#![no_main]

use gantry_init::cmdline::valid_hostname;
use gantry_init::config::{check_ifname, valid_domain, MachineConfig, FORMAT_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = MachineConfig::parse(text, "fuzz");
    match &parsed {
        Ok(c) => {
            assert_eq!(c.version, FORMAT_VERSION);
            if let Some(h) = &c.hostname {
                assert!(valid_hostname(h), "{h:?}");
            }
            for i in &c.network.interfaces {
                assert!(i.name.is_some() != i.mac.is_some());
                if let Some(n) = &i.name {
                    assert!(check_ifname(n).is_ok(), "{n:?}");
                }
                if let Some(mtu) = i.mtu {
                    assert!((68..=65535).contains(&mtu));
                }
            }
            assert!(c.network.dns.servers.len() <= 3);
            assert!(c.network.dns.search.iter().all(|d| valid_domain(d)));
            assert!(c.network.carrier_timeout_secs <= 3600);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert_eq!(e.source_name, "fuzz");
                assert!(!e.key.is_empty() && !e.reason.is_empty(), "{e:?}");
            }
        }
    }
    assert_eq!(parsed, MachineConfig::parse(text, "fuzz"));
});
