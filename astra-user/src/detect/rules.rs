//! The rules: thresholds over the source and target windows, each crossing an alert whose
//! confidence grows with the margin; and the model's anomalies as alerts.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::*;
use crate::{
    features::{DestWindow, FEATURE_NAMES, SourceWindow},
    flow::FastMap,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Distinct destination ports from one source in the long window.
    pub port_scan_ports: u64,
    /// Distinct IP protocols from one source in the long window (nmap -sO). Everyday traffic
    /// carries TCP, UDP and ICMP, a tunnel or two at most.
    pub protocol_scan_protocols: u64,
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
    /// Inside networks (Suricata's HOME_NET), e.g. `["198.18.100.0/24"]`: their hosts are
    /// watched by the exfiltration rule besides this host's own addresses (on a gateway, the
    /// hosts behind it), and only they may be quarantined (`policy.quarantine_exfiltration`).
    pub home_net: Vec<ipnet::IpNet>,
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
            protocol_scan_protocols: 8,
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
            home_net: Vec::new(),
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
pub(super) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub(super) fn features_map(w: &SourceWindow) -> BTreeMap<String, f64> {
    FEATURE_NAMES
        .iter()
        .zip(w.features.to_vec())
        .map(|(n, v)| (n.to_string(), v))
        .collect()
}

/// How much the source's address can be trusted, from its long-window behaviour.
pub fn realness(w: &SourceWindow, cfg: &RuleConfig) -> Realness {
    // A service that rejected a password from the source had a connection with it.
    if w.handshakes > 0 || w.reported_login_failures > 0 {
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
    /// The login window (failed logins), in seconds.
    pub login_s: u64,
    pub src_short: &'a FastMap<IpAddr, SourceWindow>,
    pub src_long: &'a FastMap<IpAddr, SourceWindow>,
    pub dst_short: &'a FastMap<IpAddr, DestWindow>,
}

pub(super) struct Builder<'a> {
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
                classifier: None,
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
            (w.short_s, w.long_s, w.login_s),
            now_ms,
            &mut out,
        );
    }
    target_rules(cfg, w.dst_short, w.short_s, now_ms, &mut out);
    out
}

/// The rules about one source, given its short window (if it was active in it) and its long
/// window; alerts go to `out`. `windows_s` is (short, long, login) in seconds.
pub fn source_rules(
    cfg: &RuleConfig,
    src: IpAddr,
    short: Option<&SourceWindow>,
    long: &SourceWindow,
    windows_s: (u64, u64, u64),
    now_ms: u64,
    out: &mut Vec<Alert>,
) {
    let (short_s, long_s, login_s) = windows_s;
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
        } else if long.distinct_protocols >= cfg.protocol_scan_protocols {
            // An IP-protocol scan: the same question asked of the protocol field instead of
            // the port, so the same kind of alert.
            scanner = true;
            b.source_alert(
                AttackType::PortScan,
                src,
                long,
                Crossed::new(
                    "distinct_protocols",
                    long.distinct_protocols as f64,
                    cfg.protocol_scan_protocols as f64,
                    long_s,
                ),
                vec![],
                vec![],
                vec!["check which IP protocols the target is meant to answer".into()],
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
        // Over the login window, so slow guessing (a try a minute) adds up as fail2ban's
        // findtime makes it; the long window's count is part of it.
        if let Some((port, n)) = long.login_window_failures.or(long.top_failed_logins)
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
                    login_s.max(long_s),
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
                classifier: None,
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
                    classifier: None,
                },
                action: Action::ProtectTarget,
                recommended: vec![format!("ask the upstream provider to filter traffic toward {dst}")],
            });
        }
    }
    *out = b.out;
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
            classifier: None,
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
