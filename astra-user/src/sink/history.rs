//! Durable history of alerts and incidents, in the same SQLite database as the block and allow
//! lists, so one file holds every decision and its grounds, and one backup covers them.
//!
//! The agent writes each detection pass's alerts and incidents in one transaction (one fsync,
//! however many alerts a flood raises) and prunes by age and row count as it goes. The EVE log
//! stays the streaming interface for log shippers; this is the queryable record.
use std::{path::Path, time::Duration};

use rusqlite::params;
use serde::Serialize;
use serde_json::Value;

use crate::{
    detect::Alert,
    store::{Store, StoreError, db_error},
};

/// An incident as stored: the report's fields the listing needs, and the whole report.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentRow {
    pub id: String,
    pub timestamp_ms: u64,
    pub source: Option<String>,
    pub summary: String,
    pub report: Value,
}

/// Retention limits: rows older than `max_age`, and the oldest rows beyond `max_rows`, go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_rows: u64,
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub alerts: u64,
    pub incidents: Vec<String>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Records one pass's alerts and incidents; durable when this returns.
pub fn record(
    store: &Store,
    alerts: &[Alert],
    incidents: &[IncidentRow],
) -> Result<(), StoreError> {
    if alerts.is_empty() && incidents.is_empty() {
        return Ok(());
    }
    let alert_bodies: Vec<String> = alerts
        .iter()
        .map(|a| serde_json::to_string(a).expect("alerts serialise"))
        .collect();
    store.with(|conn, path| {
        let db = |e| db_error(path, e);
        let tx = conn.unchecked_transaction().map_err(db)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alerts (id, ts_ms, attack_type, severity, source, action, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(db)?;
            for (a, body) in alerts.iter().zip(&alert_bodies) {
                ins.execute(params![
                    a.id,
                    to_i64(a.timestamp_ms),
                    a.attack_type.as_str(),
                    a.severity.as_str(),
                    a.source.map(|s| s.to_string()),
                    a.action.label(),
                    body,
                ])
                .map_err(db)?;
            }
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO incidents (id, ts_ms, source, summary, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for i in incidents {
                ins.execute(params![
                    i.id,
                    to_i64(i.timestamp_ms),
                    i.source,
                    i.summary,
                    i.report.to_string(),
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    })
}

/// Alerts at or after `since_ms`, oldest first; at most the newest `limit`.
pub fn alerts(store: &Store, since_ms: u64, limit: usize) -> Result<Vec<Alert>, StoreError> {
    alerts_where(store, since_ms, limit, &AlertFilter::default())
}

/// Which alerts [`alerts_where`] returns besides their time: each field that is set must
/// match.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub attack_type: Option<crate::detect::AttackType>,
    /// This severity or a higher one.
    pub min_severity: Option<crate::detect::Severity>,
    pub source: Option<std::net::IpAddr>,
}

/// The newest `limit` alerts at or after `since_ms` that match `filter`, oldest first; the
/// filter runs in the database, so a page of one type is found among a million others.
pub fn alerts_where(
    store: &Store,
    since_ms: u64,
    limit: usize,
    filter: &AlertFilter,
) -> Result<Vec<Alert>, StoreError> {
    use crate::detect::Severity;
    // The severities at or above the minimum, as ",high,critical," for instr().
    let severities = filter.min_severity.map(|min| {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .filter(|s| *s >= min)
        .fold(",".to_string(), |acc, s| acc + s.as_str() + ",")
    });
    store.with(|conn, path| {
        let db = |e| db_error(path, e);
        let mut stmt = conn
            .prepare_cached(
                "SELECT body FROM (SELECT body, ts_ms, rowid FROM alerts WHERE ts_ms >= ?1
                   AND (?3 IS NULL OR attack_type = ?3)
                   AND (?4 IS NULL OR instr(?4, ',' || severity || ',') > 0)
                   AND (?5 IS NULL OR source = ?5)
                 ORDER BY ts_ms DESC, rowid DESC LIMIT ?2) ORDER BY ts_ms, rowid",
            )
            .map_err(db)?;
        let bodies = stmt
            .query_map(
                params![
                    to_i64(since_ms),
                    to_i64(limit as u64),
                    filter.attack_type.map(|t| t.as_str()),
                    severities,
                    filter.source.map(|s| s.to_string()),
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        bodies
            .into_iter()
            .map(|b| {
                serde_json::from_str(&b).map_err(|e| StoreError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("an alert in the history does not decode: {e}"),
                })
            })
            .collect()
    })
}

/// Alerts by attack type over a period, and how many of each the policy blocked: what
/// `/api/v1/attack-summary` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AttackSummary {
    pub since_ms: u64,
    pub alerts: u64,
    pub blocked: u64,
    pub by_type: std::collections::BTreeMap<String, TypeCount>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TypeCount {
    pub alerts: u64,
    pub blocked: u64,
}

/// Counts the history's alerts at or after `since_ms` by type and action, in the database
/// (a GROUP BY: the bodies are never read).
pub fn attack_summary(store: &Store, since_ms: u64) -> Result<AttackSummary, StoreError> {
    store.with(|conn, path| {
        let db = |e| db_error(path, e);
        let mut stmt = conn
            .prepare_cached(
                "SELECT attack_type, action, COUNT(*) FROM alerts WHERE ts_ms >= ?1
                 GROUP BY attack_type, action",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![to_i64(since_ms)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let mut out = AttackSummary {
            since_ms,
            ..Default::default()
        };
        for (t, action, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            let blocked = if action == "blocked" { n } else { 0 };
            let c = out.by_type.entry(t).or_default();
            c.alerts += n;
            c.blocked += blocked;
            out.alerts += n;
            out.blocked += blocked;
        }
        Ok(out)
    })
}

fn incident_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, i64, Option<String>, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn decode_incident(
    path: &Path,
    (id, ts, source, summary, body): (String, i64, Option<String>, String, String),
) -> Result<IncidentRow, StoreError> {
    let report = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        reason: format!("incident {id} does not decode: {e}"),
    })?;
    Ok(IncidentRow {
        id,
        timestamp_ms: u64::try_from(ts).unwrap_or(0),
        source,
        summary,
        report,
    })
}

/// Incidents at or after `since_ms`, oldest first; at most the newest `limit`.
pub fn incidents(
    store: &Store,
    since_ms: u64,
    limit: usize,
) -> Result<Vec<IncidentRow>, StoreError> {
    store.with(|conn, path| {
        let db = |e| db_error(path, e);
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, ts_ms, source, summary, body FROM (SELECT *, rowid AS r FROM incidents
                 WHERE ts_ms >= ?1 ORDER BY ts_ms DESC, r DESC LIMIT ?2) ORDER BY ts_ms, r",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![to_i64(since_ms), to_i64(limit as u64)],
                incident_row,
            )
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter().map(|r| decode_incident(path, r)).collect()
    })
}

pub fn incident(store: &Store, id: &str) -> Result<Option<IncidentRow>, StoreError> {
    use rusqlite::OptionalExtension as _;
    store.with(|conn, path| {
        let row = conn
            .query_row(
                "SELECT id, ts_ms, source, summary, body FROM incidents WHERE id = ?1",
                params![id],
                incident_row,
            )
            .optional()
            .map_err(|e| db_error(path, e))?;
        row.map(|r| decode_incident(path, r)).transpose()
    })
}

/// Rows in (alerts, incidents).
pub fn counts(store: &Store) -> Result<(u64, u64), StoreError> {
    store.with(|conn, path| {
        let n = |table: &str| -> Result<u64, StoreError> {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .map_err(|e| db_error(path, e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok((n("alerts")?, n("incidents")?))
    })
}

/// Applies the retention limits at `now_ms`; returns what went, so the caller can remove the
/// incidents' report files too.
pub fn prune(store: &Store, keep: Retention, now_ms: u64) -> Result<Pruned, StoreError> {
    let cutoff = to_i64(now_ms.saturating_sub(keep.max_age.as_millis() as u64));
    let max_rows = to_i64(keep.max_rows);
    // Rows past the newest `max_rows`, or older than the cutoff.
    let doomed = |table: &str| {
        format!(
            "SELECT id FROM {table} WHERE ts_ms < ?1 OR rowid IN
             (SELECT rowid FROM {table} ORDER BY ts_ms DESC, rowid DESC LIMIT -1 OFFSET ?2)"
        )
    };
    store.with(|conn, path| {
        let db = |e| db_error(path, e);
        let tx = conn.unchecked_transaction().map_err(db)?;
        let incidents = {
            let mut stmt = tx.prepare(&doomed("incidents")).map_err(db)?;
            stmt.query_map(params![cutoff, max_rows], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?
        };
        let mut alerts = 0;
        for table in ["alerts", "incidents"] {
            let n = tx
                .execute(
                    &format!("DELETE FROM {table} WHERE id IN ({})", doomed(table)),
                    params![cutoff, max_rows],
                )
                .map_err(db)?;
            if table == "alerts" {
                alerts = n as u64;
            }
        }
        tx.commit().map_err(db)?;
        Ok(Pruned { alerts, incidents })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, ms: u64) -> Alert {
        crate::detect::sample_alert(id, ms)
    }

    fn incident(id: &str, ms: u64) -> IncidentRow {
        IncidentRow {
            id: id.into(),
            timestamp_ms: ms,
            source: Some("198.18.0.9".into()),
            summary: "port scan".into(),
            report: serde_json::json!({"id": id}),
        }
    }

    #[test]
    fn records_read_back_in_order_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("astra-hist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            record(
                &s,
                &[alert("b", 2_000), alert("a", 1_000)],
                &[incident("i1", 1_500)],
            )
            .unwrap();
            // The same alert twice (a retried pass) is kept once.
            record(&s, &[alert("a", 1_000)], &[]).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        let got = alerts(&s, 0, 100).unwrap();
        assert_eq!(got, vec![alert("a", 1_000), alert("b", 2_000)]);
        assert_eq!(alerts(&s, 1_500, 100).unwrap(), vec![alert("b", 2_000)]);
        // The limit keeps the newest.
        assert_eq!(alerts(&s, 0, 1).unwrap(), vec![alert("b", 2_000)]);
        assert_eq!(counts(&s).unwrap(), (2, 1));
        let i = incident_row_of(&s, "i1");
        assert_eq!(i.report["id"], "i1");
        assert!(super::incident(&s, "nope").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn attack_summary_counts_by_type_and_blocks_over_the_period() {
        use crate::detect::{Action, AttackType};
        let s = Store::open_in_memory();
        let mut flood = alert("f", 3_000);
        flood.attack_type = AttackType::SynFlood;
        flood.action = Action::Flagged;
        let mut old = alert("o", 500);
        old.attack_type = AttackType::SynFlood;
        // sample_alert is a blocked port scan.
        record(&s, &[alert("a", 1_000), alert("b", 2_000), flood, old], &[]).unwrap();
        let got = attack_summary(&s, 1_000).unwrap();
        assert_eq!((got.alerts, got.blocked), (3, 2));
        assert_eq!(
            got.by_type["port_scan"],
            TypeCount {
                alerts: 2,
                blocked: 2
            }
        );
        assert_eq!(
            got.by_type["syn_flood"],
            TypeCount {
                alerts: 1,
                blocked: 0
            }
        );
        assert_eq!(attack_summary(&s, 0).unwrap().alerts, 4);
        assert_eq!(
            attack_summary(&s, 10_000).unwrap(),
            AttackSummary {
                since_ms: 10_000,
                ..Default::default()
            }
        );
    }

    #[test]
    fn alerts_filter_by_type_severity_and_source_in_the_database() {
        use crate::detect::{AttackType, Severity};
        let s = Store::open_in_memory();
        let mut flood = alert("f", 3_000);
        flood.attack_type = AttackType::SynFlood;
        flood.severity = Severity::Medium;
        let mut other = alert("o", 4_000);
        other.source = Some("198.18.0.77".parse().unwrap());
        other.severity = Severity::Critical;
        record(&s, &[alert("a", 1_000), flood.clone(), other.clone()], &[]).unwrap();
        let ids = |f: AlertFilter| {
            alerts_where(&s, 0, 100, &f)
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(AlertFilter::default()), ["a", "f", "o"]);
        let by_type = AlertFilter {
            attack_type: Some(AttackType::SynFlood),
            ..Default::default()
        };
        assert_eq!(ids(by_type), ["f"]);
        let high = AlertFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        };
        assert_eq!(ids(high), ["a", "o"], "high and above");
        let from = AlertFilter {
            source: other.source,
            min_severity: Some(Severity::Critical),
            ..Default::default()
        };
        assert_eq!(ids(from), ["o"]);
        let nothing = AlertFilter {
            source: other.source,
            attack_type: Some(AttackType::SynFlood),
            ..Default::default()
        };
        assert!(ids(nothing).is_empty());
    }

    fn incident_row_of(s: &Store, id: &str) -> IncidentRow {
        super::incident(s, id).unwrap().unwrap()
    }

    #[test]
    fn prune_applies_age_and_row_limits() {
        let s = Store::open_in_memory();
        let alerts_in: Vec<_> = (0..10)
            .map(|i| alert(&format!("a{i}"), 1_000 * i))
            .collect();
        let inc: Vec<_> = (0..4)
            .map(|i| incident(&format!("i{i}"), 1_000 * i))
            .collect();
        record(&s, &alerts_in, &inc).unwrap();
        // Age: at t=10 s with 7.5 s max age, everything before 2.5 s goes (a0..a2, i0..i2).
        let p = prune(
            &s,
            Retention {
                max_age: Duration::from_millis(7_500),
                max_rows: 100,
            },
            10_000,
        )
        .unwrap();
        assert_eq!(p.alerts, 3);
        let mut gone = p.incidents.clone();
        gone.sort();
        assert_eq!(gone, vec!["i0", "i1", "i2"]);
        // Rows: keep the newest 4 alerts.
        let p = prune(
            &s,
            Retention {
                max_age: Duration::from_secs(3600),
                max_rows: 4,
            },
            10_000,
        )
        .unwrap();
        assert_eq!(p.alerts, 3);
        let ids: Vec<_> = alerts(&s, 0, 100)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, vec!["a6", "a7", "a8", "a9"]);
        assert_eq!(counts(&s).unwrap(), (4, 1));
    }
}
