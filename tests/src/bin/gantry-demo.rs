//! README's first command: builds the image, starts a registry on loopback with a small
//! web image in it, boots Gantry in QEMU with a config that runs that image on a published
//! port, fetches the page from the host, and powers the machine off.

use std::process::ExitCode;
use std::time::Duration;

use gantry_init::READY_MARKER;
use gantry_qemu::Vm;
use gantry_testkit::{free_port, TestRegistry};
use gantry_tests::demo::{fetch, push_web_image, vm_config, wait_healthy, web_config};
use gantry_tests::{image, BOOT_TIMEOUT};

fn main() -> ExitCode {
    match run() {
        Ok(page) => {
            println!(
                "\n--- fetched from the container through the VM's published port ---\n{page}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gantry-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let image = image();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    eprintln!("gantry-demo: starting a registry on loopback and pushing demo/web:1");
    let registry = TestRegistry::plain();
    push_web_image(
        &registry,
        dir.path(),
        "<h1>Hello from a Gantry container</h1>\n",
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, web_config()).map_err(|e| e.to_string())?;
    let port = free_port();
    let mut cfg = vm_config(&image.qcow2_image, &registry, port, &config);
    cfg.console = true;
    eprintln!("gantry-demo: booting {}", image.qcow2_image.display());
    let mut vm = Vm::start(&cfg).map_err(|e| e.to_string())?;
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    wait_healthy(&mut vm, "web", Duration::from_secs(300))?;
    let page = fetch(&format!("http://127.0.0.1:{port}/"))?;
    vm.power_button().map_err(|e| e.to_string())?;
    vm.wait_exit(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    Ok(page)
}
