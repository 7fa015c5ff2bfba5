//! Map types shared by the eBPF programs and the userspace agent.
//!
//! Every type here crosses the kernel/user boundary byte for byte, so each one is `#[repr(C)]`,
//! uses fixed-width fields only and spells out its padding; the size assertions at the bottom
//! fail the build if a field change silently moves anything. Changing any of them means bumping
//! [`LAYOUT_VERSION`], because maps pinned by an older agent would otherwise be misread.
// Tests run on the host, with std; the eBPF programs and the agent see a no_std crate.
#![cfg_attr(not(test), no_std)]

/// Version of the pinned map layout. The agent refuses to reuse pins carrying another version.
pub const LAYOUT_VERSION: u32 = 7;
/// Written into [`Meta::magic`] so that a foreign map that happens to be called `ASTRA_META`
/// is never mistaken for ours.
pub const META_MAGIC: u64 = u64::from_be_bytes(*b"ASTRAMAP");

/// Names of the maps as they are declared in the eBPF object and pinned in the pin directory.
pub mod map_names {
    pub const META: &str = "ASTRA_META";
    pub const FLOWS: &str = "ASTRA_FLOWS";
    pub const COUNTERS: &str = "ASTRA_COUNTERS";
    pub const BLOCK_V4: &str = "ASTRA_BLOCK_V4";
    pub const BLOCK_V6: &str = "ASTRA_BLOCK_V6";
    pub const BLOCK_NET_V4: &str = "ASTRA_BNET_V4";
    pub const BLOCK_NET_V6: &str = "ASTRA_BNET_V6";
    pub const ALLOW_NET_V4: &str = "ASTRA_ANET_V4";
    pub const ALLOW_NET_V6: &str = "ASTRA_ANET_V6";
    pub const QUARANTINE_V4: &str = "ASTRA_QUAR_V4";
    pub const QUARANTINE_V6: &str = "ASTRA_QUAR_V6";
    pub const THROTTLE_V4: &str = "ASTRA_TNET_V4";
    pub const THROTTLE_V6: &str = "ASTRA_TNET_V6";
    pub const TIERS: &str = "ASTRA_TIERS";
    pub const PROTECT_V4: &str = "ASTRA_PROT_V4";
    pub const PROTECT_V6: &str = "ASTRA_PROT_V6";
    pub const KNOWN: &str = "ASTRA_KNOWN";
    /// Every pinned map, in the order the layout check walks them.
    pub const ALL: [&str; 17] = [
        META,
        FLOWS,
        COUNTERS,
        BLOCK_V4,
        BLOCK_V6,
        BLOCK_NET_V4,
        BLOCK_NET_V6,
        ALLOW_NET_V4,
        ALLOW_NET_V6,
        QUARANTINE_V4,
        QUARANTINE_V6,
        THROTTLE_V4,
        THROTTLE_V6,
        TIERS,
        PROTECT_V4,
        PROTECT_V6,
        KNOWN,
    ];
}

/// Program names (the symbol names in the eBPF objects). The dataplane object holds the XDP, TC
/// and clock programs; floor, generator and drop-all are in the bench object (`astra-bench`).
pub const XDP_PROGRAM: &str = "astra_xdp";
pub const TC_EGRESS_PROGRAM: &str = "astra_tc_egress";
/// An XDP program that only passes: the baseline for per-packet cost measurements.
pub const FLOOR_PROGRAM: &str = "astra_floor";
/// An XDP program that sends every frame back out (XDP_TX): run with BPF_PROG_TEST_RUN's live
/// frames mode it is the benchmarks' packet generator.
pub const GEN_PROGRAM: &str = "astra_gen";
/// [`GEN_PROGRAM`] for a TCP SYN over IPv4 without options (a 54-byte frame), each sent from a
/// random source in 198.18.128.0/17 and port: the SYN-flood bench's spoofed flood.
pub const GEN_SYN_PROGRAM: &str = "astra_gen_syn";
/// An XDP program the loader runs once to line the dataplane's clock up with
/// CLOCK_MONOTONIC_COARSE.
pub const CLOCK_PROGRAM: &str = "astra_clock";
/// An XDP program that sets the dataplane's clock from the frame: `astra replay` runs it so
/// that packets are stamped with their capture time.
pub const SET_CLOCK_PROGRAM: &str = "astra_set_clock";
/// An XDP program that drops every frame: the ceiling of what a flood generator and a veth can
/// carry, against which filters' own costs are measured.
pub const DROP_ALL_PROGRAM: &str = "astra_drop_all";

/// Default number of flow table entries (overridable at load time with `--flow-capacity`).
pub const DEFAULT_FLOW_CAPACITY: u32 = 262_144;
pub const BLOCK_EXACT_CAPACITY: u32 = 1 << 20;
pub const BLOCK_NET_CAPACITY: u32 = 1 << 18;
pub const ALLOW_NET_CAPACITY: u32 = 1 << 16;
pub const QUARANTINE_CAPACITY: u32 = 1 << 16;
pub const THROTTLE_CAPACITY: u32 = 1 << 16;
/// Protected targets per family: the servers behind one sensor, not its clients.
pub const PROTECT_CAPACITY: u32 = 1 << 12;
/// Sources known to complete handshakes, which a protected target admits before its budget.
pub const KNOWN_CAPACITY: u32 = 1 << 16;

/// Bits of the single `ASTRA_TIERS` word: which of the optional tiers hold entries. XDP reads
/// the word once per packet (an inlined array lookup) and skips the lookups of an empty tier,
/// so a host that quarantines and throttles nothing pays about a nanosecond for them.
/// Userspace sets a bit before or right after writing the tier's first entry and clears it
/// once the tier's maps are empty; a stale set bit costs only the lookups.
pub mod tier {
    pub const QUARANTINE: u32 = 1;
    pub const THROTTLE: u32 = 2;
    pub const PROTECT: u32 = 4;
}

/// Interfaces are folded into this many counter slots (`ifindex % IFACE_SLOTS`). A per-CPU
/// array indexed by slot costs one inlined lookup per packet, where a hash keyed by ifindex
/// would cost a full hash lookup on the drop path; the agent refuses to attach to two
/// interfaces that share a slot.
pub const IFACE_SLOTS: u32 = 1024;

/// Per-interface counter slots (`action` index into the counters array).
pub mod action {
    pub const PASS: u32 = 0;
    pub const DROP_BLOCKED: u32 = 1;
    pub const DROP_BLOCKED_NET: u32 = 2;
    /// Matched a block entry but an allowlist prefix covers it, so it passed.
    pub const PASS_ALLOWLISTED: u32 = 3;
    pub const PARSE_ERROR: u32 = 4;
    /// Non-first IP fragment: it has no transport header, so it is passed uncounted by flow.
    pub const FRAGMENT: u32 = 5;
    pub const NON_IP: u32 = 6;
    /// Not a packet outcome: a flow that could not be inserted because the table was full.
    pub const FLOW_INSERT_FAIL: u32 = 7;
    pub const EGRESS_PASS: u32 = 8;
    pub const EGRESS_PARSE_ERROR: u32 = 9;
    pub const EGRESS_FRAGMENT: u32 = 10;
    pub const EGRESS_NON_IP: u32 = 11;
    /// From or to a quarantined host (and not to or from an allowlisted address).
    pub const DROP_QUARANTINED: u32 = 12;
    /// Over a throttle entry's rate.
    pub const DROP_THROTTLED: u32 = 13;
    /// Leaving this host from or to a quarantined host (TC egress).
    pub const EGRESS_DROP_QUARANTINED: u32 = 14;
    /// A new SYN to a protected target from a source not known to complete handshakes, over
    /// the target's budget.
    pub const DROP_SYN_BUDGET: u32 = 15;
    /// To a protected target from a reflection port, or a SYN-ACK, answering nothing the
    /// target sent.
    pub const DROP_REFLECTED: u32 = 16;
    /// A stranger's new SYN to a protected target answered from XDP with a SYN cookie.
    pub const SYN_COOKIE: u32 = 17;
    pub const COUNT: u32 = 18;
}

/// Flow direction as seen by the hook that counted it.
pub mod direction {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// TCP header flags, as the dataplane ORs them into [`FlowValue::tcp_flags`].
pub mod tcp_flags {
    pub const FIN: u32 = 0x01;
    pub const SYN: u32 = 0x02;
    pub const RST: u32 = 0x04;
    pub const PSH: u32 = 0x08;
    pub const ACK: u32 = 0x10;
}

/// IP protocol numbers (IANA), for [`FlowKey::proto`] and the IPv6 extension-header chain.
pub mod ip_proto {
    pub const HOPOPTS: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const DSTOPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// Origin of a block entry.
pub mod source {
    pub const MANUAL: u32 = 0;
    pub const AUTO: u32 = 1;
    pub const FEED: u32 = 2;
    /// A CrowdSec decision pulled from a Local API.
    pub const CROWDSEC: u32 = 3;
}

pub const fn counter_index(ifindex: u32, action: u32) -> u32 {
    (ifindex % IFACE_SLOTS) * action::COUNT + action
}

/// One row of the flow table: a unidirectional flow as seen on one interface and hook.
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`); ports are in host byte order.
/// For ICMP and ICMPv6 the source port is 0 and the destination port is `type << 8 | code`
/// (the NetFlow convention).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub ifindex: u32,
    pub proto: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
}

/// Counters of one flow. On TC egress, where a flow's packets leave from several CPUs, counts
/// and byte totals are added atomically. On XDP ingress they are plain adds: RSS steers a flow
/// to one receive queue, so one CPU owns its entry, and an increment can only be lost when one
/// flow arrives on two queues at the same instant. `last_seen_ns`, the lengths and the flag OR
/// are plain stores everywhere.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC_COARSE nanoseconds, read through jiffies (behind the coarse clock by at
    /// most one tick): millisecond-grade precision is plenty for flow timing, and the fine
    /// clock costs ~25 ns per packet here.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub syn_count: u32,
    pub fin_count: u32,
    pub rst_count: u32,
    /// Low byte: OR of every TCP flag byte seen. Second byte: the flags of the flow's first
    /// packet (a bare SYN marks the side that opened the connection).
    pub tcp_flags: u32,
    /// Frame lengths as the hook saw them. On egress a GSO/TSO packet counts as its number of
    /// wire segments in `packets`, but has one (large) length here.
    pub min_len: u32,
    pub max_len: u32,
    /// The first 8 payload bytes of the first TCP segment in this direction that carried 8 or
    /// more, in packet order (`u64::to_le_bytes` gives them back); 0 until then. Written once:
    /// a banner-first service's greeting ("SSH-2.0-", "220 ", "+OK", "* OK") tells a login
    /// service on any port.
    pub first_payload: u64,
}

/// A blocklist or allowlist entry as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListEntry {
    /// CLOCK_MONOTONIC nanoseconds after which the entry no longer applies; 0 = permanent.
    /// The kernel compares it with the coarse clock, which lags by at most one tick.
    pub expires_ns: u64,
    /// Packets that matched this entry (updated atomically).
    pub hits: u64,
    pub created_unix_s: u64,
    /// One of [`source`].
    pub source: u32,
    /// [`ListEntry::ALLOW_OVERLAP`] or 0.
    pub flags: u32,
}

impl ListEntry {
    /// Set on a block entry that an allowlist prefix covers, wholly or in part: only then does
    /// the dataplane look the source up in the allowlist before dropping. Userspace sets it
    /// whenever an allow entry and a block entry overlap and never clears it early, so a stale
    /// flag only costs that lookup. Without it every drop paid for an allowlist lookup.
    pub const ALLOW_OVERLAP: u32 = 1;

    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        self.expires_ns != 0 && now_ns >= self.expires_ns
    }
}

/// A throttle entry: a token bucket per address or prefix, run as GCRA (the "virtual
/// scheduling" form of a token bucket), which needs one timestamp per limit instead of a token
/// count and a refill time: a packet conforms when the limit's theoretical arrival time (TAT)
/// is no later than now plus the burst tolerance, and a conforming packet moves the TAT on by
/// its cost. Packets over either limit are dropped and cost nothing. Written by userspace
/// only; XDP updates the TATs and counters in place with plain stores, so CPUs racing on one
/// entry can admit a few packets more than the rate (never fewer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleEntry {
    /// Expiry, creation and source as for the lists; `hits` counts every packet the entry
    /// matched, passed or dropped.
    pub list: ListEntry,
    /// Nanoseconds one packet costs (10^9 / packets per second); 0 = no packet limit.
    pub packet_ns: u64,
    /// Nanoseconds one byte costs, times 2^16 (8·10^9 / bits per second, in 48.16 fixed
    /// point, exact enough for 100 Gbit/s); 0 = no byte limit.
    pub byte_ns_fp16: u64,
    /// How far ahead of now a TAT may run: the burst, as time at the rate.
    pub burst_ns: u64,
    pub packet_tat_ns: u64,
    pub byte_tat_ns: u64,
    /// Packets and bytes dropped for being over the rate.
    pub dropped: u64,
    pub dropped_bytes: u64,
}

impl ThrottleEntry {
    /// Whether a packet of `len` bytes at `now_ns` is within the limits; if so, charges it.
    #[inline(always)]
    pub fn admit(&mut self, len: u32, now_ns: u64) -> bool {
        let limit = now_ns.saturating_add(self.burst_ns);
        let bytes_cost = (len as u64).wrapping_mul(self.byte_ns_fp16) >> 16;
        let packet_ok = self.packet_ns == 0 || self.packet_tat_ns <= limit;
        let bytes_ok = self.byte_ns_fp16 == 0 || self.byte_tat_ns <= limit;
        if !(packet_ok && bytes_ok) {
            self.dropped += 1;
            self.dropped_bytes += len as u64;
            return false;
        }
        if self.packet_ns != 0 {
            self.packet_tat_ns = self.packet_tat_ns.max(now_ns) + self.packet_ns;
        }
        if self.byte_ns_fp16 != 0 {
            self.byte_tat_ns = self.byte_tat_ns.max(now_ns) + bytes_cost;
        }
        true
    }
}

/// What a protected target's entry turns on ([`ProtectEntry::flags`]).
pub mod protect {
    /// New SYNs from unknown sources within a budget.
    pub const SYN: u32 = 1;
    /// Drop answers to requests the target never sent.
    pub const REFLECT: u32 = 2;
    /// With [`SYN`]: answer strangers' new SYNs from XDP with a SYN-ACK carrying a SYN cookie
    /// (the kernel's own, `bpf_tcp_raw_gen_syncookie_ipv4`) instead of holding them to the
    /// budget. The handshake's last ACK goes up to the kernel, where nftables' SYNPROXY
    /// checks the cookie and opens the connection. IPv4 SYNs without IP options and IPv6 ones
    /// without extension headers; the others meet the budget.
    pub const COOKIE: u32 = 4;
    /// The SYN budget and the reflection filter.
    pub const ALL: u32 = SYN | REFLECT;
}

/// Ports one protection entry can name.
pub const PROTECT_PORTS: usize = 8;

/// UDP source ports of services that answer a small request with a large one, which spoofed
/// requests turn on a victim (US-CERT TA14-017A and later): DNS, NTP, SNMP, CLDAP, SSDP,
/// memcached, chargen, QOTD, portmap, NetBIOS, RIP, MSSQL browser, ISAKMP, mDNS, WS-Discovery,
/// CoAP, ARD, Ubiquiti discovery, TFTP, OpenVPN, DVR and Steam/Quake queries.
pub const REFLECTION_PORTS: [u16; 24] = [
    17, 19, 53, 69, 111, 123, 137, 161, 389, 500, 520, 1194, 1434, 1900, 3283, 3702, 4500, 5353,
    5683, 10001, 11211, 27015, 27960, 37810,
];

/// Whether `port` is one of [`REFLECTION_PORTS`]: a comparison tree the compiler builds from
/// the match, bounded for the verifier.
#[inline(always)]
pub fn is_reflection_port(port: u16) -> bool {
    matches!(
        port,
        17 | 19
            | 53
            | 69
            | 111
            | 123
            | 137
            | 161
            | 389
            | 500
            | 520
            | 1194
            | 1434
            | 1900
            | 3283
            | 3702
            | 4500
            | 5353
            | 5683
            | 10001
            | 11211
            | 27015
            | 27960
            | 37810
    )
}

/// A protected target (the destination address is the key). New SYNs from sources in
/// `ASTRA_KNOWN` pass; others draw on `budget` (its packet rate is the new SYNs per second the
/// target accepts from strangers; `budget.dropped` counts those over it). Answers from
/// reflection ports and SYN-ACKs pass only when the flow table holds the target's request on
/// the interface the answer arrived on. Segments other than SYN never meet the budget, so
/// established connections are untouched. Written by userspace only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtectEntry {
    /// Expiry, hits (packets that met the budget) and the SYN budget's GCRA state.
    pub budget: ThrottleEntry,
    /// Destination ports whose new SYNs meet the budget; all zero means every port.
    pub ports: [u16; PROTECT_PORTS],
    /// [`protect`] bits.
    pub flags: u32,
    pub _pad: u32,
    /// New SYNs that passed because their source is known.
    pub known_syns: u64,
    /// Unsolicited answers dropped, and their bytes.
    pub reflected: u64,
    pub reflected_bytes: u64,
    /// New SYNs answered with a SYN cookie from XDP ([`protect::COOKIE`]).
    pub cookies: u64,
}

impl ProtectEntry {
    /// Whether the budget covers new SYNs to `port`.
    #[inline(always)]
    pub fn covers_port(&self, port: u16) -> bool {
        if self.ports[0] == 0 {
            return true;
        }
        let mut i = 0;
        while i < self.ports.len() {
            if self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Packet and byte counters for one (interface slot, action) pair, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Key of the LPM tries: the prefix length in bits followed by the address in network order.
/// Same layout as aya's `lpm_trie::Key<[u8; N]>`.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LpmKey<const N: usize> {
    pub prefix_len: u32,
    pub addr: [u8; N],
}

/// Stored in the single-entry `ASTRA_META` array so a later agent can tell which layout the
/// pinned maps were created with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub magic: u64,
    pub layout_version: u32,
    pub flow_key_size: u32,
    pub flow_value_size: u32,
    pub list_entry_size: u32,
}

const _: () = {
    assert!(size_of::<FlowKey>() == 44);
    assert!(size_of::<FlowValue>() == 64);
    assert!(size_of::<ListEntry>() == 32);
    assert!(size_of::<ThrottleEntry>() == 88);
    assert!(size_of::<ProtectEntry>() == 144);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<Meta>() == 24);
    assert!(size_of::<LpmKey<4>>() == 8);
    assert!(size_of::<LpmKey<16>>() == 20);
};

impl Meta {
    pub const CURRENT: Meta = Meta {
        magic: META_MAGIC,
        layout_version: LAYOUT_VERSION,
        flow_key_size: size_of::<FlowKey>() as u32,
        flow_value_size: size_of::<FlowValue>() as u32,
        list_entry_size: size_of::<ListEntry>() as u32,
    };
}

#[cfg(feature = "user")]
mod pod {
    // Each of these types is repr(C) with only integer fields and explicit padding, so every bit
    // pattern is valid and there are no implicit padding bytes.
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThrottleEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProtectEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Meta {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(pps: u64, burst_ns: u64) -> ThrottleEntry {
        ThrottleEntry {
            packet_ns: 1_000_000_000 / pps,
            burst_ns,
            ..Default::default()
        }
    }

    #[test]
    fn a_packet_limit_passes_its_burst_then_its_rate() {
        // 100 pps with 100 ms of burst: at one instant, 11 packets (the one the rate allows
        // now and 10 of burst), then one every 10 ms.
        let mut t = limit(100, 100_000_000);
        let now = 5_000_000_000;
        let passed = (0..50).filter(|_| t.admit(60, now)).count();
        assert_eq!(passed, 11);
        assert_eq!(t.dropped, 39);
        assert_eq!(t.dropped_bytes, 39 * 60);
        // A second later, at a packet every millisecond: 100 more pass, give or take the
        // burst that refilled.
        let passed = (0..1000u64)
            .filter(|i| t.admit(60, now + 1_000_000_000 + i * 1_000_000))
            .count();
        assert!((100..=112).contains(&passed), "{passed}");
    }

    #[test]
    fn a_byte_limit_counts_bytes_and_dropped_packets_cost_nothing() {
        // 8 Mbit/s = 1 MB/s: a byte costs 1000 ns.
        let mut t = ThrottleEntry {
            byte_ns_fp16: 1000 << 16,
            burst_ns: 10_000_000,
            ..Default::default()
        };
        let now = 1_000_000_000;
        // 10 ms of burst at 1 MB/s is 10 kB: 1500-byte frames, 7 fit (the 8th starts past it).
        let passed = (0..20).filter(|_| t.admit(1500, now)).count();
        assert_eq!(passed, 7);
        // Over a simulated second of 1500-byte frames every 100 µs (15 MB/s offered), what
        // passes is 1 MB and the burst.
        let mut bytes = 0u64;
        for i in 0..10_000u64 {
            if t.admit(1500, now + 1_000_000 + i * 100_000) {
                bytes += 1500;
            }
        }
        assert!((1_000_000..=1_012_000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn reflection_ports_match_the_list_and_ports_cover_as_listed() {
        for p in 0..=u16::MAX {
            assert_eq!(is_reflection_port(p), REFLECTION_PORTS.contains(&p), "{p}");
        }
        let mut e = ProtectEntry::default();
        assert!(e.covers_port(80) && e.covers_port(1));
        e.ports[0] = 443;
        e.ports[7] = 80;
        assert!(e.covers_port(443) && e.covers_port(80) && !e.covers_port(22));
    }

    #[test]
    fn both_limits_apply_and_zero_means_none() {
        let mut free = ThrottleEntry::default();
        assert!((0..1000).all(|_| free.admit(9000, 1)));
        let mut both = ThrottleEntry {
            packet_ns: 1_000_000,
            byte_ns_fp16: 1 << 16,
            burst_ns: 0,
            ..Default::default()
        };
        // The packet limit (one per ms) binds for small frames...
        assert!(both.admit(100, 0));
        assert!(!both.admit(100, 0));
        assert!(both.admit(100, 1_000_000));
        // ...and the byte limit (1 byte/ns) for a large one: 5 ms of budget.
        assert!(both.admit(5_000_000, 2_000_000));
        assert!(!both.admit(100, 3_000_000));
        assert!(both.admit(100, 7_100_000));
    }
}
