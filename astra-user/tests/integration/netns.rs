//! Real traffic through veth pairs between namespaces the tests create, with the real agent
//! binary attached: counting, blocking, expiry, restarts and restores, end to end.

use std::{
    net::IpAddr,
    process::{Command, Stdio},
    time::Duration,
};

use astra_common::action;

use crate::kit::{Agent, Lab, ScratchDir, cli, cli_ok, pin_dir, sample, state_dir};

fn pass_series(iface: &str) -> String {
    format!(r#"astra_packets_total{{action="pass",direction="ingress",iface="{iface}"}}"#)
}

fn drops_series(iface: &str, reason: &str) -> String {
    format!(r#"astra_drops_total{{iface="{iface}",reason="{reason}"}}"#)
}

fn flow_packets(pin: &ScratchDir, src: &str, dst: &str, sport: u16, dport: u16) -> u64 {
    let maps = astra::dataplane::maps::PinnedMaps::open(pin.path())
        .unwrap()
        .unwrap();
    let mut raw = Vec::new();
    maps.read_flows(&mut raw).unwrap();
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    raw.iter()
        .filter(|(k, _)| {
            astra::flow::key_addr(k.src) == src
                && astra::flow::key_addr(k.dst) == dst
                && k.src_port == sport
                && k.dst_port == dport
                && k.proto == 17
        })
        .map(|(_, v)| v.packets)
        .sum()
}

#[test]
fn sent_packets_are_counted_exactly_in_flows_and_metrics() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let before = sample(&agent.metrics(), &pass_series(&lab.if_b)).unwrap();
    const N: usize = 137;
    lab.send_udp(&lab.a_v4(), &lab.b_v4(), 40001, 7001, N);
    agent.settle();
    assert_eq!(
        flow_packets(&pin, &lab.a_v4(), &lab.b_v4(), 40001, 7001),
        N as u64
    );
    let after = sample(&agent.metrics(), &pass_series(&lab.if_b)).unwrap();
    assert_eq!(after - before, N as f64, "astra_packets_total pass delta");

    // `astra flows` shows the same flow, with B's replies (ICMP port unreachable) paired.
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["flows", "--json", "--top", "100"],
    );
    let flows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src_port"] == 40001 && f["dst_port"] == 7001)
        .expect("flow listed");
    assert_eq!(f["fwd"]["packets"], N as u64);
    assert_eq!(f["src"], lab.a_v4());
    let table = cli_ok(pin.path(), state.path(), &["flows"]);
    assert!(table.contains(&format!("{}:40001", lab.a_v4())), "{table}");
}

#[test]
fn blocked_source_is_dropped_counted_and_passes_again_when_unblocked() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 5), 5);

    let out = cli_ok(
        pin.path(),
        state.path(),
        &["block", &lab.a_v4(), "--reason", "test"],
    );
    assert!(out.contains("in force now"), "{out}");
    let m0 = agent.metrics();
    assert_eq!(
        lab.deliver(&lab.a_v4(), &lab.b_v4(), 20),
        0,
        "blocked packets delivered"
    );
    agent.settle();
    let m1 = agent.metrics();
    let series = drops_series(&lab.if_b, "blocked_address");
    assert_eq!(
        sample(&m1, &series).unwrap() - sample(&m0, &series).unwrap(),
        20.0
    );
    let list: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["list", "--json"])).unwrap();
    let row = &list.as_array().unwrap()[0];
    assert_eq!(row["net"], format!("{}/32", lab.a_v4()));
    assert_eq!(row["hits"], 20);
    assert_eq!(row["reason"], "test");
    assert_eq!(row["source"], "manual");
    assert_eq!(row["ttl_remaining_s"], serde_json::Value::Null);

    cli_ok(pin.path(), state.path(), &["unblock", &lab.a_v4()]);
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 7), 7);
    // The other direction of the same conversation was never affected.
    drop(agent);
}

#[test]
fn cidr_block_covers_its_range_and_allowlist_wins() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let friend = format!("198.18.{}.3", lab.net);
    let outside = format!("198.18.{}.130", lab.net);
    lab.add_a_addr(&format!("{friend}/24"));
    lab.add_a_addr(&format!("{outside}/24"));
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);

    cli_ok(
        pin.path(),
        state.path(),
        &["block", &format!("198.18.{}.0/25", lab.net)],
    );
    cli_ok(pin.path(), state.path(), &["allow", &friend]);
    assert_eq!(
        lab.deliver(&lab.a_v4(), &lab.b_v4(), 10),
        0,
        ".1 is inside the /25"
    );
    assert_eq!(
        lab.deliver(&friend, &lab.b_v4(), 10),
        10,
        "allowlisted .3 passes"
    );
    assert_eq!(
        lab.deliver(&outside, &lab.b_v4(), 10),
        10,
        ".130 is outside the /25"
    );
    agent.settle();
    let m = agent.metrics();
    assert_eq!(
        sample(&m, &drops_series(&lab.if_b, "blocked_prefix")),
        Some(10.0)
    );
    let allowed = format!(
        r#"astra_packets_total{{action="pass_allowlisted",direction="ingress",iface="{}"}}"#,
        lab.if_b
    );
    assert_eq!(sample(&m, &allowed), Some(10.0));

    cli_ok(pin.path(), state.path(), &["allow", "--remove", &friend]);
    assert_eq!(
        lab.deliver(&friend, &lab.b_v4(), 5),
        0,
        "no longer allowlisted"
    );
}

#[test]
fn ipv6_blocks_work_like_ipv4_ones() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let _agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 5), 5);
    cli_ok(pin.path(), state.path(), &["block", &lab.a_v6()]);
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 5), 0);
    cli_ok(pin.path(), state.path(), &["unblock", &lab.a_v6()]);
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 5), 5);
    let prefix = format!("2001:db8:{}::/48", lab.net);
    cli_ok(pin.path(), state.path(), &["block", &prefix]);
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 5), 0);
    // IPv4 from the same host is unaffected by an IPv6 block.
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 5), 5);
}

/// Reads B's drop and pass counters straight from the pinned maps (works with no agent).
fn kernel_counts(pin: &ScratchDir, ifindex: u32) -> (u64, u64) {
    let maps = astra::dataplane::maps::PinnedMaps::open(pin.path())
        .unwrap()
        .unwrap();
    let c = maps.iface_counters(ifindex).unwrap();
    (
        c[action::DROP_BLOCKED as usize].packets,
        c[action::PASS as usize].packets,
    )
}

#[test]
fn ttl_expires_in_the_kernel_while_the_agent_is_dead() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    cli_ok(
        pin.path(),
        state.path(),
        &["block", &lab.a_v4(), "--ttl", "3s"],
    );
    agent.kill9();
    let ifindex = lab.b_ifindex();
    let (d0, _) = kernel_counts(&pin, ifindex);
    assert_eq!(
        lab.deliver(&lab.a_v4(), &lab.b_v4(), 4),
        0,
        "still blocked, agent dead"
    );
    assert_eq!(kernel_counts(&pin, ifindex).0 - d0, 4);
    std::thread::sleep(Duration::from_millis(3300));
    assert_eq!(
        lab.deliver(&lab.a_v4(), &lab.b_v4(), 4),
        4,
        "expired with no agent to sweep it"
    );
    assert_eq!(
        kernel_counts(&pin, ifindex).0 - d0,
        4,
        "no drops after expiry"
    );
}

#[test]
fn blocks_survive_kill9_and_a_restarted_agent_takes_over() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    cli_ok(
        pin.path(),
        state.path(),
        &["block", &lab.a_v4(), "--ttl", "10m"],
    );
    agent.kill9();
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 5), 0);
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert!(
        agent.log().contains("took over the XDP link"),
        "{}",
        agent.log()
    );
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 5), 0);
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["status", "--json"])).unwrap();
    assert_eq!(status["agent_running"], true);
    assert_eq!(status["block_entries"], 1);
    assert_eq!(status["agent"]["interfaces"][0]["mode"], "inherited");
    let list: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["list", "--json"])).unwrap();
    let ttl = list[0]["ttl_remaining_s"].as_u64().unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
    // A clean stop detaches: traffic flows, but the block is still pinned for the next start.
    let st = agent.stop();
    assert!(st.success(), "agent exit {st}");
    assert_eq!(
        lab.deliver(&lab.a_v4(), &lab.b_v4(), 3),
        3,
        "detached after SIGTERM"
    );
    assert!(pin.path().join("ASTRA_BLOCK_V4").exists());
    assert!(
        !pin.path()
            .join("links")
            .join(format!("xdp-{}", lab.if_b))
            .exists()
    );
}

#[test]
fn durable_store_restores_blocks_into_new_maps() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    // Before any agent ran (as after a reboot): stored, applied at start.
    std::fs::remove_dir_all(pin.path()).unwrap();
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["block", &lab.a_v4(), "--ttl", "1h", "--reason", "pre"],
    );
    assert!(out.contains("stored"), "{out}");
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 5), 0);
    cli_ok(pin.path(), state.path(), &["block", &lab.a_v6()]);
    assert!(agent.stop().success());

    // A reboot empties bpffs: the maps come back empty and are refilled from the store.
    std::fs::remove_dir_all(pin.path()).unwrap();
    let _agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert_eq!(
        lab.deliver(&lab.a_v4(), &lab.b_v4(), 5),
        0,
        "v4 block restored"
    );
    assert_eq!(
        lab.deliver(&lab.a_v6(), &lab.b_v6(), 5),
        0,
        "v6 block restored"
    );
    let list: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["list", "--json"])).unwrap();
    let pre = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "pre")
        .unwrap();
    assert_eq!(pre["in_kernel"], true);
    assert!(pre["ttl_remaining_s"].as_u64().unwrap() > 3500);
}

#[test]
fn quarantine_and_throttle_survive_restarts_and_reboots() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let (a4, a6) = (lab.a_v4(), lab.a_v6());
    // Before any agent ran (as after a reboot): stored, applied at start.
    std::fs::remove_dir_all(pin.path()).unwrap();
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["quarantine", &a4, "--ttl", "1h"],
    );
    assert!(out.contains("stored"), "{out}");
    // 50 pps with 100 ms of burst: of a quick 50, about 6 pass (neighbour discovery, which
    // the limit counts too, may take one or two).
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["throttle", &a6, "--rate", "50pps"],
    );
    assert!(out.contains("stored"), "{out}");
    let check = |when: &str| {
        assert_eq!(lab.deliver(&a4, &lab.b_v4(), 5), 0, "{when}: quarantine");
        let got = lab.deliver(&a6, &lab.b_v6(), 50);
        assert!(
            (1..=10).contains(&got),
            "{when}: {got} of 50 passed a 50 pps throttle"
        );
    };
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    check("first start");
    assert!(agent.stop().success());
    // A restart keeps the pinned maps, the tier word with them.
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    std::thread::sleep(Duration::from_secs(1));
    check("restart");
    assert!(agent.stop().success());
    // A reboot empties bpffs: both come back from the store.
    std::fs::remove_dir_all(pin.path()).unwrap();
    let _agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    check("reboot");
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["status", "--json"])).unwrap();
    assert_eq!(status["quarantine_entries"], 1);
    assert_eq!(status["throttle_entries"], 1);
    assert_eq!(
        status["tiers"],
        serde_json::json!(["quarantine", "throttle"])
    );
}

#[test]
fn metrics_pass_promtool_check() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    cli_ok(pin.path(), state.path(), &["block", &lab.a_v4()]);
    lab.deliver(&lab.a_v4(), &lab.b_v4(), 3);
    agent.settle();
    let metrics = agent.metrics();
    for name in [
        "astra_packets_total",
        "astra_bytes_total",
        "astra_flows_active",
        "astra_flow_table_insert_failures_total",
        "astra_blocklist_entries",
        "astra_drops_total",
        "astra_poll_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_to_replace_a_foreign_xdp_program() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (other_pin, pin, state) = (pin_dir(), pin_dir(), state_dir());
    // Another XDP program (a second, unrelated astra instance) already owns the interface.
    let ns = lab.ns_b.clone();
    let ifc = lab.if_b.clone();
    let other = other_pin.path().to_owned();
    let mut foreign = Lab::in_ns(&ns, move || {
        let mut dp = astra::dataplane::Dataplane::load(&other, 1024).unwrap();
        dp.attach(&ifc, astra::dataplane::XdpModeArg::Skb).unwrap();
        dp
    });
    let out = astra::lab::netns::command_in(
        &format!("/var/run/netns/{}", lab.ns_b),
        crate::kit::astra_bin(),
    )
    .unwrap()
    .args(["run", "--iface", &lab.if_b, "--metrics-addr"])
    .arg(format!("127.0.0.1:{}", crate::kit::free_port()))
    .arg("--pin-dir")
    .arg(pin.path())
    .arg("--state-dir")
    .arg(state.path())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already has an XDP program"), "{err}");
    foreign.detach_all();
}

#[test]
fn bad_agent_input_is_rejected_before_anything_is_attached() {
    if !crate::kit::privileged() {
        return;
    }
    let (pin, state) = (pin_dir(), state_dir());
    let (code, _, err) = cli(pin.path(), state.path(), &["run", "--iface", "astra-nope0"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), "astra: unknown interface astra-nope0");
    assert!(!pin.path().join("ASTRA_FLOWS").exists(), "nothing loaded");
}

#[test]
fn tc_egress_makes_a_hosts_own_replies_part_of_the_flow() {
    if !crate::kit::privileged() {
        return;
    }
    use std::io::{Read as _, Write as _};
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let b = lab.b_v4();
    let listener = Lab::in_ns(&lab.ns_b, move || {
        std::net::TcpListener::bind((b.as_str(), 0)).unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&vec![7u8; 200_000]).unwrap();
    });
    let to: std::net::SocketAddr = format!("{}:{port}", lab.b_v4()).parse().unwrap();
    let sport = Lab::in_ns(&lab.ns_a, move || {
        let mut c = std::net::TcpStream::connect(to).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 200_000);
        c.local_addr().unwrap().port()
    });
    server.join().unwrap();
    agent.settle();
    let flows: serde_json::Value = serde_json::from_str(&cli_ok(
        pin.path(),
        state.path(),
        &["flows", "--json", "--top", "100"],
    ))
    .unwrap();
    let f = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src_port"] == sport && f["dst_port"] == port)
        .unwrap_or_else(|| panic!("no flow {sport}->{port} in {flows:#}"));
    assert_eq!(f["src"], lab.a_v4(), "the client initiated");
    let (rp, rb) = (
        f["rev"]["packets"].as_u64().unwrap(),
        f["rev"]["bytes"].as_u64().unwrap(),
    );
    assert!(rb > 200_000, "replies seen on egress: {f:#}");
    // veth hands TCP large GSO packets; each still leaves as MTU-sized frames (<= 1514 bytes),
    // and that is what must be counted.
    assert!(
        rp >= rb / 1514,
        "{rp} packets for {rb} bytes: GSO segments not counted"
    );
    // SYN from the client, SYN-ACK from the server: both directions' flags are in the OR.
    assert_eq!(f["tcp_flags"].as_u64().unwrap() & 0x12, 0x12, "{f:#}");
}
