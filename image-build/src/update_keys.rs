//! The keys of an image's updates: the private key that signs the build's bundle (it stays
//! on the build host) and the public keys the image trusts, in
//! [`gantry_updater::keys::TRUSTED_KEYS_DIR`].
//!
//! Without `--signing-key` the build uses a development key kept in the cache directory
//! (`<cache>/keys/dev.key`, made on first use, mode 0600), so that every build on one
//! machine trusts the bundles of every other build there, which is what the update tests
//! need. A release build passes its own key.

use std::path::{Path, PathBuf};

use gantry_updater::keys::{write_private_key, KeyError, PublicKey, SigningKey, TRUSTED_KEYS_DIR};

use crate::rootfs::Entry;
use crate::BuildOptions;

/// The key that signs this build's bundle.
pub fn signing_key(opts: &BuildOptions) -> Result<SigningKey, KeyError> {
    if let Some(path) = &opts.signing_key {
        return SigningKey::load(path);
    }
    let path = opts.cache_dir.join("keys/dev.key");
    if !path.exists() {
        write_private_key(&path, &SigningKey::generate_pkcs8()?)?;
    }
    SigningKey::load(&path)
}

/// One root entry per trusted public key: the signing key's and each listed file's (read
/// relative to `def_dir`, and checked), written as `<key id>.pub` into `work`.
pub fn trusted_entries(
    signing: &SigningKey,
    listed: &[PathBuf],
    def_dir: &Path,
    work: &Path,
) -> Result<Vec<Entry>, KeyError> {
    let io = |source| KeyError::Io {
        path: work.to_owned(),
        source,
    };
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(io)?;
    }
    std::fs::create_dir_all(work).map_err(io)?;
    let mut keys = vec![PublicKey {
        comment: "image build signing key".into(),
        ..signing.public_key()
    }];
    for file in listed {
        let path = def_dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        keys.push(PublicKey::parse(&text, &path)?);
    }
    let mut entries: Vec<Entry> = Vec::new();
    for key in keys {
        let name = format!("{}.pub", key.id());
        let dest = format!("{TRUSTED_KEYS_DIR}/{name}");
        if entries.iter().any(|e| e.path == dest) {
            continue;
        }
        let source = work.join(&name);
        std::fs::write(&source, key.to_line()).map_err(io)?;
        entries.push(Entry {
            source,
            path: dest,
            mode: 0o644,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_dev_key_is_made_once_private_and_trusted_with_the_listed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            definition: dir.path().join("d.toml"),
            out_dir: dir.path().join("out"),
            cache_dir: dir.path().join("cache"),
            signing_key: None,
        };
        let first = signing_key(&opts).unwrap();
        let again = signing_key(&opts).unwrap();
        assert_eq!(first.id(), again.id());
        let mode = std::fs::metadata(dir.path().join("cache/keys/dev.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let other =
            SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap(), Path::new("o")).unwrap();
        std::fs::write(dir.path().join("next.pub"), other.public_key().to_line()).unwrap();
        let entries = trusted_entries(
            &first,
            &["next.pub".into(), "next.pub".into()],
            dir.path(),
            &dir.path().join("work"),
        )
        .unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                format!("{TRUSTED_KEYS_DIR}/{}.pub", first.id()),
                format!("{TRUSTED_KEYS_DIR}/{}.pub", other.id())
            ]
        );

        std::fs::write(dir.path().join("bad.pub"), "ssh-ed25519 AAAA").unwrap();
        let err = trusted_entries(
            &first,
            &["bad.pub".into()],
            dir.path(),
            &dir.path().join("w"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bad.pub") && err.contains("ssh-ed25519"),
            "{err}"
        );
    }
}
