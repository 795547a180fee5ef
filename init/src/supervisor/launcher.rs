//! The real [`Launcher`]: child processes of the `gantry` command.
