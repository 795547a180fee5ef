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
use gantry_tests::demo::{fetch, push_web_image, vm_config, wait_healthy, web_config, WEB_IMAGE};
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

/// The config of the supervision test: a web server that leaves its bridge address in a
/// shared volume; a client that needs it and fetches from that address over the bridge; a job that keeps failing; a container whose health check
/// fails; one without a network on a machine whose config names a missing NIC.
fn supervision_config() -> String {
    format!(
        r#"version = 1

[[network.interfaces]]
name = "eth9"

[[network.interfaces]]
name = "eth0"

[registries]
insecure = ["10.0.2.100:5000"]

[containers.web]
image = "{WEB_IMAGE}"
volumes = ["shared:/shared"]
entrypoint = ["/bin/sh", "-c"]
command = ["/bin/busybox ifconfig eth0 | /bin/busybox sed -n 's/.*inet addr:\\([0-9.]*\\).*/\\1/p' > /shared/web-ip; exec /bin/busybox httpd -f -p 8080 -h /www"]
health = {{ http = "http://127.0.0.1:8080/", interval_secs = 1 }}

[containers.client]
image = "{WEB_IMAGE}"
depends_on = ["web"]
volumes = ["shared:/shared:ro"]
entrypoint = ["/bin/sh", "-c"]
command = ["until /bin/busybox wget -q -O /got http://$(/bin/busybox cat /shared/web-ip):8080/; do /bin/busybox sleep 1; done; trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"]
health = {{ exec = ["/bin/busybox", "test", "-s", "/got"], interval_secs = 1 }}

[containers.flaky]
image = "{WEB_IMAGE}"
entrypoint = ["/bin/sh", "-c", "exit 3"]
restart = "on-failure:2"

[containers.sick]
image = "{WEB_IMAGE}"
entrypoint = ["/bin/busybox", "sleep", "1000"]
health = {{ exec = ["/bin/busybox", "false"], interval_secs = 1, retries = 2 }}

[containers.isolated]
image = "{WEB_IMAGE}"
network = "none"
entrypoint = ["/bin/busybox", "sleep", "1000"]
"#
    )
}

/// Lines about container `name`.
fn lines_of<'a>(console: &'a str, name: &str) -> Vec<&'a str> {
    console
        .lines()
        .filter(|l| l.contains(CONTAINER_LINE) && l.contains(&format!("name={name} ")))
        .collect()
}

#[test]
fn qemu_supervision_orders_restarts_checks_and_isolates_containers() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::plain();
    push_web_image(&registry, dir.path(), "<p>for the client</p>\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, supervision_config()).unwrap();
    let mut vm = Vm::start(&vm_config(
        &image().qcow2_image,
        &registry,
        free_port(),
        &config,
    ))
    .unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    // The client reached web over the bridge: its check sees the fetched page.
    wait_healthy(&mut vm, "client", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let console = vm.console().to_owned();
        let flaky = lines_of(&console, "flaky");
        let sick_unhealthy = lines_of(&console, "sick")
            .iter()
            .any(|l| l.contains("health=\"unhealthy\""));
        let done = flaky.iter().any(|l| l.contains("state=\"exited\""));
        if done && sick_unhealthy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flaky or sick never settled:\n{console}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let console = vm.console().to_owned();
    // depends_on: client is not even pulled before web is healthy.
    let pos = |needle: &dyn Fn(&str) -> bool| console.lines().position(needle);
    let web_healthy = pos(&|l| l.contains("name=web ") && l.contains("health=Healthy")).unwrap();
    let client_first = pos(&|l| l.contains(CONTAINER_LINE) && l.contains("name=client ")).unwrap();
    assert!(
        web_healthy < client_first,
        "client started before web was healthy:\n{console}"
    );
    // on-failure:2: two restarts with a doubling back-off, then it stays down.
    let flaky = lines_of(&console, "flaky");
    assert!(
        flaky.iter().any(|l| l.contains("again in 1 s")),
        "{flaky:#?}"
    );
    assert!(
        flaky.iter().any(|l| l.contains("again in 2 s")),
        "{flaky:#?}"
    );
    assert!(
        !flaky.iter().any(|l| l.contains("again in 4 s")),
        "{flaky:#?}"
    );
    assert!(flaky.last().unwrap().contains("restarts=2"), "{flaky:#?}");
    // An unhealthy container is reported and left running.
    assert!(lines_of(&console, "sick")
        .iter()
        .all(|l| !l.contains("state=\"exited\"")));
    // No network needed, none configured missing: it runs although eth9 does not exist.
    assert!(console.contains("no interface named eth9"), "{console}");
    assert!(
        lines_of(&console, "isolated")
            .iter()
            .any(|l| l.contains("state=\"running\"")),
        "{console}"
    );

    // Orderly shutdown: client (which handles SIGTERM) stops with status 0 before web.
    vm.power_button().unwrap();
    vm.wait_for(SHUTDOWN_MARKER, Duration::from_secs(120))
        .unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    let console = vm.console().to_owned();
    let client_stop = pos2(&console, "name=client ", "stopped with status 0");
    let web_term = pos2(&console, "name=web ", "SIGTERM");
    assert!(
        client_stop < web_term,
        "web was stopped before its dependant:\n{console}"
    );
}

/// The line number of the first container line with both `a` and `b`.
fn pos2(console: &str, a: &str, b: &str) -> usize {
    console
        .lines()
        .position(|l| l.contains(CONTAINER_LINE) && l.contains(a) && l.contains(b))
        .unwrap_or_else(|| panic!("no line with {a:?} and {b:?}:\n{console}"))
}

/// cgroup v2 in the machine (the build hosts are v1/hybrid): the `resources` of a
/// container's config become its cgroup's limits. The container reads its own cgroup
/// (private cgroup namespace, `/sys/fs/cgroup` mounted read-only) into a file its web
/// server serves, and the host fetches it through the published port.
#[test]
fn qemu_resources_from_the_config_are_the_containers_cgroup_v2_limits() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::plain();
    push_web_image(&registry, dir.path(), "limits\n");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1

{registries}
[containers.web]
image = "{WEB_IMAGE}"
command = ["/bin/busybox", "sh", "-c", "cd /sys/fs/cgroup && /bin/busybox cat memory.max pids.max cpu.max > /www/cgroup.txt && exec /bin/busybox httpd -f -p 8080 -h /www"]
ports = ["8080:8080"]
stop_grace_secs = 3
resources = {{ memory_mib = 64, cpu_millis = 500, pids = 50 }}
health = {{ http = "http://127.0.0.1:8080/cgroup.txt", interval_secs = 2, retries = 3 }}
"#,
            registries = gantry_tests::demo::registries_section(),
        ),
    )
    .unwrap();
    let port = free_port();
    let mut vm = Vm::start(&vm_config(&image().qcow2_image, &registry, port, &config)).unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    wait_healthy(&mut vm, "web", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let got = fetch(&format!("http://127.0.0.1:{port}/cgroup.txt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let lines: Vec<&str> = got.lines().collect();
    // 64 MiB, 50 tasks, half a CPU per 100 ms period.
    assert_eq!(lines, ["67108864", "50", "50000 100000"], "{got}");
}

/// The device eBPF program in the machine (the build hosts have no cgroup v2 to attach it
/// to): the container, which has CAP_MKNOD where device rules can be enforced, makes a
/// node for the first SCSI disk (block 8:0, not in the allow-list) and one for /dev/zero's
/// numbers (char 1:5, allowed) in its `/dev` tmpfs (its root file system is `nodev`, which
/// would refuse both with EACCES), then opens them and the standard /dev/zero. It serves
/// what each step gave. The made node for allowed numbers opening is the control: making
/// and opening a node works, only the numbers decide; and EPERM, not ENXIO, says that the
/// program refused the disk before any driver was asked.
#[test]
fn qemu_the_device_program_refuses_a_node_outside_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::plain();
    push_web_image(&registry, dir.path(), "devices\n");
    let config = dir.path().join("config.toml");
    // `step` runs a command and prints `<command>: ok` or `<command>: <its error>`. No
    // quotes in the script: it goes into the config as a TOML literal string.
    let script = "b=/bin/busybox; \
        step() { if out=$($b $@ 2>&1 >/dev/null); then echo $*: ok; else echo $*: $out; fi; }; \
        { step mknod /dev/sda b 8 0; step mknod /dev/zero2 c 1 5; \
          step head -c 1 /dev/sda; step head -c 1 /dev/zero2; step head -c 1 /dev/zero; } \
        > /www/devices.txt; exec $b httpd -f -p 8080 -h /www";
    std::fs::write(
        &config,
        format!(
            r#"version = 1

{registries}
[containers.web]
image = "{WEB_IMAGE}"
command = ["/bin/busybox", "sh", "-c", '{script}']
ports = ["8080:8080"]
stop_grace_secs = 3
health = {{ http = "http://127.0.0.1:8080/devices.txt", interval_secs = 2, retries = 3 }}
"#,
            registries = gantry_tests::demo::registries_section(),
        ),
    )
    .unwrap();
    let port = free_port();
    let mut vm = Vm::start(&vm_config(&image().qcow2_image, &registry, port, &config)).unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    wait_healthy(&mut vm, "web", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let got = fetch(&format!("http://127.0.0.1:{port}/devices.txt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let result = |command: &str| {
        got.lines()
            .find_map(|l| l.strip_prefix(command)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no line for {command:?}:\n{got}"))
    };
    // mknod of any node is allowed (as runc does); opening it is what the numbers decide.
    assert_eq!(result("mknod /dev/sda b 8 0"), "ok", "{got}");
    assert_eq!(result("mknod /dev/zero2 c 1 5"), "ok", "{got}");
    assert!(
        result("head -c 1 /dev/sda").contains("Operation not permitted"),
        "{got}"
    );
    assert_eq!(result("head -c 1 /dev/zero2"), "ok", "{got}");
    assert_eq!(result("head -c 1 /dev/zero"), "ok", "{got}");
}
