//! The cloud-init shapes a config arrives in from a config drive or a metadata service:
//! `user-data` (the Gantry TOML document) and `meta-data` (instance id and host name).
//!
//! **user-data** is the Gantry machine config itself, UTF-8 TOML. A first line
//! `#gantry-config` is allowed (it is a TOML comment), so the same file can be marked for
//! humans and tools. A document whose first line says it is something else that cloud-init
//! reads (`#cloud-config`, `#!` scripts, `Content-Type:` MIME multi-part, `#include`,
//! `#cloud-boothook`) is refused with that reason instead of with a TOML syntax error.
//!
//! **meta-data** is read line by line, not as YAML: only the top-level lines
//! `instance-id: <value>` and `local-hostname: <value>` count (the value may be quoted with
//! `"` or `'`; a trailing `# comment` after white space is dropped). Everything else (other
//! keys, nested blocks, JSON) is ignored. That covers what NoCloud seeds carry; a key Gantry
//! does not read is never an error here.

use super::{ConfigError, MAX_CONFIG_BYTES};

/// What `meta-data` says about the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData {
    /// `instance-id:`; logged, so an operator can tell which instance a config was for.
    pub instance_id: Option<String>,
    /// `local-hostname:`; the host name when the config gives none.
    pub local_hostname: Option<String>,
}

impl MetaData {
    /// Reads the two keys Gantry uses from a NoCloud `meta-data` file (see the module docs).
    pub fn parse(text: &str) -> MetaData {
        let mut meta = MetaData::default();
        for line in text.lines() {
            // Indented lines belong to a nested block; only top-level keys count.
            if line.starts_with(char::is_whitespace) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let slot = match key {
                "instance-id" => &mut meta.instance_id,
                "local-hostname" => &mut meta.local_hostname,
                _ => continue,
            };
            if let Some(v) = scalar(value) {
                *slot = Some(v);
            }
        }
        meta
    }

    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.instance_id.is_none() && self.local_hostname.is_none()
    }
}

/// A YAML-ish scalar: trimmed, a trailing ` # comment` dropped, one level of quotes removed;
/// `None` when empty.
fn scalar(raw: &str) -> Option<String> {
    let mut v = raw.trim();
    if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
        v = v[1..].split(q).next().unwrap_or("");
    } else if let Some(i) = v.find(" #").or_else(|| v.find("\t#")) {
        v = v[..i].trim_end();
    }
    (!v.is_empty()).then(|| v.to_owned())
}

/// First lines that mark user data cloud-init would run, and what to call them.
const FOREIGN_MARKERS: &[(&str, &str)] = &[
    ("#cloud-config", "cloud-init cloud-config (YAML)"),
    ("#cloud-boothook", "a cloud-init boothook"),
    ("#include", "a cloud-init include list"),
    ("#!", "a script"),
    ("content-type:", "MIME multi-part user data"),
];

/// Turns user data into the config text: UTF-8, not too large, and not one of cloud-init's
/// other formats (see the module docs). `source_name` goes into the error.
pub fn config_text(bytes: Vec<u8>, source_name: &str) -> Result<String, ConfigError> {
    let err = |reason: String| ConfigError {
        source_name: source_name.to_owned(),
        key: "(document)".to_owned(),
        reason,
    };
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(err(format!(
            "{} bytes is more than the {MAX_CONFIG_BYTES} allowed",
            bytes.len()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| err(format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_lowercase();
    if let Some((_, what)) = FOREIGN_MARKERS.iter().find(|(m, _)| first.starts_with(m)) {
        return Err(err(format!(
            "is {what}, not a Gantry config (TOML, optionally starting with #gantry-config)"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_gives_instance_id_and_hostname_and_ignores_the_rest() {
        let m = MetaData::parse(
            "instance-id: iid-local01\nlocal-hostname: 'node-7'  \nnetwork-interfaces: |\n  \
             local-hostname: nested\npublic-keys:\n  - ssh-ed25519 AAAA\n",
        );
        assert_eq!(m.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(m.local_hostname.as_deref(), Some("node-7"));
    }

    #[test]
    fn meta_data_values_lose_quotes_and_comments() {
        let m = MetaData::parse("instance-id: \"i-1 # kept\"\nlocal-hostname: web # the host\n");
        assert_eq!(m.instance_id.as_deref(), Some("i-1 # kept"));
        assert_eq!(m.local_hostname.as_deref(), Some("web"));
        let empty = MetaData::parse("instance-id:\nlocal-hostname: ''\n{\"json\": 1}\n");
        assert!(empty.is_empty(), "{empty:?}");
    }

    #[test]
    fn user_data_may_start_with_the_gantry_marker() {
        let t = config_text(b"#gantry-config\nversion = 1\n".to_vec(), "drive").unwrap();
        assert!(t.starts_with("#gantry-config"));
    }

    #[test]
    fn cloud_init_user_data_is_refused_by_name() {
        for (doc, what) in [
            ("#cloud-config\nhostname: x\n", "cloud-config"),
            ("#!/bin/sh\necho hi\n", "a script"),
            ("Content-Type: multipart/mixed\n", "MIME multi-part"),
        ] {
            let e = config_text(doc.as_bytes().to_vec(), "imds").unwrap_err();
            assert_eq!(e.source_name, "imds");
            assert!(e.reason.contains(what), "{e}");
            assert!(e.reason.contains("not a Gantry config"), "{e}");
        }
    }

    #[test]
    fn user_data_must_be_utf8_and_small() {
        let e = config_text(b"version = 1\n\xff".to_vec(), "drive").unwrap_err();
        assert_eq!(e.to_string(), "drive: (document): not UTF-8 (byte 12)");
        let e = config_text(vec![b'#'; MAX_CONFIG_BYTES + 1], "drive").unwrap_err();
        assert!(e.reason.contains("allowed"), "{e}");
    }
}
