//! The main job, end to end: a registry on the host's loopback with a small web image in
//! it, a machine config that runs that image with a published port, and a VM that pulls
//! it through `guestfwd`, serves the page, and is reached from the host through
//! `hostfwd`. Used by the `qemu_` end-to-end test and by `gantry-demo` (README's first
//! command).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gantry_init::supervisor::CONTAINER_LINE;
use gantry_qemu::{GuestForward, HostForward, Vm, VmConfig};
use gantry_testkit::{finish_layout, layer_tar, Comp, Entry, ImageSpec, TestRegistry};

/// Where the guest reaches the registry (QEMU's user network forwards it to loopback).
pub const REGISTRY_IN_GUEST: (std::net::Ipv4Addr, u16) =
    (std::net::Ipv4Addr::new(10, 0, 2, 100), 5000);
/// The port the web container listens on, and the port published on the guest.
pub const WEB_PORT: u16 = 8080;
/// The image the demo config runs.
pub const WEB_IMAGE: &str = "10.0.2.100:5000/demo/web:1";

/// The web image's command: busybox `httpd` serving /www on [`WEB_PORT`].
const WEB_CMD: &[&str] = &[
    "/bin/busybox",
    "httpd",
    "-f",
    "-v",
    "-p",
    "8080",
    "-h",
    "/www",
];

/// Writes the web image (busybox `httpd` serving `page` from /www) as an OCI layout under
/// `dir`, its index naming it `ref_name` (a tag, or a whole reference for an archive that
/// names its image); returns the layout.
pub fn web_layout(dir: &Path, page: &str, ref_name: &str) -> PathBuf {
    let files = [
        Entry::Dir("www"),
        Entry::File("www/index.html", page.as_bytes(), 0o644),
    ];
    busybox_layout(&dir.join("demo-web-layout"), &files, WEB_CMD, ref_name)
}

/// Builds the web image and pushes it to `registry` as `demo/web:1`.
pub fn push_web_image(registry: &TestRegistry, dir: &Path, page: &str) {
    let layout = web_layout(dir, page, "1");
    registry.push(&layout, "1", "demo/web", &[]);
}

/// Builds [`busybox_layout`] with `files` and `cmd` and pushes it to `registry` as
/// `<repository>:1`.
pub fn push_busybox_image(
    registry: &TestRegistry,
    dir: &Path,
    repository: &str,
    files: &[Entry<'_>],
    cmd: &[&str],
) {
    let layout = dir.join(format!("{}-layout", repository.replace('/', "-")));
    busybox_layout(&layout, files, cmd, "1");
    registry.push(&layout, "1", repository, &[]);
}

/// Writes, as the OCI layout `layout`, an image of the host's static busybox with a second
/// layer of `files` and `cmd` as its command, named `ref_name` in the index; returns
/// `layout`.
pub fn busybox_layout(layout: &Path, files: &[Entry<'_>], cmd: &[&str], ref_name: &str) -> PathBuf {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static must be installed");
    let layers = vec![
        layer_tar(&[
            Entry::Dir("bin"),
            Entry::File("bin/busybox", &busybox, 0o755),
            Entry::Symlink("bin/sh", "busybox"),
        ]),
        layer_tar(files),
    ];
    std::fs::create_dir_all(layout).expect("layout dir");
    let desc = gantry_testkit::add_image(
        layout,
        &ImageSpec {
            arch: "amd64",
            layers: &layers,
            comp: Comp::Gzip,
            bad_diff_id: false,
            cmd,
        },
    );
    finish_layout(layout, vec![(ref_name, desc)]);
    layout.to_owned()
}

/// The `[registries]` section that lets the guest pull from the test registry over HTTP.
pub fn registries_section() -> String {
    format!(
        "[registries]\ninsecure = [\"{}:{}\"]\n",
        REGISTRY_IN_GUEST.0, REGISTRY_IN_GUEST.1
    )
}

/// The machine config that runs the web image.
pub fn web_config() -> String {
    format!(
        r#"version = 1
hostname = "demo"

{registries}
[containers.web]
image = "{WEB_IMAGE}"
ports = ["{WEB_PORT}:{WEB_PORT}"]
required = true
# busybox httpd, as PID 1 of its namespace, ignores SIGTERM: no point waiting 10 s.
stop_grace_secs = 3
health = {{ http = "http://127.0.0.1:{WEB_PORT}/", interval_secs = 2, retries = 3 }}
"#,
        registries = registries_section(),
    )
}

/// A VM for `image` that reaches `registry` as [`REGISTRY_IN_GUEST`], publishes the web
/// port on the host's `host_port`, and gets `config` through fw_cfg.
pub fn vm_config(
    image: &Path,
    registry: &TestRegistry,
    host_port: u16,
    config_file: &Path,
) -> VmConfig {
    let mut cfg = registry_vm_config(image, registry, config_file);
    cfg.hostfwd.push(HostForward {
        udp: false,
        host_port,
        guest_port: WEB_PORT,
    });
    cfg
}

/// A VM for `image` that reaches `registry` as [`REGISTRY_IN_GUEST`] and gets `config`
/// through fw_cfg.
pub fn registry_vm_config(image: &Path, registry: &TestRegistry, config_file: &Path) -> VmConfig {
    let registry_port: u16 = registry
        .host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the registry listens on a port");
    let mut cfg = VmConfig::new(image);
    cfg.guestfwd.push(GuestForward {
        guest_addr: REGISTRY_IN_GUEST.0,
        guest_port: REGISTRY_IN_GUEST.1,
        host_port: registry_port,
    });
    cfg.fw_cfg
        .push(("opt/org.gantry/config".to_owned(), config_file.to_owned()));
    cfg
}

/// Waits for the container to be reported healthy.
pub fn wait_healthy(vm: &mut Vm, name: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = vm
            .wait_for(CONTAINER_LINE, left)
            .map_err(|e| format!("{name} never became healthy: {e}\n{}", vm.tail(60)))?;
        if line.contains(&format!("name={name}")) && line.contains("health=Healthy") {
            return Ok(line);
        }
    }
}

/// `GET url` from the host; the body.
pub fn fetch(url: &str) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let r = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| format!("{url}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{url}: {status}: {body}"))
        }
    })
}
