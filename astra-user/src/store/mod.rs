//! Durable blocklist/allowlist in SQLite.
//!
//! The kernel's BPF maps are emptied on every reboot or agent restart; this store is the source
//! of truth they are rebuilt from. Expiries are absolute UNIX seconds (wall clock) rather than
//! the kernel's monotonic timestamps, because the monotonic clock restarts at boot and a stored
//! monotonic expiry would be meaningless afterwards.
//!
//! The CLI and the running agent open the same file from different processes, so every write is
//! a single SQLite transaction, the database runs in WAL mode (readers never block the writer)
//! and each connection waits up to [`BUSY_TIMEOUT`] for the other's lock instead of failing.

use std::{
    ffi::CString,
    fmt,
    fs::{self, DirBuilder, File},
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use ipnet::IpNet;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
    params,
};
use serde::{Deserialize, Serialize, Serializer};

use crate::addr;

/// File name of the database inside the state directory.
pub const DB_FILE_NAME: &str = "astra.db";

/// How long a connection waits for another process's write lock before giving up. Writes are
/// single short statements, so anything longer than this means the other side is stuck.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Stamped into the database header ("ASTR") so that a foreign SQLite file placed at our path is
/// recognised as such instead of being migrated into.
const APPLICATION_ID: i64 = 0x4153_5452;

/// Schema migrations; entry `i` upgrades a database from version `i` to `i + 1`. Append only:
/// databases in the field have already run the earlier entries, so editing one would leave them
/// with a schema that no longer matches its version number.
const MIGRATIONS: &[&str] = &[
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
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const COLUMNS: &str = "kind, net, expires_at, reason, source, created_at, tag";

/// Which list an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Block,
    Allow,
}

impl ListKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ListKind::Block => "block",
            ListKind::Allow => "allow",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListKind {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(ListKind::Block),
            "allow" => Ok(ListKind::Allow),
            _ => Err(ParseEnumError {
                what: "list kind",
                value: s.to_owned(),
                expected: "block or allow",
            }),
        }
    }
}

/// Who put an entry on a list; kept so that, e.g., a feed refresh can replace its own entries
/// without touching ones an operator added by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntrySource {
    Manual,
    Auto,
    Feed,
}

impl EntrySource {
    pub const fn as_str(self) -> &'static str {
        match self {
            EntrySource::Manual => "manual",
            EntrySource::Auto => "auto",
            EntrySource::Feed => "feed",
        }
    }
}

impl fmt::Display for EntrySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntrySource {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(EntrySource::Manual),
            "auto" => Ok(EntrySource::Auto),
            "feed" => Ok(EntrySource::Feed),
            _ => Err(ParseEnumError {
                what: "entry source",
                value: s.to_owned(),
                expected: "manual, auto or feed",
            }),
        }
    }
}

/// A string that is not a known [`ListKind`] or [`EntrySource`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}': expected {expected}")]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

/// One row of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEntry {
    pub kind: ListKind,
    /// Stored and keyed in canonical form (see [`addr::canonical_net`]).
    #[serde(serialize_with = "serialize_display")]
    pub net: IpNet,
    /// UNIX seconds; `None` = permanent.
    pub expires_at: Option<u64>,
    pub reason: String,
    pub source: EntrySource,
    /// UNIX seconds.
    pub created_at: u64,
    /// The feed the entry came from (`astra blocklist import`, the agent's feed sync); empty
    /// for manual and automatic entries.
    pub tag: String,
}

// ipnet's own serde support is behind a feature the workspace does not enable; the text form is
// what JSON consumers want anyway.
fn serialize_display<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(net)
}

impl StoredEntry {
    /// Builds an entry created at `now_unix` that lives for `ttl`; [`Duration::ZERO`] means
    /// permanent, matching [`addr::parse_ttl`]. Partial seconds round up so an entry never
    /// expires before its TTL has fully elapsed.
    pub fn new(
        kind: ListKind,
        net: IpNet,
        ttl: Duration,
        reason: impl Into<String>,
        source: EntrySource,
        now_unix: u64,
    ) -> StoredEntry {
        let expires_at = if ttl.is_zero() {
            None
        } else {
            let secs = ttl
                .as_secs()
                .saturating_add(u64::from(ttl.subsec_nanos() > 0));
            Some(now_unix.saturating_add(secs))
        };
        StoredEntry {
            kind,
            net: addr::canonical_net(net),
            expires_at,
            reason: reason.into(),
            source,
            created_at: now_unix,
            tag: String::new(),
        }
    }

    /// The same entry attributed to feed `tag`.
    pub fn with_tag(mut self, tag: impl Into<String>) -> StoredEntry {
        self.tag = tag.into();
        self
    }

    /// Time left before expiry: `None` if permanent, [`Duration::ZERO`] once expired.
    pub fn remaining(&self, now_unix: u64) -> Option<Duration> {
        self.expires_at
            .map(|at| Duration::from_secs(at.saturating_sub(now_unix)))
    }

    /// Whether the entry is due for removal. Uses `<=` like [`Store::take_expired`], so an entry
    /// is never considered live by one and expired by the other.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_unix)
    }
}

/// Why the store could not be opened or used. Every variant displays as one line naming the
/// path and the cause. Causes are deliberately not exposed via `Error::source`, since they are
/// already part of the message and error reporters that print the chain would repeat them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state dir or database file cannot be created or written because of permissions, a
    /// read-only filesystem or a path that is not what it should be (a file where a directory
    /// belongs, or vice versa). Fixable by the operator, hence [`StoreError::is_user_error`].
    #[error("{what} {} cannot be written: {cause}", path.display())]
    Unwritable {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// Any other I/O failure on the state dir or database file (disk full, I/O error).
    #[error("{what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// The file is not SQLite, is damaged, belongs to another program, or holds rows Astra
    /// cannot decode.
    #[error("database {} is corrupt or not an Astra database: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Written by a newer Astra; refusing it protects tables this build does not know about.
    #[error(
        "database {} has schema version {found}, newer than this astra ({supported}): upgrade astra",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Another process held the write lock for longer than [`BUSY_TIMEOUT`].
    #[error(
        "database {} is locked by another process (gave up after {}s): {cause}",
        path.display(),
        BUSY_TIMEOUT.as_secs()
    )]
    Busy {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    /// The state dir may be written by group or others, who could plant links in it.
    #[error("{}", crate::files::shared_dir_message(path, *mode))]
    SharedDir { path: PathBuf, mode: u32 },
    /// An entry that cannot be represented in the database.
    #[error("cannot store {net}: {reason}")]
    InvalidEntry { net: IpNet, reason: String },
    /// Any other SQLite failure.
    #[error("database {}: {cause}", path.display())]
    Sqlite {
        path: PathBuf,
        cause: rusqlite::Error,
    },
}

impl StoreError {
    /// True when the operator pointed Astra at a state dir it cannot use (the CLI exits with
    /// code 2 for these rather than reporting an internal failure).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::Unwritable { .. } | StoreError::SharedDir { .. }
        )
    }

    /// True when the database file itself cannot serve (damaged, replaced by something else,
    /// unreadable or unwritable, out of space) as opposed to a passing lock or a bad entry: a
    /// resilient store falls back to memory on these.
    pub fn is_unusable(&self) -> bool {
        match self {
            StoreError::Unwritable { .. }
            | StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::TooNew { .. } => true,
            StoreError::Sqlite { cause, .. } => matches!(
                cause.sqlite_error_code(),
                Some(
                    ErrorCode::SystemIoFailure
                        | ErrorCode::ReadOnly
                        | ErrorCode::CannotOpen
                        | ErrorCode::DiskFull
                        | ErrorCode::NotADatabase
                        | ErrorCode::DatabaseCorrupt
                )
            ),
            StoreError::Busy { .. }
            | StoreError::InvalidEntry { .. }
            | StoreError::SharedDir { .. } => false,
        }
    }
}

fn io_error(what: &'static str, path: &Path, cause: io::Error) -> StoreError {
    let path = path.to_path_buf();
    if crate::files::operator_fixable(&cause) {
        StoreError::Unwritable { what, path, cause }
    } else {
        StoreError::Io { what, path, cause }
    }
}

pub(crate) fn db_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Busy { path, cause: e }
        }
        _ => StoreError::Sqlite { path, cause: e },
    }
}

/// The durable list store: one SQLite connection behind a mutex, shared by every clone. The
/// agent opens one and hands clones to its poll loop and its API, so the process holds exactly
/// one connection to the file. (Several connections in one process are safe only while nothing
/// else opens the file: closing any descriptor of it drops every POSIX lock the process holds
/// there, and another process then checkpoints and deletes the WAL under the live connection.)
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Mutex<Db>>,
}

#[derive(Debug)]
struct Db {
    conn: Connection,
    /// The database file, or `:memory:`.
    path: PathBuf,
    /// Set by [`Store::open_resilient`]: the state dir to come back to after a fall-back.
    resilient: Option<PathBuf>,
    /// Why the store runs in memory instead of on its file (None while durable).
    degraded: Option<String>,
}

impl Db {
    fn memory() -> Db {
        let path = PathBuf::from(MEMORY_PATH);
        let mut conn = Connection::open_in_memory().expect("an in-memory database opens");
        migrate(&mut conn, &path).expect("a fresh in-memory database migrates");
        Db {
            conn,
            path,
            resilient: None,
            degraded: None,
        }
    }

    fn durable(&self) -> bool {
        self.path != Path::new(MEMORY_PATH)
    }
}

const MEMORY_PATH: &str = ":memory:";

impl Store {
    /// Opens (creating if needed) `state_dir/astra.db`, creating `state_dir` with mode 0700
    /// because block reasons and addresses are operational data other local users need not see.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::from_db(open_db(state_dir)?))
    }

    /// [`Store::open`] for the agent: when the file is unusable, at open or later while
    /// running, the store falls back to memory (the failing call is retried there), so
    /// detection and blocking go on; [`Store::degraded`] says why, and
    /// [`Store::try_recover`] moves back to the file once it opens again. A state dir that
    /// cannot be used at all is a configuration mistake and still fails here.
    pub fn open_resilient(state_dir: &Path) -> Result<Store, StoreError> {
        let mut db = match open_db(state_dir) {
            Ok(db) => db,
            Err(e) if e.is_user_error() => return Err(e),
            Err(e) => {
                let mut db = Db::memory();
                degrade_log(&e);
                db.degraded = Some(e.to_string());
                db
            }
        };
        db.resilient = Some(state_dir.to_path_buf());
        Ok(Store::from_db(db))
    }

    /// A store that lives only in memory (tests, the lab's replays, the CLI's status when the
    /// file is damaged).
    pub fn open_in_memory() -> Store {
        Store::from_db(Db::memory())
    }

    fn from_db(db: Db) -> Store {
        Store {
            db: Arc::new(Mutex::new(db)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave a half-written row behind (an open
        // transaction rolls back when it drops), so the connection is still good to use.
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the connection. On a resilient store whose file turns out unusable, the
    /// store falls back to memory and runs `op` again there.
    pub(crate) fn with<T>(
        &self,
        op: impl Fn(&Connection, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = self.lock();
        match op(&db.conn, &db.path) {
            Err(e) if db.resilient.is_some() && db.durable() && e.is_unusable() => {
                degrade_log(&e);
                let resilient = db.resilient.take();
                *db = Db::memory();
                db.resilient = resilient;
                db.degraded = Some(e.to_string());
                op(&db.conn, &db.path)
            }
            r => r,
        }
    }

    /// Path of the database file (not the state dir); `:memory:` for an in-memory store.
    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// Why a resilient store runs in memory, or None while it is on its file.
    pub fn degraded(&self) -> Option<String> {
        self.lock().degraded.clone()
    }

    /// Moves a degraded resilient store back to its file when the file opens again (repaired,
    /// restored from a backup, or moved away so that a new one is created). What was decided
    /// in memory meanwhile (list entries, offence counts, alert and incident history) is
    /// merged into the file first, in one transaction. Returns whether the store moved.
    pub fn try_recover(&self) -> Result<bool, StoreError> {
        let mut db = self.lock();
        let Some(state_dir) = db.resilient.clone() else {
            return Ok(false);
        };
        if db.durable() {
            return Ok(false);
        }
        let mut file = open_db(&state_dir)?;
        check_integrity(&file.conn, &file.path)?;
        merge_into(&db.conn, &file.path).map_err(|e| db_error(&file.path, e))?;
        file.resilient = Some(state_dir);
        *db = file;
        Ok(true)
    }

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
    ) -> Result<(Vec<StoredEntry>, u64), StoreError> {
        let (offset, limit) = (
            i64::try_from(offset).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        let total = self.count(kind)?;
        let page = self.with(|conn, path| {
            let raws = (|| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM list_entries WHERE kind = ?1
                     ORDER BY created_at, rowid LIMIT ?2 OFFSET ?3"
                ))?;
                let rows = stmt.query_map(params![kind.as_str(), limit, offset], RawRow::read)?;
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

    /// How many times `ip` was blocked automatically before.
    pub fn offenses(&self, ip: &std::net::IpAddr) -> Result<u32, StoreError> {
        let n: Option<i64> = self.with(|conn, path| {
            conn.query_row(
                "SELECT blocks FROM offenders WHERE ip = ?1",
                params![ip.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db_error(path, e))
        })?;
        Ok(n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Counts one more automatic block of `ip`.
    pub fn record_offense(&self, ip: &std::net::IpAddr, now_unix: u64) -> Result<(), StoreError> {
        self.with(|conn, path| {
            conn.execute(
                "INSERT INTO offenders (ip, blocks, last_at) VALUES (?1, 1, ?2)
                 ON CONFLICT (ip) DO UPDATE SET blocks = blocks + 1, last_at = excluded.last_at",
                params![ip.to_string(), i64::try_from(now_unix).unwrap_or(i64::MAX)],
            )
            .map_err(|e| db_error(path, e))?;
            Ok(())
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
}

fn degrade_log(e: &StoreError) {
    tracing::error!(
        error = %e,
        "state store unusable: running on an in-memory store; kernel blocks stay enforced, \
         new decisions are kept in memory and written to the file once it opens again \
         (repair it, restore it, or move it away)"
    );
}

/// `PRAGMA quick_check` (the structural checks of integrity_check, without matching every
/// index against its table): a file that opens but is damaged further in must not become the
/// store again.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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

/// Copies every row of the in-memory database `mem` into the database file at `path`, which
/// has the same schema (both ran the same migrations). Offence counts add up; list entries
/// decided in memory win over the file's; history rows are kept where both have them.
fn merge_into(mem: &Connection, path: &Path) -> rusqlite::Result<()> {
    mem.busy_timeout(BUSY_TIMEOUT)?;
    mem.execute(
        "ATTACH DATABASE ?1 AS disk",
        params![path.to_string_lossy()],
    )?;
    let merged = mem.execute_batch(
        "PRAGMA disk.synchronous = FULL;
         BEGIN IMMEDIATE;
         INSERT OR REPLACE INTO disk.list_entries SELECT * FROM main.list_entries;
         INSERT INTO disk.offenders SELECT * FROM main.offenders WHERE true
             ON CONFLICT (ip) DO UPDATE SET blocks = blocks + excluded.blocks,
                                            last_at = max(last_at, excluded.last_at);
         INSERT OR IGNORE INTO disk.alerts SELECT * FROM main.alerts;
         INSERT OR IGNORE INTO disk.incidents SELECT * FROM main.incidents;
         COMMIT;",
    );
    if merged.is_err() {
        let _ = mem.execute_batch("ROLLBACK");
    }
    let detached = mem.execute_batch("DETACH DATABASE disk");
    merged.and(detached)
}

/// Opens the database file: the state dir is checked and created first, then SQLite itself
/// opens (and if need be creates) the file. Nothing here opens the file outside SQLite, see
/// [`Store`].
fn open_db(state_dir: &Path) -> Result<Db, StoreError> {
    prepare_state_dir(state_dir)?;
    let path = state_dir.join(DB_FILE_NAME);
    let created = prepare_db_file(&path)?;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    if created {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    // Without CREATE when the file was there a moment ago: if it vanished in between, failing
    // is more honest than silently starting an empty list.
    let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| db_error(&path, e))?;
    if created {
        // chmod by path (no descriptor of the file to close) before the first row is written;
        // the state dir is 0700, so nobody else could reach the file in between anyway.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("database", &path, e))?;
        // Without this a power loss right after the first block could lose the file's
        // directory entry, and with it the committed block.
        sync_dir(state_dir);
    }
    // Switching a fresh file to WAL and migrating it take locks that SQLite refuses at once,
    // without waiting in the busy handler, when another process is doing the same (an agent
    // and a CLI starting together): retry those refusals for as long as a busy wait would.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let r = configure(&conn)
            .map_err(|e| db_error(&path, e))
            .and_then(|()| migrate(&mut conn, &path));
        match r {
            Err(StoreError::Busy { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => {
                return r.map(|()| Db {
                    conn,
                    path,
                    resilient: None,
                    degraded: None,
                });
            }
        }
    }
}

fn to_sql_int(net: IpNet, field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidEntry {
        net,
        reason: format!(
            "{field} {v} is beyond what SQLite can store (max {})",
            i64::MAX
        ),
    })
}

// ON CONFLICT DO UPDATE rather than INSERT OR REPLACE: REPLACE deletes the old row first, which
// would fire ON DELETE actions of any future table referencing this one.
const UPSERT: &str =
    "INSERT INTO list_entries (kind, net, expires_at, reason, source, created_at, tag)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (kind, net) DO UPDATE SET
         expires_at = excluded.expires_at,
         reason     = excluded.reason,
         source     = excluded.source,
         created_at = excluded.created_at,
         tag        = excluded.tag";

/// Why one upsert failed, before the database path is known to the caller's error.
enum UpsertError {
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

fn upsert_with(
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
    stmt.execute(params![
        e.kind.as_str(),
        net.to_string(),
        expires_at,
        e.reason,
        e.source.as_str(),
        created_at,
        e.tag,
    ])
    .map_err(UpsertError::Db)?;
    Ok(())
}

/// A row as SQLite returns it; decoding is separate so that a bad value becomes a
/// [`StoreError::Corrupt`] naming the row rather than an opaque conversion error.
struct RawRow {
    kind: String,
    net: String,
    expires_at: Option<i64>,
    reason: String,
    source: String,
    created_at: i64,
    tag: String,
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
        Ok(StoredEntry {
            kind,
            net,
            expires_at,
            reason: self.reason,
            source,
            created_at,
            tag: self.tag,
        })
    }
}

fn decode_sorted(path: &Path, raws: Vec<RawRow>) -> Result<Vec<StoredEntry>, StoreError> {
    let mut entries = raws
        .into_iter()
        .map(|r| r.decode(path))
        .collect::<Result<Vec<_>, _>>()?;
    // Sorted here rather than in SQL so networks order numerically (9.0.0.0/8 before
    // 10.0.0.0/8) and kinds follow the enum (block before allow).
    entries.sort_by_key(|e| (e.kind, e.created_at, e.net));
    Ok(entries)
}

/// Creates the state dir and verifies it is writable before SQLite sees it: SQLite reports a
/// missing or read-only directory as "unable to open database file", which does not tell the
/// operator what to fix.
fn prepare_state_dir(dir: &Path) -> Result<(), StoreError> {
    let what = "state dir";
    if dir.as_os_str().is_empty() {
        return Err(io_error(
            what,
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, "empty path"),
        ));
    }
    // Remember which ancestors we are about to create so their entries can be made durable.
    let created: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(
            |p| matches!(fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound),
        )
        .collect();

    if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        // mkdir on an existing regular file says EEXIST, which reads as if nothing were wrong.
        let e = if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::from_raw_os_error(libc::ENOTDIR)
        } else {
            e
        };
        return Err(io_error(what, dir, e));
    }
    for p in &created {
        sync_dir(parent_or_dot(p));
    }

    // W_OK because SQLite must create the -wal and -shm files next to the database; X_OK to
    // reach them.
    access(what, dir, libc::W_OK | libc::X_OK)?;
    match crate::files::shared_dir_mode(dir) {
        None => Ok(()),
        Some(mode) => Err(StoreError::SharedDir {
            path: dir.to_path_buf(),
            mode,
        }),
    }
}

/// `faccessat(2)` with the effective uid (AT_EACCESS), which is what open(2) will use.
fn access(what: &'static str, path: &Path, mode: libc::c_int) -> Result<(), StoreError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error(
            what,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) };
    if rc != 0 {
        return Err(io_error(what, path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Checks the database file before SQLite opens it, without opening it (see [`Store`]), so
/// that permission problems are reported with the real errno rather than SQLite's "unable to
/// open database file". Returns whether the file has yet to be created.
fn prepare_db_file(path: &Path) -> Result<bool, StoreError> {
    let what = "database";
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io_error(what, path, e)),
    };
    if meta.file_type().is_symlink() {
        // SQLite would follow it (and is told not to); a planted link must not redirect the
        // lists into another file.
        return Err(io_error(
            what,
            path,
            io::Error::from_raw_os_error(libc::ELOOP),
        ));
    }
    if meta.is_dir() {
        return Err(io_error(
            what,
            path,
            io::Error::from_raw_os_error(libc::EISDIR),
        ));
    }
    access(what, path, libc::R_OK | libc::W_OK)?;
    Ok(false)
}

fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Best effort: some filesystems refuse fsync on directories, and there is nothing better to
/// fall back to, so a failure here must not stop the store from opening.
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
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
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
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
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
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

#[cfg(test)]
mod tests {
    use std::{
        os::unix::fs::PermissionsExt,
        sync::{
            Arc, Barrier,
            atomic::{AtomicU32, Ordering},
        },
    };

    use super::*;

    /// Scratch directory removed on drop. Hand-rolled so the crate needs no extra dev-dependency.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "astra-store-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn entry(kind: ListKind, n: &str, expires_at: Option<u64>, created_at: u64) -> StoredEntry {
        StoredEntry {
            kind,
            net: net(n),
            expires_at,
            reason: format!("reason for {n}"),
            source: EntrySource::Manual,
            created_at,
            tag: String::new(),
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn round_trip_every_field() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.path(), dir.path().join("astra.db"));

        let entries = [
            StoredEntry {
                kind: ListKind::Block,
                net: net("192.0.2.0/24"),
                expires_at: Some(1_900_000_000),
                reason: "scan from 192.0.2.0/24 — 'quoted', \"double\", ünïcode".to_owned(),
                source: EntrySource::Auto,
                created_at: 1_700_000_000,
                tag: String::new(),
            },
            StoredEntry {
                kind: ListKind::Block,
                net: net("2001:db8::/32"),
                expires_at: None,
                reason: String::new(),
                source: EntrySource::Feed,
                created_at: 1_700_000_001,
                tag: "spamhaus-drop".to_owned(),
            },
            StoredEntry {
                kind: ListKind::Allow,
                net: net("2001:db8::1/128"),
                expires_at: Some(0),
                reason: "monitoring".to_owned(),
                source: EntrySource::Manual,
                created_at: 0,
                tag: String::new(),
            },
            StoredEntry {
                kind: ListKind::Allow,
                net: net("0.0.0.0/0"),
                expires_at: Some(i64::MAX as u64),
                reason: "everything".to_owned(),
                source: EntrySource::Manual,
                created_at: i64::MAX as u64,
                tag: "ünïcode tag".to_owned(),
            },
        ];
        for e in &entries {
            store.upsert(e).unwrap();
        }
        for e in &entries {
            assert_eq!(store.get(e.kind, &e.net).unwrap().as_ref(), Some(e));
        }
        assert_eq!(
            store.get(ListKind::Allow, &net("192.0.2.0/24")).unwrap(),
            None
        );
        assert_eq!(store.list(None).unwrap(), entries.to_vec());
        assert_eq!(
            store.list(Some(ListKind::Block)).unwrap(),
            entries[..2].to_vec()
        );
        assert_eq!(
            store.list(Some(ListKind::Allow)).unwrap(),
            entries[2..].to_vec()
        );
        assert_eq!(store.count(ListKind::Block).unwrap(), 2);
        assert_eq!(store.count(ListKind::Allow).unwrap(), 2);
    }

    #[test]
    fn list_orders_by_kind_then_created_then_net_numerically() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let a = entry(ListKind::Allow, "1.1.1.1/32", None, 1);
        let b = entry(ListKind::Block, "10.0.0.0/8", None, 5);
        let c = entry(ListKind::Block, "9.0.0.0/8", None, 5);
        let d = entry(ListKind::Block, "2001:db8::/32", None, 5);
        let e = entry(ListKind::Block, "8.8.8.8/32", None, 7);
        for x in [&a, &b, &c, &d, &e] {
            store.upsert(x).unwrap();
        }
        assert_eq!(store.list(None).unwrap(), vec![c, b, d, e, a]);
    }

    #[test]
    fn upsert_replaces_every_field() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let first = entry(ListKind::Block, "198.51.100.7/32", Some(100), 10);
        store.upsert(&first).unwrap();
        let second = StoredEntry {
            expires_at: None,
            reason: "promoted to permanent".to_owned(),
            source: EntrySource::Feed,
            created_at: 20,
            tag: "firehol".to_owned(),
            ..first.clone()
        };
        store.upsert(&second).unwrap();
        assert_eq!(store.count(ListKind::Block).unwrap(), 1);
        assert_eq!(
            store.get(ListKind::Block, &second.net).unwrap(),
            Some(second.clone())
        );

        // And back from permanent to expiring.
        store.upsert(&first).unwrap();
        assert_eq!(
            store.get(ListKind::Block, &first.net).unwrap(),
            Some(first.clone())
        );

        // The same network on the other list is a separate row.
        let allow = StoredEntry {
            kind: ListKind::Allow,
            ..first.clone()
        };
        store.upsert(&allow).unwrap();
        assert_eq!(store.count(ListKind::Block).unwrap(), 1);
        assert_eq!(store.count(ListKind::Allow).unwrap(), 1);
    }

    #[test]
    fn networks_are_keyed_canonically() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        // Constructed directly, bypassing parse_net's host-bit check.
        let sloppy = entry(ListKind::Block, "10.1.2.3/8", None, 1);
        store.upsert(&sloppy).unwrap();
        let got = store
            .get(ListKind::Block, &net("10.0.0.0/8"))
            .unwrap()
            .unwrap();
        assert_eq!(got.net, net("10.0.0.0/8"));
        assert!(
            store
                .get(ListKind::Block, &net("10.9.9.9/8"))
                .unwrap()
                .is_some()
        );

        let mapped = entry(ListKind::Block, "::ffff:192.0.2.9/128", None, 1);
        store.upsert(&mapped).unwrap();
        let got = store
            .get(ListKind::Block, &net("192.0.2.9/32"))
            .unwrap()
            .unwrap();
        assert_eq!(got.net, net("192.0.2.9/32"));
        assert!(
            store
                .remove(ListKind::Block, &net("::ffff:192.0.2.9/128"))
                .unwrap()
        );
        assert_eq!(store.count(ListKind::Block).unwrap(), 1);
    }

    #[test]
    fn remove_reports_whether_a_row_existed() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let e = entry(ListKind::Block, "2001:db8:1::/48", None, 1);
        assert!(!store.remove(ListKind::Block, &e.net).unwrap());
        store.upsert(&e).unwrap();
        assert!(!store.remove(ListKind::Allow, &e.net).unwrap());
        assert!(store.remove(ListKind::Block, &e.net).unwrap());
        assert!(!store.remove(ListKind::Block, &e.net).unwrap());
        assert_eq!(store.get(ListKind::Block, &e.net).unwrap(), None);
    }

    #[test]
    fn offenses_count_up_per_address_and_persist() {
        let dir = TempDir::new();
        let a: std::net::IpAddr = "198.18.0.9".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8::9".parse().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.offenses(&a).unwrap(), 0);
            store.record_offense(&a, 10).unwrap();
            store.record_offense(&a, 20).unwrap();
            store.record_offense(&b, 20).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.offenses(&a).unwrap(), 2);
        assert_eq!(store.offenses(&b).unwrap(), 1);
    }

    /// The list table as versions 1 and 2 created it, written out rather than taken from
    /// [`MIGRATIONS`], so the test keeps checking what databases in the field hold.
    const V1_LIST_TABLE: &str = "CREATE TABLE list_entries (
             kind       TEXT    NOT NULL,
             net        TEXT    NOT NULL,
             expires_at INTEGER,
             reason     TEXT    NOT NULL,
             source     TEXT    NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (kind, net)
         ) STRICT;
         CREATE INDEX list_entries_expiry ON list_entries (expires_at)
             WHERE expires_at IS NOT NULL;
         INSERT INTO list_entries VALUES ('block', '192.0.2.1/32', NULL, 'old', 'manual', 1);
         INSERT INTO list_entries VALUES ('allow', '2001:db8::/32', 99, '', 'auto', 2);";

    /// Writes an Astra database of schema `version` (1 or 2) by hand.
    fn legacy_db(dir: &Path, version: i64) {
        let conn = Connection::open(dir.join(DB_FILE_NAME)).unwrap();
        conn.execute_batch(V1_LIST_TABLE).unwrap();
        if version >= 2 {
            conn.execute_batch(
                "CREATE TABLE offenders (
                     ip      TEXT    NOT NULL PRIMARY KEY,
                     blocks  INTEGER NOT NULL,
                     last_at INTEGER NOT NULL
                 ) STRICT;
                 INSERT INTO offenders VALUES ('192.0.2.1', 3, 1);",
            )
            .unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }

    fn legacy_rows() -> Vec<StoredEntry> {
        vec![
            StoredEntry {
                reason: "old".to_owned(),
                ..entry(ListKind::Block, "192.0.2.1/32", None, 1)
            },
            StoredEntry {
                reason: String::new(),
                source: EntrySource::Auto,
                ..entry(ListKind::Allow, "2001:db8::/32", Some(99), 2)
            },
        ]
    }

    #[test]
    fn a_version_1_database_is_migrated_in_place() {
        let dir = TempDir::new();
        legacy_db(dir.path(), 1);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list(None).unwrap(), legacy_rows());
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        store.record_offense(&ip, 5).unwrap();
        assert_eq!(store.offenses(&ip).unwrap(), 1);
    }

    #[test]
    fn a_version_2_database_gains_tags_and_keeps_its_rows() {
        let dir = TempDir::new();
        legacy_db(dir.path(), 2);
        let store = Store::open(dir.path()).unwrap();
        let version: i64 = store
            .lock()
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // Old rows read back with no tag, and belong to no feed.
        assert_eq!(store.list(None).unwrap(), legacy_rows());
        assert_eq!(store.list_tag("").unwrap(), vec![]);
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(store.offenses(&ip).unwrap(), 3);
        // And new rows carry one.
        let fed = entry(ListKind::Block, "198.51.100.0/24", None, 3).with_tag("drop");
        store.upsert(&fed).unwrap();
        assert_eq!(store.list_tag("drop").unwrap(), vec![fed]);
        // Opening again is a no-op, not a second ALTER TABLE.
        drop(store);
        assert_eq!(
            Store::open(dir.path()).unwrap().list(None).unwrap().len(),
            3
        );
    }

    #[test]
    fn upsert_many_writes_all_in_one_transaction_or_nothing() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let mut batch: Vec<_> = (0..300u32)
            .map(|i| {
                entry(
                    ListKind::Block,
                    &format!("10.0.{}.{}/32", i / 256, i % 256),
                    None,
                    1,
                )
                .with_tag("a")
            })
            .collect();
        store.upsert_many(&batch).unwrap();
        assert_eq!(store.count(ListKind::Block).unwrap(), 300);
        // An unstorable entry at the end rolls back the rows before it.
        batch[0].reason = "changed".to_owned();
        batch.push(entry(ListKind::Block, "10.9.9.9/32", Some(u64::MAX), 1));
        let err = store.upsert_many(&batch).unwrap_err();
        assert!(matches!(err, StoreError::InvalidEntry { .. }), "{err:?}");
        assert_eq!(store.count(ListKind::Block).unwrap(), 300);
        assert_eq!(
            store
                .get(ListKind::Block, &batch[0].net)
                .unwrap()
                .unwrap()
                .reason,
            "reason for 10.0.0.0/32"
        );
        let keys: Vec<_> = batch[..100].iter().map(|e| (e.kind, e.net)).collect();
        assert_eq!(store.remove_many(&keys).unwrap(), 100);
        assert_eq!(store.remove_many(&keys).unwrap(), 0);
        assert_eq!(store.list_tag("a").unwrap().len(), 200);
        assert_eq!(store.list_tag("b").unwrap(), vec![]);
    }

    #[test]
    fn upsert_many_of_100k_entries() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..100_000u32)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                StoredEntry::new(
                    ListKind::Block,
                    net(&format!("10.{a}.{b}.{c}/32")),
                    Duration::ZERO,
                    "feed",
                    EntrySource::Feed,
                    1,
                )
                .with_tag("big")
            })
            .collect();
        let t = std::time::Instant::now();
        store.upsert_many(&batch).unwrap();
        let first = t.elapsed();
        let t = std::time::Instant::now();
        store.upsert_many(&batch).unwrap();
        let again = t.elapsed();
        // Printed, never asserted (run with --nocapture to see it).
        println!("upsert_many: 100k new entries in {first:.2?}, 100k updates in {again:.2?}");
        assert_eq!(store.count(ListKind::Block).unwrap(), 100_000);
    }

    #[test]
    fn take_expired_deletes_only_expired_rows() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let now = 1_000;
        let past = entry(ListKind::Block, "192.0.2.1/32", Some(now - 1), 1);
        let exactly_now = entry(ListKind::Allow, "2001:db8::2/128", Some(now), 2);
        let future = entry(ListKind::Block, "192.0.2.3/32", Some(now + 1), 3);
        let permanent = entry(ListKind::Block, "192.0.2.4/32", None, 4);
        for e in [&past, &exactly_now, &future, &permanent] {
            store.upsert(e).unwrap();
        }
        assert_eq!(
            store.take_expired(now).unwrap(),
            vec![past.clone(), exactly_now.clone()]
        );
        assert_eq!(
            store.list(None).unwrap(),
            vec![future.clone(), permanent.clone()]
        );
        assert_eq!(store.take_expired(now).unwrap(), vec![]);
        // Even at the end of time, permanent entries stay.
        assert_eq!(store.take_expired(u64::MAX).unwrap(), vec![future]);
        assert_eq!(store.list(None).unwrap(), vec![permanent]);
    }

    #[test]
    fn data_survives_reopen() {
        let dir = TempDir::new();
        let e = entry(ListKind::Block, "203.0.113.0/24", Some(5_000_000_000), 42);
        let p = entry(ListKind::Allow, "::/0", None, 43);
        {
            let store = Store::open(dir.path()).unwrap();
            store.upsert(&e).unwrap();
            store.upsert(&p).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list(None).unwrap(), vec![e, p]);
    }

    #[test]
    fn connection_is_configured_for_durability_and_concurrency() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let q = |name: &str| -> String {
            store
                .lock()
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(q("journal_mode"), r#"Text("wal")"#);
        assert_eq!(q("synchronous"), "Integer(2)"); // FULL
        assert_eq!(q("foreign_keys"), "Integer(1)");
        assert_eq!(q("busy_timeout"), "Integer(5000)");
        assert_eq!(q("user_version"), format!("Integer({SCHEMA_VERSION})"));
        assert_eq!(q("application_id"), format!("Integer({APPLICATION_ID})"));
    }

    #[test]
    fn state_dir_is_created_private_and_nested() {
        let dir = TempDir::new();
        let state = dir.path().join("a/b/state");
        let store = Store::open(&state).unwrap();
        assert!(store.path().is_file());
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn two_handles_interleave_writes() {
        let dir = TempDir::new();
        let cli = Store::open(dir.path()).unwrap();
        let agent = Store::open(dir.path()).unwrap();
        let a = entry(ListKind::Block, "192.0.2.10/32", Some(10), 1);
        let b = entry(ListKind::Block, "192.0.2.11/32", None, 2);
        let c = entry(ListKind::Allow, "2001:db8::11/128", None, 3);

        cli.upsert(&a).unwrap();
        agent.upsert(&b).unwrap();
        assert_eq!(agent.get(ListKind::Block, &a.net).unwrap(), Some(a.clone()));
        assert_eq!(cli.get(ListKind::Block, &b.net).unwrap(), Some(b.clone()));
        cli.upsert(&c).unwrap();
        assert_eq!(agent.take_expired(10).unwrap(), vec![a.clone()]);
        assert!(!cli.remove(ListKind::Block, &a.net).unwrap());
        assert!(cli.remove(ListKind::Block, &b.net).unwrap());
        assert_eq!(agent.list(None).unwrap(), vec![c]);
    }

    #[test]
    fn concurrent_writers_from_separate_connections_all_land() {
        let dir = TempDir::new();
        const PER_WRITER: u32 = 100;
        let barrier = Arc::new(Barrier::new(3));
        let writers: Vec<_> = (0..3u32)
            .map(|w| {
                let state = dir.path().to_path_buf();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    // Open inside the thread and after the barrier so the three also race on
                    // creating and migrating the fresh database.
                    barrier.wait();
                    let store = Store::open(&state).unwrap();
                    for i in 0..PER_WRITER {
                        let n = format!("10.{w}.{}.{}/32", i / 256, i % 256);
                        store
                            .upsert(&entry(ListKind::Block, &n, Some(u64::from(i)), 1))
                            .unwrap();
                        if i % 10 == 0 {
                            store.take_expired(0).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        // Each writer's i == 0 entry (expires_at 0) may have been swept by any sweeper.
        let n = store.count(ListKind::Block).unwrap();
        assert!(
            (3 * u64::from(PER_WRITER) - 3..=3 * u64::from(PER_WRITER)).contains(&n),
            "{n}"
        );
    }

    #[test]
    fn held_lock_yields_busy_error_after_timeout() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let other = Connection::open(store.path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let err = store
            .upsert(&entry(ListKind::Block, "192.0.2.1/32", None, 1))
            .unwrap_err();
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
        assert!(!err.is_user_error());
        let msg = err.to_string();
        assert!(msg.contains("is locked by another process"), "{msg}");
        other.execute_batch("ROLLBACK").unwrap();
        store
            .upsert(&entry(ListKind::Block, "192.0.2.1/32", None, 1))
            .unwrap();
    }

    #[test]
    fn state_dir_under_a_regular_file_is_a_user_error() {
        let dir = TempDir::new();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let state = file.join("sub");
        let err = Store::open(&state).unwrap_err();
        assert!(err.is_user_error(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "state dir {} cannot be written: Not a directory (os error 20)",
                state.display()
            )
        );
    }

    #[test]
    fn state_dir_that_is_a_regular_file_is_a_user_error() {
        let dir = TempDir::new();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(err.is_user_error(), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("state dir ") && msg.contains("Not a directory"),
            "{msg}"
        );
    }

    #[test]
    fn database_path_that_is_a_directory_is_a_user_error() {
        let dir = TempDir::new();
        fs::create_dir(dir.path().join(DB_FILE_NAME)).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.is_user_error(), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("database ") && msg.contains("Is a directory"),
            "{msg}"
        );
    }

    #[test]
    fn empty_state_dir_path_is_a_user_error() {
        let err = Store::open(Path::new("")).unwrap_err();
        assert!(err.is_user_error(), "{err:?}");
    }

    #[test]
    fn read_only_state_dir_is_a_user_error() {
        if is_root() {
            // Root bypasses permission bits; the regular-file cases above cover root.
            return;
        }
        let dir = TempDir::new();
        let state = dir.path().join("ro");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o500)).unwrap();
        let err = Store::open(&state).unwrap_err();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(err.is_user_error(), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("cannot be written: Permission denied"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_file_is_reported_as_corrupt() {
        for garbage in [
            b"this is not a database".repeat(200),
            b"short".to_vec(),
            vec![0xffu8; 4096],
        ] {
            let dir = TempDir::new();
            let path = dir.path().join(DB_FILE_NAME);
            fs::write(&path, &garbage).unwrap();
            let err = Store::open(dir.path()).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
            assert!(!err.is_user_error());
            assert_eq!(
                err.to_string(),
                format!(
                    "database {} is corrupt or not an Astra database: file is not a database",
                    path.display()
                )
            );
            // Refusing must not have modified the file.
            assert_eq!(fs::read(&path).unwrap(), garbage);
        }
    }

    #[test]
    fn foreign_sqlite_database_is_refused() {
        let dir = TempDir::new();
        let path = dir.path().join(DB_FILE_NAME);
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE songs (title TEXT);")
            .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("tables that astra did not create"),
            "{err}"
        );

        let dir = TempDir::new();
        let path = dir.path().join(DB_FILE_NAME);
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA application_id = 1234; PRAGMA user_version = 1;")
            .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("another program (application_id 0x4d2)"),
            "{err}"
        );

        let dir = TempDir::new();
        let path = dir.path().join(DB_FILE_NAME);
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 3;")
            .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn newer_schema_version_is_refused() {
        let dir = TempDir::new();
        let path = {
            let store = Store::open(dir.path()).unwrap();
            store
                .upsert(&entry(ListKind::Block, "192.0.2.1/32", None, 1))
                .unwrap();
            store.path().to_path_buf()
        };
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 7;")
            .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TooNew {
                    found: 7,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_user_error());
        assert_eq!(
            err.to_string(),
            format!(
                "database {} has schema version 7, newer than this astra ({SCHEMA_VERSION}): upgrade astra",
                path.display()
            )
        );
    }

    #[test]
    fn undecodable_rows_are_reported_as_corrupt() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        store
            .lock()
            .conn
            .execute_batch(
                "INSERT INTO list_entries VALUES ('block', 'not-an-ip', NULL, '', 'manual', 1, '');
                 INSERT INTO list_entries VALUES ('block', '192.0.2.1/32', 5, '', 'alien', 1, '');",
            )
            .unwrap();
        let err = store.list(None).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("row (block, not-an-ip)"), "{msg}");
        // A failed sweep keeps the undecodable row instead of deleting it unseen.
        let err = store.take_expired(10).unwrap_err();
        assert!(
            err.to_string().contains("unknown entry source 'alien'"),
            "{err}"
        );
        assert_eq!(store.count(ListKind::Block).unwrap(), 2);
    }

    #[test]
    fn out_of_range_times_are_refused_not_wrapped() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        let e = entry(ListKind::Block, "192.0.2.1/32", Some(u64::MAX), 1);
        let err = store.upsert(&e).unwrap_err();
        assert!(matches!(err, StoreError::InvalidEntry { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot store 192.0.2.1/32: expires_at"),
            "{err}"
        );
        assert_eq!(store.count(ListKind::Block).unwrap(), 0);
    }

    #[test]
    fn remaining_and_is_expired() {
        let e = entry(ListKind::Block, "192.0.2.1/32", Some(100), 0);
        assert_eq!(e.remaining(40), Some(Duration::from_secs(60)));
        assert_eq!(e.remaining(100), Some(Duration::ZERO));
        assert_eq!(e.remaining(500), Some(Duration::ZERO));
        assert!(!e.is_expired(99));
        assert!(e.is_expired(100));
        assert!(e.is_expired(101));
        let p = entry(ListKind::Block, "192.0.2.1/32", None, 0);
        assert_eq!(p.remaining(u64::MAX), None);
        assert!(!p.is_expired(u64::MAX));
    }

    #[test]
    fn new_entry_from_ttl() {
        let n = net("::ffff:192.0.2.1/128");
        let e = StoredEntry::new(
            ListKind::Block,
            n,
            Duration::from_secs(600),
            "x",
            EntrySource::Auto,
            1000,
        );
        assert_eq!(e.expires_at, Some(1600));
        assert_eq!(e.created_at, 1000);
        assert_eq!(e.net, net("192.0.2.1/32"));
        let e = StoredEntry::new(
            ListKind::Block,
            n,
            Duration::ZERO,
            "x",
            EntrySource::Auto,
            1000,
        );
        assert_eq!(e.expires_at, None);
        let e = StoredEntry::new(
            ListKind::Block,
            n,
            Duration::from_millis(1500),
            "x",
            EntrySource::Auto,
            1000,
        );
        assert_eq!(e.expires_at, Some(1002));
        let e = StoredEntry::new(
            ListKind::Block,
            n,
            Duration::from_secs(10),
            "x",
            EntrySource::Auto,
            u64::MAX - 1,
        );
        assert_eq!(e.expires_at, Some(u64::MAX));
    }

    #[test]
    fn enums_display_parse_and_deserialize_lowercase() {
        use serde::de::{IntoDeserializer, value::Error as DeError};

        for k in [ListKind::Block, ListKind::Allow] {
            assert_eq!(k.to_string().parse::<ListKind>().unwrap(), k);
            let de: serde::de::value::StrDeserializer<'_, DeError> = k.as_str().into_deserializer();
            assert_eq!(ListKind::deserialize(de).unwrap(), k);
        }
        for s in [EntrySource::Manual, EntrySource::Auto, EntrySource::Feed] {
            assert_eq!(s.to_string().parse::<EntrySource>().unwrap(), s);
            let de: serde::de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
            assert_eq!(EntrySource::deserialize(de).unwrap(), s);
        }
        assert_eq!(ListKind::Block.to_string(), "block");
        assert_eq!(EntrySource::Feed.to_string(), "feed");
        assert_eq!(
            "Block".parse::<ListKind>().unwrap_err().to_string(),
            "unknown list kind 'Block': expected block or allow"
        );
        assert_eq!(
            "cron".parse::<EntrySource>().unwrap_err().to_string(),
            "unknown entry source 'cron': expected manual, auto or feed"
        );
    }

    /// Whether another process would see a POSIX lock on SQLite's lock bytes of `path`. Asked
    /// from a forked child, because a process never sees its own locks, and the parent must
    /// not open the file itself (closing that descriptor would drop the locks under test).
    fn locked_for_others(path: &Path) -> bool {
        // SQLite's lock bytes: PENDING at 1 GiB, then RESERVED and the 510 SHARED bytes.
        const PENDING_BYTE: libc::off_t = 0x4000_0000;
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: the child only calls async-signal-safe functions (open, fcntl, _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: a valid NUL-terminated path and a zeroed flock (plain integers); the
            // child exits without returning into the test harness.
            unsafe {
                let fd = libc::open(c_path.as_ptr(), libc::O_RDWR);
                let mut fl: libc::flock = std::mem::zeroed();
                fl.l_type = libc::F_WRLCK as libc::c_short;
                fl.l_whence = libc::SEEK_SET as libc::c_short;
                fl.l_start = PENDING_BYTE;
                fl.l_len = 512;
                let rc = libc::fcntl(fd, libc::F_GETLK, &mut fl);
                libc::_exit(if rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short {
                    0
                } else {
                    1
                });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn opening_another_store_keeps_the_first_ones_locks() {
        let dir = TempDir::new();
        let agent = Store::open(dir.path()).unwrap();
        agent
            .upsert(&entry(ListKind::Block, "192.0.2.1/32", None, 1))
            .unwrap();
        // In WAL mode a connection holds a shared lock on the file for as long as it is open;
        // that lock is what stops another process from deleting the WAL under it.
        assert!(locked_for_others(&agent.path()));
        // What every API request and CLI helper in the agent process did: open and drop a
        // store of its own. It must not open the file outside SQLite, or the close drops the
        // agent's locks.
        drop(Store::open(dir.path()).unwrap());
        assert!(
            locked_for_others(&agent.path()),
            "opening a second store released the first one's locks"
        );
        assert!(Store::open(dir.path()).unwrap().path().exists());
    }

    /// Makes the schema of the database at `path` unreadable through a connection of its own,
    /// as damage on disk would, and tells every other connection the schema changed.
    fn damage_schema(path: &Path) {
        let evil = Connection::open(path).unwrap();
        let v: i64 = evil
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap();
        evil.execute_batch(&format!(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = 'CREATE TABLE list_entries (' WHERE name = 'list_entries';
             PRAGMA schema_version = {};",
            v + 1
        ))
        .unwrap();
    }

    #[test]
    fn a_resilient_store_falls_back_to_memory_and_recovers_with_what_it_decided() {
        let dir = TempDir::new();
        let store = Store::open_resilient(dir.path()).unwrap();
        let before = entry(ListKind::Block, "192.0.2.1/32", None, 1);
        store.upsert(&before).unwrap();
        assert_eq!(store.degraded(), None);

        damage_schema(&store.path());
        // The plain store the CLI uses fails on the damaged file...
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // ...while the agent's goes on in memory, says why, and keeps what it decides.
        let during = entry(ListKind::Block, "192.0.2.2/32", None, 2);
        store.upsert(&during).unwrap();
        store.record_offense(&during.net.addr(), 2).unwrap();
        let why = store.degraded().expect("degraded");
        assert!(why.contains("corrupt"), "{why}");
        assert_eq!(store.path(), Path::new(":memory:"));
        assert_eq!(store.list(None).unwrap(), vec![during.clone()]);
        // Still damaged: no recovery.
        assert!(store.try_recover().is_err());
        assert!(store.degraded().is_some());

        // The operator moves the damaged file away: the store comes back to a new file, with
        // what was decided in memory meanwhile.
        let db = dir.path().join(DB_FILE_NAME);
        fs::rename(&db, dir.path().join("astra.db.bad")).unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(dir.path().join(format!("{DB_FILE_NAME}{suffix}")));
        }
        assert!(store.try_recover().unwrap());
        assert_eq!(store.degraded(), None);
        assert_eq!(store.path(), db);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.list(None).unwrap(), vec![during.clone()]);
        assert_eq!(reopened.offenses(&during.net.addr()).unwrap(), 1);
        // And later writes go to the file again.
        store.upsert(&before).unwrap();
        assert_eq!(reopened.count(ListKind::Block).unwrap(), 2);
        assert!(!store.try_recover().unwrap());
    }

    #[test]
    fn a_plain_store_reports_damage_instead_of_falling_back() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        store
            .upsert(&entry(ListKind::Block, "192.0.2.1/32", None, 1))
            .unwrap();
        damage_schema(&store.path());
        let err = store.list(None).unwrap_err();
        assert!(err.is_unusable(), "{err}");
        assert_eq!(store.degraded(), None);
        assert!(!store.try_recover().unwrap());
    }

    #[test]
    fn a_symlink_at_the_database_path_is_refused() {
        let dir = TempDir::new();
        let elsewhere = dir.path().join("elsewhere.db");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(DB_FILE_NAME)).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.is_user_error(), "{err}");
        assert!(err.to_string().contains("symbolic links"), "{err}");
        assert!(!elsewhere.exists());
    }
}
