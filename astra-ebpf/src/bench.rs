//! Programs only `cargo xtask bench` loads, kept out of the dataplane's object so that what
//! the agent loads is the product and nothing else. None of them is ever attached by the agent.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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
