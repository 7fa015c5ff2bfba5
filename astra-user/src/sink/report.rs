//! Incident reports: every automatic block leaves a JSON report for tools and a plain-text
//! one for people, in `<state-dir>/incidents/`.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    detect::{Action, Alert},
    error::{Error, Result},
    flow::{BiFlow, proto_name},
    sink::history::IncidentRow,
};

#[derive(Serialize)]
pub struct Incident<'a> {
    pub id: &'a str,
    pub created: String,
    pub summary: String,
    pub alert: &'a Alert,
    pub iocs: Iocs,
    pub actions_taken: Vec<String>,
    pub recommended: Vec<String>,
    /// The conversations that carried the evidence (largest first, at most 20).
    pub flows: Vec<&'a BiFlow>,
}

#[derive(Serialize)]
pub struct Iocs {
    pub ip: Vec<String>,
    pub targets: Vec<String>,
    pub ports: Vec<u16>,
}

fn summary(a: &Alert) -> String {
    let who = a
        .source
        .map_or_else(|| "unknown sources".to_string(), |s| s.to_string());
    let whom = match a.targets.as_slice() {
        [] => String::new(),
        [t] => format!(" against {t}"),
        [t, rest @ ..] => format!(" against {t} and {} more", rest.len()),
    };
    format!(
        "{} from {who}{whom}: {} (confidence {:.2}, risk {}/10, severity {})",
        a.attack_type.as_str().replace('_', " "),
        a.rule,
        a.confidence,
        a.risk_score,
        a.severity.as_str()
    )
}

fn action_text(a: &Alert) -> String {
    let src = a.source.map_or_else(String::new, |s| s.to_string());
    match &a.action {
        Action::Blocked { ttl_s } => format!(
            "blocked {src} in the kernel (XDP, before the network stack) for {}",
            humantime::format_duration(std::time::Duration::from_secs(*ttl_s))
        ),
        Action::WouldBlock { ttl_s } => format!("dry run: would have blocked {src} for {ttl_s} s"),
        Action::Flagged => "flagged for review".into(),
        Action::Recorded => "recorded".into(),
        Action::ProtectTarget => {
            "sources not blocked (likely spoofed); target protection recommended".into()
        }
        Action::NotBlocked { why } => format!("not blocked: {why}"),
        Action::Throttled { rate, ttl_s } => format!(
            "throttled {src} in the kernel to {rate} for {}: packets over the rate are dropped",
            humantime::format_duration(std::time::Duration::from_secs(*ttl_s))
        ),
        Action::WouldThrottle { rate, ttl_s } => {
            format!("dry run: would have throttled {src} to {rate} for {ttl_s} s")
        }
        Action::Quarantined { ttl_s } => format!(
            "quarantined {src} for {}: its traffic is dropped both ways, except with allowlisted addresses",
            humantime::format_duration(std::time::Duration::from_secs(*ttl_s))
        ),
        Action::WouldQuarantine { ttl_s } => {
            format!("dry run: would have quarantined {src} for {ttl_s} s")
        }
        Action::Protected { ttl_s } => {
            let target = a
                .targets
                .first()
                .map_or_else(String::new, |t| t.to_string());
            format!(
                "protected {target} in the kernel: new SYNs from sources not seen completing a handshake held to a budget, answers to requests it never sent dropped; ends {} after the last drop",
                humantime::format_duration(std::time::Duration::from_secs(*ttl_s))
            )
        }
        Action::WouldProtect { ttl_s } => {
            let target = a
                .targets
                .first()
                .map_or_else(String::new, |t| t.to_string());
            format!("dry run: would have protected {target} for {ttl_s} s")
        }
    }
}

/// Writes `<dir>/<id>.json` and `<dir>/<id>.txt`; returns the JSON path and the incident as
/// the history stores it.
pub fn write(dir: &Path, a: &Alert, flows: &[&BiFlow]) -> Result<(PathBuf, IncidentRow)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut recommended = a.recommended.clone();
    if let Some(src) = a.source {
        let undo = match a.action {
            Action::Throttled { .. } => "unthrottle",
            Action::Quarantined { .. } => "release",
            _ => "unblock",
        };
        recommended.push(format!(
            "if {src} is legitimate: `astra allow {src}` (and `astra {undo} {src}`)"
        ));
        recommended.push(format!(
            "look for other activity from {src} in eve.json and upstream logs"
        ));
    }
    let incident = Incident {
        id: &a.id,
        created: crate::clock::rfc3339_micros(a.timestamp_ms),
        summary: summary(a),
        alert: a,
        iocs: Iocs {
            ip: a.source.iter().map(|s| s.to_string()).collect(),
            targets: a.targets.iter().map(|t| t.to_string()).collect(),
            ports: a.target_ports.clone(),
        },
        actions_taken: vec![action_text(a)],
        recommended,
        flows: flows.iter().take(20).copied().collect(),
    };
    let json_path = dir.join(format!("{}.json", a.id));
    let text_path = dir.join(format!("{}.txt", a.id));
    let json = serde_json::to_vec_pretty(&incident).expect("incident serialises");
    let private = crate::files::PRIVATE;
    crate::files::write(&json_path, &json, private).map_err(|e| Error::io(&json_path, e))?;
    crate::files::write(&text_path, text(&incident).as_bytes(), private)
        .map_err(|e| Error::io(&text_path, e))?;
    let row = IncidentRow {
        id: a.id.clone(),
        timestamp_ms: a.timestamp_ms,
        source: a.source.map(|s| s.to_string()),
        summary: incident.summary.clone(),
        report: serde_json::to_value(&incident).expect("incident serialises"),
    };
    Ok((json_path, row))
}

/// Removes the report files of incidents the history no longer keeps.
pub fn remove(dir: &Path, ids: &[String]) {
    for id in ids {
        for ext in ["json", "txt"] {
            let _ = std::fs::remove_file(dir.join(format!("{id}.{ext}")));
        }
    }
}

fn text(i: &Incident<'_>) -> String {
    let a = i.alert;
    let mut t = String::new();
    let _ = writeln!(t, "ASTRA INCIDENT {}", i.id);
    let _ = writeln!(t, "{}", "=".repeat(15 + i.id.len()));
    let _ = writeln!(t, "When:     {}", i.created);
    let _ = writeln!(t, "What:     {}", i.summary);
    let _ = writeln!(t);
    let _ = writeln!(t, "Indicators of compromise");
    let _ = writeln!(t, "  source IPs:   {}", i.iocs.ip.join(", "));
    let _ = writeln!(t, "  targets:      {}", i.iocs.targets.join(", "));
    let ports: Vec<String> = i.iocs.ports.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(t, "  target ports: {}", ports.join(", "));
    let _ = writeln!(t);
    let _ = writeln!(t, "Evidence");
    for c in &a.evidence.thresholds {
        let _ = writeln!(
            t,
            "  {} = {:.2} (threshold {:.2}, {} s window)",
            c.name, c.value, c.threshold, c.window_s
        );
    }
    if let Some(s) = a.evidence.forest_score {
        let _ = writeln!(t, "  isolation forest anomaly score: {s:.3}");
    }
    if let Some(r) = a.evidence.realness {
        let _ = writeln!(t, "  source address credibility: {r:?}");
    }
    for n in &a.evidence.notes {
        let _ = writeln!(t, "  note: {n}");
    }
    for (k, v) in &a.evidence.features {
        let _ = writeln!(t, "  {k}: {v:.2}");
    }
    if !i.flows.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "Flows");
        for f in &i.flows {
            let _ = writeln!(
                t,
                "  {} {}:{} -> {}:{}  {} pkts / {} B out, {} pkts / {} B back",
                proto_name(f.proto),
                f.src,
                f.src_port,
                f.dst,
                f.dst_port,
                f.fwd.packets,
                f.fwd.bytes,
                f.rev.packets,
                f.rev.bytes
            );
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Actions taken");
    for x in &i.actions_taken {
        let _ = writeln!(t, "  - {x}");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Recommended");
    for x in &i.recommended {
        let _ = writeln!(t, "  - {x}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{AttackType, Crossed, Evidence, Realness, Severity};

    #[test]
    fn writes_json_and_text_a_person_can_read() {
        let a = Alert {
            id: "abc-1-198-18-0-9".into(),
            timestamp_ms: 1_795_000_000_000,
            attack_type: AttackType::BruteForce,
            severity: Severity::High,
            confidence: 0.93,
            risk_score: 8,
            source: Some("198.18.0.9".parse().unwrap()),
            targets: vec!["198.18.1.1".parse().unwrap()],
            target_ports: vec![22],
            rule: "brute_force: failed_logins_port_22 = 9 >= 5 in 60 s".into(),
            evidence: Evidence {
                thresholds: vec![Crossed {
                    name: "failed_logins_port_22".into(),
                    value: 9.0,
                    threshold: 5.0,
                    window_s: 60,
                }],
                realness: Some(Realness::Handshake),
                ..Evidence::default()
            },
            action: Action::Blocked { ttl_s: 600 },
            recommended: vec!["review authentication logs for port 22".into()],
        };
        let dir = std::env::temp_dir().join(format!("astra-incidents-{}", std::process::id()));
        let (p, row) = write(&dir, &a, &[]).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        // The history keeps the same report the file holds.
        assert_eq!(row.report, j);
        assert_eq!(j["iocs"]["ip"][0], "198.18.0.9");
        assert_eq!(j["alert"]["attack_type"], "brute_force");
        assert!(
            j["actions_taken"][0]
                .as_str()
                .unwrap()
                .contains("blocked 198.18.0.9")
        );
        let t = std::fs::read_to_string(dir.join("abc-1-198-18-0-9.txt")).unwrap();
        assert!(
            t.contains("brute force from 198.18.0.9 against 198.18.1.1"),
            "{t}"
        );
        assert!(
            t.contains("failed_logins_port_22 = 9.00 (threshold 5.00, 60 s window)"),
            "{t}"
        );
        assert!(t.contains("astra allow 198.18.0.9"), "{t}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
