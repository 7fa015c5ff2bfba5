//! The agent's view of the kernel flow table: per-poll deltas, idle/active eviction, and the
//! pairing of the two directions of a conversation into one bidirectional flow.
use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use astra_common::{FlowKey, FlowValue, direction, ip_proto, tcp_flags};
use indexmap::{IndexMap, map::Entry};
use serde::Serialize;

use crate::{dataplane::maps::PinnedMaps, error::Result};

/// A hash map with a fast, randomly seeded hasher: flow keys come from the network, so the
/// hasher must resist collision floods, but SipHash costs too much at a million flows.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A directional flow as the agent tracks it between polls.
#[derive(Clone, Debug)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub value: FlowValue,
    /// Packets and bytes added since the previous poll.
    pub delta_packets: u64,
    pub delta_bytes: u64,
}

impl FlowRecord {
    /// A record for a flow seen for the first time: everything in it is new.
    pub fn new(key: FlowKey, value: FlowValue) -> Self {
        Self {
            key,
            value,
            delta_packets: value.packets,
            delta_bytes: value.bytes,
        }
    }

    /// The key and the last poll's packet and byte deltas, as the tracker's rates take them.
    pub fn delta(&self) -> (&FlowKey, u64, u64) {
        (&self.key, self.delta_packets, self.delta_bytes)
    }
}

/// A flow as the table holds it between polls; its key is the table's key, not repeated here
/// (at a million flows the copy would cost ~100 MB of buckets).
#[derive(Clone, Copy, Debug)]
pub struct FlowState {
    pub value: FlowValue,
    /// Packets and bytes added since the previous poll.
    pub delta_packets: u64,
    pub delta_bytes: u64,
    /// The poll generation that last saw the flow.
    generation: u32,
}

impl FlowState {
    fn new(value: FlowValue, generation: u32) -> Self {
        Self {
            value,
            delta_packets: value.packets,
            delta_bytes: value.bytes,
            generation,
        }
    }

    fn record(&self, key: FlowKey) -> FlowRecord {
        FlowRecord {
            key,
            value: self.value,
            delta_packets: self.delta_packets,
            delta_bytes: self.delta_bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PollStats {
    pub active: usize,
    pub new: usize,
    pub evicted_idle: usize,
    pub evicted_active: usize,
    pub delta_packets: u64,
    pub delta_bytes: u64,
}

pub struct FlowTable {
    /// Entries in one dense vector with a separate index of positions, not in the buckets of
    /// a hash map: a million-flow map keeps two million 128-byte buckets (load factor), where
    /// this keeps a million entries and two million small indices (~150 MB against ~270 MB).
    flows: IndexMap<FlowKey, FlowState, foldhash::fast::RandomState>,
    generation: u32,
    idle_timeout_ns: u64,
    active_timeout_ns: u64,
    /// Flows ended by a timeout since the last [`FlowTable::take_closed`].
    closed: Vec<FlowRecord>,
}

impl FlowTable {
    /// Changes the timeouts (configuration reload); flows already open keep their history.
    pub fn set_timeouts(&mut self, idle_timeout: Duration, active_timeout: Duration) {
        self.idle_timeout_ns = idle_timeout.as_nanos() as u64;
        self.active_timeout_ns = active_timeout.as_nanos() as u64;
    }

    pub fn new(idle_timeout: Duration, active_timeout: Duration) -> Self {
        Self::with_capacity(idle_timeout, active_timeout, 0)
    }

    /// A table sized for `capacity` flows up front (the kernel table's size): growing a
    /// million-entry map later briefly holds the old and the new one at once, while unused
    /// reserved buckets cost address space, not resident memory.
    pub fn with_capacity(
        idle_timeout: Duration,
        active_timeout: Duration,
        capacity: usize,
    ) -> Self {
        Self {
            flows: IndexMap::with_capacity_and_hasher(capacity, Default::default()),
            generation: 0,
            idle_timeout_ns: idle_timeout.as_nanos() as u64,
            active_timeout_ns: active_timeout.as_nanos() as u64,
            closed: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The flows the kernel table held at the last poll.
    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &FlowState)> + Clone {
        self.flows.iter()
    }

    /// The live conversations, paired by position; the table cannot change while they exist.
    pub fn conversations(&self) -> TableConversations<'_> {
        TableConversations {
            table: self,
            pairs: pair_indexed(self.flows.len(), |i| self.entry(i)),
        }
    }

    fn entry(&self, i: u32) -> (&FlowKey, &FlowValue) {
        let (k, s) = self
            .flows
            .get_index(i as usize)
            .expect("positions below the table's length");
        (k, &s.value)
    }

    pub fn take_closed(&mut self) -> Vec<FlowRecord> {
        std::mem::take(&mut self.closed)
    }

    /// Reads the kernel table, updates deltas and evicts flows idle longer than the idle
    /// timeout or older than the active timeout. Evicted flows are deleted from the kernel so
    /// the table never fills with dead conversations; a long-lived one simply starts a new
    /// record, as NetFlow's active timeout does.
    pub fn poll(&mut self, maps: &mut PinnedMaps, now_ns: u64) -> Result<PollStats> {
        // The kernel's batches are folded in as they arrive: the table is never copied whole.
        let mut stats = PollStats::default();
        let mut ended = Vec::new();
        self.generation = self.generation.wrapping_add(1);
        maps.for_each_flow_batch(|keys, values| {
            for (k, v) in keys.iter().zip(values) {
                self.apply_one(k, v, now_ns, &mut stats, &mut ended);
            }
        })?;
        self.finish(&mut stats, &ended);
        maps.delete_flows(&ended)?;
        Ok(stats)
    }

    /// The bookkeeping part of [`FlowTable::poll`] on a snapshot, for tests without maps.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, snapshot: &[(FlowKey, FlowValue)], now_ns: u64) -> PollStats {
        let mut stats = PollStats::default();
        let mut ended = Vec::new();
        self.generation = self.generation.wrapping_add(1);
        for (k, v) in snapshot {
            self.apply_one(k, v, now_ns, &mut stats, &mut ended);
        }
        self.finish(&mut stats, &ended);
        stats
    }

    /// Updates one record in place (a generation mark later finds the ones that vanished), so
    /// a poll of a million flows allocates nothing for the flows it already knew.
    fn apply_one(
        &mut self,
        k: &FlowKey,
        v: &FlowValue,
        now_ns: u64,
        stats: &mut PollStats,
        ended: &mut Vec<FlowKey>,
    ) {
        let generation = self.generation;
        let rec = match self.flows.entry(*k) {
            Entry::Occupied(e) => {
                let r = e.into_mut();
                // A smaller count means the kernel entry was deleted and recreated.
                if v.packets >= r.value.packets && v.first_seen_ns == r.value.first_seen_ns {
                    r.delta_packets = v.packets - r.value.packets;
                    r.delta_bytes = v.bytes.saturating_sub(r.value.bytes);
                    r.value = *v;
                    r.generation = generation;
                } else {
                    stats.new += 1;
                    *r = FlowState::new(*v, generation);
                }
                &*r
            }
            Entry::Vacant(e) => {
                stats.new += 1;
                &*e.insert(FlowState::new(*v, generation))
            }
        };
        stats.delta_packets += rec.delta_packets;
        stats.delta_bytes += rec.delta_bytes;
        let idle = now_ns.saturating_sub(v.last_seen_ns) >= self.idle_timeout_ns;
        let old = now_ns.saturating_sub(v.first_seen_ns) >= self.active_timeout_ns;
        if idle {
            stats.evicted_idle += 1;
            ended.push(*k);
        } else if old {
            stats.evicted_active += 1;
            ended.push(*k);
        }
    }

    fn finish(&mut self, stats: &mut PollStats, ended: &[FlowKey]) {
        for k in ended {
            if let Some(r) = self.flows.swap_remove(k) {
                self.closed.push(r.record(*k));
            }
        }
        // Whatever was not in this snapshot vanished from the kernel without us (another
        // agent or the CLI).
        let generation = self.generation;
        self.flows.retain(|_, s| s.generation == generation);
        stats.active = self.flows.len();
    }
}

/// Counters of one direction of a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
    /// OR of the TCP flags this side sent.
    pub tcp_flags: u32,
    /// Flags of this side's first packet.
    pub first_tcp_flags: u32,
    pub syn: u32,
    pub fin: u32,
    pub rst: u32,
    /// The first 8 bytes of this side's first TCP payload (zeros if none): a server's banner.
    #[serde(skip)]
    pub first_payload: [u8; 8],
}

impl DirCounters {
    fn from_value(v: &FlowValue) -> Self {
        Self {
            packets: v.packets,
            bytes: v.bytes,
            tcp_flags: v.tcp_flags & 0xff,
            first_tcp_flags: (v.tcp_flags >> 8) & 0xff,
            syn: v.syn_count,
            fin: v.fin_count,
            rst: v.rst_count,
            first_payload: v.first_payload.to_le_bytes(),
        }
    }
}

/// A conversation: the initiator's direction (`fwd`) and the replies (`rev`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BiFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub ifindex: u32,
    pub fwd: DirCounters,
    pub rev: DirCounters,
    /// OR of both directions' TCP flags.
    pub tcp_flags: u32,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

impl BiFlow {
    pub fn total_bytes(&self) -> u64 {
        self.fwd.bytes + self.rev.bytes
    }

    pub fn total_packets(&self) -> u64 {
        self.fwd.packets + self.rev.packets
    }
}

/// IPv4-mapped addresses back to IPv4, everything else as IPv6.
pub fn key_addr(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Whether an ICMP message of this type (the high byte of `port`, as the dataplane keys it)
/// answers something its destination sent: an echo, timestamp, information or address-mask
/// reply, or an error (unreachable, source quench, redirect, time exceeded, parameter
/// problem; for ICMPv6 also packet too big). A host sends these because it was sent to, not
/// to probe.
pub fn icmp_answer(proto: u8, port: u16) -> bool {
    match proto {
        ip_proto::ICMP => matches!(port >> 8, 0 | 3 | 4 | 5 | 11 | 12 | 14 | 16 | 18),
        ip_proto::ICMPV6 => matches!(port >> 8, 1..=4 | 129),
        _ => false,
    }
}

/// ICMP replies carry another type than their requests; fold them so both pair up.
fn pairing_port(proto: u8, port: u16) -> u16 {
    match (proto, port >> 8) {
        (1, 0) => 8 << 8,
        (58, 129) => 128 << 8,
        _ => port,
    }
}

type PairKey = ([u8; 16], [u8; 16], u16, u16, u8);

fn pair_key(k: &FlowKey) -> (PairKey, bool) {
    if k.proto == ip_proto::ICMP || k.proto == ip_proto::ICMPV6 {
        // ICMP has no ports: the (folded) type identifies the exchange in both directions.
        let t = pairing_port(k.proto, k.dst_port);
        let forward = k.src <= k.dst;
        let (a, b) = if forward {
            (k.src, k.dst)
        } else {
            (k.dst, k.src)
        };
        return ((a, b, 0, t, k.proto), forward);
    }
    let a = (k.src, k.src_port);
    let b = (k.dst, k.dst_port);
    if a <= b {
        ((a.0, b.0, a.1, b.1, k.proto), true)
    } else {
        ((b.0, a.0, b.1, a.1, k.proto), false)
    }
}

/// Two directional entries (by position in whatever holds them) that form one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    fwd: u32,
    /// [`Pair::ONE_WAY`] when only one direction was seen.
    rev: u32,
}

impl Pair {
    const ONE_WAY: u32 = u32::MAX;
    /// Only one direction was seen, and it is the answering side (its first packet was a
    /// SYN-ACK): the conversation is its reverse, the peer's entry not yet
    /// seen. (A poll that reads the table while a connection opens can see the SYN-ACK's entry
    /// and not the SYN's: the kernel's batches are no snapshot. Taken as the opener, the
    /// server looked like it was connecting to the client's ephemeral ports.)
    const ANSWER_ONLY: u32 = u32::MAX - 1;
}

/// Whether a lone TCP direction answers a peer whose entry is missing, judged by its first
/// packet, which is never how a connection opens:
/// - a SYN-ACK answers a SYN;
/// - a RST refuses or tears down what the peer sent;
/// - any other segment with ACK set (and no SYN) continues a connection whose opening was not
///   seen; the side sending from the lower port is taken as the server.
///
/// The peer's entry goes missing for good when the peer is blocked: its packets are dropped
/// before flow accounting, while the other side still answers what was in flight (and in a
/// replayed capture, everything the peer went on sending). Taken as openers, a scanned
/// server's RSTs to a blocked scanner's ephemeral ports made the server look like a port
/// scanner. Probes without ACK (FIN, NULL and Xmas scans) open their direction, as do ACK
/// probes, which come from the higher port. ICMP replies are left as they are (their type is
/// part of the conversation's identity, and a lone reply is as often an unsolicited one), and
/// so is UDP, where an answer from a service port looks the same as a reflection flood.
fn answers(k: &FlowKey, v: &FlowValue) -> bool {
    if k.proto != ip_proto::TCP {
        return false;
    }
    let first = (v.tcp_flags >> 8) & 0xff;
    let (syn, ack, rst) = (
        first & tcp_flags::SYN != 0,
        first & tcp_flags::ACK != 0,
        first & tcp_flags::RST != 0,
    );
    rst || (ack && (syn || k.src_port < k.dst_port))
}

/// Pairs the `n` directional entries `get` returns into conversations. The same direction can
/// be seen twice (XDP ingress on one interface and TC egress on another, on a gateway); the
/// larger count wins rather than double counting.
fn pair_indexed<'a>(n: usize, get: impl Fn(u32) -> (&'a FlowKey, &'a FlowValue)) -> Vec<Pair> {
    use std::hash::BuildHasher as _;
    // Sorted by conversation rather than grouped in a hash map, and by a hash of the
    // conversation with positions rather than by the key itself: 16 bytes an entry, where the
    // keys with references took 56 and a map's buckets more. Keys are only compared where
    // hashes tie, which is mostly the two directions of one conversation.
    let hasher = foldhash::fast::RandomState::default();
    let key = |i: u32| pair_key(get(i).0);
    let mut halves: Vec<(u64, u32, bool)> = (0..n as u32)
        .map(|i| {
            let (pk, forward) = key(i);
            (hasher.hash_one(pk), i, forward)
        })
        .collect();
    halves.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).0.cmp(&key(b.1).0)));
    let same = |a: &(u64, u32, bool), b: &(u64, u32, bool)| a.0 == b.0 && key(a.1).0 == key(b.1).0;
    let mut out = Vec::new();
    for run in halves.chunk_by(same) {
        // The larger count wins when one direction was seen twice (see above).
        let mut best: [Option<u32>; 2] = [None, None];
        for &(_, i, forward) in run {
            let slot = &mut best[usize::from(!forward)];
            let better = match *slot {
                None => true,
                Some(cur) => {
                    let ((hk, hv), (_, cv)) = (get(i), get(cur));
                    hv.packets > cv.packets
                        || (hv.packets == cv.packets && hk.direction == direction::INGRESS)
                }
            };
            if better {
                *slot = Some(i);
            }
        }
        out.push(match best {
            [Some(a), Some(b)] => {
                let ((kb, vb), (_, va)) = (get(b), get(a));
                if initiated_first(kb, vb, va) {
                    Pair { fwd: b, rev: a }
                } else {
                    Pair { fwd: a, rev: b }
                }
            }
            [Some(a), None] | [None, Some(a)] => {
                let (k, v) = get(a);
                Pair {
                    fwd: a,
                    rev: if answers(k, v) {
                        Pair::ANSWER_ONLY
                    } else {
                        Pair::ONE_WAY
                    },
                }
            }
            [None, None] => continue,
        });
    }
    // In table order, so that reading them all walks the table forwards.
    out.sort_unstable_by_key(|p| p.fwd);
    out
}

/// The conversation `p` names, from the entries `get` returns.
fn bi_flow<'a>(p: Pair, get: impl Fn(u32) -> (&'a FlowKey, &'a FlowValue)) -> BiFlow {
    let (fk, fv) = get(p.fwd);
    if p.rev == Pair::ANSWER_ONLY {
        // The answering side is the conversation's reverse direction.
        return BiFlow {
            src: key_addr(fk.dst),
            dst: key_addr(fk.src),
            src_port: fk.dst_port,
            dst_port: fk.src_port,
            proto: fk.proto,
            ifindex: fk.ifindex,
            fwd: DirCounters::default(),
            rev: DirCounters::from_value(fv),
            tcp_flags: fv.tcp_flags & 0xff,
            first_seen_ns: fv.first_seen_ns,
            last_seen_ns: fv.last_seen_ns,
        };
    }
    let rv = (p.rev != Pair::ONE_WAY).then(|| *get(p.rev).1);
    let fwd = DirCounters::from_value(fv);
    let rev = rv.as_ref().map(DirCounters::from_value).unwrap_or_default();
    BiFlow {
        src: key_addr(fk.src),
        dst: key_addr(fk.dst),
        src_port: fk.src_port,
        dst_port: fk.dst_port,
        proto: fk.proto,
        ifindex: fk.ifindex,
        fwd,
        rev,
        tcp_flags: fwd.tcp_flags | rev.tcp_flags,
        first_seen_ns: rv.map_or(fv.first_seen_ns, |v| v.first_seen_ns.min(fv.first_seen_ns)),
        last_seen_ns: rv.map_or(fv.last_seen_ns, |v| v.last_seen_ns.max(fv.last_seen_ns)),
    }
}

/// Pairs directional entries into conversations (see [`pair_indexed`]).
pub fn pair_flows<'a>(
    entries: impl IntoIterator<Item = (&'a FlowKey, &'a FlowValue)>,
) -> Vec<BiFlow> {
    let entries: Vec<(&FlowKey, &FlowValue)> = entries.into_iter().collect();
    let get = |i: u32| entries[i as usize];
    pair_indexed(entries.len(), get)
        .into_iter()
        .map(|p| bi_flow(p, get))
        .collect()
}

/// Conversations a detection pass reads one at a time, by position: the flow table's, paired
/// without copying them out ([`FlowTable::conversations`]), or a plain list.
pub trait Conversations {
    fn len(&self) -> usize;
    fn get(&self, i: u32) -> BiFlow;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Conversations for Vec<BiFlow> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn get(&self, i: u32) -> BiFlow {
        self[i as usize]
    }
}

/// The flow table's conversations: pairs of entry positions, built into a [`BiFlow`] when
/// read. At a million flows the built conversations took 144 MB; the pairs take 8.
pub struct TableConversations<'t> {
    table: &'t FlowTable,
    pairs: Vec<Pair>,
}

impl Conversations for TableConversations<'_> {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn get(&self, i: u32) -> BiFlow {
        bi_flow(self.pairs[i as usize], |j| self.table.entry(j))
    }
}

/// Whether direction `x` started the conversation rather than `y`. Timestamps come from a
/// coarse clock, so both directions of a quick exchange often carry the same first-seen
/// time. Then an ICMP request opens its exchange; for TCP, the side whose first packet was a
/// bare SYN opened it, or failing that a side that sent SYN when the other sent none (a scan
/// answered by RST); otherwise the side talking to the lower port is taken as the client, as
/// servers usually listen on low ports.
fn initiated_first(kx: &FlowKey, vx: &FlowValue, vy: &FlowValue) -> bool {
    if vx.first_seen_ns != vy.first_seen_ns {
        return vx.first_seen_ns < vy.first_seen_ns;
    }
    if matches!(kx.proto, ip_proto::ICMP | ip_proto::ICMPV6) {
        // Echo, timestamp, information and address-mask requests open an exchange.
        let request = |port: u16| matches!(port >> 8, 8 | 13 | 15 | 17 | 128);
        if request(kx.dst_port) {
            return true;
        }
    }
    if kx.proto == ip_proto::TCP {
        // A first packet that is a bare SYN (no ACK) opened the connection.
        let opened = |v: &FlowValue| {
            (v.tcp_flags >> 8) & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
        };
        match (opened(vx), opened(vy)) {
            (true, false) => return true,
            (false, true) => return false,
            _ => {}
        }
        let sent_syn = |v: &FlowValue| v.tcp_flags & tcp_flags::SYN != 0;
        match (sent_syn(vx), sent_syn(vy)) {
            (true, false) => return true,
            (false, true) => return false,
            _ => {}
        }
    }
    kx.dst_port < kx.src_port
}

pub fn proto_name(p: u8) -> String {
    match p {
        ip_proto::ICMP => "icmp".into(),
        ip_proto::TCP => "tcp".into(),
        ip_proto::UDP => "udp".into(),
        ip_proto::ICMPV6 => "icmpv6".into(),
        ip_proto::SCTP => "sctp".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, proto: u8, dir: u8) -> FlowKey {
        let m = |a: [u8; 4]| {
            let mut o = [0u8; 16];
            o[10] = 0xff;
            o[11] = 0xff;
            o[12..].copy_from_slice(&a);
            o
        };
        FlowKey {
            src: m(src),
            dst: m(dst),
            src_port: sp,
            dst_port: dp,
            ifindex: 3,
            proto,
            direction: dir,
            _pad: [0; 2],
        }
    }

    fn val(p: u64, first: u64, last: u64) -> FlowValue {
        FlowValue {
            packets: p,
            bytes: p * 100,
            first_seen_ns: first,
            last_seen_ns: last,
            ..Default::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn deltas_and_new_flows() {
        let mut t = FlowTable::new(Duration::from_secs(60), Duration::from_secs(600));
        let k = key([1, 1, 1, 1], [2, 2, 2, 2], 1000, 80, 6, 0);
        let s = t.apply(&[(k, val(3, S, S))], 2 * S);
        assert_eq!((s.new, s.delta_packets, s.active), (1, 3, 1));
        let s = t.apply(&[(k, val(10, S, 3 * S))], 4 * S);
        assert_eq!((s.new, s.delta_packets, s.delta_bytes), (0, 7, 700));
        // Recreated entry (count went down): counted as new, not as a negative delta.
        let s = t.apply(&[(k, val(2, 5 * S, 5 * S))], 6 * S);
        assert_eq!((s.new, s.delta_packets), (1, 2));
    }

    #[test]
    fn idle_and_active_timeouts_close_flows() {
        let mut t = FlowTable::new(Duration::from_secs(10), Duration::from_secs(100));
        let idle = key([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 17, 0);
        let busy = key([1, 1, 1, 1], [2, 2, 2, 2], 3, 4, 17, 0);
        let fresh = key([1, 1, 1, 1], [2, 2, 2, 2], 5, 6, 17, 0);
        let now = 200 * S;
        let s = t.apply(
            &[
                (idle, val(1, 180 * S, 189 * S)),
                (busy, val(1, 99 * S, 199 * S)),
                (fresh, val(1, 195 * S, 199 * S)),
            ],
            now,
        );
        assert_eq!((s.evicted_idle, s.evicted_active, s.active), (1, 1, 1));
        let closed: Vec<_> = t.take_closed().into_iter().map(|r| r.key).collect();
        assert!(closed.contains(&idle) && closed.contains(&busy));
        assert!(t.flows().all(|(k, _)| *k == fresh));
        // Just under the idle timeout stays.
        let s = t.apply(&[(fresh, val(1, 195 * S, 199 * S))], 199 * S + 10 * S - 1);
        assert_eq!(s.evicted_idle, 0);
    }

    #[test]
    fn flows_that_vanished_from_the_kernel_are_forgotten() {
        let mut t = FlowTable::new(Duration::from_secs(60), Duration::from_secs(600));
        let k = key([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 17, 0);
        t.apply(&[(k, val(1, S, S))], S);
        assert_eq!(t.apply(&[], 2 * S).active, 0);
    }

    #[test]
    fn pairs_request_and_reply() {
        let c = [198, 18, 0, 1];
        let s = [198, 18, 0, 2];
        let req = key(c, s, 40000, 80, 6, direction::INGRESS);
        let rep = key(s, c, 80, 40000, 6, direction::EGRESS);
        let flows = pair_flows([(&rep, &val(4, 2 * S, 9 * S)), (&req, &val(5, S, 8 * S))]);
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert_eq!(f.src, IpAddr::from(c));
        assert_eq!((f.src_port, f.dst_port), (40000, 80));
        assert_eq!((f.fwd.packets, f.rev.packets), (5, 4));
        assert_eq!((f.first_seen_ns, f.last_seen_ns), (S, 9 * S));
    }

    /// A poll that reads the table while a connection opens may see the SYN-ACK's entry
    /// and not the SYN's (the kernel's batches are no snapshot): the conversation is still
    /// the client's, with the same identity it has once both entries are seen.
    #[test]
    fn a_lone_syn_ack_is_the_answer_of_a_client_not_yet_seen() {
        let c = [198, 18, 0, 1];
        let s = [198, 18, 0, 2];
        let req = key(c, s, 40000, 80, 6, direction::INGRESS);
        let rep = key(s, c, 80, 40000, 6, direction::EGRESS);
        let synack = (tcp_flags::SYN | tcp_flags::ACK) << 8 | tcp_flags::SYN | tcp_flags::ACK;
        let rep_v = FlowValue {
            tcp_flags: synack,
            ..val(1, S, S)
        };
        let alone = pair_flows([(&rep, &rep_v)]);
        assert_eq!(alone.len(), 1);
        let f = &alone[0];
        assert_eq!((f.src, f.dst), (IpAddr::from(c), IpAddr::from(s)));
        assert_eq!((f.src_port, f.dst_port), (40000, 80));
        assert_eq!((f.fwd.packets, f.rev.packets), (0, 1));
        assert_eq!(f.rev.first_tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
        // Once both are seen: the same conversation, the same way round.
        let req_v = FlowValue {
            tcp_flags: tcp_flags::SYN << 8 | tcp_flags::SYN | tcp_flags::ACK,
            ..val(2, S, 2 * S)
        };
        let both = pair_flows([(&rep, &rep_v), (&req, &req_v)]);
        assert_eq!(
            (both[0].src, both[0].src_port, both[0].dst_port),
            (f.src, f.src_port, f.dst_port)
        );
        // A lone direction that opened with anything else is still taken as the opener.
        let lone_syn = pair_flows([(&req, &req_v)]);
        assert_eq!(lone_syn[0].src, IpAddr::from(c));
        let lone_ack = pair_flows([(&rep, &val(3, S, S))]);
        assert_eq!(lone_ack[0].src, IpAddr::from(s));
    }

    /// A blocked source's packets are dropped before flow accounting, so what the other side
    /// still sends it arrives alone: none of that may make the other side an opener.
    #[test]
    fn lone_answers_of_a_peer_gone_silent_stay_answers() {
        let scanner = [198, 18, 0, 66];
        let server = [198, 18, 1, 10];
        let first = |f: u32| FlowValue {
            tcp_flags: f << 8 | f,
            ..val(1, S, S)
        };
        let (rst, ack) = (tcp_flags::RST, tcp_flags::ACK);
        let (fin, psh, syn) = (tcp_flags::FIN, tcp_flags::PSH, tcp_flags::SYN);
        let from_server = key(server, scanner, 22, 51000, 6, direction::INGRESS);
        let from_scanner = key(scanner, server, 51000, 22, 6, direction::INGRESS);
        for (k, flags, opener) in [
            // A closed port refusing a SYN, a RST tearing down, data and a FIN continuing a
            // connection from the server's port: the scanner's conversations.
            (from_server, rst | ack, scanner),
            (from_server, rst, scanner),
            (from_server, psh | ack, scanner),
            (from_server, fin | ack, scanner),
            // The same segments from the higher port continue the sender's own connection.
            (from_scanner, psh | ack, scanner),
            (from_scanner, fin | ack, scanner),
            // Probes open their direction: FIN, NULL and Xmas scans carry no ACK, and an ACK
            // probe comes from the higher port.
            (from_scanner, fin, scanner),
            (from_scanner, 0, scanner),
            (from_scanner, fin | psh | 0x20, scanner),
            (from_scanner, ack, scanner),
            (from_scanner, syn, scanner),
            (from_server, syn | ack, scanner),
        ] {
            let f = pair_flows([(&k, &first(flags))]);
            assert_eq!(f.len(), 1);
            assert_eq!(
                f[0].src,
                IpAddr::from(opener),
                "first flags {flags:#x} from {k:?}"
            );
            assert_eq!(f[0].dst_port, 22, "first flags {flags:#x}");
        }
        // UDP from a service port is left as it is: it may as well be a reflection flood.
        let dns = key(server, scanner, 53, 51000, 17, direction::INGRESS);
        assert_eq!(
            pair_flows([(&dns, &val(1, S, S))])[0].src,
            IpAddr::from(server)
        );
    }

    #[test]
    fn pairs_icmp_echo_and_keeps_distinct_flows_apart() {
        let c = [198, 18, 0, 1];
        let s = [198, 18, 0, 2];
        let echo = key(c, s, 0, 8 << 8, 1, direction::INGRESS);
        let reply = key(s, c, 0, 0, 1, direction::EGRESS);
        let other = key(c, s, 40001, 80, 6, direction::INGRESS);
        let flows = pair_flows([
            (&echo, &val(3, S, S)),
            (&reply, &val(3, 2 * S, 2 * S)),
            (&other, &val(1, S, S)),
        ]);
        assert_eq!(flows.len(), 2);
        let icmp = flows.iter().find(|f| f.proto == 1).unwrap();
        assert_eq!((icmp.fwd.packets, icmp.rev.packets), (3, 3));
    }

    #[test]
    fn the_bare_syn_side_initiates_on_a_timestamp_tie_whatever_the_ports() {
        let c = [198, 18, 0, 1];
        let s = [198, 18, 0, 2];
        // The server listens on a high port, the client got a lower ephemeral one.
        let req = key(c, s, 34130, 37959, 6, direction::INGRESS);
        let rep = key(s, c, 37959, 34130, 6, direction::EGRESS);
        let mut vr = val(5, S, S);
        vr.tcp_flags = 0x1b | (0x02 << 8); // first packet: SYN
        let mut vp = val(4, S, S);
        vp.tcp_flags = 0x1b | (0x12 << 8); // first packet: SYN-ACK
        let flows = pair_flows([(&rep, &vp), (&req, &vr)]);
        assert_eq!(flows[0].src, IpAddr::from(c));
        assert_eq!(flows[0].fwd.first_tcp_flags, 0x02);
        assert_eq!(flows[0].tcp_flags, 0x1b);
    }

    #[test]
    fn the_echo_request_side_initiates_even_on_a_timestamp_tie() {
        let c = [198, 18, 2, 2];
        let s = [198, 18, 2, 1];
        let echo = key(c, s, 0, 8 << 8, 1, direction::INGRESS);
        let reply = key(s, c, 0, 0, 1, direction::EGRESS);
        let flows = pair_flows([(&reply, &val(9, S, S)), (&echo, &val(9, S, S))]);
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].src, IpAddr::from(c));
    }

    #[test]
    fn same_direction_seen_twice_is_not_double_counted() {
        let c = [198, 18, 0, 1];
        let s = [198, 18, 0, 2];
        let on_ingress = key(c, s, 1, 2, 17, direction::INGRESS);
        let mut on_egress = key(c, s, 1, 2, 17, direction::EGRESS);
        on_egress.ifindex = 4;
        let flows = pair_flows([(&on_ingress, &val(7, S, S)), (&on_egress, &val(7, S, S))]);
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].fwd.packets, 7);
        assert_eq!(flows[0].ifindex, 3);
    }

    /// The table's conversations are built from positions in the table; they must be the
    /// conversations pairing copies of the same entries gives, after evictions have moved
    /// entries around (swap removal) too.
    #[test]
    fn table_conversations_match_pairing_the_entries() {
        let mut t = FlowTable::new(Duration::from_secs(60), Duration::from_secs(600));
        let mut snapshot = Vec::new();
        for i in 0..50u8 {
            let (c, srv) = ([198, 18, 0, i], [198, 18, 1, i % 7]);
            snapshot.push((key(c, srv, 1000 + u16::from(i), 80, 6, 0), val(5, S, 9 * S)));
            if i % 3 != 0 {
                snapshot.push((
                    key(srv, c, 80, 1000 + u16::from(i), 6, 1),
                    val(4, 2 * S, 9 * S),
                ));
            }
        }
        // One flow idle long enough to be evicted, from the middle of the table.
        snapshot.insert(
            20,
            (
                key([198, 18, 9, 9], [198, 18, 1, 1], 5, 53, 17, 0),
                val(1, S, S),
            ),
        );
        t.apply(&snapshot, 65 * S);
        let live = t.conversations();
        let mut got: Vec<BiFlow> = (0..live.len() as u32).map(|i| live.get(i)).collect();
        let mut want = pair_flows(t.flows().map(|(k, s)| (k, &s.value)));
        let order = |f: &BiFlow| (f.src, f.dst, f.src_port, f.dst_port);
        got.sort_by_key(order);
        want.sort_by_key(order);
        assert_eq!(got.len(), 50);
        assert_eq!(got, want);
        assert!(got.iter().all(|f| f.dst_port == 80 && f.src_port >= 1000));
        assert_eq!(got.iter().filter(|f| f.rev.packets == 4).count(), 33);
    }
}
