//! The fleet's record of a release, in etcd: what each machine did with it, so that a bad
//! release stops itself after its first victims, and an operator can see and steer it.
//!
//! - `/gantry/releases/<version>/nodes/<machine id>`: the machine's last outcome, JSON
//!   `{"state": "installed" | "rebooting" | "good" | "rolled_back" | "halted", "reason":
//!   …, "at": unix seconds}`. Written by the machine (PID 1's update agent) at each step.
//! - `/gantry/releases/<version>/paused`: while it exists, no machine installs the release
//!   (`gantry-update fleet pause|resume`); its value says who and why.
//!
//! Before installing, a machine reads the release's outcomes; when the rollbacks reach the
//! channel document's `failure_budget` (a count, `rollbacks`, or a share of the machines
//! that reported, `percent`), it does not install and reports `halted` with the reason. A
//! machine with a fleet store that cannot read it does not install either: an unknown
//! budget is not an unspent one.

use serde::{Deserialize, Serialize};

use crate::etcd::Etcd;

/// Where the releases' records live.
pub const PREFIX: &str = "/gantry/releases/";

/// What a machine did with a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Installed,
    Rebooting,
    Good,
    RolledBack,
    Halted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Installed => "installed",
            State::Rebooting => "rebooting",
            State::Good => "good",
            State::RolledBack => "rolled_back",
            State::Halted => "halted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: u64,
}

/// How many rollbacks a release may cost before the fleet stops installing it: at least
/// one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureBudget {
    /// Halt once this many machines rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollbacks: Option<u32>,
    /// Halt once this share (1 to 100) of the machines that reported rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

impl FailureBudget {
    pub fn check(&self) -> Result<(), String> {
        match (self.rollbacks, self.percent) {
            (None, None) => Err("failure_budget names neither rollbacks nor percent".into()),
            (Some(0), _) => Err("failure_budget.rollbacks is 0 (no machine could try)".into()),
            (_, Some(p)) if !(1..=100).contains(&p) => {
                Err(format!("failure_budget.percent {p} is not 1 to 100"))
            }
            _ => Ok(()),
        }
    }

    /// Why the budget is spent by these outcomes, if it is.
    pub fn spent(&self, outcomes: &[(String, Outcome)]) -> Option<String> {
        let rolled_back = outcomes
            .iter()
            .filter(|(_, o)| o.state == State::RolledBack)
            .count();
        let reported = outcomes
            .iter()
            .filter(|(_, o)| o.state != State::Halted)
            .count();
        if let Some(n) = self.rollbacks.filter(|n| rolled_back >= *n as usize) {
            return Some(format!(
                "{rolled_back} machines rolled back; the failure budget is {n}"
            ));
        }
        if let Some(p) = self.percent {
            if reported > 0 && rolled_back * 100 >= usize::from(p) * reported {
                return Some(format!(
                    "{rolled_back} of {reported} machines rolled back; the failure budget \
                     is {p} %"
                ));
            }
        }
        None
    }
}

/// A release's record in the fleet store.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub etcd: Etcd,
}

impl Fleet {
    fn nodes_prefix(version: &str) -> String {
        format!("{PREFIX}{version}/nodes/")
    }

    /// Writes this machine's outcome for `version`.
    pub fn report(&self, version: &str, machine_id: &str, outcome: &Outcome) -> Result<(), String> {
        let value = serde_json::to_string(outcome).map_err(|e| e.to_string())?;
        self.etcd.put(
            &format!("{}{machine_id}", Self::nodes_prefix(version)),
            &value,
            None,
        )
    }

    /// Every machine's outcome for `version`, by machine id; a record that does not parse
    /// is skipped (it is not this code's to trust).
    pub fn outcomes(&self, version: &str) -> Result<Vec<(String, Outcome)>, String> {
        let prefix = Self::nodes_prefix(version);
        Ok(self
            .etcd
            .range_prefix(&prefix)?
            .into_iter()
            .filter_map(|kv| {
                let id = kv.key.strip_prefix(&prefix)?.to_owned();
                serde_json::from_str(&kv.value).ok().map(|o| (id, o))
            })
            .collect())
    }

    /// The pause of `version` (who and why), if it is paused.
    pub fn paused(&self, version: &str) -> Result<Option<String>, String> {
        let key = format!("{PREFIX}{version}/paused");
        Ok(self
            .etcd
            .range_prefix(&key)?
            .into_iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value))
    }

    pub fn pause(&self, version: &str, why: &str) -> Result<(), String> {
        self.etcd
            .put(&format!("{PREFIX}{version}/paused"), why, None)
    }

    pub fn resume(&self, version: &str) -> Result<(), String> {
        self.etcd.delete(&format!("{PREFIX}{version}/paused"))
    }

    /// The releases the store has records of.
    pub fn releases(&self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = self
            .etcd
            .range_prefix(PREFIX)?
            .into_iter()
            .filter_map(|kv| {
                kv.key
                    .strip_prefix(PREFIX)
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(state: State) -> (String, Outcome) {
        (
            "id".into(),
            Outcome {
                state,
                reason: None,
                at: 0,
            },
        )
    }

    #[test]
    fn budgets_are_spent_by_rollbacks_counted_or_shared() {
        let count = FailureBudget {
            rollbacks: Some(1),
            percent: None,
        };
        assert_eq!(count.spent(&[o(State::Good), o(State::Installed)]), None);
        let why = count
            .spent(&[o(State::Good), o(State::RolledBack)])
            .expect("spent");
        assert!(why.contains("1 machines rolled back"), "{why}");
        let share = FailureBudget {
            rollbacks: None,
            percent: Some(50),
        };
        assert_eq!(
            share.spent(&[o(State::RolledBack), o(State::Good), o(State::Good)]),
            None
        );
        assert!(share
            .spent(&[o(State::RolledBack), o(State::Good)])
            .is_some());
        // Machines that halted did not try: they do not dilute the share.
        assert!(share
            .spent(&[o(State::RolledBack), o(State::Halted), o(State::Halted)])
            .is_some());
        assert_eq!(share.spent(&[]), None);
    }

    #[test]
    fn bad_budgets_are_refused() {
        for (b, want) in [
            (
                FailureBudget {
                    rollbacks: None,
                    percent: None,
                },
                "neither",
            ),
            (
                FailureBudget {
                    rollbacks: Some(0),
                    percent: None,
                },
                "is 0",
            ),
            (
                FailureBudget {
                    rollbacks: None,
                    percent: Some(0),
                },
                "not 1 to 100",
            ),
            (
                FailureBudget {
                    rollbacks: Some(2),
                    percent: Some(101),
                },
                "not 1 to 100",
            ),
        ] {
            assert!(b.check().unwrap_err().contains(want), "{b:?}");
        }
        assert!(FailureBudget {
            rollbacks: Some(1),
            percent: Some(5)
        }
        .check()
        .is_ok());
    }
}
