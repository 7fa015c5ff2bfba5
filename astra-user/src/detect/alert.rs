//! The alert model: what was seen (attack type, evidence, the thresholds crossed), how sure
//! and how bad, and what the rule proposes to do.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackType {
    PortScan,
    HostSweep,
    SynFlood,
    BruteForce,
    UdpFlood,
    IcmpFlood,
    Ddos,
    Exfiltration,
    Anomaly,
}

impl AttackType {
    pub const ALL: [AttackType; 9] = [
        AttackType::PortScan,
        AttackType::HostSweep,
        AttackType::SynFlood,
        AttackType::BruteForce,
        AttackType::UdpFlood,
        AttackType::IcmpFlood,
        AttackType::Ddos,
        AttackType::Exfiltration,
        AttackType::Anomaly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttackType::PortScan => "port_scan",
            AttackType::HostSweep => "host_sweep",
            AttackType::SynFlood => "syn_flood",
            AttackType::BruteForce => "brute_force",
            AttackType::UdpFlood => "udp_flood",
            AttackType::IcmpFlood => "icmp_flood",
            AttackType::Ddos => "ddos",
            AttackType::Exfiltration => "exfiltration",
            AttackType::Anomaly => "anomaly",
        }
    }

    /// Base risk of the attack type on a 1-10 scale, before confidence.
    fn base_risk(self) -> f64 {
        match self {
            AttackType::Ddos | AttackType::SynFlood | AttackType::Exfiltration => 8.0,
            AttackType::BruteForce | AttackType::UdpFlood | AttackType::IcmpFlood => 7.0,
            AttackType::PortScan | AttackType::HostSweep => 5.0,
            AttackType::Anomaly => 4.0,
        }
    }
}

impl std::fmt::Display for AttackType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub(super) fn from_risk(risk: u8) -> Self {
        match risk {
            9.. => Severity::Critical,
            7..=8 => Severity::High,
            4..=6 => Severity::Medium,
            _ => Severity::Low,
        }
    }
}

/// How well the evidence is tied to the address it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Realness {
    /// The source completed TCP handshakes: it receives our replies, so it is who it says.
    Handshake,
    /// Sustained traffic from one address that our side answered.
    Repetition,
    /// A few packets, no completed handshake: could be spoofed.
    Unverified,
    /// Many sources with little traffic each toward one target: the pattern of spoofing.
    SpoofedPattern,
}

/// One threshold a rule saw crossed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crossed {
    pub name: String,
    pub value: f64,
    pub threshold: f64,
    pub window_s: u64,
}

impl Crossed {
    pub fn new(name: impl Into<String>, value: f64, threshold: f64, window_s: u64) -> Self {
        Self {
            name: name.into(),
            value,
            threshold,
            window_s,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub thresholds: Vec<Crossed>,
    /// The source's features over the long window (or the target's aggregates).
    pub features: BTreeMap<String, f64>,
    /// Isolation-forest anomaly score (0..1, higher = more anomalous), when a model is loaded.
    pub forest_score: Option<f64>,
    pub realness: Option<Realness>,
    pub notes: Vec<String>,
    /// The imported classifier's class for the source, when one is loaded (see
    /// [`crate::detect::classify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<crate::detect::classify::Verdict>,
}

/// What the policy did about an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Blocked {
        ttl_s: u64,
    },
    /// Confidence high enough to block, but `--dry-run`.
    WouldBlock {
        ttl_s: u64,
    },
    Flagged,
    Recorded,
    /// Target-side alert: sources are not blocked; protect the target instead.
    ProtectTarget,
    /// Not blocked although confident, and why (allowlisted, own address, cap reached).
    NotBlocked {
        why: String,
    },
    /// In the flag band, held to a rate (`policy.throttle`).
    Throttled {
        rate: String,
        ttl_s: u64,
    },
    WouldThrottle {
        rate: String,
        ttl_s: u64,
    },
    /// An inside host quarantined (`policy.quarantine_exfiltration`).
    Quarantined {
        ttl_s: u64,
    },
    WouldQuarantine {
        ttl_s: u64,
    },
    /// The target protected in the kernel (`policy.protect_targets`).
    Protected {
        ttl_s: u64,
    },
    WouldProtect {
        ttl_s: u64,
    },
}

impl Action {
    pub fn label(&self) -> &'static str {
        match self {
            Action::Blocked { .. } => "blocked",
            Action::WouldBlock { .. } => "would_block",
            Action::Flagged => "flagged",
            Action::Recorded => "recorded",
            Action::ProtectTarget => "protect_target",
            Action::NotBlocked { .. } => "not_blocked",
            Action::Throttled { .. } => "throttled",
            Action::WouldThrottle { .. } => "would_throttle",
            Action::Quarantined { .. } => "quarantined",
            Action::WouldQuarantine { .. } => "would_quarantine",
            Action::Protected { .. } => "protected",
            Action::WouldProtect { .. } => "would_protect",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// UNIX time in milliseconds.
    pub timestamp_ms: u64,
    pub attack_type: AttackType,
    pub severity: Severity,
    /// 0..1.
    pub confidence: f64,
    /// 1..10.
    pub risk_score: u8,
    /// The attacking address; `None` for target-side alerts whose sources look spoofed.
    pub source: Option<IpAddr>,
    pub targets: Vec<IpAddr>,
    pub target_ports: Vec<u16>,
    pub rule: String,
    pub evidence: Evidence,
    pub action: Action,
    pub recommended: Vec<String>,
}

pub fn risk_score(t: AttackType, confidence: f64) -> u8 {
    (t.base_risk() + (confidence - 0.75) * 8.0)
        .round()
        .clamp(1.0, 10.0) as u8
}

/// A blocked port-scan alert from 198.18.0.9 against 198.18.1.1, for the tests of the
/// modules that store and log alerts.
#[cfg(test)]
pub(crate) fn sample_alert(id: &str, timestamp_ms: u64) -> Alert {
    Alert {
        id: id.into(),
        timestamp_ms,
        attack_type: AttackType::PortScan,
        severity: Severity::High,
        confidence: 0.95,
        risk_score: 7,
        source: Some("198.18.0.9".parse().expect("an address")),
        targets: vec!["198.18.1.1".parse().expect("an address")],
        target_ports: vec![22, 80],
        rule: "port_scan: distinct_dst_ports = 40 >= 20 in 60 s".into(),
        evidence: Evidence::default(),
        action: Action::Blocked { ttl_s: 600 },
        recommended: vec![],
    }
}
