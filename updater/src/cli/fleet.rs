//! The fleet's records in etcd: status, pause, resume.

use super::*;

#[derive(Debug, Args)]
pub(super) struct FleetArgs {
    /// etcd's client URL.
    #[arg(long, value_name = "URL")]
    pub(super) etcd: crate::fetch::Url,
    #[command(subcommand)]
    pub(super) verb: FleetVerb,
}

#[derive(Debug, Subcommand)]
pub(super) enum FleetVerb {
    /// Per release: machines by state, halted or not and why, paused or not; the reboot
    /// slots in use of a group.
    Status {
        /// Only this release.
        #[arg(long)]
        release: Option<String>,
        /// The reboot group whose slots to show.
        #[arg(long, default_value = "default")]
        group: String,
        /// The channel document the fleet follows: its release's open wave, next wave and
        /// failure budget are shown too (verified with --key or --keys first).
        #[arg(long, value_name = "URL", requires = "trust")]
        channel: Option<crate::fetch::Url>,
        /// Trust every *.pub file of DIR for the channel document.
        #[arg(long = "keys", value_name = "DIR", group = "trust")]
        keys_dir: Option<PathBuf>,
        /// Trust this public key file for the channel document; repeatable.
        #[arg(long = "key", value_name = "F.pub", group = "trust")]
        keys: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Stop machines from installing a release (those that installed it go on).
    Pause {
        release: String,
        /// Who and why, kept with the pause.
        #[arg(long, default_value = "paused by an operator")]
        reason: String,
    },
    /// Let machines install a paused release again.
    Resume { release: String },
}

pub(super) fn fleet(a: &FleetArgs) -> Result<()> {
    use crate::fleet::{Fleet, State};
    let etcd = crate::etcd::Etcd {
        endpoint: a.etcd.clone(),
        fetcher: crate::fetch::Fetcher::new(crate::fetch::FetchOptions {
            insecure: true,
            ..Default::default()
        }),
    };
    let fleet = Fleet { etcd: etcd.clone() };
    match &a.verb {
        FleetVerb::Pause { release, reason } => {
            fleet.pause(release, reason)?;
            println!("paused {release}: {reason}");
        }
        FleetVerb::Resume { release } => {
            fleet.resume(release)?;
            println!("resumed {release}");
        }
        FleetVerb::Status {
            release,
            group,
            channel,
            keys_dir,
            keys,
            json,
        } => {
            let offered = match channel {
                Some(url) => {
                    let trusted = match keys_dir {
                        Some(dir) => TrustedKeys::load_dir(dir)?,
                        None => load_public_keys(keys)?,
                    };
                    let bytes = etcd
                        .fetcher
                        .fetch_small(url, crate::channel::MAX_CHANNEL_BYTES as u64)?;
                    Some(Channel::verify(&bytes, &trusted, url.as_str())?)
                }
                None => None,
            };
            let mut releases = match release {
                Some(r) => vec![r.clone()],
                None => fleet.releases()?,
            };
            if let Some(c) = &offered {
                if release.is_none() && !releases.contains(&c.os_version) {
                    releases.push(c.os_version.clone());
                }
            }
            let now = crate::policy::unix_secs(std::time::SystemTime::now());
            let holders = crate::etcd_lease::holders(&etcd, group)?;
            let mut out = Vec::new();
            for r in &releases {
                let outcomes = fleet.outcomes(r)?;
                let mut by_state = std::collections::BTreeMap::<&str, Vec<&str>>::new();
                for (id, o) in &outcomes {
                    by_state.entry(o.state.as_str()).or_default().push(id);
                }
                let halted = outcomes
                    .iter()
                    .find(|(_, o)| o.state == State::Halted)
                    .and_then(|(_, o)| o.reason.clone());
                let rolled_back: Vec<serde_json::Value> = outcomes
                    .iter()
                    .filter(|(_, o)| o.state == State::RolledBack)
                    .map(|(id, o)| serde_json::json!({"machine": id, "reason": o.reason}))
                    .collect();
                let mut entry = serde_json::json!({
                    "release": r,
                    "machines": by_state,
                    "rolled_back": rolled_back,
                    "halted": halted,
                    "paused": fleet.paused(r)?,
                });
                if let Some(c) = offered.as_ref().filter(|c| &c.os_version == r) {
                    entry["channel"] = channel_summary(c, &outcomes, now);
                    if halted.is_none() {
                        entry["halted"] = entry["channel"]["budget_spent"].clone();
                    }
                }
                out.push(entry);
            }
            let slots: Vec<serde_json::Value> = holders
                .iter()
                .map(|h| serde_json::json!({"machine": h.holder, "holder": h.value}))
                .collect();
            if *json {
                let doc = serde_json::json!({"releases": out, "group": group, "reboot_slots_in_use": slots});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                for r in &out {
                    println!("release {}", r["release"].as_str().unwrap_or_default());
                    for (state, ids) in r["machines"].as_object().into_iter().flatten() {
                        println!("  {state:<12} {}", ids.as_array().map_or(0, Vec::len));
                    }
                    if let Some(c) = r.get("channel") {
                        if c["expired"] == true {
                            println!(
                                "  channel document expired at {} (unix): machines refuse it",
                                c["expires"]
                            );
                        }
                        match c["next_wave"].as_object() {
                            Some(next) => println!(
                                "  open wave: {} % of the fleet; next: {} % at {} (unix)",
                                c["open_percent"], next["percent"], next["at"]
                            ),
                            None => println!("  open wave: {} % of the fleet", c["open_percent"]),
                        }
                    }
                    match r["halted"].as_str() {
                        Some(why) => println!("  halted: {why}"),
                        None => println!("  halted: no"),
                    }
                    match r["paused"].as_str() {
                        Some(why) => println!("  paused: {why}"),
                        None => println!("  paused: no"),
                    }
                }
                println!("group {group}: {} reboot slots in use", slots.len());
                for h in &holders {
                    println!("  {} {}", h.holder, h.value);
                }
            }
        }
    }
    Ok(())
}

/// What the channel document says of its release's rollout at `now`: the share of the
/// fleet its open wave admits, the next wave, the failure budget and whether the
/// machines' records have spent it. A document without a rollout admits all at once.
pub(super) fn channel_summary(
    c: &Channel,
    outcomes: &[(String, crate::fleet::Outcome)],
    now: u64,
) -> serde_json::Value {
    let (open, next) = match &c.rollout {
        Some(r) => (r.open_percent(now), r.next_wave(now)),
        None => (100, None),
    };
    serde_json::json!({
        "serial": c.serial,
        "expires": c.expires,
        // Machines refuse an expired document: its waves open for nobody.
        "expired": c.expires <= now,
        "open_percent": open,
        "next_wave": next.map(|(at, percent)| serde_json::json!({"at": at, "percent": percent})),
        "failure_budget": c.failure_budget,
        "budget_spent": c.failure_budget.and_then(|b| b.spent(outcomes)),
    })
}
