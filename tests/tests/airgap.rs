//! Air-gapped hosts: no registry anywhere (no `guestfwd` at all). The web image comes as an
//! OCI layout tar in the config drive's `images/`, next to a broken archive; PID 1's image
//! job imports it, passing over the broken one, the container becomes healthy and the host
//! fetches its page through `hostfwd`. Needs QEMU, OVMF, dosfstools, mtools, tar and
//! busybox-static (no root, no KVM).

use std::time::Duration;

use gantry_image_build::tool;
use gantry_init::READY_MARKER;
use gantry_qemu::{HostForward, Vm, VmConfig};
use gantry_runtime::archives::{ARCHIVE_SKIPPED, IMAGE_IMPORTED};
use gantry_testkit::free_port;
use gantry_tests::demo::{fetch, wait_healthy, web_layout, WEB_PORT};
use gantry_tests::seed::cidata_drive;
use gantry_tests::{image, BOOT_TIMEOUT};

/// The name the archive gives the image, and the config runs.
const IMAGE: &str = "example.com/demo/web:1";

#[test]
fn qemu_an_air_gapped_host_runs_an_image_from_the_config_drive() {
    let dir = tempfile::tempdir().unwrap();
    let page = "<h1>served without a registry</h1>\n";
    let layout = web_layout(dir.path(), page, IMAGE);
    let archive = dir.path().join("web.tar");
    tool::TAR
        .cmd()
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .run()
        .expect("tar the layout");
    let broken = dir.path().join("broken.tar");
    std::fs::write(&broken, "not an image archive\n").unwrap();
    let user_data = dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            r#"version = 1

[containers.web]
image = "{IMAGE}"
ports = ["{WEB_PORT}:{WEB_PORT}"]
health = {{ http = "http://127.0.0.1:{WEB_PORT}/", interval_secs = 2, retries = 3 }}
"#
        ),
    )
    .unwrap();
    // "a-" sorts first: the broken archive is read before the good one.
    let seed = cidata_drive(
        dir.path(),
        8192,
        &[
            ("user-data", &user_data),
            ("images/a-broken.tar", &broken),
            ("images/web.tar", &archive),
        ],
    );
    let port = free_port();
    let mut cfg = VmConfig::new(&image().qcow2_image);
    cfg.extra_disks.push(seed);
    cfg.hostfwd.push(HostForward {
        udp: false,
        host_port: port,
        guest_port: WEB_PORT,
    });
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    wait_healthy(&mut vm, "web", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let got = fetch(&format!("http://127.0.0.1:{port}/"))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    assert_eq!(got, page);

    let console = vm.console().to_owned();
    let skipped = console
        .lines()
        .find(|l| l.contains(ARCHIVE_SKIPPED))
        .unwrap_or_else(|| panic!("the broken archive was not reported:\n{console}"));
    assert!(
        skipped.contains("a-broken.tar"),
        "the report names the archive: {skipped}"
    );
    let imported = console
        .lines()
        .find(|l| l.contains(IMAGE_IMPORTED))
        .unwrap_or_else(|| panic!("no import line:\n{console}"));
    assert!(
        imported.contains(IMAGE) && imported.contains("web.tar"),
        "{imported}"
    );
    assert!(!console.contains("cannot pull"), "{console}");
}
