//! End to end: attacks from one namespace against a server namespace running the real agent,
//! with a benign client in a third namespace during the same run. Each attack must raise the
//! right alert and put a kernel block in place within two poll intervals; the client must not
//! raise any alert; spoofed floods must not fill the blocklist.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use astra::{
    detect::{Action, Alert, AttackType},
    lab::{
        ATTACKER, CLIENT, LOGIN_PORT, SERVER_ATTACKER_SIDE, SERVER_CLIENT_SIDE, Topology, WEB_PORT,
        traffic::{self, SourceAddr},
    },
    sink::events::read_alerts,
};

const POLL: Duration = Duration::from_secs(1);

struct Run {
    topo: Topology,
    client: Option<std::thread::JoinHandle<usize>>,
}

impl Run {
    fn start(extra: &[&str]) -> Run {
        Self::start_polling("1s", extra)
    }

    fn start_polling(poll: &str, extra: &[&str]) -> Run {
        let mut topo = Topology::build(&astra::lab::kit::lab_tag("d")).expect("topology");
        let mut args = vec!["--poll-interval", poll];
        args.extend_from_slice(extra);
        topo.start_agent(Path::new(crate::kit::astra_bin()), &args)
            .expect("agent");
        let client = traffic::web_sessions(
            &topo.clients[0].ns,
            SocketAddr::from((SERVER_CLIENT_SIDE, WEB_PORT)),
            Duration::from_millis(100),
            Duration::from_secs(60),
            topo.services_stop_flag(),
        );
        Run {
            topo,
            client: Some(client),
        }
    }

    /// Waits for the kernel to block the attacker; returns how long it took.
    fn time_to_block(&self, from: Instant) -> Option<Duration> {
        while from.elapsed() < 4 * POLL {
            if self.topo.kernel_blocks(ATTACKER) {
                return Some(from.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn alerts(&self) -> Vec<Alert> {
        read_alerts(&self.topo.events_path(), 0).expect("event log")
    }

    /// Stops the benign client and checks it worked throughout and raised nothing.
    fn finish(&mut self) -> Vec<Alert> {
        // One more poll so anything the client did is through the engine.
        std::thread::sleep(POLL + Duration::from_millis(300));
        self.topo.services_stop_flag().store(true, Ordering::SeqCst);
        let sessions = self.client.take().unwrap().join().unwrap();
        assert!(sessions > 0, "the benign client never completed a session");
        let alerts = self.alerts();
        let client = IpAddr::V4(CLIENT);
        assert!(
            alerts.iter().all(|a| a.source != Some(client)),
            "benign client raised alerts: {alerts:#?}"
        );
        assert!(!self.topo.kernel_blocks(CLIENT), "benign client blocked");
        alerts
    }
}

fn assert_blocked_alert(alerts: &[Alert], t: AttackType) {
    let a = alerts
        .iter()
        .find(|a| a.attack_type == t && a.source == Some(IpAddr::V4(ATTACKER)))
        .unwrap_or_else(|| panic!("no {t} alert from the attacker in {alerts:#?}"));
    assert!(
        matches!(a.action, Action::Blocked { .. }),
        "{t} alert not blocked: {a:#?}"
    );
    assert!(a.confidence >= 0.9, "{a:#?}");
    assert!(!a.evidence.thresholds.is_empty());
}

fn assert_within_two_polls(took: Option<Duration>, what: &str, topo: &Topology) {
    let took = took.unwrap_or_else(|| {
        panic!(
            "{what}: no kernel block within {:?}; agent log:\n{}",
            4 * POLL,
            std::fs::read_to_string(topo.agent_log()).unwrap_or_default()
        )
    });
    assert!(
        took <= 2 * POLL,
        "{what}: kernel block after {took:?} (> 2 polls)"
    );
}

#[test]
fn port_scan_is_detected_and_blocked_in_the_kernel() {
    if !crate::kit::privileged() {
        return;
    }
    let mut run = Run::start(&[]);
    traffic::connect_scan(
        &run.topo.attackers[0].ns,
        IpAddr::V4(SERVER_ATTACKER_SIDE),
        (1..=100).collect(),
    )
    .unwrap();
    let took = run.time_to_block(Instant::now());
    assert_within_two_polls(took, "port scan", &run.topo);
    // Blocked means dropped: the scan now sees nothing, not even the open port.
    let open = traffic::connect_scan(
        &run.topo.attackers[0].ns,
        IpAddr::V4(SERVER_ATTACKER_SIDE),
        vec![WEB_PORT],
    )
    .unwrap();
    assert!(open.is_empty());
    let alerts = run.finish();
    assert_blocked_alert(&alerts, AttackType::PortScan);
}

#[test]
fn syn_flood_from_one_source_is_detected_and_blocked() {
    if !crate::kit::privileged() {
        return;
    }
    let mut run = Run::start(&[]);
    let sent = traffic::syn_flood(
        &run.topo.attackers[0].ns,
        SourceAddr::Real(ATTACKER),
        SERVER_ATTACKER_SIDE,
        80,
        400,
    )
    .unwrap();
    assert_eq!(sent, 400);
    let took = run.time_to_block(Instant::now());
    assert_within_two_polls(took, "SYN flood", &run.topo);
    let alerts = run.finish();
    assert_blocked_alert(&alerts, AttackType::SynFlood);
}

#[test]
fn brute_force_logins_are_detected_and_blocked() {
    if !crate::kit::privileged() {
        return;
    }
    let mut run = Run::start(&[]);
    let done = traffic::login_attempts(
        &run.topo.attackers[0].ns,
        SocketAddr::from((SERVER_ATTACKER_SIDE, LOGIN_PORT)),
        6,
    )
    .unwrap();
    assert_eq!(done, 6);
    let took = run.time_to_block(Instant::now());
    assert_within_two_polls(took, "brute force", &run.topo);
    let alerts = run.finish();
    assert_blocked_alert(&alerts, AttackType::BruteForce);
    // Every automatic block leaves a report a person can read.
    let text = incident_text(&run.topo, &alerts);
    assert!(text.contains("brute force from 198.18.2.2"), "{text}");
}

/// The text incident report of the first alert that put an entry in the kernel.
fn incident_text(topo: &Topology, alerts: &[Alert]) -> String {
    let a = alerts
        .iter()
        .find(|a| {
            matches!(
                a.action,
                Action::Blocked { .. } | Action::Throttled { .. } | Action::Quarantined { .. }
            )
        })
        .expect("an alert that blocked, throttled or quarantined");
    let p = topo
        .state_dir
        .join("incidents")
        .join(format!("{}.txt", a.id));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn spoofed_syn_flood_alerts_on_the_target_and_blocks_no_more_than_the_cap() {
    if !crate::kit::privileged() {
        return;
    }
    let mut run = Run::start(&["--set", "policy.max_blocks_per_minute=5"]);
    // A real client of the target first: it completes a handshake, so the protection must
    // admit its new SYNs before the budget.
    let ns = &run.topo.attackers[0].ns;
    let open = traffic::connect_scan(ns, IpAddr::V4(SERVER_ATTACKER_SIDE), vec![WEB_PORT]).unwrap();
    assert_eq!(open, [WEB_PORT]);
    std::thread::sleep(POLL);
    traffic::syn_flood(
        &run.topo.attackers[0].ns,
        SourceAddr::SpoofedRandom,
        SERVER_ATTACKER_SIDE,
        80,
        3000,
    )
    .unwrap();
    std::thread::sleep(2 * POLL + Duration::from_millis(300));
    let blocks = run.topo.kernel_block_count();
    assert!(
        blocks <= 5,
        "{blocks} blocklist entries from spoofed sources"
    );
    // The target (this host's address) is protected in the kernel instead, for port 80.
    let maps = astra::dataplane::maps::PinnedMaps::open(&run.topo.pin_dir)
        .unwrap()
        .unwrap();
    let entry = maps.prot_v4.get(&SERVER_ATTACKER_SIDE.octets(), 0).unwrap();
    assert_eq!(entry.ports[0], 80);
    assert_eq!(entry.flags, astra_common::protect::ALL);
    assert!(
        maps.known
            .get(&ATTACKER.to_ipv6_mapped().octets(), 0)
            .is_ok(),
        "the source that completed a handshake is known to the protection"
    );
    let alerts = run.finish();
    let target_alert = alerts
        .iter()
        .find(|a| a.attack_type == AttackType::SynFlood && a.source.is_none())
        .unwrap_or_else(|| panic!("no target-side SYN flood alert in {alerts:#?}"));
    assert_eq!(target_alert.action, Action::Protected { ttl_s: 300 });
    assert_eq!(target_alert.targets, vec![IpAddr::V4(SERVER_ATTACKER_SIDE)]);
    assert!(
        target_alert
            .evidence
            .notes
            .iter()
            .any(|n| n.contains("spoofed"))
    );
}

#[test]
fn dry_run_alerts_but_never_blocks() {
    if !crate::kit::privileged() {
        return;
    }
    let mut run = Run::start(&["--dry-run"]);
    traffic::connect_scan(
        &run.topo.attackers[0].ns,
        IpAddr::V4(SERVER_ATTACKER_SIDE),
        (1..=100).collect(),
    )
    .unwrap();
    assert_eq!(run.time_to_block(Instant::now()), None);
    let alerts = run.finish();
    let a = alerts
        .iter()
        .find(|a| a.attack_type == AttackType::PortScan)
        .expect("port scan alert");
    assert!(matches!(a.action, Action::WouldBlock { .. }), "{a:#?}");
}

#[test]
fn the_agent_learns_a_model_from_live_traffic_and_saves_it() {
    if !crate::kit::privileged() {
        return;
    }
    let mut run = Run::start(&["--set", "model.learn_for=3s"]);
    let state = run.topo.state_dir.clone();
    let status = |state: &Path| -> serde_json::Value {
        let out = std::process::Command::new(crate::kit::astra_bin())
            .args(["model", "status", "--json", "--state-dir"])
            .arg(state)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(status(&state)["agent"]["state"], "learning");
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&state)["saved"].is_null() {
        assert!(
            Instant::now() < deadline,
            "no model after 15 s: {}",
            status(&state)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let s = status(&state);
    assert_eq!(s["saved"]["origin"], "native");
    assert!(s["saved"]["rows"].as_u64().unwrap() >= 32, "{s}");
    // The agent scores with it from the next poll on.
    std::thread::sleep(2 * POLL);
    assert_eq!(status(&state)["agent"]["state"], "scoring");
    run.finish();
}

#[test]
fn a_flag_band_port_scan_is_throttled_not_blocked() {
    if !crate::kit::privileged() {
        return;
    }
    // Nothing reaches block confidence 1.0, so the scan stays in the flag band, where the
    // policy throttles port scanners to 5 packets a second.
    let mut run = Run::start(&[
        "--set",
        "policy.block_confidence=1.0",
        "--set",
        r#"policy.throttle={"port_scan": "5pps"}"#,
    ]);
    let ns = &run.topo.attackers[0].ns;
    traffic::connect_scan(ns, IpAddr::V4(SERVER_ATTACKER_SIDE), (1..=100).collect()).unwrap();
    let from = Instant::now();
    while run.topo.kernel_throttle(ATTACKER).is_none() {
        assert!(from.elapsed() < 4 * POLL, "no throttle within 4 polls");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!run.topo.kernel_blocks(ATTACKER));
    // Held to 5 pps: of 200 quick probes, a few get through, the rest are dropped in XDP.
    let open =
        traffic::connect_scan(ns, IpAddr::V4(SERVER_ATTACKER_SIDE), vec![WEB_PORT; 200]).unwrap();
    assert!(open.len() < 50, "{} of 200 connected", open.len());
    let t = run.topo.kernel_throttle(ATTACKER).unwrap();
    assert!(t.dropped > 0, "{t:?}");
    let alerts = run.finish();
    let a = alerts
        .iter()
        .find(|a| a.attack_type == AttackType::PortScan && a.source == Some(IpAddr::V4(ATTACKER)))
        .expect("a port scan alert");
    assert!(
        matches!(a.action, Action::Throttled { ref rate, ttl_s: 600 } if rate.starts_with("5pps")),
        "{a:#?}"
    );
    let text = incident_text(&run.topo, &alerts);
    assert!(
        text.contains("throttled 198.18.2.2 in the kernel to 5pps"),
        "{text}"
    );
}

#[test]
fn an_inside_host_caught_exfiltrating_is_quarantined() {
    if !crate::kit::privileged() {
        return;
    }
    let inside = format!(r#"rules.home_net=["{ATTACKER}/32"]"#);
    let mut run = Run::start_polling(
        "100ms",
        &[
            "--set",
            &inside,
            "--set",
            "policy.quarantine_exfiltration=true",
            "--set",
            "rules.exfil_min_bytes=20000000",
        ],
    );
    // The exfiltration baseline needs 30 polls of the host's normal traffic first.
    std::thread::sleep(Duration::from_secs(4));
    let host = &run.topo.attackers[0].ns;
    let sent = traffic::upload(host, &run.topo.server, SERVER_ATTACKER_SIDE, 200_000_000).unwrap();
    std::thread::sleep(POLL / 2);
    assert!(
        run.topo.kernel_quarantines(ATTACKER),
        "not quarantined after sending {sent} bytes; alerts: {:#?}; agent log: {}",
        run.alerts(),
        std::fs::read_to_string(run.topo.agent_log()).unwrap_or_default()
    );
    assert!(!run.topo.kernel_blocks(ATTACKER));
    assert!(sent < 200_000_000, "the upload went through whole");
    // Cut off: not even the web server answers it now.
    let open =
        traffic::connect_scan(host, IpAddr::V4(SERVER_ATTACKER_SIDE), vec![WEB_PORT]).unwrap();
    assert!(open.is_empty());
    let alerts = run.finish();
    // Earlier polls may have seen part of the upload and only flagged it.
    let a = alerts
        .iter()
        .find(|a| a.attack_type == AttackType::Exfiltration && a.action != Action::Flagged)
        .unwrap_or_else(|| panic!("no exfiltration alert beyond a flag in {alerts:#?}"));
    assert_eq!(a.source, Some(IpAddr::V4(ATTACKER)));
    assert_eq!(a.action, Action::Quarantined { ttl_s: 3600 });
}
