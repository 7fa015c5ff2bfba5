//! The event log: one JSON object per line in Suricata's EVE format (`timestamp`,
//! `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto`, `flow`, `alert`), so
//! the tools that already read eve.json (jq, Filebeat, Splunk, ...) read Astra's too. Every
//! line validates against Suricata's published schema (a test checks): no key of Astra's own
//! at the top level, and what Suricata has no field for goes where Suricata keeps a rule's
//! extras, `alert.metadata`, as lists of strings. The full alert is kept there too
//! (`astra_alert`, as JSON text) so `astra alerts` can read it back without loss.
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

/// Time as Suricata writes it: microseconds and a numeric UTC offset
/// (`2026-12-02T06:42:33.123456+0000`), which its schema requires.
pub fn eve_time(ms: u64) -> String {
    let t = crate::clock::rfc3339_micros(ms);
    match t.strip_suffix('Z') {
        Some(base) => format!("{base}+0000"),
        None => t,
    }
}

/// The metadata key of the full alert.
const ALERT_META: &str = "astra_alert";

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
        let mut meta = json!({
            ALERT_META: [serde_json::to_string(a).expect("alerts serialise")],
            "confidence": [format!("{:.2}", a.confidence)],
            "risk_score": [a.risk_score.to_string()],
        });
        if !a.targets.is_empty() {
            meta["attack_target"] =
                json!(a.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        }
        let mut v = json!({
            "timestamp": eve_time(a.timestamp_ms),
            "event_type": "alert",
            "alert": {
                "action": a.action.label(),
                "gid": 1,
                "signature_id": 9_100_000 + crate::detect::AttackType::ALL.iter().position(|t| *t == a.attack_type).unwrap_or(0),
                "rev": 1,
                "signature": format!("ASTRA {}", a.attack_type),
                "category": a.attack_type.as_str(),
                "severity": suricata_severity(a.severity),
                "rule": a.rule,
                "metadata": meta,
            },
        });
        // Suricata leaves out what it does not know rather than writing null.
        if let Some(s) = src {
            v["src_ip"] = json!(s);
        }
        if let Some(d) = dest {
            v["dest_ip"] = json!(d);
        }
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

    /// An automatic kernel entry: event type `block`, `throttle`, `quarantine` or `protect`.
    /// The address is `src_ip` (`dest_ip` for a protected target) when the entry is one host;
    /// the details (the prefix, TTL, reason, rate, the alert that made it) are in
    /// `alert.metadata`, since Suricata has no event of this kind to copy.
    pub fn mitigation(
        &mut self,
        kind: &str,
        net: &str,
        ttl: Duration,
        rate: Option<crate::store::Rate>,
        reason: &str,
        alert_id: &str,
    ) -> Result<()> {
        let mut meta = json!({
            "astra_net": [net],
            "ttl_s": [ttl.as_secs().to_string()],
            "reason": [reason],
            "source": ["auto"],
            "alert_id": [alert_id],
        });
        if let Some(r) = rate {
            meta["rate_pps"] = json!([r.pps.to_string()]);
            meta["rate_bps"] = json!([r.bps.to_string()]);
        }
        let mut v = json!({
            "timestamp": eve_time(now_ms()),
            "event_type": kind,
            "alert": {
                "action": match kind {
                    "block" => "blocked",
                    "throttle" => "throttled",
                    "quarantine" => "quarantined",
                    "protect" => "protected",
                    other => other,
                },
                "signature": format!("ASTRA {kind}"),
                "category": "mitigation",
                "metadata": meta,
            },
        });
        // A protection is about a destination; every other tier about a source.
        let side = if kind == "protect" {
            "dest_ip"
        } else {
            "src_ip"
        };
        if let Some(host) = single_host(net) {
            v[side] = json!(host);
        }
        self.write(&v)
    }

    pub fn unblock(&mut self, net: &str, why: &str) -> Result<()> {
        let mut v = json!({
            "timestamp": eve_time(now_ms()),
            "event_type": "unblock",
            "alert": {
                "action": "unblocked",
                "signature": "ASTRA unblock",
                "category": "mitigation",
                "metadata": {"astra_net": [net], "reason": [why]},
            },
        });
        if let Some(host) = single_host(net) {
            v["src_ip"] = json!(host);
        }
        self.write(&v)
    }
}

/// The address of a one-host network (`198.18.2.2/32`, or a bare address); `None` for a
/// prefix, which EVE's address fields cannot hold.
fn single_host(net: &str) -> Option<String> {
    match net.parse::<ipnet::IpNet>() {
        Ok(n) if n.prefix_len() == n.max_prefix_len() => Some(n.addr().to_string()),
        Ok(_) => None,
        Err(_) => net.parse::<IpAddr>().ok().map(|a| a.to_string()),
    }
}

#[derive(Deserialize)]
struct Line {
    event_type: String,
    /// Where logs written before the schema-conformant format kept the alert.
    astra: Option<Alert>,
    alert: Option<LineAlert>,
}

#[derive(Deserialize)]
struct LineAlert {
    metadata: Option<LineMeta>,
}

#[derive(Deserialize)]
struct LineMeta {
    astra_alert: Option<Vec<String>>,
}

impl Line {
    /// The full alert of an alert line of Astra's.
    fn into_alert(self) -> Option<Alert> {
        if self.event_type != "alert" {
            return None;
        }
        self.astra.or_else(|| {
            let text = self.alert?.metadata?.astra_alert?.into_iter().next()?;
            serde_json::from_str(&text).ok()
        })
    }
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
        if let Some(a) = l.into_alert()
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
        assert_eq!(first["timestamp"], "1970-01-01T00:00:01.000000+0000");
        assert!(first.get("astra").is_none(), "{first}");
        let block: Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(block["src_ip"], "198.18.0.9");
        assert_eq!(
            block["alert"]["metadata"]["astra_net"],
            json!(["198.18.0.9/32"])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn prefixes_stay_out_of_address_fields_and_old_lines_still_read() {
        assert_eq!(single_host("198.18.2.2/32").as_deref(), Some("198.18.2.2"));
        assert_eq!(
            single_host("2001:db8::1/128").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(single_host("198.18.2.0/24"), None);
        let old = json!({"event_type": "alert", "astra": alert(7)}).to_string();
        let l: Line = serde_json::from_str(&old).unwrap();
        assert_eq!(l.into_alert(), Some(alert(7)));
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
