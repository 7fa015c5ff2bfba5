//! `astra blocklist import|export`: the flags, and how the results are printed. Parsing,
//! checking and rendering feeds is [`crate::lists::feeds`]'s.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Subcommand, ValueEnum};

use super::KindArg;
use crate::{
    addr::parse_ttl,
    error::{Error, Result},
    lists::{
        Lists,
        feeds::{self, ExportFormat, Format, ImportOptions},
    },
};

#[derive(Subcommand, Debug)]
pub enum BlocklistCmd {
    /// Import a feed (FireHOL netset, Spamhaus DROP, CSV or JSON) into the blocklist. The whole
    /// file is checked first: one bad line and nothing is imported (exit code 2).
    Import(ImportArgs),
    /// Write the blocklist (or the allowlist) as a feed: plain, CSV or JSON.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Feed file, or - for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// File format; auto goes by the extension (.csv, .json), then by the content.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: FormatArg,
    /// How long the entries last (e.g. 1h, 7d; default permanent). Entries with a TTL of their
    /// own (a CSV or JSON field) keep it.
    #[arg(long, value_parser = parse_ttl, value_name = "DUR")]
    pub ttl: Option<Duration>,
    /// Feed name recorded with every entry. Without it: an entry's own tag field, else the
    /// file name without its extension ("stdin" for -).
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Reason shown by `astra list`, for entries without one of their own (a CSV or JSON
    /// field, or a plain line's trailing comment).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print what was imported as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// plain carries addresses only; csv and json carry TTL, reason, tag and list, and
    /// import back as they were.
    #[arg(long, value_enum, default_value = "plain")]
    pub format: ExportFormatArg,
    /// Only the entries of this feed.
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Which list.
    #[arg(long, value_enum, default_value = "block")]
    pub kind: KindArg,
    /// Write here instead of standard output (replaced atomically).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Auto,
    Plain,
    Csv,
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Auto => Format::Auto,
            FormatArg::Plain => Format::Plain,
            FormatArg::Csv => Format::Csv,
            FormatArg::Json => Format::Json,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    Plain,
    Csv,
    Json,
}

impl From<ExportFormatArg> for ExportFormat {
    fn from(f: ExportFormatArg) -> Self {
        match f {
            ExportFormatArg::Plain => ExportFormat::Plain,
            ExportFormatArg::Csv => ExportFormat::Csv,
            ExportFormatArg::Json => ExportFormat::Json,
        }
    }
}

/// `astra blocklist ...`.
pub fn run(cmd: BlocklistCmd, pin_dir: &Path, state_dir: &Path) -> Result<()> {
    match cmd {
        BlocklistCmd::Import(a) => import(a, pin_dir, state_dir),
        BlocklistCmd::Export(a) => export(a, pin_dir, state_dir),
    }
}

fn import(a: ImportArgs, pin_dir: &Path, state_dir: &Path) -> Result<()> {
    let options = ImportOptions {
        format: a.format.into(),
        ttl: a.ttl,
        tag: a.tag,
        reason: a.reason,
    };
    let report = feeds::import(|| Lists::open(state_dir, pin_dir), &a.file, options)?;
    if a.json {
        return super::render::print_json(&report);
    }
    let state = if report.in_kernel {
        "in force now"
    } else {
        "stored; no agent has run since boot, they apply when `astra run` starts"
    };
    let dups = match report.duplicates {
        0 => String::new(),
        n => format!(", {n} duplicate lines merged"),
    };
    let tags = match report.tags.len() {
        0 => String::new(),
        1 => format!(", tag {}", report.tags[0]),
        _ => format!(", tags {}", report.tags.join(" ")),
    };
    println!(
        "imported {} entries from {} ({}{tags}{dups}) in {:.2} s ({state})",
        report.imported,
        report.file,
        report.format.as_str(),
        report.seconds
    );
    Ok(())
}

fn export(a: ExportArgs, pin_dir: &Path, state_dir: &Path) -> Result<()> {
    let lists = Lists::open(state_dir, pin_dir)?;
    let bytes = feeds::export(&lists, a.kind.into(), a.tag.as_deref(), a.format.into())?;
    match a.output.as_deref() {
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Error::io("stdout", e)),
        Some(p) if p == Path::new("-") => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Error::io("stdout", e)),
        Some(p) => feeds::write_atomically(p, &bytes),
    }
}
