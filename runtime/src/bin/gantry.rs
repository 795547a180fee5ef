//! `gantry image pull|ensure|import|ls|inspect|rm|prune|check`: the image store from the command
//! line, on a Linux host or inside a Gantry machine.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use gantry_runtime::archives::{self, ARCHIVE_SKIPPED, IMAGE_IMPORTED};
use gantry_runtime::import;
use gantry_runtime::network::{self, NetworkMode, PortMapping, Subnet};
use gantry_runtime::pull::{self, LayerDone, Progress, PullOptions};
use gantry_runtime::registry::{Credentials, RegistryOptions};
use gantry_runtime::store::{ImageRecord, Store, DEFAULT_ROOT};
use gantry_runtime::{Digest, ImageRef};

#[derive(Parser)]
#[command(name = "gantry", version, about = "Gantry's image store")]
struct Cli {
    /// Store directory.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Pull, import, list and remove images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Run a container from an image in the store, in the foreground, with Docker's secure
    /// defaults; exits with the container's status. The container is removed afterwards.
    Run(Box<RunArgs>),
    /// Check a running container's health once: exit status 0 when healthy, 1 when not.
    /// `tcp` and `http` connect to 127.0.0.1 inside the container's network namespace.
    Probe(ProbeArgs),
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// The container's name.
    #[arg(long)]
    name: String,
    /// Where `gantry run` keeps container state.
    #[arg(long, default_value = "/run/gantry")]
    state_root: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,
    #[command(subcommand)]
    check: ProbeCheck,
}

#[derive(Subcommand)]
enum ProbeCheck {
    /// A TCP port accepts a connection.
    Tcp { port: u16 },
    /// `GET http://127.0.0.1:PORT/PATH` answers 2xx or 3xx.
    Http { port: u16, path: String },
    /// A command run in the container exits 0.
    Exec {
        #[arg(trailing_var_arg = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Container name (also its host name unless --hostname is given).
    #[arg(long)]
    name: String,
    /// Where container state and bundles live.
    #[arg(long, default_value = "/run/gantry")]
    state_root: PathBuf,
    #[arg(long)]
    hostname: Option<String>,
    /// `uid[:gid]` or a user name from the image.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    workdir: Option<String>,
    /// Replaces the image's entrypoint (one word; the command follows the image name).
    #[arg(long)]
    entrypoint: Option<String>,
    /// `NAME=value`, repeatable.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// `none`: a network namespace with only `lo`; `host`: the host's network; `bridge`:
    /// an address on the bridge, masquerading to the outside and published ports.
    #[arg(long, default_value = "none")]
    network: NetworkMode,
    /// Publish a port (`--network bridge`): `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`,
    /// repeatable.
    #[arg(short = 'p', long = "publish", value_parser = parse_port)]
    publish: Vec<PortMapping>,
    /// The bridge (and network) name.
    #[arg(long, default_value = network::DEFAULT_BRIDGE)]
    bridge: String,
    /// The bridge's subnet; its first address is the bridge's.
    #[arg(long, default_value_t = Subnet::DEFAULT)]
    subnet: Subnet,
    #[arg(long, default_value_t = network::DEFAULT_MTU)]
    mtu: u32,
    /// Where the network's address leases live [default: <root>/network].
    #[arg(long)]
    network_state: Option<PathBuf>,
    /// The host's resolver configuration, copied into the container and followed while it
    /// runs: when the file changes, the container's `/etc/resolv.conf` is rewritten.
    #[arg(long, default_value = "/etc/resolv.conf")]
    host_resolv_conf: PathBuf,
    /// Resolvers for bridged containers when the host's are all on loopback; repeatable
    /// [default: 8.8.8.8, 8.8.4.4].
    #[arg(long = "dns-upstream")]
    dns_upstream: Vec<std::net::Ipv4Addr>,
    /// An extra line of the container's /etc/hosts, NAME:IP; repeatable. The runtime
    /// writes /etc/hosts (localhost, the container's host name, these) unless the network
    /// is `host` and none is given.
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = gantry_runtime::container::from_image::parse_add_host)]
    add_host: Vec<(String, std::net::IpAddr)>,
    /// A named volume, `NAME:/path[:ro]`: the directory `<volumes-dir>/NAME` (made if
    /// missing) bind-mounted at `/path`; repeatable.
    #[arg(short = 'v', long = "volume")]
    volumes: Vec<String>,
    /// Where named volumes live, a directory made 0700 [default: <root>/volumes].
    #[arg(long)]
    volumes_dir: Option<PathBuf>,
    /// `memory.max`, in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// CPU time in thousandths of a CPU (500 = half a CPU).
    #[arg(long)]
    cpu_millis: Option<u64>,
    /// `pids.max`.
    #[arg(long)]
    pids: Option<u64>,
    /// Write the container's stdout and stderr to this file (CRI format) instead of ours.
    /// With --tty, ours get the terminal and the file gets its output too, as one `stdout`
    /// stream (as Docker logs a container run with -t).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Rotate the log file at this size.
    #[arg(long, default_value_t = 10 << 20)]
    log_max_bytes: u64,
    /// Rotated log files kept.
    #[arg(long, default_value_t = 3)]
    log_keep: u32,
    /// Remove what a killed earlier run of the same name left behind, instead of refusing.
    #[arg(long)]
    replace: bool,
    /// Give the container a terminal and relay it to ours (raw while it runs); stdout and
    /// stderr are then one stream.
    #[arg(short, long)]
    tty: bool,
    image: String,
    /// Command and arguments, replacing the image's Cmd.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Pull an image from a registry (linux/amd64 from an index).
    Pull {
        /// Reference, normalised as Docker does (`busybox` = `docker.io/library/busybox:latest`).
        reference: String,
        #[command(flatten)]
        registry: PullArgs,
    },
    /// Make sure the store has an image: what PID 1 runs before a container starts. With
    /// `--pull missing` a stored image is used as it is, without the network; otherwise
    /// the image is imported from the first archive in `--from` that names it, else pulled
    /// (a stored copy is used, with a warning, when the registry cannot be reached).
    /// Archives that cannot be read are reported and passed over.
    Ensure {
        /// Reference, normalised as `pull` does.
        reference: String,
        /// When to ask the registry: `missing` only when the store lacks the image,
        /// `always` to resolve the tag again. A reference by digest is always `missing`.
        #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
        pull: PullPolicy,
        /// A directory of image archives (`*.tar`: OCI layouts or `docker save`), such as
        /// a config drive's `images/`; a missing one holds none.
        #[arg(long)]
        from: Option<PathBuf>,
        #[command(flatten)]
        registry: PullArgs,
    },
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import {
        path: PathBuf,
        /// The name to give the image (required when the archive names none).
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls,
    /// Print an image's record and config as JSON.
    Inspect { reference: String },
    /// Remove an image and the layers no other image uses.
    Rm { reference: String },
    /// Free layers and blobs no image uses, and abandoned downloads.
    Prune,
    /// Verify every blob and layer the store names; exits 1 if anything is wrong.
    Check,
}

/// When `image ensure` asks the registry (the machine config's `containers.<name>.pull`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PullPolicy {
    /// Only when the store does not have the image (Kubernetes' `IfNotPresent`).
    Missing,
    /// Every time: a moved tag is followed.
    Always,
}

/// How to reach a registry.
#[derive(clap::Args)]
struct PullArgs {
    /// A registry (`host[:port]`) that may be reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// A PEM file of CA certificates to trust, on top of the built-in roots.
    #[arg(long = "ca-cert")]
    ca_certs: Vec<PathBuf>,
    /// User name for the registry; the password is read from standard input.
    #[arg(long)]
    username: Option<String>,
    /// A host (`host` for any port, or `host:port`) besides the registry's own whose
    /// bearer token service may receive the credentials; a realm on any other host is
    /// asked for an anonymous token. Docker Hub's auth.docker.io is built in.
    #[arg(long = "token-realm", value_name = "HOST")]
    token_realms: Vec<String>,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", gantry_runtime::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}

fn parse_port(s: &str) -> Result<PortMapping, String> {
    s.parse().map_err(|e: network::InvalidPortMapping| e.reason)
}

fn parse_ref(s: &str) -> Result<ImageRef> {
    Ok(s.parse::<ImageRef>()?)
}

fn run(cli: Cli) -> Result<()> {
    let store = Store::open(&cli.root)
        .with_context(|| format!("cannot open store {}", cli.root.display()))?;
    let cmd = match cli.command {
        Top::Image(cmd) => cmd,
        Top::Run(args) => {
            let code = run_container(&store, &cli.root, *args)?;
            std::process::exit(code);
        }
        Top::Probe(args) => {
            let healthy = probe(args)?;
            std::process::exit(if healthy { 0 } else { 1 });
        }
    };
    match cmd {
        ImageCmd::Pull {
            reference,
            registry,
        } => {
            let record = pull_image(store, &parse_ref(&reference)?, registry)?;
            println!("{} {}", record.name, record.manifest);
        }
        ImageCmd::Ensure {
            reference,
            pull,
            from,
            registry,
        } => {
            let record = ensure(store, &parse_ref(&reference)?, pull, from, registry)?;
            println!("{} {}", record.name, record.manifest);
        }
        ImageCmd::Import { path, name } => {
            let name = name.as_deref().map(parse_ref).transpose()?;
            let records = import::import(&store, &path, name.as_ref())
                .with_context(|| format!("cannot import {}", path.display()))?;
            for r in records {
                println!("{} {}", r.name, r.manifest);
            }
        }
        ImageCmd::Ls => {
            println!(
                "{:<60} {:<20} {:>6} {:>12}",
                "NAME", "MANIFEST", "LAYERS", "SIZE"
            );
            for r in store.images()? {
                let size: u64 = r.layers.iter().map(|l| l.size).sum();
                let short = r.manifest.strip_prefix("sha256:").unwrap_or(&r.manifest);
                println!(
                    "{:<60} {:<20} {:>6} {:>12}",
                    r.name,
                    &short[..short.len().min(12)],
                    r.layers.len(),
                    size
                );
            }
        }
        ImageCmd::Inspect { reference } => {
            let name = parse_ref(&reference)?.to_string();
            let record = store.image(&name)?;
            let config_digest: Digest = record.config.parse().map_err(anyhow::Error::msg)?;
            let config: serde_json::Value = serde_json::from_slice(
                &std::fs::read(store.blobs().path(&config_digest))
                    .with_context(|| format!("cannot read config {config_digest} of {name}"))?,
            )?;
            let out = serde_json::json!({ "record": record, "config": config });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCmd::Rm { reference } => {
            let name = parse_ref(&reference)?.to_string();
            let freed = store.remove_image(&name)?;
            println!(
                "removed {name}; freed {} layers, {} blobs",
                freed.layers, freed.blobs
            );
        }
        ImageCmd::Prune => {
            let freed = store.prune()?;
            println!("freed {} layers, {} blobs", freed.layers, freed.blobs);
        }
        ImageCmd::Check => {
            let problems = store.check()?;
            for p in &problems {
                println!("{p}");
            }
            if !problems.is_empty() {
                bail!(
                    "{} problems in store {}",
                    problems.len(),
                    cli.root.display()
                );
            }
            println!("store {} is consistent", cli.root.display());
        }
    }
    Ok(())
}

/// `image ensure`: the stored image when `policy` allows it, else an import from `from`'s
/// archives, else a pull (falling back to the stored image when the registry fails).
fn ensure(
    store: Store,
    image: &ImageRef,
    policy: PullPolicy,
    from: Option<PathBuf>,
    registry: PullArgs,
) -> Result<ImageRecord> {
    // A digest cannot move: asking the registry again could only agree or fail.
    let policy = if image.digest().is_some() {
        PullPolicy::Missing
    } else {
        policy
    };
    // A record whose layers are gone (a store check removed them) is as good as none.
    let stored = store
        .image(&image.to_string())
        .ok()
        .filter(|r| is_complete(&store, r));
    if let (PullPolicy::Missing, Some(record)) = (policy, &stored) {
        tracing::info!(image = %image, manifest = %record.manifest, "{IMAGE_STORED}");
        return Ok(record.clone());
    }
    if let Some(dir) = from {
        if let Some(record) = import_from_archives(&store, image, &dir)? {
            return Ok(record);
        }
    }
    // What the store has is used when the registry cannot be reached, so a machine whose
    // registry is down at boot still runs what it ran before. A reachable registry wins,
    // so a moved tag is followed.
    match (pull_image(store, image, registry), stored) {
        (Ok(record), _) => Ok(record),
        (Err(e), None) => Err(e),
        (Err(e), Some(stored)) => {
            eprintln!(
                "warning: {}; using {} {} from the store",
                gantry_runtime::error_chain(e.as_ref()),
                stored.name,
                stored.manifest
            );
            Ok(stored)
        }
    }
}

/// Logged by `image ensure` when the pull policy lets it use the stored image as it is.
const IMAGE_STORED: &str = "using the image in the store (pull policy: missing)";

/// Whether every layer and the config of `record` are in the store.
fn is_complete(store: &Store, record: &ImageRecord) -> bool {
    let config = record
        .config
        .parse::<Digest>()
        .is_ok_and(|d| store.blobs().path(&d).is_file());
    config
        && record.layers.iter().all(|l| {
            l.chain_id
                .parse::<Digest>()
                .is_ok_and(|c| store.has_layer(&c))
        })
}

/// Pulls `image` with `args`, showing progress.
fn pull_image(store: Store, image: &ImageRef, args: PullArgs) -> Result<ImageRecord> {
    let mut registry = RegistryOptions {
        insecure: args.insecure,
        ..Default::default()
    };
    for path in args.ca_certs {
        registry.ca_certs_pem.push(
            std::fs::read(&path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?,
        );
    }
    if !args.token_realms.is_empty() {
        registry
            .token_realms
            .insert(image.registry().to_owned(), args.token_realms);
    }
    if let Some(username) = args.username {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("cannot read the password from standard input")?;
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        registry.credentials.insert(
            image.registry().to_owned(),
            Credentials { username, password },
        );
    }
    let opts = PullOptions {
        registry,
        concurrency: args.concurrency,
    };
    // Bars need a terminal that can redraw lines: a serial console under PID 1 (no TERM)
    // or TERM=dumb gets plain lines.
    let redraws = std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() && redraws {
        Arc::new(Bars::default())
    } else {
        Arc::new(Lines::default())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(pull::pull(Arc::new(store), image, &opts, progress))
        .with_context(|| format!("cannot pull {image}"))
}

/// Imports `image` from the first archive in `dir` that names it; `None` when none does
/// (or `dir` cannot be listed: then a pull is the only way left, and it is tried).
fn import_from_archives(
    store: &Store,
    image: &ImageRef,
    dir: &std::path::Path,
) -> Result<Option<ImageRecord>> {
    let search = match archives::find(dir, image) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the image archives; pulling instead");
            return Ok(None);
        }
    };
    for e in &search.skipped {
        tracing::warn!(error = %e, "{ARCHIVE_SKIPPED}");
    }
    let Some(archive) = search.found else {
        tracing::info!(image = %image, dir = %dir.display(), "no archive names the image; pulling it");
        return Ok(None);
    };
    let records = import::import(store, &archive, None)
        .with_context(|| format!("cannot import {image} from {}", archive.display()))?;
    let wanted = image.to_string();
    let record = records
        .into_iter()
        .find(|r| r.name == wanted)
        .with_context(|| {
            format!(
                "{} names {image} but importing it did not give that image",
                archive.display()
            )
        })?;
    tracing::info!(image = %image, archive = %archive.display(), "{IMAGE_IMPORTED}");
    Ok(Some(record))
}

fn run_container(store: &Store, root: &std::path::Path, args: RunArgs) -> Result<i32> {
    use gantry_runtime::container::{self, from_image, CreateOptions, StateDir};
    let id: gantry_runtime::ContainerId = args.name.parse()?;
    let image = store.image(&parse_ref(&args.image)?.to_string())?;
    let bundle = args.state_root.join("bundles").join(id.as_str());
    let states = StateDir::new(&args.state_root.join("containers"));
    if bundle.exists() && args.replace {
        // A run killed with SIGKILL leaves its container, network and bundle behind.
        let _ = container::delete(&states, &id, true);
        from_image::remove_bundle(&bundle)?;
    }
    if bundle.exists() {
        bail!("container {id}: {} already exists", bundle.display());
    }
    let volumes_dir = args
        .volumes_dir
        .clone()
        .unwrap_or_else(|| root.join("volumes"));
    let mut volumes = Vec::new();
    if !args.volumes.is_empty() {
        // What containers write to their volumes (setuid files, device nodes) is theirs: no
        // other host user may reach it, wherever the volumes live.
        gantry_runtime::fsutil::private_dir(&volumes_dir)
            .with_context(|| format!("cannot make {}", volumes_dir.display()))?;
    }
    for v in &args.volumes {
        let (name, path, ro) = from_image::parse_volume(v).map_err(anyhow::Error::msg)?;
        let dir = volumes_dir.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot make volume {}", dir.display()))?;
        volumes.push((dir, path, ro));
    }
    if !args.publish.is_empty() && args.network != NetworkMode::Bridge {
        bail!("publishing ports needs --network bridge");
    }
    let net = network::Network {
        bridge: args.bridge,
        subnet: args.subnet,
        mtu: args.mtu,
        state_dir: args.network_state.unwrap_or_else(|| root.join("network")),
        upstream_dns: if args.dns_upstream.is_empty() {
            network::DEFAULT_UPSTREAM_DNS.to_vec()
        } else {
            args.dns_upstream
        },
    };
    net.validate()?;
    let container_dns = from_image::ContainerDns {
        network: args.network,
        upstream: net.upstream_dns.clone(),
    };
    let host_dns = from_image::read_host_dns(&args.host_resolv_conf)
        .with_context(|| format!("cannot read {}", args.host_resolv_conf.display()))?;
    let resolv_conf = container_dns.render(&host_dns);
    let hostname = args.hostname.unwrap_or_else(|| id.to_string());
    let hosts = (args.network != NetworkMode::Host || !args.add_host.is_empty()).then(|| {
        let own = (args.network != NetworkMode::Host).then_some(hostname.as_str());
        from_image::hosts_file(own, &args.add_host)
    });
    let opts = from_image::RunOptions {
        command: args.command,
        entrypoint: args.entrypoint.map(|e| vec![e]),
        env: args.env,
        hosts,
        hostname: Some(hostname),
        user: args.user,
        workdir: args.workdir,
        network: args.network,
        resolv_conf,
        volumes,
        memory_bytes: match args.memory_mib {
            Some(m) => Some(
                m.checked_mul(1 << 20)
                    .with_context(|| format!("--memory-mib {m} is too large"))?,
            ),
            None => None,
        },
        cpu_millis: args.cpu_millis,
        pids: args.pids,
        terminal: args.tty,
    };
    let rotation = Some(container::log::Rotation {
        max_bytes: args.log_max_bytes,
        keep: args.log_keep,
    });
    // With a terminal this process keeps the pty and copies its output to the log itself.
    let console = match args.tty {
        true => Some(container::console::ConsoleListener::new(&args.state_root)?),
        false => None,
    };
    let create = CreateOptions {
        log: args.log_file.clone().filter(|_| !args.tty),
        log_rotation: rotation,
        console_socket: console.as_ref().map(|c| c.path()),
        ..CreateOptions::default()
    };
    let result = (|| -> Result<i32> {
        from_image::make_bundle(store, &image, &bundle, &opts)?;
        let signals = container::block_forwarded_signals().context("block signals")?;
        let pid = container::create(&states, &id, &bundle, &create)?;
        let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if args.network == NetworkMode::None {
            network::loopback_up(&ns)
                .with_context(|| format!("cannot bring up lo of container {id}"))?;
        }
        if args.network == NetworkMode::Bridge {
            // Recorded first, so that a delete after a crash half-way cleans up.
            container::record_network(&states, &id, &network::Record::here(&net)?)?;
            let a = network::attach(&net, &id, &ns, &args.publish).with_context(|| {
                format!("cannot attach container {id} to network {}", net.bridge)
            })?;
            tracing::info!(
                container = %id,
                address = %a.address,
                veth = %a.host_veth,
                ports = a.ports.len(),
                "network attached"
            );
        }
        let relay = match &console {
            Some(c) => {
                let master = c.receive()?;
                let tee = match &args.log_file {
                    Some(path) => Some(
                        container::log::start(path, rotation)
                            .with_context(|| format!("cannot open {}", path.display()))?
                            .stdout,
                    ),
                    None => None,
                };
                Some(container::console::Relay::new(master, tee)?)
            }
            None => None,
        };
        container::start(&states, &id)?;
        // A thread, so only now: the container's init has been forked. It inherits the
        // blocked signals, which stay with the wait below. Dropped when the wait ends.
        let _follower = opts.resolv_conf.as_ref().and_then(|_| {
            from_image::ResolvFollower::start(
                &args.host_resolv_conf,
                &from_image::resolv_conf_path(&bundle),
                container_dns,
                id.as_str(),
            )
            .map_err(|e| {
                tracing::warn!(container = %id, error = %e, "resolver changes will not reach the container");
            })
            .ok()
        });
        let status = match relay {
            Some(r) => r.run(pid, &signals)?,
            None => container::wait_forwarding(pid, &signals).context("wait for the container")?,
        };
        Ok(container::exit_code(status).unwrap_or(1))
    })();
    let deleted = container::delete(&states, &id, true);
    from_image::remove_bundle(&bundle)?;
    let code = result?;
    deleted?;
    Ok(code)
}

fn probe(args: ProbeArgs) -> Result<bool> {
    use gantry_runtime::container::{self, StateDir};
    use std::time::Duration;
    let id: gantry_runtime::ContainerId = args.name.parse()?;
    let states = StateDir::new(&args.state_root.join("containers"));
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let (port, path) = match args.check {
        ProbeCheck::Exec { args } => {
            let opts = container::ExecOptions {
                args,
                env: Vec::new(),
                cwd: None,
                timeout: Some(timeout),
                tty: false,
                pid_file: None,
            };
            return Ok(container::exec(&states, &id, &opts)? == 0);
        }
        ProbeCheck::Tcp { port } => (port, None),
        ProbeCheck::Http { port, path } => (port, Some(path)),
    };
    let state = container::state(&states, &id)?;
    let pid = match state.pid {
        Some(p) if p > 0 => p,
        _ => bail!("container {id} is not running"),
    };
    // This process is single-threaded here: the whole process joins the namespace.
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("container {id}: cannot open its network namespace"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("container {id}: cannot join its network namespace"))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Some(path) = path else {
        return Ok(std::net::TcpStream::connect_timeout(&addr, timeout).is_ok());
    };
    let url = format!("http://{addr}{path}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .context("cannot make an HTTP client")?;
    let answer = rt.block_on(async { client.get(&url).send().await });
    Ok(match answer {
        Ok(r) => {
            let code = r.status();
            eprintln!("{url}: {code}");
            code.is_success() || code.is_redirection()
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            false
        }
    })
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// One line per event, for logs and pipes.
#[derive(Default)]
struct Lines {
    fetched: Mutex<HashMap<String, u64>>,
}

impl Progress for Lines {
    fn resolved(&self, image: &str, manifest: &Digest) {
        eprintln!("{image}: manifest {manifest}");
    }
    fn layer_started(&self, blob: &Digest, size: u64, offset: u64) {
        if offset > 0 {
            eprintln!("{}: resuming at {offset} of {size} bytes", short(blob));
        } else {
            eprintln!("{}: downloading {size} bytes", short(blob));
        }
    }
    fn layer_bytes(&self, blob: &Digest, bytes: u64) {
        if let Ok(mut f) = self.fetched.lock() {
            *f.entry(blob.to_string()).or_default() += bytes;
        }
    }
    fn layer_done(&self, blob: &Digest, what: LayerDone) {
        let fetched = self
            .fetched
            .lock()
            .ok()
            .and_then(|f| f.get(&blob.to_string()).copied())
            .unwrap_or(0);
        match what {
            LayerDone::Unpacked => eprintln!("{}: unpacked ({fetched} bytes fetched)", short(blob)),
            LayerDone::AlreadyThere => eprintln!("{}: already present", short(blob)),
        }
    }
}

/// A progress bar per layer, on a terminal.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, blob: &Digest, size: u64) -> ProgressBar {
        let Ok(mut bars) = self.bars.lock() else {
            return ProgressBar::hidden();
        };
        bars.entry(blob.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_prefix(short(blob).to_owned());
                bar
            })
            .clone()
    }
}

impl Progress for Bars {
    fn resolved(&self, image: &str, manifest: &Digest) {
        let _ = self.multi.println(format!("{image}: manifest {manifest}"));
    }
    fn layer_started(&self, blob: &Digest, size: u64, offset: u64) {
        let bar = self.bar(blob, size);
        bar.set_position(offset);
        bar.set_message(if offset > 0 {
            "resuming"
        } else {
            "downloading"
        });
    }
    fn layer_bytes(&self, blob: &Digest, bytes: u64) {
        self.bar(blob, 0).inc(bytes);
    }
    fn layer_done(&self, blob: &Digest, what: LayerDone) {
        let bar = self.bar(blob, 0);
        bar.finish_with_message(match what {
            LayerDone::Unpacked => "unpacked",
            LayerDone::AlreadyThere => "already present",
        });
    }
}
