//! Reading a feed: the format detected, every line checked, the first bad one named.
use std::{collections::HashMap, path::Path, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::*;
use crate::{
    addr::{parse_net, parse_ttl},
    clock::now_unix,
    error::Result,
    store::ListKind,
};

pub(super) fn more_suffix(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more bad line)".into(),
        n => format!(" (and {n} more bad lines)"),
    }
}

/// Collects the entries and problems of one file.
pub(super) struct Collector<'a> {
    name: &'a str,
    entries: Vec<FeedEntry>,
    index: HashMap<(ListKind, IpNet), usize>,
    duplicates: usize,
    first: Option<(usize, String)>,
    bad: usize,
}

impl<'a> Collector<'a> {
    fn new(name: &'a str) -> Self {
        Self {
            name,
            entries: Vec::new(),
            index: HashMap::new(),
            duplicates: 0,
            first: None,
            bad: 0,
        }
    }

    fn bad(&mut self, line: usize, msg: impl Into<String>) {
        self.bad += 1;
        if self.first.is_none() {
            self.first = Some((line, msg.into()));
        }
    }

    fn push(&mut self, mut e: FeedEntry) {
        if e.net.prefix_len() == 0 {
            // Never from a feed, --force or not: a bad line must not cut the host off.
            let msg = format!("{} covers every address: a feed may not hold it", e.net);
            return self.bad(e.line, msg);
        }
        if let Some(r) = &mut e.reason {
            crate::limits::cut_chars(r, crate::limits::REASON_CHARS);
        }
        match self.index.get(&(e.kind, e.net)) {
            Some(&i) => {
                self.duplicates += 1;
                self.entries[i] = e;
            }
            None => {
                self.index.insert((e.kind, e.net), self.entries.len());
                self.entries.push(e);
            }
        }
    }

    fn finish(self, format: Format) -> Result<Feed, FeedError> {
        if let Some((line, msg)) = self.first {
            return Err(FeedError {
                name: self.name.to_owned(),
                line,
                msg,
                more: self.bad - 1,
            });
        }
        Ok(Feed {
            format,
            entries: self.entries,
            duplicates: self.duplicates,
        })
    }
}

/// Picks the format of a feed: the extension when it says, else the content. JSON starts with
/// `[` or `{`; a plain feed never holds a comma, so a first data line with one is a CSV header.
pub fn detect(path: Option<&Path>, text: &str) -> Format {
    let ext = path
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => return Format::Csv,
        Some("json" | "jsonl" | "ndjson") => return Format::Json,
        _ => {}
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    match first {
        Some(l) if l.starts_with('[') || l.starts_with('{') => Format::Json,
        Some(l) if l.contains(',') => Format::Csv,
        _ => Format::Plain,
    }
}

/// Parses a whole feed. `name` is how errors refer to the file; `path` helps [`detect`].
pub fn parse(
    text: &str,
    format: Format,
    name: &str,
    path: Option<&Path>,
) -> Result<Feed, FeedError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let format = match format {
        Format::Auto => detect(path, text),
        f => f,
    };
    let mut c = Collector::new(name);
    match format {
        Format::Plain | Format::Auto => parse_plain(text, &mut c),
        Format::Csv => parse_csv(text, &mut c),
        Format::Json => parse_json(text, &mut c),
    }
    c.finish(format)
}

pub(super) fn parse_plain(text: &str, c: &mut Collector<'_>) {
    // lines() also strips the \r of CRLF files.
    for (i, raw) in text.lines().enumerate() {
        let (data, comment) = match raw.find(['#', ';']) {
            Some(at) => (&raw[..at], Some(raw[at + 1..].trim())),
            None => (raw, None),
        };
        let data = data.trim();
        if data.is_empty() {
            continue;
        }
        match parse_net(data) {
            Ok(net) => c.push(FeedEntry {
                kind: ListKind::Block,
                net,
                ttl: None,
                reason: comment.filter(|s| !s.is_empty()).map(str::to_owned),
                tag: None,
                line: i + 1,
            }),
            Err(e) => c.bad(i + 1, e.to_string()),
        }
    }
}

pub(super) const NET_COLUMNS: [&str; 4] = ["net", "address", "ip", "cidr"];

pub(super) fn parse_csv(text: &str, c: &mut Collector<'_>) {
    let header_line = text
        .lines()
        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(1, |i| i + 1);
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(e) => return c.bad(header_line, format!("unreadable CSV header: {e}")),
    };
    let col = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header.iter().position(|h| h == n))
    };
    let Some(net_col) = col(&NET_COLUMNS) else {
        return c.bad(
            header_line,
            format!(
                "CSV header '{}' has no net column (named net, address, ip or cidr)",
                header.join(",")
            ),
        );
    };
    let (ttl_col, reason_col, tag_col, kind_col) = (
        col(&["ttl"]),
        col(&["reason"]),
        col(&["tag"]),
        col(&["kind"]),
    );
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                let msg = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("{len} fields where the header has {expected_len}"),
                    _ => e.to_string(),
                };
                c.bad(line, msg);
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line() as usize);
        let field = |i: Option<usize>| i.and_then(|i| rec.get(i)).filter(|s| !s.is_empty());
        let parsed = (|| -> Result<FeedEntry, EntryError> {
            let net = parse_net(rec.get(net_col).unwrap_or_default())?;
            Ok(FeedEntry {
                kind: field(kind_col)
                    .map(parse_kind)
                    .transpose()?
                    .unwrap_or(ListKind::Block),
                net,
                ttl: field(ttl_col).map(parse_ttl).transpose()?,
                reason: field(reason_col).map(str::to_owned),
                tag: field(tag_col).map(check_tag).transpose()?,
                line,
            })
        })();
        match parsed {
            Ok(e) => c.push(e),
            Err(e) => c.bad(line, e.to_string()),
        }
    }
}

/// A feed's list: block or allow. Quarantine and throttle entries are decisions about single
/// hosts and rates, made by hand or by the policy; a feed carries no rate to throttle with.
pub(super) fn parse_kind(s: &str) -> Result<ListKind, EntryError> {
    match s.to_ascii_lowercase().parse()? {
        k @ (ListKind::Block | ListKind::Allow) => Ok(k),
        k => Err(EntryError::NotAFeedList(format!(
            "list '{k}': a feed holds block or allow entries"
        ))),
    }
}

/// Why one entry of a feed cannot be imported (the [`FeedError`] adds the file and line).
#[derive(Debug, thiserror::Error)]
pub(super) enum EntryError {
    #[error(transparent)]
    Addr(#[from] crate::addr::AddrError),
    #[error(transparent)]
    Kind(#[from] crate::store::ParseEnumError),
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error("invalid entry: {0}")]
    Json(serde_json::Error),
    #[error("object has no \"net\" field (or address, ip, cidr)")]
    NoNet,
    #[error("expected an address string or an object with \"net\", found {0}")]
    NotEntry(String),
    #[error("expires_at {0} is in the past")]
    Expired(u64),
    #[error("{0}")]
    NotAFeedList(String),
}

/// The fields of a JSON entry. Unknown fields are ignored, so the rows of `astra list --json`
/// (hits, created_at, in_kernel, ...) and other tools' extra fields import as they are.
#[derive(Deserialize)]
pub(super) struct JsonEntry {
    #[serde(alias = "address", alias = "ip", alias = "cidr")]
    net: Option<String>,
    kind: Option<String>,
    /// `"1h"`, seconds, or null for permanent.
    #[serde(default, deserialize_with = "explicit")]
    ttl: Option<Option<JsonTtl>>,
    /// What `astra list --json` writes: seconds left, null for permanent.
    #[serde(default, deserialize_with = "explicit")]
    ttl_remaining_s: Option<Option<u64>>,
    /// What `astra blocklist export --format json` writes too: UNIX seconds, null = permanent.
    #[serde(default, deserialize_with = "explicit")]
    expires_at: Option<Option<u64>>,
    reason: Option<String>,
    tag: Option<String>,
    /// Spamhaus' JSON feeds end with a `{"type": "metadata", ...}` line.
    #[serde(rename = "type")]
    record_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum JsonTtl {
    Secs(u64),
    Text(String),
}

/// Tells a field set to null (`Some(None)`) from a missing one (`None`).
pub(super) fn explicit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(super) fn parse_json(text: &str, c: &mut Collector<'_>) {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // One value per line.
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => json_item(v, i + 1, c),
                Err(e) => c.bad(i + 1, format!("invalid JSON: {e}")),
            }
        }
        return;
    }
    let items: Vec<&serde_json::value::RawValue> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return c.bad(
                e.line(),
                format!("invalid JSON (expected an array of addresses or objects): {e}"),
            );
        }
    };
    // Raw values borrow from `text`, so their offsets give line numbers; items come in order,
    // so the newline count carries forward instead of rescanning the file per item.
    let (mut pos, mut line) = (0usize, 1usize);
    for raw in items {
        let at = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        line += text.as_bytes()[pos..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        pos = at;
        match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(v) => json_item(v, line, c),
            Err(e) => c.bad(line, format!("invalid JSON: {e}")),
        }
    }
}

pub(super) fn json_item(v: serde_json::Value, line: usize, c: &mut Collector<'_>) {
    let parsed = match v {
        serde_json::Value::String(s) => parse_net(&s)
            .map(|net| {
                Some(FeedEntry {
                    kind: ListKind::Block,
                    net,
                    ttl: None,
                    reason: None,
                    tag: None,
                    line,
                })
            })
            .map_err(EntryError::from),
        v @ serde_json::Value::Object(_) => json_object(v, line),
        other => {
            let mut shown = other.to_string();
            if shown.len() > 40 {
                shown.truncate(shown.floor_char_boundary(40));
                shown.push_str("...");
            }
            Err(EntryError::NotEntry(shown))
        }
    };
    match parsed {
        Ok(Some(e)) => c.push(e),
        Ok(None) => {}
        Err(e) => c.bad(line, e.to_string()),
    }
}

pub(super) fn json_object(
    v: serde_json::Value,
    line: usize,
) -> Result<Option<FeedEntry>, EntryError> {
    let o: JsonEntry = serde_json::from_value(v).map_err(EntryError::Json)?;
    let Some(net) = o.net else {
        if o.record_type.is_some_and(|t| t == "metadata") {
            return Ok(None);
        }
        return Err(EntryError::NoNet);
    };
    let net = parse_net(&net)?;
    let ttl = match (o.ttl, o.ttl_remaining_s, o.expires_at) {
        (Some(None), _, _) | (None, Some(None), _) | (None, None, Some(None)) => {
            Some(Duration::ZERO)
        }
        (Some(Some(JsonTtl::Secs(s))), _, _) => Some(Duration::from_secs(s)),
        (Some(Some(JsonTtl::Text(t))), _, _) => Some(parse_ttl(&t)?),
        // Seconds left as `astra list` rounds them: 0 means "under a second", not permanent.
        (None, Some(Some(s)), _) => Some(Duration::from_secs(s.max(1))),
        // An absolute expiry: one already past must not become a permanent block.
        (None, None, Some(Some(t))) => match t.checked_sub(now_unix()) {
            Some(left) if left > 0 => Some(Duration::from_secs(left)),
            _ => return Err(EntryError::Expired(t)),
        },
        (None, None, None) => None,
    };
    Ok(Some(FeedEntry {
        kind: o
            .kind
            .as_deref()
            .map(parse_kind)
            .transpose()?
            .unwrap_or(ListKind::Block),
        net,
        ttl,
        reason: o.reason.filter(|r| !r.is_empty()),
        tag: o
            .tag
            .filter(|t| !t.is_empty())
            .map(|t| check_tag(&t))
            .transpose()?,
        line,
    }))
}
