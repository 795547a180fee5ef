use super::*;

#[derive(Debug, Deserialize)]
struct Doc {
    #[serde(default)]
    update: UpdatePolicy,
}

fn parse(text: &str) -> Result<UpdatePolicy, String> {
    toml::from_str::<Doc>(text)
        .map(|d| d.update)
        .map_err(|e| e.message().to_owned())
}

fn problems(text: &str) -> Vec<String> {
    parse(text)
        .expect("parses")
        .problems()
        .into_iter()
        .map(|(k, r)| format!("{k}: {r}"))
        .collect()
}

/// Every ```toml block of this module's docs.
fn doc_examples() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in include_str!("../policy.rs").lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        match (&mut cur, doc) {
            (None, "```toml") => cur = Some(Vec::new()),
            (Some(lines), "```") => {
                out.push(lines.join("\n"));
                cur = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    out
}

// 2024-01-01 00:00 UTC, a Monday.
const MON: u64 = 1_704_067_200;
const H: u64 = 3600;
const M: u64 = 60;
const D: u64 = 86_400;

fn window(days: &[Weekday], start: &str, duration_mins: u32) -> Window {
    Window {
        days: DaySet::new(days).unwrap(),
        start: start.parse().unwrap(),
        duration_mins,
    }
}

#[test]
fn the_documented_example_parses_and_is_valid() {
    let examples = doc_examples();
    assert_eq!(examples.len(), 1);
    let p = parse(&examples[0]).unwrap();
    assert_eq!(p.problems(), Vec::<(String, String)>::new());
    assert_eq!(
        p.server.as_ref().map(Url::as_str),
        Some("https://updates.example.net/gantry/stable.json")
    );
    assert_eq!(p.channel.as_str(), "stable");
    assert_eq!(p.reboot, RebootStrategy::Window);
    let w = p.window.unwrap();
    assert_eq!(
        w.days.iter().collect::<Vec<_>>(),
        [Weekday::Sat, Weekday::Sun]
    );
    assert_eq!(w.start, TimeOfDay::new(2, 30).unwrap());
    assert_eq!(w.duration_mins, 120);
    assert_eq!(p.boot_tries(), 3);
    assert_eq!(p.health_timeout(), Duration::from_secs(300));
}

#[test]
fn an_absent_or_empty_section_means_the_defaults() {
    let d = UpdatePolicy::default();
    assert_eq!(parse("").unwrap(), d);
    assert_eq!(parse("[update]\n").unwrap(), d);
    assert_eq!(d.server, None);
    assert_eq!(d.channel.as_str(), "stable");
    assert_eq!(d.check_interval(), Duration::from_secs(3600));
    assert_eq!(d.reboot, RebootStrategy::Immediately);
    assert_eq!(d.tries, 3);
    assert_eq!(d.health_timeout_secs, 300);
    assert_eq!(d.lease, LeaseKind::None);
    assert!(d.problems().is_empty());
    assert_eq!(d.reboot_at(MON), RebootAt::Now);
}

#[test]
fn each_reboot_strategy_parses() {
    let off = parse("[update]\nreboot = \"off\"\n").unwrap();
    assert_eq!(off.reboot_at(MON), RebootAt::Manual);
    let now = parse("[update]\nreboot = \"immediately\"\n").unwrap();
    assert_eq!(now.reboot_at(MON), RebootAt::Now);
    let w = parse(
        "[update]\nreboot = \"window\"\n[update.window]\nstart = \"23:00\"\nduration_mins = 60\n",
    )
    .unwrap();
    assert!(w.problems().is_empty());
    assert_eq!(w.window.unwrap().days, DaySet::EVERY_DAY);
}

#[test]
fn malformed_values_are_refused_with_the_reason() {
    for (text, want) in [
        (
            "server = \"ftp://x.example/c\"",
            "is not an http:// or https:// URL",
        ),
        ("server = \"updates.example.net\"", "is not a URL"),
        ("server = \"https://\"", "is not a URL"),
        (
            "server = \"https://u:p@x.example/c\"",
            "has a user or password",
        ),
        ("channel = \"Stable\"", "\"Stable\" is not a channel name"),
        ("channel = \"\"", "is not a channel name"),
        ("channel = \"a_b\"", "is not a channel name"),
        ("reboot = \"later\"", "\"later\" is not a reboot strategy"),
        ("lease = \"zookeeper\"", "\"zookeeper\" is not a lease kind"),
        ("tries = -1", "invalid value"),
        ("tries = \"3\"", "invalid type"),
        ("retries = 3", "unknown field `retries`"),
        (
            "[update.window]\ndays = [\"monday\"]\nstart = \"02:00\"\nduration_mins = 5",
            "\"monday\" is not a day",
        ),
        (
            "[update.window]\ndays = [\"mon\", \"mon\"]\nstart = \"02:00\"\nduration_mins = 5",
            "\"mon\" is given twice",
        ),
        (
            "[update.window]\ndays = []\nstart = \"02:00\"\nduration_mins = 5",
            "is empty; leave days out",
        ),
        (
            "[update.window]\nstart = \"24:00\"\nduration_mins = 5",
            "\"24:00\" is not a time of day",
        ),
        (
            "[update.window]\nstart = \"2:00\"\nduration_mins = 5",
            "\"2:00\" is not a time of day",
        ),
        (
            "[update.window]\nduration_mins = 5",
            "missing field `start`",
        ),
        (
            "[update.window]\nstart = \"02:00\"\nduration_mins = 5\nend = \"03:00\"",
            "unknown field `end`",
        ),
    ] {
        let e = parse(&format!("[update]\n{text}\n")).expect_err(text);
        assert!(e.contains(want), "{text}: {e}");
    }
    let secret = parse("[update]\nserver = \"https://u:s3cret@x.example/c\"\n").unwrap_err();
    assert!(!secret.contains("s3cret"), "{secret}");
}

#[test]
fn out_of_range_and_contradicting_keys_are_all_reported() {
    let e = problems(
        "[update]\ncheck_interval_secs = 5\ntries = 12\nhealth_timeout_secs = 86401\n\
         [update.window]\nstart = \"02:00\"\nduration_mins = 60\n",
    );
    assert_eq!(
        e,
        [
            "check_interval_secs: 5 is less than 10",
            "health_timeout_secs: 86401 is more than a day (86400)",
            "tries: 12 is more than 9",
            "window: is given but reboot is \"immediately\"; say reboot = \"window\" to use it",
        ]
    );
    let e = problems(
        "[update]\ncheck_interval_secs = 604801\ntries = 0\nhealth_timeout_secs = 9\nreboot = \"window\"\n",
    );
    assert_eq!(
        e,
        [
            "check_interval_secs: 604801 is more than a week (604800)",
            "health_timeout_secs: 9 is less than 10",
            "tries: 0 would never boot the new version",
            "reboot: \"window\" needs an [update.window] section",
        ]
    );
    for (mins, want) in [
        (0, "window.duration_mins: 0 would never open"),
        (
            10081,
            "window.duration_mins: 10081 is more than a week (10080)",
        ),
    ] {
        let e = problems(&format!(
            "[update]\nreboot = \"window\"\n[update.window]\nstart = \"02:00\"\nduration_mins = {mins}\n"
        ));
        assert_eq!(e, [want]);
    }
}

#[test]
fn plain_http_is_refused_unless_loopback_or_insecure() {
    for server in [
        "http://10.0.2.100:8080/c.json",
        "http://updates.example.net/c",
        "http://[fe80::1]/c",
    ] {
        let e = problems(&format!("[update]\nserver = \"{server}\"\n"));
        assert_eq!(e.len(), 1, "{server}: {e:?}");
        assert!(
            e[0].starts_with(&format!("server: \"{server}\" is plain HTTP"))
                && e[0].contains("update.insecure = true"),
            "{e:?}"
        );
        let e = problems(&format!(
            "[update]\nserver = \"{server}\"\ninsecure = true\n"
        ));
        assert!(e.is_empty(), "{server}: {e:?}");
    }
    for server in [
        "http://127.0.0.1:8080/c",
        "http://127.9.0.1/c",
        "http://localhost/c",
        "http://[::1]:80/c",
        "https://updates.example.net/c",
    ] {
        let e = problems(&format!("[update]\nserver = \"{server}\"\n"));
        assert!(e.is_empty(), "{server}: {e:?}");
    }
    // A bundle URL the channel names is held to the same rule.
    let p = UpdatePolicy::default();
    let bundle = Url::parse("http://cdn.example.net/b.bundle").unwrap();
    assert!(p
        .transport_problem(&bundle)
        .unwrap_err()
        .contains("cdn.example.net"));
    let lax = UpdatePolicy {
        insecure: true,
        ..UpdatePolicy::default()
    };
    assert!(lax.transport_problem(&bundle).is_ok());
}

#[test]
fn the_bounds_themselves_are_accepted() {
    for text in [
        "check_interval_secs = 10\ntries = 1\nhealth_timeout_secs = 10",
        "check_interval_secs = 604800\ntries = 9\nhealth_timeout_secs = 86400",
        "reboot = \"window\"\nwindow = { start = \"00:00\", duration_mins = 1 }",
        "reboot = \"window\"\nwindow = { start = \"23:59\", duration_mins = 10080 }",
        "server = \"http://10.0.2.100:8080/channel.json\"\nchannel = \"beta-2\"\ninsecure = true",
        "server = \"https://10.0.2.100:8080/channel.json\"\nchannel = \"beta-2\"",
    ] {
        let e = problems(&format!("[update]\n{text}\n"));
        assert!(e.is_empty(), "{text}: {e:?}");
    }
}

#[test]
fn boot_tries_stay_within_what_grub_counts() {
    let mut p = UpdatePolicy::default();
    for (tries, want) in [(0, 1), (1, 1), (5, 5), (9, 9), (10, 9), (u32::MAX, 9)] {
        p.tries = tries;
        assert_eq!(p.boot_tries(), want, "{tries}");
    }
}

#[test]
fn weekdays_follow_the_calendar() {
    assert_eq!(Weekday::of(0), Weekday::Thu); // 1970-01-01
    assert_eq!(Weekday::of(MON), Weekday::Mon);
    assert_eq!(Weekday::of(MON - 1), Weekday::Sun);
    assert_eq!(Weekday::of(MON + 6 * D + D - 1), Weekday::Sun);
    assert_eq!(Weekday::of(MON + 7 * D), Weekday::Mon);
    for (i, d) in Weekday::ALL.iter().enumerate() {
        assert_eq!(d.to_string().parse::<Weekday>().unwrap(), *d);
        assert_eq!(Weekday::of(MON + i as u64 * D + 12 * H), *d);
    }
}

#[test]
fn times_of_day_parse_strictly() {
    assert_eq!("00:00".parse::<TimeOfDay>().unwrap().secs(), 0);
    assert_eq!(
        "23:59".parse::<TimeOfDay>().unwrap().secs(),
        23 * H + 59 * M
    );
    assert_eq!("07:05".parse::<TimeOfDay>().unwrap().to_string(), "07:05");
    for bad in [
        "", "7:05", "07:5", "07-05", "24:00", "12:60", "+1:00", "07:05:00", "ab:cd", " 07:05",
    ] {
        assert!(bad.parse::<TimeOfDay>().is_err(), "{bad:?}");
    }
}

#[test]
fn a_window_is_open_from_its_start_inclusive_to_its_end_exclusive() {
    let w = window(&[Weekday::Wed], "02:30", 90);
    let open = MON + 2 * D + 2 * H + 30 * M;
    assert!(!w.contains(open - 1));
    assert!(w.contains(open));
    assert!(w.contains(open + 90 * M - 1));
    assert!(!w.contains(open + 90 * M));
    // Not on other days at the same time.
    assert!(!w.contains(open - D));
    assert!(!w.contains(open + D));
    // The same time a week later.
    assert!(w.contains(open + 7 * D));
}

#[test]
fn a_window_runs_past_midnight_into_the_next_day() {
    let w = window(&[Weekday::Sat], "23:00", 120);
    let open = MON + 5 * D + 23 * H;
    assert!(w.contains(open));
    assert!(w.contains(MON + 6 * D)); // Sunday 00:00
    assert!(w.contains(MON + 6 * D + H - 1));
    assert!(!w.contains(MON + 6 * D + H)); // Sunday 01:00
    assert!(!w.contains(MON + 5 * D)); // Saturday 00:00: the window opens that evening
}

#[test]
fn a_sunday_night_window_runs_past_the_end_of_the_week() {
    let w = window(&[Weekday::Sun], "23:30", 60);
    let open = MON + 6 * D + 23 * H + 30 * M;
    assert!(w.contains(open));
    assert!(w.contains(MON + 7 * D)); // Monday 00:00
    assert!(w.contains(MON + 7 * D + 30 * M - 1));
    assert!(!w.contains(MON + 7 * D + 30 * M));
    // Monday 00:10 of the week before, too: the previous Sunday opened it.
    assert!(w.contains(MON + 10 * M));
    assert_eq!(w.next_start(MON + 10 * M), open);
    assert_eq!(w.next_start(open + 1), open + 7 * D);
}

#[test]
fn next_start_is_at_or_after_the_time_given() {
    let w = window(&[Weekday::Tue, Weekday::Fri], "04:00", 30);
    let tue = MON + D + 4 * H;
    let fri = MON + 4 * D + 4 * H;
    assert_eq!(w.next_start(MON), tue);
    assert_eq!(w.next_start(tue), tue);
    assert_eq!(w.next_start(tue + 1), fri);
    assert_eq!(w.next_start(fri + 1), tue + 7 * D);
    assert_eq!(w.next_start(MON + 6 * D + 23 * H), tue + 7 * D);
    assert_eq!(w.next_start(u64::MAX - 10), u64::MAX);
}

#[test]
fn a_window_of_a_whole_week_or_every_day_for_a_day_is_always_open() {
    let week = window(&[Weekday::Thu], "12:00", MAX_WINDOW_MINS);
    let daily = window(&Weekday::ALL, "06:00", 24 * 60);
    for t in (MON..MON + 14 * D).step_by(7 * 60 + 13) {
        assert!(week.contains(t), "{t}");
        assert!(daily.contains(t), "{t}");
    }
    assert!(week.contains(0));
}

#[test]
fn windows_agree_with_a_naive_calendar_walk() {
    // Counts openings day by day from a week and a bit before `t`.
    fn naive_contains(w: &Window, t: u64) -> bool {
        let len = u64::from(w.duration_mins) * 60;
        (0..=8).any(|back| {
            let Some(day) = (t / D).checked_sub(back) else {
                return false;
            };
            let open = day * D + w.start.secs();
            w.days.contains(Weekday::of(day * D)) && open <= t && t < open + len
        })
    }
    fn naive_next(w: &Window, t: u64) -> u64 {
        (0..=8)
            .map(|ahead| t / D + ahead)
            .filter(|day| w.days.contains(Weekday::of(day * D)))
            .map(|day| day * D + w.start.secs())
            .filter(|open| *open >= t)
            .min()
            .unwrap()
    }
    let windows = [
        window(&[Weekday::Mon], "00:00", 1),
        window(&[Weekday::Sun], "23:59", 2),
        window(&[Weekday::Sat, Weekday::Sun], "22:00", 180),
        window(
            &[Weekday::Mon, Weekday::Wed, Weekday::Fri],
            "12:34",
            3 * 24 * 60,
        ),
        window(&[Weekday::Tue], "08:00", 7 * 24 * 60 - 1),
        window(&Weekday::ALL, "03:00", 60),
    ];
    for w in &windows {
        let mut t = MON - 2 * D;
        while t < MON + 16 * D {
            for probe in [t.saturating_sub(1), t, t + 1] {
                assert_eq!(
                    w.contains(probe),
                    naive_contains(w, probe),
                    "{w:?} at {probe}"
                );
                assert_eq!(
                    w.next_start(probe),
                    naive_next(w, probe),
                    "{w:?} at {probe}"
                );
                assert!(w.contains(w.next_start(probe)), "{w:?} at {probe}");
            }
            t += M;
        }
    }
}

#[test]
fn a_window_policy_reboots_now_inside_and_at_the_next_opening_outside() {
    let p = parse(
        "[update]\nreboot = \"window\"\n\
         [update.window]\ndays = [\"sat\"]\nstart = \"02:00\"\nduration_mins = 60\n",
    )
    .unwrap();
    let sat = MON + 5 * D + 2 * H;
    assert_eq!(p.reboot_at(sat + 59 * M), RebootAt::Now);
    assert_eq!(p.reboot_at(sat + 60 * M), RebootAt::At(sat + 7 * D));
    assert_eq!(p.reboot_at(MON), RebootAt::At(sat));
    let broken = UpdatePolicy {
        reboot: RebootStrategy::Window,
        ..UpdatePolicy::default()
    };
    assert_eq!(broken.reboot_at(MON), RebootAt::Manual);
}

#[test]
fn the_none_lease_is_always_granted() {
    let p = UpdatePolicy::default();
    let mut lease = p.reboot_lease(std::path::Path::new("/nonexistent"));
    assert_eq!(lease.acquire("0.2.0"), Ok(true));
    assert_eq!(lease.acquire("0.2.0"), Ok(true));
    assert_eq!(lease.release("0.2.0"), Ok(()));
}

#[test]
fn unix_secs_of_times_before_1970_is_zero() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(MON);
    assert_eq!(unix_secs(t), MON);
    assert_eq!(
        unix_secs(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
        0
    );
}

#[test]
fn waves_can_be_ignored_and_a_version_pinned() {
    let p = parse("[update]\nignore_waves = true\npin_version = \"1.4.2\"\n").unwrap();
    assert!(p.ignore_waves);
    assert_eq!(p.pin_version.as_deref(), Some("1.4.2"));
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let d = UpdatePolicy::default();
    assert!(!d.ignore_waves && d.pin_version.is_none());
    let bad = parse("[update]\npin_version = \"1.4 beta\"\n").unwrap();
    assert_eq!(bad.problems()[0].0, "pin_version");
    let empty = parse("[update]\npin_version = \"\"\n").unwrap();
    assert!(empty.problems()[0].1.contains("not a version"));
}

#[test]
fn the_etcd_lease_is_configured_and_checked() {
    let p = parse(
        "[update]\nlease = \"etcd\"\nhealth_timeout_secs = 300\n[update.etcd]\nendpoint = \"https://etcd.example.net:2379\"\nslots = 2\n",
    )
    .unwrap();
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let e = p.etcd.as_ref().unwrap();
    assert_eq!((e.group.as_str(), e.slots, e.ttl_secs), ("default", 2, 900));
    // Without a machine id the lease is never granted, and says why.
    let err = p
        .reboot_lease(std::path::Path::new("/nonexistent/machine-id"))
        .acquire("2.0.0")
        .unwrap_err();
    assert!(err.reason.contains("machine id"), "{err}");

    let keys = |text: &str| -> Vec<String> {
        parse(text)
            .unwrap()
            .problems()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("[update]\nlease = \"etcd\"\n"), ["lease"]);
    assert_eq!(
        keys("[update]\n[update.etcd]\nendpoint = \"https://e:2379\"\n"),
        ["etcd"]
    );
    assert_eq!(
        keys("[update]\nlease = \"etcd\"\n[update.etcd]\nendpoint = \"http://10.0.0.5:2379\"\nslots = 0\nttl_secs = 59\n"),
        ["etcd.slots", "etcd.ttl_secs", "etcd.endpoint"]
    );
    assert!(parse("[update]\nlease = \"etcd\"\n[update.etcd]\nendpoint = \"https://e\"\ngroup = \"Bad Group\"\n").is_err());
    assert!(parse("[update]\nlease = \"zookeeper\"\n").is_err());
}

#[test]
fn the_fleetlock_lease_is_configured_and_checked() {
    let p = parse("[update]\nlease = \"fleetlock\"\n[update.fleetlock]\nurl = \"https://airlock.example.net:3333/\"\n").unwrap();
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    assert_eq!(p.fleetlock.as_ref().unwrap().group.as_str(), "default");
    let err = p
        .reboot_lease(std::path::Path::new("/nonexistent/machine-id"))
        .acquire("2.0.0")
        .unwrap_err();
    assert!(err.reason.contains("machine id"), "{err}");
    let keys = |text: &str| -> Vec<String> {
        parse(text)
            .unwrap()
            .problems()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("[update]\nlease = \"fleetlock\"\n"), ["lease"]);
    assert_eq!(
        keys("[update]\n[update.fleetlock]\nurl = \"https://a\"\n"),
        ["fleetlock"]
    );
    assert_eq!(
        keys("[update]\nlease = \"fleetlock\"\n[update.fleetlock]\nurl = \"http://10.1.1.1/\"\n"),
        ["fleetlock.url"]
    );
}
