//! `gantry-runtime`: an OCI runtime command line with runc's conventions, so that it can be
//! driven like runc and measured and compared against runc and crun.
//!
//! `run` of a bundle with `process.terminal` and `exec --tty` keep the pty's master and
//! relay it to this process's stdin and stdout until the process ends (see
//! `gantry_runtime::container::console`), as `runc run` without `--detach` does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use gantry_runtime::container::console::{ConsoleListener, Relay};
use gantry_runtime::container::{
    self, ContainerConfig, CreateOptions, StateDir, Status, DEFAULT_STATE_ROOT,
};
use gantry_runtime::ContainerId;

#[derive(Parser)]
#[command(
    name = "gantry-runtime",
    version,
    about = "Gantry's OCI container runtime"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_STATE_ROOT)]
    root: PathBuf,
    /// Accepted for runc compatibility; errors go to standard error.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long = "log-format", global = true)]
    log_format: Option<String>,
    /// Where the host has no cgroup v2 hierarchy, run containers without their limits
    /// instead of refusing them.
    #[arg(long = "no-cgroups", global = true)]
    no_cgroups: bool,
    /// The cgroup v2 mount to make container cgroups under.
    #[arg(long = "cgroup-root", global = true)]
    cgroup_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container from a bundle; it waits for `start`.
    Create {
        id: String,
        /// The bundle directory (holding config.json).
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Write the init's pid here (atomically, once the container is recorded).
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// For a bundle with `process.terminal`: a unix socket to send the pty's master to
        /// (SCM_RIGHTS), as runc does.
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Write the container's stdout and stderr to this file, a timestamped line each
        /// (CRI log format), instead of sharing the caller's.
        #[arg(long = "container-log")]
        container_log: Option<PathBuf>,
    },
    /// Start a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's init.
    Kill {
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a stopped container (with --force, any container).
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Create, start and wait for a container, then delete it; exits with its status. With
    /// `process.terminal` in the bundle, the container's terminal is relayed to ours (raw
    /// while it runs, when ours is a terminal).
    Run {
        id: String,
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// As for create.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// As for create.
        #[arg(long = "container-log")]
        container_log: Option<PathBuf>,
    },
    /// Run another process in a running container (same namespaces and security
    /// settings); exits with its status.
    Exec {
        id: String,
        /// `NAME=value`, repeatable.
        #[arg(short, long = "env")]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Give the process a pty of its own, relayed to our stdin and stdout.
        #[arg(short, long)]
        tty: bool,
        /// Write the process's pid here once it runs.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        args: Vec<String>,
    },
    /// List containers.
    List,
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!(
                "gantry-runtime: error: {}",
                gantry_runtime::error_chain(e.as_ref())
            );
            std::process::exit(1);
        }
    }
}

fn parse_id(id: &str) -> Result<ContainerId> {
    Ok(id.parse::<ContainerId>()?)
}

fn run(cli: Cli) -> Result<i32> {
    let states = StateDir::new(&cli.root);
    let create_opts = |pid_file, log, console_socket| CreateOptions {
        log_rotation: None,
        pid_file,
        no_cgroups: cli.no_cgroups,
        cgroup_root: cli.cgroup_root.clone(),
        log,
        console_socket,
    };
    match cli.command {
        Command::Create {
            id,
            bundle,
            pid_file,
            console_socket,
            container_log,
        } => {
            let id = parse_id(&id)?;
            let opts = create_opts(pid_file, container_log, console_socket);
            container::create(&states, &id, &bundle, &opts)?;
        }
        Command::Start { id } => container::start(&states, &parse_id(&id)?)?,
        Command::State { id } => {
            let s = container::state(&states, &parse_id(&id)?)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        Command::Kill { id, signal } => {
            let sig = container::parse_signal(&signal)
                .with_context(|| format!("{signal:?} is not a signal"))?;
            container::kill(&states, &parse_id(&id)?, sig)?;
        }
        Command::Delete { id, force } => container::delete(&states, &parse_id(&id)?, force)?,
        Command::Run {
            id,
            bundle,
            pid_file,
            container_log,
        } => {
            let id = parse_id(&id)?;
            let signals = container::block_forwarded_signals().context("block signals")?;
            let listener = match ContainerConfig::load(&bundle)?.process.terminal {
                true => Some(ConsoleListener::new(&cli.root)?),
                false => None,
            };
            let opts = create_opts(pid_file, container_log, listener.as_ref().map(|l| l.path()));
            let pid = container::create(&states, &id, &bundle, &opts)?;
            // The terminal's size is set before the process starts.
            let relay = listener
                .map(|l| l.receive().and_then(|master| Relay::new(master, None)))
                .transpose();
            let waited = relay.map_err(anyhow::Error::from).and_then(|relay| {
                container::start(&states, &id)?;
                Ok(match relay {
                    Some(r) => r.run(pid, &signals)?,
                    None => container::wait_forwarding(pid, &signals)
                        .context("wait for the container")?,
                })
            });
            // Started or not, `run` leaves nothing behind.
            let _ = container::delete(&states, &id, true);
            return Ok(container::exit_code(waited?).unwrap_or(1));
        }
        Command::Exec {
            id,
            env,
            cwd,
            tty,
            pid_file,
            args,
        } => {
            let opts = container::ExecOptions {
                args,
                env,
                cwd,
                timeout: None,
                tty,
                pid_file,
            };
            return Ok(container::exec(&states, &parse_id(&id)?, &opts)?);
        }
        Command::List => {
            println!("{:<32} {:>8} {:<8} BUNDLE", "ID", "PID", "STATUS");
            for id in states.list() {
                let Ok(cid) = id.parse::<ContainerId>() else {
                    continue;
                };
                if let Ok(s) = container::state(&states, &cid) {
                    let status = match s.status {
                        Status::Creating => "creating",
                        Status::Created => "created",
                        Status::Running => "running",
                        Status::Stopped => "stopped",
                    };
                    println!(
                        "{:<32} {:>8} {:<8} {}",
                        s.id,
                        s.pid.unwrap_or(0),
                        status,
                        s.bundle.display()
                    );
                }
            }
        }
    }
    Ok(0)
}
