//! Astra's alerts as CrowdSec alerts (`POST /v1/alerts` of a Local API), queued in the store's
//! outbox for the agent's watcher to push (`agent::crowdsec`).
//!
//! An automatic block carries a `ban` decision with the block's TTL, so every bouncer of the
//! fleet drops the source too. Every other alert carries none and says `remediation: false`:
//! with `true`, the LAPI's profiles (Debian's default bans any `Ip` alert for 4 h) would turn
//! a flagged source, or the target of a spoofed flood, into a fleet-wide ban.
use serde_json::{Value, json};

use crate::{
    clock::rfc3339_seconds,
    detect::{Action, Alert},
    store::{Store, StoreError},
};

/// The outbox the watcher reads.
pub const OUTBOX: &str = "crowdsec";
/// Alerts kept while the LAPI is unreachable; the oldest go first beyond this.
pub const OUTBOX_CAP: usize = 10_000;
/// The origin of the decisions Astra pushes: their bouncers' entries are tagged
/// `crowdsec/astra`.
pub const ORIGIN: &str = "astra";
/// The meta key holding the Astra alert id, by which a push whose outcome was lost is found
/// again on the LAPI.
pub const ID_META: &str = "astra_alert_id";

/// The CrowdSec scenario of an alert: `astra/port_scan`, `astra/syn_flood`, ...
pub fn scenario(a: &Alert) -> String {
    format!("astra/{}", a.attack_type.as_str())
}

/// Whether an alert is worth the fleet's attention: everything but the low-confidence ones
/// the policy only records.
pub fn pushed(a: &Alert) -> bool {
    !matches!(a.action, Action::Recorded)
}

/// The alert as the LAPI's model (crowdsec 1.4.6) wants it.
pub fn to_lapi(a: &Alert) -> Value {
    let at = rfc3339_seconds(a.timestamp_ms / 1000);
    let scenario = scenario(a);
    // A target-side alert has no attacker to name: its target goes under a scope of its own,
    // which no bouncer enforces.
    let (scope, value) = match (a.source, a.targets.first()) {
        (Some(src), _) => ("Ip", src.to_string()),
        (None, Some(t)) => ("astra/target", t.to_string()),
        (None, None) => ("astra/target", String::new()),
    };
    let join = |v: Vec<String>| v.join(",");
    let mut meta = vec![
        (ID_META, a.id.clone()),
        ("rule", a.rule.clone()),
        ("severity", a.severity.as_str().to_owned()),
        ("confidence", format!("{:.2}", a.confidence)),
        ("risk_score", a.risk_score.to_string()),
        (
            "targets",
            join(a.targets.iter().take(16).map(|t| t.to_string()).collect()),
        ),
        (
            "target_ports",
            join(
                a.target_ports
                    .iter()
                    .take(32)
                    .map(|p| p.to_string())
                    .collect(),
            ),
        ),
    ];
    for c in a.evidence.thresholds.iter().take(8) {
        meta.push((
            "threshold",
            format!(
                "{} = {} >= {} in {} s",
                c.name, c.value, c.threshold, c.window_s
            ),
        ));
    }
    let meta: Vec<Value> = meta
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let decisions: Vec<Value> = match (a.source, &a.action) {
        (Some(src), Action::Blocked { ttl_s }) => vec![json!({
            "duration": format!("{}s", (*ttl_s).max(1)),
            "origin": ORIGIN,
            "scenario": scenario,
            "scope": "Ip",
            "type": "ban",
            "value": src.to_string(),
            "simulated": false,
        })],
        _ => Vec::new(),
    };
    let mut source = json!({"scope": scope, "value": value});
    if scope == "Ip" {
        source["ip"] = json!(value);
    }
    json!({
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": env!("CARGO_PKG_VERSION"),
        "message": format!(
            "Astra: {} {} {value} ({})",
            a.attack_type.as_str(),
            if a.source.is_some() { "from" } else { "against" },
            a.rule
        ),
        "events_count": 1,
        "capacity": 0,
        "leakspeed": "0s",
        "simulated": false,
        "remediation": !decisions.is_empty(),
        "start_at": at,
        "stop_at": at,
        "source": source,
        "events": [{"timestamp": at, "meta": meta.clone()}],
        "meta": meta,
        "decisions": decisions,
    })
}

/// Queues the alerts worth pushing; returns how many older ones the cap dropped.
pub fn enqueue(store: &Store, alerts: &[Alert], now_unix: u64) -> Result<usize, StoreError> {
    let items: Vec<(String, String)> = alerts
        .iter()
        .filter(|a| pushed(a))
        .map(|a| (a.id.clone(), to_lapi(a).to_string()))
        .collect();
    if items.is_empty() {
        return Ok(0);
    }
    store.outbox_push(OUTBOX, &items, now_unix, OUTBOX_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::sample_alert;

    #[test]
    fn a_block_carries_a_ban_and_other_alerts_no_remediation() {
        let mut a = sample_alert("a1", 1_796_000_000_000);
        a.action = Action::Blocked { ttl_s: 600 };
        let v = to_lapi(&a);
        assert_eq!(v["scenario"], "astra/port_scan");
        assert_eq!(v["source"]["scope"], "Ip");
        assert_eq!(v["source"]["ip"], "198.18.0.9");
        assert_eq!(v["remediation"], true);
        let d = &v["decisions"][0];
        assert_eq!(
            (&d["type"], &d["duration"], &d["value"], &d["origin"]),
            (
                &json!("ban"),
                &json!("600s"),
                &json!("198.18.0.9"),
                &json!("astra")
            )
        );
        assert_eq!(v["start_at"], "2026-11-30T00:53:20Z");
        let meta = v["events"][0]["meta"].as_array().unwrap();
        assert!(meta.contains(&json!({"key": ID_META, "value": "a1"})));
        assert!(meta.iter().all(|m| m["value"].is_string()));

        a.action = Action::Flagged;
        let v = to_lapi(&a);
        assert_eq!(
            (v["remediation"].clone(), v["decisions"].clone()),
            (json!(false), json!([]))
        );

        a.source = None;
        a.action = Action::ProtectTarget;
        let v = to_lapi(&a);
        assert_eq!(
            v["source"],
            json!({"scope": "astra/target", "value": "198.18.1.1"})
        );
        assert_eq!(v["decisions"], json!([]));
    }

    #[test]
    fn recorded_alerts_stay_home_and_the_rest_queue_once() {
        let store = Store::open_in_memory();
        let mut a = sample_alert("a1", 1_796_000_000_000);
        let mut b = sample_alert("b1", 1_796_000_000_000);
        a.action = Action::Blocked { ttl_s: 60 };
        b.action = Action::Recorded;
        enqueue(&store, &[a.clone(), b], 1).unwrap();
        enqueue(&store, &[a], 2).unwrap();
        let q = store.outbox_peek(OUTBOX, 10).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].key, "a1");
        let body: Value = serde_json::from_str(&q[0].body).unwrap();
        assert_eq!(body["decisions"][0]["type"], "ban");
    }
}
