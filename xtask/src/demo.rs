//! `cargo xtask demo`: a release build, then `astra lab` with the given arguments.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Result, anyhow};

use crate::{build, cmd, deps};

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for `astra lab`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "LAB_ARGS"
    )]
    pub lab_args: Vec<OsString>,
}

pub fn run(args: &Args) -> Result<()> {
    build::run(&build::Args { release: true })?;
    cmd::step("lab tools (apt)", || deps::ensure(deps::LAB_REQUIREMENTS))?;
    let binary = cmd::target_dir().join("release").join("astra");
    let mut lab = Command::new(&binary);
    lab.arg("lab").args(&args.lab_args);
    eprintln!("==> {}", cmd::display(&lab));
    // exec only returns on failure.
    let err = lab.exec();
    Err(anyhow!("could not run {}: {err}", binary.display()))
}
