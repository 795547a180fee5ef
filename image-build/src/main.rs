//! `gantry-image-build`: builds a Gantry disk image from an image definition.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gantry_image_build::{build, BuildOptions};

/// Build a Gantry disk image (raw and qcow2), rootless and reproducibly.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Image definition (TOML). Default: images/gantry.toml of this workspace.
    #[arg(long)]
    definition: Option<PathBuf>,
    /// Output directory. Default: target/gantry of this workspace.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Cache for the kernel build. Default: $GANTRY_CACHE_DIR or ~/.cache/gantry.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Private key (Ed25519 PKCS#8) that signs the update bundle. Default: the development
    /// key in the cache directory, made on first use.
    #[arg(long)]
    signing_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut opts = BuildOptions::default_for_workspace();
    if let Some(d) = args.definition {
        opts.definition = d;
    }
    if let Some(o) = args.out {
        opts.out_dir = o;
    }
    if let Some(c) = args.cache_dir {
        opts.cache_dir = c;
    }
    opts.signing_key = args.signing_key;
    match build(&opts, &|line| eprintln!("gantry-image-build: {line}")) {
        Ok(manifest) => {
            println!("{}", manifest.raw_image.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
