//! The real [`Launcher`]: child processes of the `gantry` command (image ensure, run,
//! probe). A container's image job is `gantry image ensure --pull POLICY`: with the
//! container's `pull = "missing"` (the default) an image already in the store is used
//! without touching the network; otherwise it imports the image from the config drive's
//! archives when one names it (air-gapped hosts), and pulls it.
//!
//! Children write to PID 1's console. PID 1 reaps them in its event loop and passes each
//! exit to the supervisor; nothing here waits for a child.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gantry_runtime::network::NetworkMode;
use gantry_runtime::ImageRef;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Job, Launcher};
use crate::config::containers::parse_http_check;
use crate::config::drive::IMAGES_DIR;
use crate::config::{ContainerSpec, RegistriesConfig};

/// Where the `gantry` command is in the image.
pub const GANTRY: &str = "/usr/bin/gantry";
/// The image store.
pub const STORE: &str = "/var/lib/gantry";
/// Container state and bundles (tmpfs: a reboot starts clean).
pub const STATE: &str = "/run/gantry";
/// The container network's state (address leases), `gantry run`'s default under the store.
pub const NETWORK_STATE: &str = "/var/lib/gantry/network";
/// Container logs, one file per container, rotated by size.
pub const LOG_DIR: &str = "/var/log/containers";
/// Each log file is rotated at this size, keeping [`LOG_KEEP`] old ones.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Rotated log files kept per container.
pub const LOG_KEEP: u32 = 3;

/// Starts `gantry` children.
#[derive(Debug, Clone)]
pub struct Commands {
    /// The `gantry` binary.
    pub gantry: PathBuf,
    /// The image store.
    pub store: PathBuf,
    /// Container state.
    pub state: PathBuf,
    /// Container logs.
    pub log_dir: PathBuf,
    /// The host's resolver file, copied into containers and followed while they run.
    pub resolv_conf: PathBuf,
    /// Registry trust and credentials.
    pub registries: RegistriesConfig,
    /// The registries' CA certificates, written to files for `--ca-cert`.
    pub ca_files: Vec<PathBuf>,
    /// Image archives to import from before pulling (the config drive's `images/`).
    pub archives: Option<PathBuf>,
    /// Extra `/etc/hosts` lines of every container (`network.hosts`).
    pub hosts: Vec<(String, std::net::IpAddr)>,
}

impl Commands {
    /// The launcher PID 1 uses; writes the configured CA certificates under `STATE/ca`.
    pub fn for_pid1(
        registries: RegistriesConfig,
        hosts: Vec<(String, std::net::IpAddr)>,
    ) -> (Commands, Vec<String>) {
        let mut problems = Vec::new();
        let state = PathBuf::from(STATE);
        let mut ca_files = Vec::new();
        for (i, pem) in registries.ca_certs.iter().enumerate() {
            let path = state.join("ca").join(format!("{i}.pem"));
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| gantry_durable::write_atomic(&path, pem.as_bytes()));
            match written {
                Ok(()) => ca_files.push(path),
                Err(e) => problems.push(format!(
                    "registries.ca_certs[{i}]: cannot write {}: {e}",
                    path.display()
                )),
            }
        }
        if let Err(e) = std::fs::create_dir_all(LOG_DIR) {
            problems.push(format!("cannot make {LOG_DIR}: {e}"));
        }
        let c = Commands {
            gantry: PathBuf::from(GANTRY),
            store: PathBuf::from(STORE),
            state,
            log_dir: PathBuf::from(LOG_DIR),
            resolv_conf: PathBuf::from(crate::net::resolv::RESOLV_CONF),
            registries,
            ca_files,
            archives: Some(PathBuf::from(IMAGES_DIR)).filter(|d| d.is_dir()),
            hosts,
        };
        (c, problems)
    }

    /// The command line for `job`, and what to write to its standard input (a password).
    pub fn command(&self, job: &Job<'_>) -> (Vec<String>, Option<String>) {
        let mut a: Vec<String> = Vec::new();
        let path = |p: &Path| p.display().to_string();
        let mut stdin = None;
        match *job {
            Job::Pull { spec, .. } => {
                a.extend([
                    "--root".into(),
                    path(&self.store),
                    "image".into(),
                    "ensure".into(),
                    "--pull".into(),
                    spec.pull_policy().as_str().into(),
                ]);
                if let Some(dir) = &self.archives {
                    a.extend(["--from".into(), path(dir)]);
                }
                for r in &self.registries.insecure {
                    a.extend(["--insecure-registry".into(), r.clone()]);
                }
                for f in &self.ca_files {
                    a.extend(["--ca-cert".into(), path(f)]);
                }
                if let Ok(image) = spec.image.parse::<ImageRef>() {
                    if let Some(auth) = self.registries.auth.get(image.registry()) {
                        for h in &auth.token_realms {
                            a.extend(["--token-realm".into(), h.clone()]);
                        }
                        a.extend(["--username".into(), auth.username.clone()]);
                        stdin = Some(auth.password.clone());
                    }
                }
                a.push(spec.image.clone());
            }
            Job::Run { name, spec } => {
                a.extend(["--root".into(), path(&self.store), "run".into()]);
                a.extend(["--name".into(), name.to_owned()]);
                a.extend(["--state-root".into(), path(&self.state), "--replace".into()]);
                let mode = spec.network_mode();
                a.extend(["--network".into(), mode_name(mode).into()]);
                for p in &spec.ports {
                    a.extend(["-p".into(), p.clone()]);
                }
                for (k, v) in &spec.env {
                    a.extend(["-e".into(), format!("{k}={v}")]);
                }
                if let Some(u) = &spec.user {
                    a.extend(["--user".into(), u.clone()]);
                }
                if let Some(w) = &spec.working_dir {
                    a.extend(["--workdir".into(), w.clone()]);
                }
                for v in &spec.volumes {
                    a.extend(["-v".into(), v.clone()]);
                }
                let r = &spec.resources;
                for (flag, value) in [
                    ("--memory-mib", r.memory_mib),
                    ("--cpu-millis", r.cpu_millis),
                    ("--pids", r.pids),
                ] {
                    if let Some(v) = value {
                        a.extend([flag.into(), v.to_string()]);
                    }
                }
                a.extend([
                    "--log-file".into(),
                    path(&self.log_dir.join(format!("{name}.log"))),
                ]);
                a.extend(["--log-max-bytes".into(), LOG_MAX_BYTES.to_string()]);
                a.extend(["--log-keep".into(), LOG_KEEP.to_string()]);
                a.extend(["--host-resolv-conf".into(), path(&self.resolv_conf)]);
                for (name, addr) in &self.hosts {
                    a.extend(["--add-host".into(), format!("{name}:{addr}")]);
                }
                let mut rest: Vec<String> = Vec::new();
                if let Some(ep) = &spec.entrypoint {
                    if let Some((first, more)) = ep.split_first() {
                        a.extend(["--entrypoint".into(), first.clone()]);
                        rest.extend(more.iter().cloned());
                    }
                }
                rest.extend(spec.command.iter().flatten().cloned());
                a.push("--".into());
                a.push(spec.image.clone());
                a.extend(rest);
            }
            Job::Check { name, spec } => {
                let Some(h) = &spec.health else {
                    return (Vec::new(), None);
                };
                a.extend(["probe".into(), "--name".into(), name.to_owned()]);
                a.extend(["--state-root".into(), path(&self.state)]);
                a.extend(["--timeout-secs".into(), h.timeout_secs.to_string()]);
                if let Some(port) = h.tcp {
                    a.extend(["tcp".into(), port.to_string()]);
                } else if let Some((port, p)) =
                    h.http.as_deref().and_then(|u| parse_http_check(u).ok())
                {
                    a.extend(["http".into(), port.to_string(), p]);
                } else if let Some(cmd) = &h.exec {
                    a.extend(["exec".into(), "--".into()]);
                    a.extend(cmd.iter().cloned());
                }
            }
        }
        (a, stdin)
    }
}

fn mode_name(m: NetworkMode) -> &'static str {
    match m {
        NetworkMode::Bridge => "bridge",
        NetworkMode::Host => "host",
        NetworkMode::None => "none",
    }
}

impl Launcher for Commands {
    fn spawn(&mut self, job: &Job<'_>) -> Result<u32, String> {
        let (args, stdin) = self.command(job);
        if args.is_empty() {
            return Err("nothing to run".into());
        }
        let mut cmd = Command::new(&self.gantry);
        cmd.args(&args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("RUST_LOG", "info")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.gantry.display()))?;
        if let (Some(secret), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // The password is short; the pipe buffer takes it without blocking.
            let _ = pipe.write_all(secret.as_bytes());
        }
        // PID 1's reaper collects the exit; the Child is dropped without waiting.
        Ok(child.id())
    }

    fn signal(&mut self, pid: u32, hard: bool) {
        let sig = if hard {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        if let Ok(p) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(p), sig);
        }
    }

    fn kill_container(&mut self, name: &str, pid: u32) {
        use gantry_runtime::container::{self, StateDir};
        // The same state directory `gantry run --state-root` uses.
        let states = StateDir::new(&self.state.join("containers"));
        let killed = name
            .parse()
            .map_err(|e: gantry_runtime::InvalidContainerId| e.to_string())
            .and_then(|id| {
                container::kill(&states, &id, Signal::SIGKILL).map_err(|e| e.to_string())
            });
        if let Err(e) = killed {
            tracing::warn!(container = name, error = %e, "cannot kill the container; killing its gantry run");
            self.signal(pid, true);
        }
    }
}

/// The container spec's image registry host, for tests and logs.
pub fn registry_of(spec: &ContainerSpec) -> Option<String> {
    spec.image
        .parse::<ImageRef>()
        .ok()
        .map(|r| r.registry().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;

    fn commands(toml: &str) -> (Commands, MachineConfig) {
        let c = MachineConfig::parse(&format!("version = 1\n{toml}"), "t").unwrap();
        let cmds = Commands {
            gantry: "/usr/bin/gantry".into(),
            store: STORE.into(),
            state: STATE.into(),
            log_dir: LOG_DIR.into(),
            resolv_conf: "/run/gantry/resolv.conf".into(),
            registries: c.registries.clone(),
            ca_files: vec!["/run/gantry/ca/0.pem".into()],
            archives: None,
            hosts: c.network.hosts.clone().into_iter().collect(),
        };
        (cmds, c)
    }

    #[test]
    fn run_lines_carry_every_setting_and_keep_the_command_after_the_image() {
        let (cmds, c) = commands(
            "[containers.web]\nimage = \"10.0.2.100:5000/demo/web:1\"\n\
             entrypoint = [\"httpd\", \"-f\"]\ncommand = [\"-p\", \"80\"]\n\
             env = { A = \"1\" }\nports = [\"8080:80\"]\nvolumes = [\"data:/data:ro\"]\n\
             resources = { memory_mib = 64, pids = 50 }\nuser = \"100\"\n\
             [network.hosts]\n\"node-2\" = \"10.123.0.12\"\n",
        );
        let spec = &c.containers["web"];
        let (args, stdin) = cmds.command(&Job::Run { name: "web", spec });
        let line = args.join(" ");
        assert!(stdin.is_none());
        assert!(line.contains(" --add-host node-2:10.123.0.12 "), "{line}");
        assert!(line.starts_with("--root /var/lib/gantry run --name web --state-root /run/gantry --replace --network bridge -p 8080:80 -e A=1 --user 100 -v data:/data:ro --memory-mib 64 --pids 50 --log-file /var/log/containers/web.log"), "{line}");
        assert!(
            line.ends_with("--entrypoint httpd -- 10.0.2.100:5000/demo/web:1 -f -p 80"),
            "{line}"
        );
    }

    #[test]
    fn pulls_name_the_registry_trust_and_send_the_password_on_stdin() {
        let (cmds, c) = commands(
            "[registries]\ninsecure = [\"10.0.2.100:5000\"]\n\
             [registries.auth.\"10.0.2.100:5000\"]\nusername = \"u\"\npassword = \"p\"\n\
             token_realms = [\"auth.example.net\"]\n\
             [containers.web]\nimage = \"10.0.2.100:5000/demo/web:1\"\n",
        );
        let spec = &c.containers["web"];
        let (args, stdin) = cmds.command(&Job::Pull { name: "web", spec });
        assert_eq!(
            args.join(" "),
            "--root /var/lib/gantry image ensure --pull missing --insecure-registry 10.0.2.100:5000 \
             --ca-cert /run/gantry/ca/0.pem --token-realm auth.example.net --username u \
             10.0.2.100:5000/demo/web:1"
        );
        assert_eq!(stdin.as_deref(), Some("p"));
        assert!(
            !args.iter().any(|a| a == "p"),
            "the password is not on the command line"
        );
        assert_eq!(registry_of(spec).as_deref(), Some("10.0.2.100:5000"));
    }

    #[test]
    fn image_jobs_import_from_the_config_drive_archives_when_it_has_them() {
        let (mut cmds, c) =
            commands("[containers.web]\nimage = \"example.com/demo/web:1\"\npull = \"always\"\n");
        cmds.archives = Some(IMAGES_DIR.into());
        let spec = &c.containers["web"];
        let (args, _) = cmds.command(&Job::Pull { name: "web", spec });
        assert_eq!(
            args.join(" "),
            "--root /var/lib/gantry image ensure --pull always --from /run/gantry/config-drive/images \
             --ca-cert /run/gantry/ca/0.pem example.com/demo/web:1"
        );
    }

    #[test]
    fn probes_follow_the_check_kind() {
        let (cmds, c) = commands(
            "[containers.a]\nimage = \"busybox\"\nhealth = { http = \"http://127.0.0.1:8080/ok\", timeout_secs = 2 }\n\
             [containers.b]\nimage = \"busybox\"\nhealth = { tcp = 53 }\n\
             [containers.c]\nimage = \"busybox\"\nhealth = { exec = [\"test\", \"-f\", \"/ready\"] }\n",
        );
        let line = |n: &str| {
            cmds.command(&Job::Check {
                name: n,
                spec: &c.containers[n],
            })
            .0
            .join(" ")
        };
        assert_eq!(
            line("a"),
            "probe --name a --state-root /run/gantry --timeout-secs 2 http 8080 /ok"
        );
        assert_eq!(
            line("b"),
            "probe --name b --state-root /run/gantry --timeout-secs 3 tcp 53"
        );
        assert_eq!(
            line("c"),
            "probe --name c --state-root /run/gantry --timeout-secs 3 exec -- test -f /ready"
        );
    }
}
