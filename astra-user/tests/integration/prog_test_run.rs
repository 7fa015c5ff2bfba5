//! Runs the XDP and TC programs on hand-made packets with BPF_PROG_TEST_RUN, without attaching
//! them anywhere, and checks the verdict, the per-interface counters and the flow table.
//!
//! Facts about BPF_PROG_TEST_RUN these tests rely on (measured on 6.18, see
//! `test_run_presents_frames_on_loopback` and `test_run_minimum_frame_lengths`):
//! - both program types see the packet on the loopback device of the caller's network
//!   namespace: XDP's `ingress_ifindex` and the skb's `ifindex` are both 1;
//! - the kernel rejects input shorter than an Ethernet header (14 bytes) with EINVAL, so the
//!   parser's "Ethernet header cut short" path cannot be reached from here; for TC it also
//!   rejects untagged IPv4 frames under 34 bytes and untagged IPv6 frames under 54 bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use astra::{
    Error,
    clock::mono_now_ns,
    dataplane::{self, Dataplane, LayoutState, maps::PinnedMaps},
    lists::Lists,
    store::{EntrySource, ListKind, Store, StoredEntry},
};
use astra_common::{
    Counter, FlowKey, FlowValue, LAYOUT_VERSION, ListEntry, Meta, action, direction, map_names,
};
use aya::{
    maps::{Array, Map, MapData, lpm_trie::Key},
    programs::{TestRun, TestRunOptions},
};
use etherparse::{
    Ethernet2Header, NetHeaders, PacketBuilder, PacketBuilderStep, PacketHeaders, TransportHeader,
};
use ipnet::IpNet;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_PIPE: u32 = 3;

/// Loopback's ifindex: where BPF_PROG_TEST_RUN says every packet came from or goes to.
const LO: u32 = 1;
/// The shortest input BPF_PROG_TEST_RUN accepts for XDP and TC programs (ETH_HLEN):
/// `bpf_test_init()` refuses anything shorter with EINVAL.
const MIN_TEST_RUN_LEN: usize = 14;
/// For skb programs (TC) the kernel also refuses a frame whose outer ethertype is IPv4 or IPv6
/// but that is shorter than Ethernet plus the fixed IP header; tagged frames are not checked.
const MIN_TC_IPV4_LEN: usize = 14 + 20;
const MIN_TC_IPV6_LEN: usize = 14 + 40;

const SRC4: [u8; 4] = [198, 51, 100, 7];
const DST4: [u8; 4] = [203, 0, 113, 9];
const SRC6: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7).octets();
const DST6: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 9).octets();
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PAYLOAD: &[u8] = b"astra test payload";

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

// Protocol numbers and TCP flags are written out here, not taken from astra_common: a wrong
// shared constant would otherwise agree with itself and pass.
const HOPOPTS: u8 = 0;
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const GRE: u8 = 47;
const AH: u8 = 51;
const ICMPV6: u8 = 58;
const DSTOPTS: u8 = 60;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

// ---------------------------------------------------------------------------------------------
// The dataplane under test
// ---------------------------------------------------------------------------------------------

/// Both programs loaded against maps pinned in a pin dir of this test's own.
struct Sensor {
    dp: Dataplane,
    maps: PinnedMaps,
    pin: crate::kit::ScratchDir,
}

impl Sensor {
    fn new() -> Self {
        Self::with_flow_capacity(4096)
    }

    fn with_flow_capacity(capacity: u32) -> Self {
        let pin = crate::kit::pin_dir();
        let dp = Dataplane::load(pin.path(), capacity).expect("load dataplane");
        let maps = PinnedMaps::open(pin.path())
            .expect("open pinned maps")
            .expect("maps are pinned after load");
        Self { dp, maps, pin }
    }

    fn xdp(&mut self, frame: &[u8]) -> u32 {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        self.dp.xdp().unwrap().test_run(opts).unwrap().return_value
    }

    /// [`Sensor::xdp`], with the frame as the program left it.
    fn xdp_out(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let r = self.dp.xdp().unwrap().test_run(opts).unwrap();
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn tc(&mut self, frame: &[u8]) -> u32 {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        self.dp
            .tc_egress()
            .unwrap()
            .test_run(opts)
            .unwrap()
            .return_value
    }

    fn run(&mut self, hook: Hook, frame: &[u8]) -> u32 {
        match hook {
            Hook::Xdp => self.xdp(frame),
            Hook::Tc => self.tc(frame),
        }
    }

    fn counters(&self) -> [Counter; action::COUNT as usize] {
        self.maps.iface_counters(LO).unwrap()
    }

    fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        let mut out = Vec::new();
        self.maps.read_flows(&mut out).unwrap();
        out
    }

    fn block_v4(&mut self, addr: [u8; 4], expires_ns: u64) {
        self.maps
            .block_v4
            .insert(addr, entry(expires_ns), 0)
            .unwrap();
    }

    fn block_net_v4(&mut self, prefix: u32, addr: [u8; 4], expires_ns: u64) {
        self.maps
            .bnet_v4
            .insert(&Key::new(prefix, addr), entry(expires_ns), 0)
            .unwrap();
    }

    fn hits_v4(&self, addr: [u8; 4]) -> u64 {
        self.maps.block_v4.get(&addr, 0).unwrap().hits
    }
}

fn entry(expires_ns: u64) -> ListEntry {
    ListEntry {
        expires_ns,
        created_unix_s: 1_700_000_000,
        source: astra_common::source::MANUAL,
        ..Default::default()
    }
}

/// A block entry marked as overlapping the allowlist, which is what makes the dataplane consult it.
fn overlapped(mut e: ListEntry) -> ListEntry {
    e.flags |= ListEntry::ALLOW_OVERLAP;
    e
}

/// The two programs, with what each reports for the same outcome.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn passed(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TC_ACT_PIPE,
        }
    }
    fn pass(self) -> u32 {
        match self {
            Hook::Xdp => action::PASS,
            Hook::Tc => action::EGRESS_PASS,
        }
    }
    fn parse_error(self) -> u32 {
        match self {
            Hook::Xdp => action::PARSE_ERROR,
            Hook::Tc => action::EGRESS_PARSE_ERROR,
        }
    }
    fn non_ip(self) -> u32 {
        match self {
            Hook::Xdp => action::NON_IP,
            Hook::Tc => action::EGRESS_NON_IP,
        }
    }
    /// The shortest prefix of `frame` the kernel will run this hook on.
    fn min_len(self, frame: &[u8]) -> usize {
        match (self, u16::from_be_bytes([frame[12], frame[13]])) {
            (Hook::Tc, ETH_IPV4) => MIN_TC_IPV4_LEN,
            (Hook::Tc, ETH_IPV6) => MIN_TC_IPV6_LEN,
            _ => MIN_TEST_RUN_LEN,
        }
    }

    fn direction(self) -> u8 {
        match self {
            Hook::Xdp => direction::INGRESS,
            Hook::Tc => direction::EGRESS,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

fn action_name(a: u32) -> &'static str {
    match a {
        action::PASS => "PASS",
        action::DROP_BLOCKED => "DROP_BLOCKED",
        action::DROP_BLOCKED_NET => "DROP_BLOCKED_NET",
        action::PASS_ALLOWLISTED => "PASS_ALLOWLISTED",
        action::PARSE_ERROR => "PARSE_ERROR",
        action::FRAGMENT => "FRAGMENT",
        action::NON_IP => "NON_IP",
        action::FLOW_INSERT_FAIL => "FLOW_INSERT_FAIL",
        action::EGRESS_PASS => "EGRESS_PASS",
        action::EGRESS_PARSE_ERROR => "EGRESS_PARSE_ERROR",
        action::EGRESS_FRAGMENT => "EGRESS_FRAGMENT",
        action::EGRESS_NON_IP => "EGRESS_NON_IP",
        _ => "unused",
    }
}

/// Asserts the loopback counters hold exactly the frames listed per action (by length) and
/// that every other slot is untouched, so an outcome counted twice or in the wrong slot fails.
#[track_caller]
fn assert_counters(s: &Sensor, expected: &[(u32, &[usize])]) {
    let got = s.counters();
    for (a, c) in got.iter().enumerate() {
        let a = a as u32;
        let lens: &[usize] = expected
            .iter()
            .find(|(e, _)| *e == a)
            .map_or(&[], |(_, l)| l);
        let want = Counter {
            packets: lens.len() as u64,
            bytes: lens.iter().sum::<usize>() as u64,
        };
        assert_eq!(
            *c,
            want,
            "counter {} ({a}); all counters: {got:?}",
            action_name(a)
        );
    }
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    Ipv4Addr::from(a).to_ipv6_mapped().octets()
}

fn key(src: [u8; 16], dst: [u8; 16], proto: u8, sport: u16, dport: u16, dir: u8) -> FlowKey {
    FlowKey {
        src,
        dst,
        src_port: sport,
        dst_port: dport,
        ifindex: LO,
        proto,
        direction: dir,
        _pad: [0; 2],
    }
}

fn key4(proto: u8, sport: u16, dport: u16) -> FlowKey {
    key(
        mapped(SRC4),
        mapped(DST4),
        proto,
        sport,
        dport,
        direction::INGRESS,
    )
}

fn key6(proto: u8, sport: u16, dport: u16) -> FlowKey {
    key(SRC6, DST6, proto, sport, dport, direction::INGRESS)
}

fn icmp_port(ty: u8, code: u8) -> u16 {
    (ty as u16) << 8 | code as u16
}

/// The flow value `packets` (frame length, TCP flag byte) should add up to, timestamps aside.
fn value(packets: &[(usize, u8)]) -> FlowValue {
    let mut v = FlowValue {
        min_len: u32::MAX,
        ..Default::default()
    };
    for (i, &(len, flags)) in packets.iter().enumerate() {
        if i == 0 {
            // The first packet's flags are kept in the second byte.
            v.tcp_flags |= (flags as u32) << 8;
        }
        v.packets += 1;
        v.bytes += len as u64;
        v.min_len = v.min_len.min(len as u32);
        v.max_len = v.max_len.max(len as u32);
        v.tcp_flags |= flags as u32;
        v.syn_count += u32::from(flags & SYN != 0);
        v.fin_count += u32::from(flags & FIN != 0);
        v.rst_count += u32::from(flags & RST != 0);
    }
    v
}

/// Asserts the flow table holds exactly `expected` (in any order).
#[track_caller]
fn assert_flows(s: &Sensor, expected: &[(FlowKey, FlowValue)]) {
    let mut got = s.flows();
    for (k, v) in &mut got {
        assert!(
            v.first_seen_ns != 0 && v.first_seen_ns <= v.last_seen_ns,
            "timestamps of {k:?}: {v:?}"
        );
        v.first_seen_ns = 0;
        v.last_seen_ns = 0;
        // The first payload has a test of its own (`the_first_payload_of_a_tcp_direction_...`).
        v.first_payload = 0;
    }
    for (k, v) in expected {
        match got.iter().find(|(gk, _)| gk == k) {
            Some((_, gv)) => assert_eq!(gv, v, "flow {k:?}"),
            None => panic!("flow {k:?} missing; table: {got:#?}"),
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected flows in table: {got:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------

/// Serialises an etherparse builder step (each step type has its own inherent `write`).
macro_rules! build {
    ($builder:expr, $payload:expr) => {{
        let b = $builder;
        let p: &[u8] = $payload;
        let mut v = Vec::with_capacity(b.size(p.len()));
        b.write(&mut v, p).unwrap();
        v
    }};
}

fn eth() -> PacketBuilderStep<Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_SRC, MAC_DST)
}

fn udp4_from(src: [u8; 4]) -> Vec<u8> {
    build!(eth().ipv4(src, DST4, 64).udp(40000, 53), PAYLOAD)
}

fn udp6_from(src: [u8; 16]) -> Vec<u8> {
    build!(eth().ipv6(src, DST6, 64).udp(40000, 53), PAYLOAD)
}

/// Ethernet header, with one VLAN tag per TPID in `tpids` (outermost first).
fn frame(tpids: &[u16], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = [MAC_DST, MAC_SRC].concat();
    for (i, tpid) in tpids.iter().enumerate() {
        f.extend(tpid.to_be_bytes());
        f.extend((100 + i as u16).to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f.extend(l3);
    f
}

#[derive(Clone)]
struct V4 {
    proto: u8,
    options: Vec<u8>,
    /// Flags and fragment offset word.
    frag: u16,
}

fn v4(proto: u8) -> V4 {
    V4 {
        proto,
        options: Vec::new(),
        frag: 0,
    }
}

impl V4 {
    fn options(mut self, options: &[u8]) -> Self {
        assert!(options.len().is_multiple_of(4) && options.len() <= 40);
        self.options = options.to_vec();
        self
    }

    fn frag(mut self, offset_8: u16, more: bool) -> Self {
        self.frag = offset_8 | if more { 0x2000 } else { 0 };
        self
    }

    fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let ihl = 5 + self.options.len() / 4;
        let total = (ihl * 4 + payload.len()) as u16;
        let mut h = vec![0x40 | ihl as u8, 0];
        h.extend(total.to_be_bytes());
        h.extend([0x12, 0x34]);
        h.extend(self.frag.to_be_bytes());
        h.extend([64, self.proto, 0, 0]);
        h.extend(SRC4);
        h.extend(DST4);
        h.extend(&self.options);
        h.extend(payload);
        h
    }
}

/// IPv6 extension headers, sized so that a parser using the wrong length formula for a kind
/// (8-byte units vs AH's 4-byte units) lands somewhere else.
#[derive(Clone, Copy, Debug)]
enum Ext {
    HopByHop, // 8 bytes
    Routing,  // 24 bytes
    DstOpts,  // 16 bytes
    Ah,       // 24 bytes
    Frag { offset_8: u16, more: bool },
}

impl Ext {
    fn proto(self) -> u8 {
        match self {
            Ext::HopByHop => HOPOPTS,
            Ext::Routing => ROUTING,
            Ext::DstOpts => DSTOPTS,
            Ext::Ah => AH,
            Ext::Frag { .. } => FRAGMENT,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        // One PadN option fills an options header.
        let opts = |units: u8| {
            let len = (units as usize + 1) * 8;
            let mut h = vec![next, units, 1, (len - 4) as u8];
            h.resize(len, 0);
            h
        };
        match self {
            Ext::HopByHop => opts(0),
            Ext::DstOpts => opts(1),
            Ext::Routing => {
                // Segment routing header with no segments left: nothing to process.
                let mut h = vec![next, 2, 4, 0];
                h.resize(24, 0);
                h
            }
            Ext::Ah => {
                let mut h = vec![next, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1];
                h.resize(24, 0xaa);
                h
            }
            Ext::Frag { offset_8, more } => {
                let word = offset_8 << 3 | u16::from(more);
                let mut h = vec![next, 0];
                h.extend(word.to_be_bytes());
                h.extend([0xde, 0xad, 0xbe, 0xef]);
                h
            }
        }
    }
}

#[derive(Clone)]
struct V6 {
    exts: Vec<Ext>,
    proto: u8,
}

fn v6(exts: &[Ext], proto: u8) -> V6 {
    V6 {
        exts: exts.to_vec(),
        proto,
    }
}

impl V6 {
    fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, e) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map_or(self.proto, |n| n.proto());
            chain.extend(e.bytes(next));
        }
        chain.extend(payload);
        let first = self.exts.first().map_or(self.proto, |e| e.proto());
        let mut h = vec![0x60, 0, 0, 0];
        h.extend((chain.len() as u16).to_be_bytes());
        h.extend([first, 64]);
        h.extend(SRC6);
        h.extend(DST6);
        h.extend(chain);
        h
    }
}

fn tcp(sport: u16, dport: u16, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4));
    let doff = 5 + options.len() / 4;
    let mut h = Vec::new();
    h.extend(sport.to_be_bytes());
    h.extend(dport.to_be_bytes());
    h.extend(1000u32.to_be_bytes());
    h.extend(2000u32.to_be_bytes());
    h.extend([(doff as u8) << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    h.extend(options);
    h.extend(payload);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(sport.to_be_bytes());
    h.extend(dport.to_be_bytes());
    h.extend(((8 + payload.len()) as u16).to_be_bytes());
    h.extend([0, 0]);
    h.extend(payload);
    h
}

/// ICMP or ICMPv6: type, code, checksum, then four type-specific bytes.
fn icmp(ty: u8, code: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![ty, code, 0, 0, 0, 7, 0, 1];
    h.extend(payload);
    h
}

fn sctp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(sport.to_be_bytes());
    h.extend(dport.to_be_bytes());
    h.extend([0, 0, 0, 1, 0, 0, 0, 0]);
    h.extend(payload);
    h
}

fn arp() -> Vec<u8> {
    let mut body = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    body.extend(MAC_SRC);
    body.extend(SRC4);
    body.extend([0; 6]);
    body.extend(DST4);
    frame(&[], ETH_ARP, &body)
}

fn ipv4_udp(tpids: &[u16]) -> Vec<u8> {
    frame(tpids, ETH_IPV4, &v4(UDP).wrap(&udp(5353, 5354, PAYLOAD)))
}

/// Six extension headers: the most the parser promises to walk.
const SIX_EXTS: [Ext; 6] = [
    Ext::HopByHop,
    Ext::DstOpts,
    Ext::Routing,
    Ext::Frag {
        offset_8: 0,
        more: true,
    },
    Ext::Ah,
    Ext::DstOpts,
];

/// Seven extension headers: one more than the parser walks.
const SEVEN_EXTS: [Ext; 7] = [
    Ext::HopByHop,
    Ext::DstOpts,
    Ext::Routing,
    Ext::Frag {
        offset_8: 0,
        more: true,
    },
    Ext::Ah,
    Ext::DstOpts,
    Ext::DstOpts,
];

// ---------------------------------------------------------------------------------------------
// Test-run facts
// ---------------------------------------------------------------------------------------------

#[test]
fn test_run_minimum_frame_lengths() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let f = arp();
    for len in 0..MIN_TEST_RUN_LEN {
        let opts = || TestRunOptions {
            data_in: Some(&f[..len]),
            repeat: 1,
            ..Default::default()
        };
        assert!(s.dp.xdp().unwrap().test_run(opts()).is_err(), "xdp {len}");
        assert!(
            s.dp.tc_egress().unwrap().test_run(opts()).is_err(),
            "tc {len}"
        );
    }
    assert_eq!(s.xdp(&f[..MIN_TEST_RUN_LEN]), XDP_PASS);
    assert_eq!(s.tc(&f[..MIN_TEST_RUN_LEN]), TC_ACT_PIPE);

    // TC only: untagged IP frames must hold the fixed IP header. XDP takes them from 14 bytes.
    let v4 = ipv4_udp(&[]);
    let v6 = frame(&[], ETH_IPV6, &v6(&[], UDP).wrap(&udp(1, 2, PAYLOAD)));
    for (f, min) in [(&v4, MIN_TC_IPV4_LEN), (&v6, MIN_TC_IPV6_LEN)] {
        let opts = TestRunOptions {
            data_in: Some(&f[..min - 1]),
            repeat: 1,
            ..Default::default()
        };
        assert!(
            s.dp.tc_egress().unwrap().test_run(opts).is_err(),
            "tc {}",
            min - 1
        );
        assert_eq!(s.tc(&f[..min]), TC_ACT_PIPE);
        assert_eq!(s.xdp(&f[..MIN_TEST_RUN_LEN]), XDP_PASS);
    }
    let tagged = ipv4_udp(&[TPID_8021Q]);
    assert_eq!(s.tc(&tagged[..MIN_TEST_RUN_LEN]), TC_ACT_PIPE);
}

#[test]
fn test_run_presents_frames_on_loopback() {
    if !crate::kit::privileged() {
        return;
    }
    assert_eq!(dataplane::ifindex("lo").unwrap(), LO);
    let mut s = Sensor::new();
    let f = ipv4_udp(&[]);
    assert_eq!(s.xdp(&f), XDP_PASS);
    assert_eq!(s.tc(&f), TC_ACT_PIPE);
    for slot in 0..astra_common::IFACE_SLOTS {
        if slot == LO {
            continue;
        }
        let c = s.maps.iface_counters(slot).unwrap();
        assert!(
            c.iter().all(|c| *c == Counter::default()),
            "slot {slot}: {c:?}"
        );
    }
    assert_counters(
        &s,
        &[
            (action::PASS, &[f.len()]),
            (action::EGRESS_PASS, &[f.len()]),
        ],
    );
    assert!(s.flows().iter().all(|(k, _)| k.ifindex == LO));
}

/// Guards the hand-built packets themselves: a builder bug would otherwise make a parser test
/// pass or fail for the wrong reason.
#[test]
fn hand_built_frames_decode_with_etherparse() {
    if !crate::kit::privileged() {
        return;
    }
    let ports = |f: &[u8]| match PacketHeaders::from_ethernet_slice(f).unwrap().transport {
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        other => panic!("no ports in {f:02x?}: {other:?}"),
    };
    assert_eq!(ports(&ipv4_udp(&[TPID_8021AD, TPID_8021Q])), (5353, 5354));
    for opts in [vec![0x94, 4, 0, 0], vec![1; 40]] {
        let f = frame(
            &[],
            ETH_IPV4,
            &v4(UDP).options(&opts).wrap(&udp(7, 9, b"x")),
        );
        assert_eq!(ports(&f), (7, 9));
    }
    let exts = [Ext::HopByHop, Ext::Routing, Ext::DstOpts, Ext::Ah];
    let f = frame(
        &[],
        ETH_IPV6,
        &v6(&exts, TCP).wrap(&tcp(1, 2, SYN, &[], b"")),
    );
    assert_eq!(ports(&f), (1, 2));
    let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
    let Some(NetHeaders::Ipv6(_, e)) = h.net else {
        panic!("not IPv6")
    };
    assert_eq!(e.hop_by_hop_options.unwrap().header_len(), 8);
    let routing = e.routing.unwrap();
    assert_eq!(routing.routing.header_len(), 24);
    assert_eq!(routing.final_destination_options.unwrap().header_len(), 16);
    assert_eq!(e.auth.unwrap().header_len(), 24);
    let f = frame(&[], ETH_IPV4, &v4(UDP).frag(185, true).wrap(b"12345678"));
    let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not IPv4")
    };
    assert!(ip.more_fragments);
    assert_eq!(ip.fragment_offset.value(), 185);
}

// ---------------------------------------------------------------------------------------------
// Flow accounting
// ---------------------------------------------------------------------------------------------

/// A TCP direction keeps the first 8 bytes of its first segment with 8 or more payload bytes,
/// once: a handshake (no payload) and a short segment leave it empty, a later segment does not
/// replace it, and other protocols never have one.
#[test]
fn the_first_payload_of_a_tcp_direction_is_kept_once() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let b = || eth().ipv4(SRC4, DST4, 64).tcp(40000, 2222, 1, 64240);
    let first = |s: &Sensor, k: FlowKey| {
        s.flows()
            .into_iter()
            .find(|(fk, _)| *fk == k)
            .map(|(_, v)| v.first_payload.to_le_bytes())
            .expect("the flow")
    };
    let k = key4(TCP, 40000, 2222);
    assert_eq!(s.xdp(&build!(b().syn(), &[])), XDP_PASS);
    assert_eq!(first(&s, k), [0; 8], "a SYN carries nothing");
    assert_eq!(s.xdp(&build!(b().psh().ack(1), b"hi\r\n")), XDP_PASS);
    assert_eq!(first(&s, k), [0; 8], "under 8 bytes is not a greeting");
    assert_eq!(
        s.xdp(&build!(b().psh().ack(1), b"SSH-2.0-OpenSSH_9.2\r\n")),
        XDP_PASS
    );
    assert_eq!(&first(&s, k), b"SSH-2.0-");
    assert_eq!(
        s.xdp(&build!(b().psh().ack(1), b"GET / HTTP/1.1\r\n")),
        XDP_PASS
    );
    assert_eq!(&first(&s, k), b"SSH-2.0-", "kept once");
    // TCP options before the payload are skipped.
    let mut opts = Sensor::new();
    let with_opts = build!(
        eth()
            .ipv4(SRC4, DST4, 64)
            .tcp(40001, 2222, 1, 64240)
            .options(&[const { etherparse::TcpOptionElement::Noop }; 12])
            .unwrap()
            .psh()
            .ack(1),
        b"220 ftp ready\r\n"
    );
    assert_eq!(opts.xdp(&with_opts), XDP_PASS);
    assert_eq!(&first(&opts, key4(TCP, 40001, 2222)), b"220 ftp ");
    let mut udp = Sensor::new();
    assert_eq!(
        udp.xdp(&build!(
            eth().ipv4(SRC4, DST4, 64).udp(5353, 5354),
            b"SSH-2.0-xxxxxx"
        )),
        XDP_PASS
    );
    assert_eq!(first(&udp, key4(UDP, 5353, 5354)), [0; 8]);
}

#[test]
fn ipv4_tcp_connection_is_one_flow() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let b = || eth().ipv4(SRC4, DST4, 64).tcp(40000, 443, 1, 64240);
    // Different payload sizes, so min and max length come from different packets.
    let packets = [
        (build!(b().syn(), &[]), SYN),
        (build!(b().ack(1), &[0x55; 200]), ACK),
        (build!(b().fin().ack(1), &[0x55; 20]), FIN | ACK),
        (build!(b().rst(), &[0; 6]), RST),
    ];
    let before = coarse_now_ns();
    for (p, _) in &packets {
        assert_eq!(s.xdp(p), XDP_PASS);
    }
    let after = coarse_now_ns();

    let lens: Vec<usize> = packets.iter().map(|(p, _)| p.len()).collect();
    assert_counters(&s, &[(action::PASS, &lens)]);
    let expected: Vec<(usize, u8)> = packets.iter().map(|(p, f)| (p.len(), *f)).collect();
    let v = value(&expected);
    assert_eq!(
        (v.packets, v.syn_count, v.fin_count, v.rst_count),
        (4, 1, 1, 1)
    );
    assert_eq!(v.tcp_flags & 0xff, u32::from(SYN | ACK | FIN | RST));
    assert_eq!(v.tcp_flags >> 8, u32::from(SYN), "first packet's flags");
    assert_flows(&s, &[(key4(TCP, 40000, 443), v)]);

    // The dataplane reads the coarse clock through jiffies: never ahead of it, and behind by
    // at most one tick (when calibration raced a tick).
    let (_, got) = s.flows()[0];
    let earliest = before - coarse_tick_ns();
    assert!(
        earliest <= got.first_seen_ns && got.last_seen_ns <= after,
        "timestamps {got:?} outside [{earliest}, {after}] (CLOCK_MONOTONIC_COARSE)"
    );
}

/// The clock the dataplane stamps flows with, read from userspace.
fn coarse_now_ns() -> u64 {
    coarse(libc::clock_gettime)
}

/// One jiffy: the coarse clock's resolution.
fn coarse_tick_ns() -> u64 {
    coarse(libc::clock_getres)
}

fn coarse(read: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { read(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn ipv4_single_packet_flows() {
    if !crate::kit::privileged() {
        return;
    }
    let cases: Vec<(&str, Vec<u8>, FlowKey)> = vec![
        (
            "udp",
            build!(eth().ipv4(SRC4, DST4, 64).udp(40000, 53), PAYLOAD),
            key4(UDP, 40000, 53),
        ),
        (
            "icmp echo request",
            build!(
                eth().ipv4(SRC4, DST4, 64).icmpv4_echo_request(7, 1),
                PAYLOAD
            ),
            key4(ICMP, 0, icmp_port(8, 0)),
        ),
        (
            "icmp port unreachable",
            frame(&[], ETH_IPV4, &v4(ICMP).wrap(&icmp(3, 3, PAYLOAD))),
            key4(ICMP, 0, icmp_port(3, 3)),
        ),
        (
            "sctp",
            frame(&[], ETH_IPV4, &v4(SCTP).wrap(&sctp(2905, 2906, PAYLOAD))),
            key4(SCTP, 2905, 2906),
        ),
        (
            "udp-lite",
            frame(&[], ETH_IPV4, &v4(UDPLITE).wrap(&udp(1234, 5678, PAYLOAD))),
            key4(UDPLITE, 1234, 5678),
        ),
        (
            "gre has no ports",
            frame(&[], ETH_IPV4, &v4(GRE).wrap(&[0, 0, 0x08, 0])),
            key4(GRE, 0, 0),
        ),
    ];
    for (name, f, k) in cases {
        let mut s = Sensor::new();
        assert_eq!(s.xdp(&f), XDP_PASS, "{name}");
        assert_counters(&s, &[(action::PASS, &[f.len()])]);
        assert_flows(&s, &[(k, value(&[(f.len(), 0)]))]);
    }
}

#[test]
fn ipv4_options_are_skipped_to_reach_the_ports() {
    if !crate::kit::privileged() {
        return;
    }
    // Router alert (IHL 6), and the largest header: 40 bytes of NOPs (IHL 15).
    for options in [vec![0x94, 0x04, 0, 0], vec![1; 40]] {
        let ihl = 5 + options.len() / 4;
        let mut s = Sensor::new();
        let f = frame(
            &[],
            ETH_IPV4,
            &v4(UDP).options(&options).wrap(&udp(5353, 5354, PAYLOAD)),
        );
        assert_eq!(f[14] & 0x0f, ihl as u8);
        assert_eq!(s.xdp(&f), XDP_PASS, "ihl {ihl}");
        assert_counters(&s, &[(action::PASS, &[f.len()])]);
        assert_flows(&s, &[(key4(UDP, 5353, 5354), value(&[(f.len(), 0)]))]);
    }
}

#[test]
fn malformed_ipv4_headers_are_parse_errors() {
    if !crate::kit::privileged() {
        return;
    }
    let good = ipv4_udp(&[]);
    // Byte 14 is the IPv4 version/IHL byte.
    for (name, first) in [
        ("ihl 0", 0x40),
        ("ihl 4", 0x44),
        ("version 6", 0x65),
        ("version 0", 0x05),
        ("version 15", 0xf5),
    ] {
        let mut f = good.clone();
        f[14] = first;
        let mut s = Sensor::new();
        assert_eq!(s.xdp(&f), XDP_PASS, "{name}");
        assert_counters(&s, &[(action::PARSE_ERROR, &[f.len()])]);
        assert_flows(&s, &[]);
    }
}

#[test]
fn vlan_tagged_frames_parse_like_untagged() {
    if !crate::kit::privileged() {
        return;
    }
    let udp6 = |tpids: &[u16]| {
        frame(
            tpids,
            ETH_IPV6,
            &v6(&[], UDP).wrap(&udp(5353, 5354, PAYLOAD)),
        )
    };
    let cases: Vec<(&str, Vec<u8>, FlowKey)> = vec![
        ("untagged", ipv4_udp(&[]), key4(UDP, 5353, 5354)),
        ("802.1Q", ipv4_udp(&[TPID_8021Q]), key4(UDP, 5353, 5354)),
        (
            "QinQ 802.1ad + 802.1Q",
            ipv4_udp(&[TPID_8021AD, TPID_8021Q]),
            key4(UDP, 5353, 5354),
        ),
        (
            "double 802.1Q",
            ipv4_udp(&[TPID_8021Q, TPID_8021Q]),
            key4(UDP, 5353, 5354),
        ),
        ("802.1Q IPv6", udp6(&[TPID_8021Q]), key6(UDP, 5353, 5354)),
        (
            "QinQ IPv6",
            udp6(&[TPID_8021AD, TPID_8021Q]),
            key6(UDP, 5353, 5354),
        ),
    ];
    for (name, f, k) in cases {
        let mut s = Sensor::new();
        assert_eq!(s.xdp(&f), XDP_PASS, "{name}");
        assert_counters(&s, &[(action::PASS, &[f.len()])]);
        assert_flows(&s, &[(k, value(&[(f.len(), 0)]))]);
    }
}

#[test]
fn three_vlan_tags_are_a_parse_error() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let f = ipv4_udp(&[TPID_8021AD, TPID_8021Q, TPID_8021Q]);
    assert_eq!(s.xdp(&f), XDP_PASS);
    assert_counters(&s, &[(action::PARSE_ERROR, &[f.len()])]);
    assert_flows(&s, &[]);
}

#[test]
fn non_ip_frames_are_passed_and_counted() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let plain = arp();
    let mut tagged = frame(&[TPID_8021Q], ETH_ARP, &[]);
    tagged.extend(&plain[14..]);
    let lldp = frame(&[], 0x88cc, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1, 0, 0]);
    for f in [&plain, &tagged, &lldp] {
        assert_eq!(s.xdp(f), XDP_PASS);
    }
    assert_counters(
        &s,
        &[(action::NON_IP, &[plain.len(), tagged.len(), lldp.len()])],
    );
    assert_flows(&s, &[]);
}

#[test]
fn ipv6_single_packet_flows() {
    if !crate::kit::privileged() {
        return;
    }
    let b = || eth().ipv6(SRC6, DST6, 64);
    let cases: Vec<(&str, Vec<u8>, u8, FlowKey)> = vec![
        (
            "tcp syn",
            build!(b().tcp(40000, 443, 1, 64240).syn(), &[]),
            SYN,
            key6(TCP, 40000, 443),
        ),
        (
            "tcp psh ack",
            build!(b().tcp(40001, 443, 1, 64240).psh().ack(5), PAYLOAD),
            PSH | ACK,
            key6(TCP, 40001, 443),
        ),
        (
            "udp",
            build!(b().udp(40000, 53), PAYLOAD),
            0,
            key6(UDP, 40000, 53),
        ),
        (
            "icmpv6 echo request",
            build!(b().icmpv6_echo_request(7, 1), PAYLOAD),
            0,
            key6(ICMPV6, 0, icmp_port(128, 0)),
        ),
        (
            "icmpv6 packet too big",
            frame(&[], ETH_IPV6, &v6(&[], ICMPV6).wrap(&icmp(2, 0, PAYLOAD))),
            0,
            key6(ICMPV6, 0, icmp_port(2, 0)),
        ),
    ];
    for (name, f, flags, k) in cases {
        let mut s = Sensor::new();
        assert_eq!(s.xdp(&f), XDP_PASS, "{name}");
        assert_counters(&s, &[(action::PASS, &[f.len()])]);
        assert_flows(&s, &[(k, value(&[(f.len(), flags)]))]);
    }
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_ports() {
    if !crate::kit::privileged() {
        return;
    }
    let first_frag = Ext::Frag {
        offset_8: 0,
        more: true,
    };
    let cases: Vec<Vec<Ext>> = vec![
        vec![Ext::HopByHop],
        vec![Ext::Routing],
        vec![Ext::DstOpts],
        vec![Ext::Ah],
        vec![first_frag],
        vec![Ext::HopByHop, Ext::Routing, Ext::DstOpts, Ext::Ah],
        vec![
            Ext::HopByHop,
            Ext::DstOpts,
            Ext::Routing,
            first_frag,
            Ext::Ah,
        ],
    ];
    for exts in cases {
        for (proto, l4, sport, dport, flags) in [
            (TCP, tcp(40000, 443, SYN, &[], b""), 40000, 443, SYN),
            (UDP, udp(5353, 5354, PAYLOAD), 5353, 5354, 0),
        ] {
            let mut s = Sensor::new();
            let f = frame(&[], ETH_IPV6, &v6(&exts, proto).wrap(&l4));
            assert_eq!(s.xdp(&f), XDP_PASS, "{exts:?}");
            assert_counters(&s, &[(action::PASS, &[f.len()])]);
            assert_flows(
                &s,
                &[(key6(proto, sport, dport), value(&[(f.len(), flags)]))],
            );
        }
    }
}

#[test]
fn ipv6_extension_chain_at_the_bound_is_parsed() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let f = frame(
        &[],
        ETH_IPV6,
        &v6(&SIX_EXTS, UDP).wrap(&udp(5353, 5354, PAYLOAD)),
    );
    assert_eq!(s.xdp(&f), XDP_PASS);
    assert_counters(&s, &[(action::PASS, &[f.len()])]);
    assert_flows(&s, &[(key6(UDP, 5353, 5354), value(&[(f.len(), 0)]))]);
}

#[test]
fn ipv6_extension_chain_beyond_the_bound_is_a_parse_error() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let f = frame(
        &[],
        ETH_IPV6,
        &v6(&SEVEN_EXTS, UDP).wrap(&udp(5353, 5354, PAYLOAD)),
    );
    assert_eq!(s.xdp(&f), XDP_PASS);
    assert_counters(&s, &[(action::PARSE_ERROR, &[f.len()])]);
    assert_flows(&s, &[]);
}

#[test]
fn non_first_fragments_are_counted_without_a_flow() {
    if !crate::kit::privileged() {
        return;
    }
    // The bytes after a non-first fragment's IP header are payload, not a transport header:
    // make them look like one, so a parser that read them would create a flow.
    let l4 = udp(5353, 5354, PAYLOAD);
    let frag = |offset_8, more| Ext::Frag { offset_8, more };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ipv4 middle",
            frame(&[], ETH_IPV4, &v4(UDP).frag(185, true).wrap(&l4)),
        ),
        (
            "ipv4 last",
            frame(&[], ETH_IPV4, &v4(UDP).frag(370, false).wrap(&l4)),
        ),
        (
            "ipv4 offset 1",
            frame(&[], ETH_IPV4, &v4(UDP).frag(1, false).wrap(&l4)),
        ),
        (
            "ipv6 middle",
            frame(&[], ETH_IPV6, &v6(&[frag(185, true)], UDP).wrap(&l4)),
        ),
        (
            "ipv6 last after hop-by-hop",
            frame(
                &[],
                ETH_IPV6,
                &v6(&[Ext::HopByHop, frag(370, false)], UDP).wrap(&l4),
            ),
        ),
    ];
    for (name, f) in cases {
        let mut s = Sensor::new();
        assert_eq!(s.xdp(&f), XDP_PASS, "{name}");
        assert_counters(&s, &[(action::FRAGMENT, &[f.len()])]);
        assert_flows(&s, &[]);
    }
}

#[test]
fn first_fragments_are_flows() {
    if !crate::kit::privileged() {
        return;
    }
    let l4 = udp(5353, 5354, PAYLOAD);
    let dont_fragment = {
        let mut f = frame(&[], ETH_IPV4, &v4(UDP).wrap(&l4));
        f[14 + 6] = 0x40;
        f
    };
    let cases: Vec<(&str, Vec<u8>, FlowKey)> = vec![
        (
            "ipv4 MF, offset 0",
            frame(&[], ETH_IPV4, &v4(UDP).frag(0, true).wrap(&l4)),
            key4(UDP, 5353, 5354),
        ),
        ("ipv4 DF", dont_fragment, key4(UDP, 5353, 5354)),
        (
            "ipv6 fragment header, offset 0",
            frame(
                &[],
                ETH_IPV6,
                &v6(
                    &[Ext::Frag {
                        offset_8: 0,
                        more: true,
                    }],
                    UDP,
                )
                .wrap(&l4),
            ),
            key6(UDP, 5353, 5354),
        ),
    ];
    for (name, f, k) in cases {
        let mut s = Sensor::new();
        assert_eq!(s.xdp(&f), XDP_PASS, "{name}");
        assert_counters(&s, &[(action::PASS, &[f.len()])]);
        assert_flows(&s, &[(k, value(&[(f.len(), 0)]))]);
    }
}

// ---------------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------------

/// A frame, how much of it the parser needs to account it, and the flow it then makes.
struct Truncation {
    name: &'static str,
    frame: Vec<u8>,
    needed: usize,
    key: FlowKey,
    flags: u8,
}

fn truncation_cases() -> Vec<Truncation> {
    let exts = [Ext::HopByHop, Ext::Routing, Ext::DstOpts, Ext::Ah];
    let first_frag = [Ext::Frag {
        offset_8: 0,
        more: true,
    }];
    // Bytes after the headers the parser needs: the payload, plus for ICMP the four
    // type-specific bytes, since the parser only reads type, code and checksum.
    let cases = [
        (
            "ipv4 tcp",
            frame(
                &[],
                ETH_IPV4,
                &v4(TCP).wrap(&tcp(40000, 443, SYN | ACK, &[], PAYLOAD)),
            ),
            PAYLOAD.len(),
            key4(TCP, 40000, 443),
            SYN | ACK,
        ),
        (
            "ipv4 options udp",
            frame(
                &[],
                ETH_IPV4,
                &v4(UDP).options(&[1; 12]).wrap(&udp(5353, 5354, PAYLOAD)),
            ),
            PAYLOAD.len(),
            key4(UDP, 5353, 5354),
            0,
        ),
        (
            "vlan ipv4 udp",
            ipv4_udp(&[TPID_8021Q]),
            PAYLOAD.len(),
            key4(UDP, 5353, 5354),
            0,
        ),
        (
            "qinq ipv6 extension headers tcp",
            frame(
                &[TPID_8021AD, TPID_8021Q],
                ETH_IPV6,
                &v6(&exts, TCP).wrap(&tcp(40000, 443, SYN, &[], PAYLOAD)),
            ),
            PAYLOAD.len(),
            key6(TCP, 40000, 443),
            SYN,
        ),
        (
            "ipv6 fragment header udp",
            frame(
                &[],
                ETH_IPV6,
                &v6(&first_frag, UDP).wrap(&udp(5353, 5354, PAYLOAD)),
            ),
            PAYLOAD.len(),
            key6(UDP, 5353, 5354),
            0,
        ),
        (
            "ipv4 icmp",
            frame(&[], ETH_IPV4, &v4(ICMP).wrap(&icmp(8, 0, PAYLOAD))),
            4 + PAYLOAD.len(),
            key4(ICMP, 0, icmp_port(8, 0)),
            0,
        ),
        (
            "ipv6 icmpv6",
            frame(&[], ETH_IPV6, &v6(&[], ICMPV6).wrap(&icmp(128, 0, PAYLOAD))),
            4 + PAYLOAD.len(),
            key6(ICMPV6, 0, icmp_port(128, 0)),
            0,
        ),
        (
            "ipv4 sctp",
            frame(&[], ETH_IPV4, &v4(SCTP).wrap(&sctp(2905, 2906, PAYLOAD))),
            PAYLOAD.len(),
            key4(SCTP, 2905, 2906),
            0,
        ),
        // No ports to read: the IP header is all the parser needs.
        (
            "ipv4 gre",
            frame(&[], ETH_IPV4, &v4(GRE).wrap(&[0, 0, 0x08, 0])),
            4,
            key4(GRE, 0, 0),
            0,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, frame, tail, key, flags)| Truncation {
            name,
            needed: frame.len() - tail,
            frame,
            key,
            flags,
        })
        .collect()
}

/// Every prefix of `c.frame` shorter than what the parser needs (from the shortest the kernel
/// runs) must be passed as a parse error and leave no flow behind; the first long-enough
/// prefix must be accounted as a flow.
fn check_truncation(hook: Hook, c: &Truncation) {
    let mut s = Sensor::new();
    let mut errors = Vec::new();
    for len in hook.min_len(&c.frame)..c.needed {
        assert_eq!(
            s.run(hook, &c.frame[..len]),
            hook.passed(),
            "{hook:?} {}: {len} of {} bytes",
            c.name,
            c.needed
        );
        errors.push(len);
        let got = s.counters()[hook.parse_error() as usize];
        assert_eq!(
            got.packets,
            errors.len() as u64,
            "{hook:?} {}: {len} of {} bytes is not a parse error; counters {:?}",
            c.name,
            c.needed,
            s.counters()
        );
        assert!(
            s.flows().is_empty(),
            "{hook:?} {}: {len} of {} bytes made a flow: {:?}",
            c.name,
            c.needed,
            s.flows()
        );
    }
    assert_eq!(s.run(hook, &c.frame[..c.needed]), hook.passed());
    assert_counters(
        &s,
        &[(hook.parse_error(), &errors), (hook.pass(), &[c.needed])],
    );
    let key = FlowKey {
        direction: hook.direction(),
        ..c.key
    };
    assert_flows(&s, &[(key, value(&[(c.needed, c.flags)]))]);
}

#[test]
fn xdp_truncated_headers_are_parse_errors() {
    if !crate::kit::privileged() {
        return;
    }
    for c in truncation_cases() {
        check_truncation(Hook::Xdp, &c);
    }
}

#[test]
fn tc_truncated_headers_are_parse_errors() {
    if !crate::kit::privileged() {
        return;
    }
    for c in truncation_cases() {
        check_truncation(Hook::Tc, &c);
    }
}

#[test]
fn truncated_non_ip_frames_stay_non_ip() {
    if !crate::kit::privileged() {
        return;
    }
    for hook in [Hook::Xdp, Hook::Tc] {
        let mut s = Sensor::new();
        let f = arp();
        let lens: Vec<usize> = (MIN_TEST_RUN_LEN..=f.len()).collect();
        for &len in &lens {
            assert_eq!(s.run(hook, &f[..len]), hook.passed());
        }
        assert_counters(&s, &[(hook.non_ip(), &lens)]);
        assert_flows(&s, &[]);
    }
}

#[test]
fn tcp_header_cut_inside_its_options_is_a_parse_error() {
    if !crate::kit::privileged() {
        return;
    }
    // A SYN with MSS, SACK-permitted, timestamps and window scale: data offset 10.
    let options = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let f = frame(
        &[],
        ETH_IPV4,
        &v4(TCP).wrap(&tcp(40000, 443, SYN, &options, b"")),
    );
    let mut s = Sensor::new();
    let cut: Vec<usize> = (14 + 20 + 20..f.len()).collect();
    for &len in &cut {
        assert_eq!(s.xdp(&f[..len]), XDP_PASS);
    }
    assert_counters(&s, &[(action::PARSE_ERROR, &cut)]);
    assert_flows(&s, &[]);
}

// ---------------------------------------------------------------------------------------------
// Blocklist
// ---------------------------------------------------------------------------------------------

#[test]
fn blocked_ipv4_address_is_dropped_until_unblocked() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.block_v4(SRC4, 0);
    let f = udp4_from(SRC4);
    assert_eq!(s.xdp(&f), XDP_DROP);
    assert_eq!(s.xdp(&f), XDP_DROP);
    assert_eq!(s.hits_v4(SRC4), 2);
    assert_counters(&s, &[(action::DROP_BLOCKED, &[f.len(), f.len()])]);
    assert_flows(&s, &[]);

    // Another source is untouched by the entry.
    let other = udp4_from([198, 51, 100, 8]);
    assert_eq!(s.xdp(&other), XDP_PASS);

    s.maps.block_v4.remove(&SRC4).unwrap();
    assert_eq!(s.xdp(&f), XDP_PASS);
    assert_counters(
        &s,
        &[
            (action::DROP_BLOCKED, &[f.len(), f.len()]),
            (action::PASS, &[other.len(), f.len()]),
        ],
    );
    let other_key = FlowKey {
        src: mapped([198, 51, 100, 8]),
        ..key4(UDP, 40000, 53)
    };
    assert_flows(
        &s,
        &[
            (key4(UDP, 40000, 53), value(&[(f.len(), 0)])),
            (other_key, value(&[(other.len(), 0)])),
        ],
    );
}

#[test]
fn blocked_ipv4_prefix_drops_with_its_own_reason() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.block_net_v4(24, [198, 51, 100, 0], 0);
    let inside = [udp4_from(SRC4), udp4_from([198, 51, 100, 255])];
    for f in &inside {
        assert_eq!(s.xdp(f), XDP_DROP);
    }
    let outside = udp4_from([198, 51, 101, 7]);
    assert_eq!(s.xdp(&outside), XDP_PASS);

    let hits = s
        .maps
        .bnet_v4
        .get(&Key::new(24, [198, 51, 100, 0]), 0)
        .unwrap()
        .hits;
    assert_eq!(hits, 2);
    assert_counters(
        &s,
        &[
            (
                action::DROP_BLOCKED_NET,
                &[inside[0].len(), inside[1].len()],
            ),
            (action::PASS, &[outside.len()]),
        ],
    );
    let outside_key = FlowKey {
        src: mapped([198, 51, 101, 7]),
        ..key4(UDP, 40000, 53)
    };
    assert_flows(&s, &[(outside_key, value(&[(outside.len(), 0)]))]);
}

#[test]
fn allowlisted_address_inside_a_blocked_prefix_passes() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.maps
        .bnet_v4
        .insert(&Key::new(24, [198, 51, 100, 0]), overlapped(entry(0)), 0)
        .unwrap();
    s.maps
        .anet_v4
        .insert(&Key::new(32, SRC4), entry(0), 0)
        .unwrap();
    // An expired allow entry shields nothing.
    let lapsed = [198, 51, 100, 9];
    s.maps
        .anet_v4
        .insert(&Key::new(32, lapsed), entry(1), 0)
        .unwrap();
    let allowed = udp4_from(SRC4);
    let neighbour = udp4_from([198, 51, 100, 8]);
    let lapsed_frame = udp4_from(lapsed);
    assert_eq!(s.xdp(&allowed), XDP_PASS);
    assert_eq!(s.xdp(&neighbour), XDP_DROP);
    assert_eq!(s.xdp(&lapsed_frame), XDP_DROP);

    let allow_hits = |s: &Sensor, a| s.maps.anet_v4.get(&Key::new(32, a), 0).unwrap().hits;
    assert_eq!(allow_hits(&s, SRC4), 1);
    assert_eq!(allow_hits(&s, lapsed), 0);
    assert_counters(
        &s,
        &[
            (action::PASS_ALLOWLISTED, &[allowed.len()]),
            (
                action::DROP_BLOCKED_NET,
                &[neighbour.len(), lapsed_frame.len()],
            ),
        ],
    );
    assert_flows(&s, &[(key4(UDP, 40000, 53), value(&[(allowed.len(), 0)]))]);
}

/// The allowlist is only consulted for block entries flagged as overlapping it: the flag is
/// the contract between userspace (which sets it) and the drop path (which skips a lookup
/// when it is clear). Written through `Lists`, in either order, the flag is always there.
#[test]
fn allow_overlap_flag_gates_the_allowlist_lookup() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.block_v4(SRC4, 0);
    s.maps
        .anet_v4
        .insert(&Key::new(32, SRC4), entry(0), 0)
        .unwrap();
    let frame = udp4_from(SRC4);
    assert_eq!(
        s.xdp(&frame),
        XDP_DROP,
        "unflagged entry: allowlist not consulted"
    );

    // Through the lists, in both orders: block then allow, and allow then block.
    let pin = s.pin.path().to_owned();
    let mut lists = Lists::from_parts(Store::open_in_memory(), PinnedMaps::open(&pin).unwrap());
    let a: IpNet = "198.51.100.7/32".parse().unwrap();
    let b: IpNet = "198.51.100.0/24".parse().unwrap();
    let c: IpNet = "198.51.100.9/32".parse().unwrap();
    lists
        .add(ListKind::Block, c, None, "t", EntrySource::Manual)
        .unwrap();
    lists
        .add(ListKind::Allow, b, None, "t", EntrySource::Manual)
        .unwrap();
    let flags = |s: &Sensor, a: [u8; 4]| s.maps.block_v4.get(&a, 0).unwrap().flags;
    assert_eq!(flags(&s, [198, 51, 100, 9]), ListEntry::ALLOW_OVERLAP);
    assert_eq!(s.xdp(&udp4_from([198, 51, 100, 9])), XDP_PASS);
    lists
        .add(ListKind::Block, a, None, "t", EntrySource::Manual)
        .unwrap();
    assert_eq!(flags(&s, SRC4), ListEntry::ALLOW_OVERLAP);
    assert_eq!(s.xdp(&frame), XDP_PASS);
    // A block outside every allow prefix stays on the short path.
    let d: IpNet = "198.51.101.1/32".parse().unwrap();
    lists
        .add(ListKind::Block, d, None, "t", EntrySource::Manual)
        .unwrap();
    assert_eq!(flags(&s, [198, 51, 101, 1]), 0);
    assert_eq!(s.xdp(&udp4_from([198, 51, 101, 1])), XDP_DROP);
    // A block prefix holding an allow prefix is flagged too.
    let wide: IpNet = "198.51.0.0/16".parse().unwrap();
    lists
        .add(ListKind::Block, wide, None, "t", EntrySource::Manual)
        .unwrap();
    let key = Key::new(16, [198, 51, 0, 0]);
    assert_eq!(
        s.maps.bnet_v4.get(&key, 0).unwrap().flags,
        ListEntry::ALLOW_OVERLAP
    );

    // Batches (feeds, restore at start): an allow entry in the batch flags both a block
    // already in the kernel and a block written in the same batch; other blocks stay clear.
    let entry = |kind, net: &str| StoredEntry {
        kind,
        net: net.parse().unwrap(),
        expires_at: None,
        reason: "t".into(),
        source: EntrySource::Feed,
        created_at: 1,
        tag: "feed".into(),
        rate: None,
        protect: None,
    };
    lists
        .add_many(&[entry(ListKind::Block, "203.0.113.1/32")])
        .unwrap();
    assert_eq!(flags(&s, [203, 0, 113, 1]), 0);
    lists
        .add_many(&[
            entry(ListKind::Allow, "203.0.113.0/28"),
            entry(ListKind::Block, "203.0.113.2/32"),
            entry(ListKind::Block, "203.0.113.200/32"),
        ])
        .unwrap();
    assert_eq!(flags(&s, [203, 0, 113, 1]), ListEntry::ALLOW_OVERLAP);
    assert_eq!(flags(&s, [203, 0, 113, 2]), ListEntry::ALLOW_OVERLAP);
    assert_eq!(flags(&s, [203, 0, 113, 200]), 0);
    assert_eq!(s.xdp(&udp4_from([203, 0, 113, 2])), XDP_PASS);
    assert_eq!(s.xdp(&udp4_from([203, 0, 113, 200])), XDP_DROP);
}

#[test]
fn allowlisted_ipv6_address_inside_a_blocked_prefix_passes() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let net = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).octets();
    s.maps
        .bnet_v6
        .insert(&Key::new(48, net), overlapped(entry(0)), 0)
        .unwrap();
    s.maps
        .anet_v6
        .insert(&Key::new(128, SRC6), entry(0), 0)
        .unwrap();
    let allowed = udp6_from(SRC6);
    let neighbour = udp6_from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 8).octets());
    assert_eq!(s.xdp(&allowed), XDP_PASS);
    assert_eq!(s.xdp(&neighbour), XDP_DROP);

    assert_eq!(s.maps.anet_v6.get(&Key::new(128, SRC6), 0).unwrap().hits, 1);
    assert_counters(
        &s,
        &[
            (action::PASS_ALLOWLISTED, &[allowed.len()]),
            (action::DROP_BLOCKED_NET, &[neighbour.len()]),
        ],
    );
    assert_flows(&s, &[(key6(UDP, 40000, 53), value(&[(allowed.len(), 0)]))]);
}

#[test]
fn expired_block_entries_do_not_drop() {
    if !crate::kit::privileged() {
        return;
    }
    let exact = [198, 51, 100, 7];
    let in_prefix = [192, 0, 2, 7];
    let mut s = Sensor::new();
    // 1 ns after boot: long past, but not 0, which would mean permanent.
    s.block_v4(exact, 1);
    s.block_net_v4(24, [192, 0, 2, 0], 1);
    let frames = [udp4_from(exact), udp4_from(in_prefix)];
    for f in &frames {
        assert_eq!(s.xdp(f), XDP_PASS);
    }
    assert_eq!(s.hits_v4(exact), 0);
    let prefix_entry = s
        .maps
        .bnet_v4
        .get(&Key::new(24, [192, 0, 2, 0]), 0)
        .unwrap();
    assert_eq!(prefix_entry.hits, 0);

    // An expired block is no block: its packets are ordinary passes.
    let c = s.counters();
    assert_eq!(c[action::PASS as usize].packets, 2, "{c:?}");
    for a in [
        action::DROP_BLOCKED,
        action::DROP_BLOCKED_NET,
        action::PARSE_ERROR,
    ] {
        assert_eq!(c[a as usize], Counter::default(), "{}", action_name(a));
    }
    let flow = |src| FlowKey {
        src: mapped(src),
        ..key4(UDP, 40000, 53)
    };
    assert_flows(
        &s,
        &[
            (flow(exact), value(&[(frames[0].len(), 0)])),
            (flow(in_prefix), value(&[(frames[1].len(), 0)])),
        ],
    );
}

#[test]
fn expired_exact_entry_does_not_hide_a_live_prefix_block() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.block_v4(SRC4, 1);
    s.block_net_v4(24, [198, 51, 100, 0], 0);
    let f = udp4_from(SRC4);
    assert_eq!(s.xdp(&f), XDP_DROP);
    assert_counters(&s, &[(action::DROP_BLOCKED_NET, &[f.len()])]);
    assert_flows(&s, &[]);
}

#[test]
fn unexpired_block_entry_drops() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.block_v4(SRC4, mono_now_ns() + 60_000_000_000);
    let f = udp4_from(SRC4);
    assert_eq!(s.xdp(&f), XDP_DROP);
    assert_eq!(s.hits_v4(SRC4), 1);
    assert_counters(&s, &[(action::DROP_BLOCKED, &[f.len()])]);
    assert_flows(&s, &[]);
}

#[test]
fn blocked_ipv6_address_and_prefix_are_dropped() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.maps.block_v6.insert(SRC6, entry(0), 0).unwrap();
    let net = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0).octets();
    s.maps
        .bnet_v6
        .insert(&Key::new(48, net), overlapped(entry(0)), 0)
        .unwrap();
    let in_net = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0xffff, 0, 0, 0, 1).octets();
    let beside_net = Ipv6Addr::new(0x2001, 0xdb8, 0xbae, 0, 0, 0, 0, 1).octets();
    // Neighbour of the exact entry: an exact entry must not act as a prefix.
    let beside_exact = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 8).octets();

    let exact = udp6_from(SRC6);
    let prefixed = udp6_from(in_net);
    let passes = [udp6_from(beside_net), udp6_from(beside_exact)];
    assert_eq!(s.xdp(&exact), XDP_DROP);
    assert_eq!(s.xdp(&prefixed), XDP_DROP);
    for f in &passes {
        assert_eq!(s.xdp(f), XDP_PASS);
    }

    assert_eq!(s.maps.block_v6.get(&SRC6, 0).unwrap().hits, 1);
    assert_eq!(s.maps.bnet_v6.get(&Key::new(48, net), 0).unwrap().hits, 1);
    assert_counters(
        &s,
        &[
            (action::DROP_BLOCKED, &[exact.len()]),
            (action::DROP_BLOCKED_NET, &[prefixed.len()]),
            (action::PASS, &[passes[0].len(), passes[1].len()]),
        ],
    );
    let flow = |src| FlowKey {
        src,
        ..key6(UDP, 40000, 53)
    };
    assert_flows(
        &s,
        &[
            (flow(beside_net), value(&[(passes[0].len(), 0)])),
            (flow(beside_exact), value(&[(passes[1].len(), 0)])),
        ],
    );
}

#[test]
fn blocked_source_is_dropped_without_a_transport_header() {
    if !crate::kit::privileged() {
        return;
    }
    let l4 = udp(5353, 5354, PAYLOAD);
    let frag_v6 = Ext::Frag {
        offset_8: 185,
        more: true,
    };
    let truncated_tcp = {
        let f = frame(
            &[],
            ETH_IPV4,
            &v4(TCP).wrap(&tcp(40000, 443, SYN, &[], b"")),
        );
        f[..14 + 20 + 10].to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ipv4 non-first fragment",
            frame(&[], ETH_IPV4, &v4(UDP).frag(185, true).wrap(&l4)),
        ),
        (
            "ipv6 non-first fragment",
            frame(&[], ETH_IPV6, &v6(&[frag_v6], UDP).wrap(&l4)),
        ),
        ("ipv4 tcp header cut short", truncated_tcp),
    ];
    for (name, f) in cases {
        let mut s = Sensor::new();
        s.block_v4(SRC4, 0);
        s.maps.block_v6.insert(SRC6, entry(0), 0).unwrap();
        assert_eq!(s.xdp(&f), XDP_DROP, "{name}");
        assert_counters(&s, &[(action::DROP_BLOCKED, &[f.len()])]);
        assert_flows(&s, &[]);
    }
}

#[test]
fn blocked_ipv6_source_cannot_hide_behind_a_long_extension_chain() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.maps.block_v6.insert(SRC6, entry(0), 0).unwrap();
    let f = frame(
        &[],
        ETH_IPV6,
        &v6(&SEVEN_EXTS, UDP).wrap(&udp(5353, 5354, PAYLOAD)),
    );
    assert_eq!(s.xdp(&f), XDP_DROP);
    assert_counters(&s, &[(action::DROP_BLOCKED, &[f.len()])]);
}

// ---------------------------------------------------------------------------------------------
// TC egress
// ---------------------------------------------------------------------------------------------

#[test]
fn tc_egress_counts_flows_in_the_egress_direction() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let f = udp4_from(SRC4);
    assert_eq!(s.tc(&f), TC_ACT_PIPE);
    assert_counters(&s, &[(action::EGRESS_PASS, &[f.len()])]);
    let egress = FlowKey {
        direction: direction::EGRESS,
        ..key4(UDP, 40000, 53)
    };
    assert_flows(&s, &[(egress, value(&[(f.len(), 0)]))]);

    // The same packet seen on ingress is a flow of its own.
    assert_eq!(s.xdp(&f), XDP_PASS);
    assert_flows(
        &s,
        &[
            (egress, value(&[(f.len(), 0)])),
            (key4(UDP, 40000, 53), value(&[(f.len(), 0)])),
        ],
    );
}

#[test]
fn tc_egress_counts_non_ip_and_fragments() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let non_ip = arp();
    let fragment = frame(
        &[],
        ETH_IPV4,
        &v4(UDP).frag(185, false).wrap(&udp(1, 2, PAYLOAD)),
    );
    assert_eq!(s.tc(&non_ip), TC_ACT_PIPE);
    assert_eq!(s.tc(&fragment), TC_ACT_PIPE);
    assert_counters(
        &s,
        &[
            (action::EGRESS_NON_IP, &[non_ip.len()]),
            (action::EGRESS_FRAGMENT, &[fragment.len()]),
        ],
    );
    assert_flows(&s, &[]);
}

#[test]
fn tc_egress_never_drops_blocked_addresses() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    s.block_v4(SRC4, 0);
    let f = udp4_from(SRC4);
    assert_eq!(s.tc(&f), TC_ACT_PIPE);
    assert_eq!(s.hits_v4(SRC4), 0);
    assert_counters(&s, &[(action::EGRESS_PASS, &[f.len()])]);
    let egress = FlowKey {
        direction: direction::EGRESS,
        ..key4(UDP, 40000, 53)
    };
    assert_flows(&s, &[(egress, value(&[(f.len(), 0)]))]);
}

// ---------------------------------------------------------------------------------------------
// Flow table capacity
// ---------------------------------------------------------------------------------------------

#[test]
fn full_flow_table_counts_insert_failures_and_still_passes() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::with_flow_capacity(4);
    let f = |sport: u16| build!(eth().ipv4(SRC4, DST4, 64).udp(sport, 53), PAYLOAD);
    let frames: Vec<Vec<u8>> = (0..6).map(|i| f(50000 + i)).collect();
    for p in &frames {
        assert_eq!(s.xdp(p), XDP_PASS);
    }
    let len = frames[0].len();
    assert_counters(
        &s,
        &[
            (action::PASS, &[len; 6]),
            (action::FLOW_INSERT_FAIL, &[len; 2]),
        ],
    );
    let first_four: Vec<_> = (0..4)
        .map(|i| (key4(UDP, 50000 + i, 53), value(&[(len, 0)])))
        .collect();
    assert_flows(&s, &first_four);

    // A flow already in the table keeps counting while the table is full.
    assert_eq!(s.xdp(&frames[0]), XDP_PASS);
    let mut expected = first_four;
    expected[0].1 = value(&[(len, 0), (len, 0)]);
    assert_flows(&s, &expected);
    assert_eq!(s.counters()[action::FLOW_INSERT_FAIL as usize].packets, 2);
}

// ---------------------------------------------------------------------------------------------
// Pinned layout
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_layout_refused(pin: &std::path::Path) {
    let dir = pin.display().to_string();
    let check = |what: &str, r: Result<(), Error>| match r {
        Err(Error::Layout(m)) => {
            assert!(m.contains("layout"), "{what}: {m}");
            assert!(m.contains(&format!("rm -r {dir}")), "{what}: {m}");
        }
        Err(e) => panic!("{what}: not a layout error: {e}"),
        Ok(()) => panic!("{what}: accepted"),
    };
    check("check_layout", dataplane::check_layout(pin).map(drop));
    check("Dataplane::load", Dataplane::load(pin, 4096).map(drop));
    check("PinnedMaps::open", PinnedMaps::open(pin).map(drop));
}

#[test]
fn fresh_pins_carry_the_current_layout() {
    if !crate::kit::privileged() {
        return;
    }
    let s = Sensor::new();
    assert_eq!(
        dataplane::check_layout(s.pin.path()).unwrap(),
        LayoutState::Current
    );
    let meta = open_meta(s.pin.path()).get(&0, 0).unwrap();
    assert_eq!(meta, Meta::CURRENT);
    // A second agent reuses the pins.
    drop(Dataplane::load(s.pin.path(), 4096).unwrap());
}

fn open_meta(pin: &std::path::Path) -> Array<MapData, Meta> {
    let data = MapData::from_pin(pin.join(map_names::META)).unwrap();
    Array::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

#[test]
fn pins_of_another_layout_version_are_refused() {
    if !crate::kit::privileged() {
        return;
    }
    let s = Sensor::new();
    let mut meta = open_meta(s.pin.path());
    let other = Meta {
        layout_version: LAYOUT_VERSION + 1,
        ..Meta::CURRENT
    };
    meta.set(0, other, 0).unwrap();
    assert_layout_refused(s.pin.path());
}

#[test]
fn pins_without_a_layout_marker_are_refused() {
    if !crate::kit::privileged() {
        return;
    }
    let s = Sensor::new();
    std::fs::remove_file(s.pin.path().join(map_names::META)).unwrap();
    assert!(s.pin.path().join(map_names::FLOWS).exists());
    assert_layout_refused(s.pin.path());
}

// ---------------------------------------------------------------------------------------------
// Quarantine and throttle: the tiers after the lists
// ---------------------------------------------------------------------------------------------

const TC_ACT_SHOT: u32 = 2;

fn udp4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    build!(eth().ipv4(src, dst, 64).udp(40000, 53), payload)
}

fn tier_bits(maps: &PinnedMaps) -> u32 {
    maps.tiers().unwrap()
}

/// Lists on the sensor's maps, with 203.0.113.0/24 allowlisted as the management network.
fn lists_with_mgmt(s: &Sensor) -> Lists {
    let mut lists = Lists::from_parts(
        Store::open_in_memory(),
        PinnedMaps::open(s.pin.path()).unwrap(),
    );
    lists
        .add_manual(
            ListKind::Allow,
            "203.0.113.0/24".parse().unwrap(),
            None,
            "mgmt",
        )
        .unwrap();
    lists
}

#[test]
fn a_quarantined_host_is_cut_off_both_ways_but_for_allowlisted_peers() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    let mut lists = lists_with_mgmt(&s);
    let host = [198, 51, 100, 7];
    let peer = [198, 51, 100, 8];
    let mgmt = [203, 0, 113, 9];
    let (from_host, to_host) = (udp4(host, peer, PAYLOAD), udp4(peer, host, PAYLOAD));
    // Nothing quarantined: the tier is off and traffic passes.
    assert_eq!(tier_bits(&s.maps), 0);
    assert_eq!(s.xdp(&from_host), XDP_PASS);
    lists
        .add_manual(
            ListKind::Quarantine,
            "198.51.100.7/32".parse().unwrap(),
            None,
            "worm",
        )
        .unwrap();
    assert_eq!(tier_bits(&s.maps), astra_common::tier::QUARANTINE);
    // As source and as destination, on ingress and on egress.
    assert_eq!(s.xdp(&from_host), XDP_DROP);
    assert_eq!(s.xdp(&to_host), XDP_DROP);
    assert_eq!(s.tc(&to_host), TC_ACT_SHOT);
    assert_eq!(s.tc(&from_host), TC_ACT_SHOT);
    // Management is allowlisted: it still reaches the host, and the host it.
    let (to_mgmt, from_mgmt) = (udp4(host, mgmt, PAYLOAD), udp4(mgmt, host, PAYLOAD));
    assert_eq!(s.xdp(&to_mgmt), XDP_PASS);
    assert_eq!(s.xdp(&from_mgmt), XDP_PASS);
    assert_eq!(s.tc(&from_mgmt), TC_ACT_PIPE);
    assert_eq!(s.xdp(&from_host), XDP_DROP, "other peers stay cut off");
    let hits = s.maps.quar_v4.get(&host, 0).unwrap().hits;
    assert_eq!(hits, 5, "every dropped packet counts on the entry");
    let len = from_host.len();
    assert_counters(
        &s,
        &[
            (action::PASS, &[len, len, len]),
            (action::DROP_QUARANTINED, &[len, len, len]),
            (action::EGRESS_DROP_QUARANTINED, &[len, len]),
            (action::EGRESS_PASS, &[len]),
        ],
    );
    // Released: the tier switches off again.
    assert!(
        lists
            .remove(ListKind::Quarantine, &"198.51.100.7/32".parse().unwrap())
            .unwrap()
    );
    assert_eq!(tier_bits(&s.maps), 0);
    assert_eq!(s.xdp(&from_host), XDP_PASS);
    assert_eq!(s.tc(&to_host), TC_ACT_PIPE);

    // IPv6 the same way.
    lists
        .add_manual(
            ListKind::Quarantine,
            IpNet::from(std::net::IpAddr::from(SRC6)),
            None,
            "",
        )
        .unwrap();
    assert_eq!(s.xdp(&udp6_from(SRC6)), XDP_DROP);
    let reply = build!(eth().ipv6(DST6, SRC6, 64).udp(53, 40000), PAYLOAD);
    assert_eq!(s.xdp(&reply), XDP_DROP);
    assert_eq!(s.tc(&reply), TC_ACT_SHOT);
}

#[test]
fn quarantine_refuses_prefixes_this_host_and_allowlisted_addresses() {
    if !crate::kit::privileged() {
        return;
    }
    let s = Sensor::new();
    let mut lists = lists_with_mgmt(&s);
    for (net, why) in [
        ("198.51.100.0/24", "single address"),
        ("127.0.0.1/32", "address of this host"),
        ("203.0.113.5/32", "allowlisted (203.0.113.0/24)"),
    ] {
        let err = lists
            .add_manual(ListKind::Quarantine, net.parse().unwrap(), None, "")
            .unwrap_err();
        assert!(err.to_string().contains(why), "{net}: {err}");
        assert_eq!(err.exit_code(), 2);
    }
    assert_eq!(lists.store().count(ListKind::Quarantine).unwrap(), 0);
    assert_eq!(tier_bits(&s.maps), 0);
}

/// A private dataplane (as `astra replay` loads it), whose clock stands where it is set: rates
/// can then be checked over exact times.
struct Clocked {
    dp: Dataplane,
    lists: Lists,
}

impl Clocked {
    fn new() -> Self {
        let (dp, maps) = Dataplane::load_private(4096).expect("load a private dataplane");
        Self {
            dp,
            lists: Lists::from_parts(Store::open_in_memory(), Some(maps)),
        }
    }

    /// How many of `n` copies of `frame`, one every `step_ns` from `t0_ns`, pass.
    fn passed(&mut self, frame: &[u8], n: u64, t0_ns: u64, step_ns: u64) -> u64 {
        let mut passed = 0;
        for i in 0..n {
            self.dp.set_clock(t0_ns + i * step_ns).unwrap();
            match self.dp.run_frame(frame).unwrap() {
                XDP_PASS => passed += 1,
                XDP_DROP => {}
                v => panic!("verdict {v}"),
            }
        }
        passed
    }

    fn throttle(&mut self, net: &str, pps: u64, bps: u64) {
        let rate = astra::store::Rate {
            pps,
            bps,
            burst_ms: 100,
        };
        self.lists
            .add_manual_rated(
                ListKind::Throttle,
                net.parse().unwrap(),
                None,
                "",
                Some(rate),
            )
            .unwrap();
    }

    fn entry(&self, prefix: u32, a: [u8; 4]) -> astra_common::ThrottleEntry {
        let maps = self.lists.maps().unwrap();
        maps.tnet_v4.get(&Key::new(prefix, a), 0).unwrap()
    }
}

#[test]
fn a_throttled_prefix_passes_its_burst_then_its_packet_rate() {
    if !crate::kit::privileged() {
        return;
    }
    let mut c = Clocked::new();
    let t0 = 1_000_000_000_000;
    c.throttle("198.51.100.0/24", 100, 0);
    assert_eq!(
        tier_bits(c.lists.maps().unwrap()),
        astra_common::tier::THROTTLE
    );
    let f = udp4(SRC4, DST4, PAYLOAD);
    // 50 at one instant: the one the rate allows and 100 ms of burst at 100 pps.
    assert_eq!(c.passed(&f, 50, t0, 0), 11);
    // Then 2000 at 1 ms apart, a second later: 2 s at 100 pps, give or take the burst.
    let later = c.passed(&f, 2000, t0 + 1_000_000_000, 1_000_000);
    assert!((200..=212).contains(&later), "{later}");
    let e = c.entry(24, [198, 51, 100, 0]);
    assert_eq!(e.list.hits, 2050);
    assert_eq!(e.dropped, 2050 - 11 - later);
    assert_eq!(e.dropped_bytes, e.dropped * f.len() as u64);
    let counters = c.lists.maps().unwrap().iface_counters(LO).unwrap();
    assert_eq!(counters[action::DROP_THROTTLED as usize].packets, e.dropped);
    // Sources outside the prefix, and an allowlisted one inside it, are never held.
    let outside = udp4([198, 51, 101, 7], DST4, PAYLOAD);
    assert_eq!(c.passed(&outside, 100, t0 + 5_000_000_000, 0), 100);
    c.lists
        .add_manual(
            ListKind::Allow,
            "198.51.100.9/32".parse().unwrap(),
            None,
            "",
        )
        .unwrap();
    let allowed = udp4([198, 51, 100, 9], DST4, PAYLOAD);
    assert_eq!(c.passed(&allowed, 100, t0 + 5_000_000_000, 0), 100);
    // `astra list` shows the rate and what it dropped.
    let rows = c.lists.list().unwrap();
    let row = rows.iter().find(|r| r.kind == ListKind::Throttle).unwrap();
    assert_eq!(row.dropped, Some(e.dropped));
    assert_eq!(row.rate.unwrap().pps, 100);
    // Removed: the tier is off and everything passes.
    assert!(
        c.lists
            .remove(ListKind::Throttle, &"198.51.100.0/24".parse().unwrap())
            .unwrap()
    );
    assert_eq!(tier_bits(c.lists.maps().unwrap()), 0);
    assert_eq!(c.passed(&f, 50, t0 + 6_000_000_000, 0), 50);
}

#[test]
fn a_bit_rate_throttle_counts_bytes_and_expires_in_the_kernel() {
    if !crate::kit::privileged() {
        return;
    }
    let mut c = Clocked::new();
    let t0 = 1_000_000_000_000;
    // 64 kbit/s = 8000 B/s. Frames of 1000 bytes cost 125 ms each: 100 ms of burst admits the
    // first only; over 10 s at 10 frames a second (10 kB/s offered) about 80 pass.
    c.throttle("198.51.100.7/32", 0, 64_000);
    let payload = vec![0u8; 1000 - 42];
    let f = udp4(SRC4, DST4, &payload);
    assert_eq!(f.len(), 1000);
    assert_eq!(c.passed(&f, 5, t0, 0), 1);
    let passed = c.passed(&f, 100, t0 + 1_000_000_000, 100_000_000);
    assert!((80..=82).contains(&passed), "{passed}");
    // An entry whose expiry has passed in the kernel's clock holds nothing back, agent or not.
    let maps = c.lists.maps_mut().unwrap();
    let key = Key::new(32, SRC4);
    let mut e = maps.tnet_v4.get(&key, 0).unwrap();
    e.list.expires_ns = t0 + 20_000_000_000;
    maps.tnet_v4.insert(&key, e, 0).unwrap();
    assert!(c.passed(&f, 10, t0 + 19_000_000_000, 0) < 10);
    assert_eq!(c.passed(&f, 10, t0 + 20_000_000_000, 0), 10);
}

/// A protection entry for `target` (IPv4) with `flags`, a budget of `syns_per_s` new SYNs a
/// second from strangers with 100 ms of burst, for new SYNs to `ports` (none: every port).
fn protect_v4(maps: &mut PinnedMaps, target: [u8; 4], flags: u32, syns_per_s: u64, ports: &[u16]) {
    let mut e = astra_common::ProtectEntry {
        budget: astra_common::ThrottleEntry {
            list: entry(0),
            packet_ns: 1_000_000_000 / syns_per_s,
            burst_ns: 100_000_000,
            ..Default::default()
        },
        flags,
        ..Default::default()
    };
    e.ports[..ports.len()].copy_from_slice(ports);
    maps.prot_v4.insert(target, e, 0).unwrap();
    maps.sync_tiers().unwrap();
}

fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let b = eth().ipv4(src, dst, 64).tcp(sport, dport, 1, 64240);
    let b = if flags & SYN != 0 { b.syn() } else { b };
    let b = if flags & ACK != 0 { b.ack(1) } else { b };
    build!(b, &[])
}

/// New SYNs to a protected target: sources known to complete handshakes pass, others draw on
/// the target's budget; everything else a TCP connection sends never meets it.
#[test]
fn a_protected_target_admits_known_sources_first_then_new_syns_within_its_budget() {
    if !crate::kit::privileged() {
        return;
    }
    let mut c = Clocked::new();
    let t0 = 1_000_000_000_000;
    let maps = c.lists.maps_mut().unwrap();
    protect_v4(maps, DST4, astra_common::protect::ALL, 100, &[80, 443]);
    assert_eq!(tier_bits(maps), astra_common::tier::PROTECT);
    let known = [198, 51, 100, 20];
    maps.known.insert(mapped(known), 0, 0).unwrap();
    // 50 new SYNs from a stranger at one instant: the one the rate allows and 100 ms of
    // burst at 100 a second.
    let syn = tcp4(SRC4, DST4, 40000, 80, SYN);
    assert_eq!(c.passed(&syn, 50, t0, 0), 11);
    // The known source, the stranger's ACKs and data, and SYNs to an unlisted port all pass.
    assert_eq!(c.passed(&tcp4(known, DST4, 40001, 443, SYN), 50, t0, 0), 50);
    assert_eq!(c.passed(&tcp4(SRC4, DST4, 40000, 80, ACK), 50, t0, 0), 50);
    assert_eq!(c.passed(&tcp4(SRC4, DST4, 40000, 22, SYN), 50, t0, 0), 50);
    // Another target is not protected.
    assert_eq!(c.passed(&tcp4(SRC4, SRC4, 40000, 80, SYN), 50, t0, 0), 50);
    // A second later the budget allows about 100 more over the second.
    let later = c.passed(&syn, 1000, t0 + 1_000_000_000, 1_000_000);
    assert!((100..=112).contains(&later), "{later}");
    let maps = c.lists.maps().unwrap();
    let e = maps.prot_v4.get(&DST4, 0).unwrap();
    assert_eq!(e.known_syns, 50);
    assert_eq!(e.budget.list.hits, 1050);
    assert_eq!(e.budget.dropped, 1050 - 11 - later);
    let counters = maps.iface_counters(LO).unwrap();
    assert_eq!(
        counters[action::DROP_SYN_BUDGET as usize].packets,
        e.budget.dropped
    );
    // An allowlisted source is never held back, and nothing is counted against it.
    c.lists
        .add_manual(
            ListKind::Allow,
            "198.51.100.9/32".parse().unwrap(),
            None,
            "",
        )
        .unwrap();
    let allowed = tcp4([198, 51, 100, 9], DST4, 40000, 80, SYN);
    assert_eq!(c.passed(&allowed, 50, t0 + 5_000_000_000, 0), 50);
    let e2 = c.lists.maps().unwrap().prot_v4.get(&DST4, 0).unwrap();
    assert_eq!(e2.budget.dropped, e.budget.dropped);
    // Past its expiry (in the kernel's clock) the entry holds nothing back.
    let maps = c.lists.maps_mut().unwrap();
    let mut e = maps.prot_v4.get(&DST4, 0).unwrap();
    e.budget.list.expires_ns = t0 + 10_000_000_000;
    maps.prot_v4.insert(DST4, e, 0).unwrap();
    assert!(c.passed(&syn, 50, t0 + 9_000_000_000, 0) < 50);
    assert_eq!(c.passed(&syn, 50, t0 + 10_000_000_000, 0), 50);
}

/// A stranger's new SYN to a target protected with SYN cookies is answered from XDP: the
/// frame goes back out (XDP_TX) as the SYN-ACK, addresses and ports swapped, acknowledging the
/// SYN, with the MSS option and both checksums right, whatever options (or none) the SYN had,
/// over IPv4 and IPv6.
/// The cookie itself is checked end to end by SYNPROXY in the netns test.
#[test]
fn a_target_protected_with_cookies_answers_strangers_syns_from_xdp() {
    use etherparse::TcpOptionElement::*;
    if !crate::kit::privileged() {
        return;
    }
    const XDP_TX: u32 = 3;
    let mut s = Sensor::new();
    let flags = astra_common::protect::SYN | astra_common::protect::COOKIE;
    protect_v4(&mut s.maps, DST4, flags, 1, &[80]);
    // As Linux sends a SYN (MSS, SACK permitted, timestamps, window scale: 40 bytes), and as a
    // flood tool does (no options, 20).
    let linux = build!(
        eth()
            .ipv4(SRC4, DST4, 64)
            .tcp(40000, 80, 7777, 64240)
            .syn()
            .options(&[
                MaximumSegmentSize(1400),
                SelectiveAcknowledgementPermitted,
                Timestamp(1, 0),
                Noop,
                WindowScale(7),
            ])
            .unwrap(),
        &[]
    );
    let bare = build!(
        eth().ipv4(SRC4, DST4, 64).tcp(40001, 80, 9, 64240).syn(),
        &[]
    );
    for (syn, sport, seq) in [(&linux, 40000, 7777u32), (&bare, 40001, 9)] {
        let (verdict, reply) = s.xdp_out(syn);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(reply.len(), 14 + 20 + 24);
        let h = PacketHeaders::from_ethernet_slice(&reply).unwrap();
        let Some(etherparse::LinkHeader::Ethernet2(e)) = &h.link else {
            panic!("no Ethernet header: {h:?}");
        };
        assert_eq!((e.source, e.destination), (MAC_DST, MAC_SRC));
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("not IPv4: {h:?}");
        };
        assert_eq!((ip.source, ip.destination), (DST4, SRC4));
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!(ip.total_len, 44);
        let Some(TransportHeader::Tcp(t)) = &h.transport else {
            panic!("not TCP: {h:?}");
        };
        assert_eq!((t.source_port, t.destination_port), (80, sport));
        assert!(t.syn && t.ack && !t.rst && !t.fin, "{t:?}");
        assert_eq!(t.acknowledgment_number, seq + 1);
        assert_eq!(
            t.checksum,
            t.calc_checksum_ipv4_raw(ip.source, ip.destination, &[])
                .unwrap()
        );
        let mss: Vec<_> = t
            .options_iterator()
            .filter_map(|o| match o {
                Ok(MaximumSegmentSize(m)) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(mss.len(), 1, "{t:?}");
        assert!((536..=1400).contains(&mss[0]), "{mss:?}");
    }
    // IPv6 the same way, with the IPv6 pseudo-header in the checksum.
    let v6_entry = s.maps.prot_v4.get(&DST4, 0).unwrap();
    s.maps
        .prot_v6
        .insert(
            DST6,
            astra_common::ProtectEntry {
                cookies: 0,
                ..v6_entry
            },
            0,
        )
        .unwrap();
    let syn6 = build!(
        eth()
            .ipv6(SRC6, DST6, 64)
            .tcp(40002, 80, 5, 64240)
            .syn()
            .options(&[MaximumSegmentSize(1400)])
            .unwrap(),
        &[]
    );
    let (verdict, reply) = s.xdp_out(&syn6);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(reply.len(), 14 + 40 + 24);
    let h = PacketHeaders::from_ethernet_slice(&reply).unwrap();
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("not IPv6: {h:?}");
    };
    assert_eq!((ip.source, ip.destination), (DST6, SRC6));
    assert_eq!((ip.payload_length, ip.next_header.0), (24, TCP));
    let Some(TransportHeader::Tcp(t)) = &h.transport else {
        panic!("not TCP: {h:?}");
    };
    assert!(t.syn && t.ack, "{t:?}");
    assert_eq!((t.source_port, t.destination_port), (80, 40002));
    assert_eq!(t.acknowledgment_number, 6);
    assert_eq!(
        t.checksum,
        t.calc_checksum_ipv6_raw(ip.source, ip.destination, &[])
            .unwrap()
    );
    // Three cookies, and nothing else answered: the SYN's ACKs, another port, another target.
    assert_eq!(s.xdp(&tcp4(SRC4, DST4, 40000, 80, ACK)), XDP_PASS);
    assert_eq!(s.xdp(&tcp4(SRC4, DST4, 40000, 22, SYN)), XDP_PASS);
    assert_eq!(s.xdp(&tcp4(SRC4, SRC4, 40000, 80, SYN)), XDP_PASS);
    assert_eq!(s.counters()[action::SYN_COOKIE as usize].packets, 3);
    assert_eq!(s.maps.prot_v4.get(&DST4, 0).unwrap().cookies, 2);
    assert_eq!(s.maps.prot_v6.get(&DST6, 0).unwrap().cookies, 1);
}

/// Answers from reflection ports and SYN-ACKs reach a protected target only when it asked:
/// the flow table's egress side is the record of what it sent.
#[test]
fn a_protected_target_drops_answers_to_requests_it_never_sent() {
    if !crate::kit::privileged() {
        return;
    }
    let mut s = Sensor::new();
    protect_v4(&mut s.maps, DST4, astra_common::protect::REFLECT, 1, &[]);
    let reflector = [198, 51, 100, 53];
    let answer = build!(eth().ipv4(reflector, DST4, 64).udp(53, 40000), PAYLOAD);
    assert_eq!(s.xdp(&answer), XDP_DROP, "a DNS answer nobody asked for");
    // A reflection port on the other side, or another port, is no answer.
    let query_in = build!(eth().ipv4(reflector, DST4, 64).udp(40000, 53), PAYLOAD);
    assert_eq!(s.xdp(&query_in), XDP_PASS);
    let other = build!(eth().ipv4(reflector, DST4, 64).udp(5000, 40000), PAYLOAD);
    assert_eq!(s.xdp(&other), XDP_PASS);
    // The target asks (TC egress records it): the answer passes, as do those that follow.
    let query = build!(eth().ipv4(DST4, reflector, 64).udp(40000, 53), PAYLOAD);
    assert_eq!(s.tc(&query), TC_ACT_PIPE);
    assert_eq!(s.xdp(&answer), XDP_PASS);
    assert_eq!(s.xdp(&answer), XDP_PASS);
    // From another port of the target: not asked.
    let elsewhere = build!(eth().ipv4(reflector, DST4, 64).udp(53, 40001), PAYLOAD);
    assert_eq!(s.xdp(&elsewhere), XDP_DROP);
    // A SYN-ACK for a SYN the target never sent is dropped; for one it sent, it passes.
    let server = [198, 51, 100, 80];
    let syn_ack = tcp4(server, DST4, 80, 40002, SYN | ACK);
    assert_eq!(s.xdp(&syn_ack), XDP_DROP);
    assert_eq!(s.tc(&tcp4(DST4, server, 40002, 80, SYN)), TC_ACT_PIPE);
    assert_eq!(s.xdp(&syn_ack), XDP_PASS);
    // Without the SYN tier, new SYNs are not held at all.
    assert_eq!(s.xdp(&tcp4(SRC4, DST4, 40000, 80, SYN)), XDP_PASS);
    let c = s.counters();
    assert_eq!(c[action::DROP_REFLECTED as usize].packets, 3);
    let e = s.maps.prot_v4.get(&DST4, 0).unwrap();
    assert_eq!(e.reflected, 3);
    assert_eq!(e.reflected_bytes, (answer.len() * 2 + syn_ack.len()) as u64);
    // What was dropped took no flow-table entry: only the target's requests and what passed.
    let from_reflector = s
        .flows()
        .iter()
        .filter(|(k, _)| k.src == mapped(reflector) && k.direction == direction::INGRESS)
        .map(|(k, v)| (k.src_port, k.dst_port, v.packets))
        .collect::<Vec<_>>();
    let mut from_reflector = from_reflector;
    from_reflector.sort();
    assert_eq!(
        from_reflector,
        [(53, 40000, 2), (5000, 40000, 1), (40000, 53, 1)]
    );
    // IPv6 likewise.
    let mut e6 = e;
    e6.reflected = 0;
    s.maps.prot_v6.insert(DST6, e6, 0).unwrap();
    let answer6 = build!(eth().ipv6(SRC6, DST6, 64).udp(123, 40000), PAYLOAD);
    assert_eq!(s.xdp(&answer6), XDP_DROP);
    assert_eq!(s.maps.prot_v6.get(&DST6, 0).unwrap().reflected, 1);
}

/// `Lists::add_protect` (what `astra protect` and the policy call) stores the protection,
/// writes the kernel entry the tests above exercise, lists it with its drops, restores it from
/// the store into fresh maps (a reboot) and removes it, switching the tier off.
#[test]
fn a_stored_protection_is_enforced_listed_restored_and_removed() {
    if !crate::kit::privileged() {
        return;
    }
    use astra::store::{Protection, Rate};
    let mut s = Sensor::new();
    let store = Store::open_in_memory();
    let mut lists = Lists::from_parts(store.clone(), PinnedMaps::open(s.pin.path()).unwrap());
    let budget = Rate {
        pps: 5,
        bps: 0,
        burst_ms: 0,
    };
    let p = Protection {
        ports: vec![80],
        syn: true,
        reflect: true,
        cookies: false,
    };
    let target = Ipv4Addr::from(DST4).into();
    lists
        .add_protect(
            target,
            None,
            "flood",
            EntrySource::Manual,
            budget,
            p.clone(),
        )
        .unwrap();
    assert_eq!(tier_bits(&s.maps), astra_common::tier::PROTECT);
    let syn = tcp4(SRC4, DST4, 40000, 80, SYN);
    let passed = (0..20).filter(|_| s.xdp(&syn) == XDP_PASS).count();
    assert!(
        (1..=2).contains(&passed),
        "{passed} of 20 new SYNs passed a budget of 5/s"
    );
    let answer = build!(eth().ipv4(SRC4, DST4, 64).udp(53, 40000), PAYLOAD);
    assert_eq!(s.xdp(&answer), XDP_DROP);
    let row = lists
        .list()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == ListKind::Protect)
        .unwrap();
    assert_eq!(row.protect.as_ref(), Some(&p));
    assert_eq!(row.rate.unwrap().pps, 5);
    assert_eq!(row.dropped, Some(20 - passed as u64 + 1));
    // Refused: a prefix, a budget of nothing, terms that protect nothing.
    let none = Protection {
        syn: false,
        reflect: false,
        ..p.clone()
    };
    for (b, terms) in [(Rate { pps: 0, ..budget }, p.clone()), (budget, none)] {
        let err = lists
            .add_protect(target, None, "", EntrySource::Manual, b, terms)
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
    }
    // A reboot: fresh maps, the same store.
    drop(lists);
    let s2 = Sensor::new();
    let mut lists = Lists::from_parts(store, PinnedMaps::open(s2.pin.path()).unwrap());
    assert_eq!(lists.restore().unwrap(), 1);
    let k = s2.maps.prot_v4.get(&DST4, 0).unwrap();
    assert_eq!((k.ports[0], k.flags), (80, astra_common::protect::ALL));
    assert_eq!(k.budget.packet_ns, 200_000_000);
    assert_eq!(tier_bits(&s2.maps), astra_common::tier::PROTECT);
    assert!(
        lists
            .remove(ListKind::Protect, &"203.0.113.9/32".parse().unwrap())
            .unwrap()
    );
    assert_eq!(tier_bits(&s2.maps), 0);
    assert!(s2.maps.prot_v4.get(&DST4, 0).is_err());
}

/// The verifier's work on each program, in instructions it walked (the kernel refuses a
/// program past 1M). Inlining the quarantine check into the TC program once took it to 977k,
/// one step from not loading at all, and every load took seconds; the bound keeps such a
/// change from passing unnoticed. Measured here on 6.18: XDP 149k, TC 177k.
#[test]
fn the_verifier_walks_each_program_well_inside_its_limit() {
    if !crate::kit::privileged() {
        return;
    }
    let pin = crate::kit::pin_dir();
    let mut dp = Dataplane::load(pin.path(), 4096).expect("load dataplane");
    let xdp = dp
        .xdp()
        .unwrap()
        .info()
        .unwrap()
        .verified_instruction_count();
    let tc = dp
        .tc_egress()
        .unwrap()
        .info()
        .unwrap()
        .verified_instruction_count();
    for (name, n) in [("xdp", xdp), ("tc", tc)] {
        let n = n.expect("the kernel reports verified instructions (5.16+)");
        eprintln!("{name}: the verifier walked {n} instructions");
        assert!(n < 300_000, "{name}: the verifier walked {n} instructions");
    }
}
