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
//!
//! This file holds the handle ([`Store`]), its one connection and the fall-back to memory;
//! `file.rs` opens the database safely, `schema.rs` migrates and checks it, `lists.rs` and
//! `offenders.rs` are the tables' operations, `error.rs` the error type.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use ipnet::IpNet;
use rusqlite::Connection;
use serde::{Deserialize, Serialize, Serializer};

use crate::addr;

mod error;
mod file;
mod lists;
mod offenders;
mod outbox;
mod schema;

pub use error::StoreError;
pub(crate) use error::db_error;
pub use outbox::OutboxItem;
pub use schema::SCHEMA_VERSION;

use self::{error::*, file::*, schema::*};

/// File name of the database inside the state directory.
pub const DB_FILE_NAME: &str = "astra.db";

/// How long a connection waits for another process's write lock before giving up. Writes are
/// single short statements, so anything longer than this means the other side is stuck.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which list an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Block,
    Allow,
    /// Hosts whose traffic is dropped both ways (exact addresses only).
    Quarantine,
    /// Sources held to a rate (addresses or prefixes; the entry carries its [`Rate`]).
    Throttle,
    /// Targets protected from floods (exact addresses; the entry carries its [`Protection`]
    /// and, as its [`Rate`], the budget of new SYNs a second from strangers).
    Protect,
}

impl ListKind {
    pub const ALL: [ListKind; 5] = [
        ListKind::Block,
        ListKind::Allow,
        ListKind::Quarantine,
        ListKind::Throttle,
        ListKind::Protect,
    ];

    /// What an entry for every address (`0.0.0.0/0`) of this kind would do.
    pub const fn everything_warning(self) -> &'static str {
        match self {
            ListKind::Block => "blocking it cuts this host off from every peer",
            ListKind::Allow => "allowing it turns every block off",
            ListKind::Quarantine => "quarantining it cuts every host off",
            ListKind::Throttle => "throttling it holds every peer to one shared rate",
            ListKind::Protect => "protecting it holds every new connection to one budget",
        }
    }

    /// One of the optional tiers the dataplane skips while they are empty (`ASTRA_TIERS`).
    pub const fn is_tier(self) -> bool {
        matches!(
            self,
            ListKind::Quarantine | ListKind::Throttle | ListKind::Protect
        )
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ListKind::Block => "block",
            ListKind::Allow => "allow",
            ListKind::Quarantine => "quarantine",
            ListKind::Throttle => "throttle",
            ListKind::Protect => "protect",
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
            "quarantine" => Ok(ListKind::Quarantine),
            "throttle" => Ok(ListKind::Throttle),
            "protect" => Ok(ListKind::Protect),
            _ => Err(ParseEnumError {
                what: "list kind",
                value: s.to_owned(),
                expected: "block, allow, quarantine, throttle or protect",
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
    /// A decision of a CrowdSec Local API, kept in force by the agent's bouncer.
    Crowdsec,
}

impl EntrySource {
    pub const fn as_str(self) -> &'static str {
        match self {
            EntrySource::Manual => "manual",
            EntrySource::Auto => "auto",
            EntrySource::Feed => "feed",
            EntrySource::Crowdsec => "crowdsec",
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
            "crowdsec" => Ok(EntrySource::Crowdsec),
            _ => Err(ParseEnumError {
                what: "entry source",
                value: s.to_owned(),
                expected: "manual, auto, feed or crowdsec",
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

/// A throttle entry's limits: packets per second, bits per second or both, and the burst
/// allowed above them. The kernel form is `astra_common::ThrottleEntry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Packets per second; 0 = no packet limit.
    pub pps: u64,
    /// Bits per second; 0 = no bandwidth limit.
    pub bps: u64,
    /// How far above the rate a burst may go, as milliseconds of traffic at the rate.
    pub burst_ms: u64,
}

impl Rate {
    /// The burst when none is given: a tenth of a second at the rate.
    pub const DEFAULT_BURST_MS: u64 = 100;

    /// A rate from its limits as typed (`--rate 100pps --rate 10mbit`): one or two, at most
    /// one of each kind.
    pub fn from_limits(
        limits: &[addr::RateLimit],
        burst: Option<Duration>,
    ) -> Result<Rate, addr::AddrError> {
        let mut r = Rate {
            pps: 0,
            bps: 0,
            burst_ms: burst.map_or(Self::DEFAULT_BURST_MS, |d| d.as_millis() as u64),
        };
        for l in limits {
            let (slot, what) = match l {
                addr::RateLimit::Pps(v) => (&mut r.pps, (*v, "packet")),
                addr::RateLimit::Bps(v) => (&mut r.bps, (*v, "bit")),
            };
            if *slot != 0 {
                return Err(addr::AddrError::Invalid(format!(
                    "two {} rates: give at most one in pps and one in bits",
                    what.1
                )));
            }
            *slot = what.0;
        }
        if r.pps == 0 && r.bps == 0 {
            return Err(addr::AddrError::Invalid(
                "a throttle needs a rate, e.g. 100pps or 10mbit".into(),
            ));
        }
        Ok(r)
    }
}

/// `100pps`, `10mbit` or both as `100pps+10mbit`, with the default burst.
impl FromStr for Rate {
    type Err = addr::AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let limits = s
            .split('+')
            .map(addr::parse_rate)
            .collect::<Result<Vec<_>, _>>()?;
        Rate::from_limits(&limits, None)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.pps > 0 {
            parts.push(format!("{}pps", self.pps));
        }
        if self.bps > 0 {
            parts.push(addr::format_bps(self.bps));
        }
        write!(f, "{} (burst {} ms)", parts.join(" + "), self.burst_ms)
    }
}

/// One half of a protection, to turn on alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Half {
    /// The budget of new SYNs from strangers.
    Syn,
    /// Dropping answers to requests the target never sent.
    Reflect,
}

/// What a protected target's entry turns on. Its budget of new SYNs a second from sources not
/// known to complete handshakes is the entry's [`Rate`] (`pps`, with its burst).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// Destination ports whose new SYNs meet the budget; empty = every port.
    pub ports: Vec<u16>,
    /// Hold new SYNs from strangers to the budget.
    pub syn: bool,
    /// Drop answers (from reflection ports, SYN-ACKs) to requests the target never sent.
    pub reflect: bool,
    /// With `syn`: answer strangers' new SYNs with SYN cookies from XDP instead of the budget,
    /// nftables' SYNPROXY completing the handshakes (see [`crate::lists::synproxy`]).
    #[serde(default)]
    pub cookies: bool,
}

impl Protection {
    /// Ports one entry can name (the kernel entry's array).
    pub const MAX_PORTS: usize = astra_common::PROTECT_PORTS;
    /// The budget when none is given: new SYNs a second from strangers.
    pub const DEFAULT_SYN_BUDGET: u64 = 1000;
    /// The largest budget one can give: past this, the budget limits nothing a veth or NIC
    /// delivers.
    pub const MAX_SYN_BUDGET: u64 = 100_000_000;

    /// Both halves on, or only `only`.
    pub fn new(ports: Vec<u16>, only: Option<Half>) -> Self {
        Self {
            ports,
            syn: only != Some(Half::Reflect),
            reflect: only != Some(Half::Syn),
            cookies: false,
        }
    }

    /// The same, answering strangers' SYNs with cookies when `cookies`.
    pub fn with_cookies(self, cookies: bool) -> Self {
        Self { cookies, ..self }
    }

    /// The kernel's `astra_common::protect` bits.
    pub fn flags(&self) -> u32 {
        (u32::from(self.syn) * astra_common::protect::SYN)
            | (u32::from(self.reflect) * astra_common::protect::REFLECT)
            | (u32::from(self.cookies) * astra_common::protect::COOKIE)
    }

    pub fn from_flags(flags: u32, ports: Vec<u16>) -> Self {
        Self {
            ports,
            syn: flags & astra_common::protect::SYN != 0,
            reflect: flags & astra_common::protect::REFLECT != 0,
            cookies: flags & astra_common::protect::COOKIE != 0,
        }
    }

    /// Why the entry cannot be kept, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        if !self.syn && !self.reflect {
            return Some(
                "a protection with neither the SYN budget nor the reflection filter".into(),
            );
        }
        if self.cookies && !self.syn {
            return Some("SYN cookies answer new SYNs: they need the SYN protection".into());
        }
        if self.ports.len() > Self::MAX_PORTS {
            return Some(format!("at most {} ports", Self::MAX_PORTS));
        }
        if self.ports.contains(&0) {
            return Some("port 0".into());
        }
        None
    }

    /// The ports as the store keeps them: `80,443`, empty for every port.
    pub fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.syn, self.cookies, self.reflect) {
            (true, false, true) => "SYN budget and reflection filter",
            (true, false, false) => "SYN budget",
            (true, true, true) => "SYN cookies and reflection filter",
            (true, true, false) => "SYN cookies",
            _ => "reflection filter",
        };
        if self.ports.is_empty() {
            write!(f, "{what}, every port")
        } else {
            write!(f, "{what}, ports {}", self.ports_text())
        }
    }
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
    /// A throttle entry's limits, a protect entry's SYN budget; `None` for every other kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// A protect entry's terms; `None` for every other kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect: Option<Protection>,
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
            rate: None,
            protect: None,
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
}

fn degrade_log(e: &StoreError) {
    tracing::error!(
        error = %e,
        "state store unusable: running on an in-memory store; kernel blocks stay enforced, \
         new decisions are kept in memory and written to the file once it opens again \
         (repair it, restore it, or move it away)"
    );
}

// ON CONFLICT DO UPDATE rather than INSERT OR REPLACE: REPLACE deletes the old row first, which
// would fire ON DELETE actions of any future table referencing this one.

#[cfg(test)]
mod tests;
