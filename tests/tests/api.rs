//! PID 1's HTTPS API in the real image: a config with an `[api]` section (a self-signed
//! certificate made here with the `openssl` command, the SHA-256 of a token) reaches the VM
//! through fw_cfg; the host talks to the API through `hostfwd`, trusting only that
//! certificate. Needs QEMU, OVMF, `docker-registry`, `skopeo`, busybox-static and openssl
//! (no root, no KVM).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_init::api::API_LISTENING;
use gantry_init::READY_MARKER;
use gantry_qemu::{HostForward, Vm};
use gantry_testkit::{free_port, TestRegistry};
use gantry_tests::demo::{push_web_image, registries_section, registry_vm_config, WEB_IMAGE};
use gantry_tests::{image, BOOT_TIMEOUT};

const API_PORT: u16 = 7443;
const TOKEN: &str = "e2e-token-7f3a9c";

/// Runs `openssl` with `args`; its stdout.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed server certificate for `localhost` and its key, as PEM files in `dir`.
fn make_certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        // webpki (reqwest's rustls) refuses a CA certificate as a server's.
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        key.to_str().expect("a UTF-8 temporary path"),
        "-out",
        cert.to_str().expect("a UTF-8 temporary path"),
    ]);
    (
        std::fs::read_to_string(cert).expect("the certificate openssl wrote"),
        std::fs::read_to_string(key).expect("the key openssl wrote"),
    )
}

/// The SHA-256 of `token` in hex, as `openssl dgst` computes it.
fn sha256_hex(dir: &Path, token: &str) -> String {
    let file = dir.join("token");
    std::fs::write(&file, token).expect("the token file");
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-r",
        file.to_str().expect("a UTF-8 temporary path"),
    ]);
    let hex = out.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(hex.len(), 64, "{out}");
    hex
}

/// A container that says hello and then counts, and the API with `token_sha256`.
fn api_config(cert: &str, key: &str, token_sha256: &str) -> String {
    format!(
        r#"version = 1
hostname = "api-test"

{registries}
[containers.talker]
image = "{WEB_IMAGE}"
network = "none"
entrypoint = ["/bin/sh", "-c"]
command = ["echo hello-from-talker; i=0; while true; do i=$((i+1)); echo tick $i; /bin/busybox sleep 1; done"]
stop_grace_secs = 1

[api]
listen = "0.0.0.0:{API_PORT}"
tls_cert = """
{cert}"""
tls_key = """
{key}"""
tokens = [{{ name = "e2e", sha256 = "{token_sha256}" }}]
"#,
        registries = registries_section(),
    )
}

/// GETs `https://localhost:<port><path>` trusting only `cert`; (status, body).
fn get(port: u16, cert: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let ca = reqwest::Certificate::from_pem(cert.as_bytes()).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.get(format!("https://localhost:{port}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.map_err(|e| format!("{path}: {e:?}"))?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| format!("{path}: {e}"))?;
        Ok((status, body))
    })
}

#[test]
fn qemu_api_serves_status_and_logs_over_https_to_a_token_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_certificate(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        api_config(&cert, &key, &sha256_hex(dir.path(), TOKEN)),
    )
    .unwrap();
    let registry = TestRegistry::plain();
    push_web_image(&registry, dir.path(), "unused\n");
    let port = free_port();
    // A copy: other test processes may rebuild target/gantry while this VM runs on it.
    let disk = dir.path().join("gantry.qcow2");
    std::fs::copy(&image().qcow2_image, &disk).unwrap();
    let mut vm_config = registry_vm_config(&disk, &registry, &config);
    vm_config.hostfwd.push(HostForward {
        udp: false,
        host_port: port,
        guest_port: API_PORT,
    });
    // PID 1 takes its machine id from the SMBIOS UUID on a first boot.
    vm_config.uuid = Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8".into());
    let mut vm = Vm::start(&vm_config).unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    vm.wait_for(API_LISTENING, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(60)));

    let (status, body) = get(port, &cert, "/v1/status", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = get(port, &cert, "/v1/status", Some("not-the-token")).unwrap();
    assert_eq!(status, 401);

    // The container is pulled and started after boot: wait until the status says running
    // and its log has counted a few lines.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (status_json, logs) = loop {
        let (code, body) = get(port, &cert, "/v1/status", Some(TOKEN))
            .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
        assert_eq!(code, 200, "{body}");
        let (code, logs) = get(
            port,
            &cert,
            "/v1/containers/talker/logs?tail=3",
            Some(TOKEN),
        )
        .unwrap();
        assert_eq!(code, 200, "{logs}");
        // One container: its state is the only one (the JSON is pretty-printed).
        if body.contains("\"talker\": {")
            && body.contains("\"state\": \"running\"")
            && logs.contains("tick 4")
        {
            break (body, logs);
        }
        assert!(
            Instant::now() < deadline,
            "talker never ran and logged:\n{body}\n{logs}\n{}",
            vm.tail(60)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(
        status_json.contains(&format!("\"image\": \"{WEB_IMAGE}\""))
            && status_json.contains("\"os_version\": \"")
            && status_json.contains("\"restarts\": 0")
            && status_json.contains("\"machine_id\": \"6ba7b8109dad11d180b400c04fd430c8\""),
        "{status_json}"
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(lines.iter().all(|l| l.contains("tick ")), "{logs}");
    let (code, all) = get(
        port,
        &cert,
        "/v1/containers/talker/logs?tail=10000",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(all.contains("hello-from-talker"), "{all}");

    for path in [
        "/v1/containers/web/logs",
        "/v1/containers/..%2f..%2fetc/logs",
        "/v2",
    ] {
        let (code, body) = get(port, &cert, path, Some(TOKEN)).unwrap();
        assert_eq!(code, 404, "{path}: {body}");
    }
    let console = vm.console().to_owned();
    assert!(
        console.contains("gantry-init: api request") && console.contains("token=\"e2e\""),
        "{}",
        vm.tail(40)
    );
}
