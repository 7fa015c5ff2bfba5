//! The tools on top of the library: `astra lab`, and the completions and man pages.
use std::path::{Path, PathBuf};

use super::{Cli, CliError};
use crate::error::{Error, Result};

/// `astra lab`: list the scenarios, or run them and fail when one did not pass.
pub fn lab(
    scenarios: Vec<PathBuf>,
    report: Option<PathBuf>,
    list: bool,
    keep: bool,
    gateway: bool,
    screenshots: Option<PathBuf>,
) -> std::result::Result<(), CliError> {
    if list {
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
    let screenshots = screenshots
        .map(|dir| {
            std::fs::create_dir_all(&dir)
                .and_then(|()| dir.canonicalize())
                .map_err(|e| Error::Usage(format!("--screenshots {}: {e}", dir.display())))
        })
        .transpose()?;
    let r = crate::lab::run(crate::lab::LabOptions {
        scenarios,
        report,
        keep,
        screenshots,
        layout: if gateway {
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
