//! The event log: one JSON object per line in the style of Suricata's EVE (`timestamp`,
//! `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto`, `flow`, `alert`), so
//! the tools that already read eve.json (jq, Filebeat, Splunk, ...) read Astra's too. The full
//! alert is kept under `astra` so `astra alerts` can read it back without loss.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    clock::now_ms,
    detect::{Alert, Severity},
    error::{Error, Result},
    flow::{BiFlow, proto_name},
};

pub const DEFAULT_EVENTS_FILE: &str = "eve.json";

/// RFC 3339 with microseconds, as EVE writes it.
pub fn eve_time(ms: u64) -> String {
    crate::clock::rfc3339_micros(ms)
}

fn suricata_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical | Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low => 3,
    }
}

fn flow_json(f: &BiFlow, now_ms: u64, mono_now_ns: u64) -> Value {
    let age_ms = mono_now_ns.saturating_sub(f.first_seen_ns) / 1_000_000;
    json!({
        "pkts_toserver": f.fwd.packets,
        "pkts_toclient": f.rev.packets,
        "bytes_toserver": f.fwd.bytes,
        "bytes_toclient": f.rev.bytes,
        "start": eve_time(now_ms.saturating_sub(age_ms)),
    })
}

/// Size at which the event log is rotated to `<file>.1` (one generation kept): the history
/// in the state store is the durable record, this file is the feed for log shippers, which
/// follow renames.
pub const ROTATE_BYTES: u64 = 64 << 20;

pub struct EventLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotate_at: u64,
}

impl EventLog {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // 0640: log shippers often read it through a group; never through a planted link.
        let file = crate::files::append(path, 0o640)
            .map_err(|e| Error::Usage(format!("cannot open event log {}: {e}", path.display())))?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            rotate_at: ROTATE_BYTES,
        })
    }

    /// Rotates at `bytes` instead of [`ROTATE_BYTES`].
    pub fn rotate_at(mut self, bytes: u64) -> Self {
        self.rotate_at = bytes;
        self
    }

    fn rotate(&mut self) -> Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old).map_err(|e| Error::io(&self.path, e))?;
        *self = Self::open(&self.path)?.rotate_at(self.rotate_at);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, v: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(v).expect("events serialise");
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_at {
            self.rotate()?;
        }
        self.size += line.len() as u64;
        // One write per event so concurrent readers never see half a line.
        self.file
            .write_all(&line)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Logs an alert; `flow` is the conversation that best shows it, if there is one.
    pub fn alert(&mut self, a: &Alert, flow: Option<&BiFlow>, mono_now_ns: u64) -> Result<()> {
        let src = a.source.map(|s| s.to_string());
        let dest = a.targets.first().map(|t| t.to_string());
        let mut v = json!({
            "timestamp": eve_time(a.timestamp_ms),
            "event_type": "alert",
            "src_ip": src,
            "dest_ip": dest,
            "alert": {
                "action": a.action.label(),
                "signature_id": 9_100_000 + crate::detect::AttackType::ALL.iter().position(|t| *t == a.attack_type).unwrap_or(0),
                "signature": format!("ASTRA {}", a.attack_type),
                "category": a.attack_type.as_str(),
                "severity": suricata_severity(a.severity),
                "rule": a.rule,
            },
            "astra": a,
        });
        if let Some(f) = flow {
            v["src_port"] = json!(f.src_port);
            v["dest_port"] = json!(f.dst_port);
            v["proto"] = json!(proto_name(f.proto).to_uppercase());
            v["flow"] = flow_json(f, a.timestamp_ms, mono_now_ns);
        } else if let Some(p) = a.target_ports.first() {
            v["dest_port"] = json!(p);
        }
        self.write(&v)
    }

    pub fn block(&mut self, net: &str, ttl: Duration, reason: &str, alert_id: &str) -> Result<()> {
        self.mitigation("block", net, ttl, None, reason, alert_id)
    }

    /// An automatic kernel entry: event type `block`, `throttle` or `quarantine`, its details
    /// under the same key (a throttle's rate too).
    pub fn mitigation(
        &mut self,
        kind: &str,
        net: &str,
        ttl: Duration,
        rate: Option<crate::store::Rate>,
        reason: &str,
        alert_id: &str,
    ) -> Result<()> {
        let mut detail = json!({"ttl_s": ttl.as_secs(), "reason": reason, "source": "auto", "alert_id": alert_id});
        if let Some(r) = rate {
            detail["rate"] = json!(r);
        }
        // A protection is about a destination; every other tier about a source.
        let side = if kind == "protect" {
            "dest_ip"
        } else {
            "src_ip"
        };
        self.write(&json!({
            "timestamp": eve_time(now_ms()),
            "event_type": kind,
            side: net,
            kind: detail,
        }))
    }

    pub fn unblock(&mut self, net: &str, why: &str) -> Result<()> {
        self.write(&json!({
            "timestamp": eve_time(now_ms()),
            "event_type": "unblock",
            "src_ip": net,
            "unblock": {"reason": why},
        }))
    }
}

#[derive(Deserialize)]
struct Line {
    event_type: String,
    astra: Option<Alert>,
}

/// Alerts logged at or after `since_ms`, oldest first. Lines that are not alerts, or not ours,
/// are skipped; a torn last line (the agent was killed mid-write) is ignored. A missing log
/// holds no alerts.
pub fn read_alerts(path: &Path, since_ms: u64) -> Result<Vec<Alert>> {
    Ok(scan_alerts(path, since_ms)?.alerts)
}

/// What [`scan_alerts`] found.
#[derive(Debug, Default)]
pub struct Scan {
    pub alerts: Vec<Alert>,
    /// Lines read, and how many of them were not JSON at all.
    pub lines: usize,
    pub garbage: usize,
}

/// [`read_alerts`], also counting the lines that were not JSON, so the CLI can tell a file
/// that is no event log from one without alerts. A line longer than
/// [`crate::limits::EVE_LINE`] means the file is no event log (`/dev/zero` is one endless
/// line): an error, after reading at most that much of it.
pub fn scan_alerts(path: &Path, since_ms: u64) -> Result<Scan> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let cap = crate::limits::EVE_LINE;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut scan = Scan::default();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(cap + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        scan.lines += 1;
        if n as u64 > cap {
            return Err(Error::Usage(format!(
                "{}: line {} is longer than {cap} bytes: not an event log",
                path.display(),
                scan.lines
            )));
        }
        let Ok(l) = serde_json::from_slice::<Line>(&line) else {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_err() {
                scan.garbage += 1;
            }
            continue;
        };
        if l.event_type == "alert"
            && let Some(a) = l.astra
            && a.timestamp_ms >= since_ms
        {
            scan.alerts.push(a);
        }
    }
    Ok(scan)
}

/// A short, stable identifier: time plus a per-process counter.
pub fn alert_id(now_ms: u64, seq: u64, subject: Option<IpAddr>) -> String {
    let tag = subject.map_or_else(
        || "target".to_string(),
        |s| s.to_string().replace([':', '.'], "-"),
    );
    format!("{now_ms:x}-{seq}-{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(ms: u64) -> Alert {
        crate::detect::sample_alert(&alert_id(ms, 1, Some("198.18.0.9".parse().unwrap())), ms)
    }

    #[test]
    fn alerts_round_trip_through_eve_lines() {
        let dir = std::env::temp_dir().join(format!("astra-eve-{}", std::process::id()));
        let path = dir.join("eve.json");
        let _ = std::fs::remove_file(&path);
        let mut log = EventLog::open(&path).unwrap();
        log.alert(&alert(1_000), None, 0).unwrap();
        log.block("198.18.0.9/32", Duration::from_secs(600), "port_scan", "x")
            .unwrap();
        log.alert(&alert(5_000), None, 0).unwrap();
        // A torn line at the end must not hide the others.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event_type\":\"al")
            .unwrap();
        let all = read_alerts(&path, 0).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], alert(1_000));
        assert_eq!(read_alerts(&path, 2_000).unwrap().len(), 1);

        let first: Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["event_type"], "alert");
        assert_eq!(first["src_ip"], "198.18.0.9");
        assert_eq!(first["dest_ip"], "198.18.1.1");
        assert_eq!(first["dest_port"], 22);
        assert_eq!(first["alert"]["signature"], "ASTRA port_scan");
        assert_eq!(first["alert"]["severity"], 1);
        assert_eq!(first["alert"]["action"], "blocked");
        assert!(
            first["timestamp"]
                .as_str()
                .unwrap()
                .starts_with("1970-01-01T00:00:01")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_rotates_keeping_one_generation() {
        let dir = std::env::temp_dir().join(format!("astra-eve-rot-{}", std::process::id()));
        let path = dir.join("eve.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = EventLog::open(&path).unwrap().rotate_at(2_000);
        for i in 0..20 {
            log.alert(&alert(i * 1_000), None, 0).unwrap();
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.join("eve.json.1")).unwrap().len();
        assert!(cur <= 2_000 && old <= 2_000, "{cur} {old}");
        // Every line in both files is whole, and the newest alert is in the current file.
        let now = read_alerts(&path, 0).unwrap();
        let before = read_alerts(&dir.join("eve.json.1"), 0).unwrap();
        assert!(!now.is_empty() && !before.is_empty());
        assert_eq!(now.last().unwrap().timestamp_ms, 19_000);
        assert!(before.last().unwrap().timestamp_ms < now[0].timestamp_ms);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_is_counted_and_an_endless_line_is_refused() {
        let dir = std::env::temp_dir().join(format!("astra-eve-garbage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eve.json");
        std::fs::write(&path, "not json\n{\"event_type\": \"flow\"}\n\u{0}\u{1}\n").unwrap();
        let scan = scan_alerts(&path, 0).unwrap();
        assert_eq!((scan.lines, scan.garbage, scan.alerts.len()), (3, 2, 0));
        let _ = std::fs::remove_dir_all(&dir);
        let err = scan_alerts(Path::new("/dev/zero"), 0).unwrap_err();
        assert!(err.to_string().contains("not an event log"), "{err}");
    }

    #[test]
    fn missing_log_means_no_alerts() {
        assert!(
            read_alerts(Path::new("/nonexistent/astra/eve.json"), 0)
                .unwrap()
                .is_empty()
        );
    }
}
