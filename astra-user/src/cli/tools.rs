//! The tools on top of the library: `astra lab`, and the completions and man pages.
use std::path::{Path, PathBuf};

use super::{Cli, CliError};
use crate::error::{Error, Result};

/// `astra lab`'s flags.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Scenario file (TOML); repeat for several. Default: the built-in set.
    #[arg(long = "scenario", value_name = "FILE")]
    pub scenarios: Vec<PathBuf>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Keep each scenario's state dir (agent log, eve.json, incident reports).
    #[arg(long)]
    pub keep: bool,
    /// Run Astra on a router in front of the server instead of on the server itself: the
    /// server's address is then not Astra's own, as on a gateway.
    #[arg(long)]
    pub gateway: bool,
    /// After each scenario, take screenshots of the web UI's views (overview, alerts,
    /// lists, the first incident) into DIR, as `<scenario>-<view>.png`: Chromium and
    /// tools/ui's driver must be installed (`cargo xtask test` installs them).
    #[arg(long, value_name = "DIR")]
    pub screenshots: Option<PathBuf>,
    /// Write every source's feature rows from each scenario as CSV, labelled with the
    /// lab's ground truth (the scenario's attack type for its attackers, benign for its
    /// clients): rows to train a classifier on.
    #[arg(long, value_name = "FILE")]
    pub export_training: Option<PathBuf>,
}

/// `astra lab`: list the scenarios, or run them and fail when one did not pass.
pub fn lab(args: LabArgs) -> std::result::Result<(), CliError> {
    if args.list {
        for sc in crate::lab::scenario::default_set()? {
            println!(
                "{:<24} {:<12} {:>4}s  {}",
                sc.name,
                sc.expected.label(),
                sc.duration.as_secs(),
                sc.description
            );
        }
        return Ok(());
    }
    // A directory that cannot be made fails now, not after minutes of scenarios.
    // Absolute, since the browser's driver runs in its own directory.
    let screenshots = args
        .screenshots
        .map(|dir| {
            std::fs::create_dir_all(&dir)
                .and_then(|()| dir.canonicalize())
                .map_err(|e| Error::Usage(format!("--screenshots {}: {e}", dir.display())))
        })
        .transpose()?;
    let r = crate::lab::run(crate::lab::LabOptions {
        scenarios: args.scenarios,
        report: args.report,
        keep: args.keep,
        screenshots,
        export_training: args.export_training,
        layout: if args.gateway {
            crate::lab::Layout::Gateway
        } else {
            crate::lab::Layout::Host
        },
    })?;
    let failed = r
        .scenarios
        .iter()
        .filter(|s| !s.passed && s.skipped.is_none())
        .count();
    if failed > 0 {
        return Err(CliError::ScenariosFailed { failed });
    }
    Ok(())
}

/// Man pages straight from the argument definitions, so they cannot drift from `--help`.
pub fn write_man_pages(dir: &Path) -> Result<()> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut render = |cmd: clap::Command, name: String| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone()))
            .render(&mut buf)
            .map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| Error::io(&path, e))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(sub.clone(), format!("astra-{}", sub.get_name()))?;
    }
    render(cmd, "astra".into())?;
    println!("wrote {} man pages to {}", written.len(), dir.display());
    Ok(())
}

/// `astra completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "astra", &mut std::io::stdout());
    Ok(())
}
