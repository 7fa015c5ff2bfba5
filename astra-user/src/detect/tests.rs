use astra_common::tcp_flags::{ACK, FIN, PSH, RST};

use super::*;
use crate::features::{FeatureConfig, SourceWindow, Tracker, tests::*};

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
            login_s: 600,
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

/// `n` conversations from one source to one target, each of another IP protocol (nmap -sO).
fn protocol_scan(n: u8, now: u64) -> Vec<crate::flow::BiFlow> {
    (0..n)
        .map(|p| {
            let mut f = udp("198.18.0.9", "198.18.1.1", 0, 0, 2, now - 2 * S);
            f.proto = [1, 2, 4, 6, 17, 41, 47, 50, 51, 58, 103, 132, 136][p as usize];
            // ICMP is keyed by type: nmap -sO sends echo requests.
            f.dst_port = match f.proto {
                1 => 8 << 8,
                58 => 128 << 8,
                _ => 0,
            };
            f
        })
        .collect()
}

/// Five failures over six minutes are a brute force: the count spans the login window.
#[test]
fn slow_brute_force_counts_over_the_login_window() {
    let cfg = RuleConfig::default();
    let now = 1000 * S;
    let mut w = SourceWindow::default();
    w.features.conns = 1.0;
    w.top_failed_logins = Some((22, 1));
    let src = ip("198.18.0.7");
    let mut out = Vec::new();
    source_rules(&cfg, src, None, &w, (10, 60, 600), now, &mut out);
    assert!(out.is_empty(), "{out:?}");
    w.login_window_failures = Some((22, 5));
    source_rules(&cfg, src, None, &w, (10, 60, 600), now, &mut out);
    assert_eq!(types(&out), vec![AttackType::BruteForce], "{out:?}");
    assert_eq!(out[0].evidence.thresholds[0].window_s, 600);
    assert_eq!(out[0].target_ports, vec![22]);
}

#[test]
fn an_ip_protocol_scan_is_a_scan() {
    let now = 1000 * S;
    let cfg = RuleConfig::default();
    // Everyday traffic (TCP, UDP, ICMP and a tunnel or four) is not.
    assert!(detect(&protocol_scan(7, now), now, &cfg).is_empty());
    let a = detect(&protocol_scan(8, now), now, &cfg);
    assert_eq!(types(&a), vec![AttackType::PortScan], "{a:?}");
    assert_eq!(a[0].source, Some(ip("198.18.0.9")));
    assert_eq!(
        a[0].evidence.thresholds[0].name, "distinct_protocols",
        "{a:?}"
    );
    assert_eq!(a[0].evidence.thresholds[0].value, 8.0);
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
        detect_with_rates(&bulk, now, &cfg, &[("198.18.0.4", "198.18.1.1", 6, 50_000)]).is_empty()
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
fn an_inside_host_silent_since_the_start_has_a_baseline_of_nothing() {
    let cfg = RuleConfig {
        exfil_min_bytes: 1000,
        ..RuleConfig::default()
    };
    let mut b = ExfilBaselines::default();
    for _ in 0..EXFIL_MIN_SAMPLES {
        b.begin_pass();
    }
    // Pass 30: a host first seen now was silent for 29 passes, one short.
    assert!(b.check(&cfg, ip("198.18.1.2"), 60_000, 60, 0).is_none());
    b.begin_pass();
    let a = b.check(&cfg, ip("198.18.1.3"), 60_000, 60, 0).unwrap();
    assert_eq!(a.source, Some(ip("198.18.1.3")));
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
