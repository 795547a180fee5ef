//! Container names: they become directory names, cgroup names and log file names, so they
//! must never carry a path separator or a `..`.

use std::fmt;
use std::str::FromStr;

/// A validated container name: 1 to 63 characters of `[a-zA-Z0-9_.-]`, starting with a
/// letter or digit (the rule Docker applies to names, bounded like a DNS label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("container name {name:?} is invalid: {reason}")]
pub struct InvalidContainerId {
    pub name: String,
    pub reason: &'static str,
}

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = InvalidContainerId;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let fail = |reason| {
            Err(InvalidContainerId {
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() || name.len() > 63 {
            return fail("must be 1 to 63 characters");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return fail("must start with a letter or digit");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return fail("may only hold letters, digits, '_', '.' and '-'");
        }
        Ok(ContainerId(name.to_owned()))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_style_names() {
        for name in ["web", "web-1", "db_2.primary", "9lives"] {
            assert_eq!(name.parse::<ContainerId>().unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_names_that_could_escape_a_directory() {
        for name in [
            "",
            "..",
            ".hidden",
            "a/b",
            "../etc",
            "-x",
            "a b",
            &"x".repeat(64),
        ] {
            let err = name.parse::<ContainerId>().unwrap_err();
            assert_eq!(err.name, name);
        }
    }
}
