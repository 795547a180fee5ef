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
    /// Local clusters: N nodes on a shared segment, with a registry, etcd and a channel
    /// server beside them.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Boot a cluster; returns once every node is ready.
    Up(UpArgs),
    /// A table of the nodes (or JSON).
    Status {
        #[command(flatten)]
        at: At,
        #[arg(long)]
        json: bool,
    },
    /// Follow a node's serial console.
    Console {
        #[command(flatten)]
        at: At,
        node: u32,
    },
    /// Press a node's power button and wait for it to shut down.
    Stop {
        #[command(flatten)]
        at: At,
        node: u32,
    },
    /// Boot a stopped node from its own disk.
    Start {
        #[command(flatten)]
        at: At,
        node: u32,
    },
    /// Cut a node's power (fault injection).
    Kill {
        #[command(flatten)]
        at: At,
        node: u32,
    },
    /// Cut a node's segment link.
    Partition {
        #[command(flatten)]
        at: At,
        node: u32,
    },
    /// Restore a node's segment link.
    Heal {
        #[command(flatten)]
        at: At,
        node: u32,
    },
    /// Stop everything: nodes, services, the switch.
    Down {
        #[command(flatten)]
        at: At,
        /// Remove the cluster's directory too (logs and description).
        #[arg(long)]
        purge: bool,
    },
}

/// Which cluster: by name (under the state directory) or by directory.
#[derive(Debug, Clone, clap::Args)]
struct At {
    /// The cluster's name.
    #[arg(long, default_value = "gantry")]
    name: String,
    /// The cluster's directory (default: $XDG_STATE_HOME/gantry/clusters/NAME, or
    /// ~/.local/state/gantry/clusters/NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl At {
    fn dir(&self) -> PathBuf {
        if let Some(d) = &self.dir {
            return d.clone();
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        state.join("gantry/clusters").join(&self.name)
    }
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    at: At,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Disk image. Default: target/gantry/gantry.qcow2 of this workspace.
    #[arg(long)]
    image: Option<PathBuf>,
    /// The machine config every node gets (TOML), under its node overlay.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A node's own config, merged onto the cluster's key by key: I=FILE.
    #[arg(long = "node-config", value_name = "I=FILE")]
    node_config: Vec<String>,
    /// Guest memory per node, in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Virtual CPUs per node.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// A guest TCP port to forward from a free port on 127.0.0.1, on every node.
    #[arg(long = "forward", value_name = "GUEST_PORT")]
    forward: Vec<u16>,
    /// No registry, etcd or channel server.
    #[arg(long)]
    no_services: bool,
    /// Boot each node's slot kernel directly (QEMU -kernel, dm-verity still on), skipping
    /// OVMF and GRUB: faster, but no boot counting and a guest reboot boots the same slot.
    /// Kept for `cluster start`.
    #[arg(long)]
    fast: bool,
    /// Seconds to wait for every node to be ready.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
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
    let result = match Cli::parse().command {
        Cmd::Boot(args) => boot(args),
        Cmd::Cluster(c) => cluster(c).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cluster(cmd: ClusterCmd) -> anyhow::Result<()> {
    use gantry_qemu::cluster::{Cluster, ClusterSpec};
    let open = |at: &At| Cluster::open(&at.dir()).map_err(anyhow::Error::msg);
    let boot_timeout = Duration::from_secs(600);
    match cmd {
        ClusterCmd::Up(a) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let mut node_configs = std::collections::BTreeMap::new();
            for spec in &a.node_config {
                let Some((i, file)) = spec.split_once('=') else {
                    bail!("--node-config {spec:?}: want I=FILE");
                };
                let i: u32 = i.parse().with_context(|| {
                    format!("--node-config {spec:?}: {i:?} is not a node number")
                })?;
                node_configs.insert(i, read(&PathBuf::from(file))?);
            }
            let spec = ClusterSpec {
                name: a.at.name.clone(),
                nodes: a.nodes,
                image: a.image.clone().unwrap_or_else(default_image),
                dir: a.at.dir(),
                base_config: a.config.as_ref().map(read).transpose()?,
                node_configs,
                memory_mib: a.memory,
                cpus: a.cpus,
                forward_ports: a.forward.clone(),
                services: !a.no_services,
                fast: a.fast,
            };
            eprintln!(
                "gantry-qemu: booting {} nodes of cluster {} in {} (every node's console: \
                 nodes/I/serial.log)",
                spec.nodes,
                spec.name,
                spec.dir.display()
            );
            let started = std::time::Instant::now();
            let c =
                Cluster::up(&spec, Duration::from_secs(a.timeout)).map_err(anyhow::Error::msg)?;
            eprintln!(
                "gantry-qemu: {} nodes ready in {:.1} s",
                spec.nodes,
                started.elapsed().as_secs_f64()
            );
            print_status(&c);
            for s in &c.state().services {
                println!("{:<9} host {}  nodes {}", s.name, s.host_url, s.node_url);
            }
        }
        ClusterCmd::Status { at, json } => {
            let c = open(&at)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c.status())?);
            } else {
                print_status(&c);
            }
        }
        ClusterCmd::Console { at, node } => {
            let c = open(&at)?;
            let log = c
                .state()
                .node(node)
                .map_err(anyhow::Error::msg)?
                .serial_log
                .clone();
            follow(&log)?;
        }
        ClusterCmd::Stop { at, node } => open(&at)?
            .stop(node, Duration::from_secs(120))
            .map_err(anyhow::Error::msg)?,
        ClusterCmd::Start { at, node } => open(&at)?
            .start(node, boot_timeout)
            .map_err(anyhow::Error::msg)?,
        ClusterCmd::Kill { at, node } => open(&at)?.kill(node).map_err(anyhow::Error::msg)?,
        ClusterCmd::Partition { at, node } => open(&at)?
            .set_link(node, false)
            .map_err(anyhow::Error::msg)?,
        ClusterCmd::Heal { at, node } => open(&at)?
            .set_link(node, true)
            .map_err(anyhow::Error::msg)?,
        ClusterCmd::Down { at, purge } => {
            let dir = at.dir();
            open(&at)?.down();
            if purge {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
    }
    Ok(())
}

fn print_status(c: &gantry_qemu::cluster::Cluster) {
    println!(
        "{:<4} {:<16} {:<12} {:<8} {:<5} {:<9} {:<10} {:<32} forwards",
        "node", "name", "address", "version", "slot", "state", "containers", "machine id"
    );
    for n in c.status() {
        let fwd: Vec<String> = n
            .forwards
            .iter()
            .map(|(h, g)| format!("127.0.0.1:{h}->{g}"))
            .collect();
        println!(
            "{:<4} {:<16} {:<12} {:<8} {:<5} {:<9} {:<10} {:<32} {}",
            n.index,
            n.name,
            n.address.to_string(),
            n.version.as_deref().unwrap_or("-"),
            n.slot.as_deref().unwrap_or("-"),
            if n.partitioned { "cut-off" } else { n.state },
            format!("{}/{}", n.containers_healthy, n.containers_total),
            n.reported_machine_id.as_deref().unwrap_or(&n.machine_id),
            fwd.join(" ")
        );
    }
}

/// Prints a file as it grows, like `tail -f`, from its start.
fn follow(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut out = std::io::stdout();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

fn default_image() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/gantry/gantry.qcow2")
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
    let image = args.image.unwrap_or_else(default_image);
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
            .wait_for(
                gantry_contract::READY_MARKER,
                Duration::from_secs(args.timeout),
            )
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
