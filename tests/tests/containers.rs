//! The main job in the real image: PID 1 pulls an image from a real registry on the host's
//! loopback (through `guestfwd`), runs it on the bridge with a published port, reports it
//! healthy, and the host fetches the page through `hostfwd`; a power-button shutdown stops
//! the container first. Needs QEMU, OVMF, `docker-registry`, `skopeo` and busybox-static
//! (no root, no KVM).

use std::time::{Duration, Instant};

use gantry_init::supervisor::CONTAINER_LINE;
use gantry_init::{READY_MARKER, SHUTDOWN_MARKER};
use gantry_qemu::Vm;
use gantry_testkit::{free_port, TestRegistry};
use gantry_tests::demo::{fetch, push_web_image, vm_config, wait_healthy, web_config};
use gantry_tests::{image, BOOT_TIMEOUT};

#[test]
fn qemu_runs_a_pulled_container_the_host_reaches_through_a_published_port() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::plain();
    let page = "<h1>served by gantry</h1>\n";
    push_web_image(&registry, dir.path(), page);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, web_config()).unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut vm = Vm::start(&vm_config(&image().qcow2_image, &registry, port, &config)).unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    wait_healthy(&mut vm, "web", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("healthy {:?} after QEMU started", started.elapsed());
    let got = fetch(&format!("http://127.0.0.1:{port}/"))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    assert_eq!(got, page);

    vm.power_button().unwrap();
    let stopping = vm
        .wait_for(CONTAINER_LINE, Duration::from_secs(60))
        .unwrap();
    assert!(
        stopping.contains("name=web") && stopping.contains("SIGTERM"),
        "{stopping}"
    );
    vm.wait_for(SHUTDOWN_MARKER, Duration::from_secs(60))
        .unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    let console = vm.console().to_owned();
    assert!(console.contains("all stopped"), "{console}");
}
