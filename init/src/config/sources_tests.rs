//! The order of the sources, refusal and the last good copy, with every source made in a
//! temporary directory.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::*;
use crate::config::drive::FsType;
use crate::config::imds::test_server::serve;

/// Sources in `dir` with nothing in them, IMDS off.
fn empty(dir: &Path) -> Sources {
    let sys = dir.join("sys");
    let dev = dir.join("dev");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::create_dir_all(&dev).unwrap();
    Sources {
        cmdline_config: None,
        fw_cfg: dir.join("fw_cfg"),
        sys_class_block: sys,
        dev_dir: dev,
        drive_mount_point: dir.join("mnt"),
        mounter: Box::new(Seed(dir.join("seed"))),
        last_good: LastGood::at(dir.join("var/current.toml")),
        imds: ImdsSetting::Off,
        imds_retry: imds::Retry {
            request_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            first_pause: Duration::from_millis(20),
            max_pause: Duration::from_millis(100),
        },
    }
}

/// "Mounts" the config drive by copying `seed/` into the mount point.
struct Seed(PathBuf);

impl Mounter for Seed {
    fn mount_ro(&mut self, _: &std::path::Path, _: FsType, target: &Path) -> std::io::Result<()> {
        for e in std::fs::read_dir(&self.0)? {
            let e = e?;
            std::fs::copy(e.path(), target.join(e.file_name()))?;
        }
        Ok(())
    }
    fn unmount(&mut self, target: &Path) -> std::io::Result<()> {
        for e in std::fs::read_dir(target)? {
            std::fs::remove_file(e?.path())?;
        }
        Ok(())
    }
}

/// Makes `dir` hold a CIDATA drive (`dev/vdb`) whose files are `files`.
fn config_drive(dir: &Path, files: &[(&str, &str)]) {
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    for (name, text) in files {
        std::fs::write(seed.join(name), text).unwrap();
    }
    std::fs::create_dir_all(dir.join("sys/vdb")).unwrap();
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    std::fs::write(dir.join("sys/vdb/size"), "2880").unwrap();
    let out = std::process::Command::new("mkfs.fat")
        .args(["-n", "CIDATA", "-C"])
        .arg(dir.join("dev/vdb"))
        .arg("1440")
        .output()
        .expect("mkfs.fat (apt-get install dosfstools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn settled(boot: &BootConfig) -> Settled {
    boot.handle()
        .wait(Duration::from_secs(30))
        .expect("the config settles")
}

fn source_of(boot: &BootConfig) -> Source {
    match settled(boot) {
        Settled::Config(a) => a.source.clone(),
        Settled::Defaults => panic!("defaults, not a config"),
    }
}

#[test]
fn cmdline_config_is_base64_and_wins_over_fw_cfg() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = empty(dir.path());
    std::fs::write(&s.fw_cfg, "version = 1\nhostname = \"from-fw-cfg\"\n").unwrap();
    s.cmdline_config =
        Some(base64::engine::general_purpose::STANDARD.encode("version = 1\nhostname = \"cmd\"\n"));
    let boot = s.load();
    assert_eq!(boot.at_boot().unwrap().hostname.as_deref(), Some("cmd"));
    assert_eq!(source_of(&boot), Source::KernelCmdline);
}

#[test]
fn cmdline_base64_may_lack_padding_and_errors_say_why() {
    assert_eq!(decode_cmdline("dmVyc2lvbiA9IDE").unwrap(), b"version = 1");
    assert_eq!(decode_cmdline("dmVyc2lvbiA9IDE=").unwrap(), b"version = 1");
    let e = decode_cmdline("dmVy-2lvbiA9IDE").unwrap_err();
    assert_eq!(e.source_name, "kernel command line gantry.config");
    assert!(e.reason.starts_with("not base64"), "{e}");
    let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xffu8, 0xfe]);
    let doc = Document {
        source: Source::KernelCmdline,
        bytes: decode_cmdline(&not_utf8).unwrap(),
        meta: MetaData::default(),
    };
    let e = accept(doc).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "kernel command line gantry.config: (document): not UTF-8 (byte 0)"
    );
}

#[test]
fn an_accepted_config_is_kept_and_used_when_the_next_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = empty(dir.path());
    std::fs::write(&s.fw_cfg, "version = 1\nhostname = \"good\"\n").unwrap();
    let boot = s.load();
    assert_eq!(source_of(&boot), Source::FwCfg);

    let s = empty(dir.path());
    std::fs::write(&s.fw_cfg, "version = 1\nhostname = \"bad name\"\n").unwrap();
    let boot = s.load();
    assert_eq!(boot.at_boot().unwrap().hostname.as_deref(), Some("good"));
    assert_eq!(
        source_of(&boot),
        Source::LastGood {
            from: "fw_cfg opt/org.gantry/config".into()
        }
    );
    // The refused config did not replace the copy.
    let kept = std::fs::read_to_string(dir.path().join("var/current.toml")).unwrap();
    assert!(kept.contains("\"good\""), "{kept}");
}

#[test]
fn a_refused_config_with_no_copy_means_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = empty(dir.path());
    s.cmdline_config = Some("!!!".into());
    let boot = s.load();
    assert_eq!(boot.at_boot(), None);
    assert_eq!(settled(&boot), Settled::Defaults);
}

#[test]
fn with_no_source_at_all_the_last_good_copy_is_used() {
    let dir = tempfile::tempdir().unwrap();
    config_drive(
        dir.path(),
        &[
            ("user-data", "#gantry-config\nversion = 1\n"),
            (
                "meta-data",
                "instance-id: iid-9\nlocal-hostname: seed-host\n",
            ),
        ],
    );
    let boot = empty(dir.path()).load();
    let Settled::Config(a) = settled(&boot) else {
        panic!("a config")
    };
    assert_eq!(
        a.source,
        Source::ConfigDrive {
            device: dir.path().join("dev/vdb").display().to_string(),
            label: "CIDATA".into()
        }
    );
    assert_eq!(
        a.config.hostname.as_deref(),
        Some("seed-host"),
        "from meta-data"
    );
    assert_eq!(a.meta.instance_id.as_deref(), Some("iid-9"));

    // The drive is removed: the copy, with meta-data's host name, is what the machine keeps.
    std::fs::remove_file(dir.path().join("dev/vdb")).unwrap();
    std::fs::remove_dir_all(dir.path().join("sys/vdb")).unwrap();
    let boot = empty(dir.path()).load();
    assert_eq!(
        boot.at_boot().unwrap().hostname.as_deref(),
        Some("seed-host")
    );
    assert!(
        matches!(source_of(&boot), Source::LastGood { from } if from.starts_with("config drive"))
    );
}

#[test]
fn meta_data_does_not_override_the_documents_hostname() {
    let dir = tempfile::tempdir().unwrap();
    config_drive(
        dir.path(),
        &[
            ("user-data", "version = 1\nhostname = \"doc\"\n"),
            ("meta-data", "local-hostname: meta\n"),
        ],
    );
    let boot = empty(dir.path()).load();
    assert_eq!(boot.at_boot().unwrap().hostname.as_deref(), Some("doc"));
}

#[test]
fn a_drive_without_user_data_is_not_a_source() {
    let dir = tempfile::tempdir().unwrap();
    config_drive(dir.path(), &[("meta-data", "local-hostname: meta\n")]);
    let boot = empty(dir.path()).load();
    assert_eq!(settled(&boot), Settled::Defaults);
}

#[test]
fn imds_is_asked_only_when_no_local_source_has_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, seen) = serve(Box::new(|r, _| match r.path.as_str() {
        "/latest/user-data" => (200, b"version = 1\nhostname = \"from-imds\"\n".to_vec()),
        "/latest/meta-data/instance-id" => (200, b"i-1".to_vec()),
        _ => (404, Vec::new()),
    }));
    let mut s = empty(dir.path());
    std::fs::write(&s.fw_cfg, "version = 1\n").unwrap();
    s.imds = ImdsSetting::At(endpoint.clone());
    assert_eq!(source_of(&s.load()), Source::FwCfg);
    assert!(seen.lock().unwrap().is_empty());

    let mut s = empty(dir.path());
    std::fs::remove_file(&s.fw_cfg).unwrap();
    s.imds = ImdsSetting::At(endpoint.clone());
    let boot = s.load();
    // Until IMDS answers, the boot runs on the copy fw_cfg left.
    assert_eq!(boot.at_boot().unwrap().hostname, None);
    let Settled::Config(a) = settled(&boot) else {
        panic!("a config")
    };
    assert_eq!(a.source.kind(), "imds");
    assert_eq!(a.config.hostname.as_deref(), Some("from-imds"));
    let kept = LastGood::at(dir.path().join("var/current.toml"))
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(kept.config.hostname.as_deref(), Some("from-imds"));
    assert!(
        kept.from.starts_with(&format!("imds http://{endpoint}")),
        "{}",
        kept.from
    );
    assert_eq!(kept.meta.instance_id.as_deref(), Some("i-1"));
}

#[test]
fn a_refused_or_absent_imds_config_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, _) = serve(Box::new(|r, _| match r.path.as_str() {
        "/latest/user-data" => (200, b"#cloud-config\nhostname: x\n".to_vec()),
        _ => (404, Vec::new()),
    }));
    let mut s = empty(dir.path());
    s.imds = ImdsSetting::At(bad);
    assert_eq!(settled(&s.load()), Settled::Defaults);

    let (none, _) = serve(Box::new(|_, _| (404, Vec::new())));
    std::fs::create_dir_all(dir.path().join("var")).unwrap();
    std::fs::write(
        dir.path().join("var/current.toml"),
        "version = 1\nhostname = \"kept\"\n",
    )
    .unwrap();
    let mut s = empty(dir.path());
    s.imds = ImdsSetting::At(none);
    let boot = s.load();
    assert_eq!(boot.at_boot().unwrap().hostname.as_deref(), Some("kept"));
    assert_eq!(
        settled(&boot).config().unwrap().hostname.as_deref(),
        Some("kept")
    );
}
