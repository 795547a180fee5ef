use super::channel::check_bundle_url;
use super::machine::installed_report;
use super::*;
use clap::CommandFactory;

fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("gantry-update").chain(args.iter().copied()))
}

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn install_takes_a_file_and_tries_within_grubs_range() {
    let Command::Install { file, tries } = parse(&["install", "b.bundle"]).unwrap().command else {
        panic!("not install");
    };
    assert_eq!(file, Path::new("b.bundle"));
    assert_eq!(tries, UpdatePolicy::default().boot_tries());
    let Command::Install { tries, .. } = parse(&["install", "b", "--tries", "9"]).unwrap().command
    else {
        panic!("not install");
    };
    assert_eq!(tries, 9);
    for bad in ["0", "10", "x"] {
        assert!(parse(&["install", "b", "--tries", bad]).is_err(), "{bad}");
    }
    assert!(parse(&["install"]).is_err());
}

#[test]
fn status_takes_no_arguments() {
    assert!(matches!(
        parse(&["status"]).unwrap().command,
        Command::Status
    ));
    assert!(parse(&["status", "extra"]).is_err());
}

#[test]
fn verify_needs_a_keys_dir_or_key_files_but_not_both() {
    assert!(parse(&["verify", "b"]).is_err());
    assert!(parse(&["verify", "b", "--keys", "d", "--key", "k.pub"]).is_err());
    assert!(parse(&["verify", "b", "--key", "a.pub", "--key", "b.pub"]).is_ok());
    assert!(parse(&["verify", "b", "--keys", "d"]).is_ok());
}

#[test]
fn channel_names_are_checked_when_parsed() {
    let base = [
        "channel", "--bundle", "b", "--url", "b", "--key", "k", "--out", "c",
    ];
    assert!(parse(&base).is_ok());
    let mut bad = base.to_vec();
    bad.extend(["--channel", "Stable!"]);
    assert!(parse(&bad).is_err());
}

#[test]
fn sign_takes_a_cmdline_that_looks_like_options_and_its_own_version() {
    let cli = parse(&[
        "sign",
        "--kernel",
        "k",
        "--cmdline",
        "-v panic=10",
        "--root",
        "r",
        "--verity",
        "v",
        "--version",
        "0.2.0",
        "--rollback-index",
        "2",
        "--key",
        "a",
        "--key",
        "b",
        "--out",
        "o",
    ])
    .unwrap();
    let Command::Sign(a) = cli.command else {
        panic!("not sign");
    };
    assert_eq!(a.cmdline, "-v panic=10");
    assert_eq!(a.version, "0.2.0");
    assert_eq!((a.board.as_str(), a.arch.as_str()), ("generic", "x86_64"));
    assert_eq!(a.keys.len(), 2);
}

#[test]
fn bundle_urls_must_resolve_to_http() {
    assert!(check_bundle_url("gantry-0.2.0.bundle").is_ok());
    assert!(check_bundle_url("https://cdn.example.net/b.bundle").is_ok());
    for bad in ["", "a b", "file:///etc/passwd", "ftp://x/b"] {
        assert!(check_bundle_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn key_file_names_keep_their_dots() {
    assert_eq!(
        with_suffix(Path::new("k/release-1.2"), ".key"),
        Path::new("k/release-1.2.key")
    );
}

#[test]
fn the_install_report_shows_every_timing() {
    let report = installed_report(
        &Installed {
            slot: Slot::B,
            version: "0.2.0".into(),
            rollback_index: 2,
            root_bytes: 4096,
            verify: Duration::from_millis(1500),
            stream: Duration::from_millis(2),
            read_back: Duration::from_millis(3),
            total: Duration::from_millis(1600),
        },
        3,
    );
    for part in [
        "0.2.0",
        "slot B",
        "verify 1.500s",
        "stream 0.002s",
        "read_back 0.003s",
        "total 1.600s",
    ] {
        assert!(report.contains(part), "{part} in {report}");
    }
}
