//! `gantry-qemu`: boots a Gantry image in QEMU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use gantry_qemu::{DiskBus, HostForward, Vm, VmConfig};

#[derive(Debug, Parser)]
#[command(version, about = "Boot Gantry images in QEMU")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot an image (through a throw-away overlay; the image is never modified).
    Boot(BootArgs),
}

#[derive(Debug, clap::Args)]
struct BootArgs {
    /// Disk image (raw or qcow2). Default: target/gantry/gantry.qcow2 of this workspace.
    image: Option<PathBuf>,
    /// Show the serial console on this terminal (it is always logged).
    #[arg(long)]
    console: bool,
    /// Once PID 1 reports ready, press the power button and wait for QEMU to exit.
    #[arg(long)]
    until_ready: bool,
    /// Forward a host port on 127.0.0.1 to the guest: [udp:]HOST:GUEST.
    #[arg(long = "hostfwd", value_name = "[udp:]HOST:GUEST")]
    hostfwd: Vec<String>,
    /// Add a fw_cfg file: NAME=PATH (the machine config is opt/org.gantry/config).
    #[arg(long = "fw-cfg", value_name = "NAME=PATH")]
    fw_cfg: Vec<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Attach the disk as NVMe instead of virtio-blk.
    #[arg(long)]
    nvme: bool,
    /// Exit instead of rebooting.
    #[arg(long)]
    no_reboot: bool,
    /// Seconds to wait for the ready marker with --until-ready.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn main() -> ExitCode {
    let Cmd::Boot(args) = Cli::parse().command;
    match boot(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_hostfwd(spec: &str) -> anyhow::Result<HostForward> {
    let (udp, rest) = match spec.strip_prefix("udp:") {
        Some(rest) => (true, rest),
        None => (false, spec.strip_prefix("tcp:").unwrap_or(spec)),
    };
    let Some((host, guest)) = rest.split_once(':') else {
        bail!("--hostfwd {spec:?}: want [udp:]HOST:GUEST");
    };
    Ok(HostForward {
        udp,
        host_port: host
            .parse()
            .with_context(|| format!("--hostfwd {spec:?}: bad host port"))?,
        guest_port: guest
            .parse()
            .with_context(|| format!("--hostfwd {spec:?}: bad guest port"))?,
    })
}

fn boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    let image = args.image.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/gantry/gantry.qcow2")
    });
    if !image.is_file() {
        bail!(
            "image {} does not exist; build it with `cargo run --release -p gantry-image-build`",
            image.display()
        );
    }
    let mut cfg = VmConfig::new(&image);
    cfg.console = args.console;
    cfg.memory_mib = args.memory;
    cfg.cpus = args.cpus;
    cfg.no_reboot = args.no_reboot;
    if args.nvme {
        cfg.disk_bus = DiskBus::Nvme;
    }
    for spec in &args.hostfwd {
        cfg.hostfwd.push(parse_hostfwd(spec)?);
    }
    for spec in &args.fw_cfg {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--fw-cfg {spec:?}: want NAME=PATH");
        };
        cfg.fw_cfg.push((name.to_owned(), PathBuf::from(path)));
    }
    let mut vm = Vm::start(&cfg).context("cannot start the VM")?;
    eprintln!(
        "gantry-qemu: booting {} (serial log {}, QMP {})",
        image.display(),
        vm.serial_log_path().display(),
        vm.qmp_path().display()
    );
    if args.until_ready {
        let line = vm
            .wait_for(gantry_init::READY_MARKER, Duration::from_secs(args.timeout))
            .context("the machine did not come up")?;
        eprintln!("gantry-qemu: ready: {line}");
        eprintln!("gantry-qemu: pressing the power button");
        vm.power_button()?;
        let status = vm.wait_exit(Duration::from_secs(60))?;
        eprintln!("gantry-qemu: QEMU exited ({status})");
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let status = vm.wait_exit(Duration::from_secs(u64::MAX / 4))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
