//! The kernel: Debian's `linux-source-6.1` tarball, configured as `allnoconfig` plus
//! Gantry's fragments, built out of tree, and cached under a key made of the tarball's
//! digest, the fragments' options, the toolchain and this recipe, so that a second build,
//! a fresh clone or CI on the same machine reuses it. The object tree is kept per tarball,
//! so a changed fragment rebuilds incrementally.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gantry_kernel_config::{check, merged_text, requirements, Finding, KernelConfig};

use crate::fsio::{AtPath, PathError};
use crate::ids::{Seed, Sha256};
use crate::tool::{self, ToolError};

/// Bump when the way the kernel is built changes, so that old cache entries are not reused.
const RECIPE: &str = "gantry-kernel-recipe-1: allnoconfig + fragments, bzImage, x86_64";

/// Fixed build metadata so the kernel's version string does not depend on who built it.
const BUILD_ENV: &[(&str, &str)] = &[
    ("KBUILD_BUILD_TIMESTAMP", "2023-11-14 22:13:20 UTC"),
    ("KBUILD_BUILD_USER", "gantry"),
    ("KBUILD_BUILD_HOST", "gantry"),
    ("KBUILD_BUILD_VERSION", "1"),
    ("ARCH", "x86_64"),
];

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel source: {0}")]
    Source(PathError),
    #[error("kernel cache: {0}")]
    Cache(#[from] PathError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("kernel fragments are malformed: {0}")]
    Fragments(#[from] gantry_kernel_config::FragmentError),
    #[error("the configured kernel lacks {} required options (an unmet Kconfig dependency?): {}",
        .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<Finding>),
}

/// A built kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub bzimage: PathBuf,
    pub config: PathBuf,
    /// The cache key (hex).
    pub key: String,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Seconds the build took (0 when cached).
    pub build_seconds: f64,
}

/// The cache directory: `$GANTRY_CACHE_DIR`, else `~/.cache/gantry`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GANTRY_CACHE_DIR") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/gantry")
}

/// Builds the kernel or takes it from the cache.
pub fn build(source: &Path, cache: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, KernelError> {
    let tar_digest = Sha256::of_file(source)
        .at(source)
        .map_err(KernelError::Source)?;
    let fragments = merged_text();
    // The toolchain and the fixed build metadata change the bytes too.
    let toolchain = format!(
        "{}\n{}\n{BUILD_ENV:?}",
        first_line(tool::CC.cmd().arg("--version").run()?),
        first_line(tool::LD.cmd().arg("--version").run()?),
    );
    let key = Seed::new(&[
        &tar_digest.0,
        fragments.as_bytes(),
        toolchain.as_bytes(),
        RECIPE.as_bytes(),
    ])
    .hex32("kernel")[..16]
        .to_owned();
    let out = cache.join("kernel").join(&key);
    let found = |cached, build_seconds| Kernel {
        bzimage: out.join("bzImage"),
        config: out.join("config"),
        key: key.clone(),
        cached,
        build_seconds,
    };
    if out.join("bzImage").is_file() && out.join("config").is_file() {
        progress(&format!("kernel: cached ({})", out.display()));
        return Ok(found(true, 0.0));
    }
    std::fs::create_dir_all(cache).at(cache)?;
    // One kernel build at a time per cache: concurrent builds would share the build tree.
    let lock_path = cache.join("kernel.lock");
    let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    if out.join("bzImage").is_file() && out.join("config").is_file() {
        progress("kernel: built by a concurrent build");
        return Ok(found(true, 0.0));
    }
    let started = Instant::now();
    let src = extract(source, &tar_digest, cache, progress)?;
    // One object tree per source tarball, kept between keys: after a fragment changes,
    // Kbuild's per-option dependency tracking rebuilds only what that option touches
    // instead of the whole kernel. Builds are serialised by the lock above.
    let build_dir = cache.join("build").join(&tar_digest.hex()[..16]);
    std::fs::create_dir_all(&build_dir).at(&build_dir)?;
    let fragment_path = build_dir.join("gantry.fragment");
    std::fs::write(&fragment_path, &fragments).at(&fragment_path)?;

    progress("kernel: configuring (allnoconfig + Gantry fragments)");
    make(&src, &build_dir)
        .arg(format!("KCONFIG_ALLCONFIG={}", fragment_path.display()))
        .arg("allnoconfig")
        .run()?;
    let config_path = build_dir.join(".config");
    let config_text = std::fs::read_to_string(&config_path).at(&config_path)?;
    let findings = check(&KernelConfig::parse(&config_text), &requirements()?);
    if !findings.is_empty() {
        return Err(KernelError::Config(findings));
    }
    // One job more than cores keeps the CPUs busy while a job waits on the disk.
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    progress(&format!(
        "kernel: building bzImage with {jobs} jobs (takes minutes)"
    ));
    make(&src, &build_dir)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .run()?;

    // Publish atomically: a half-copied kernel must never look like a cache hit.
    let tmp = cache.join("kernel").join(format!(".{key}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    let bz = build_dir.join("arch/x86/boot/bzImage");
    std::fs::copy(&bz, tmp.join("bzImage")).at(&bz)?;
    std::fs::copy(&config_path, tmp.join("config")).at(&config_path)?;
    crate::fsio::sync_dir_files(&tmp).at(&tmp)?;
    std::fs::rename(&tmp, &out).at(&out)?;
    let secs = started.elapsed().as_secs_f64();
    progress(&format!("kernel: built in {secs:.0} s ({})", out.display()));
    Ok(found(false, secs))
}

fn first_line(text: String) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

fn make(src: &Path, build_dir: &Path) -> tool::Invocation {
    let mut cmd = tool::MAKE
        .cmd()
        .arg("-s")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", build_dir.display()));
    for (k, v) in BUILD_ENV {
        cmd = cmd.env(k, v);
    }
    cmd
}

/// Unpacks the source once per tarball digest, into a temporary name renamed into place.
fn extract(
    source: &Path,
    digest: &Sha256,
    cache: &Path,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, KernelError> {
    let dir = cache.join("src").join(&digest.hex()[..16]);
    if dir.join("Makefile").is_file() {
        return Ok(dir);
    }
    progress(&format!("kernel: unpacking {}", source.display()));
    let tmp = cache
        .join("src")
        .join(format!(".{}.tmp", &digest.hex()[..16]));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    tool::TAR
        .cmd()
        .arg("-xf")
        .arg(source)
        .arg("-C")
        .arg(&tmp)
        .arg("--strip-components=1")
        .run()?;
    std::fs::rename(&tmp, &dir).at(&dir)?;
    Ok(dir)
}
