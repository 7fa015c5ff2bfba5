//! Writing a list as a feed that imports back as it was.
use std::{
    io::Write as _,
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::*;
use crate::{
    error::{Error, Result},
    lists::{ListRow, Lists},
    store::{EntrySource, ListKind},
};

/// The entries of one list (and feed, given a tag) as `format`, for `astra blocklist export`.
pub fn export(
    lists: &Lists,
    kind: ListKind,
    tag: Option<&str>,
    format: ExportFormat,
) -> Result<Vec<u8>> {
    // A feed is what `import` reads back: quarantines are decisions about single hosts, and
    // a throttle's rate has no place in a feed.
    if !matches!(kind, ListKind::Block | ListKind::Allow) {
        return Err(Error::Usage(format!(
            "--kind {kind}: feeds hold block or allow entries (astra list --kind {kind} --json shows these)"
        )));
    }
    let tag = tag
        .map(check_tag)
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let rows: Vec<ListRow> = lists
        .list()?
        .into_iter()
        .filter(|r| r.kind == kind && tag.as_ref().is_none_or(|t| &r.tag == t))
        .collect();
    let what = match &tag {
        Some(t) => format!("{kind} entries of feed {t}"),
        None => format!("{kind} entries"),
    };
    render(&rows, format, &what)
}

/// One exported entry. A superset of what import reads, and the fields of `astra list --json`
/// plus `ttl`, so an export imports back as it was.
#[derive(Serialize)]
pub(super) struct ExportRow<'a> {
    net: String,
    kind: ListKind,
    /// Remaining TTL (`"59m 58s"`) or `"permanent"`.
    ttl: String,
    reason: &'a str,
    tag: &'a str,
    source: EntrySource,
    expires_at: Option<u64>,
    created_at: u64,
    hits: u64,
}

pub(super) fn export_row(r: &ListRow) -> ExportRow<'_> {
    ExportRow {
        net: r.net.to_string(),
        kind: r.kind,
        // At least a second: "0s" would read back as permanent.
        ttl: r.ttl_remaining_s.map_or("permanent".into(), |s| {
            humantime::format_duration(Duration::from_secs(s.max(1))).to_string()
        }),
        reason: &r.reason,
        tag: &r.tag,
        source: r.source,
        expires_at: r.expires_at,
        created_at: r.created_at,
        hits: r.hits,
    }
}

/// Renders rows in an export format.
pub fn render(rows: &[ListRow], format: ExportFormat, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        ExportFormat::Plain => {
            let _ = writeln!(
                out,
                "# astra blocklist export: {} {what}, {}",
                rows.len(),
                humantime::format_rfc3339_seconds(SystemTime::now())
            );
            for r in rows {
                let _ = writeln!(out, "{}", r.net);
            }
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            // The header is written with the first row; an empty export still gets one.
            if rows.is_empty() {
                w.write_record([
                    "net",
                    "kind",
                    "ttl",
                    "reason",
                    "tag",
                    "source",
                    "expires_at",
                    "created_at",
                    "hits",
                ])
                .map_err(|e| Error::io("csv", e.into()))?;
            }
            for r in rows {
                w.serialize(export_row(r))
                    .map_err(|e| Error::io("csv", e.into()))?;
            }
            w.flush().map_err(|e| Error::io("csv", e))?;
        }
        ExportFormat::Json => {
            let v: Vec<ExportRow<'_>> = rows.iter().map(export_row).collect();
            serde_json::to_writer_pretty(&mut out, &v).expect("serialisable");
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Writes through a temporary file and a rename, so a feed reader (another host's agent
/// syncing this file) never sees half an export.
/// What is already at `path` decides how: a regular file (or nothing) is replaced by a rename;
/// a device or FIFO is written to as it is (a rename used to turn /dev/full into a regular
/// file); a symlink is refused, since renaming over it would replace the link, not its target.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let unusable =
        |e: std::io::Error| Error::Usage(format!("cannot write {}: {e}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::Usage(format!(
                "{} is a symbolic link: give the path it points to",
                path.display()
            )));
        }
        Ok(m) if !m.is_file() && !m.is_dir() => {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(bytes))
                .map_err(unusable);
        }
        _ => {}
    }
    crate::files::replace(path, bytes, 0o644).map_err(unusable)
}
