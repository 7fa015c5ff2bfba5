//! Per-source and per-destination features over sliding windows, built from the conversations
//! the flow table reports each poll.
//!
//! A conversation stays in the tracker until its last packet is older than the longest
//! window, even after the kernel table evicted it, so a window always sees every conversation
//! that was active in it. Packet and byte rates come from per-poll deltas, counted per sender
//! and per receiver in fixed epochs of each window's length, from which each window's sum is
//! estimated (see `estimate`): a fixed size per address however long or often it sends.
use std::{collections::VecDeque, net::IpAddr, time::Duration};

use astra_common::{FlowKey, ip_proto, tcp_flags};
use serde::Serialize;

use crate::flow::{BiFlow, Conversations, FastMap};

/// Ports whose short, small-reply conversations look like failed logins.
pub const AUTH_PORTS: [u16; 13] = [
    21, 22, 23, 25, 110, 143, 445, 993, 995, 3306, 3389, 5432, 5900,
];

const NS: u64 = 1_000_000_000;

#[derive(Clone, Debug)]
pub struct FeatureConfig {
    pub short_window: Duration,
    pub long_window: Duration,
    /// A login-port conversation whose replies stay under this many bytes, and that ended
    /// within `failed_login_max_duration`, looks like a failed login.
    pub failed_login_max_reply_bytes: u64,
    pub failed_login_max_duration: Duration,
    /// How long failed logins count against their source (fail2ban's findtime): far longer
    /// than the long window, so slow password guessing adds up, while the conversations
    /// themselves leave after the long window and only their times stay.
    pub login_window: Duration,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            short_window: Duration::from_secs(10),
            long_window: Duration::from_secs(60),
            failed_login_max_reply_bytes: 16 * 1024,
            failed_login_max_duration: Duration::from_secs(30),
            login_window: Duration::from_secs(600),
        }
    }
}

/// Failed logins per source and login port whose conversations left the long window: their
/// end times, for the login window. Bounded: at most [`LOGIN_KEYS`] pairs and
/// [`LOGIN_TIMES`] times per pair (a count that high has crossed any threshold long before).
/// Only sources that completed handshakes get here, so forged addresses cannot fill it.
#[derive(Debug, Default)]
struct LoginFailures {
    /// Per source, each login port's end times: keyed by source so that one source's ports
    /// are a lookup, not a scan of every pair, in the window pass.
    by_src: FastMap<IpAddr, Vec<(u16, VecDeque<u64>)>>,
    /// Pairs held, across sources.
    pairs: usize,
    /// Sources whose failures a service reported itself (`POST /api/v1/events`): a server
    /// only rejects a password over a connection the source completed, so these are real.
    reported: FastMap<IpAddr, u64>,
    updates: u32,
}

/// Source and port pairs the login memory holds at most.
pub const LOGIN_KEYS: usize = 100_000;
/// End times kept per pair.
pub const LOGIN_TIMES: usize = 256;

impl LoginFailures {
    /// Remembers one failure; false when the memory is full and the pair is new.
    fn record(&mut self, src: IpAddr, port: u16, at_ns: u64) -> bool {
        let known = self
            .by_src
            .get(&src)
            .is_some_and(|ports| ports.iter().any(|(p, _)| *p == port));
        if !known && self.pairs >= LOGIN_KEYS {
            return false;
        }
        let ports = self.by_src.entry(src).or_default();
        let i = match ports.iter().position(|(p, _)| *p == port) {
            Some(i) => i,
            None => {
                self.pairs += 1;
                ports.push((port, VecDeque::new()));
                ports.len() - 1
            }
        };
        let times = &mut ports[i].1;
        if times.len() >= LOGIN_TIMES {
            times.pop_front();
        }
        times.push_back(at_ns);
        true
    }

    /// Drops times older than `cut`; all pairs every so often, so a pair nobody reads again
    /// does not stay.
    fn expire(&mut self, cut: u64) {
        self.updates = self.updates.wrapping_add(1);
        if !self.updates.is_multiple_of(64) {
            return;
        }
        self.by_src.retain(|_, ports| {
            ports.retain_mut(|(_, t)| {
                while t.front().is_some_and(|&x| x < cut) {
                    t.pop_front();
                }
                !t.is_empty()
            });
            !ports.is_empty()
        });
        self.pairs = self.by_src.values().map(Vec::len).sum();
        let by_src = &self.by_src;
        self.reported.retain(|src, _| by_src.contains_key(src));
    }

    /// Failed logins from `src` to `port` that ended at or after `cut`.
    fn count(&self, src: IpAddr, port: u16, cut: u64) -> u64 {
        self.by_src
            .get(&src)
            .and_then(|ports| ports.iter().find(|(p, _)| *p == port))
            .map_or(0, |(_, t)| t.iter().filter(|&&x| x >= cut).count() as u64)
    }

    /// Sources with failed logins in memory, in address order.
    fn sources(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.by_src.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The ports `src` has failed logins on.
    fn ports(&self, src: IpAddr) -> impl Iterator<Item = u16> + '_ {
        self.by_src.get(&src).into_iter().flatten().map(|(p, _)| *p)
    }
}

/// What one conversation says about its initiator.
fn is_tcp(f: &BiFlow) -> bool {
    f.proto == ip_proto::TCP
}

/// The initiator sent SYN but never an ACK: a handshake it did not (or could not) complete.
pub fn half_open_flow(f: &BiFlow) -> bool {
    is_tcp(f) && f.fwd.tcp_flags & tcp_flags::SYN != 0 && f.fwd.tcp_flags & tcp_flags::ACK == 0
}

/// The responder answered with SYN-ACK and the initiator went on to ACK: only a host that
/// receives our replies can do that, so the source address is real.
pub fn handshake_completed(f: &BiFlow) -> bool {
    is_tcp(f)
        && f.fwd.tcp_flags & tcp_flags::SYN != 0
        && f.fwd.tcp_flags & tcp_flags::ACK != 0
        && f.rev.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK
}

fn ended(f: &BiFlow, closed: bool) -> bool {
    closed || (f.fwd.tcp_flags | f.rev.tcp_flags) & (tcp_flags::FIN | tcp_flags::RST) != 0
}

/// Whether a server's first words are a login service's greeting, whatever its port: SSH's
/// version line, the `220` of FTP and SMTP, POP3's `+OK`, IMAP's `* OK`, VNC's `RFB 0`, or
/// telnet's option negotiation.
pub fn login_banner(b: &[u8; 8]) -> bool {
    b.starts_with(b"SSH-")
        || b.starts_with(b"220")
        || b.starts_with(b"+OK")
        || b.starts_with(b"* OK")
        || b.starts_with(b"RFB 0")
        || (b[0] == 0xff && (0xfb..=0xfe).contains(&b[1]))
}

/// A conversation to a login service (a login port, or a server that greeted like one) that
/// completed its handshake, ended, was short and got a small answer: what a rejected password
/// looks like from outside.
fn failed_login(f: &BiFlow, closed: bool, cfg: &FeatureConfig) -> bool {
    is_tcp(f)
        && handshake_completed(f)
        && (AUTH_PORTS.contains(&f.dst_port) || login_banner(&f.rev.first_payload))
        && ended(f, closed)
        && f.last_seen_ns.saturating_sub(f.first_seen_ns)
            <= cfg.failed_login_max_duration.as_nanos() as u64
        && f.rev.bytes <= cfg.failed_login_max_reply_bytes
}

fn has_rst(f: &BiFlow) -> bool {
    (f.fwd.tcp_flags | f.rev.tcp_flags) & tcp_flags::RST != 0
}

/// Names and units of [`SourceFeatures`], in vector order (the isolation forest's columns).
pub const FEATURE_NAMES: [&str; 14] = {
    let mut names = [""; 14];
    let mut i = 0;
    while i < names.len() {
        names[i] = FEATURE_INFO[i].0;
        i += 1;
    }
    names
};

/// Each feature's name, unit and meaning, in the order of the models' rows (`GET
/// /api/v1/features`, the README's table); [`FEATURE_NAMES`] is their names.
pub const FEATURE_INFO: [(&str, &str, &str); 14] = [
    (
        "conns",
        "count",
        "conversations the source started that were active in the window",
    ),
    (
        "distinct_dst_ports",
        "count",
        "different destination ports it talked to",
    ),
    (
        "distinct_dst_hosts",
        "count",
        "different destination addresses",
    ),
    (
        "half_open_ratio",
        "0..1",
        "share of its TCP conversations where it sent SYN but never an ACK",
    ),
    (
        "rst_ratio",
        "0..1",
        "share of its TCP conversations with a RST in either direction",
    ),
    (
        "mean_bytes_per_flow",
        "bytes",
        "both directions of a conversation, averaged",
    ),
    (
        "max_bytes_per_flow",
        "bytes",
        "both directions of its largest conversation",
    ),
    ("pps", "packets/s", "what the source sent"),
    ("bps", "bits/s", "what the source sent"),
    (
        "mean_flow_duration_s",
        "seconds",
        "first to last packet, averaged",
    ),
    (
        "failed_logins",
        "count",
        "short conversations to a login service that ended after a handshake",
    ),
    ("icmp_pps", "packets/s", "ICMP the source sent"),
    ("udp_pps", "packets/s", "UDP the source sent"),
    (
        "max_dst_fan_in",
        "count",
        "the most distinct sources seen at any of its destinations",
    ),
];

/// Features of one source over one window. See the README for each one's meaning and unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SourceFeatures {
    /// Conversations the source initiated that were active in the window.
    pub conns: f64,
    pub distinct_dst_ports: f64,
    pub distinct_dst_hosts: f64,
    /// Share of its TCP conversations left half-open (SYN, never ACK), 0..1.
    pub half_open_ratio: f64,
    /// Share of its TCP conversations that saw a RST in either direction, 0..1.
    pub rst_ratio: f64,
    /// Bytes per conversation, both directions.
    pub mean_bytes_per_flow: f64,
    pub max_bytes_per_flow: f64,
    /// Packets and bits per second the source sent.
    pub pps: f64,
    pub bps: f64,
    /// Seconds from first to last packet, averaged over its conversations.
    pub mean_flow_duration_s: f64,
    /// Short conversations to login ports with small replies.
    pub failed_logins: f64,
    pub icmp_pps: f64,
    pub udp_pps: f64,
    /// The largest number of distinct sources talking to any of its destinations.
    pub max_dst_fan_in: f64,
}

impl SourceFeatures {
    pub fn to_vec(&self) -> [f64; FEATURE_NAMES.len()] {
        [
            self.conns,
            self.distinct_dst_ports,
            self.distinct_dst_hosts,
            self.half_open_ratio,
            self.rst_ratio,
            self.mean_bytes_per_flow,
            self.max_bytes_per_flow,
            self.pps,
            self.bps,
            self.mean_flow_duration_s,
            self.failed_logins,
            self.icmp_pps,
            self.udp_pps,
            self.max_dst_fan_in,
        ]
    }
}

/// Counts behind the features that rules and the realness check need directly.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceWindow {
    pub features: SourceFeatures,
    pub tcp_conns: u64,
    pub half_open: u64,
    /// Conversations in which the responder sent anything back.
    pub replied: u64,
    pub handshakes: u64,
    /// The login port with the most failed-login-like conversations, and how many.
    pub top_failed_logins: Option<(u16, u64)>,
    /// The destination with the most half-open conversations from this source, and how many.
    pub top_half_open: Option<(IpAddr, u64)>,
    /// Packets and bytes the source sent in the window (from per-poll deltas).
    pub packets: u64,
    pub bytes: u64,
    /// Packets the source sent in the conversations active in the window.
    pub fwd_packets: u64,
    /// Distinct IP protocols of its conversations (an IP-protocol scan tries many).
    pub distinct_protocols: u64,
    /// Long window only: the login port with the most failed logins over the login window
    /// (those still in the window and those remembered after it), and how many.
    pub login_window_failures: Option<(u16, u64)>,
    /// Failed logins a service reported for this source (not seen on the wire).
    pub reported_login_failures: u64,
}

/// What a destination received over one window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DestWindow {
    /// Distinct sources with a conversation to it.
    pub fan_in: u64,
    pub half_open_in: u64,
    /// Sources with at least one half-open conversation to it, and the most one of them had.
    pub half_open_sources: u64,
    pub max_half_open_per_source: u64,
    pub pps_in: f64,
    pub bps_in: f64,
    /// Half-open conversations per destination port.
    pub half_open_ports: FastMap<u16, u64>,
}

/// Per-source and per-destination aggregates of one pass, for the short and the long window.
#[derive(Default)]
pub struct WindowSet {
    pub src_short: FastMap<IpAddr, SourceWindow>,
    pub src_long: FastMap<IpAddr, SourceWindow>,
    pub dst_short: FastMap<IpAddr, DestWindow>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Rate {
    packets: u64,
    bytes: u64,
    udp: u64,
    icmp: u64,
}

/// An address as the kernel keys it (IPv4 mapped into IPv6): 16 bytes with no padding, where
/// `IpAddr` takes 17 and pads the entries that hold it to 24.
type Addr = [u8; 16];

fn addr(ip: &IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// One address's counts in one fixed epoch of a window's length. Packet counts saturate (four
/// billion packets from one address in one epoch is beyond any link); bytes do not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    bytes: u64,
    packets: u32,
    udp: u32,
    icmp: u32,
}

impl Counts {
    fn add(&mut self, r: &Rate) {
        let add32 =
            |x: &mut u32, y: u64| *x = x.saturating_add(u32::try_from(y).unwrap_or(u32::MAX));
        self.bytes = self.bytes.saturating_add(r.bytes);
        add32(&mut self.packets, r.packets);
        add32(&mut self.udp, r.udp);
        add32(&mut self.icmp, r.icmp);
    }

    /// `cur` plus the share `f` (0..1) of `prev`, as a [`Rate`].
    fn blend(cur: &Counts, prev: &Counts, f: f64) -> Rate {
        let mix = |c: u64, p: u64| c + (p as f64 * f).round() as u64;
        Rate {
            packets: mix(cur.packets.into(), prev.packets.into()),
            bytes: mix(cur.bytes, prev.bytes),
            udp: mix(cur.udp.into(), prev.udp.into()),
            icmp: mix(cur.icmp.into(), prev.icmp.into()),
        }
    }
}

/// One window's counts of one address: the current epoch (`[0]`) and the one before (`[1]`).
/// Epochs are fixed spans of the window's length, in whole seconds.
type Epochs = [Counts; 2];

/// An address's counts for both windows, in one map entry so the key is stored once: 104
/// bytes however often it sends (the per-second deltas this replaced cost 48 bytes a second,
/// 2.9 GB for a million sources sending every second over a 60 s window).
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    /// The second of the last counts added.
    last_sec: u64,
    short: Epochs,
    long: Epochs,
}

/// An address's estimated sums over both windows.
#[derive(Clone, Copy, Debug, Default)]
struct Windowed {
    short: Rate,
    long: Rate,
}

/// Window lengths in whole seconds (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spans {
    short: u64,
    long: u64,
}

impl Spans {
    fn of(cfg: &FeatureConfig) -> Self {
        Self {
            short: cfg.short_window.as_secs().max(1),
            long: cfg.long_window.as_secs().max(1),
        }
    }
}

/// Moves `e` from the epoch of `last` to that of `now` (window `w` seconds): the current
/// epoch becomes the previous one when they are neighbours, and both empty when further apart.
fn roll(e: &mut Epochs, last: u64, now: u64, w: u64) {
    let (from, to) = (last / w, now / w);
    if to <= from {
        return;
    }
    e[1] = if to == from + 1 {
        e[0]
    } else {
        Counts::default()
    };
    e[0] = Counts::default();
}

/// The sum over the `w` seconds ending with second `now` (inclusive), estimated from `e` as
/// of second `last`: all of the current epoch, and of the previous one the share of its span
/// still inside the window, as if its packets had come evenly. Exact for steady senders and
/// whenever the window ends an epoch; a burst counts in full while its epoch is current and
/// then fades over the next one (the sliding-window counter of rate limiters).
fn estimate(e: &Epochs, last: u64, now: u64, w: u64) -> Rate {
    let (from, to) = (last / w, now / w);
    let f = (w - now % w - 1) as f64 / w as f64;
    let none = Counts::default();
    match to.saturating_sub(from) {
        0 => Counts::blend(&e[0], &e[1], f),
        1 => Counts::blend(&none, &e[0], f),
        _ => Rate::default(),
    }
}

/// Per-address packet rates over the short and the long window, as counts per fixed epoch of
/// each window's length (see [`estimate`]): a fixed size per address, where keeping each
/// second's deltas grew with the window times the senders. A poll costs what changed: one
/// entry per address that sent.
#[derive(Default)]
struct RateSums {
    /// Dense entries plus an index (see the flow table): half the memory of a hash map's
    /// buckets at a million sources.
    sums: indexmap::IndexMap<Addr, Sums, foldhash::fast::RandomState>,
    /// The window lengths the epochs were counted for.
    spans: Option<Spans>,
    /// The second of the last sweep for addresses that fell silent.
    swept_sec: u64,
}

impl RateSums {
    /// Counts `r` for `a` at second `sec`. New window lengths (a reload) start the counts
    /// afresh: epochs of another length cannot be blended.
    fn add(&mut self, spans: Spans, sec: u64, a: Addr, r: Rate) {
        if self.spans != Some(spans) {
            self.sums.clear();
            self.spans = Some(spans);
        }
        let e = self.sums.entry(a).or_default();
        let last = e.last_sec;
        roll(&mut e.short, last, sec, spans.short);
        roll(&mut e.long, last, sec, spans.long);
        e.last_sec = e.last_sec.max(sec);
        e.short[0].add(&r);
        e.long[0].add(&r);
    }

    fn windowed(&self, s: &Sums, now_sec: u64) -> Windowed {
        let Some(spans) = self.spans else {
            return Windowed::default();
        };
        Windowed {
            short: estimate(&s.short, s.last_sec, now_sec, spans.short),
            long: estimate(&s.long, s.last_sec, now_sec, spans.long),
        }
    }

    /// Both windows' sums at second `now_sec` in one lookup.
    fn get(&self, ip: &IpAddr, now_sec: u64) -> Windowed {
        self.sums
            .get(&addr(ip))
            .map_or_else(Windowed::default, |s| self.windowed(s, now_sec))
    }

    /// Puts the entries in address order, the order the window pass visits sources in, so the
    /// pass reads them with [`SortedSums`] instead of a lookup per source (at a million sources
    /// the lookups, each a miss in the index and one in the entries, took half the pass).
    /// Free when no address is new: sorting rebuilds the index, so it is skipped then.
    fn sort(&mut self) {
        if !self.sums.is_sorted() {
            self.sums.sort_unstable_keys();
        }
    }

    /// Drops the addresses both of whose windows have nothing left at second `now_sec`, once
    /// a short window (the sweep walks every address; between sweeps the dead ones only cost
    /// memory). Keeps the order.
    fn expire(&mut self, now_sec: u64) {
        let Some(spans) = self.spans else { return };
        if now_sec < self.swept_sec + spans.short {
            return;
        }
        self.swept_sec = now_sec;
        let dead = |last: u64, w: u64| now_sec / w > last / w + 1;
        self.sums
            .retain(|_, s| !(dead(s.last_sec, spans.short) && dead(s.last_sec, spans.long)));
    }
}

/// Reads [`RateSums`] in address order, for addresses asked in ascending order.
struct SortedSums<'a> {
    sums: &'a RateSums,
    entries: &'a indexmap::map::Slice<Addr, Sums>,
    next: usize,
    now_sec: u64,
}

impl<'a> SortedSums<'a> {
    fn new(r: &'a RateSums, now_sec: u64) -> Self {
        Self {
            sums: r,
            entries: r.sums.as_slice(),
            next: 0,
            now_sec,
        }
    }

    fn get(&mut self, a: &Addr) -> Windowed {
        while self
            .entries
            .get_index(self.next)
            .is_some_and(|(k, _)| k < a)
        {
            self.next += 1;
        }
        match self.entries.get_index(self.next) {
            Some((k, s)) if k == a => self.sums.windowed(s, self.now_sec),
            _ => Windowed::default(),
        }
    }
}

/// The order the window pass walks conversations in: by source, then destination and port,
/// on the addresses' bytes (live rows carry nothing else).
type RowKey = (Addr, Addr, u16);

fn row_key(f: &BiFlow) -> RowKey {
    (addr(&f.src), addr(&f.dst), f.dst_port)
}

/// A live conversation as the tracker keeps it between an update and the pass: where to sort
/// it and where to read it. The conversation itself stays in the flow table; the row carries
/// the few facts the destination pass and evidence selection need, so those read nothing
/// from the table, where every read is a cache miss.
#[derive(Clone, Copy, Debug)]
struct LiveRow {
    src: Addr,
    dst: Addr,
    last_seen_ns: u64,
    packets: u64,
    /// Position in the [`Conversations`] of the last update.
    conv: u32,
    dst_port: u16,
    half_open: bool,
}

impl LiveRow {
    fn new(f: &BiFlow, conv: u32) -> Self {
        Self {
            src: addr(&f.src),
            dst: addr(&f.dst),
            last_seen_ns: f.last_seen_ns,
            packets: f.total_packets(),
            conv,
            dst_port: f.dst_port,
            half_open: half_open_flow(f),
        }
    }

    fn key(&self) -> RowKey {
        (self.src, self.dst, self.dst_port)
    }
}

/// One row of a pass: a live conversation, or one that has left the kernel table.
#[derive(Clone, Copy)]
enum Row<'a> {
    Live(&'a LiveRow),
    Closed(&'a BiFlow),
}

impl Row<'_> {
    fn key(&self) -> RowKey {
        match self {
            Row::Live(r) => r.key(),
            Row::Closed(f) => row_key(f),
        }
    }

    /// What the destination pass needs: last packet, half-open, port.
    fn summary(&self) -> (u64, bool, u16) {
        match self {
            Row::Live(r) => (r.last_seen_ns, r.half_open, r.dst_port),
            Row::Closed(f) => (f.last_seen_ns, half_open_flow(f), f.dst_port),
        }
    }

    /// The conversation, built from `live` for a live row, and whether it has ended.
    fn read(&self, live: &dyn Conversations) -> (BiFlow, bool) {
        match self {
            Row::Live(r) => (live.get(r.conv), false),
            Row::Closed(f) => (**f, true),
        }
    }
}

/// Merges live and ended rows, each sorted by key, into one sorted list.
fn merge_sorted<'a>(
    live: impl Iterator<Item = Row<'a>>,
    ended: impl Iterator<Item = Row<'a>>,
) -> Vec<Row<'a>> {
    let (mut live, mut ended) = (live.peekable(), ended.peekable());
    let mut out = Vec::new();
    loop {
        let take_live = match (live.peek(), ended.peek()) {
            (Some(a), Some(b)) => a.key() <= b.key(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.push(if take_live {
            live.next().expect("peeked")
        } else {
            ended.next().expect("peeked")
        });
    }
}

type ConvKey = ((IpAddr, u16), (IpAddr, u16), u8);

fn conv_key(f: &BiFlow) -> ConvKey {
    let a = (f.src, f.src_port);
    let b = (f.dst, f.dst_port);
    if a <= b {
        (a, b, f.proto)
    } else {
        (b, a, f.proto)
    }
}

pub struct Tracker {
    cfg: FeatureConfig,
    /// The conversations in the kernel table at the last update, sorted by [`RowKey`], as
    /// positions in the [`Conversations`] that update was given (which every later call must
    /// be given too). Replaced, not merged, every update: the kernel table is the record of
    /// what is live, so a copy of the conversations would only double the memory a million
    /// flows take.
    active: Vec<LiveRow>,
    /// Conversations that left the kernel table within the long window, by conversation.
    closed: FastMap<ConvKey, BiFlow>,
    sent: RateSums,
    received: RateSums,
    /// Failed logins older than the long window, for the login window.
    logins: LoginFailures,
}

/// Accumulates one source's conversations in one window.
#[derive(Default)]
struct Acc {
    w: SourceWindow,
    bytes_sum: u64,
    dur_sum_ns: u64,
    rst: u64,
    dsts: u64,
    max_fan_in: u64,
}

impl Tracker {
    pub fn new(cfg: FeatureConfig) -> Self {
        Self {
            cfg,
            active: Vec::new(),
            closed: FastMap::default(),
            logins: LoginFailures::default(),
            sent: RateSums::default(),
            received: RateSums::default(),
        }
    }

    /// Changes the windows and thresholds (configuration reload). Conversations are kept: the
    /// next pass simply windows them differently.
    pub fn set_config(&mut self, cfg: FeatureConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    pub fn conversations(&self) -> usize {
        self.active.len() + self.closed.len()
    }

    /// Failed logins a service reported (`POST /api/v1/events`), each at its own time: they
    /// count over the login window like those seen on the wire.
    pub fn report_login_failure(&mut self, src: IpAddr, port: u16, at_ns: u64) {
        if self.logins.record(src, port, at_ns) {
            *self.logins.reported.entry(src).or_default() += 1;
        }
    }

    /// Drops the live conversations of the last update (the next update replaces them).
    pub fn release_active(&mut self) {
        self.active = Vec::new();
    }

    /// The live rows from `src`: a range of the sorted rows.
    fn live_from(&self, src: &IpAddr) -> &[LiveRow] {
        let a = addr(src);
        let start = self.active.partition_point(|r| r.src < a);
        let end = start + self.active[start..].partition_point(|r| r.src == a);
        &self.active[start..end]
    }

    /// Whether `src` opened a live conversation with `dst`.
    fn opened(&self, src: Addr, dst: Addr) -> bool {
        let i = self.active.partition_point(|r| (r.src, r.dst) < (src, dst));
        self.active
            .get(i)
            .is_some_and(|r| r.src == src && r.dst == dst)
    }

    /// Takes one poll's view: the conversations (live, and just closed) and the directional
    /// records whose deltas feed the rates. `live` must stay as it is until the next update:
    /// the tracker keeps positions in it.
    pub fn update<'a>(
        &mut self,
        now_ns: u64,
        live: &dyn Conversations,
        closed: &[BiFlow],
        deltas: impl IntoIterator<Item = (&'a FlowKey, u64, u64)>,
    ) {
        for f in closed {
            self.closed.insert(conv_key(f), *f);
        }
        let cutoff = now_ns.saturating_sub(self.cfg.long_window.as_nanos() as u64);
        self.active.clear();
        self.active.reserve_exact(live.len());
        for i in 0..live.len() as u32 {
            let f = live.get(i);
            // A conversation with one direction evicted and the other still live is kept in
            // its live form only.
            if !self.closed.is_empty() {
                self.closed.remove(&conv_key(&f));
            }
            // Idle flows the kernel still holds but the long window no longer covers.
            if f.last_seen_ns >= cutoff {
                self.active.push(LiveRow::new(&f, i));
            }
        }
        // Sorted once here so every pass can walk sources in order without a sorted copy.
        self.active.sort_unstable_by_key(LiveRow::key);
        let (sec, spans) = (now_ns / NS, Spans::of(&self.cfg));
        for (key, packets, bytes) in deltas {
            if packets == 0 {
                continue;
            }
            // An ICMP answer to a peer that opened a conversation with its sender is not the
            // sender's flood: a server answering a flood from forged sources (unreachables to
            // a UDP flood, echo replies to a ping flood) sends as fast as the flood came, and
            // was taken for a flooder and blocked. An unsolicited one (a BlackNurse-style
            // flood of unreachables) still counts.
            let answered =
                crate::flow::icmp_answer(key.proto, key.dst_port) && self.opened(key.dst, key.src);
            let rate = Rate {
                packets,
                bytes,
                udp: if key.proto == ip_proto::UDP {
                    packets
                } else {
                    0
                },
                icmp: if matches!(key.proto, ip_proto::ICMP | ip_proto::ICMPV6) {
                    packets
                } else {
                    0
                },
            };
            if !answered {
                self.sent.add(spans, sec, key.src, rate);
            }
            self.received.add(spans, sec, key.dst, rate);
        }
        let (cfg, logins) = (&self.cfg, &mut self.logins);
        self.closed.retain(|_, f| {
            let keep = f.last_seen_ns >= cutoff;
            // Its conversation leaves; a failed login is remembered by its time alone.
            if !keep && failed_login(f, true, cfg) {
                logins.record(f.src, f.dst_port, f.last_seen_ns);
            }
            keep
        });
        self.logins
            .expire(now_ns.saturating_sub(self.cfg.login_window.as_nanos() as u64));
        self.sent.expire(sec);
        self.received.expire(sec);
        self.sent.sort();
    }

    /// Per-source aggregates over the short and long windows and per-destination aggregates
    /// over the short one, ending at `now_ns`, all in maps (see [`Tracker::visit_windows`] for
    /// the form that does not hold every source's windows at once).
    pub fn windows(&self, now_ns: u64, live: &dyn Conversations) -> WindowSet {
        let (mut src_short, mut src_long) = (FastMap::default(), FastMap::default());
        let dst_short = self.visit_windows(now_ns, live, |src, short, long| {
            if let Some(s) = short {
                src_short.insert(src, s.clone());
            }
            src_long.insert(src, long.clone());
        });
        WindowSet {
            src_short,
            src_long,
            dst_short,
        }
    }

    /// Computes each source's windows and hands them to `visit` one source at a time: the
    /// short window if the source was active in it, and the long window. Returns the
    /// destinations' short windows. One sort of the conversations in the long window replaces
    /// per-source sets, and nothing per source outlives its visit: a million sources cost a
    /// million sorted rows, not a million maps or windows.
    pub fn visit_windows(
        &self,
        now_ns: u64,
        live: &dyn Conversations,
        mut visit: impl FnMut(IpAddr, Option<&SourceWindow>, &SourceWindow),
    ) -> FastMap<IpAddr, DestWindow> {
        let short_cut = now_ns.saturating_sub(self.cfg.short_window.as_nanos() as u64);
        let long_cut = now_ns.saturating_sub(self.cfg.long_window.as_nanos() as u64);
        // The live conversations are kept sorted (see `update`); the ended ones, usually few,
        // are sorted here and merged in.
        let mut gone: Vec<&BiFlow> = self
            .closed
            .values()
            .filter(|f| f.last_seen_ns >= long_cut)
            .collect();
        gone.sort_unstable_by_key(|f| row_key(f));
        let rows = merge_sorted(
            self.active.iter().map(Row::Live),
            gone.into_iter().map(Row::Closed),
        );
        // Conversations are built from the table one run of rows at a time, into these, and
        // those that went quiet before the long window (the table still holds them) skipped.
        let mut run: Vec<(BiFlow, bool)> = Vec::new();
        let read = |rows: &[Row<'_>], run: &mut Vec<(BiFlow, bool)>| {
            run.clear();
            run.extend(
                rows.iter()
                    .map(|r| r.read(live))
                    .filter(|(f, _)| f.last_seen_ns >= long_cut),
            );
        };

        // Pass 1: who talks to each destination (fan-in), half-open spread per destination.
        #[derive(Default)]
        struct DAcc {
            fan_in_short: u64,
            fan_in_long: u64,
            d: DestWindow,
        }
        let mut dests: FastMap<IpAddr, DAcc> = FastMap::default();
        let mut i = 0;
        while i < rows.len() {
            let (src, dst) = (rows[i].key().0, rows[i].key().1);
            let mut j = i;
            while j < rows.len() && rows[j].key().0 == src && rows[j].key().1 == dst {
                j += 1;
            }
            let run = rows[i..j]
                .iter()
                .map(Row::summary)
                .filter(|(last, _, _)| *last >= long_cut);
            i = j;
            let (mut any, mut in_short, mut half_open) = (false, false, 0u64);
            for (last, half, _) in run.clone() {
                any = true;
                if last >= short_cut {
                    in_short = true;
                    half_open += u64::from(half);
                }
            }
            if !any {
                continue;
            }
            let d = dests.entry(crate::flow::key_addr(dst)).or_default();
            d.fan_in_long += 1;
            if in_short {
                d.fan_in_short += 1;
            }
            if half_open > 0 {
                d.d.half_open_in += half_open;
                d.d.half_open_sources += 1;
                d.d.max_half_open_per_source = d.d.max_half_open_per_source.max(half_open);
                for (last, half, port) in run {
                    if last >= short_cut && half {
                        *d.d.half_open_ports.entry(port).or_default() += 1;
                    }
                }
            }
        }

        // Pass 2: per source, both windows.
        let mut ports: Vec<u16> = Vec::new();
        let mut logins: Vec<u16> = Vec::new();
        let w_short = self.cfg.short_window.as_secs_f64().max(1e-9);
        let w_long = self.cfg.long_window.as_secs_f64().max(1e-9);
        let mut i = 0;
        let mut sent_sums = SortedSums::new(&self.sent, now_ns / NS);
        let mut seen: Vec<IpAddr> = Vec::new();
        while i < rows.len() {
            let src_key = rows[i].key().0;
            let mut j = i;
            while j < rows.len() && rows[j].key().0 == src_key {
                j += 1;
            }
            read(&rows[i..j], &mut run);
            i = j;
            let Some((first, _)) = run.first() else {
                continue;
            };
            let src = first.src;
            let group = &run;
            let sent = sent_sums.get(&src_key);
            let mut windows: [Option<SourceWindow>; 2] = [None, None];
            for (slot, short) in [true, false].into_iter().enumerate() {
                let cut = if short { short_cut } else { long_cut };
                let mut a = Acc::default();
                ports.clear();
                logins.clear();
                let mut last_dst = None;
                let mut half_open_here = 0u64;
                // One bit per IP protocol number.
                let mut protocols = [0u64; 4];
                for (f, closed) in group {
                    let (dst, port) = (&f.dst, &f.dst_port);
                    // Only the answers were seen (the source is blocked and its packets are
                    // dropped uncounted, or a poll read the SYN-ACK before the SYN, or they
                    // answer packets forged in the source's name): no evidence against it.
                    if f.last_seen_ns < cut || f.fwd.packets == 0 {
                        continue;
                    }
                    // Nor is an ICMP answer: a server sends unreachables to every forged
                    // source of a UDP flood, which made it a host sweeper.
                    if crate::flow::icmp_answer(f.proto, f.dst_port) {
                        continue;
                    }
                    a.w.features.conns += 1.0;
                    ports.push(*port);
                    protocols[usize::from(f.proto >> 6)] |= 1 << (f.proto & 63);
                    if last_dst != Some(*dst) {
                        last_dst = Some(*dst);
                        a.dsts += 1;
                        half_open_here = 0;
                        if let Some(d) = dests.get(dst) {
                            let fan = if short { d.fan_in_short } else { d.fan_in_long };
                            a.max_fan_in = a.max_fan_in.max(fan);
                        }
                    }
                    let bytes = f.total_bytes();
                    a.bytes_sum += bytes;
                    a.w.features.max_bytes_per_flow =
                        a.w.features.max_bytes_per_flow.max(bytes as f64);
                    let dur = f.last_seen_ns.saturating_sub(f.first_seen_ns);
                    a.dur_sum_ns += dur;
                    a.w.fwd_packets += f.fwd.packets;
                    if f.rev.packets > 0 {
                        a.w.replied += 1;
                    }
                    if is_tcp(f) {
                        a.w.tcp_conns += 1;
                        if has_rst(f) {
                            a.rst += 1;
                        }
                        if handshake_completed(f) {
                            a.w.handshakes += 1;
                            if failed_login(f, *closed, &self.cfg) {
                                logins.push(f.dst_port);
                            }
                        }
                        if half_open_flow(f) {
                            a.w.half_open += 1;
                            half_open_here += 1;
                            if a.w.top_half_open.is_none_or(|(_, n)| half_open_here > n) {
                                a.w.top_half_open = Some((*dst, half_open_here));
                            }
                        }
                    }
                }
                if a.w.features.conns == 0.0 {
                    continue;
                }
                ports.sort_unstable();
                ports.dedup();
                logins.sort_unstable();
                let mut best: Option<(u16, u64)> = None;
                for run in logins.chunk_by(|x, y| x == y) {
                    let n = run.len() as u64;
                    if best.is_none_or(|(p, b)| n > b || (n == b && run[0] < p)) {
                        best = Some((run[0], n));
                    }
                }
                a.w.top_failed_logins = best;
                if !short {
                    // The long window's failures, and those that left it within the login
                    // window.
                    let cut = now_ns.saturating_sub(self.cfg.login_window.as_nanos() as u64);
                    let mut ports: Vec<u16> = logins.clone();
                    ports.extend(self.logins.ports(src));
                    ports.sort_unstable();
                    ports.dedup();
                    let mut slow: Option<(u16, u64)> = None;
                    for p in ports {
                        let n = logins.iter().filter(|&&x| x == p).count() as u64
                            + self.logins.count(src, p, cut);
                        if slow.is_none_or(|(q, b)| n > b || (n == b && p < q)) {
                            slow = Some((p, n));
                        }
                    }
                    a.w.login_window_failures = slow;
                    a.w.reported_login_failures =
                        self.logins.reported.get(&src).copied().unwrap_or(0);
                }
                a.w.distinct_protocols = protocols.iter().map(|w| u64::from(w.count_ones())).sum();
                let n = a.w.features.conns;
                let f = &mut a.w.features;
                f.distinct_dst_ports = ports.len() as f64;
                f.distinct_dst_hosts = a.dsts as f64;
                if a.w.tcp_conns > 0 {
                    f.half_open_ratio = a.w.half_open as f64 / a.w.tcp_conns as f64;
                    f.rst_ratio = a.rst as f64 / a.w.tcp_conns as f64;
                }
                f.mean_bytes_per_flow = a.bytes_sum as f64 / n;
                f.mean_flow_duration_s = a.dur_sum_ns as f64 / 1e9 / n;
                f.failed_logins = logins.len() as f64;
                f.max_dst_fan_in = a.max_fan_in as f64;
                let (r, w_s) = if short {
                    (sent.short, w_short)
                } else {
                    (sent.long, w_long)
                };
                f.pps = r.packets as f64 / w_s;
                f.bps = r.bytes as f64 * 8.0 / w_s;
                f.udp_pps = r.udp as f64 / w_s;
                f.icmp_pps = r.icmp as f64 / w_s;
                a.w.packets = r.packets;
                a.w.bytes = r.bytes;
                windows[slot] = Some(a.w);
            }
            // Every row is inside the long window, so a source always has one.
            if let [short, Some(long)] = &windows {
                visit(src, short.as_ref(), long);
                seen.push(src);
            }
        }
        // Sources known only by their failed logins (reported by a service, or seen before
        // the long window): their login window alone.
        let login_cut = now_ns.saturating_sub(self.cfg.login_window.as_nanos() as u64);
        seen.sort_unstable();
        for src in self.logins.sources() {
            if seen.binary_search(&src).is_ok() {
                continue;
            }
            let mut top: Option<(u16, u64)> = None;
            for p in self.logins.ports(src) {
                let n = self.logins.count(src, p, login_cut);
                if n > 0 && top.is_none_or(|(q, b)| n > b || (n == b && p < q)) {
                    top = Some((p, n));
                }
            }
            if top.is_some() {
                let w = SourceWindow {
                    login_window_failures: top,
                    reported_login_failures: self.logins.reported.get(&src).copied().unwrap_or(0),
                    ..SourceWindow::default()
                };
                visit(src, None, &w);
            }
        }
        let mut dst_short = FastMap::default();
        for (ip, acc) in dests {
            if acc.fan_in_short == 0 {
                continue;
            }
            let mut d = acc.d;
            d.fan_in = acc.fan_in_short;
            let r = self.received.get(&ip, now_ns / NS).short;
            d.pps_in = r.packets as f64 / w_short;
            d.bps_in = r.bytes as f64 * 8.0 / w_short;
            dst_short.insert(ip, d);
        }
        dst_short
    }

    /// Where `src` went in the long window: up to `max_dsts` destinations and `max_ports`
    /// ports, for alerts (computed only for the few sources that alert).
    pub fn targets(
        &self,
        src: IpAddr,
        max_dsts: usize,
        max_ports: usize,
    ) -> (Vec<IpAddr>, Vec<u16>) {
        let mut dsts: Vec<IpAddr> = Vec::new();
        let mut ports: Vec<u16> = Vec::new();
        let live = self
            .live_from(&src)
            .iter()
            .map(|r| (crate::flow::key_addr(r.dst), r.dst_port));
        let ended = self
            .closed
            .values()
            .filter(|f| f.src == src)
            .map(|f| (f.dst, f.dst_port));
        for (dst, port) in live.chain(ended) {
            dsts.push(dst);
            ports.push(port);
        }
        dsts.sort();
        dsts.dedup();
        dsts.truncate(max_dsts);
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(max_ports);
        (dsts, ports)
    }

    /// The `limit` conversations with the most packets from `src` (any, if `None`) toward
    /// `dst` (any, if `None`), most first; `live` is what the last update was given. Kept to
    /// `limit` while reading: a flood's target can have a million conversations.
    pub fn flows_matching(
        &self,
        live: &dyn Conversations,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
        limit: usize,
    ) -> Vec<BiFlow> {
        let rows = match &src {
            Some(s) => self.live_from(s),
            None => &self.active[..],
        };
        let to = dst.as_ref().map(addr);
        // The live ones are chosen on their rows and only the chosen read from the table.
        let mut live_top: Vec<&LiveRow> = rows
            .iter()
            .filter(|r| to.is_none_or(|d| r.dst == d))
            .collect();
        let most_rows = |a: &&LiveRow, b: &&LiveRow| b.packets.cmp(&a.packets);
        if live_top.len() > limit {
            live_top.select_nth_unstable_by(limit, most_rows);
            live_top.truncate(limit);
        }
        let matches = |f: &BiFlow| src.is_none_or(|s| f.src == s) && dst.is_none_or(|d| f.dst == d);
        let mut top: Vec<BiFlow> = live_top
            .into_iter()
            .map(|r| live.get(r.conv))
            .chain(self.closed.values().copied().filter(matches))
            .collect();
        top.sort_by_key(|f| std::cmp::Reverse(f.total_packets()));
        top.truncate(limit);
        top
    }

    /// Sources that completed a TCP handshake with one of `targets` in the long window,
    /// live or ended, in address order without repeats, at most `limit`: the sources a
    /// protected target admits before its budget (a forged address cannot complete one).
    pub fn handshake_sources(
        &self,
        live: &dyn Conversations,
        targets: &[IpAddr],
        limit: usize,
    ) -> Vec<IpAddr> {
        let to: Vec<Addr> = targets.iter().map(addr).collect();
        let mut out: Vec<IpAddr> = self
            .active
            .iter()
            .filter(|r| !r.half_open && to.contains(&r.dst))
            .map(|r| live.get(r.conv))
            .chain(
                self.closed
                    .values()
                    .filter(|f| targets.contains(&f.dst))
                    .copied(),
            )
            .filter(handshake_completed)
            .map(|f| f.src)
            .collect();
        out.sort_unstable();
        out.dedup();
        out.truncate(limit);
        out
    }

    /// Bytes a sender sent over the long window ending at `now_ns` (for per-host baselines).
    pub fn sent_bytes(&self, ip: &IpAddr, now_ns: u64) -> u64 {
        self.sent.get(ip, now_ns / NS).long.bytes
    }

    /// Sources in the long window that lie in `nets`.
    pub fn senders_in<'a>(&'a self, nets: &'a [ipnet::IpNet]) -> impl Iterator<Item = IpAddr> + 'a {
        self.sent
            .sums
            .keys()
            .map(|a| crate::flow::key_addr(*a))
            .filter(|ip| nets.iter().any(|n| n.contains(ip)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flow::DirCounters;

    pub const S: u64 = NS;

    pub fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A TCP conversation with the given flags per direction.
    pub fn tcp(src: &str, dst: &str, sport: u16, dport: u16, fwd: u32, rev: u32, t: u64) -> BiFlow {
        let dir = |flags: u32, bytes: u64| DirCounters {
            packets: if flags == 0 { 0 } else { 3 },
            bytes: if flags == 0 { 0 } else { bytes },
            tcp_flags: flags,
            first_tcp_flags: flags & (tcp_flags::SYN | tcp_flags::ACK),
            syn: u32::from(flags & tcp_flags::SYN != 0),
            fin: u32::from(flags & tcp_flags::FIN != 0),
            rst: u32::from(flags & tcp_flags::RST != 0),
            first_payload: [0; 8],
        };
        BiFlow {
            src: ip(src),
            dst: ip(dst),
            src_port: sport,
            dst_port: dport,
            proto: 6,
            ifindex: 2,
            fwd: dir(fwd, 300),
            rev: dir(rev, 2000),
            tcp_flags: fwd | rev,
            first_seen_ns: t,
            last_seen_ns: t + S / 2,
        }
    }

    pub fn udp(src: &str, dst: &str, sport: u16, dport: u16, pkts: u64, t: u64) -> BiFlow {
        BiFlow {
            src: ip(src),
            dst: ip(dst),
            src_port: sport,
            dst_port: dport,
            proto: 17,
            ifindex: 2,
            fwd: DirCounters {
                packets: pkts,
                bytes: pkts * 100,
                ..Default::default()
            },
            rev: DirCounters::default(),
            tcp_flags: 0,
            first_seen_ns: t,
            last_seen_ns: t,
        }
    }

    const SYN: u32 = tcp_flags::SYN;
    const SA: u32 = tcp_flags::SYN | tcp_flags::ACK;
    const RA: u32 = tcp_flags::RST | tcp_flags::ACK;
    const FULL: u32 = tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN | tcp_flags::PSH;

    fn windows(
        flows: &[BiFlow],
        now: u64,
    ) -> (FastMap<IpAddr, SourceWindow>, FastMap<IpAddr, DestWindow>) {
        let mut t = Tracker::new(FeatureConfig::default());
        let live = flows.to_vec();
        t.update(now, &live, &[], []);
        let w = t.windows(now, &live);
        (w.src_long, w.dst_short)
    }

    #[test]
    fn distinct_ports_hosts_and_ratios() {
        let now = 1000 * S;
        let mut flows = Vec::new();
        for p in 1..=30u16 {
            // A SYN scan: closed ports answer RST, never ACKed.
            flows.push(tcp(
                "198.18.0.9",
                "198.18.1.1",
                40000,
                p,
                SYN,
                RA,
                now - 5 * S,
            ));
        }
        flows.push(tcp(
            "198.18.0.9",
            "198.18.1.2",
            40001,
            80,
            FULL,
            FULL,
            now - 5 * S,
        ));
        let (src, dst) = windows(&flows, now);
        let w = &src[&ip("198.18.0.9")];
        assert_eq!(w.features.conns, 31.0);
        assert_eq!(w.features.distinct_dst_ports, 31.0);
        assert_eq!(w.features.distinct_dst_hosts, 2.0);
        assert_eq!(w.half_open, 30);
        assert!((w.features.half_open_ratio - 30.0 / 31.0).abs() < 1e-12);
        assert!((w.features.rst_ratio - 30.0 / 31.0).abs() < 1e-12);
        assert_eq!(w.handshakes, 1);
        assert_eq!(w.replied, 31);
        let d = &dst[&ip("198.18.1.1")];
        assert_eq!(
            (
                d.half_open_in,
                d.half_open_sources,
                d.max_half_open_per_source
            ),
            (30, 1, 30)
        );
        assert_eq!(d.fan_in, 1);
        assert_eq!(w.top_half_open, Some((ip("198.18.1.1"), 30)));
        // Every test conversation carries 300 bytes out and 2000 back and lasts 0.5 s.
        assert_eq!(w.features.mean_bytes_per_flow, 2300.0);
        assert_eq!(w.features.max_bytes_per_flow, 2300.0);
        assert!((w.features.mean_flow_duration_s - 0.5).abs() < 1e-9);
    }

    #[test]
    fn window_edges_include_and_exclude() {
        let now = 1000 * S;
        // last_seen = t + 0.5 s: one conversation just inside the 60 s window, one just out.
        let inside = tcp(
            "198.18.0.9",
            "198.18.1.1",
            1,
            22,
            FULL,
            FULL,
            now - 60 * S - S / 2,
        );
        let outside = tcp(
            "198.18.0.9",
            "198.18.1.1",
            2,
            23,
            FULL,
            FULL,
            now - 60 * S - S / 2 - 1,
        );
        let mut t = Tracker::new(FeatureConfig::default());
        let live = vec![inside, outside];
        t.update(now, &live, &[], []);
        let src = t.windows(now, &live).src_long;
        assert_eq!(src[&ip("198.18.0.9")].features.conns, 1.0);
        // The expired one is also gone from the tracker.
        assert_eq!(t.conversations(), 1);
    }

    #[test]
    fn rate_keys_match_the_kernel_form_of_both_families() {
        for ip in ["198.18.0.5", "2001:db8::5"] {
            let ip: IpAddr = ip.parse().unwrap();
            let k = addr(&ip);
            assert_eq!(crate::flow::key_addr(k), ip);
        }
    }

    #[test]
    fn ended_conversations_stay_for_the_window_and_live_ones_win() {
        let now = 1000 * S;
        let mut t = Tracker::new(FeatureConfig::default());
        let ended = tcp("198.18.0.9", "198.18.1.1", 1, 22, FULL, FULL, now - 5 * S);
        let none = Vec::new();
        t.update(now, &none, &[ended], []);
        // Later polls no longer report it, but the long window still counts it.
        t.update(now + 10 * S, &none, &[], []);
        assert_eq!(t.conversations(), 1);
        let w = t.windows(now + 10 * S, &none).src_long;
        assert_eq!(w[&ip("198.18.0.9")].features.conns, 1.0);
        // One direction evicted while the other is still live: counted once, in live form.
        let live = vec![tcp("198.18.1.1", "198.18.0.9", 22, 1, FULL, FULL, now)];
        t.update(now + 11 * S, &live, &[], []);
        assert_eq!(t.conversations(), 1);
        let w = t.windows(now + 11 * S, &live).src_long;
        assert_eq!(w.len(), 1);
        assert!(w.contains_key(&ip("198.18.1.1")));
        // Past the long window it is gone.
        t.update(now + 100 * S, &none, &[], []);
        assert_eq!(t.conversations(), 0);
    }

    #[test]
    fn failed_logins_need_a_completed_short_small_conversation_to_a_login_port() {
        let now = 1000 * S;
        let fail = |sport, dport| {
            tcp(
                "198.18.0.7",
                "198.18.1.1",
                sport,
                dport,
                FULL,
                FULL,
                now - 10 * S,
            )
        };
        let mut big = fail(3, 22);
        big.rev.bytes = 200_000;
        let mut long = fail(4, 22);
        long.last_seen_ns = long.first_seen_ns + 31 * S;
        let refused = tcp("198.18.0.7", "198.18.1.1", 5, 22, SYN, RA, now - 10 * S);
        let mut open = fail(6, 22);
        open.fwd.tcp_flags &= !tcp_flags::FIN;
        open.rev.tcp_flags &= !tcp_flags::FIN;
        let (src, _) = windows(
            &[
                fail(1, 22),
                fail(2, 3389),
                fail(7, 8080),
                big,
                long,
                refused,
                open,
            ],
            now,
        );
        let w = &src[&ip("198.18.0.7")];
        // One each on 22 and 3389: the tie goes to the lower port.
        assert_eq!(w.top_failed_logins, Some((22, 1)));
        assert_eq!(w.features.failed_logins, 2.0);
        // On 8080, the same conversation counts once the server greeted like a login service.
        let mut greeted = fail(8, 8080);
        greeted.rev.first_payload = *b"SSH-2.0-";
        let (src, _) = windows(&[fail(7, 8080), greeted], now);
        assert_eq!(src[&ip("198.18.0.7")].top_failed_logins, Some((8080, 1)));
    }

    /// A "conversation" of which only the answers were seen (SYN-ACKs reflected at a victim
    /// from many servers, or a blocked scanner's probes answered) is no evidence against the
    /// side that supposedly opened it: it gets no window at all.
    #[test]
    fn conversations_whose_opener_sent_nothing_count_for_no_one() {
        let now = 1000 * S;
        let answers: Vec<BiFlow> = (0..200u16)
            .map(|i| {
                let server = format!("198.18.{}.{}", 1 + i / 200, 1 + i % 200);
                tcp(
                    "198.18.0.9",
                    &server,
                    40000 + i,
                    1 + i,
                    0,
                    tcp_flags::SYN | tcp_flags::ACK,
                    now - S,
                )
            })
            .collect();
        assert!(
            answers
                .iter()
                .all(|f| f.fwd.packets == 0 && f.rev.packets > 0)
        );
        let (src, _) = windows(&answers, now);
        assert!(
            !src.contains_key(&ip("198.18.0.9")),
            "{:?}",
            src.get(&ip("198.18.0.9"))
        );
        // One packet it sent makes a conversation its own.
        let mut sent = answers[0];
        sent.fwd.packets = 1;
        let (src, _) = windows(&[sent], now);
        assert!(src.contains_key(&ip("198.18.0.9")));
    }

    #[test]
    fn login_banners_are_told_from_other_first_words() {
        for yes in [
            b"SSH-2.0-",
            b"220 ProF",
            b"220-mail",
            b"+OK Dove",
            b"* OK [CA",
            b"RFB 003.",
        ] {
            assert!(login_banner(yes), "{:?}", String::from_utf8_lossy(yes));
        }
        assert!(
            login_banner(&[0xff, 0xfd, 0x18, 0xff, 0xfd, 0x20, 0, 0]),
            "telnet"
        );
        for no in [
            b"HTTP/1.1",
            b"GET / HT",
            b"\x16\x03\x01\x02\x00\x01\x00\x01",
            &[0u8; 8],
        ] {
            assert!(!login_banner(no), "{:?}", String::from_utf8_lossy(no));
        }
    }

    /// One wrong password a minute and a half (hydra -t 1 at its slowest): never two in the
    /// long window, five in the login window. The conversations leave; their times count.
    #[test]
    fn slow_failed_logins_add_up_over_the_login_window_only() {
        let mut t = Tracker::new(FeatureConfig::default());
        let none = Vec::new();
        let start = 1000 * S;
        let mut last = None;
        for i in 0..5u64 {
            let at = start + i * 90 * S;
            let f = tcp(
                "198.18.0.7",
                "198.18.1.1",
                40_000 + i as u16,
                22,
                FULL,
                FULL,
                at,
            );
            t.update(at + S, &none, &[f], []);
            let w = t.windows(at + S, &none).src_long;
            let w = &w[&ip("198.18.0.7")];
            assert_eq!(w.top_failed_logins, Some((22, 1)), "try {i}: {w:?}");
            last = w.login_window_failures;
            assert_eq!(last, Some((22, i + 1)), "try {i}");
        }
        // Eleven minutes after the first, it no longer counts; nor do the others, in time.
        let at = start + 11 * 60 * S;
        let f = tcp("198.18.0.7", "198.18.1.1", 41_000, 22, FULL, FULL, at);
        t.update(at + S, &none, &[f], []);
        let w = t.windows(at + S, &none).src_long;
        let n = w[&ip("198.18.0.7")].login_window_failures.unwrap().1;
        assert!(
            n < last.unwrap().1 + 1,
            "the first try should have left: {n}"
        );
        // The memory is bounded by pairs and by times per pair.
        let mut m = LoginFailures::default();
        for i in 0..(LOGIN_TIMES as u64 + 10) {
            m.record(ip("198.18.0.7"), 22, i);
        }
        assert_eq!(m.count(ip("198.18.0.7"), 22, 0), LOGIN_TIMES as u64);
    }

    #[test]
    fn rates_come_from_deltas_in_the_window() {
        use astra_common::{FlowKey, FlowValue};
        let mk = |src: [u8; 4], proto: u8, d: u64| crate::flow::FlowRecord {
            key: FlowKey {
                src: {
                    let mut a = [0u8; 16];
                    a[10] = 0xff;
                    a[11] = 0xff;
                    a[12..].copy_from_slice(&src);
                    a
                },
                proto,
                ..Default::default()
            },
            value: FlowValue::default(),
            delta_packets: d,
            delta_bytes: d * 100,
        };
        let mut t = Tracker::new(FeatureConfig::default());
        let src = "198.18.0.5";
        let f = udp(src, "198.18.1.1", 1, 53, 1, 100 * S);
        // 500 UDP packets 20 s ago, 1000 now: the 10 s window sees only the latter.
        let live = vec![f];
        t.update(80 * S, &live, &[], [mk([198, 18, 0, 5], 17, 500).delta()]);
        t.update(100 * S, &live, &[], [mk([198, 18, 0, 5], 17, 1000).delta()]);
        let ws = t.windows(100 * S, &live);
        let w = &ws.src_short[&ip(src)];
        assert_eq!(w.features.udp_pps, 100.0);
        assert_eq!(w.features.pps, 100.0);
        assert_eq!(w.features.bps, 100.0 * 100.0 * 8.0);
        assert_eq!(ws.src_long[&ip(src)].features.udp_pps, 25.0);
    }

    /// A server answering a UDP flood from forged sources with unreachables is neither a
    /// host sweeper nor an ICMP flooder; whoever floods with unsolicited unreachables is.
    #[test]
    fn icmp_answers_to_those_who_sent_are_not_the_senders() {
        use astra_common::FlowKey;
        let now = 100 * S;
        let server = "198.18.100.2";
        let key = |src: &str, dst: &str, proto: u8, dst_port: u16| FlowKey {
            src: addr(&ip(src)),
            dst: addr(&ip(dst)),
            dst_port,
            proto,
            ..Default::default()
        };
        let unreachable = 3 << 8 | 3;
        let mut live = Vec::new();
        let mut keys = Vec::new();
        for i in 0..200u32 {
            let forged = format!("203.0.{}.{}", i / 250, i % 250 + 1);
            live.push(udp(&forged, server, 53, 40000, 1, now));
            let mut answer = udp(server, &forged, 0, unreachable, 1, now);
            answer.proto = ip_proto::ICMP;
            live.push(answer);
            keys.push(key(&forged, server, ip_proto::UDP, 40000));
            keys.push(key(server, &forged, ip_proto::ICMP, unreachable));
        }
        // And one that floods a quiet host with unreachables it never asked for.
        keys.push(key(
            "198.18.0.9",
            "198.18.100.3",
            ip_proto::ICMP,
            unreachable,
        ));
        let mut t = Tracker::new(FeatureConfig::default());
        let deltas = keys.iter().enumerate().map(|(i, k)| {
            let n = if i == keys.len() - 1 { 5000 } else { 50 };
            (k, n, n * 100)
        });
        t.update(now, &live, &[], deltas);
        let ws = t.windows(now, &live);
        assert!(!ws.src_short.contains_key(&ip(server)));
        assert!(!ws.src_long.contains_key(&ip(server)));
        assert!(t.sent_bytes(&ip(server), now) == 0);
        assert!(t.sent_bytes(&ip("198.18.0.9"), now) > 0);
        let forged = &ws.src_short[&ip("203.0.0.1")];
        assert_eq!(forged.features.distinct_dst_hosts, 1.0);
    }

    /// Evidence is the largest conversations, chosen on the rows while reading: from one
    /// source, or toward one destination, live and ended alike.
    #[test]
    fn flows_matching_keeps_the_largest_up_to_the_limit() {
        let now = 1000 * S;
        let live: Vec<BiFlow> = (1..=30u16)
            .map(|i| {
                let mut f = udp("198.18.0.7", "198.18.1.1", i, 53, u64::from(i), now);
                if i % 2 == 0 {
                    f.dst = ip("198.18.1.2");
                }
                f
            })
            .collect();
        let ended = udp("198.18.0.7", "198.18.1.2", 99, 53, 100, now);
        let mut t = Tracker::new(FeatureConfig::default());
        t.update(now, &live, &[ended], []);
        let packets = |v: Vec<BiFlow>| v.iter().map(|f| f.fwd.packets).collect::<Vec<_>>();
        let src = Some(ip("198.18.0.7"));
        assert_eq!(
            packets(t.flows_matching(&live, src, None, 4)),
            [100, 30, 29, 28]
        );
        assert_eq!(
            packets(t.flows_matching(&live, None, Some(ip("198.18.1.1")), 3)),
            [29, 27, 25]
        );
        assert_eq!(
            packets(t.flows_matching(&live, src, Some(ip("198.18.1.2")), 2)),
            [100, 30]
        );
        assert!(
            t.flows_matching(&live, Some(ip("198.18.0.8")), None, 5)
                .is_empty()
        );
    }

    /// A steady sender's window sums are exact at every second; a burst counts in full while
    /// its epoch is current, then fades over the next epoch and is gone after it.
    #[test]
    fn window_sums_are_exact_for_steady_senders_and_fade_bursts() {
        let spans = Spans {
            short: 10,
            long: 60,
        };
        let r = |packets| Rate {
            packets,
            bytes: packets * 100,
            udp: packets,
            icmp: 0,
        };
        let a = addr(&ip("198.18.0.5"));
        let mut sums = RateSums::default();
        // From second 1000 on: the short window is exact from the start, the long one once
        // the sender filled a whole epoch before the current one (960..1019 was half empty).
        for sec in 1000..1200 {
            sums.add(spans, sec, a, r(100));
            let w = sums.get(&ip("198.18.0.5"), sec);
            assert_eq!(w.short, r(100 * (sec - 999).min(10)), "second {sec}");
            if sec >= 1080 {
                assert_eq!(w.long, r(6000), "second {sec}");
            }
        }
        let b = ip("198.18.0.6");
        let mut sums = RateSums::default();
        sums.add(spans, 95, addr(&b), r(1000));
        let short = |sums: &RateSums, sec| sums.get(&b, sec).short.packets;
        assert_eq!(short(&sums, 95), 1000);
        assert_eq!(short(&sums, 99), 1000);
        assert_eq!(short(&sums, 100), 900);
        assert_eq!(short(&sums, 105), 400);
        assert_eq!(short(&sums, 109), 0);
        assert_eq!(short(&sums, 130), 0);
        assert_eq!(sums.get(&b, 119).long.packets, 1000);
        assert_eq!(sums.get(&b, 130).long.packets, 817, "49 of 60 s");
        // Swept once neither window holds anything.
        sums.expire(130);
        assert_eq!(sums.sums.len(), 1);
        sums.expire(180);
        assert_eq!(sums.sums.len(), 0);
    }

    /// New window lengths start the counts afresh rather than blending epochs of another
    /// length; and an address costs a fixed 104 bytes of counts however long it sends.
    #[test]
    fn window_changes_restart_the_sums_whose_size_is_fixed() {
        let a = ip("198.18.0.5");
        let one = Rate {
            packets: 7,
            ..Rate::default()
        };
        let mut sums = RateSums::default();
        sums.add(
            Spans {
                short: 10,
                long: 60,
            },
            100,
            addr(&a),
            one,
        );
        sums.add(Spans { short: 5, long: 60 }, 101, addr(&a), one);
        assert_eq!(sums.get(&a, 101).long.packets, 7);
        assert_eq!(size_of::<Sums>(), 104);
    }

    /// The pass reads each source's sums by walking them in address order beside the sorted
    /// sources: every source must get its own, with senders that have no conversation left
    /// and sources that sent nothing in between, in both families.
    #[test]
    fn every_source_gets_its_own_rates() {
        use astra_common::FlowKey;
        let sources = [
            "198.18.0.9",
            "2001:db8::1",
            "198.18.0.2",
            "198.18.0.5",
            "2001:db8::",
        ];
        let key = |s: &str| FlowKey {
            src: addr(&ip(s)),
            proto: 17,
            ..Default::default()
        };
        let keys: Vec<FlowKey> = sources
            .iter()
            .chain(["198.18.0.3", "2001:db8::ff"].iter())
            .map(|s| key(s))
            .collect();
        // Sources 0..5 have conversations; the two extra senders only have rates.
        let live: Vec<BiFlow> = sources
            .iter()
            .filter(|s| **s != "198.18.0.5")
            .map(|s| udp(s, "198.18.1.1", 1, 53, 1, 100 * S))
            .collect();
        let mut t = Tracker::new(FeatureConfig::default());
        let deltas = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k, 10 * (i as u64 + 1), 0));
        t.update(100 * S, &live, &[], deltas);
        let ws = t.windows(100 * S, &live);
        assert_eq!(ws.src_long.len(), 4);
        for (i, s) in sources
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != "198.18.0.5")
        {
            assert_eq!(ws.src_short[&ip(s)].packets, 10 * (i as u64 + 1), "{s}");
            assert_eq!(ws.src_long[&ip(s)].packets, 10 * (i as u64 + 1), "{s}");
        }
    }

    #[test]
    fn fan_in_counts_distinct_sources() {
        let now = 1000 * S;
        let flows: Vec<BiFlow> = (1..=25)
            .map(|i| {
                udp(
                    &format!("198.18.0.{i}"),
                    "198.18.1.1",
                    1000,
                    53,
                    10,
                    now - S,
                )
            })
            .collect();
        let (src, dst) = windows(&flows, now);
        assert_eq!(dst[&ip("198.18.1.1")].fan_in, 25);
        assert_eq!(src[&ip("198.18.0.3")].features.max_dst_fan_in, 25.0);
    }

    #[test]
    fn feature_vector_matches_names() {
        assert_eq!(
            SourceFeatures::default().to_vec().len(),
            FEATURE_NAMES.len()
        );
    }

    #[test]
    fn handshake_and_half_open_definitions() {
        let t = 0;
        assert!(handshake_completed(&tcp(
            "1.1.1.1", "2.2.2.2", 1, 2, FULL, FULL, t
        )));
        assert!(!handshake_completed(&tcp(
            "1.1.1.1", "2.2.2.2", 1, 2, SYN, SA, t
        )));
        assert!(half_open_flow(&tcp("1.1.1.1", "2.2.2.2", 1, 2, SYN, SA, t)));
        assert!(half_open_flow(&tcp("1.1.1.1", "2.2.2.2", 1, 2, SYN, 0, t)));
        assert!(!half_open_flow(&tcp(
            "1.1.1.1", "2.2.2.2", 1, 2, FULL, FULL, t
        )));
    }
}
