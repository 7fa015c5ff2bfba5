//! Blocklist feeds: `astra blocklist import/export`, and [`FeedSync`], which keeps the entries
//! of one feed file in step with the file for the agent.
//!
//! Formats:
//! - plain: one address or prefix per line; `#` and `;` start comments, whole-line or trailing
//!   (FireHOL netsets, Spamhaus DROP `1.10.16.0/20 ; SBL256894`). A trailing comment becomes
//!   the entry's reason.
//! - CSV: a header row naming a `net` column (or `address`, `ip`, `cidr`); optional `ttl`,
//!   `reason`, `tag` and `kind` columns.
//! - JSON: an array of address strings or objects `{"net", "ttl"?, "reason"?, "tag"?, "kind"?}`
//!   (the output of `astra list --json` and `astra blocklist export --format json` included),
//!   or one such value per line (Spamhaus' `drop_v4.json`).
//!
//! A file is validated completely before anything is written: one bad line and nothing is
//! imported (or, for [`FeedSync`], the previous entries stay in force).
//!
//! `parse.rs` reads the formats, `export.rs` writes them, `sync.rs` is [`FeedSync`]; this file
//! has the types they share and `astra blocklist import`.
mod export;
mod parse;
mod sync;

use std::{
    path::Path,
    time::{Duration, Instant},
};

pub use export::{export, render, write_atomically};
use ipnet::IpNet;
pub use parse::{detect, parse};
use serde::Serialize;
pub use sync::{FeedSync, SYNC_BATCH, SyncReport};

use crate::{
    clock::now_unix,
    error::{Error, Result},
    lists::{Enforcement, Lists},
    store::{EntrySource, ListKind, StoredEntry},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Plain,
    Csv,
    Json,
}

impl Format {
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Plain => "plain",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Plain,
    Csv,
    Json,
}

/// One entry as a feed states it, before the import's defaults are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub kind: ListKind,
    pub net: IpNet,
    /// `None`: the import's default; `Some(ZERO)`: permanent.
    pub ttl: Option<Duration>,
    pub reason: Option<String>,
    pub tag: Option<String>,
    /// 1-based line in the file.
    pub line: usize,
}

/// A parsed feed: entries in file order, each (kind, network) once (the last line wins).
#[derive(Debug)]
pub struct Feed {
    pub format: Format,
    pub entries: Vec<FeedEntry>,
    /// Lines that repeated an earlier entry.
    pub duplicates: usize,
}

/// The first bad line of a feed (and how many more there were), as one line of text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}:{line}: {msg}{}", parse::more_suffix(*more))]
pub struct FeedError {
    pub name: String,
    pub line: usize,
    pub msg: String,
    pub more: usize,
}

/// A feed name that cannot be typed back as `--tag NAME`.
#[derive(Debug, thiserror::Error)]
#[error("invalid tag '{0}': use 1-64 letters, digits and - _ . : @ + /")]
pub struct TagError(String);

/// A feed name: short, printable, no spaces, so it can be typed back as `--tag NAME`.
pub(crate) fn check_tag(tag: &str) -> Result<String, TagError> {
    let ok = !tag.is_empty()
        && tag.chars().count() <= 64
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.:@+/".contains(c));
    if ok {
        Ok(tag.to_owned())
    } else {
        Err(TagError(tag.to_owned()))
    }
}

/// The tag a file gets without `--tag`: its name without the extension.
pub fn default_tag(path: &Path) -> String {
    if path == Path::new("-") {
        return "stdin".into();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What an import applies to entries that do not say for themselves.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// `None` or zero: permanent.
    pub ttl: Option<Duration>,
    pub reason: String,
    /// Overrides the entries' own tags (`--tag`, and [`FeedSync`]).
    pub tag_override: Option<String>,
    /// For entries without a tag of their own.
    pub tag: String,
}

/// Turns parsed entries into store rows created at `now`.
pub fn to_stored(entries: &[FeedEntry], d: &Defaults, now: u64) -> Vec<StoredEntry> {
    entries
        .iter()
        .map(|e| {
            let tag = d
                .tag_override
                .as_deref()
                .or(e.tag.as_deref())
                .unwrap_or(&d.tag);
            StoredEntry::new(
                e.kind,
                e.net,
                e.ttl.or(d.ttl).unwrap_or(Duration::ZERO),
                e.reason.as_deref().unwrap_or(&d.reason),
                EntrySource::Feed,
                now,
            )
            .with_tag(tag)
        })
        .collect()
}

/// Reads a feed file (`-` = standard input). Invalid UTF-8 is replaced rather than refused:
/// feeds carry Latin-1 comments now and then, and a byte that lands in an address still fails
/// there, with its line.
fn read_input(path: &Path) -> Result<String> {
    let bytes = crate::limits::read_capped(path, crate::limits::FEED_FILE, "feed")?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// What [`import`] did.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub file: String,
    pub format: Format,
    pub imported: usize,
    pub duplicates: usize,
    pub tags: Vec<String>,
    pub in_kernel: bool,
    pub seconds: f64,
}

/// How an import fills in what a feed's entries do not say.
#[derive(Debug, Default)]
pub struct ImportOptions {
    pub format: Format,
    /// Expiry for entries without a TTL of their own; `None` = permanent.
    pub ttl: Option<Duration>,
    /// Recorded with every entry, overriding the entries' own tags.
    pub tag: Option<String>,
    /// For entries without a reason of their own.
    pub reason: Option<String>,
}

/// `astra blocklist import`: reads and checks the whole feed at `path` (`-` is standard
/// input), then adds its entries in one go; one bad line and nothing is imported.
pub fn import(
    lists: impl FnOnce() -> Result<Lists>,
    path: &Path,
    o: ImportOptions,
) -> Result<ImportReport> {
    let started = Instant::now();
    let name = if path == Path::new("-") {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    let tag_override = o
        .tag
        .as_deref()
        .map(check_tag)
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let text = read_input(path)?;
    let feed = parse(&text, o.format, &name, Some(path))
        .map_err(|e| Error::Usage(format!("{e}; nothing imported")))?;
    let needs_default_tag = tag_override.is_none() && feed.entries.iter().any(|e| e.tag.is_none());
    let tag = default_tag(path);
    if needs_default_tag {
        check_tag(&tag)
            .map_err(|e| Error::Usage(format!("{e} (from the file name): use --tag NAME")))?;
    }
    if let Some(r) = &o.reason {
        crate::limits::check_reason(r)?;
    }
    let defaults = Defaults {
        ttl: o.ttl,
        reason: o.reason.unwrap_or_default(),
        tag_override,
        tag,
    };
    let entries = to_stored(&feed.entries, &defaults, now_unix());
    let mut lists = lists()?;
    let enf = lists.add_many(&entries)?;
    let tags: Vec<String> = entries
        .iter()
        .map(|e| e.tag.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(ImportReport {
        file: name,
        format: feed.format,
        imported: entries.len(),
        duplicates: feed.duplicates,
        tags,
        in_kernel: enf == Enforcement::InKernel,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests;
