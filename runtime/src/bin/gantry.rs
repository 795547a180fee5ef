//! `gantry image pull|import|ls|inspect|rm|prune|check`: the image store from the command
//! line, on a Linux host or inside a Gantry machine.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use gantry_runtime::pull::{self, LayerDone, Progress, PullOptions};
use gantry_runtime::registry::{Credentials, RegistryOptions};
use gantry_runtime::store::{Store, DEFAULT_ROOT};
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
    Run(RunArgs),
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
        /// A registry (`host[:port]`) that may be reached over plain HTTP.
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
        /// A PEM file of CA certificates to trust, on top of the built-in roots.
        #[arg(long = "ca-cert")]
        ca_certs: Vec<PathBuf>,
        /// User name for the registry; the password is read from standard input.
        #[arg(long)]
        username: Option<String>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
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

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
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
            let code = run_container(&store, args)?;
            std::process::exit(code);
        }
    };
    match cmd {
        ImageCmd::Pull {
            reference,
            insecure,
            ca_certs,
            username,
            concurrency,
        } => {
            let image = parse_ref(&reference)?;
            let mut registry = RegistryOptions {
                insecure,
                ..Default::default()
            };
            for path in ca_certs {
                registry.ca_certs_pem.push(
                    std::fs::read(&path)
                        .with_context(|| format!("cannot read CA file {}", path.display()))?,
                );
            }
            if let Some(username) = username {
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
                concurrency,
            };
            let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
                Arc::new(Bars::default())
            } else {
                Arc::new(Lines::default())
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let record = rt
                .block_on(pull::pull(Arc::new(store), &image, &opts, progress))
                .with_context(|| format!("cannot pull {image}"))?;
            println!("{} {}", record.name, record.manifest);
        }
        ImageCmd::Import { path, name } => {
            let name = name.as_deref().map(parse_ref).transpose()?;
            let records = gantry_runtime::import::import(&store, &path, name.as_ref())
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

fn run_container(store: &Store, args: RunArgs) -> Result<i32> {
    use gantry_runtime::container::{self, from_image, CreateOptions, StateDir};
    let id: gantry_runtime::ContainerId = args.name.parse()?;
    let image = store.image(&parse_ref(&args.image)?.to_string())?;
    let bundle = args.state_root.join("bundles").join(id.as_str());
    if bundle.exists() {
        bail!("container {id}: {} already exists", bundle.display());
    }
    let opts = from_image::RunOptions {
        command: args.command,
        entrypoint: args.entrypoint.map(|e| vec![e]),
        env: args.env,
        hostname: Some(args.hostname.unwrap_or_else(|| id.to_string())),
        user: args.user,
        workdir: args.workdir,
    };
    let states = StateDir::new(&args.state_root.join("containers"));
    let result = (|| -> Result<i32> {
        from_image::make_bundle(store, &image, &bundle, &opts)?;
        let signals = container::block_forwarded_signals().context("block signals")?;
        let pid = container::create(&states, &id, &bundle, &CreateOptions::default())?;
        container::start(&states, &id)?;
        let status = container::wait_forwarding(pid, &signals).context("wait for the container")?;
        Ok(container::exit_code(status).unwrap_or(1))
    })();
    let _ = container::delete(&states, &id, true);
    from_image::remove_bundle(&bundle)?;
    result
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
