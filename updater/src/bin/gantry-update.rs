//! `gantry-update`: makes, checks and installs update bundles; see [`gantry_updater::cli`].

fn main() -> std::process::ExitCode {
    gantry_updater::cli::main()
}
