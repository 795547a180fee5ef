//! Staged rollouts: which machines of a fleet may install a release, and from when, decided
//! by each machine alone from the signed channel document and its own machine id, so that
//! waves work from static files on any HTTP server or CDN.
//!
//! A channel document may carry a rollout:
//!
//! ```json
//! "rollout": {"start": 1765000000, "waves": [
//!     {"after_secs": 3600, "percent": 1}, {"after_secs": 14400, "percent": 5},
//!     {"after_secs": 86400, "percent": 10}, {"after_secs": 259200, "percent": 25},
//!     {"after_secs": 518400, "percent": 100}]}
//! ```
//!
//! (Bottlerocket's default schedule.) Wave `i` opens at `start + after_secs` and admits
//! every machine whose place is below its `percent`. A machine's place is a number in
//! [0, 100) from SHA-256 of its machine id and the release's version ([`place`]): stable
//! across reboots and checks, spread evenly over a fleet, and different for each release,
//! so the same machines are not always first (Cincinnati's per-node "wariness", with the
//! release mixed in). Without `rollout`, every machine may install at once. A rollout whose
//! last wave is below 100 holds the rest of the fleet until a later document (a higher
//! serial) widens it. The waves' times are the machine's own clock: a machine with a clock
//! far behind waits longer, one far ahead goes sooner, never outside the waves' order.
//!
//! Node-side overrides in `[update]` (see [`crate::policy`]): `ignore_waves = true` installs
//! as soon as the document names a release (a canary, or a machine an operator wants now);
//! `pin_version = "V"` installs only version V, whatever the channel says.

use serde::{Deserialize, Serialize};

/// The most waves a rollout may have.
pub const MAX_WAVES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Unix seconds (UTC) the waves count from.
    pub start: u64,
    pub waves: Vec<Wave>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Seconds after `start` at which the wave opens.
    pub after_secs: u64,
    /// The share of the fleet, 1 to 100, that may install once the wave is open.
    pub percent: u8,
}

/// What a rollout says to one machine at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Its wave is open.
    Open,
    /// Its wave opens at this time (unix seconds).
    OpensAt(u64),
    /// No wave of this document reaches its place: a later document must widen the rollout.
    NotInThisRollout,
}

impl Rollout {
    /// Checks the waves: at least one, at most [`MAX_WAVES`], percentages 1 to 100 that
    /// grow with times that grow. The error names the wave.
    pub fn check(&self) -> Result<(), String> {
        if self.waves.is_empty() {
            return Err("rollout.waves is empty (leave rollout out for all at once)".into());
        }
        if self.waves.len() > MAX_WAVES {
            return Err(format!(
                "rollout.waves has {} waves, more than {MAX_WAVES}",
                self.waves.len()
            ));
        }
        let mut last: Option<Wave> = None;
        for (i, w) in self.waves.iter().enumerate() {
            if !(1..=100).contains(&w.percent) {
                return Err(format!(
                    "rollout.waves[{i}].percent {} is not 1 to 100",
                    w.percent
                ));
            }
            if self.start.checked_add(w.after_secs).is_none() {
                return Err(format!(
                    "rollout.waves[{i}].after_secs {} is past the end of time",
                    w.after_secs
                ));
            }
            if let Some(prev) = last {
                if w.after_secs <= prev.after_secs || w.percent <= prev.percent {
                    return Err(format!(
                        "rollout.waves[{i}] ({} s, {} %) does not come after wave {} ({} s, \
                         {} %): both must grow",
                        w.after_secs,
                        w.percent,
                        i - 1,
                        prev.after_secs,
                        prev.percent
                    ));
                }
            }
            last = Some(*w);
        }
        Ok(())
    }

    /// The share of the fleet admitted at `now`: that of the last open wave, or 0.
    pub fn open_percent(&self, now: u64) -> u8 {
        self.waves
            .iter()
            .filter(|w| self.start.saturating_add(w.after_secs) <= now)
            .map(|w| w.percent)
            .max()
            .unwrap_or(0)
    }

    /// The next wave to open after `now`: when, and the share it admits.
    pub fn next_wave(&self, now: u64) -> Option<(u64, u8)> {
        self.waves
            .iter()
            .map(|w| (self.start.saturating_add(w.after_secs), w.percent))
            .filter(|&(at, _)| at > now)
            .min()
    }

    /// Whether a machine at `place` ([`place`]) may install at `now`.
    pub fn verdict(&self, place: f64, now: u64) -> Verdict {
        if place < f64::from(self.open_percent(now)) {
            return Verdict::Open;
        }
        match self.waves.iter().find(|w| place < f64::from(w.percent)) {
            Some(w) => Verdict::OpensAt(self.start.saturating_add(w.after_secs)),
            None => Verdict::NotInThisRollout,
        }
    }
}

/// A machine's place in the rollout of `version`, in [0, 100): the first 8 bytes of
/// SHA-256(`machine_id` NUL `version`) as a fraction of 2^64.
pub fn place(machine_id: &str, version: &str) -> f64 {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(machine_id.as_bytes());
    h.update(&[0u8]);
    h.update(version.as_bytes());
    let d = h.finish();
    let d = d.as_ref();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    // 2^64 as f64 is exact; the quotient is below 1 (u64::MAX rounds to 2^64 only at the
    // very top, which `min` keeps below 100).
    (u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0 * 100.0).min(99.999_999)
}

/// Reads a machine id file (`/etc/machine-id`): 32 lower-case hex digits and an optional
/// newline, at most 64 bytes read. The error says what is wrong.
pub fn read_machine_id(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let id = text.strip_suffix('\n').unwrap_or(&text);
    if id.len() != 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "{}: {id:?} is not 32 lower-case hex digits",
            path.display()
        ));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bottlerocket(start: u64) -> Rollout {
        let w = |after_secs, percent| Wave {
            after_secs,
            percent,
        };
        Rollout {
            start,
            waves: vec![
                w(3_600, 1),
                w(4 * 3_600, 5),
                w(86_400, 10),
                w(3 * 86_400, 25),
                w(6 * 86_400, 100),
            ],
        }
    }

    #[test]
    fn waves_open_in_order_and_admit_their_share() {
        let r = bottlerocket(1_000_000);
        r.check().expect("valid");
        assert_eq!(r.open_percent(999_999), 0, "before the start");
        assert_eq!(r.open_percent(1_000_000 + 3_599), 0);
        assert_eq!(r.open_percent(1_000_000 + 3_600), 1);
        assert_eq!(r.open_percent(1_000_000 + 86_400), 10);
        assert_eq!(r.open_percent(u64::MAX), 100);
        assert_eq!(r.next_wave(999_999), Some((1_003_600, 1)));
        assert_eq!(r.next_wave(1_003_600), Some((1_000_000 + 4 * 3_600, 5)));
        assert_eq!(r.next_wave(1_000_000 + 6 * 86_400), None);
        assert_eq!(r.verdict(0.5, 1_003_600), Verdict::Open);
        assert_eq!(r.verdict(7.0, 1_003_600), Verdict::OpensAt(1_086_400));
        assert_eq!(r.verdict(99.9, 1_003_600), Verdict::OpensAt(1_518_400));
        let partial = Rollout {
            start: 0,
            waves: vec![Wave {
                after_secs: 0,
                percent: 25,
            }],
        };
        assert_eq!(partial.verdict(30.0, 10), Verdict::NotInThisRollout);
        assert_eq!(partial.verdict(24.9, 0), Verdict::Open);
    }

    #[test]
    fn places_are_stable_spread_and_differ_per_release() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(place(id, "1.2.0"), place(id, "1.2.0"));
        assert_ne!(place(id, "1.2.0"), place(id, "1.3.0"));
        // 10 000 machine ids: each tenth of the range holds about a tenth of them.
        let mut buckets = [0u32; 10];
        for i in 0..10_000u32 {
            let p = place(&format!("{i:032x}"), "1.2.0");
            assert!((0.0..100.0).contains(&p), "{p}");
            buckets[(p / 10.0) as usize] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((850..=1150).contains(n), "bucket {i} holds {n} of 10000");
        }
        // The share admitted is the share asked for, within a percent.
        let r = Rollout {
            start: 0,
            waves: vec![Wave {
                after_secs: 0,
                percent: 5,
            }],
        };
        let admitted = (0..10_000u32)
            .filter(|i| r.verdict(place(&format!("{i:032x}"), "2.0.0"), 1) == Verdict::Open)
            .count();
        assert!(
            (400..=600).contains(&admitted),
            "{admitted} of 10000 for 5 %"
        );
    }

    #[test]
    fn bad_rollouts_are_refused_naming_the_wave() {
        let mut r = bottlerocket(0);
        r.waves[2].percent = 4;
        assert!(r.check().unwrap_err().contains("rollout.waves[2]"));
        let mut r = bottlerocket(0);
        r.waves[1].after_secs = 3_600;
        assert!(r.check().unwrap_err().contains("both must grow"));
        let mut r = bottlerocket(0);
        r.waves[4].percent = 101;
        assert!(r.check().unwrap_err().contains("not 1 to 100"));
        r.waves.clear();
        assert!(r.check().unwrap_err().contains("empty"));
        let r = Rollout {
            start: u64::MAX,
            waves: vec![Wave {
                after_secs: 1,
                percent: 1,
            }],
        };
        assert!(r.check().unwrap_err().contains("end of time"));
    }

    #[test]
    fn machine_ids_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("machine-id");
        std::fs::write(&p, "0123456789abcdef0123456789abcdef\n").expect("write");
        assert_eq!(
            read_machine_id(&p).expect("valid"),
            "0123456789abcdef0123456789abcdef"
        );
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123",
            "x".repeat(200).as_str(),
        ] {
            std::fs::write(&p, bad).expect("write");
            assert!(read_machine_id(&p).is_err(), "{bad:?}");
        }
        assert!(read_machine_id(&dir.path().join("none")).is_err());
    }
}
