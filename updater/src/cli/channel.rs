//! Writing the signed channel document.

use super::*;

#[derive(Debug, Args)]
pub(super) struct ChannelArgs {
    /// The bundle the channel offers.
    #[arg(long, value_name = "B.bundle")]
    pub(super) bundle: PathBuf,
    /// Where machines fetch it: absolute, or relative to the channel document's URL.
    #[arg(long)]
    pub(super) url: String,
    /// The channel's name.
    #[arg(long, default_value = "stable")]
    pub(super) channel: crate::policy::Channel,
    /// A private key (PKCS#8); repeat to sign with several.
    #[arg(long = "key", value_name = "K.key", required = true)]
    pub(super) keys: Vec<PathBuf>,
    /// The channel document to write.
    #[arg(long, value_name = "FILE")]
    pub(super) out: PathBuf,
    /// The document's serial: machines refuse one lower than the highest they accepted.
    /// Default: the signing time in unix seconds, which grows by itself.
    #[arg(long)]
    pub(super) serial: Option<u64>,
    /// Days until machines refuse the document as expired: re-sign before then, even with
    /// nothing new, or machines log a frozen channel at each check.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=366))]
    pub(super) valid_days: u64,
    /// A wave of the release's rollout, `AFTER_SECS:PERCENT` (repeat, in order): machines
    /// whose place is below PERCENT may install from AFTER_SECS after the rollout's start.
    /// Without waves, every machine may install at once.
    #[arg(long = "wave", value_name = "AFTER_SECS:PERCENT", value_parser = parse_wave)]
    pub(super) waves: Vec<crate::rollout::Wave>,
    /// Halt the release once this many machines rolled back from it.
    #[arg(long, value_name = "N")]
    pub(super) failure_budget_rollbacks: Option<u32>,
    /// Halt the release once this share (1 to 100) of the machines that tried it rolled
    /// back.
    #[arg(long, value_name = "PERCENT")]
    pub(super) failure_budget_percent: Option<u8>,
    /// When the waves start, in unix seconds. Default: the signing time.
    #[arg(long, value_name = "UNIX_SECS", requires = "waves")]
    pub(super) rollout_start: Option<u64>,
}

pub(super) fn parse_wave(s: &str) -> std::result::Result<crate::rollout::Wave, String> {
    let (after, percent) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not AFTER_SECS:PERCENT"))?;
    Ok(crate::rollout::Wave {
        after_secs: after
            .parse()
            .map_err(|e| format!("{s:?}: after {after:?}: {e}"))?,
        percent: percent
            .parse()
            .map_err(|e| format!("{s:?}: percent {percent:?}: {e}"))?,
    })
}

pub(super) fn channel(a: &ChannelArgs) -> Result<()> {
    check_bundle_url(&a.url)?;
    let keys = load_signing_keys(&a.keys)?;
    let trusted = TrustedKeys::new(keys.iter().map(SigningKey::public_key));
    let mut b = Bundle::open(&a.bundle, &trusted)?;
    b.verify_payloads()?;
    let m = b.manifest().clone();
    let (size, sha256) = bundle::hash_file(&a.bundle).map_err(|source| CliError::Io {
        action: "hash",
        path: a.bundle.clone(),
        source,
    })?;
    let now = crate::policy::unix_secs(std::time::SystemTime::now());
    let doc = Channel {
        format: crate::channel::FORMAT,
        channel: a.channel.to_string(),
        serial: a.serial.unwrap_or(now),
        expires: now + a.valid_days * 86_400,
        os_version: m.os_version,
        rollback_index: m.rollback_index,
        arch: m.arch,
        board: m.board,
        bundle: BundleRef {
            url: a.url.clone(),
            size,
            sha256,
        },
        rollout: (!a.waves.is_empty()).then(|| crate::rollout::Rollout {
            start: a.rollout_start.unwrap_or(now),
            waves: a.waves.clone(),
        }),
        failure_budget: (a.failure_budget_rollbacks.is_some()
            || a.failure_budget_percent.is_some())
        .then_some(crate::fleet::FailureBudget {
            rollbacks: a.failure_budget_rollbacks,
            percent: a.failure_budget_percent,
        }),
    };
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let wire = doc.sign(&refs)?;
    // What machines will check, checked before anything is published.
    Channel::verify(&wire, &trusted, &a.out.display().to_string())?;
    write_file(&a.out, &wire)?;
    println!(
        "channel {} {} serial={} expires={} rollback_index={} bundle={} size={} sha256={}",
        doc.channel,
        doc.os_version,
        doc.serial,
        doc.expires,
        doc.rollback_index,
        doc.bundle.url,
        doc.bundle.size,
        doc.bundle.sha256
    );
    if let Some(r) = &doc.rollout {
        let waves: Vec<String> = r
            .waves
            .iter()
            .map(|w| format!("{}s:{}%", w.after_secs, w.percent))
            .collect();
        println!("rollout start={} waves={}", r.start, waves.join(","));
    }
    Ok(())
}

/// A bundle URL resolves against any channel URL to an http(s) one, as
/// [`here::check_server`] will resolve it.
pub(super) fn check_bundle_url(url: &str) -> Result<()> {
    let bad = |reason: String| CliError::Arg {
        arg: "url",
        value: url.to_owned(),
        reason,
    };
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("is empty or holds a space or control character".into()).into());
    }
    let base = Url::parse("https://channel.invalid/updates/channel.json")
        .map_err(|e| bad(e.to_string()))?;
    let joined = base.join(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(joined.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {} is not http or https", joined.scheme())).into());
    }
    Ok(())
}
