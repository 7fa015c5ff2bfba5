//! `astra alerts` and `astra incidents`: the durable history (or the event log), as tables or JSON.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::render::{fmt_time, print_json, table};
use crate::{
    clock::now_ms,
    detect::Alert,
    error::{Error, Result},
    store::Store,
};

fn since_ms(since: Option<Duration>) -> u64 {
    since.map_or(0, |d| now_ms().saturating_sub(d.as_millis() as u64))
}

pub fn alerts(
    state_dir: &Path,
    events: Option<PathBuf>,
    since: Option<Duration>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let (alerts, from) = match events {
        Some(path) => {
            // Asked for by name: a missing or non-event file is an error, not "no alerts".
            if !path.is_file() {
                return Err(Error::Usage(format!(
                    "{}: no such event log (a file the agent's --events writes)",
                    path.display()
                )));
            }
            let scan = crate::sink::events::scan_alerts(&path, since_ms(since))?;
            if scan.lines > 0 && scan.garbage == scan.lines {
                return Err(Error::Usage(format!(
                    "{}: none of its {} lines is EVE JSON: not an event log",
                    path.display(),
                    scan.lines
                )));
            }
            if scan.garbage > 0 {
                eprintln!(
                    "astra: warning: {} of {} lines in {} are not JSON and were skipped",
                    scan.garbage,
                    scan.lines,
                    path.display()
                );
            }
            let mut a = scan.alerts;
            a.drain(..a.len().saturating_sub(limit));
            (a, path.display().to_string())
        }
        None => {
            let store = Store::open(state_dir)?;
            let a = crate::sink::history::alerts(&store, since_ms(since), limit)?;
            (a, format!("the history in {}", store.path().display()))
        }
    };
    print_alerts(&alerts, &from, json)
}

fn print_alerts(alerts: &[Alert], from: &str, json: bool) -> Result<()> {
    if json {
        return print_json(alerts);
    }
    if alerts.is_empty() {
        println!("no alerts in {from}");
        return Ok(());
    }
    println!("{}", alerts_table(alerts));
    Ok(())
}

/// Alerts as a table, oldest first.
pub fn alerts_table(alerts: &[Alert]) -> comfy_table::Table {
    let mut t = table(&[
        "TIME", "TYPE", "SEVERITY", "CONF", "RISK", "SOURCE", "TARGETS", "ACTION", "RULE",
    ]);
    for a in alerts {
        let targets: Vec<String> = a.targets.iter().take(3).map(|t| t.to_string()).collect();
        let more = a.targets.len().saturating_sub(3);
        t.add_row(vec![
            fmt_time(a.timestamp_ms / 1000),
            a.attack_type.to_string(),
            a.severity.as_str().to_string(),
            format!("{:.2}", a.confidence),
            a.risk_score.to_string(),
            a.source
                .map_or_else(|| "(spoofed?)".into(), |s| s.to_string()),
            if more > 0 {
                format!("{} +{more}", targets.join(","))
            } else {
                targets.join(",")
            },
            a.action.label().to_string(),
            a.rule.clone(),
        ]);
    }
    t
}

pub fn incidents(
    state_dir: &Path,
    id: Option<&str>,
    since: Option<Duration>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let store = Store::open(state_dir)?;
    if let Some(id) = id {
        let Some(row) = crate::sink::history::incident(&store, id)? else {
            return Err(Error::Usage(format!("no incident {id} in the history")));
        };
        if json {
            return print_json(&row.report);
        }
        println!("{}  {}", fmt_time(row.timestamp_ms / 1000), row.summary);
        println!(
            "{}",
            serde_json::to_string_pretty(&row.report).expect("JSON value prints")
        );
        return Ok(());
    }
    let rows = crate::sink::history::incidents(&store, since_ms(since), limit)?;
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no incidents in the history in {}", store.path().display());
        return Ok(());
    }
    let mut t = table(&["TIME", "ID", "SOURCE", "SUMMARY"]);
    for r in &rows {
        t.add_row(vec![
            fmt_time(r.timestamp_ms / 1000),
            r.id.clone(),
            r.source.clone().unwrap_or_default(),
            crate::text::escape_controls(&r.summary).into_owned(),
        ]);
    }
    println!("{t}");
    Ok(())
}
