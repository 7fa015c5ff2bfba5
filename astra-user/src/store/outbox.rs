//! The outbox: messages waiting to be pushed to another system (the CrowdSec watcher's
//! alerts), kept in the store so that an outage or a restart loses none, bounded so that a
//! long outage cannot fill the disk. Each message has a unique key (the alert id): enqueuing
//! it twice keeps one.
use rusqlite::{Transaction, TransactionBehavior, params};

use super::*;

/// A message waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    pub seq: i64,
    pub key: String,
    pub body: String,
    /// Handed to a push whose outcome is not known (the agent stopped during it).
    pub sending: bool,
}

impl Store {
    /// Appends messages (`key`, `body`) to the outbox `name`, then drops its oldest beyond
    /// `cap`. Returns how many were dropped.
    pub fn outbox_push(
        &self,
        name: &str,
        items: &[(String, String)],
        now_unix: u64,
        cap: usize,
    ) -> Result<usize, StoreError> {
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO outbox (name, key, body, created_at, sending)
                         VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT (name, key) DO NOTHING",
                    )
                    .map_err(db)?;
                for (key, body) in items {
                    stmt.execute(params![
                        name,
                        key,
                        body,
                        i64::try_from(now_unix).unwrap_or(i64::MAX)
                    ])
                    .map_err(db)?;
                }
            }
            let dropped = tx
                .execute(
                    "DELETE FROM outbox WHERE name = ?1 AND seq NOT IN
                       (SELECT seq FROM outbox WHERE name = ?1 ORDER BY seq DESC LIMIT ?2)",
                    params![name, i64::try_from(cap).unwrap_or(i64::MAX)],
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(dropped)
        })
    }

    /// The oldest `n` messages of outbox `name`.
    pub fn outbox_peek(&self, name: &str, n: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, key, body, sending FROM outbox WHERE name = ?1
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![name, i64::try_from(n).unwrap_or(i64::MAX)], |r| {
                    Ok(OutboxItem {
                        seq: r.get(0)?,
                        key: r.get(1)?,
                        body: r.get(2)?,
                        sending: r.get::<_, i64>(3)? != 0,
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    /// Marks messages as handed to a push, before it starts: after a crash, those are the
    /// ones whose fate must be asked of the other side.
    pub fn outbox_mark_sending(&self, seqs: &[i64]) -> Result<(), StoreError> {
        self.outbox_each(seqs, "UPDATE outbox SET sending = 1 WHERE seq = ?1")
    }

    /// Removes delivered (or abandoned) messages.
    pub fn outbox_remove(&self, seqs: &[i64]) -> Result<(), StoreError> {
        self.outbox_each(seqs, "DELETE FROM outbox WHERE seq = ?1")
    }

    fn outbox_each(&self, seqs: &[i64], sql: &str) -> Result<(), StoreError> {
        self.with(|conn, path| {
            let db = |e| db_error(path, e);
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
            {
                let mut stmt = tx.prepare_cached(sql).map_err(db)?;
                for s in seqs {
                    stmt.execute(params![s]).map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
    }

    /// Messages waiting in outbox `name`.
    pub fn outbox_len(&self, name: &str) -> Result<u64, StoreError> {
        self.with(|conn, path| {
            conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| db_error(path, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(keys: &[&str]) -> Vec<(String, String)> {
        keys.iter()
            .map(|k| ((*k).to_owned(), format!("{{\"alert\":\"{k}\"}}")))
            .collect()
    }

    #[test]
    fn messages_keep_their_order_once_each_and_the_newest_within_the_cap() {
        let s = Store::open_in_memory();
        assert_eq!(
            s.outbox_push("cs", &items(&["a", "b", "a"]), 1, 10)
                .unwrap(),
            0
        );
        assert_eq!(s.outbox_push("other", &items(&["a"]), 1, 10).unwrap(), 0);
        let got = s.outbox_peek("cs", 10).unwrap();
        let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(got.iter().all(|i| !i.sending));
        assert_eq!(s.outbox_push("cs", &items(&["c", "d"]), 2, 3).unwrap(), 1);
        let keys: Vec<String> = s
            .outbox_peek("cs", 10)
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, ["b", "c", "d"]);
        assert_eq!(s.outbox_len("other").unwrap(), 1);
    }

    #[test]
    fn sending_marks_and_removal() {
        let s = Store::open_in_memory();
        s.outbox_push("cs", &items(&["a", "b", "c"]), 1, 10)
            .unwrap();
        let got = s.outbox_peek("cs", 2).unwrap();
        let seqs: Vec<i64> = got.iter().map(|i| i.seq).collect();
        s.outbox_mark_sending(&seqs).unwrap();
        let got = s.outbox_peek("cs", 10).unwrap();
        assert_eq!(got.iter().filter(|i| i.sending).count(), 2);
        s.outbox_remove(&seqs).unwrap();
        let got = s.outbox_peek("cs", 10).unwrap();
        assert_eq!(
            (got.len(), got[0].key.as_str(), got[0].sending),
            (1, "c", false)
        );
    }
}
