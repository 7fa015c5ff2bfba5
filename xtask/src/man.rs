//! `cargo xtask man`: man pages generated from the CLI definitions (`astra man`).

use std::process::Command;

use anyhow::{Result, bail};

use crate::{build, cmd};

pub fn run() -> Result<()> {
    build::run(&build::Args { release: true })?;
    let binary = cmd::target_dir().join("release").join("astra");
    let out = cmd::target_dir().join("man");
    let status = Command::new(&binary)
        .arg("man")
        .arg("--out")
        .arg(&out)
        .status()?;
    if !status.success() {
        bail!("{} man failed: {status}", binary.display());
    }
    Ok(())
}
