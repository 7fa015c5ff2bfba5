//! [`FeedSync`]: one feed file kept applied while the agent runs.
use std::{
    collections::{HashMap, HashSet},
    hash::{Hash as _, Hasher as _},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::Serialize;

use super::*;
use crate::{
    clock::now_unix,
    error::{Error, Result},
    lists::Lists,
    store::{EntrySource, ListKind, StoredEntry},
};

/// How long a feed file must have stayed unchanged for a change just made to be taken.
const SETTLE: Duration = Duration::from_millis(250);

/// Entries per store transaction of a feed sync.
pub const SYNC_BATCH: usize = 10_000;

/// What one [`FeedSync::sync`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Entries of the file that were not yet in force.
    pub added: usize,
    /// Entries of this feed that the file no longer lists.
    pub removed: usize,
    /// Entries of the file already in force (refreshed when the feed has a TTL).
    pub unchanged: usize,
    /// Entries of the file left alone because a manual or automatic entry, or another feed,
    /// already holds that address: a feed never takes over (and later removes) what it did
    /// not add.
    pub skipped: usize,
}

/// How a file looked at the last successful sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

/// Keeps the entries of one feed (all entries with tag [`FeedSync::tag`]) equal to the
/// contents of a file, for the agent to call every `--feed-every`:
///
/// ```no_run
/// # fn f(lists: &mut astra::lists::Lists) -> astra::Result<()> {
/// let mut feed = astra::lists::feeds::FeedSync::new("/etc/astra/drop.txt", None, None)?;
/// let report = feed.sync(lists)?; // again later: a no-op while the file is unchanged
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FeedSync {
    pub path: PathBuf,
    pub tag: String,
    /// Lifetime of the entries from the file's last change; `None` = permanent. With a TTL,
    /// entries of a file that stops changing expire, so a dead feed does not block forever.
    pub ttl: Option<Duration>,
    pub format: Format,
    last: Option<Stamp>,
    /// Entries of the file at the last successful sync.
    last_count: usize,
}

impl FeedSync {
    /// A sync for `path`, tagged `tag` (default: the file name without its extension). Fails
    /// only for a tag that cannot be one (exit code 2); the file is read by [`FeedSync::sync`].
    pub fn new(
        path: impl Into<PathBuf>,
        tag: Option<String>,
        ttl: Option<Duration>,
    ) -> Result<Self> {
        let path = path.into();
        let tag = check_tag(&tag.unwrap_or_else(|| default_tag(&path)))
            .map_err(|e| Error::Usage(e.to_string()))?;
        Ok(Self {
            path,
            tag,
            ttl: ttl.filter(|d| !d.is_zero()),
            format: Format::Auto,
            last: None,
            last_count: 0,
        })
    }

    /// Reads the file and makes the feed's entries (store and kernel) equal to it: adds what is
    /// new, removes entries of this tag that the file dropped, and leaves manual, automatic and
    /// other feeds' entries alone. Does nothing while the file is unchanged. A file that cannot
    /// be read or parsed changes nothing (the previous entries stay in force) and returns an
    /// error naming the file and line.
    pub fn sync(&mut self, lists: &mut Lists) -> Result<SyncReport> {
        let unreadable = |e: std::io::Error| {
            Error::Usage(format!(
                "feed {}: cannot read {}: {e}; keeping its previous entries",
                self.tag,
                self.path.display()
            ))
        };
        let meta = std::fs::metadata(&self.path).map_err(unreadable)?;
        let (modified, len) = (meta.modified().ok(), meta.len());
        if let Some(last) = self.last
            && last.modified == modified
            && last.len == len
            && modified.is_some()
        {
            return Ok(self.no_change());
        }
        // A file rewritten in place (`curl -o`, a shell's `>`) is empty or half written for a
        // moment: one changed just now is looked at again shortly, and taken only if it stayed
        // as it was, or else at the next check. Applying the empty moment would drop every
        // entry of the feed until then.
        if modified.is_some_and(|m| m.elapsed().is_ok_and(|a| a < SETTLE)) {
            std::thread::sleep(SETTLE);
            let again = std::fs::metadata(&self.path).map_err(unreadable)?;
            if again.modified().ok() != modified || again.len() != len {
                return Ok(self.no_change());
            }
        }
        let text = read_input(&self.path).map_err(|e| {
            Error::Usage(format!(
                "feed {}: {e}; keeping its previous entries",
                self.tag
            ))
        })?;
        let mut h = std::hash::DefaultHasher::new();
        text.hash(&mut h);
        let stamp = Stamp {
            modified,
            len,
            hash: h.finish(),
        };
        // Rewritten with the same content (a cron job fetching an unchanged list).
        if self.last.is_some_and(|l| l.hash == stamp.hash) {
            self.last = Some(stamp);
            return Ok(self.no_change());
        }
        let feed = parse(
            &text,
            self.format,
            &self.path.display().to_string(),
            Some(&self.path),
        )
        .map_err(|e| {
            Error::Usage(format!(
                "feed {}: {e}; keeping its previous entries",
                self.tag
            ))
        })?;
        tracing::info!(
            feed = %self.tag,
            entries = feed.entries.len(),
            "feed changed: applying it"
        );
        let report = self.apply(&feed, lists)?;
        self.last = Some(stamp);
        self.last_count = feed.entries.len();
        Ok(report)
    }

    fn no_change(&self) -> SyncReport {
        SyncReport {
            unchanged: self.last_count,
            ..SyncReport::default()
        }
    }

    fn apply(&self, feed: &Feed, lists: &mut Lists) -> Result<SyncReport> {
        let now = now_unix();
        let defaults = Defaults {
            ttl: self.ttl,
            reason: String::new(),
            tag_override: Some(self.tag.clone()),
            tag: self.tag.clone(),
        };
        let mut current: HashMap<(ListKind, IpNet), StoredEntry> = lists
            .store()
            .list_tag(&self.tag)?
            .into_iter()
            .filter(|e| e.source == EntrySource::Feed)
            .map(|e| ((e.kind, e.net), e))
            .collect();
        let mut report = SyncReport::default();
        let mut write = Vec::new();
        let mut new = Vec::new();
        for mut e in to_stored(&feed.entries, &defaults, now) {
            match current.remove(&(e.kind, e.net)) {
                Some(old) => {
                    report.unchanged += 1;
                    let same = old.reason == e.reason
                        && old.expires_at.is_none()
                        && e.expires_at.is_none();
                    if !same {
                        e.created_at = old.created_at;
                        write.push(e);
                    }
                }
                None => new.push(e),
            }
        }
        if !new.is_empty() {
            // Only now, and once: reading every row is the cost of not stealing addresses.
            let owned_elsewhere: HashSet<(ListKind, IpNet)> = lists
                .store()
                .list(None)?
                .into_iter()
                .filter(|e| !e.is_expired(now))
                .map(|e| (e.kind, e.net))
                .collect();
            for e in new {
                if owned_elsewhere.contains(&(e.kind, e.net)) {
                    report.skipped += 1;
                } else {
                    report.added += 1;
                    write.push(e);
                }
            }
        }
        let gone: Vec<(ListKind, IpNet)> = current.into_keys().collect();
        report.removed = gone.len();
        // Add before removing, so an address moving between the feed's prefixes is never
        // left uncovered in between.
        // In store transactions of SYNC_BATCH entries: the store is shared with the agent's
        // poll loop and API, which must not wait behind a million-row transaction. A sync
        // that fails midway is completed by the next one (it compares against the store).
        if !write.is_empty() {
            lists.add_many_in(&write, SYNC_BATCH)?;
        }
        if !gone.is_empty() {
            lists.remove_many_in(&gone, SYNC_BATCH)?;
        }
        Ok(report)
    }
}
