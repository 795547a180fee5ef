//! What a root image says about itself: `/etc/os-release` with Gantry's own fields. The
//! image build writes it ([`Release::os_release`]); the installer reads the running one to
//! refuse a bundle for another board or with a lower rollback index. It sits in the
//! dm-verity-protected root, so it is as trustworthy as the root itself.

use std::path::Path;

/// The running image's release file.
pub const OS_RELEASE: &str = "/etc/os-release";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub board: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {reason}")]
    Field {
        path: String,
        key: &'static str,
        reason: String,
    },
}

impl Release {
    /// The `/etc/os-release` text of an image.
    pub fn os_release(&self) -> String {
        format!(
            "NAME=Gantry\nID=gantry\nPRETTY_NAME=\"Gantry {v}\"\nVERSION={v}\nVERSION_ID={v}\n\
             IMAGE_ID={name}\nIMAGE_VERSION={v}\nHOME_URL=\"https://gantry.invalid/\"\n\
             GANTRY_ROLLBACK_INDEX={index}\nGANTRY_BOARD={board}\n",
            v = self.version,
            name = self.name,
            index = self.rollback_index,
            board = self.board,
        )
    }

    pub fn read(path: &Path) -> Result<Self, ReleaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReleaseError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ReleaseError> {
        let get = |key: &'static str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_owned())
                .ok_or_else(|| ReleaseError::Field {
                    path: path.to_owned(),
                    key,
                    reason: "is missing".into(),
                })
        };
        let index = get("GANTRY_ROLLBACK_INDEX")?;
        Ok(Self {
            name: get("IMAGE_ID")?,
            version: get("VERSION_ID")?,
            rollback_index: index.parse().map_err(|_| ReleaseError::Field {
                path: path.to_owned(),
                key: "GANTRY_ROLLBACK_INDEX",
                reason: format!("{index:?} is not a number"),
            })?,
            board: get("GANTRY_BOARD")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_file_reads_back_and_missing_fields_are_named() {
        let r = Release {
            name: "gantry".into(),
            version: "0.2.0".into(),
            rollback_index: 7,
            board: "generic".into(),
        };
        assert_eq!(Release::parse(&r.os_release(), "os-release").unwrap(), r);
        let err = Release::parse("VERSION_ID=1\nIMAGE_ID=g\n", "/etc/os-release")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/etc/os-release: GANTRY_ROLLBACK_INDEX: is missing");
        let text = r.os_release().replace("=7", "=seven");
        assert!(Release::parse(&text, "f")
            .unwrap_err()
            .to_string()
            .contains("\"seven\" is not a number"));
    }
}
