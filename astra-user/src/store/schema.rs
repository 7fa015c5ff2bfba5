//! The schema: its migrations, the header marks that say a file is Astra's, and the checks
//! that refuse a foreign, newer or damaged database.
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::*;

/// Stamped into the database header ("ASTR") so that a foreign SQLite file placed at our path is
/// recognised as such instead of being migrated into.
pub(super) const APPLICATION_ID: i64 = 0x4153_5452;

/// Schema migrations; entry `i` upgrades a database from version `i` to `i + 1`. Append only:
/// databases in the field have already run the earlier entries, so editing one would leave them
/// with a schema that no longer matches its version number.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1: block/allow lists. STRICT so a stray writer cannot slip a string into an
    // integer column and poison every later read. No CHECK on kind/source: new values should
    // not require rebuilding the table, and rows are validated when they are decoded anyway.
    "CREATE TABLE list_entries (
         kind       TEXT    NOT NULL,
         net        TEXT    NOT NULL,
         expires_at INTEGER,
         reason     TEXT    NOT NULL,
         source     TEXT    NOT NULL,
         created_at INTEGER NOT NULL,
         PRIMARY KEY (kind, net)
     ) STRICT;
     CREATE INDEX list_entries_expiry ON list_entries (expires_at)
         WHERE expires_at IS NOT NULL;",
    // Version 2: how often each address was blocked automatically, so repeat offenders get
    // longer blocks across agent restarts (fail2ban's bantime.increment).
    "CREATE TABLE offenders (
         ip         TEXT    NOT NULL PRIMARY KEY,
         blocks     INTEGER NOT NULL,
         last_at    INTEGER NOT NULL
     ) STRICT;",
    // Version 3: which feed an entry came from, so a feed refresh replaces exactly its own
    // entries. Older rows get '' (manual and automatic entries have no feed).
    "ALTER TABLE list_entries ADD COLUMN tag TEXT NOT NULL DEFAULT '';
     CREATE INDEX list_entries_tag ON list_entries (tag) WHERE tag <> '';",
    // Version 4: the alert and incident history (see `history`), next to the lists so one
    // file holds every decision and its grounds. `body` is the whole alert or report as JSON;
    // the other columns are what queries and retention select on.
    "CREATE TABLE alerts (
         id          TEXT PRIMARY KEY,
         ts_ms       INTEGER NOT NULL,
         attack_type TEXT NOT NULL,
         severity    TEXT NOT NULL,
         source      TEXT,
         action      TEXT NOT NULL,
         body        TEXT NOT NULL
     );
     CREATE INDEX alerts_ts ON alerts (ts_ms);
     CREATE TABLE incidents (
         id      TEXT PRIMARY KEY,
         ts_ms   INTEGER NOT NULL,
         source  TEXT,
         summary TEXT NOT NULL,
         body    TEXT NOT NULL
     );
     CREATE INDEX incidents_ts ON incidents (ts_ms);",
    // Version 5: throttle entries' limits (NULL on every other kind).
    "ALTER TABLE list_entries ADD COLUMN rate_pps INTEGER;
     ALTER TABLE list_entries ADD COLUMN rate_bps INTEGER;
     ALTER TABLE list_entries ADD COLUMN burst_ms INTEGER;",
    // Version 6: protect entries' terms (NULL on every other kind): the ports whose new SYNs
    // meet the budget ('80,443', '' for every port) and the astra_common::protect bits. The
    // budget itself is rate_pps and burst_ms.
    "ALTER TABLE list_entries ADD COLUMN ports TEXT;
     ALTER TABLE list_entries ADD COLUMN protect INTEGER;",
    // Version 7: the outbox (see `outbox`): messages for other systems (the CrowdSec
    // watcher's alerts) that survive outages and restarts. `key` makes enqueuing idempotent.
    "CREATE TABLE outbox (
         seq        INTEGER PRIMARY KEY AUTOINCREMENT,
         name       TEXT    NOT NULL,
         key        TEXT    NOT NULL,
         body       TEXT    NOT NULL,
         created_at INTEGER NOT NULL,
         sending    INTEGER NOT NULL DEFAULT 0,
         UNIQUE (name, key)
     ) STRICT;",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First, because switching to WAL itself needs a lock another process may be holding.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The answer is ignored on purpose: on a filesystem without shared-memory support SQLite
    // stays in rollback-journal mode, which is slower under contention but equally durable.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    // FULL: in WAL mode NORMAL may lose the last commits on power loss, and a block the CLI
    // reported as applied must survive that.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Brings the schema up to [`SCHEMA_VERSION`], refusing databases that are not ours or are newer.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    // Fast path without the write lock, so opening an up-to-date database never waits behind a
    // busy agent.
    if schema_version(conn, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error(path, e))?;
    // Re-read under the write lock: the CLI and agent may both have found a fresh file, and only
    // the first one in may run the migrations.
    let from = schema_version(&tx, path)?;
    let pending = MIGRATIONS
        .get(usize::try_from(from).unwrap_or(0)..)
        .unwrap_or(&[]);
    for sql in pending {
        tx.execute_batch(sql).map_err(|e| db_error(path, e))?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(|e| db_error(path, e))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| db_error(path, e))?;
    tx.commit().map_err(|e| db_error(path, e))
}

/// Reads and validates the schema version; fails unless the database is ours (or empty) and
/// not newer than this build.
pub(super) fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let db = |e| db_error(path, e);
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(db)?;

    if app_id != APPLICATION_ID && app_id != 0 {
        return Err(corrupt(format!(
            "it belongs to another program (application_id {app_id:#x})"
        )));
    }
    if version > SCHEMA_VERSION && app_id == APPLICATION_ID {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version != 0 && app_id != APPLICATION_ID {
        return Err(corrupt(format!(
            "schema version {version} was not written by astra (no astra application_id)"
        )));
    }
    if version < 0 {
        return Err(corrupt(format!("invalid schema version {version}")));
    }
    if version == 0 {
        // Version 0 is only valid for a brand-new file; tables here mean some other program's
        // database, and migrating into it would mix two applications' data.
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(db)?;
        if objects > 0 {
            return Err(corrupt(
                "it already holds tables that astra did not create".to_owned(),
            ));
        }
    }
    Ok(version)
}

/// `PRAGMA quick_check` (the structural checks of integrity_check, without matching every
/// index against its table): a file that opens but is damaged further in must not become the
/// store again.
pub(super) fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| db_error(path, e))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: verdict,
        })
    }
}
