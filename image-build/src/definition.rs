//! The image definition: a TOML file in the repository (`images/gantry.toml`) that says what
//! goes into an image. Unknown keys are refused; every error names the key.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageDefinition {
    /// Image name: the output files are `<name>.img` and `<name>.qcow2`.
    pub name: String,
    /// OS version, written to `/etc/os-release` and logged by PID 1.
    pub version: String,
    /// Grows with every release: a machine refuses an update bundle with a lower index
    /// than the image it runs.
    pub rollback_index: u64,
    /// The kind of machine the image is for; a bundle installs only on the same board.
    #[serde(default = "default_board")]
    pub board: String,
    /// Host name written to `/etc/hostname` (the machine config may override it).
    pub hostname: String,
    /// Every file in the image gets this time (seconds since the epoch), so that builds
    /// are reproducible.
    pub source_date_epoch: u64,
    pub kernel: Kernel,
    pub disk: Disk,
    /// Binaries of this workspace, built static, and where they go in the root.
    #[serde(default, rename = "binary")]
    pub binaries: Vec<Binary>,
    /// Files from the repository, and where they go in the root.
    #[serde(default, rename = "file")]
    pub files: Vec<File>,
    #[serde(default)]
    pub update: Update,
}

fn default_board() -> String {
    "generic".into()
}

/// Update keys: the public half of the key that signs the build's bundle is always
/// trusted; these are trusted as well (a key being rotated in or out).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Public key files (`gantry-ed25519 …`), relative to the definition's directory.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// The kernel source tarball (Debian's `linux-source-6.1` package installs it).
    pub source: PathBuf,
    /// Parameters before the ones the build adds (root, dm-verity, slot).
    pub cmdline: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub esp_mib: u64,
    /// Each of ROOT-A and ROOT-B.
    pub root_mib: u64,
    pub data_mib: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// Cargo package.
    pub package: String,
    /// Binary target within the package.
    pub bin: String,
    /// Absolute path inside the image.
    pub path: String,
    /// More names for the same executable (symbolic links to `path`): a multi-call
    /// executable picks what to be from the name it was started by.
    #[serde(default)]
    pub links: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// A file on the build host: absolute (`/bin/busybox`), or relative to the
    /// definition's directory (and then it may not leave that directory).
    pub source: PathBuf,
    /// Absolute path inside the image.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read image definition {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image definition {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("image definition {path}: {key}: {value:?} {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        reason: &'static str,
    },
}

impl ImageDefinition {
    pub fn load(path: &Path) -> Result<Self, DefinitionError> {
        Self::load_with_text(path).map(|(def, _)| def)
    }

    /// Loads, and also returns the text (an input of the build's identifiers).
    pub fn load_with_text(path: &Path) -> Result<(Self, String), DefinitionError> {
        let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok((Self::parse(path, &text)?, text))
    }

    /// Parses and validates; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, DefinitionError> {
        let def: Self = toml::from_str(text).map_err(|e| DefinitionError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        def.validate(path)?;
        Ok(def)
    }

    fn validate(&self, path: &Path) -> Result<(), DefinitionError> {
        let invalid = |key: String, value: &str, reason| DefinitionError::Invalid {
            path: path.to_owned(),
            key,
            value: value.to_owned(),
            reason,
        };
        let simple = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        };
        if !simple(&self.name) {
            return Err(invalid(
                "name".into(),
                &self.name,
                "must be [A-Za-z0-9._+-]+",
            ));
        }
        if !simple(&self.board) {
            return Err(invalid(
                "board".into(),
                &self.board,
                "must be [A-Za-z0-9._+-]+",
            ));
        }
        if !simple(&self.version) {
            return Err(invalid(
                "version".into(),
                &self.version,
                "must be [A-Za-z0-9._+-]+",
            ));
        }
        for (key, mib, min) in [
            ("disk.esp_mib", self.disk.esp_mib, 34),
            ("disk.root_mib", self.disk.root_mib, 8),
            ("disk.data_mib", self.disk.data_mib, 8),
        ] {
            if !(min..=1 << 20).contains(&mib) {
                return Err(invalid(
                    key.into(),
                    &mib.to_string(),
                    "is out of range (ESP at least 34, others at least 8, at most 1 TiB)",
                ));
            }
        }
        // The command line goes into a GRUB script: nothing GRUB would expand or split.
        if !self
            .kernel
            .cmdline
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" _.,=:/+-".contains(&b))
        {
            return Err(invalid(
                "kernel.cmdline".into(),
                &self.kernel.cmdline,
                "may only hold letters, digits, spaces and _.,=:/+-",
            ));
        }
        if !gantry_contract::valid_hostname(&self.hostname) {
            return Err(invalid(
                "hostname".into(),
                &self.hostname,
                "is not a valid host name (RFC 1123)",
            ));
        }
        let mut targets: Vec<&str> = Vec::new();
        let entries = self
            .binaries
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("binary[{i}].path"), b.path.as_str()))
            .chain(self.binaries.iter().enumerate().flat_map(|(i, b)| {
                b.links
                    .iter()
                    .enumerate()
                    .map(move |(j, l)| (format!("binary[{i}].links[{j}]"), l.as_str()))
            }))
            .chain(
                self.files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (format!("file[{i}].path"), f.path.as_str())),
            );
        for (key, target) in entries {
            if !is_clean_absolute(target) {
                return Err(invalid(
                    key,
                    target,
                    "must be an absolute path without '.' or '..'",
                ));
            }
            if targets.contains(&target) {
                return Err(invalid(key, target, "is given twice"));
            }
            targets.push(target);
        }
        // Nothing is placed through a link: staging writes below the image's root only.
        for (i, b) in self.binaries.iter().enumerate() {
            for (j, link) in b.links.iter().enumerate() {
                let below = format!("{link}/");
                if targets.iter().any(|t| t.starts_with(&below)) {
                    return Err(invalid(
                        format!("binary[{i}].links[{j}]"),
                        link,
                        "is the parent of another path in the image",
                    ));
                }
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.mode > 0o7777 {
                return Err(invalid(
                    format!("file[{i}].mode"),
                    &format!("{:o}", f.mode),
                    "is not a permission mode",
                ));
            }
            if f.source.components().any(|c| c == Component::ParentDir) {
                return Err(invalid(
                    format!("file[{i}].source"),
                    &f.source.display().to_string(),
                    "must not contain '..'",
                ));
            }
        }
        Ok(())
    }
}

/// `/a/b`: absolute, no `.`/`..`/empty components, not the root itself.
pub(crate) fn is_clean_absolute(p: &str) -> bool {
    p.len() > 1
        && p.starts_with('/')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "gantry"
version = "0.1.0"
rollback_index = 1
hostname = "gantry"
source_date_epoch = 1700000000
[kernel]
source = "/usr/src/linux-source-6.1.tar.xz"
cmdline = "console=ttyS0"
[disk]
esp_mib = 64
root_mib = 128
data_mib = 64
[[binary]]
package = "gantry-init"
bin = "gantry-init"
path = "/sbin/init"
"#;

    fn parse(text: &str) -> Result<ImageDefinition, DefinitionError> {
        ImageDefinition::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn parses_every_shipped_definition() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let def = ImageDefinition::load(&path).unwrap();
                assert!(
                    def.files
                        .iter()
                        .map(|f| &f.path)
                        .chain(def.binaries.iter().map(|b| &b.path))
                        .any(|p| p == "/sbin/init"),
                    "{} has no /sbin/init",
                    path.display()
                );
                names.push(def.name);
            }
        }
        names.sort();
        assert_eq!(names, ["baseline-busybox", "gantry"]);
    }

    #[test]
    fn command_lines_that_grub_would_expand_are_refused() {
        for bad in ["a $x", "a;b", "a'b", "a{b}"] {
            let text = GOOD.replace("console=ttyS0", bad);
            let err = parse(&text).unwrap_err();
            assert!(err.to_string().contains("kernel.cmdline"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_invalid_hostname_is_refused() {
        let err = parse(&GOOD.replace("hostname = \"gantry\"", "hostname = \"-x\"")).unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
    }

    #[test]
    fn parses_a_minimal_definition() {
        let def = parse(GOOD).unwrap();
        assert_eq!(def.disk.root_mib, 128);
        assert_eq!(def.binaries[0].path, "/sbin/init");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = parse(&GOOD.replace("[disk]", "[disk]\nsize = 3")).unwrap_err();
        assert!(err.to_string().contains("unknown field `size`"), "{err}");
    }

    #[test]
    fn paths_that_escape_are_refused_with_their_key() {
        let err = parse(&GOOD.replace("/sbin/init", "/sbin/../init")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image definition t.toml: binary[0].path: \"/sbin/../init\" must be an \
             absolute path without '.' or '..'"
        );
        let err = parse(&format!(
            "{GOOD}[[file]]\nsource = \"../x\"\npath = \"/etc/x\"\nmode = 0o644\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("file[0].source"), "{err}");
    }

    #[test]
    fn links_are_clean_unique_and_never_a_parent_of_another_path() {
        let with = |links: &str| parse(&format!("{GOOD}links = {links}\n"));
        let def = with(r#"["/usr/bin/gantry-init"]"#).unwrap();
        assert_eq!(def.binaries[0].links, ["/usr/bin/gantry-init"]);
        let err = with(r#"["/usr/bin/../x"]"#).unwrap_err();
        assert!(err.to_string().contains("binary[0].links[0]"), "{err}");
        let err = with(r#"["/usr/bin/a", "/sbin/init"]"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("binary[0].links[1]: \"/sbin/init\" is given twice"),
            "{err}"
        );
        let err = parse(&format!(
            "{GOOD}links = [\"/etc\"]\n[[file]]\nsource = \"x\"\npath = \"/etc/x\"\nmode = 0o644\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("is the parent of another path"),
            "{err}"
        );
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        let err = parse(&GOOD.replace("esp_mib = 64", "esp_mib = 1")).unwrap_err();
        assert!(err.to_string().contains("disk.esp_mib"), "{err}");
    }
}
