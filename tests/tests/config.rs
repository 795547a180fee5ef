//! Where the machine config comes from, in the real image: a config drive, the instance
//! metadata service through QEMU's `guestfwd`, and the last good copy on `/var` when a new
//! config is refused. Needs QEMU, OVMF, dosfstools and mtools (TCG, no root, no KVM).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_init::config::sources::CONFIG_KEPT;
use gantry_init::{CONFIG_LOADED, CONFIG_REFUSED, READY_MARKER, SHUTDOWN_MARKER};
use gantry_qemu::{GuestForward, Vm, VmConfig};
use gantry_tests::esp::image_with_kernel_args;
use gantry_tests::seed::cidata_drive;
use gantry_tests::{field, image, BOOT_TIMEOUT};

/// The console line saying which host name was set.
fn hostname_line(vm: &mut Vm) -> String {
    vm.wait_for("host name set", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A NoCloud seed with `user-data` and `meta-data`.
fn config_drive(dir: &Path, user_data: &str, meta_data: &str) -> PathBuf {
    let mut files = Vec::new();
    for (name, text) in [("user-data", user_data), ("meta-data", meta_data)] {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write a seed file");
        files.push((name, file));
    }
    let files: Vec<(&str, &Path)> = files.iter().map(|(n, f)| (*n, f.as_path())).collect();
    cidata_drive(dir, 1440, &files)
}

#[test]
fn qemu_a_config_drive_gives_the_config_and_its_meta_data_the_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let seed = config_drive(
        dir.path(),
        "#gantry-config\nversion = 1\n",
        "instance-id: iid-drive-1\nlocal-hostname: drive-node\n",
    );
    let mut cfg = VmConfig::new(&image().qcow2_image);
    cfg.extra_disks.push(seed);
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    let loaded = vm.wait_for(CONFIG_LOADED, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&loaded, "source"), Some("config-drive"), "{loaded}");
    assert_eq!(
        field(&loaded, "instance_id"),
        Some("iid-drive-1"),
        "{loaded}"
    );
    assert!(loaded.contains("/dev/vdb (CIDATA)"), "{loaded}");
    let host = hostname_line(&mut vm);
    assert_eq!(field(&host, "hostname"), Some("drive-node"), "{host}");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    assert!(!vm.console().contains(CONFIG_REFUSED), "{}", vm.tail(40));
}

/// A fake EC2 metadata service on 127.0.0.1. QEMU's `guestfwd` to a TCP chardev is one
/// host connection, made when QEMU starts, that carries whatever the guest sends to the
/// forwarded address; so this serves HTTP/1.1 keep-alive, request after request, on each
/// connection it accepts. Returns the port and the request lines it has seen.
fn metadata_service(user_data: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("the bound address").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || serve_connection(stream, user_data, &log));
        }
    });
    (port, seen)
}

fn serve_connection(stream: TcpStream, user_data: &str, log: &Mutex<Vec<String>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        match reader.read_line(&mut request) {
            Ok(0) | Err(_) => return,
            Ok(_) if request.trim().is_empty() => continue,
            Ok(_) => {}
        }
        let mut length = 0usize;
        let mut token = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            token |= lower.starts_with("x-aws-ec2-metadata-token:");
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = request.trim().to_owned();
        let path = request.split_whitespace().nth(1).unwrap_or("");
        let (status, body) = match (request.starts_with("PUT "), path) {
            (true, "/latest/api/token") => ("200 OK", "test-token"),
            (false, _) if !token => ("401 Unauthorized", ""),
            (false, "/latest/user-data") => ("200 OK", user_data),
            (false, "/latest/meta-data/instance-id") => ("200 OK", "i-0imds"),
            _ => ("404 Not Found", ""),
        };
        log.lock().expect("request log").push(request);
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn qemu_the_metadata_service_gives_the_config_when_no_local_source_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = metadata_service("version = 1\nhostname = \"imds-node\"\n");
    let disk = image_with_kernel_args(dir.path(), "gantry.imds=10.0.2.100:80");
    let mut cfg = VmConfig::new(&disk);
    cfg.guestfwd.push(GuestForward {
        guest_addr: "10.0.2.100".parse().unwrap(),
        guest_port: 80,
        host_port: port,
    });
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    // The only config line: the boot did not settle on defaults before IMDS answered.
    let loaded = vm.wait_for(CONFIG_LOADED, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&loaded, "source"), Some("imds"), "{loaded}");
    assert_eq!(field(&loaded, "instance_id"), Some("i-0imds"), "{loaded}");
    assert!(loaded.contains("http://10.0.2.100:80"), "{loaded}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|r| r.starts_with("PUT /latest/api/token")),
        "IMDSv2 token first: {seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("GET /latest/user-data")),
        "{seen:?}"
    );
}

#[test]
fn qemu_a_refused_config_names_key_and_reason_and_the_last_good_one_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "version = 1\nhostname = \"good-node\"\n").unwrap();
    let mut cfg = VmConfig::new(&image().qcow2_image);
    cfg.fw_cfg.push(("opt/org.gantry/config".into(), good));
    let mut first = Vm::start(&cfg).expect("QEMU starts");
    let loaded = first.wait_for(CONFIG_LOADED, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&loaded, "source"), Some("fw_cfg"), "{loaded}");
    first.wait_for(CONFIG_KEPT, BOOT_TIMEOUT).unwrap();
    first.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    first.power_button().unwrap();
    first
        .wait_for(SHUTDOWN_MARKER, Duration::from_secs(120))
        .unwrap();
    first.wait_exit(Duration::from_secs(60)).unwrap();
    // The second boot runs on what the first wrote: an overlay on the first one's overlay.
    let first_dir = first.keep_files().expect("the first VM's files");
    let first_disk = first.overlay_path().to_owned();
    drop(first);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\nhostname = \"bad-node\"\n[[network.interfaces]]\nname = \"eth0\"\nmtu = 20\n",
    )
    .unwrap();
    let mut cfg = VmConfig::new(&first_disk);
    cfg.fw_cfg.push(("opt/org.gantry/config".into(), bad));
    let mut second = Vm::start(&cfg).expect("QEMU starts");
    let refused = second.wait_for(CONFIG_REFUSED, BOOT_TIMEOUT).unwrap();
    assert!(
        refused.contains("network.interfaces[0].mtu: 20 is below the IPv4 minimum of 68"),
        "{refused}"
    );
    let loaded = second.wait_for(CONFIG_LOADED, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&loaded, "source"), Some("last-good"), "{loaded}");
    let host = hostname_line(&mut second);
    assert_eq!(field(&host, "hostname"), Some("good-node"), "{host}");
    second.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    drop(second);
    let _ = std::fs::remove_dir_all(first_dir);
}
