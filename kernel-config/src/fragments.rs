//! The kernel config fragments shipped in `kernel-config/fragments/`, parsed into typed
//! requirements.
//!
//! A fragment is a Kconfig snippet. Its first comment line `# feature: <name>` names the
//! feature it belongs to; every option is preceded by a one-line comment giving the reason
//! Gantry needs it (Bottlerocket's style). `CONFIG_X=y` requires an option to be built in,
//! `# CONFIG_X is not set` requires it off, `CONFIG_X=<value>` requires that exact value.

use std::fmt;

/// The fragments compiled into this crate, in file-name order (the order the kernel build
/// merges them in).
pub const FRAGMENTS: &[(&str, &str)] = &[
    (
        "00-base.config",
        include_str!("../fragments/00-base.config"),
    ),
    (
        "10-boot.config",
        include_str!("../fragments/10-boot.config"),
    ),
    (
        "20-virtio.config",
        include_str!("../fragments/20-virtio.config"),
    ),
    (
        "21-nvme.config",
        include_str!("../fragments/21-nvme.config"),
    ),
    (
        "30-erofs.config",
        include_str!("../fragments/30-erofs.config"),
    ),
    (
        "31-dm-verity.config",
        include_str!("../fragments/31-dm-verity.config"),
    ),
    (
        "32-data-fs.config",
        include_str!("../fragments/32-data-fs.config"),
    ),
    (
        "33-overlayfs.config",
        include_str!("../fragments/33-overlayfs.config"),
    ),
    (
        "40-namespaces.config",
        include_str!("../fragments/40-namespaces.config"),
    ),
    (
        "41-cgroups.config",
        include_str!("../fragments/41-cgroups.config"),
    ),
    (
        "42-seccomp.config",
        include_str!("../fragments/42-seccomp.config"),
    ),
    (
        "50-network.config",
        include_str!("../fragments/50-network.config"),
    ),
    (
        "51-netfilter.config",
        include_str!("../fragments/51-netfilter.config"),
    ),
    (
        "52-bridge.config",
        include_str!("../fragments/52-bridge.config"),
    ),
    (
        "60-fw-cfg.config",
        include_str!("../fragments/60-fw-cfg.config"),
    ),
    (
        "61-watchdog.config",
        include_str!("../fragments/61-watchdog.config"),
    ),
    (
        "62-keyboard.config",
        include_str!("../fragments/62-keyboard.config"),
    ),
    (
        "70-hardening.config",
        include_str!("../fragments/70-hardening.config"),
    ),
];

/// What a requirement wants of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Built in (`=y`); a module (`=m`) does not count, Gantry has no module loader.
    BuiltIn,
    /// Not set.
    Off,
    /// Exactly this value (a number or a quoted string, as Kconfig writes it).
    Value(String),
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::BuiltIn => f.write_str("y"),
            Want::Off => f.write_str("not set"),
            Want::Value(v) => f.write_str(v),
        }
    }
}

/// One option Gantry requires, with the feature it belongs to and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The option name, with the `CONFIG_` prefix.
    pub option: String,
    pub want: Want,
    pub feature: String,
    pub reason: String,
}

/// A fragment line that is neither a comment, an option, nor blank.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("{file}:{line}: fragment has no `# feature:` header")]
    NoFeature { file: String, line: usize },
    #[error("{file}:{line}: {option} has no reason comment above it")]
    NoReason {
        file: String,
        line: usize,
        option: String,
    },
    #[error("{file}:{line}: cannot parse {text:?}")]
    Unparsable {
        file: String,
        line: usize,
        text: String,
    },
}

/// Parses one fragment's text.
pub fn parse_fragment(file: &str, text: &str) -> Result<Vec<Requirement>, FragmentError> {
    let mut feature: Option<String> = None;
    let mut reason: Option<String> = None;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = i + 1;
        if line.is_empty() {
            reason = None;
            continue;
        }
        let entry = match parse_line(line) {
            Some(entry) => entry,
            None => {
                return Err(FragmentError::Unparsable {
                    file: file.to_owned(),
                    line: lineno,
                    text: line.to_owned(),
                })
            }
        };
        match entry {
            Line::Option(option, want) => {
                let feature = feature.clone().ok_or_else(|| FragmentError::NoFeature {
                    file: file.to_owned(),
                    line: lineno,
                })?;
                let reason = reason.take().ok_or_else(|| FragmentError::NoReason {
                    file: file.to_owned(),
                    line: lineno,
                    option: option.clone(),
                })?;
                out.push(Requirement {
                    option,
                    want,
                    feature,
                    reason,
                });
            }
            Line::Comment(c) => {
                if let Some(name) = c.strip_prefix("feature:") {
                    feature = Some(name.trim().to_owned());
                } else if feature.is_some() {
                    reason = Some(c.to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// Every requirement of every fragment compiled into this crate.
pub fn requirements() -> Result<Vec<Requirement>, FragmentError> {
    let mut all = Vec::new();
    for (file, text) in FRAGMENTS {
        all.extend(parse_fragment(file, text)?);
    }
    Ok(all)
}

/// The options of every fragment, one `CONFIG_X=v` or `# CONFIG_X is not set` line each,
/// in fragment order: the `KCONFIG_ALLCONFIG` input for `make allnoconfig`. Comments are
/// left out, so that rewording a reason does not change the kernel (or its cache key).
pub fn merged_text() -> String {
    FRAGMENTS
        .iter()
        .flat_map(|(_, text)| text.lines())
        .filter_map(|line| match parse_line(line.trim())? {
            Line::Option(name, Want::Off) => Some(format!("# {name} is not set\n")),
            Line::Option(name, want) => Some(format!("{name}={want}\n")),
            Line::Comment(_) => None,
        })
        .collect()
}

enum Line {
    Option(String, Want),
    Comment(String),
}

/// Parses a `.config` or fragment line: `CONFIG_X=v`, `# CONFIG_X is not set`, or a comment.
fn parse_line(line: &str) -> Option<Line> {
    if let Some(rest) = line.strip_prefix('#') {
        let rest = rest.trim();
        if let Some(name) = rest.strip_suffix(" is not set") {
            if is_option_name(name) {
                return Some(Line::Option(name.to_owned(), Want::Off));
            }
        }
        return Some(Line::Comment(rest.to_owned()));
    }
    let (name, value) = line.split_once('=')?;
    if !is_option_name(name) || value.is_empty() {
        return None;
    }
    let want = match value {
        "y" => Want::BuiltIn,
        "n" => Want::Off,
        v => Want::Value(v.to_owned()),
    };
    Some(Line::Option(name.to_owned(), want))
}

fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// The value a kernel `.config` gives one option: what [`parse_line`] found, or nothing.
pub(crate) fn parse_config_line(line: &str) -> Option<(String, Want)> {
    match parse_line(line.trim())? {
        Line::Option(name, want) => Some((name, want)),
        Line::Comment(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_fragment_parses_with_a_feature_and_reasons() {
        let reqs = requirements().expect("shipped fragments parse");
        assert!(reqs.len() > 50, "only {} requirements", reqs.len());
        assert!(reqs.iter().all(|r| !r.reason.is_empty()));
        let verity = reqs
            .iter()
            .find(|r| r.option == "CONFIG_DM_VERITY")
            .expect("dm-verity is required");
        assert_eq!(verity.feature, "dm-verity");
        assert_eq!(verity.want, Want::BuiltIn);
        let modules = reqs
            .iter()
            .find(|r| r.option == "CONFIG_MODULES")
            .expect("modules are required off");
        assert_eq!(modules.want, Want::Off);
    }

    #[test]
    fn every_fragment_file_is_compiled_in_and_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fragments");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".config"))
            .collect();
        files.sort();
        let compiled: Vec<&str> = FRAGMENTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, compiled);
    }

    #[test]
    fn merged_text_holds_every_option_and_no_comment() {
        let text = merged_text();
        assert!(text.contains("CONFIG_DM_VERITY=y\n"));
        assert!(text.contains("# CONFIG_MODULES is not set\n"));
        assert_eq!(
            text.lines().count(),
            requirements().unwrap().len(),
            "{text}"
        );
    }

    #[test]
    fn refuses_an_option_without_a_reason() {
        let err = parse_fragment("x.config", "# feature: f\nCONFIG_A=y\n").unwrap_err();
        assert!(
            matches!(err, FragmentError::NoReason { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_fragment_without_a_feature() {
        let err = parse_fragment("x.config", "CONFIG_A=y\n").unwrap_err();
        assert!(
            matches!(err, FragmentError::NoFeature { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_garbage_lines() {
        let err = parse_fragment("x.config", "# feature: f\n# r\nCONFIG_a=y\n").unwrap_err();
        assert!(
            matches!(err, FragmentError::Unparsable { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_blank_line_ends_a_reason() {
        let err = parse_fragment("x.config", "# feature: f\n# why\n\nCONFIG_A=y\n").unwrap_err();
        assert!(matches!(err, FragmentError::NoReason { .. }), "{err}");
    }

    #[test]
    fn parses_values_and_off() {
        let reqs = parse_fragment(
            "x.config",
            "# feature: f\n# a\nCONFIG_A=\"x y\"\n# b\n# CONFIG_B is not set\n# c\nCONFIG_C=64\n",
        )
        .unwrap();
        let wants: Vec<_> = reqs.iter().map(|r| r.want.clone()).collect();
        assert_eq!(
            wants,
            vec![
                Want::Value("\"x y\"".into()),
                Want::Off,
                Want::Value("64".into())
            ]
        );
    }
}
