//! Generating a signing key pair.

use super::*;

#[derive(Debug, Args)]
pub(super) struct KeygenArgs {
    /// Path and stem of the two files: NAME.key and NAME.pub.
    #[arg(long, value_name = "NAME")]
    pub(super) out: PathBuf,
    /// Comment at the end of NAME.pub's line (who owns the key, since when).
    #[arg(long, default_value = "")]
    pub(super) comment: String,
}

pub(super) fn keygen(a: &KeygenArgs) -> Result<()> {
    if let Some(c) = a.comment.chars().find(|c| c.is_control()) {
        return Err(CliError::Arg {
            arg: "comment",
            value: a.comment.clone(),
            reason: format!("holds the control character {c:?}"),
        }
        .into());
    }
    let key_path = with_suffix(&a.out, ".key");
    let pub_path = with_suffix(&a.out, ".pub");
    for path in [&key_path, &pub_path] {
        if path.symlink_metadata().is_ok() {
            return Err(CliError::Exists { path: path.clone() }.into());
        }
    }
    let pkcs8 = SigningKey::generate_pkcs8()?;
    let key = SigningKey::from_pkcs8(&pkcs8, &key_path)?;
    let mut public = key.public_key();
    public.comment = a.comment.trim().to_owned();
    keys::write_private_key(&key_path, &pkcs8)?;
    write_file(&pub_path, public.to_line().as_bytes())?;
    eprintln!(
        "wrote {} (private: keep it off the image) and {}",
        key_path.display(),
        pub_path.display()
    );
    println!("{}", key.id());
    Ok(())
}
