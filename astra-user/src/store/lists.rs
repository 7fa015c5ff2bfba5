//! The block and allow list rows.
use std::path::Path;

use ipnet::IpNet;
use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::*;
use crate::addr;

pub(super) const COLUMNS: &str =
    "kind, net, expires_at, reason, source, created_at, tag, rate_pps, rate_bps, burst_ms, ports,
     protect";

pub(super) fn to_sql_int(net: IpNet, field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidEntry {
        net,
        reason: format!(
            "{field} {v} is beyond what SQLite can store (max {})",
            i64::MAX
        ),
    })
}

pub(super) const UPSERT: &str =
    "INSERT INTO list_entries (kind, net, expires_at, reason, source, created_at, tag,
                               rate_pps, rate_bps, burst_ms, ports, protect)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
     ON CONFLICT (kind, net) DO UPDATE SET
         expires_at = excluded.expires_at,
         reason     = excluded.reason,
         source     = excluded.source,
         created_at = excluded.created_at,
         tag        = excluded.tag,
         rate_pps   = excluded.rate_pps,
         rate_bps   = excluded.rate_bps,
         burst_ms   = excluded.burst_ms,
         ports      = excluded.ports,
         protect    = excluded.protect";

/// Why one upsert failed, before the database path is known to the caller's error.
pub(super) enum UpsertError {
    Invalid(StoreError),
    Db(rusqlite::Error),
}

impl UpsertError {
    fn at(self, path: &Path) -> StoreError {
        match self {
            UpsertError::Invalid(e) => e,
            UpsertError::Db(e) => db_error(path, e),
        }
    }
}

pub(super) fn upsert_with(
    stmt: &mut rusqlite::CachedStatement<'_>,
    e: &StoredEntry,
) -> Result<(), UpsertError> {
    let net = addr::canonical_net(e.net);
    let expires_at = e
        .expires_at
        .map(|v| to_sql_int(net, "expires_at", v))
        .transpose()
        .map_err(UpsertError::Invalid)?;
    let created_at = to_sql_int(net, "created_at", e.created_at).map_err(UpsertError::Invalid)?;
    let invalid = |reason: String| UpsertError::Invalid(StoreError::InvalidEntry { net, reason });
    if matches!(e.kind, ListKind::Throttle | ListKind::Protect) != e.rate.is_some() {
        return Err(invalid(
            "throttle and protect entries, and only they, carry a rate".into(),
        ));
    }
    if (e.kind == ListKind::Protect) != e.protect.is_some() {
        return Err(invalid(
            "a protect entry, and only a protect entry, carries a protection".into(),
        ));
    }
    if let Some(why) = e.protect.as_ref().and_then(Protection::invalid) {
        return Err(invalid(why));
    }
    let rate = |f: fn(&Rate) -> u64, field| {
        e.rate
            .as_ref()
            .map(|r| to_sql_int(net, field, f(r)))
            .transpose()
            .map_err(UpsertError::Invalid)
    };
    let (pps, bps, burst) = (
        rate(|r| r.pps, "rate_pps")?,
        rate(|r| r.bps, "rate_bps")?,
        rate(|r| r.burst_ms, "burst_ms")?,
    );
    stmt.execute(params![
        e.kind.as_str(),
        net.to_string(),
        expires_at,
        e.reason,
        e.source.as_str(),
        created_at,
        e.tag,
        pps,
        bps,
        burst,
        e.protect.as_ref().map(Protection::ports_text),
        e.protect.as_ref().map(|p| i64::from(p.flags())),
    ])
    .map_err(UpsertError::Db)?;
    Ok(())
}

/// A row as SQLite returns it; decoding is separate so that a bad value becomes a
/// [`StoreError::Corrupt`] naming the row rather than an opaque conversion error.
pub(super) struct RawRow {
    kind: String,
    net: String,
    expires_at: Option<i64>,
    reason: String,
    source: String,
    created_at: i64,
    tag: String,
    rate: [Option<i64>; 3],
    ports: Option<String>,
    protect: Option<i64>,
}

impl RawRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            kind: row.get(0)?,
            net: row.get(1)?,
            expires_at: row.get(2)?,
            reason: row.get(3)?,
            source: row.get(4)?,
            created_at: row.get(5)?,
            tag: row.get(6)?,
            rate: [row.get(7)?, row.get(8)?, row.get(9)?],
            ports: row.get(10)?,
            protect: row.get(11)?,
        })
    }

    fn decode(self, path: &Path) -> Result<StoredEntry, StoreError> {
        let bad = |what: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("row ({}, {}): {what}", self.kind, self.net),
        };
        let kind: ListKind = self.kind.parse().map_err(|e| bad(format!("{e}")))?;
        // Lenient on spelling (parse_net accepts any valid form) so that a change in how the
        // standard library prints IPv6 cannot make existing databases unreadable.
        let net = addr::parse_net(&self.net).map_err(|e| bad(format!("{e}")))?;
        let source: EntrySource = self.source.parse().map_err(|e| bad(format!("{e}")))?;
        let expires_at = self
            .expires_at
            .map(|v| u64::try_from(v).map_err(|_| bad(format!("negative expires_at {v}"))))
            .transpose()?;
        let created_at = u64::try_from(self.created_at)
            .map_err(|_| bad(format!("negative created_at {}", self.created_at)))?;
        let rate = match (kind, self.rate) {
            (ListKind::Throttle | ListKind::Protect, [Some(pps), Some(bps), Some(burst_ms)]) => {
                let get = |v: i64, what: &str| {
                    u64::try_from(v).map_err(|_| bad(format!("negative {what} {v}")))
                };
                let r = Rate {
                    pps: get(pps, "rate_pps")?,
                    bps: get(bps, "rate_bps")?,
                    burst_ms: get(burst_ms, "burst_ms")?,
                };
                if r.pps == 0 && r.bps == 0 {
                    return Err(bad(format!("a {kind} entry without a rate")));
                }
                Some(r)
            }
            (ListKind::Throttle | ListKind::Protect, _) => {
                return Err(bad(format!("a {kind} entry without a rate")));
            }
            _ => None,
        };
        let protect = match (kind, self.ports, self.protect) {
            (ListKind::Protect, Some(ports), Some(flags)) => {
                let ports = ports
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse::<u16>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("ports '{ports}': {e}")))?;
                let flags = u32::try_from(flags).map_err(|_| bad(format!("protect {flags}")))?;
                let p = Protection::from_flags(flags, ports);
                if let Some(why) = p.invalid() {
                    return Err(bad(why));
                }
                Some(p)
            }
            (ListKind::Protect, ..) => return Err(bad("a protect entry without its terms".into())),
            _ => None,
        };
        Ok(StoredEntry {
            kind,
            net,
            expires_at,
            reason: self.reason,
            source,
            created_at,
            tag: self.tag,
            rate,
            protect,
        })
    }
}

pub(super) fn decode_sorted(
    path: &Path,
    raws: Vec<RawRow>,
) -> Result<Vec<StoredEntry>, StoreError> {
    let mut entries = raws
        .into_iter()
        .map(|r| r.decode(path))
        .collect::<Result<Vec<_>, _>>()?;
    // Sorted here rather than in SQL so networks order numerically (9.0.0.0/8 before
    // 10.0.0.0/8) and kinds follow the enum (block before allow).
    entries.sort_by_key(|e| (e.kind, e.created_at, e.net));
    Ok(entries)
}

impl Store {
    /// Inserts the entry, or replaces every field of the existing entry with the same kind and
    /// network. Durable when this returns.
    pub fn upsert(&self, e: &StoredEntry) -> Result<(), StoreError> {
        self.with(|conn, path| {
            let mut stmt = conn
                .prepare_cached(UPSERT)
                .map_err(|err| db_error(path, err))?;
            upsert_with(&mut stmt, e).map_err(|err| err.at(path))
        })
    }

    /// [`Store::upsert`] for many entries in one transaction: all or none are written, and a
    /// feed of 100k entries costs one fsync instead of 100k. Every entry is checked before
    /// anything is written.
    pub fn upsert_many(&self, entries: &[StoredEntry]) -> Result<(), StoreError> {
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
            {
                let mut stmt = tx.prepare_cached(UPSERT).map_err(db)?;
                for e in entries {
                    // An error rolls the whole batch back when `tx` drops.
                    upsert_with(&mut stmt, e).map_err(|err| err.at(path))?;
                }
            }
            tx.commit().map_err(db)
        })
    }

    /// Removes many entries in one transaction; returns how many existed.
    pub fn remove_many(&self, keys: &[(ListKind, IpNet)]) -> Result<usize, StoreError> {
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
            let mut n = 0;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM list_entries WHERE kind = ?1 AND net = ?2")
                    .map_err(db)?;
                for (kind, net) in keys {
                    let net = addr::canonical_net(*net);
                    n += stmt
                        .execute(params![kind.as_str(), net.to_string()])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(n)
        })
    }

    /// Entries of feed `tag` (expired ones included), ordered like [`Store::list`]. The empty
    /// tag matches nothing: manual and automatic entries belong to no feed. (The `<> ''` term
    /// also lets SQLite use the partial index.)
    pub fn list_tag(&self, tag: &str) -> Result<Vec<StoredEntry>, StoreError> {
        self.with(|conn, path| {
            let raws = (|| {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {COLUMNS} FROM list_entries WHERE tag = ?1 AND tag <> ''"
                ))?;
                let rows = stmt.query_map(params![tag], RawRow::read)?;
                rows.collect::<rusqlite::Result<Vec<RawRow>>>()
            })()
            .map_err(|e| db_error(path, e))?;
            decode_sorted(path, raws)
        })
    }

    /// Removes an entry; returns whether it existed.
    pub fn remove(&self, kind: ListKind, net: &IpNet) -> Result<bool, StoreError> {
        let net = addr::canonical_net(*net);
        self.with(|conn, path| {
            let n = conn
                .execute(
                    "DELETE FROM list_entries WHERE kind = ?1 AND net = ?2",
                    params![kind.as_str(), net.to_string()],
                )
                .map_err(|e| db_error(path, e))?;
            Ok(n > 0)
        })
    }

    /// Looks up one entry, whether or not it has expired.
    pub fn get(&self, kind: ListKind, net: &IpNet) -> Result<Option<StoredEntry>, StoreError> {
        let net = addr::canonical_net(*net);
        self.with(|conn, path| {
            let raw = conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM list_entries WHERE kind = ?1 AND net = ?2"),
                    params![kind.as_str(), net.to_string()],
                    RawRow::read,
                )
                .optional()
                .map_err(|e| db_error(path, e))?;
            raw.map(|r| r.decode(path)).transpose()
        })
    }

    /// All entries (including expired ones not yet taken), of one kind or of both, ordered by
    /// kind (block first), creation time, then network.
    pub fn list(&self, kind: Option<ListKind>) -> Result<Vec<StoredEntry>, StoreError> {
        self.with(|conn, path| {
            let raws = (|| {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {COLUMNS} FROM list_entries WHERE ?1 IS NULL OR kind = ?1"
                ))?;
                let rows = stmt.query_map(params![kind.map(ListKind::as_str)], RawRow::read)?;
                rows.collect::<rusqlite::Result<Vec<RawRow>>>()
            })()
            .map_err(|e| db_error(path, e))?;
            decode_sorted(path, raws)
        })
    }

    /// One page of the entries of `kind`, oldest first (creation time, then insertion), and
    /// how many there are in all: what the API serves, so a million-entry list costs one page
    /// of memory per request.
    pub fn list_page(
        &self,
        kind: ListKind,
        offset: u64,
        limit: u64,
        tag: Option<&str>,
    ) -> Result<(Vec<StoredEntry>, u64), StoreError> {
        let (offset, limit) = (
            i64::try_from(offset).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        let total = match tag {
            None => self.count(kind)?,
            Some(t) => self.count_tagged(kind, t)?,
        };
        let page = self.with(|conn, path| {
            let raws = (|| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM list_entries WHERE kind = ?1 AND (?4 IS NULL OR tag = ?4)
                     ORDER BY created_at, rowid LIMIT ?2 OFFSET ?3"
                ))?;
                let rows =
                    stmt.query_map(params![kind.as_str(), limit, offset, tag], RawRow::read)?;
                rows.collect::<rusqlite::Result<Vec<RawRow>>>()
            })()
            .map_err(|e| db_error(path, e))?;
            raws.into_iter().map(|r| r.decode(path)).collect()
        })?;
        Ok((page, total))
    }

    /// Atomically deletes and returns every entry with `expires_at <= now_unix`, ordered like
    /// [`Store::list`]. Deleting and returning in one transaction means an entry is handed to
    /// exactly one caller even when the CLI and agent both sweep.
    pub fn take_expired(&self, now_unix: u64) -> Result<Vec<StoredEntry>, StoreError> {
        // Beyond i64::MAX every storable expiry has passed.
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
            let raws = (|| {
                let mut stmt = tx.prepare(&format!(
                    "DELETE FROM list_entries
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1
                     RETURNING {COLUMNS}"
                ))?;
                let rows = stmt.query_map(params![now], RawRow::read)?;
                rows.collect::<rusqlite::Result<Vec<RawRow>>>()
            })()
            .map_err(db)?;
            // Decode before committing: if a row is undecodable, the rollback (on drop of
            // `tx`) keeps it in place for inspection instead of losing it.
            let entries = decode_sorted(path, raws)?;
            tx.commit().map_err(db)?;
            Ok(entries)
        })
    }

    /// Number of entries of one kind, expired or not.
    pub fn count(&self, kind: ListKind) -> Result<u64, StoreError> {
        let n: i64 = self.with(|conn, path| {
            conn.query_row(
                "SELECT count(*) FROM list_entries WHERE kind = ?1",
                params![kind.as_str()],
                |r| r.get(0),
            )
            .map_err(|e| db_error(path, e))
        })?;
        // count(*) is never negative.
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn count_tagged(&self, kind: ListKind, tag: &str) -> Result<u64, StoreError> {
        let n: i64 = self.with(|conn, path| {
            conn.query_row(
                "SELECT count(*) FROM list_entries WHERE kind = ?1 AND tag = ?2",
                params![kind.as_str(), tag],
                |r| r.get(0),
            )
            .map_err(|e| db_error(path, e))
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Entries per tag of one list (untagged ones under ""), largest first: the feeds and
    /// origins the UI offers as filters.
    pub fn tag_counts(&self, kind: ListKind) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tag, count(*) AS n FROM list_entries WHERE kind = ?1
                     GROUP BY tag ORDER BY n DESC, tag",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![kind.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(db)?;
            rows.map(|r| r.map(|(t, n)| (t, u64::try_from(n).unwrap_or(0))))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)
        })
    }
}
