//! `gantry-kernel-check`: lists what a kernel `.config` lacks for Gantry, grouped by feature.
//! Exits 0 when nothing is missing, 1 when something is, 2 on a usage or read error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gantry_kernel_config::{check, requirements, KernelConfig};

/// Check a kernel .config against Gantry's required options.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The kernel .config to check (for a running kernel: extract /proc/config.gz first).
    config: PathBuf,
    /// Print every feature, not only those with problems.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let reqs = requirements().context("built-in fragments are malformed")?;
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let findings = check(&KernelConfig::parse(&text), &reqs);
    let mut features: Vec<&str> = Vec::new();
    for r in &reqs {
        if !features.contains(&r.feature.as_str()) {
            features.push(&r.feature);
        }
    }
    for feature in features {
        let total = reqs.iter().filter(|r| r.feature == feature).count();
        let bad: Vec<_> = findings
            .iter()
            .filter(|f| f.requirement.feature == feature)
            .collect();
        if bad.is_empty() {
            if args.verbose {
                println!("{feature}: ok ({total} options)");
            }
            continue;
        }
        println!("{feature}: {} of {total} options wrong", bad.len());
        for f in bad {
            println!("  {f}");
        }
    }
    if findings.is_empty() {
        println!(
            "{}: all {} required options set",
            args.config.display(),
            reqs.len()
        );
    }
    Ok(findings.is_empty())
}
