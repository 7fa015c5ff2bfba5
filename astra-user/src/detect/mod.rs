//! Rule detectors. Each rule reads the window aggregates from [`crate::features`] and turns a
//! crossed threshold into an [`Alert`] with a confidence that grows with how far the threshold
//! was crossed, capped when the evidence is of the kind an attacker can forge cheaply.

pub mod forest;
pub mod model;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use crate::{
    features::{DestWindow, FEATURE_NAMES, SourceWindow},
    flow::FastMap,
};

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
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn from_risk(risk: u8) -> Self {
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Distinct destination ports from one source in the long window.
    pub port_scan_ports: u64,
    /// Distinct destination hosts from one source in the long window.
    pub host_sweep_hosts: u64,
    /// Half-open conversations toward one destination in the short window.
    pub syn_flood_half_open: u64,
    /// Failed-login-like conversations from one source to one login port in the long window.
    pub brute_force_failures: u64,
    /// UDP / ICMP packets per second from one source over the short window.
    pub udp_flood_pps: f64,
    pub icmp_flood_pps: f64,
    /// Packets or bits per second from one source over the short window (not counting
    /// sources whose TCP conversations mostly completed their handshakes: bulk transfers).
    pub spike_pps: f64,
    pub spike_bps: f64,
    /// Distinct sources toward one target, at a combined packet rate of at least `ddos_pps`.
    pub ddos_sources: u64,
    pub ddos_pps: f64,
    /// An inside host sending `exfil_factor` times its own baseline, and at least
    /// `exfil_min_bytes`, in the long window.
    pub exfil_factor: f64,
    pub exfil_min_bytes: u64,
    /// Packets from one source, answered at least once, that make its address credible.
    pub repetition_packets: u64,
    /// Packets from one source that make it credible even with nothing answered (a flood
    /// kept up from one address is its sender's, or a deliberate frame-up at full volume).
    pub unanswered_repetition_packets: u64,
    /// Highest confidence evidence that could be spoofed may reach: below the block level.
    pub unverified_confidence_cap: f64,
    /// Highest confidence an anomaly score alone may reach (ML evidence flags for review).
    pub anomaly_confidence_cap: f64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            port_scan_ports: 20,
            host_sweep_hosts: 50,
            syn_flood_half_open: 100,
            brute_force_failures: 5,
            udp_flood_pps: 1000.0,
            icmp_flood_pps: 200.0,
            spike_pps: 20_000.0,
            spike_bps: 200e6,
            ddos_sources: 20,
            ddos_pps: 1000.0,
            exfil_factor: 10.0,
            exfil_min_bytes: 50 * 1024 * 1024,
            repetition_packets: 10,
            unanswered_repetition_packets: 1000,
            unverified_confidence_cap: 0.85,
            anomaly_confidence_cap: 0.85,
        }
    }
}

/// Confidence for a value `ratio` times its threshold: 0.7 at the threshold, 0.9 at twice
/// it, approaching 0.99.
pub fn ratio_confidence(ratio: f64) -> f64 {
    if ratio < 1.0 {
        return 0.0;
    }
    round6((0.7 + 0.2 * ratio.log2()).min(0.99))
}

/// Confidences are compared with exact levels (0.9 blocks): keep 0.7 + 0.2 from landing on
/// 0.8999999999999999.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub fn risk_score(t: AttackType, confidence: f64) -> u8 {
    (t.base_risk() + (confidence - 0.75) * 8.0)
        .round()
        .clamp(1.0, 10.0) as u8
}

fn features_map(w: &SourceWindow) -> BTreeMap<String, f64> {
    FEATURE_NAMES
        .iter()
        .zip(w.features.to_vec())
        .map(|(n, v)| (n.to_string(), v))
        .collect()
}

/// How much the source's address can be trusted, from its long-window behaviour.
pub fn realness(w: &SourceWindow, cfg: &RuleConfig) -> Realness {
    if w.handshakes > 0 {
        Realness::Handshake
    } else if (w.fwd_packets >= cfg.repetition_packets && w.replied > 0)
        || w.fwd_packets >= cfg.unanswered_repetition_packets
    {
        Realness::Repetition
    } else {
        Realness::Unverified
    }
}

/// Inputs of one detection pass.
pub struct Windows<'a> {
    pub short_s: u64,
    pub long_s: u64,
    pub src_short: &'a FastMap<IpAddr, SourceWindow>,
    pub src_long: &'a FastMap<IpAddr, SourceWindow>,
    pub dst_short: &'a FastMap<IpAddr, DestWindow>,
}

struct Builder<'a> {
    cfg: &'a RuleConfig,
    now_ms: u64,
    out: Vec<Alert>,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn source_alert(
        &mut self,
        t: AttackType,
        src: IpAddr,
        long: &SourceWindow,
        crossed: Crossed,
        targets: Vec<IpAddr>,
        ports: Vec<u16>,
        recommended: Vec<String>,
    ) {
        let ratio = crossed.value / crossed.threshold.max(f64::MIN_POSITIVE);
        let real = realness(long, self.cfg);
        // Evidence from an address that provably receives our replies is worth more: a
        // threshold crossed by such a source blocks, as fail2ban bans at maxretry.
        let bonus = match real {
            Realness::Handshake => 0.2,
            Realness::Repetition => 0.1,
            Realness::Unverified | Realness::SpoofedPattern => 0.0,
        };
        let mut confidence = if ratio >= 1.0 {
            round6((ratio_confidence(ratio) + bonus).min(0.99))
        } else {
            0.0
        };
        let mut notes = Vec::new();
        if real == Realness::Unverified && confidence > self.cfg.unverified_confidence_cap {
            confidence = self.cfg.unverified_confidence_cap;
            notes.push(format!(
                "no completed handshake and under {} packets from {src}: the address could be spoofed, so this is not enough to block",
                self.cfg.repetition_packets
            ));
        }
        let rule = format!(
            "{t}: {} = {:.0} >= {:.0} in {} s",
            crossed.name, crossed.value, crossed.threshold, crossed.window_s
        );
        self.push(Alert {
            id: String::new(),
            timestamp_ms: self.now_ms,
            attack_type: t,
            severity: Severity::Low,
            confidence,
            risk_score: 0,
            source: Some(src),
            targets,
            target_ports: ports,
            rule,
            evidence: Evidence {
                thresholds: vec![crossed],
                features: features_map(long),
                forest_score: None,
                realness: Some(real),
                notes,
            },
            action: Action::Recorded,
            recommended,
        });
    }

    fn push(&mut self, mut a: Alert) {
        a.risk_score = risk_score(a.attack_type, a.confidence);
        a.severity = Severity::from_risk(a.risk_score);
        self.out.push(a);
    }
}

/// Runs every rule over one set of windows.
pub fn run_rules(cfg: &RuleConfig, w: &Windows<'_>, now_ms: u64) -> Vec<Alert> {
    let mut out = Vec::new();
    let empty = SourceWindow::default();
    let mut sources: Vec<&IpAddr> = w.src_long.keys().chain(w.src_short.keys()).collect();
    sources.sort_unstable();
    sources.dedup();
    for src in sources {
        let long = w.src_long.get(src).unwrap_or(&empty);
        source_rules(
            cfg,
            *src,
            w.src_short.get(src),
            long,
            (w.short_s, w.long_s),
            now_ms,
            &mut out,
        );
    }
    target_rules(cfg, w.dst_short, w.short_s, now_ms, &mut out);
    out
}

/// The rules about one source, given its short window (if it was active in it) and its long
/// window; alerts go to `out`. `windows_s` is (short, long) in seconds.
pub fn source_rules(
    cfg: &RuleConfig,
    src: IpAddr,
    short: Option<&SourceWindow>,
    long: &SourceWindow,
    windows_s: (u64, u64),
    now_ms: u64,
    out: &mut Vec<Alert>,
) {
    let (short_s, long_s) = windows_s;
    let mut b = Builder {
        cfg,
        now_ms,
        out: std::mem::take(out),
    };
    // A source whose half-open conversations spread over many ports is scanning, not flooding.
    let mut scanner = false;
    {
        let f = &long.features;
        if f.distinct_dst_ports >= cfg.port_scan_ports as f64 {
            scanner = true;
            b.source_alert(
                AttackType::PortScan,
                src,
                long,
                Crossed::new(
                    "distinct_dst_ports",
                    f.distinct_dst_ports,
                    cfg.port_scan_ports as f64,
                    long_s,
                ),
                vec![],
                vec![],
                vec!["check which of the probed ports are meant to be reachable".into()],
            );
        }
        if f.distinct_dst_hosts >= cfg.host_sweep_hosts as f64 {
            scanner = true;
            b.source_alert(
                AttackType::HostSweep,
                src,
                long,
                Crossed::new(
                    "distinct_dst_hosts",
                    f.distinct_dst_hosts,
                    cfg.host_sweep_hosts as f64,
                    long_s,
                ),
                vec![],
                vec![],
                vec![],
            );
        }
        if let Some((port, n)) = long.top_failed_logins
            && n >= cfg.brute_force_failures
        {
            b.source_alert(
                AttackType::BruteForce,
                src,
                long,
                Crossed::new(
                    format!("failed_logins_port_{port}"),
                    n as f64,
                    cfg.brute_force_failures as f64,
                    long_s,
                ),
                vec![],
                vec![port],
                vec![format!(
                    "review authentication logs for port {port}; require keys or rate-limit logins"
                )],
            );
        }
    }
    let Some(short) = short else {
        *out = b.out;
        return;
    };
    let f = &short.features;
    let mut flood = false;
    for (t, value, threshold, name) in [
        (
            AttackType::UdpFlood,
            f.udp_pps,
            cfg.udp_flood_pps,
            "udp_pps",
        ),
        (
            AttackType::IcmpFlood,
            f.icmp_pps,
            cfg.icmp_flood_pps,
            "icmp_pps",
        ),
    ] {
        if value >= threshold {
            flood = true;
            b.source_alert(
                t,
                src,
                long,
                Crossed::new(name, value, threshold, short_s),
                vec![],
                vec![],
                vec![],
            );
        }
    }
    // A SYN flood from one address toward one destination (not a scan across ports).
    if !scanner
        && let Some((dst, n)) = short.top_half_open
        && n >= cfg.syn_flood_half_open
    {
        flood = true;
        b.source_alert(
            AttackType::SynFlood,
            src,
            long,
            Crossed::new(
                "half_open_to_one_destination",
                n as f64,
                cfg.syn_flood_half_open as f64,
                short_s,
            ),
            vec![dst],
            vec![],
            vec!["make sure SYN cookies are on (net.ipv4.tcp_syncookies=1)".into()],
        );
    }
    // Bulk transfers over completed handshakes are not spikes.
    let bulk = short.tcp_conns > 0 && short.handshakes * 2 >= short.tcp_conns;
    if !flood && !bulk && (f.pps >= cfg.spike_pps || f.bps >= cfg.spike_bps) {
        let (value, threshold, name) = if f.pps / cfg.spike_pps >= f.bps / cfg.spike_bps {
            (f.pps, cfg.spike_pps, "pps")
        } else {
            (f.bps, cfg.spike_bps, "bps")
        };
        let t = if f.half_open_ratio >= 0.5 {
            AttackType::SynFlood
        } else {
            AttackType::Anomaly
        };
        b.source_alert(
            t,
            src,
            long,
            Crossed::new(name, value, threshold, short_s),
            vec![],
            vec![],
            vec![],
        );
    }
    *out = b.out;
}

/// Alerts about a destination under attack from many sources: whatever the sources are, no
/// single one of them carries the evidence, so none is blocked for it.
pub fn target_rules(
    cfg: &RuleConfig,
    dst_short: &FastMap<IpAddr, DestWindow>,
    short_s: u64,
    now_ms: u64,
    out: &mut Vec<Alert>,
) {
    let mut b = Builder {
        cfg,
        now_ms,
        out: std::mem::take(out),
    };
    for (dst, d) in dst_short {
        let (total, sources, max_one) = (
            d.half_open_in,
            d.half_open_sources,
            d.max_half_open_per_source,
        );
        // One loud source is handled (and blocked) by the per-source rule above, and a scan
        // that spreads half-open probes over ports is the port-scan rule's.
        if total < cfg.syn_flood_half_open
            || max_one >= cfg.syn_flood_half_open
            || (sources == 1 && d.half_open_ports.len() as u64 >= cfg.port_scan_ports)
        {
            continue;
        }
        let dst = *dst;
        let confidence = ratio_confidence(total as f64 / cfg.syn_flood_half_open as f64);
        let mut ports: Vec<(u16, u64)> = d.half_open_ports.iter().map(|(p, n)| (*p, *n)).collect();
        ports.sort_by_key(|p| std::cmp::Reverse(p.1));
        b.push(Alert {
            id: String::new(),
            timestamp_ms: b.now_ms,
            attack_type: AttackType::SynFlood,
            severity: Severity::Low,
            confidence,
            risk_score: 0,
            source: None,
            targets: vec![dst],
            target_ports: ports.iter().take(8).map(|p| p.0).collect(),
            rule: format!(
                "syn_flood: {total} half-open toward {dst} >= {} in {} s",
                cfg.syn_flood_half_open, short_s
            ),
            evidence: Evidence {
                thresholds: vec![Crossed::new("half_open_in", total as f64, cfg.syn_flood_half_open as f64, short_s)],
                features: BTreeMap::from([
                    ("half_open_in".into(), total as f64),
                    ("half_open_sources".into(), sources as f64),
                    ("max_half_open_per_source".into(), max_one as f64),
                    ("fan_in".into(), d.fan_in as f64),
                    ("pps_in".into(), d.pps_in),
                ]),
                forest_score: None,
                realness: Some(Realness::SpoofedPattern),
                notes: vec![format!(
                    "{sources} sources with at most {max_one} half-open each: the sources look spoofed, so none is blocked; protect the target instead"
                )],
            },
            action: Action::ProtectTarget,
            recommended: vec![
                "make sure SYN cookies are on (net.ipv4.tcp_syncookies=1)".into(),
                format!("rate-limit new connections to {dst} upstream"),
            ],
        });
    }
    for (dst, d) in dst_short {
        if d.fan_in >= cfg.ddos_sources && d.pps_in >= cfg.ddos_pps {
            let confidence = ratio_confidence(d.pps_in / cfg.ddos_pps)
                .min(ratio_confidence(d.fan_in as f64 / cfg.ddos_sources as f64).max(0.7));
            b.push(Alert {
                id: String::new(),
                timestamp_ms: b.now_ms,
                attack_type: AttackType::Ddos,
                severity: Severity::Low,
                confidence,
                risk_score: 0,
                source: None,
                targets: vec![*dst],
                target_ports: vec![],
                rule: format!(
                    "ddos: {} sources at {:.0} pps toward {dst} (>= {} sources, >= {:.0} pps) in {} s",
                    d.fan_in, d.pps_in, cfg.ddos_sources, cfg.ddos_pps, short_s
                ),
                evidence: Evidence {
                    thresholds: vec![
                        Crossed::new("fan_in", d.fan_in as f64, cfg.ddos_sources as f64, short_s),
                        Crossed::new("pps_in", d.pps_in, cfg.ddos_pps, short_s),
                    ],
                    features: BTreeMap::from([
                        ("fan_in".into(), d.fan_in as f64),
                        ("pps_in".into(), d.pps_in),
                        ("bps_in".into(), d.bps_in),
                        ("half_open_in".into(), d.half_open_in as f64),
                    ]),
                    forest_score: None,
                    realness: Some(Realness::SpoofedPattern),
                    notes: vec![
                        "many sources toward one target: sources are blocked only on their own evidence".into(),
                    ],
                },
                action: Action::ProtectTarget,
                recommended: vec![format!("ask the upstream provider to filter traffic toward {dst}")],
            });
        }
    }
    *out = b.out;
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

/// Per-inside-host baselines of bytes sent per long window, for the exfiltration rule.
#[derive(Default)]
pub struct ExfilBaselines {
    hosts: HashMap<IpAddr, (f64, u64)>,
}

/// Polls of history a baseline needs before it can alert.
const EXFIL_MIN_SAMPLES: u64 = 30;

impl ExfilBaselines {
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
        let (avg, n) = self.hosts.entry(host).or_insert((0.0, 0));
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
                    notes: vec!["an inside host: never blocked automatically".into()],
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

/// An anomaly alert from the isolation forest's assessment of a source's long-window
/// features (the caller decided it is anomalous).
pub fn anomaly_alert(
    cfg: &RuleConfig,
    src: IpAddr,
    long: &SourceWindow,
    assessment: &model::Assessment,
    now_ms: u64,
) -> Alert {
    let score = assessment.score;
    // 0.7 from a score of 0.55 up, plus 0.1 for a feature far outside the training range,
    // capped: ML evidence alone flags for review.
    let novel = assessment.novelty.is_some();
    let confidence = round6(
        (0.7 + (score - 0.55).max(0.0) + if novel { 0.1 } else { 0.0 })
            .min(cfg.anomaly_confidence_cap)
            .min(0.99),
    );
    let mut thresholds = vec![Crossed::new("forest_score", score, 0.0, 0)];
    let mut notes = vec!["anomaly score alone: flagged for review, not blocked".to_string()];
    let rule = match &assessment.novelty {
        Some(n) => {
            thresholds.push(Crossed::new(
                n.feature.to_string(),
                n.value,
                n.trained_max,
                0,
            ));
            notes.push(format!(
                "{} = {:.0} is {:.0}x the largest value seen in training ({:.0})",
                n.feature, n.value, n.ratio, n.trained_max
            ));
            format!(
                "anomaly: forest score {score:.3}, {} {:.0}x beyond training",
                n.feature, n.ratio
            )
        }
        None => format!("anomaly: isolation forest score {score:.3}"),
    };
    let mut a = Alert {
        id: String::new(),
        timestamp_ms: now_ms,
        attack_type: AttackType::Anomaly,
        severity: Severity::Low,
        confidence,
        risk_score: 0,
        source: Some(src),
        targets: vec![],
        target_ports: vec![],
        rule,
        evidence: Evidence {
            thresholds,
            features: features_map(long),
            forest_score: Some(score),
            realness: Some(realness(long, cfg)),
            notes,
        },
        action: Action::Recorded,
        recommended: vec![format!(
            "look at what {src} is doing; if it is expected, the next retrain learns it"
        )],
    };
    a.risk_score = risk_score(a.attack_type, a.confidence);
    a.severity = Severity::from_risk(a.risk_score);
    a
}

#[cfg(test)]
mod tests {
    use astra_common::tcp_flags::{ACK, FIN, PSH, RST};

    use super::*;
    use crate::features::{FeatureConfig, Tracker, tests::*};
    const SYN: u32 = astra_common::tcp_flags::SYN;
    const RA: u32 = RST | ACK;
    const FULL: u32 = FIN | SYN | PSH | ACK;

    fn detect(flows: &[crate::flow::BiFlow], now: u64, cfg: &RuleConfig) -> Vec<Alert> {
        detect_with_rates(flows, now, cfg, &[])
    }

    fn detect_with_rates(
        flows: &[crate::flow::BiFlow],
        now: u64,
        cfg: &RuleConfig,
        sent: &[(&str, &str, u8, u64)],
    ) -> Vec<Alert> {
        use astra_common::{FlowKey, FlowValue};
        let mut t = Tracker::new(FeatureConfig::default());
        use crate::flow::FlowRecord;
        let recs: Vec<FlowRecord> = sent
            .iter()
            .map(|(src, dst, proto, d)| {
                let m = |s: &str| {
                    s.parse::<std::net::Ipv4Addr>()
                        .unwrap()
                        .to_ipv6_mapped()
                        .octets()
                };
                FlowRecord {
                    key: FlowKey {
                        src: m(src),
                        dst: m(dst),
                        proto: *proto,
                        ..Default::default()
                    },
                    value: FlowValue::default(),
                    delta_packets: *d,
                    delta_bytes: d * 60,
                }
            })
            .collect();
        let live = flows.to_vec();
        t.update(now, &live, &[], recs.iter().map(FlowRecord::delta));
        let ws = t.windows(now, &live);
        run_rules(
            cfg,
            &Windows {
                short_s: 10,
                long_s: 60,
                src_short: &ws.src_short,
                src_long: &ws.src_long,
                dst_short: &ws.dst_short,
            },
            1,
        )
    }
    fn types(a: &[Alert]) -> Vec<AttackType> {
        let mut v: Vec<_> = a.iter().map(|a| a.attack_type).collect();
        v.sort();
        v.dedup();
        v
    }

    fn scan(n: u16, now: u64) -> Vec<crate::flow::BiFlow> {
        (1..=n)
            .map(|p| tcp("198.18.0.9", "198.18.1.1", 40000, p, SYN, RA, now - 2 * S))
            .collect()
    }

    #[test]
    fn port_scan_at_and_around_threshold() {
        let now = 1000 * S;
        let cfg = RuleConfig::default();
        assert!(detect(&scan(19, now), now, &cfg).is_empty());
        let a = detect(&scan(20, now), now, &cfg);
        assert_eq!(types(&a), vec![AttackType::PortScan]);
        // At the threshold, from an address that answered (repetition): flag, not block.
        assert!((a[0].confidence - 0.8).abs() < 1e-9, "{}", a[0].confidence);
        let a = detect(&scan(40, now), now, &cfg);
        assert!((a[0].confidence - 0.99).abs() < 1e-9, "{}", a[0].confidence);
        assert_eq!(a[0].source, Some(ip("198.18.0.9")));
        assert_eq!(a[0].evidence.realness, Some(Realness::Repetition));
    }

    #[test]
    fn a_scan_is_not_a_syn_flood() {
        let now = 1000 * S;
        let a = detect(&scan(500, now), now, &RuleConfig::default());
        assert_eq!(types(&a), vec![AttackType::PortScan]);
    }

    #[test]
    fn host_sweep_at_and_around_threshold() {
        let now = 1000 * S;
        let sweep = |n: u8| -> Vec<_> {
            (1..=n)
                .map(|h| {
                    tcp(
                        "198.18.0.9",
                        &format!("198.19.0.{h}"),
                        40000,
                        80,
                        SYN,
                        RA,
                        now - S,
                    )
                })
                .collect()
        };
        assert!(detect(&sweep(49), now, &RuleConfig::default()).is_empty());
        assert_eq!(
            types(&detect(&sweep(50), now, &RuleConfig::default())),
            vec![AttackType::HostSweep]
        );
    }

    #[test]
    fn brute_force_at_and_around_threshold() {
        let now = 1000 * S;
        let tries = |n: u16| -> Vec<_> {
            (0..n)
                .map(|i| {
                    tcp(
                        "198.18.0.7",
                        "198.18.1.1",
                        50000 + i,
                        22,
                        FULL,
                        FULL,
                        now - 20 * S,
                    )
                })
                .collect()
        };
        assert!(detect(&tries(4), now, &RuleConfig::default()).is_empty());
        let a = detect(&tries(5), now, &RuleConfig::default());
        assert_eq!(types(&a), vec![AttackType::BruteForce]);
        assert_eq!(a[0].target_ports, vec![22]);
        assert_eq!(a[0].evidence.realness, Some(Realness::Handshake));
        // Completed handshakes tie it to a real source: blocks at the threshold.
        assert!(a[0].confidence >= 0.9, "{}", a[0].confidence);
    }

    #[test]
    fn single_source_syn_flood_at_and_around_threshold() {
        let now = 1000 * S;
        let flood = |n: u16| -> Vec<_> {
            (0..n)
                .map(|i| tcp("198.18.0.6", "198.18.1.1", 1024 + i, 80, SYN, 0x12, now - S))
                .collect()
        };
        assert!(detect(&flood(99), now, &RuleConfig::default()).is_empty());
        let a = detect(&flood(100), now, &RuleConfig::default());
        assert_eq!(types(&a), vec![AttackType::SynFlood]);
        assert_eq!(a[0].source, Some(ip("198.18.0.6")));
        assert_eq!(a.len(), 1, "one loud source: no separate target alert");
    }

    #[test]
    fn spoofed_syn_flood_alerts_on_the_target_and_names_no_source() {
        let now = 1000 * S;
        let flows: Vec<_> = (0..300u32)
            .map(|i| {
                let src = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                tcp(&src, "198.18.1.1", 1024, 80, SYN, 0x12, now - S)
            })
            .collect();
        let a = detect(&flows, now, &RuleConfig::default());
        assert_eq!(types(&a), vec![AttackType::SynFlood]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].source, None);
        assert_eq!(a[0].targets, vec![ip("198.18.1.1")]);
        assert_eq!(a[0].action, Action::ProtectTarget);
        assert!(a[0].evidence.notes[0].contains("spoofed"));
    }

    #[test]
    fn udp_and_icmp_floods_at_and_around_threshold() {
        let now = 1000 * S;
        let f = [udp("198.18.0.5", "198.18.1.1", 1, 53, 10, now)];
        // 1000 pps over the 10 s window = 10000 packets.
        let below = detect_with_rates(
            &f,
            now,
            &RuleConfig::default(),
            &[("198.18.0.5", "198.18.1.1", 17, 9_999)],
        );
        assert!(below.is_empty(), "{below:?}");
        let at = detect_with_rates(
            &f,
            now,
            &RuleConfig::default(),
            &[("198.18.0.5", "198.18.1.1", 17, 10_000)],
        );
        assert_eq!(types(&at), vec![AttackType::UdpFlood]);
        let icmp = detect_with_rates(
            &f,
            now,
            &RuleConfig::default(),
            &[("198.18.0.5", "198.18.1.1", 1, 2_000)],
        );
        assert_eq!(types(&icmp), vec![AttackType::IcmpFlood]);
        let below = detect_with_rates(
            &f,
            now,
            &RuleConfig::default(),
            &[("198.18.0.5", "198.18.1.1", 1, 1_999)],
        );
        assert!(below.is_empty());
    }

    #[test]
    fn ddos_fan_in_at_and_around_threshold() {
        let now = 1000 * S;
        // n sources, 50 pps each (500 packets in the 10 s window), toward one target.
        let run = |n: u8| {
            let srcs: Vec<String> = (1..=n).map(|i| format!("198.18.0.{i}")).collect();
            let flows: Vec<_> = srcs
                .iter()
                .map(|s| udp(s, "198.18.1.1", 1000, 53, 10, now))
                .collect();
            let rates: Vec<(&str, &str, u8, u64)> = srcs
                .iter()
                .map(|s| (s.as_str(), "198.18.1.1", 6u8, 500))
                .collect();
            detect_with_rates(&flows, now, &RuleConfig::default(), &rates)
        };
        assert!(
            run(19).iter().all(|a| a.attack_type != AttackType::Ddos),
            "19 sources"
        );
        let a = run(20);
        let d = a
            .iter()
            .find(|a| a.attack_type == AttackType::Ddos)
            .expect("20 sources at 1000 pps");
        assert_eq!(d.source, None);
        assert_eq!(d.action, Action::ProtectTarget);
        // Enough sources but too little traffic: not a DDoS.
        let quiet: Vec<_> = (1..=30u8)
            .map(|i| udp(&format!("198.18.0.{i}"), "198.18.1.1", 1000, 53, 1, now))
            .collect();
        assert!(detect(&quiet, now, &RuleConfig::default()).is_empty());
    }

    #[test]
    fn traffic_spike_at_and_around_threshold_but_not_for_bulk_transfers() {
        let now = 1000 * S;
        let cfg = RuleConfig {
            spike_pps: 1000.0,
            udp_flood_pps: 1e9,
            ..RuleConfig::default()
        };
        // Half-open TCP toward two hosts, 1000 pps over 10 s: a spike of SYN-like traffic.
        let syns = [
            tcp("198.18.0.4", "198.18.1.1", 1, 80, SYN, 0, now - S),
            tcp("198.18.0.4", "198.18.1.2", 2, 80, SYN, 0, now - S),
        ];
        let below = detect_with_rates(&syns, now, &cfg, &[("198.18.0.4", "198.18.1.1", 6, 9_999)]);
        assert!(below.is_empty(), "{below:?}");
        let at = detect_with_rates(&syns, now, &cfg, &[("198.18.0.4", "198.18.1.1", 6, 10_000)]);
        assert_eq!(types(&at), vec![AttackType::SynFlood]);
        assert_eq!(at[0].evidence.thresholds[0].name, "pps");
        // The same rate over completed handshakes is a bulk transfer, not a spike.
        let bulk = [tcp("198.18.0.4", "198.18.1.1", 1, 80, FULL, FULL, now - S)];
        assert!(
            detect_with_rates(&bulk, now, &cfg, &[("198.18.0.4", "198.18.1.1", 6, 50_000)])
                .is_empty()
        );
    }

    #[test]
    fn unverified_sources_are_capped_below_blocking() {
        let now = 1000 * S;
        // Three SYNs to many ports, no answer at all, no handshake: could be anyone.
        let flows: Vec<_> = (1..=200)
            .map(|p| tcp("198.18.0.9", "198.18.1.1", 40000, p, SYN, 0, now - S))
            .collect();
        let a = detect(&flows, now, &RuleConfig::default());
        let scan = a
            .iter()
            .find(|a| a.attack_type == AttackType::PortScan)
            .unwrap();
        assert_eq!(scan.evidence.realness, Some(Realness::Unverified));
        assert!(scan.confidence <= 0.85, "{}", scan.confidence);
    }

    #[test]
    fn exfiltration_needs_a_baseline_and_a_big_jump() {
        let cfg = RuleConfig {
            exfil_min_bytes: 1000,
            ..RuleConfig::default()
        };
        let mut b = ExfilBaselines::default();
        let h = ip("198.18.1.1");
        for _ in 0..EXFIL_MIN_SAMPLES {
            assert!(b.check(&cfg, h, 5_000, 60, 0).is_none());
        }
        assert!(b.check(&cfg, h, 49_999, 60, 0).is_none(), "just under 10x");
        let a = b.check(&cfg, h, 60_000, 60, 0).unwrap();
        assert_eq!(a.attack_type, AttackType::Exfiltration);
    }

    #[test]
    fn confidence_and_risk_scales() {
        assert_eq!(ratio_confidence(0.99), 0.0);
        assert!((ratio_confidence(1.0) - 0.7).abs() < 1e-12);
        assert!((ratio_confidence(2.0) - 0.9).abs() < 1e-12);
        assert_eq!(ratio_confidence(1e9), 0.99);
        assert_eq!(risk_score(AttackType::PortScan, 0.75), 5);
        assert_eq!(risk_score(AttackType::SynFlood, 0.99), 10);
        assert_eq!(risk_score(AttackType::Anomaly, 0.0), 1);
    }

    #[test]
    fn anomaly_alerts_are_capped_and_explain_novelty() {
        use crate::detect::model::{Assessment, Novelty};
        let w = SourceWindow::default();
        let cfg = RuleConfig::default();
        let plain = anomaly_alert(
            &cfg,
            ip("1.2.3.4"),
            &w,
            &Assessment {
                score: 0.66,
                novelty: None,
            },
            0,
        );
        assert!(
            (plain.confidence - 0.81).abs() < 1e-9,
            "{}",
            plain.confidence
        );
        let novel = Assessment {
            score: 0.9,
            novelty: Some(Novelty {
                feature: "conns",
                value: 900.0,
                trained_max: 20.0,
                ratio: 45.0,
            }),
        };
        let a = anomaly_alert(&cfg, ip("1.2.3.4"), &w, &novel, 0);
        assert_eq!(a.confidence, 0.85);
        assert!(
            a.evidence
                .notes
                .iter()
                .any(|n| n.contains("conns = 900 is 45x")),
            "{:?}",
            a.evidence.notes
        );
    }
}
