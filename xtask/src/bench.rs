//! `cargo xtask bench`: a release build, the comparison tools from Debian, then `astra bench`.

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::{Result, anyhow};

use crate::{build, cmd, deps};

#[derive(clap::Args)]
pub struct Args {
    /// Also write the measurements as JSON: a list of {name, value, unit, baseline_name,
    /// baseline_value, ratio}.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Only some groups: xdp, live, poll, botnet, forest, latency, synflood, reflection, replay,
    /// crowdsec, trees, ui (comma-separated).
    #[arg(long, value_name = "GROUPS")]
    pub only: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    build::run(&build::Args { release: true })?;
    cmd::step("bench tools (apt)", || {
        deps::ensure(deps::BENCH_REQUIREMENTS)
    })?;
    cmd::step("browser driver (npm)", deps::ensure_ui_tools)?;
    let binary = cmd::target_dir().join("release").join("astra");
    let mut bench = Command::new(&binary);
    bench.arg("bench");
    if let Some(j) = &args.json {
        bench.arg("--json").arg(j);
    }
    if let Some(o) = &args.only {
        bench.args(["--only", o]);
    }
    eprintln!("==> {}", cmd::display(&bench));
    // exec only returns on failure.
    let err = bench.exec();
    Err(anyhow!("could not run {}: {err}", binary.display()))
}
