//! `[update.window]`: when a machine may reboot into an installed update, as days of the
//! week, a start time and a duration, in UTC; a window may run past midnight and past the
//! end of the week.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::{DAY_SECS, WEEK_SECS};

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Monday first, as ISO 8601 counts.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    /// 0 for Monday to 6 for Sunday.
    pub fn index(self) -> u64 {
        self as u64
    }

    /// The day of `t` (unix seconds, UTC); 1970-01-01 was a Thursday.
    pub fn of(t: u64) -> Weekday {
        let i = (t / DAY_SECS + 3) % 7;
        Weekday::ALL[i as usize]
    }
}

impl FromStr for Weekday {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Weekday::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Weekday::ALL[i])
            .ok_or_else(|| format!("{s:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"))
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Weekday::NAMES[*self as usize])
    }
}

/// A set of weekdays; never empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DaySet(u8);

impl DaySet {
    pub const EVERY_DAY: DaySet = DaySet(0x7f);

    /// The set of `days`; refused when empty or when a day is given twice (a typo, most
    /// likely).
    pub fn new(days: &[Weekday]) -> Result<DaySet, String> {
        let mut bits = 0u8;
        for d in days {
            let bit = 1 << d.index();
            if bits & bit != 0 {
                return Err(format!("\"{d}\" is given twice"));
            }
            bits |= bit;
        }
        if bits == 0 {
            return Err("is empty; leave days out for every day".to_owned());
        }
        Ok(DaySet(bits))
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.index()) != 0
    }

    /// The days in the set, Monday first.
    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        Weekday::ALL.into_iter().filter(move |d| self.contains(*d))
    }
}

impl Default for DaySet {
    fn default() -> Self {
        DaySet::EVERY_DAY
    }
}

impl fmt::Debug for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'de> Deserialize<'de> for DaySet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let days = Vec::<Weekday>::deserialize(d)?;
        DaySet::new(&days).map_err(serde::de::Error::custom)
    }
}

/// A time of day, `HH:MM` (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    /// `None` unless `hour` < 24 and `minute` < 60.
    pub fn new(hour: u8, minute: u8) -> Option<TimeOfDay> {
        (hour < 24 && minute < 60).then(|| TimeOfDay {
            minutes: u16::from(hour) * 60 + u16::from(minute),
        })
    }

    /// Seconds since midnight.
    pub fn secs(self) -> u64 {
        u64::from(self.minutes) * 60
    }
}

impl FromStr for TimeOfDay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let two_digits = |p: &str| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u8>().ok())
                .flatten()
        };
        s.split_once(':')
            .and_then(|(h, m)| TimeOfDay::new(two_digits(h)?, two_digits(m)?))
            .ok_or_else(|| format!("{s:?} is not a time of day HH:MM from 00:00 to 23:59"))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// `[update.window]`: a maintenance window that opens at `start` (UTC) on each of `days`
/// and stays open for `duration_mins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The days the window opens; every day when left out.
    #[serde(default)]
    pub days: DaySet,
    /// When it opens.
    pub start: TimeOfDay,
    /// How long it stays open, 1 to [`MAX_WINDOW_MINS`].
    pub duration_mins: u32,
}

impl Window {
    /// Whether the window is open at `t` (unix seconds): from a start, inclusive, to
    /// `duration_mins` later, exclusive. A window opened late on Sunday is still open early
    /// on Monday.
    pub fn contains(&self, t: u64) -> bool {
        let len = u64::from(self.duration_mins) * 60;
        // Only the latest opening of each day can still be open: none lasts over a week
        // (and one that does is always open).
        len >= WEEK_SECS
            || self
                .days
                .iter()
                .any(|d| (week_offset(t) + WEEK_SECS - self.opening(d)) % WEEK_SECS < len)
    }

    /// The first opening at or after `t` (unix seconds).
    pub fn next_start(&self, t: u64) -> u64 {
        let wait = self
            .days
            .iter()
            .map(|d| (self.opening(d) + WEEK_SECS - week_offset(t)) % WEEK_SECS)
            .min()
            .unwrap_or(0);
        t.saturating_add(wait)
    }

    /// Seconds from Monday 00:00 to the opening on `day`.
    fn opening(&self, day: Weekday) -> u64 {
        day.index() * DAY_SECS + self.start.secs()
    }
}

/// Seconds since the Monday 00:00 UTC before `t`.
fn week_offset(t: u64) -> u64 {
    Weekday::of(t).index() * DAY_SECS + t % DAY_SECS
}
