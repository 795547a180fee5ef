//! Container lifecycle benchmark: `create` + `start` + wait + `delete` of a bundle whose
//! program is `/bin/true` (busybox), 100 times each with gantry-runtime, runc and crun,
//! in the same run on this host, with the same bundle (made by `runc spec`, terminal off).
//! The runtimes take turns, one cycle each. Prints each runtime's mean and median and the
//! ratio to runc. A runtime that cannot run here (crun refuses hybrid cgroup hosts) is
//! reported with its error, not timed. State roots are on a tmpfs, like the runtimes'
//! defaults under /run. `gantry+cgroup` is gantry-runtime with a cgroup
//! and its device program on the host's v2 mount.
//!
//! Run as root: `cargo bench -p gantry-runtime --bench lifecycle` (`GANTRY_BENCH_RUNS`
//! changes the count).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a runtime command. Its output goes to a file, not a pipe: a container's init
/// inherits the creator's stdio and holds it open until it exits, so waiting for a pipe's
/// end would wait for the container.
fn run(cmd: &mut Command) -> Result<(), String> {
    let log = tempfile::tempfile().map_err(|e| e.to_string())?;
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone().map_err(|e| e.to_string())?)
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let mut log = log;
    use std::io::{Read, Seek};
    let _ = log.rewind();
    let _ = log.read_to_string(&mut text);
    Err(text.trim().to_owned())
}

fn make_bundle(dir: &Path, seccomp: Option<&serde_json::Value>) {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static must be installed");
    std::os::unix::fs::symlink("busybox", bin.join("true")).expect("symlink");
    run(Command::new("runc").arg("spec").current_dir(dir)).expect("runc spec");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    if let Some(profile) = seccomp {
        config["linux"]["seccomp"] = profile.clone();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
}

/// One create + start + wait + delete; the bench is the subreaper, so the init (whose
/// creator exits) is reparented to it and waited for here.
fn cycle(runtime: &[String], root: &Path, bundle: &Path, id: &str) -> Result<Duration, String> {
    let pid_file = root.join(format!("{id}.pid"));
    let base = || {
        let mut c = Command::new(&runtime[0]);
        c.args(&runtime[1..]).arg("--root").arg(root);
        c
    };
    let start = Instant::now();
    run(base()
        .arg("create")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id))?;
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("pid file: {e}"))?;
    run(base().arg("start").arg(id))?;
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
        .map_err(|e| format!("wait: {e}"))?;
    run(base().arg("delete").arg(id))?;
    Ok(start.elapsed())
}

/// (mean, median) in milliseconds, or why the runtime cannot run here.
type Measured = Result<(f64, f64), String>;

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64;
    (mean * 1e3, v[v.len() / 2].as_secs_f64() * 1e3)
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    // SAFETY: PR_SET_CHILD_SUBREAPER takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let runs: usize = std::env::var("GANTRY_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let work = tempfile::tempdir().expect("tempdir");
    // State roots on a tmpfs, as both runtimes' defaults are (/run/gantry-runtime,
    // /run/runc): on a disk, each state write's fsync would be timed too.
    let states = tempfile::tempdir_in(tmpfs_dir()).expect("state tempdir");
    // runc spec's capabilities: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
    let profile = gantry_runtime::container::seccomp::Profile::docker_default(
        (1u64 << 29) | (1 << 5) | (1 << 10),
    )
    .to_oci_json();
    for (variant, seccomp) in [
        ("no seccomp", None),
        ("Docker's default seccomp profile", Some(&profile)),
    ] {
        let bundle = work.path().join(format!("bundle-{}", seccomp.is_some()));
        make_bundle(&bundle, seccomp);
        measure_all(&bundle, states.path(), runs, variant);
    }
}

/// `/run` where it is a tmpfs (as on most hosts and in the Gantry image), else `/dev/shm`.
fn tmpfs_dir() -> &'static str {
    let is_tmpfs = |p: &str| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    };
    ["/run", "/dev/shm"]
        .into_iter()
        .find(|p| is_tmpfs(p))
        .expect("a tmpfs at /run or /dev/shm")
}

fn measure_all(bundle: &Path, states: &Path, runs: usize, variant: &str) {
    let bundle = bundle.to_owned();
    let ours = env!("CARGO_BIN_EXE_gantry-runtime").to_owned();
    let mut runtimes: Vec<(&str, Vec<String>)> = vec![("gantry-runtime", vec![ours.clone()])];
    // On a hybrid host, the v2 mount without controllers still shows what making and
    // removing a cgroup per container costs (runc makes v1 cgroups here).
    let unified = "/sys/fs/cgroup/unified";
    if !gantry_runtime::container::cgroup::is_v2(Path::new("/sys/fs/cgroup"))
        && gantry_runtime::container::cgroup::is_v2(Path::new(unified))
    {
        runtimes.push((
            "gantry+cgroup",
            vec![ours, "--cgroup-root".to_owned(), unified.to_owned()],
        ));
    }
    runtimes.extend([
        ("runc", vec!["runc".to_owned()]),
        ("crun", vec!["crun".to_owned()]),
    ]);
    // Round robin, one cycle of each runtime in turn: on a machine shared with other work,
    // load that comes and goes then weighs on every runtime alike, not on one block.
    let roots: Vec<PathBuf> = runtimes
        .iter()
        .map(|(name, _)| states.join(format!("state-{name}")))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); runtimes.len()];
    let mut failures: Vec<Option<String>> = vec![None; runtimes.len()];
    for (i, ((_, cmd), root)) in runtimes.iter().zip(&roots).enumerate() {
        std::fs::create_dir_all(root).expect("state root");
        // One untimed warm-up, so that page cache and binaries are equal for all.
        failures[i] = cycle(cmd, root, &bundle, "warmup").err();
    }
    for run in 0..runs {
        for (i, ((_, cmd), root)) in runtimes.iter().zip(&roots).enumerate() {
            if failures[i].is_some() {
                continue;
            }
            match cycle(cmd, root, &bundle, &format!("c{run}")) {
                Ok(t) => times[i].push(t),
                Err(e) => failures[i] = Some(e),
            }
        }
    }
    let results: Vec<(&str, Measured)> = runtimes
        .iter()
        .zip(failures)
        .zip(&mut times)
        .map(|(((name, _), failure), times)| {
            let measured = match failure {
                Some(e) => Err(e),
                None => Ok(stats(times)),
            };
            (*name, measured)
        })
        .collect();
    let runc_mean = results
        .iter()
        .find(|(n, _)| *n == "runc")
        .and_then(|(_, r)| r.as_ref().ok().map(|(mean, _)| *mean));
    println!("create+start+wait+delete of /bin/true, {runs} runs each, {variant}");
    for (name, r) in &results {
        match r {
            Ok((mean, median)) => {
                let ratio = runc_mean
                    .map(|m| format!("{:.2}x faster than runc", m / mean))
                    .unwrap_or_default();
                println!("{name:<15} mean {mean:7.2} ms  median {median:7.2} ms  {ratio}");
            }
            Err(e) => println!("{name:<15} cannot run here: {e}"),
        }
    }
}
