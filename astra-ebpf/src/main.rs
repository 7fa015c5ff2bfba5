//! Astra's dataplane: an XDP program on ingress (blocklist first, then flow accounting) and a TC
//! program on egress that feeds the same flow table, so replies to a host's own flows are seen.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's Atomic* types offer no fetch_add; the
// intrinsic lowers to BPF's native atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod parse;

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use astra_common::{
    ALLOW_NET_CAPACITY, BLOCK_EXACT_CAPACITY, BLOCK_NET_CAPACITY, Counter, DEFAULT_FLOW_CAPACITY,
    FlowKey, FlowValue, IFACE_SLOTS, KNOWN_CAPACITY, ListEntry, Meta, PROTECT_CAPACITY,
    ProtectEntry, QUARANTINE_CAPACITY, THROTTLE_CAPACITY, ThrottleEntry, action, counter_index,
    direction, ip_proto, is_reflection_port, protect, tcp_flags, tier,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, TC_ACT_PIPE, TC_ACT_SHOT, xdp_action},
    cty::c_void,
    helpers::{
        bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_map_lookup_elem,
        generated::{
            bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
        },
    },
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::{TcContext, XdpContext},
};
use parse::{Addr, Ip, L3, Packet, Parsed};

#[map]
static ASTRA_META: Array<Meta> = Array::pinned(1, 0);

#[map]
static ASTRA_FLOWS: HashMap<FlowKey, FlowValue> = HashMap::pinned(DEFAULT_FLOW_CAPACITY, 0);

#[map]
static ASTRA_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(IFACE_SLOTS * action::COUNT, 0);

// Block entries are written from userspace only, so they need no preallocation: an empty
// million-entry map then costs nothing.
#[map]
static ASTRA_BLOCK_V4: HashMap<[u8; 4], ListEntry> =
    HashMap::pinned(BLOCK_EXACT_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ASTRA_BLOCK_V6: HashMap<[u8; 16], ListEntry> =
    HashMap::pinned(BLOCK_EXACT_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ASTRA_BNET_V4: LpmTrie<[u8; 4], ListEntry> = LpmTrie::pinned(BLOCK_NET_CAPACITY, 0);

#[map]
static ASTRA_BNET_V6: LpmTrie<[u8; 16], ListEntry> = LpmTrie::pinned(BLOCK_NET_CAPACITY, 0);

#[map]
static ASTRA_ANET_V4: LpmTrie<[u8; 4], ListEntry> = LpmTrie::pinned(ALLOW_NET_CAPACITY, 0);

#[map]
static ASTRA_ANET_V6: LpmTrie<[u8; 16], ListEntry> = LpmTrie::pinned(ALLOW_NET_CAPACITY, 0);

/// Quarantined hosts, exact addresses: their traffic is dropped in both directions.
#[map]
static ASTRA_QUAR_V4: HashMap<[u8; 4], ListEntry> =
    HashMap::pinned(QUARANTINE_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ASTRA_QUAR_V6: HashMap<[u8; 16], ListEntry> =
    HashMap::pinned(QUARANTINE_CAPACITY, BPF_F_NO_PREALLOC);

/// Rate limits per source address or prefix (a /32 or /128 is an address).
#[map]
static ASTRA_TNET_V4: LpmTrie<[u8; 4], ThrottleEntry> = LpmTrie::pinned(THROTTLE_CAPACITY, 0);

#[map]
static ASTRA_TNET_V6: LpmTrie<[u8; 16], ThrottleEntry> = LpmTrie::pinned(THROTTLE_CAPACITY, 0);

/// Protected targets, by destination address.
#[map]
static ASTRA_PROT_V4: HashMap<[u8; 4], ProtectEntry> =
    HashMap::pinned(PROTECT_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ASTRA_PROT_V6: HashMap<[u8; 16], ProtectEntry> =
    HashMap::pinned(PROTECT_CAPACITY, BPF_F_NO_PREALLOC);

/// Sources that completed handshakes (IPv4-mapped like flow keys), each with its expiry in
/// CLOCK_MONOTONIC nanoseconds (0 = none): a protected target admits their new SYNs first.
#[map]
static ASTRA_KNOWN: HashMap<[u8; 16], u64> = HashMap::pinned(KNOWN_CAPACITY, BPF_F_NO_PREALLOC);

/// One word of [`tier`] bits: which optional tiers hold entries.
#[map]
static ASTRA_TIERS: Array<u32> = Array::pinned(1, 0);

const EEXIST: i32 = 17;

/// Nanoseconds per jiffy, written by the loader before verification (the verifier then knows
/// it as a constant).
#[unsafe(no_mangle)]
static ASTRA_TICK_NS: u64 = 0;

/// CLOCK_MONOTONIC_COARSE minus jiffies × tick, measured by [`astra_clock`] right after load.
#[unsafe(no_mangle)]
static mut ASTRA_CLOCK_OFFSET: u64 = 0;

/// CLOCK_MONOTONIC_COARSE in nanoseconds, from jiffies. The coarse clock is itself the time of
/// the last tick, so this is the same clock; but `bpf_jiffies64` is inlined by the verifier into
/// one load, where `bpf_ktime_get_coarse_ns` is a helper call that cost 4-5 ns per packet.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: reads of globals that only `astra_clock` and the loader write; volatile so the
    // compiler does not fold the load-time values to their zero initializers.
    let (tick, offset) = unsafe {
        (
            core::ptr::read_volatile(&ASTRA_TICK_NS),
            core::ptr::read_volatile(core::ptr::addr_of!(ASTRA_CLOCK_OFFSET)),
        )
    };
    unsafe { bpf_jiffies64() }
        .wrapping_mul(tick)
        .wrapping_add(offset)
}

#[inline(always)]
fn count(ifindex: u32, act: u32, bytes: u64) {
    count_n(ifindex, act, 1, bytes)
}

#[inline(always)]
fn count_n(ifindex: u32, act: u32, packets: u64, bytes: u64) {
    if let Some(c) = ASTRA_COUNTERS.get_ptr_mut(counter_index(ifindex, act)) {
        // Per-CPU slot: no other CPU writes it, so plain adds are exact.
        unsafe {
            (*c).packets += packets;
            (*c).bytes += bytes;
        }
    }
}

/// Adds to a counter in a map value: BPF's atomic add when other CPUs may add to it at the same
/// time (see [`account_flow`]), a plain one otherwise.
#[inline(always)]
fn add<const SHARED: bool, T: Copy + core::ops::Add<Output = T>>(field: *mut T, v: T) {
    // SAFETY: `field` points into a map value that stays valid for the program's run.
    unsafe {
        if SHARED {
            atomic_xadd::<T, T, { AtomicOrdering::Relaxed }>(field, v);
        } else {
            *field = *field + v;
        }
    }
}

/// Counts a list hit. A plain add, not an atomic one: hits are a statistic for `astra list`
/// and the top-blocked metric, and a locked add on the drop path of a flood costs more than
/// the few increments CPUs racing on one entry can lose. Packet counters stay exact.
#[inline(always)]
fn bump_hits(e: *mut ListEntry) {
    unsafe { (*e).hits += 1 };
}

enum ListHit {
    None,
    Blocked(u32),
    Allowed,
}

#[inline(always)]
fn live(e: *const ListEntry, now: &mut u64) -> bool {
    if *now == 0 {
        *now = now_ns();
    }
    // The expiry is enforced here, not only by the agent's sweep, so a block ends on time even
    // while the agent is down.
    !unsafe { (*e).expired(*now) }
}

/// Decides what the block and allow lists say about `src`. The clock is only read once an
/// entry matched, so traffic from unlisted sources pays two lookups and nothing else. An
/// expired exact entry does not hide a live prefix that also covers the source (a longer
/// expired prefix can shadow a shorter live one in the trie until the agent sweeps it). The
/// allowlist is only consulted for block entries flagged as overlapping it.
#[inline(always)]
fn check_lists(ip: &Ip) -> ListHit {
    let mut now = 0u64;
    let hit = if ip.is_v6 {
        let src = ip.src_bytes();
        match ASTRA_BLOCK_V6.get_ptr_mut(src) {
            Some(e) if live(e, &mut now) => Some((e, action::DROP_BLOCKED)),
            _ => ASTRA_BNET_V6
                .get(Key::new(128, src))
                .map(|e| e as *const ListEntry as *mut ListEntry)
                .filter(|e| live(*e, &mut now))
                .map(|e| (e, action::DROP_BLOCKED_NET)),
        }
    } else {
        let src = ip.src_v4();
        match ASTRA_BLOCK_V4.get_ptr_mut(src) {
            Some(e) if live(e, &mut now) => Some((e, action::DROP_BLOCKED)),
            _ => ASTRA_BNET_V4
                .get(Key::new(32, src))
                .map(|e| e as *const ListEntry as *mut ListEntry)
                .filter(|e| live(*e, &mut now))
                .map(|e| (e, action::DROP_BLOCKED_NET)),
        }
    };
    let Some((entry, reason)) = hit else {
        return ListHit::None;
    };
    if unsafe { (*entry).flags } & ListEntry::ALLOW_OVERLAP == 0 {
        bump_hits(entry);
        return ListHit::Blocked(reason);
    }
    let allow = if ip.is_v6 {
        ASTRA_ANET_V6.get(Key::new(128, ip.src_bytes()))
    } else {
        ASTRA_ANET_V4.get(Key::new(32, ip.src_v4()))
    };
    if let Some(a) = allow {
        let a = a as *const ListEntry as *mut ListEntry;
        if live(a, &mut now) {
            bump_hits(a);
            return ListHit::Allowed;
        }
    }
    bump_hits(entry);
    ListHit::Blocked(reason)
}

/// The [`tier`] bits: an array lookup the verifier inlines, no helper call.
#[inline(always)]
fn tiers() -> u32 {
    ASTRA_TIERS.get(0).map_or(0, |t| *t)
}

#[inline(always)]
fn v4(a: &Addr) -> [u8; 4] {
    a[3].to_ne_bytes()
}

/// Whether an allowlist prefix covers `a` at `now`.
#[inline(always)]
fn allowlisted(is_v6: bool, a: &Addr, now: u64) -> bool {
    let e = if is_v6 {
        ASTRA_ANET_V6.get(Key::new(128, parse::bytes(*a)))
    } else {
        ASTRA_ANET_V4.get(Key::new(32, v4(a)))
    };
    e.is_some_and(|e| !e.expired(now))
}

#[inline(always)]
fn quarantine_entry(is_v6: bool, a: &Addr, now: u64) -> Option<*mut ListEntry> {
    let e = if is_v6 {
        ASTRA_QUAR_V6.get_ptr_mut(&parse::bytes(*a))
    } else {
        ASTRA_QUAR_V4.get_ptr_mut(&v4(a))
    };
    // SAFETY: a map value, valid for the program's run.
    e.filter(|e| !unsafe { (**e).expired(now) })
}

/// Whether a packet from `src` to `dst` is from or to a quarantined host. Traffic with an
/// allowlisted address on either end passes: that is how a quarantined host stays reachable
/// from management.
#[inline(always)]
fn quarantined(is_v6: bool, src: &Addr, dst: &Addr, now: u64) -> bool {
    let Some(e) = quarantine_entry(is_v6, src, now).or_else(|| quarantine_entry(is_v6, dst, now))
    else {
        return false;
    };
    if allowlisted(is_v6, src, now) || allowlisted(is_v6, dst, now) {
        return false;
    }
    bump_hits(e);
    true
}

/// Looks `key` up in an LPM trie for writing: aya's `LpmTrie::get` hands out a shared
/// reference, through which the entry may not be changed.
#[inline(always)]
fn lpm_get_mut<K, V>(map: &LpmTrie<K, V>, key: &Key<K>) -> Option<*mut V> {
    // SAFETY: `LpmTrie` is a transparent wrapper of the map definition (an UnsafeCell), so
    // its address is the map pointer the helper takes; the key outlives the call.
    let p = unsafe {
        bpf_map_lookup_elem(
            map as *const LpmTrie<K, V> as *mut c_void,
            key as *const Key<K> as *const c_void,
        )
    };
    (!p.is_null()).then_some(p as *mut V)
}

/// Whether the source is over its throttle entry's rate (see [`ThrottleEntry::admit`]). An
/// allowlisted source is never throttled.
#[inline(always)]
fn throttled(is_v6: bool, src: &Addr, len: u32, now: u64) -> bool {
    let e = if is_v6 {
        lpm_get_mut(&ASTRA_TNET_V6, &Key::new(128, parse::bytes(*src)))
    } else {
        lpm_get_mut(&ASTRA_TNET_V4, &Key::new(32, v4(src)))
    };
    let Some(e) = e else {
        return false;
    };
    // SAFETY: a map value, valid for the program's run; racing CPUs only make the bucket
    // approximate (see ThrottleEntry).
    let e = unsafe { &mut *e };
    if e.list.expired(now) || allowlisted(is_v6, src, now) {
        return false;
    }
    e.list.hits += 1;
    !e.admit(len, now)
}

/// What the quarantine and throttle tiers say about a packet that passed the lists: 0 to go
/// on, or the counter of the drop. `dst` is `None` when the network header could not be read
/// whole (then only the throttle applies).
///
/// Not inlined: as a call, the verifier sees the caller's state after it with the callee's
/// scratch registers cleared and one return value, so the paths through the tiers' lookups
/// merge again instead of multiplying with every branch of the parser that follows. Inlined,
/// the TC program took 977k of the verifier's 1M instructions and a load took seconds.
#[inline(never)]
fn tier_drop(tiers: u32, is_v6: bool, src: &Addr, dst: Option<&Addr>, len: u32) -> u32 {
    let now = now_ns();
    if tiers & tier::QUARANTINE != 0
        && let Some(dst) = dst
        && quarantined(is_v6, src, dst, now)
    {
        return action::DROP_QUARANTINED;
    }
    if tiers & tier::THROTTLE != 0 && throttled(is_v6, src, len, now) {
        return action::DROP_THROTTLED;
    }
    0
}

/// Whether the flow table holds, on `ifindex`, the request that a packet from `l3.src` to
/// `l3.dst` with ports `p` would answer: the target's packet the other way, counted on egress.
#[inline(always)]
fn asked(l3: &L3, p: &Parsed, ifindex: u32) -> bool {
    let key = FlowKey {
        src: parse::bytes(l3.dst),
        dst: parse::bytes(l3.src),
        src_port: p.dst_port,
        dst_port: p.src_port,
        ifindex,
        proto: l3.proto,
        direction: direction::EGRESS,
        _pad: [0; 2],
    };
    // SAFETY: only tested for presence.
    unsafe { ASTRA_FLOWS.get(&key) }.is_some()
}

/// Whether `src` completed a handshake before (see [`ASTRA_KNOWN`]).
#[inline(always)]
fn known(src: &Addr, now: u64) -> bool {
    // SAFETY: a map value, read once.
    unsafe { ASTRA_KNOWN.get(&parse::bytes(*src)) }.is_some_and(|e| *e == 0 || *e > now)
}

/// What target protection says about a packet to a protected destination: 0 to go on, or
/// the counter of the drop. Only a SYN without ACK meets the budget (see [`ProtectEntry`]),
/// and only a SYN-ACK or UDP from a reflection port is checked for a request; every other segment, so every
/// established connection, passes untouched. An allowlisted source is never dropped here.
/// Not inlined, for the reason [`tier_drop`] gives.
#[inline(never)]
fn protect_drop(is_v6: bool, l3: &L3, p: &Parsed, len: u32, ifindex: u32) -> u32 {
    let e = if is_v6 {
        ASTRA_PROT_V6.get_ptr_mut(&parse::bytes(l3.dst))
    } else {
        ASTRA_PROT_V4.get_ptr_mut(&v4(&l3.dst))
    };
    let Some(e) = e else {
        return 0;
    };
    // SAFETY: a map value, valid for the program's run; racing CPUs only make the budget and
    // the counters approximate (see ThrottleEntry).
    let e = unsafe { &mut *e };
    let now = now_ns();
    if e.budget.list.expired(now) {
        return 0;
    }
    let flags = p.tcp_flags as u32;
    let drop = match l3.proto {
        ip_proto::TCP if flags & tcp_flags::SYN == 0 => return 0,
        ip_proto::TCP if flags & tcp_flags::ACK != 0 => {
            if e.flags & protect::REFLECT == 0 || asked(l3, p, ifindex) {
                return 0;
            }
            action::DROP_REFLECTED
        }
        ip_proto::TCP => {
            if e.flags & protect::SYN == 0 || !e.covers_port(p.dst_port) {
                return 0;
            }
            if known(&l3.src, now) {
                e.known_syns += 1;
                return 0;
            }
            // A cookie instead of the budget, where one can be built: IPv4 with no options.
            if e.flags & protect::COOKIE != 0 && l3.l4_off == cookie_tcp_off(is_v6) {
                if allowlisted(is_v6, &l3.src, now) {
                    return 0;
                }
                e.cookies += 1;
                return action::SYN_COOKIE;
            }
            e.budget.list.hits += 1;
            if e.budget.admit(len, now) {
                return 0;
            }
            if allowlisted(is_v6, &l3.src, now) {
                // Not over anything after all.
                e.budget.dropped -= 1;
                e.budget.dropped_bytes -= len as u64;
                return 0;
            }
            return action::DROP_SYN_BUDGET;
        }
        ip_proto::UDP => {
            if e.flags & protect::REFLECT == 0
                || !is_reflection_port(p.src_port)
                || asked(l3, p, ifindex)
            {
                return 0;
            }
            action::DROP_REFLECTED
        }
        _ => return 0,
    };
    // Checked only on the way to a drop: trusted sources pass whatever they send.
    if allowlisted(is_v6, &l3.src, now) {
        return 0;
    }
    e.reflected += 1;
    e.reflected_bytes += len as u64;
    drop
}

/// Where the TCP header starts in a frame [`syn_cookie`] answers: Ethernet, then IPv4 without
/// options or IPv6 without extension headers.
const fn cookie_tcp_off(v6: bool) -> usize {
    if v6 { 14 + 40 } else { 14 + 20 }
}

/// The kernel's SYN cookie for the SYN in the frame, its TCP header `N` bytes long (the
/// helper wants the exact length, which the verifier must see as a constant): the cookie in
/// the low 32 bits, the MSS it encodes in the next 16; negative when none can be made.
#[inline(always)]
fn cookie_for<const V6: bool, const N: usize>(data: usize, end: usize) -> i64 {
    let tcp = data + cookie_tcp_off(V6);
    if tcp + N > end {
        return -1;
    }
    // SAFETY: both headers lie within the frame, checked just above.
    unsafe {
        if V6 {
            bpf_tcp_raw_gen_syncookie_ipv6((data + 14) as *mut _, tcp as *mut _, N as u32)
        } else {
            bpf_tcp_raw_gen_syncookie_ipv4((data + 14) as *mut _, tcp as *mut _, N as u32)
        }
    }
}

/// The one's-complement sum of the 16-bit words at `p`, `words` of them, folded.
///
/// SAFETY: the words lie within the frame.
#[inline(always)]
unsafe fn sum_words(p: usize, words: usize, mut sum: u32) -> u32 {
    let mut i = 0;
    while i < words {
        sum += u32::from(unsafe { ((p + 2 * i) as *const u16).read_unaligned() });
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum & 0xffff) + (sum >> 16)
}

/// Turns the SYN in `ctx` (IPv4 without options or IPv6 without extension headers, see
/// [`cookie_tcp_off`]) into the SYN-ACK that answers it, in place, for XDP_TX: addresses and
/// ports swapped, the kernel's SYN cookie as the sequence number and the MSS it encodes as the
/// one option, the frame cut (or grown) to the answer's length. As the kernel's selftest
/// `xdp_synproxy` does, the window is left at 0 for SYNPROXY to open once it holds the
/// connection. False when no answer could be made (the SYN then takes the normal path).
#[inline(never)]
fn syn_cookie<const V6: bool>(ctx: &XdpContext) -> bool {
    const TCP_LEN: u16 = 24;
    let off = cookie_tcp_off(V6);
    let answer = off + TCP_LEN as usize;
    let (data, end) = (ctx.data(), ctx.data_end());
    let tcp = data + off;
    if tcp + 20 > end {
        return false;
    }
    // SAFETY: within the 20 bytes checked above.
    let doff = unsafe { *((tcp + 12) as *const u8) } >> 4;
    let value = match doff {
        5 => cookie_for::<V6, 20>(data, end),
        6 => cookie_for::<V6, 24>(data, end),
        7 => cookie_for::<V6, 28>(data, end),
        8 => cookie_for::<V6, 32>(data, end),
        9 => cookie_for::<V6, 36>(data, end),
        10 => cookie_for::<V6, 40>(data, end),
        11 => cookie_for::<V6, 44>(data, end),
        12 => cookie_for::<V6, 48>(data, end),
        13 => cookie_for::<V6, 52>(data, end),
        14 => cookie_for::<V6, 56>(data, end),
        15 => cookie_for::<V6, 60>(data, end),
        _ => -1,
    };
    if value < 0 {
        return false;
    }
    let (cookie, mss) = (value as u32, (value >> 32) as u16);
    // The SYN's own options and any payload go; a SYN without options grows by the MSS's 4.
    let delta = answer as i32 - (end - data) as i32;
    // SAFETY: a plain helper call on this program's own context; the packet pointers are
    // read again after it.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return false;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    let (ip, tcp) = (data + 14, data + off);
    if data + answer > end {
        return false;
    }
    // SAFETY: every access lies within the first `answer` bytes, checked just above.
    unsafe {
        let w16 = |at: usize, v: u16| (at as *mut u16).write_unaligned(v.to_be());
        let r32 = |at: usize| u32::from_be((at as *const u32).read_unaligned());
        let w32 = |at: usize, v: u32| (at as *mut u32).write_unaligned(v.to_be());
        let swap = |a: usize, b: usize, n: usize| {
            let mut i = 0;
            while i < n {
                let (x, y) = ((a + i) as *mut u8, (b + i) as *mut u8);
                let t = *x;
                *x = *y;
                *y = t;
                i += 1;
            }
        };
        swap(data, data + 6, 6);
        // A fresh IP header for the answer; the addresses for the pseudo-header.
        let pseudo_addrs = if V6 {
            swap(ip + 8, ip + 24, 16);
            w32(ip, 0x6000_0000);
            w16(ip + 4, TCP_LEN);
            *((ip + 7) as *mut u8) = 64;
            sum_words(ip + 8, 16, 0)
        } else {
            swap(ip + 12, ip + 16, 4);
            *((ip + 1) as *mut u8) = 0;
            w16(ip + 2, 20 + TCP_LEN);
            w16(ip + 4, 0);
            w16(ip + 6, 0x4000);
            *((ip + 8) as *mut u8) = 64;
            w16(ip + 10, 0);
            let ip_sum = !(sum_words(ip, 10, 0) as u16);
            ((ip + 10) as *mut u16).write_unaligned(ip_sum);
            sum_words(ip + 12, 4, 0)
        };
        // TCP: the answer.
        swap(tcp, tcp + 2, 2);
        let seq = r32(tcp + 4);
        w32(tcp + 8, seq.wrapping_add(1));
        w32(tcp + 4, cookie);
        *((tcp + 12) as *mut u8) = ((TCP_LEN / 4) as u8) << 4;
        *((tcp + 13) as *mut u8) = (tcp_flags::SYN | tcp_flags::ACK) as u8;
        w16(tcp + 14, 0);
        w16(tcp + 16, 0);
        w16(tcp + 18, 0);
        w32(tcp + 20, (2 << 24) | (4 << 16) | u32::from(mss));
        // The pseudo-header: addresses, protocol and TCP length, as words in memory order
        // (IPv6's 32-bit length and next header add the same two words).
        let pseudo =
            pseudo_addrs + u32::from(u16::from(ip_proto::TCP).to_be()) + u32::from(TCP_LEN.to_be());
        let tcp_sum = !(sum_words(tcp, usize::from(TCP_LEN) / 2, pseudo) as u16);
        ((tcp + 16) as *mut u16).write_unaligned(tcp_sum);
    }
    true
}

/// Adds a packet to its flow. `SHARED` says whether other CPUs may update the same flow at the
/// same instant, which decides between atomic and plain adds (a locked add cost ~5 ns each on
/// the ingress update path):
/// - XDP ingress runs in the receive queue's NAPI poll, and RSS steers every packet of a flow
///   to one queue, so one CPU owns a flow's ingress entry. Plain adds are exact there; they can
///   lose an increment only when one flow is received on two queues at once (an RSS table being
///   rewritten, or a veth fed by several sender threads).
/// - TC egress runs on whichever CPU sends, and a socket's packets leave from several CPUs
///   (the application's, and softirq for ACKs and retransmits): atomic.
#[inline(always)]
fn account_flow<const SHARED: bool>(key: &FlowKey, p: &Parsed, len: u32, segs: u32, ifindex: u32) {
    let now = now_ns();
    if let Some(v) = ASTRA_FLOWS.get_ptr_mut(key) {
        update_flow::<SHARED>(v, p, len, segs, now);
        return;
    }
    let flags = p.tcp_flags as u32;
    let fresh = FlowValue {
        packets: segs as u64,
        bytes: len as u64,
        first_seen_ns: now,
        last_seen_ns: now,
        syn_count: (flags & tcp_flags::SYN != 0) as u32,
        fin_count: (flags & tcp_flags::FIN != 0) as u32,
        rst_count: (flags & tcp_flags::RST != 0) as u32,
        // The first packet's flags ride in the second byte: a bare SYN there tells userspace
        // which side opened the connection when both directions share a timestamp.
        tcp_flags: flags | (flags << 8),
        min_len: len,
        max_len: len,
        first_payload: p.payload8,
    };
    match ASTRA_FLOWS.insert(key, &fresh, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Another CPU created the flow between our lookup and insert: add to its entry.
        Err(e) if e == -EEXIST => {
            if let Some(v) = ASTRA_FLOWS.get_ptr_mut(key) {
                update_flow::<true>(v, p, len, segs, now);
            }
        }
        Err(_) => count(ifindex, action::FLOW_INSERT_FAIL, len as u64),
    }
}

#[inline(always)]
fn update_flow<const SHARED: bool>(v: *mut FlowValue, p: &Parsed, len: u32, segs: u32, now: u64) {
    unsafe {
        add::<SHARED, u64>(core::ptr::addr_of_mut!((*v).packets), segs as u64);
        add::<SHARED, u64>(core::ptr::addr_of_mut!((*v).bytes), len as u64);
        (*v).last_seen_ns = now;
        if len < (*v).min_len {
            (*v).min_len = len;
        }
        if len > (*v).max_len {
            (*v).max_len = len;
        }
        // Once per flow: the first segment with a payload. A plain store; two CPUs racing
        // here both write a first payload of the same direction.
        if p.payload8 != 0 && (*v).first_payload == 0 {
            (*v).first_payload = p.payload8;
        }
        let flags = p.tcp_flags as u32;
        if flags != 0 {
            if flags & tcp_flags::SYN != 0 {
                add::<SHARED, u32>(core::ptr::addr_of_mut!((*v).syn_count), 1);
            }
            if flags & tcp_flags::FIN != 0 {
                add::<SHARED, u32>(core::ptr::addr_of_mut!((*v).fin_count), 1);
            }
            if flags & tcp_flags::RST != 0 {
                add::<SHARED, u32>(core::ptr::addr_of_mut!((*v).rst_count), 1);
            }
            if (*v).tcp_flags & flags != flags {
                (*v).tcp_flags |= flags;
            }
        }
    }
}

#[xdp]
pub fn astra_xdp(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let len = (end - data) as u32;
    let ifindex = ctx.ingress_ifindex() as u32;
    let ip = match parse::parse_ip(data, end) {
        Packet::Ip(ip) => ip,
        Packet::NonIp => {
            count(ifindex, action::NON_IP, len as u64);
            return xdp_action::XDP_PASS;
        }
        Packet::Error => {
            count(ifindex, action::PARSE_ERROR, len as u64);
            return xdp_action::XDP_PASS;
        }
    };
    // Blocklist first: a blocked source costs no flow-table work at all.
    let mut pass_action = action::PASS;
    match check_lists(&ip) {
        ListHit::None => {}
        ListHit::Allowed => pass_action = action::PASS_ALLOWLISTED,
        ListHit::Blocked(reason) => {
            count(ifindex, reason, len as u64);
            return xdp_action::XDP_DROP;
        }
    }
    let l3 = ip.l3(data, end);
    // Then quarantine and throttle, each skipped while it holds nothing.
    let tiers = tiers();
    if tiers & (tier::QUARANTINE | tier::THROTTLE) != 0 {
        let drop = tier_drop(tiers, ip.is_v6, &ip.src, l3.as_ref().map(|l| &l.dst), len);
        if drop != 0 {
            count(ifindex, drop, len as u64);
            return xdp_action::XDP_DROP;
        }
    }
    let Some(l3) = l3.filter(|l3| l3.l4_ok) else {
        count(ifindex, action::PARSE_ERROR, len as u64);
        return xdp_action::XDP_PASS;
    };
    if l3.non_first_fragment {
        count(ifindex, action::FRAGMENT, len as u64);
        return xdp_action::XDP_PASS;
    }
    match parse::parse_l4(&l3, data, end) {
        Some(p) => {
            // Target protection last, before accounting: what it drops (spoofed SYNs,
            // unsolicited answers) never takes a flow-table entry.
            if tiers & tier::PROTECT != 0 {
                let drop = protect_drop(ip.is_v6, &l3, &p, len, ifindex);
                if drop == action::SYN_COOKIE {
                    let answered = if ip.is_v6 {
                        syn_cookie::<true>(&ctx)
                    } else {
                        syn_cookie::<false>(&ctx)
                    };
                    if answered {
                        count(ifindex, drop, len as u64);
                        return xdp_action::XDP_TX;
                    }
                    // No answer could be made: the SYN goes on up, as without the tier.
                } else if drop != 0 {
                    count(ifindex, drop, len as u64);
                    return xdp_action::XDP_DROP;
                }
            }
            let key = p.flow_key(&l3, ifindex, direction::INGRESS);
            account_flow::<false>(&key, &p, len, 1, ifindex);
            count(ifindex, pass_action, len as u64);
        }
        None => count(ifindex, action::PARSE_ERROR, len as u64),
    }
    xdp_action::XDP_PASS
}

/// Egress counts, and drops only what a quarantined host would receive from this host or send
/// through it; otherwise it returns "continue" so other TC programs still run.
#[classifier]
pub fn astra_tc_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let skb = ctx.skb.skb;
    let ifindex = unsafe { (*skb).ifindex };
    // A locally generated GSO/TSO skb leaves as several packets on the wire; count those.
    let segs = match unsafe { (*skb).gso_segs } {
        0 => 1,
        n => n,
    };
    // Headers of locally generated packets can sit outside the linear area (GSO); pull enough
    // of them in for the parser. Failure only means we parse what is there.
    let want = if len < parse::MAX_HEADER_BYTES {
        len
    } else {
        parse::MAX_HEADER_BYTES
    };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let act = match parse::parse_ip(data, end) {
        Packet::Ip(ip) => match ip.l3(data, end) {
            // Egress throttles nothing: a rate limit is on what a source sends in.
            Some(l3)
                if tiers() & tier::QUARANTINE != 0
                    && tier_drop(tier::QUARANTINE, ip.is_v6, &l3.src, Some(&l3.dst), len) != 0 =>
            {
                count_n(
                    ifindex,
                    action::EGRESS_DROP_QUARANTINED,
                    segs as u64,
                    len as u64,
                );
                return TC_ACT_SHOT as i32;
            }
            Some(l3) if !l3.l4_ok => action::EGRESS_PARSE_ERROR,
            Some(l3) if l3.non_first_fragment => action::EGRESS_FRAGMENT,
            Some(l3) => match parse::parse_l4(&l3, data, end) {
                Some(p) => {
                    let key = p.flow_key(&l3, ifindex, direction::EGRESS);
                    account_flow::<true>(&key, &p, len, segs, ifindex);
                    action::EGRESS_PASS
                }
                None => action::EGRESS_PARSE_ERROR,
            },
            None => action::EGRESS_PARSE_ERROR,
        },
        Packet::NonIp => action::EGRESS_NON_IP,
        Packet::Error => action::EGRESS_PARSE_ERROR,
    };
    count_n(ifindex, act, segs as u64, len as u64);
    TC_ACT_PIPE as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Measures the offset between jiffies and the coarse clock for [`now_ns`]. The loader runs it
/// once with BPF_PROG_TEST_RUN before attaching anything. A tick landing between the two reads
/// (jiffies are advanced first) can only make the offset one tick low: the dataplane's clock
/// then lags, so expiries end at most a tick late and flows never look newer than userspace's
/// clock. Never attached.
#[xdp]
pub fn astra_clock(_ctx: XdpContext) -> u32 {
    let coarse = unsafe { bpf_ktime_get_coarse_ns() };
    let jiffies = unsafe { bpf_jiffies64() };
    let tick = unsafe { core::ptr::read_volatile(&ASTRA_TICK_NS) };
    let offset = coarse.wrapping_sub(jiffies.wrapping_mul(tick));
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(ASTRA_CLOCK_OFFSET), offset) };
    xdp_action::XDP_PASS
}

/// Sets the dataplane's clock to the little-endian u64 at the start of the frame. `astra replay`
/// runs it on an object loaded with `ASTRA_TICK_NS` = 0, where [`now_ns`] is this offset alone:
/// the clock then reads the capture's timestamp, exactly, and stands still between packets
/// instead of racing ahead in real time. Never attached; on a live dataplane nothing runs it.
#[xdp]
pub fn astra_set_clock(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 8 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the 8 bytes were bounds-checked above; the frame need not be aligned.
    let ns = u64::from_le_bytes(unsafe { core::ptr::read_unaligned(data as *const [u8; 8]) });
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(ASTRA_CLOCK_OFFSET), ns) };
    xdp_action::XDP_PASS
}
