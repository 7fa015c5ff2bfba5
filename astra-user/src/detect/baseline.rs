//! Per-destination baselines of what inside hosts send out, for the exfiltration rule.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use super::*;

/// Per-inside-host baselines of bytes sent per long window, for the exfiltration rule.
#[derive(Default)]
pub struct ExfilBaselines {
    hosts: HashMap<IpAddr, (f64, u64)>,
    /// Detection passes so far ([`ExfilBaselines::begin_pass`]).
    passes: u64,
}

/// Polls of history a baseline needs before it can alert.
pub(super) const EXFIL_MIN_SAMPLES: u64 = 30;
/// Inside hosts with a baseline at most: a home_net as wide as a /8 with spoofed senders in it
/// must not grow the map without end. Hosts beyond it are not watched.
pub(super) const EXFIL_MAX_HOSTS: usize = 65_536;

impl ExfilBaselines {
    /// Counts a detection pass. An inside host first seen sending in pass `k` sent nothing in
    /// the `k - 1` before (it would have been seen): its baseline starts from that history,
    /// so a host that was silent since the agent started and then uploads gigabytes alerts at
    /// once instead of folding the upload into a fresh baseline.
    pub fn begin_pass(&mut self) {
        self.passes += 1;
    }

    /// Checks `sent` (bytes in the long window) against the host's baseline, then folds it in
    /// unless it alerted (an exfiltration must not become the new normal).
    pub fn check(
        &mut self,
        cfg: &RuleConfig,
        host: IpAddr,
        sent: u64,
        long_s: u64,
        now_ms: u64,
    ) -> Option<Alert> {
        if self.hosts.len() >= EXFIL_MAX_HOSTS && !self.hosts.contains_key(&host) {
            return None;
        }
        let silent_before = self.passes.saturating_sub(1);
        let (avg, n) = self.hosts.entry(host).or_insert((0.0, silent_before));
        let limit = (*avg * cfg.exfil_factor).max(cfg.exfil_min_bytes as f64);
        if *n >= EXFIL_MIN_SAMPLES && sent as f64 >= limit {
            let confidence = ratio_confidence(sent as f64 / limit);
            let mut a = Alert {
                id: String::new(),
                timestamp_ms: now_ms,
                attack_type: AttackType::Exfiltration,
                severity: Severity::Low,
                confidence,
                risk_score: 0,
                source: Some(host),
                targets: vec![],
                target_ports: vec![],
                rule: format!(
                    "exfiltration: {host} sent {sent} bytes in {long_s} s >= {limit:.0} ({}x its baseline of {avg:.0})",
                    cfg.exfil_factor
                ),
                evidence: Evidence {
                    thresholds: vec![Crossed::new("bytes_sent", sent as f64, limit, long_s)],
                    features: BTreeMap::from([
                        ("bytes_sent".into(), sent as f64),
                        ("baseline_bytes".into(), *avg),
                    ]),
                    forest_score: None,
                    realness: Some(Realness::Handshake),
                    notes: vec![
                        "an inside host: never blocked; quarantined if policy.quarantine_exfiltration is on"
                            .into(),
                    ],
                    classifier: None,
                },
                action: Action::Recorded,
                recommended: vec![format!(
                    "find the process on {host} sending the data and where it goes"
                )],
            };
            a.risk_score = risk_score(a.attack_type, a.confidence);
            a.severity = Severity::from_risk(a.risk_score);
            return Some(a);
        }
        // An exponential average over roughly the last 100 polls.
        *avg = if *n == 0 {
            sent as f64
        } else {
            *avg + (sent as f64 - *avg) / 100.0
        };
        *n += 1;
        None
    }
}
