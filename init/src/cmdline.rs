//! The kernel command line: the `gantry.*` parameters PID 1 reads.

use gantry_updater::Slot;

use crate::config::imds::ImdsSetting;
use crate::watchdog::WatchdogSetting;

/// What PID 1 takes from the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// The slot GRUB booted (`gantry.slot=A`); `None` when booted without GRUB.
    pub slot: Option<Slot>,
    /// A host name that overrides the image's (`gantry.hostname=`).
    pub hostname: Option<String>,
    /// The machine config, base64 (`gantry.config=`); decoded by [`crate::config::sources`]
    /// so that a bad value is refused like any other bad config.
    pub config: Option<String>,
    /// Whether and where to ask the instance metadata service (`gantry.imds=host[:port]`
    /// or `gantry.imds=off`); the config cannot say, since IMDS is where it may come from.
    pub imds: ImdsSetting,
    /// The hardware watchdog's timeout, or off (`gantry.watchdog=<secs>`, `0` = off).
    pub watchdog: WatchdogSetting,
    /// Parameters that start with `gantry.` but mean nothing to this version, or carry a
    /// value it cannot use: logged, never fatal.
    pub ignored: Vec<String>,
}

impl BootParams {
    pub fn parse(cmdline: &str) -> Self {
        let mut params = BootParams::default();
        for word in split(cmdline) {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "gantry.slot" => match value.parse() {
                    Ok(slot) => params.slot = Some(slot),
                    Err(_) => params.ignored.push(word),
                },
                "gantry.hostname" => params.hostname = Some(value.to_owned()),
                "gantry.config" => params.config = Some(value.to_owned()),
                "gantry.imds" => match value.parse() {
                    Ok(imds) => params.imds = imds,
                    Err(_) => params.ignored.push(word),
                },
                "gantry.watchdog" => match value.parse() {
                    Ok(setting) => params.watchdog = setting,
                    Err(_) => params.ignored.push(word),
                },
                k if k.starts_with("gantry.") => params.ignored.push(word),
                _ => {}
            }
        }
        params
    }
}

/// Splits a command line into parameters the way the kernel does: on spaces, except inside
/// double quotes, which are removed.
fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

pub use gantry_contract::valid_hostname;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_slot_and_hostname_between_quoted_parameters() {
        let p = BootParams::parse(
            "console=ttyS0 \"dm-mod.create=vroot,,,ro,0 8 verity 1 a b\" gantry.slot=B \
             gantry.hostname=node-1 gantry.future=1\n",
        );
        assert_eq!(p.slot, Some(Slot::B));
        assert_eq!(p.hostname.as_deref(), Some("node-1"));
        assert_eq!(p.ignored, vec!["gantry.future=1".to_owned()]);
    }

    #[test]
    fn reads_the_config_and_imds_parameters() {
        let p = BootParams::parse("gantry.config=dmVyc2lvbiA9IDEK== gantry.imds=10.0.2.100:8080");
        assert_eq!(p.config.as_deref(), Some("dmVyc2lvbiA9IDEK=="));
        assert_eq!(p.imds, ImdsSetting::At("10.0.2.100:8080".parse().unwrap()));
        assert_eq!(BootParams::parse("gantry.imds=off").imds, ImdsSetting::Off);
        assert_eq!(BootParams::parse("").imds, ImdsSetting::default());
        let bad = BootParams::parse("gantry.imds=a:b:c");
        assert_eq!(bad.imds, ImdsSetting::default());
        assert_eq!(bad.ignored, vec!["gantry.imds=a:b:c".to_owned()]);
    }

    #[test]
    fn reads_the_watchdog_timeout_and_ignores_one_out_of_range() {
        assert_eq!(
            BootParams::parse("").watchdog,
            WatchdogSetting::Timeout(crate::watchdog::DEFAULT_TIMEOUT_SECS)
        );
        assert_eq!(
            BootParams::parse("gantry.watchdog=30").watchdog,
            WatchdogSetting::Timeout(30)
        );
        assert_eq!(
            BootParams::parse("gantry.watchdog=0").watchdog,
            WatchdogSetting::Off
        );
        for bad in [
            "gantry.watchdog=4",
            "gantry.watchdog=601",
            "gantry.watchdog=x",
        ] {
            let p = BootParams::parse(bad);
            assert_eq!(p.watchdog, WatchdogSetting::default(), "{bad}");
            assert_eq!(p.ignored, vec![bad.to_owned()]);
        }
    }

    #[test]
    fn a_bad_slot_is_ignored_not_fatal() {
        let p = BootParams::parse("gantry.slot=Z");
        assert_eq!(p.slot, None);
        assert_eq!(p.ignored, vec!["gantry.slot=Z".to_owned()]);
    }
}
