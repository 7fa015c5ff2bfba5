//! Offence counts per address, for longer blocks of repeat offenders.

use rusqlite::{OptionalExtension, params};

use super::*;

impl Store {
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
}
