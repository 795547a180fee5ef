//! Signing, verifying and inspecting bundles.

use super::*;

#[derive(Debug, Args)]
pub(super) struct SignArgs {
    /// The kernel (bzImage).
    #[arg(long, value_name = "FILE")]
    pub(super) kernel: PathBuf,
    /// The image's own kernel arguments, without root=, dm-mod.*, gantry.slot= (the
    /// installer adds those per slot); must include panic=N.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub(super) cmdline: String,
    /// The root image: erofs with its dm-verity tree appended.
    #[arg(long, value_name = "FILE")]
    pub(super) root: PathBuf,
    /// dm-verity parameters: image-build's gantry.json (its "verity") or a bare object.
    #[arg(long, value_name = "FILE.json")]
    pub(super) verity: PathBuf,
    /// The OS version the bundle installs.
    #[arg(long, value_name = "V")]
    pub(super) version: String,
    /// Must grow with every release; machines refuse a lower one than they run.
    #[arg(long, value_name = "N")]
    pub(super) rollback_index: u64,
    #[arg(long, default_value = "generic")]
    pub(super) board: String,
    #[arg(long, default_value = "x86_64")]
    pub(super) arch: String,
    /// A private key (PKCS#8); repeat to sign with several (key rotation).
    #[arg(long = "key", value_name = "K.key", required = true)]
    pub(super) keys: Vec<PathBuf>,
    /// The bundle to write.
    #[arg(long, value_name = "B.bundle")]
    pub(super) out: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("trust").required(true).args(["keys_dir", "keys"])))]
pub(super) struct VerifyArgs {
    /// The bundle file.
    pub(super) bundle: PathBuf,
    /// Trust every *.pub file of DIR (as the image does with /etc/gantry/update-keys).
    #[arg(long = "keys", value_name = "DIR")]
    pub(super) keys_dir: Option<PathBuf>,
    /// Trust this public key file; repeatable.
    #[arg(long = "key", value_name = "F.pub")]
    pub(super) keys: Vec<PathBuf>,
}

pub(super) fn sign(a: &SignArgs) -> Result<()> {
    readable_file("kernel", &a.kernel)?;
    readable_file("root", &a.root)?;
    let keys = load_signing_keys(&a.keys)?;
    let verity = read_verity(&a.verity)?;
    let meta = BundleMeta {
        os_version: a.version.clone(),
        rollback_index: a.rollback_index,
        arch: a.arch.clone(),
        board: a.board.clone(),
        verity,
    };
    let args: Vec<String> = a.cmdline.split_whitespace().map(str::to_owned).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let manifest = bundle::write(&a.out, &meta, &a.kernel, &args, &a.root, &refs)?;
    println!(
        "signed {} {} rollback_index={} signed_by={}",
        a.out.display(),
        manifest.os_version,
        manifest.rollback_index,
        join_ids(keys.iter().map(SigningKey::id))
    );
    Ok(())
}

pub(super) fn verify(a: &VerifyArgs) -> Result<()> {
    let trusted = match &a.keys_dir {
        Some(dir) => TrustedKeys::load_dir(dir)?,
        None => load_public_keys(&a.keys)?,
    };
    let mut b = Bundle::open(&a.bundle, &trusted)?;
    b.verify_payloads()?;
    b.cmdline_args()?;
    let m = b.manifest();
    println!(
        "ok {} rollback_index={} signed_by={}",
        m.os_version,
        m.rollback_index,
        join_ids(b.signed_by().iter().copied())
    );
    Ok(())
}

pub(super) fn inspect(path: &Path) -> Result<()> {
    let (manifest, key_ids) = bundle::read_unverified(path)?;
    eprintln!(
        "note: nothing was verified (not the signature, not the payloads); \
         `gantry-update verify` is the check"
    );
    let out = serde_json::json!({ "manifest": manifest, "signature_key_ids": key_ids });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The verity parameters from image-build's manifest (its `verity` field) or a bare
/// [`Verity`] object.
pub(super) fn read_verity(path: &Path) -> Result<Verity> {
    let bytes = std::fs::read(path).map_err(|source| CliError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| CliError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let (value, what) = match value.get("verity") {
        Some(v) => (v.clone(), "verity"),
        None => (value, "dm-verity parameters"),
    };
    Ok(serde_json::from_value(value).map_err(|e| invalid(format!("{what}: {e}")))?)
}
