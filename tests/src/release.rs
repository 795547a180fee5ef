//! Releases to update to: another version of the shipped image, its bundle published with
//! a channel document signed by the development key the release image trusts.

use std::path::Path;
use std::process::Command;

use gantry_image_build::{BuildManifest, BuildOptions};
use gantry_updater::channel::{BundleRef, Channel};
use gantry_updater::keys::SigningKey;

/// `text` with `from` replaced by `to`; `from` must be there (a variant that changed
/// nothing would test nothing).
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the definition has no {from:?}");
    text.replacen(from, to, 1)
}

/// The shipped definition as `version`, one rollback index up.
pub fn next_version(text: &str, version: &str) -> String {
    let t = edit(
        text,
        "version = \"0.1.0\"",
        &format!("version = \"{version}\""),
    );
    edit(&t, "rollback_index = 1", "rollback_index = 2")
}

/// Release 0.2.0, built once per test process.
pub fn v020() -> &'static BuildManifest {
    static V020: std::sync::OnceLock<BuildManifest> = std::sync::OnceLock::new();
    V020.get_or_init(|| crate::build_variant("v0.2.0", |t| next_version(&t, "0.2.0")))
}

/// Release 0.3.0, built once per test process.
pub fn v030() -> &'static BuildManifest {
    static V030: std::sync::OnceLock<BuildManifest> = std::sync::OnceLock::new();
    V030.get_or_init(|| {
        crate::build_variant("v0.3.0", |t| {
            let t = edit(&t, "version = \"0.1.0\"", "version = \"0.3.0\"");
            edit(&t, "rollback_index = 1", "rollback_index = 3")
        })
    })
}

/// Release 0.2.1, broken by a packaging mistake: it lost the container runtime, so PID 1
/// cannot start a required container and the health gate never passes. Built once per
/// test process.
pub fn v021_no_runtime() -> &'static BuildManifest {
    static V021: std::sync::OnceLock<BuildManifest> = std::sync::OnceLock::new();
    V021.get_or_init(|| {
        crate::build_variant("v0.2.1-no-runtime", |t| {
            let t = next_version(&t, "0.2.1");
            let start = t
                .find("# The image store, `gantry run`")
                .expect("runtime entry");
            let end = start + t[start..].find("\n\n").expect("entry ends");
            format!("{}{}", &t[..start], &t[end..])
        })
    })
}

/// The development signing key the builds use (and the release image trusts).
pub fn dev_key() -> SigningKey {
    SigningKey::load(
        &BuildOptions::default_for_workspace()
            .cache_dir
            .join("keys/dev.key"),
    )
    .expect("the development key the image build made")
}

/// The SHA-256 of a file, by coreutils' `sha256sum`.
pub fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// Publishes `build`'s bundle in `dir` with `channel.json` signed by the development key,
/// for channel `stable`, valid a day; `change` may add a rollout or a failure budget.
pub fn publish(
    dir: &Path,
    build: &BuildManifest,
    rollback_index: u64,
    change: impl FnOnce(&mut Channel),
) {
    let name = build
        .bundle
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a bundle file name")
        .to_owned();
    let dest = dir.join(&name);
    std::fs::copy(&build.bundle, &dest).expect("copy the bundle");
    let size = std::fs::metadata(&dest).expect("bundle").len();
    let sha256 = sha256_of(&dest);
    let key = dev_key();
    assert_eq!(key.id().to_string(), build.signing_key_id);
    let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
    let mut channel = Channel {
        format: gantry_updater::channel::FORMAT,
        channel: "stable".into(),
        serial: now,
        expires: now + 86_400,
        os_version: build.version.clone(),
        rollback_index,
        arch: "x86_64".into(),
        board: "generic".into(),
        bundle: BundleRef {
            url: name,
            size,
            sha256,
        },
        rollout: None,
        failure_budget: None,
    };
    change(&mut channel);
    let signed = channel.sign(&[&key]).expect("sign the channel document");
    gantry_durable::write_atomic(&dir.join("channel.json"), &signed).expect("channel.json");
}
