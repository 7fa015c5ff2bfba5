//! Programs only `cargo xtask bench` loads, kept out of the dataplane's object so that what
//! the agent loads is the product and nothing else. None of them is ever attached by the agent.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_get_prandom_u32, macros::xdp, programs::XdpContext,
};

/// Does nothing but pass: the floor that the bench measures Astra's per-packet cost against,
/// and the pass-only receiver of its floods (a veth only takes XDP frames when its peer runs
/// XDP).
#[xdp]
pub fn astra_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Transmits every frame: with BPF_PROG_TEST_RUN in live-frames mode on one end of a veth pair,
/// the bench's flood generator (xdp-trafficgen's method, which Debian's build cannot load on
/// this kernel).
#[xdp]
pub fn astra_gen(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// RFC 1624's incremental update of a one's-complement checksum for one 16-bit word changing
/// from `old` to `new` (words as they sit in memory: the sum does not depend on byte order).
#[inline(always)]
fn csum_update(sum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Rewrites the 16-bit word at `at` to `new`, updating the checksums at `sums`.
///
/// SAFETY: `at` and every `sums` entry point into the frame, checked by the caller.
#[inline(always)]
unsafe fn set_word(at: *mut u16, new: u16, sums: &[*mut u16]) {
    unsafe {
        let old = at.read_unaligned();
        at.write_unaligned(new);
        for &s in sums {
            s.write_unaligned(csum_update(s.read_unaligned(), old, new));
        }
    }
}

/// Sends the frame back out as a SYN from a new random source address (198.18.128.0/17) and
/// port with a random sequence number, fixing the IPv4 and TCP checksums incrementally.
/// Frames in live mode are recycled with whatever the last run wrote, which an incremental
/// update from the frame's own words handles.
#[xdp]
pub fn astra_gen_syn(ctx: XdpContext) -> u32 {
    const IP: usize = 14;
    const TCP: usize = IP + 20;
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + TCP + 20 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: plain helper calls.
    let (r, r2) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let word = |off: usize| (data + off) as *mut u16;
    let (ip_sum, tcp_sum) = (word(IP + 10), word(TCP + 16));
    let src_hi = u16::from_be_bytes([198, 18]);
    let src_lo = u16::from_be_bytes([128 | (r >> 8) as u8 & 0x7f, (r as u8) | 1]);
    let sport = 1024 + (r >> 16) as u16 % 60_000;
    // SAFETY: every word written lies within the 54 bytes checked above.
    unsafe {
        set_word(word(IP + 12), src_hi.to_be(), &[ip_sum, tcp_sum]);
        set_word(word(IP + 14), src_lo.to_be(), &[ip_sum, tcp_sum]);
        set_word(word(TCP), sport.to_be(), &[tcp_sum]);
        set_word(word(TCP + 4), (r2 >> 16) as u16, &[tcp_sum]);
        set_word(word(TCP + 6), r2 as u16, &[tcp_sum]);
    }
    xdp_action::XDP_TX
}

/// Drops every frame without looking at it: the bench's ceiling for a flood.
#[xdp]
pub fn astra_drop_all(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
