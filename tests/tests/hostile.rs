//! The hostile-image suite's cases that need the real machine: cgroup v2, where PID 1's
//! containers are cloned straight into their cgroups (the host's build machines have no
//! cgroup v2 to do that in). The runtime's own suite (`runtime/tests/hostile_*.rs`) covers
//! the same classes on the host. Needs QEMU, OVMF, `docker-registry`, `skopeo` and
//! busybox-static (no root, no KVM).

use std::time::{Duration, Instant};

use gantry_init::supervisor::CONTAINER_LINE;
use gantry_init::READY_MARKER;
use gantry_qemu::Vm;
use gantry_testkit::{free_port, TestRegistry};
use gantry_tests::demo::{fetch, push_web_image, vm_config, wait_healthy, WEB_IMAGE, WEB_PORT};
use gantry_tests::{image, BOOT_TIMEOUT};

/// The descriptors a container's init could have inherited from the runtime.
const LEAKED_FDS: std::ops::RangeInclusive<u32> = 3..=20;

/// Each probe container walks up from its working directory and reads what it finds as
/// `etc/os-release`: the machine's own names Gantry (`GANTRY_…` keys), the image has none.
/// Its output lands in the shared volume that `web` serves.
fn probe_command(name: &str) -> String {
    format!(
        "{{ echo pwd=$(/bin/busybox pwd); \
         /bin/busybox cat ../../../../../../../../etc/os-release; \
         /bin/busybox cat ../../../../../../../../www/index.html; }} > /shared/{name}.txt 2>&1"
    )
}

fn escape_config() -> String {
    let mut config = format!(
        r#"version = 1

{registries}
[containers.web]
image = "{WEB_IMAGE}"
volumes = ["shared:/shared"]
ports = ["{WEB_PORT}:{WEB_PORT}"]
command = ["/bin/busybox", "httpd", "-f", "-p", "{WEB_PORT}", "-h", "/shared"]
stop_grace_secs = 3
health = {{ exec = ["/bin/busybox", "true"], interval_secs = 1 }}

# The control: a working directory inside the root, from which the same walk reaches the
# image's page. It shows the probe can read what its walk leads to.
[containers.control]
image = "{WEB_IMAGE}"
volumes = ["shared:/shared"]
working_dir = "/www"
restart = "no"
entrypoint = ["/bin/sh", "-c"]
command = ['{control}']
"#,
        registries = gantry_tests::demo::registries_section(),
        control = probe_command("control"),
    );
    for n in LEAKED_FDS {
        let name = format!("fd{n}");
        config.push_str(&format!(
            r#"
[containers.{name}]
image = "{WEB_IMAGE}"
volumes = ["shared:/shared"]
working_dir = "/proc/self/fd/{n}"
restart = "no"
entrypoint = ["/bin/sh", "-c"]
command = ['{command}']
"#,
            command = probe_command(&name),
        ));
    }
    config
}

/// Attack (the class of CVE-2024-21626): a machine-config container whose working
/// directory is `/proc/self/fd/N`, for every N a runtime might leak into the container's
/// init (the host's cgroup directory that `clone3(CLONE_INTO_CGROUP)` needs, a state
/// directory, a socket), then `../../..` from there. Must see: every probe either refused
/// with an error that names the working directory, or run with its working directory
/// inside its own root, and none reads the machine's `/etc/os-release`.
#[test]
fn qemu_a_working_directory_through_proc_self_fd_never_reaches_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::plain();
    let page = "<p>the image's own page</p>\n";
    push_web_image(&registry, dir.path(), page);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, escape_config()).unwrap();
    let port = free_port();
    let mut vm = Vm::start(&vm_config(&image().qcow2_image, &registry, port, &config)).unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    wait_healthy(&mut vm, "web", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));

    // Every probe ends: it ran its walk and exited, or it was refused and, with
    // `restart = "no"`, stays exited.
    let probes: Vec<String> = std::iter::once("control".to_owned())
        .chain(LEAKED_FDS.map(|n| format!("fd{n}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let console = vm.console().to_owned();
        let pending: Vec<&String> = probes
            .iter()
            .filter(|p| {
                !console.lines().any(|l| {
                    l.contains(CONTAINER_LINE)
                        && l.contains(&format!("name={p} "))
                        && l.contains("state=\"exited\"")
                })
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("probes {pending:?} never exited\n{}", vm.tail(80));
        }
        let _ = vm.wait_for(CONTAINER_LINE, left);
    }

    let control = fetch(&format!("http://127.0.0.1:{port}/control.txt"))
        .unwrap_or_else(|e| panic!("the control left nothing: {e}\n{}", vm.tail(60)));
    assert!(control.contains(page), "the control's walk: {control}");
    // All outcomes first, then one verdict that shows every probe.
    let console = vm.console().to_owned();
    let mut outcomes = Vec::new();
    let mut wrong = Vec::new();
    for n in LEAKED_FDS {
        let name = format!("fd{n}");
        let value = format!("/proc/self/fd/{n}");
        let exited = console
            .lines()
            .find(|l| l.contains(&format!("name={name} ")) && l.contains("state=\"exited\""))
            .unwrap_or_default();
        match fetch(&format!("http://127.0.0.1:{port}/{name}.txt")) {
            Ok(seen) => {
                let pwd = seen.lines().next().unwrap_or_default().to_owned();
                if seen.contains("GANTRY") {
                    wrong.push(format!(
                        "{name} read the machine's os-release through {value}"
                    ));
                } else if !pwd.starts_with("pwd=/") || pwd.contains("unreachable") {
                    wrong.push(format!("{name} ran outside its root: {pwd}"));
                }
                outcomes.push(format!("{name}: ran, {pwd}"));
            }
            // No output: the probe never ran its shell. It must have been refused, which
            // the supervisor sees as an exit with a non-zero status.
            Err(_) => {
                if !exited.contains("exited with status") || exited.contains("status 0\"") {
                    wrong.push(format!(
                        "{name} left no output and was not refused: {exited}"
                    ));
                }
                outcomes.push(format!("{name}: refused, {exited}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\nall probes:\n{}\n{}",
        outcomes.join("\n"),
        vm.tail(80)
    );
    let refusals = console
        .lines()
        .filter(|l| l.contains("init failed") && l.contains("/proc/self/fd/"))
        .count();
    eprintln!(
        "{}\n{refusals} refusals on the console",
        outcomes.join("\n")
    );
}
