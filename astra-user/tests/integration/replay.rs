//! `astra replay`: captures written here (pcap and pcapng, every supported link type) go
//! through the real XDP program into private maps and the engine on the capture's clock.

use std::{net::IpAddr, path::Path};

use astra::{
    detect::AttackType,
    replay::{ReplayConfig, ReplayReport, replay},
};
use etherparse::PacketBuilder;

use crate::kit::{ScratchDir, cli, pin_dir, privileged, state_dir, unique};

const NS: u64 = 1_000_000_000;
/// 2023-11-14T22:13:20Z: captures are judged on their own time, whatever the date today.
const T0: u64 = 1_700_000_000 * NS;
const SCANNER: [u8; 4] = [198, 18, 0, 66];
const SERVER: [u8; 4] = [198, 18, 1, 10];
const CLIENT: [u8; 4] = [198, 18, 0, 20];

const SYN: u8 = 0x02;
const RST_ACK: u8 = 0x14;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;

/// An Ethernet/IPv4/TCP frame with the given flags.
fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 65535);
    let b = match flags {
        SYN => b.syn(),
        RST_ACK => b.rst().ack(1),
        SYN_ACK => b.syn().ack(1),
        ACK => b.ack(1),
        PSH_ACK => b.psh().ack(1),
        FIN_ACK => b.fin().ack(1),
        _ => unreachable!("flags the tests use"),
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("frame builds");
    out
}

/// A packet of a capture: time, frame, length on the wire.
type Pkt = (u64, Vec<u8>, u32);

/// A SYN scan of `ports` ports (answered by RST), one every `gap_ns`, then a benign client's
/// complete web requests to the scanned server.
fn scan_and_benign(ports: u16, gap_ns: u64) -> Vec<Pkt> {
    let mut out = Vec::new();
    let mut t = T0;
    let mut push = |t: u64, f: Vec<u8>| {
        let n = f.len() as u32;
        out.push((t, f, n));
    };
    // A fresh source port per probe, as connect scans and masscan use: once the scanner is
    // blocked, the server's refusals of the probes it sent anyway (they are in the capture)
    // go to as many ports of the scanner.
    for p in 1..=ports {
        push(t, tcp(SCANNER, SERVER, 40000 + p, p, SYN, b""));
        push(
            t + 200_000,
            tcp(SERVER, SCANNER, p, 40000 + p, RST_ACK, b""),
        );
        t += gap_ns;
    }
    for i in 0..20u16 {
        let sp = 50000 + i;
        push(t, tcp(CLIENT, SERVER, sp, 80, SYN, b""));
        push(t + 100_000, tcp(SERVER, CLIENT, 80, sp, SYN_ACK, b""));
        push(t + 200_000, tcp(CLIENT, SERVER, sp, 80, ACK, b""));
        push(
            t + 300_000,
            tcp(CLIENT, SERVER, sp, 80, PSH_ACK, b"GET / HTTP/1.0\r\n\r\n"),
        );
        push(
            t + 500_000,
            tcp(SERVER, CLIENT, 80, sp, PSH_ACK, &[b'x'; 600]),
        );
        push(t + 600_000, tcp(CLIENT, SERVER, sp, 80, FIN_ACK, b""));
        push(t + 700_000, tcp(SERVER, CLIENT, 80, sp, FIN_ACK, b""));
        t += 50_000_000;
    }
    out
}

/// Link types by their LINKTYPE_ number, and how a frame is written for each.
fn relink(linktype: u32, eth: &[u8]) -> Vec<u8> {
    let (ethertype, payload) = ([eth[12], eth[13]], &eth[14..]);
    let mut out = Vec::new();
    match linktype {
        1 => return eth.to_vec(),
        113 => {
            // pkttype, ARPHRD_ETHER, address length, address, protocol
            out.extend_from_slice(&[0, 0, 0, 1, 0, 6]);
            out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
            out.extend_from_slice(&ethertype);
        }
        276 => {
            out.extend_from_slice(&ethertype);
            out.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6]);
            out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        }
        101 => {}
        // BSD loopback, AF_INET in the writer's (little-endian) order.
        0 => out.extend_from_slice(&2u32.to_le_bytes()),
        _ => unreachable!("link types the tests write"),
    }
    out.extend_from_slice(payload);
    out
}

fn write_pcap(path: &Path, linktype: u32, pkts: &[Pkt]) {
    let linked: Vec<(u64, Vec<u8>, u32)> = pkts
        .iter()
        .map(|(t, frame, orig)| {
            let data = relink(linktype, frame);
            // The wire length less the bytes the link header does not share with Ethernet.
            let extra = *orig - frame.len() as u32;
            let n = data.len() as u32 + extra;
            (*t, data, n)
        })
        .collect();
    let f = std::fs::File::create(path).unwrap();
    astra::replay::capture::write_pcap(
        std::io::BufWriter::new(f),
        linktype,
        linked.iter().map(|(t, d, n)| (*t, d.as_slice(), *n)),
    )
    .unwrap();
}

fn pcapng_block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = 12 + body.len() as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&len.to_le_bytes());
}

/// pcapng with one Ethernet interface at microsecond resolution (the default).
fn write_pcapng(path: &Path, pkts: &[Pkt]) {
    let mut f = Vec::new();
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    pcapng_block(&mut f, 0x0a0d_0d0a, &shb);
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    pcapng_block(&mut f, 1, &idb);
    for (t, frame, orig) in pkts {
        let us = t / 1000;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(us as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&orig.to_le_bytes());
        epb.extend_from_slice(frame);
        pcapng_block(&mut f, 6, &epb);
    }
    std::fs::write(path, f).unwrap();
}

fn run(files: Vec<std::path::PathBuf>) -> ReplayReport {
    replay(&ReplayConfig::new(files)).expect("replay runs")
}

fn sources_alerted(r: &ReplayReport) -> Vec<(IpAddr, AttackType)> {
    r.alerts
        .iter()
        .filter_map(|a| a.source.map(|s| (s, a.attack_type)))
        .collect()
}

fn accounted(r: &ReplayReport) -> u64 {
    let p = &r.packets;
    p.parsed + p.fragments + p.parse_errors + p.non_ip + p.dropped
}

#[test]
fn a_scan_is_found_in_every_link_type_and_nobody_else_is_blamed() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    let pkts = scan_and_benign(100, 20_000_000);
    let mut files = Vec::new();
    for lt in [1, 113, 276, 101, 0] {
        let p = dir.path().join(format!("scan-{lt}.pcap"));
        write_pcap(&p, lt, &pkts);
        files.push(p);
    }
    let ng = dir.path().join("scan.pcapng");
    write_pcapng(&ng, &pkts);
    files.push(ng);
    for f in files {
        let r = run(vec![f.clone()]);
        let who = sources_alerted(&r);
        assert!(
            who.contains(&(IpAddr::from(SCANNER), AttackType::PortScan)),
            "{}: {who:?}",
            f.display()
        );
        assert!(
            who.iter().all(|(s, _)| *s == IpAddr::from(SCANNER)),
            "{}: only the scanner may be blamed: {who:?}",
            f.display()
        );
        assert_eq!(r.packets.read, pkts.len() as u64, "{}", f.display());
        assert_eq!(
            accounted(&r),
            r.packets.read,
            "{}: {:?}",
            f.display(),
            r.packets
        );
        assert!(r.warnings.is_empty(), "{}: {:?}", f.display(), r.warnings);
        // Blocked after the poll that saw the scan: its later probes are dropped in the
        // replay's own kernel maps, as they would be live.
        assert!(r.packets.dropped > 0, "{}: {:?}", f.display(), r.packets);
        assert_eq!(r.first_ms, Some(T0 / 1_000_000));
        assert!(
            r.incidents
                .iter()
                .any(|i| i.source.as_deref() == Some("198.18.0.66"))
        );
    }
}

#[test]
fn rates_are_judged_on_the_capture_clock_not_on_replay_speed() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    // 40 ports at one a second: 40 distinct ports inside one minute, a scan.
    let fast = dir.path().join("fast.pcap");
    write_pcap(&fast, 1, &scan_and_benign(40, NS));
    // The same 40 ports at one every 3 minutes: never more than one inside a minute.
    let slow = dir.path().join("slow.pcap");
    write_pcap(&slow, 1, &scan_and_benign(40, 180 * NS));
    let r = run(vec![fast]);
    assert!(sources_alerted(&r).contains(&(IpAddr::from(SCANNER), AttackType::PortScan)));
    let r = run(vec![slow]);
    assert!(
        sources_alerted(&r).is_empty(),
        "replayed in well under a second, judged on two hours of capture: {:?}",
        r.alerts
    );
    assert!(r.capture_seconds > 7000.0, "{}", r.capture_seconds);
    assert!(r.elapsed_seconds < r.capture_seconds / 100.0);
}

#[test]
fn snap_length_is_undone_and_jumbo_frames_are_capped() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    let mut pkts = scan_and_benign(0, NS);
    // Cut to 54 bytes (Ethernet, IPv4, TCP), as `tcpdump -s 54` captures: the wire said 1514.
    for p in pkts.iter_mut() {
        p.2 = 1514;
        p.1.truncate(54);
    }
    // One jumbo frame of 9000 bytes.
    pkts.push((T0 + 5 * NS, tcp(CLIENT, SERVER, 50001, 80, ACK, b""), 9000));
    let f = dir.path().join("snap.pcap");
    write_pcap(&f, 1, &pkts);
    let r = run(vec![f]);
    assert_eq!(accounted(&r), r.packets.read);
    assert_eq!(
        r.packets.bytes,
        (pkts.len() as u64 - 1) * 1514 + astra::replay::capture::MAX_FRAME as u64
    );
}

#[test]
fn a_truncated_capture_is_replayed_up_to_the_cut() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    let pkts = scan_and_benign(50, 2_000_000);
    let f = dir.path().join("cut.pcap");
    write_pcap(&f, 1, &pkts);
    let len = std::fs::metadata(&f).unwrap().len();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..len as usize - 10]).unwrap();
    let r = run(vec![f]);
    assert_eq!(r.packets.read, pkts.len() as u64 - 1);
    assert_eq!(accounted(&r), r.packets.read);
    let stop = r.files[0].stopped_at.expect("the cut is reported");
    assert!(stop > len - 200 && stop < len, "{stop} of {len}");
    assert!(
        r.warnings[0].contains("truncated at byte"),
        "{:?}",
        r.warnings
    );
}

#[test]
fn files_that_overlap_in_time_follow_each_other() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    let pkts = scan_and_benign(10, NS);
    let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
    write_pcap(&a, 1, &pkts);
    write_pcap(&b, 1, &pkts);
    let r = run(vec![a, b]);
    assert_eq!(r.packets.read, 2 * pkts.len() as u64);
    assert_eq!(r.packets.out_of_order, 0);
    assert!(r.files[1].shifted_s > 10.0, "{:?}", r.files[1]);
    assert!(r.capture_seconds > 2.0 * (r.files[1].shifted_s - 1.0));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    if !privileged() {
        return;
    }
    let (pin, state) = (pin_dir(), state_dir());
    let scratch = ScratchDir::dir_at(std::env::temp_dir().join(unique("astra-rp-")), 0o700)
        .expect("scratch dir");
    let text = scratch.path().join("notes.txt");
    std::fs::write(&text, "not a capture at all\n").unwrap();
    let wifi = scratch.path().join("wifi.pcap");
    write_pcap(&wifi, 1, &[]);
    let mut b = std::fs::read(&wifi).unwrap();
    b[20..24].copy_from_slice(&105u32.to_le_bytes()); // IEEE 802.11
    std::fs::write(&wifi, b).unwrap();
    let missing = scratch.path().join("missing.pcap");
    for (f, says) in [
        (&text, "not a pcap or pcapng capture"),
        (&wifi, "link type 105"),
        (&missing, "No such file"),
    ] {
        let (code, out, err) = cli(pin.path(), state.path(), &["replay", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{}: {err}", f.display());
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
    // A good file and a bad one: nothing is replayed.
    let good = scratch.path().join("good.pcap");
    write_pcap(&good, 1, &scan_and_benign(5, NS));
    let (code, out, _) = cli(
        pin.path(),
        state.path(),
        &["replay", good.to_str().unwrap(), text.to_str().unwrap()],
    );
    assert_eq!((code, out.as_str()), (2, ""));
}

#[test]
fn the_cli_prints_tables_json_and_writes_events_and_a_report() {
    if !privileged() {
        return;
    }
    let (pin, state) = (pin_dir(), state_dir());
    let f = state.path().join("scan.pcap");
    write_pcap(&f, 1, &scan_and_benign(60, 2_000_000));
    let (events, report) = (
        state.path().join("eve.json"),
        state.path().join("report.json"),
    );
    let (code, out, err) = cli(
        pin.path(),
        state.path(),
        &[
            "replay",
            f.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("port_scan") && out.contains("198.18.0.66"),
        "{out}"
    );
    assert!(out.contains("top talkers"), "{out}");
    assert!(err.is_empty(), "a replay logs nothing by default: {err}");
    let eve = std::fs::read_to_string(&events).unwrap();
    assert!(eve.contains("\"event_type\":\"alert\""), "{eve}");
    assert!(
        eve.contains("2023-11-14T22:13"),
        "capture time in the event log: {eve}"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let (code, out, _) = cli(
        pin.path(),
        state.path(),
        &["replay", f.to_str().unwrap(), "--json"],
    );
    assert_eq!(code, 0);
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    for r in [&saved, &printed] {
        assert_eq!(r["packets"]["read"], 60 * 2 + 20 * 7);
        assert_eq!(r["alerts"][0]["attack_type"], "port_scan");
        assert_eq!(r["top_talkers"][0]["addr"], "198.18.1.10");
    }
}

/// The public captures kept in `tests/data/captures` (MANIFEST.md there says where each comes
/// from and what it holds).
fn corpus(dir: &str) -> Vec<std::path::PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/captures")
        .join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{}", d.display());
    v
}

/// Password guessing from Zeek's test suite: the guesser is found and blocked, and nobody
/// else is blamed, the attacked server least of all.
#[test]
fn public_brute_force_captures_blame_the_guesser_alone() {
    if !privileged() {
        return;
    }
    for (name, guesser) in [
        ("zeek-ftp-bruteforce.pcap", "192.168.56.1"),
        ("zeek-ssh-sshguess.pcap", "192.168.56.1"),
    ] {
        let f = corpus("bruteforce")
            .into_iter()
            .find(|p| p.ends_with(name))
            .expect("in the corpus");
        let r = run(vec![f]);
        let who = sources_alerted(&r);
        let guesser: IpAddr = guesser.parse().unwrap();
        assert!(
            who.contains(&(guesser, AttackType::BruteForce)),
            "{name}: {who:?}"
        );
        assert!(who.iter().all(|(s, _)| *s == guesser), "{name}: {who:?}");
        assert_eq!(accounted(&r), r.packets.read, "{name}");
    }
}

/// Ordinary traffic (web, DNS, TLS, one SSH and one FTP session) raises nothing.
#[test]
fn public_benign_captures_raise_nothing() {
    if !privileged() {
        return;
    }
    for f in corpus("benign") {
        let r = run(vec![f.clone()]);
        assert!(r.alerts.is_empty(), "{}: {:?}", f.display(), r.alerts);
        assert!(r.packets.parsed > 0, "{}", f.display());
        assert_eq!(accounted(&r), r.packets.read, "{}", f.display());
    }
}

/// Every link type of the corpus that Astra reads, read: cooked captures, raw IP, loopback,
/// nanosecond and big-endian pcap, multi-interface pcapng. NFLOG is the one it does not, and
/// says so.
#[test]
fn public_captures_of_every_link_type_are_read() {
    if !privileged() {
        return;
    }
    for f in corpus("linktypes") {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        match replay(&ReplayConfig::new(vec![f.clone()])) {
            Ok(r) => {
                assert!(r.packets.read > 0, "{name}");
                assert_eq!(accounted(&r), r.packets.read, "{name}: {:?}", r.packets);
                assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
                // Everything here is IP but the ARP captures.
                if !name.contains("arp") {
                    assert!(r.packets.parsed > 0, "{name}: {:?}", r.packets);
                }
            }
            Err(e) => {
                assert!(name.contains("nflog"), "{name}: {e}");
                assert!(e.to_string().contains("link type 239"), "{e}");
                assert_eq!(e.exit_code(), 2);
            }
        }
    }
}

/// The malformed captures of the tcpdump, libpcap and Zeek test suites: no panic, every
/// packet read is accounted for, and what cannot be read at all is one clear error.
#[test]
fn public_malformed_captures_are_survived_and_accounted_for() {
    if !privileged() {
        return;
    }
    let mut parse_errors = 0;
    for f in corpus("malformed") {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        match replay(&ReplayConfig::new(vec![f.clone()])) {
            Ok(r) => {
                assert_eq!(accounted(&r), r.packets.read, "{name}: {:?}", r.packets);
                parse_errors += r.packets.parse_errors;
            }
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{name}: {e}");
                assert_eq!(e.to_string().lines().count(), 1, "{name}: {e}");
            }
        }
    }
    // Cut and bogus headers are the dataplane's parse errors, not packets it misreads.
    assert!(parse_errors >= 5, "{parse_errors}");
}

const CONN_HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t2023-11-14-22-13-20\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n";

/// A conn.log of a scan (refused connections to 100 ports, one every 0.2 s) and of password
/// guessing (short SSH sessions), with a client's ordinary web sessions beside them.
fn conn_log() -> (String, Vec<String>) {
    let t0 = 1_700_000_000.0f64;
    let mut tsv = String::from(CONN_HEADER);
    let mut json = Vec::new();
    let mut add = |ts: f64,
                   o: &str,
                   op: u16,
                   r: &str,
                   rp: u16,
                   dur: f64,
                   state: &str,
                   hist: &str,
                   pk: (u64, u64, u64, u64)| {
        tsv.push_str(&format!(
            "{ts:.6}\tC{op}\t{o}\t{op}\t{r}\t{rp}\ttcp\t-\t{dur}\t0\t0\t{state}\t-\t-\t0\t{hist}\t{}\t{}\t{}\t{}\t-\n",
            pk.0, pk.1, pk.2, pk.3
        ));
        json.push(format!(
            r#"{{"ts":{ts:.6},"uid":"C{op}","id.orig_h":"{o}","id.orig_p":{op},"id.resp_h":"{r}","id.resp_p":{rp},"proto":"tcp","duration":{dur},"conn_state":"{state}","history":"{hist}","orig_pkts":{},"orig_ip_bytes":{},"resp_pkts":{},"resp_ip_bytes":{}}}"#,
            pk.0, pk.1, pk.2, pk.3
        ));
    };
    for p in 1..=100u16 {
        let ts = t0 + f64::from(p) * 0.2;
        add(
            ts,
            "198.18.0.66",
            40000 + p,
            "198.18.1.10",
            p,
            0.0002,
            "REJ",
            "Sr",
            (1, 44, 1, 40),
        );
    }
    for i in 0..12u16 {
        let ts = t0 + 30.0 + f64::from(i) * 2.0;
        add(
            ts,
            "198.18.0.77",
            50000 + i,
            "198.18.1.10",
            22,
            1.2,
            "SF",
            "ShAdDaFf",
            (12, 2100, 10, 2700),
        );
    }
    for i in 0..20u16 {
        let ts = t0 + f64::from(i) * 3.0;
        add(
            ts,
            "198.18.0.20",
            55000 + i,
            "198.18.1.10",
            80,
            0.3,
            "SF",
            "ShADadFf",
            (6, 700, 6, 30000),
        );
    }
    (tsv, json)
}

/// Zeek's conn.log (tab-separated and JSON) and Argus CSV go through the same engine: the
/// scanner and the guesser are found, the web client and the server are not blamed.
#[test]
fn flow_logs_are_judged_like_packets() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    let (tsv, json) = conn_log();
    let tsv_path = dir.path().join("conn.log");
    std::fs::write(&tsv_path, &tsv).unwrap();
    let json_path = dir.path().join("conn.json");
    std::fs::write(&json_path, json.join("\n") + "\n").unwrap();
    // The same scan as Argus would have written it.
    let mut argus = String::from(
        "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label\n",
    );
    for p in 1..=100u16 {
        argus.push_str(&format!(
            "2023/11/14 22:13:{:02}.{:06},0.0002,tcp,198.18.0.66,{},   ->,198.18.1.10,{p},S_RA,0,0,2,118,60,flow=scan\n",
            20 + p / 5,
            u32::from(p % 5) * 200_000,
            40000 + p
        ));
    }
    let argus_path = dir.path().join("flows.binetflow");
    std::fs::write(&argus_path, argus).unwrap();
    let scanner: IpAddr = "198.18.0.66".parse().unwrap();
    let guesser: IpAddr = "198.18.0.77".parse().unwrap();
    for (f, format) in [
        (&tsv_path, "zeek-conn-tsv"),
        (&json_path, "zeek-conn-json"),
        (&argus_path, "argus-csv"),
    ] {
        let r = run(vec![f.clone()]);
        assert_eq!(r.files[0].format, format);
        let who = sources_alerted(&r);
        assert!(
            who.contains(&(scanner, AttackType::PortScan)),
            "{format}: {who:?}"
        );
        if format != "argus-csv" {
            assert_eq!(r.conns, 132, "{format}");
            assert!(
                who.contains(&(guesser, AttackType::BruteForce)),
                "{format}: {who:?}"
            );
        }
        assert!(
            who.iter().all(|(s, _)| *s == scanner || *s == guesser),
            "{format}: {who:?}"
        );
        assert_eq!(r.packets.read, 0);
    }
    // A bad record is one line naming the file and the line; exit 2.
    let bad = dir.path().join("bad.log");
    std::fs::write(
        &bad,
        tsv.replace("198.18.0.20\t55003", "198.18.0.999\t55003"),
    )
    .unwrap();
    let e = replay(&ReplayConfig::new(vec![bad])).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("bad.log: line 124: id.orig_h is not an address"),
        "{e}"
    );
}

/// Password guessing against sshd on port 2222, one attempt every 2 s: a short session the
/// server ends after greeting and refusing.
fn ssh_guesses_on(port: u16, banner: &[u8]) -> Vec<Pkt> {
    let mut out = Vec::new();
    let guesser = [198, 18, 0, 77];
    let mut push = |t: u64, f: Vec<u8>| {
        let n = f.len() as u32;
        out.push((t, f, n));
    };
    for i in 0..8u16 {
        let (t, sp) = (T0 + u64::from(i) * 2 * NS, 51000 + i);
        let ms = |k: u64| t + k * 1_000_000;
        push(ms(0), tcp(guesser, SERVER, sp, port, SYN, b""));
        push(ms(1), tcp(SERVER, guesser, port, sp, SYN_ACK, b""));
        push(ms(2), tcp(guesser, SERVER, sp, port, ACK, b""));
        push(ms(5), tcp(SERVER, guesser, port, sp, PSH_ACK, banner));
        push(
            ms(6),
            tcp(
                guesser,
                SERVER,
                sp,
                port,
                PSH_ACK,
                b"SSH-2.0-libssh_0.10\r\n",
            ),
        );
        push(ms(9), tcp(guesser, SERVER, sp, port, PSH_ACK, &[7; 600]));
        push(ms(12), tcp(SERVER, guesser, port, sp, PSH_ACK, &[9; 900]));
        push(ms(300), tcp(SERVER, guesser, port, sp, FIN_ACK, b""));
        push(ms(301), tcp(guesser, SERVER, sp, port, FIN_ACK, b""));
    }
    out
}

/// A login service on a port no list names is known by what it says first: SSH on 2222 is
/// guessed at and caught; the same sessions to a server that does not greet like a login
/// service are not taken for failed logins.
#[test]
fn a_login_service_on_another_port_is_known_by_its_banner() {
    if !privileged() {
        return;
    }
    let dir = state_dir();
    let ssh = dir.path().join("ssh2222.pcap");
    write_pcap(
        &ssh,
        1,
        &ssh_guesses_on(2222, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
    );
    let other = dir.path().join("other2222.pcap");
    write_pcap(
        &other,
        1,
        &ssh_guesses_on(2222, b"HTTP/1.1 400 Bad Request\r\n"),
    );
    let guesser: IpAddr = "198.18.0.77".parse().unwrap();
    let r = run(vec![ssh]);
    assert!(
        sources_alerted(&r).contains(&(guesser, AttackType::BruteForce)),
        "{:?}",
        r.alerts
    );
    let brute = r
        .alerts
        .iter()
        .find(|a| a.attack_type == AttackType::BruteForce)
        .unwrap();
    assert!(brute.rule.contains("port_2222"), "{}", brute.rule);
    let r = run(vec![other]);
    assert!(r.alerts.is_empty(), "{:?}", r.alerts);
}

/// The public Ethernet captures through the live path as well: tcpreplay sends them out of a
/// veth whose far end an agent watches (both directions arrive on its XDP ingress, as on a
/// gateway). The sources blamed, and for what, are the same as `astra replay` finds.
#[test]
fn replay_and_the_live_path_blame_the_same_sources() {
    use crate::kit::{Agent, Lab};
    if !privileged() {
        return;
    }
    for name in [
        "bruteforce/zeek-ftp-bruteforce.pcap",
        "bruteforce/zeek-ssh-sshguess.pcap",
        "benign/zeek-wikipedia.pcap",
        "benign/zeek-workshop_2011_browse-http.pcap",
    ] {
        let f = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/captures")
            .join(name);
        let blamed = |alerts: Vec<(IpAddr, AttackType)>| {
            let mut v: Vec<(IpAddr, String)> = alerts
                .into_iter()
                .map(|(s, t)| (s, t.to_string()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let offline = blamed(sources_alerted(&run(vec![f.clone()])));
        // Agreeing on nothing would prove nothing: the guessing is found.
        assert_eq!(
            offline.is_empty(),
            name.starts_with("benign"),
            "{name}: {offline:?}"
        );
        let lab = Lab::quiet_v4();
        let (pin, state) = (pin_dir(), state_dir());
        let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns_a,
                "tcpreplay",
                "-q",
                "--topspeed",
                "-i",
            ])
            .arg(&lab.if_a)
            .arg(&f)
            .output()
            .expect("run tcpreplay");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent.settle();
        agent.settle();
        let (code, body, _) = cli(pin.path(), state.path(), &["alerts", "--json"]);
        assert_eq!(code, 0);
        let live: Vec<(IpAddr, AttackType)> =
            serde_json::from_str::<Vec<astra::detect::Alert>>(&body)
                .unwrap()
                .into_iter()
                .filter_map(|a| a.source.map(|s| (s, a.attack_type)))
                .collect();
        let live = blamed(live);
        assert_eq!(live, offline, "{name}: live {live:?}, replay {offline:?}");
        agent.stop();
    }
}

/// Every kind of line Astra writes to its event log validates against Suricata's published
/// schema (tests/data/suricata): alerts and blocks from a replayed scan, and the other
/// mitigations written through the library, a prefix among them.
#[test]
fn the_event_log_validates_against_suricatas_schema() {
    if !privileged() {
        return;
    }
    use std::time::Duration;

    use astra::sink::events::EventLog;
    let (pin, state) = (pin_dir(), state_dir());
    let f = state.path().join("scan.pcap");
    write_pcap(&f, 1, &scan_and_benign(60, 2_000_000));
    let events = state.path().join("eve.json");
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &[
            "replay",
            f.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    {
        let mut log = EventLog::open(&events).unwrap();
        let rate = astra::store::Rate {
            pps: 100,
            bps: 0,
            burst_ms: 100,
        };
        let ttl = Duration::from_secs(600);
        log.mitigation(
            "throttle",
            "198.18.0.0/24",
            ttl,
            Some(rate),
            "auto: udp_flood",
            "a1",
        )
        .unwrap();
        log.mitigation(
            "quarantine",
            "10.0.0.23/32",
            ttl,
            None,
            "auto: exfiltration",
            "a2",
        )
        .unwrap();
        log.mitigation(
            "protect",
            "2001:db8::2/128",
            ttl,
            Some(rate),
            "auto: syn_flood",
            "a3",
        )
        .unwrap();
        log.block("203.0.113.0/24", ttl, "by hand", "").unwrap();
        log.unblock("198.18.0.66/32", "expired").unwrap();
    }
    let text = std::fs::read_to_string(&events).unwrap();
    for kind in [
        "alert",
        "block",
        "throttle",
        "quarantine",
        "protect",
        "unblock",
    ] {
        assert!(
            text.contains(&format!("\"event_type\":\"{kind}\"")),
            "no {kind} line:\n{text}"
        );
    }
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/suricata/schema.json"
    );
    let check = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.validators.validator_for(schema)(schema)
bad = 0
for n, line in enumerate(open(sys.argv[2]), 1):
    for e in validator.iter_errors(json.loads(line)):
        bad += 1
        print(f"line {n}: {'/'.join(map(str, e.absolute_path))}: {e.message[:300]}")
print(f"{bad} errors")
sys.exit(1 if bad else 0)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check, schema, events.to_str().unwrap()])
        .output()
        .expect("python3 (cargo xtask test installs python3-jsonschema)");
    assert!(
        out.status.success(),
        "not Suricata's EVE:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
