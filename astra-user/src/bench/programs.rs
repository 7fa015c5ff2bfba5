//! The bench's own eBPF programs, and running programs with BPF_PROG_TEST_RUN: one packet
//! repeated, or live frames sent by the kernel.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd},
    path::PathBuf,
};

use astra_common::{FlowKey, FlowValue};
use aya::programs::Xdp;
use etherparse::PacketBuilder;

use crate::{
    dataplane::maps::PinnedMaps,
    error::{Error, Result},
};

pub(super) const BPF_PROG_TEST_RUN: libc::c_long = 10;

#[repr(C)]
#[derive(Default)]
pub(super) struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// BPF_PROG_TEST_RUN on any program fd (ours or another tool's); returns (verdict, ns per run).
pub fn test_run(prog: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    prog_test_run(&mut attr, "BPF_PROG_TEST_RUN")?;
    Ok((attr.retval, attr.duration))
}

/// The BPF_PROG_TEST_RUN syscall; every buffer `attr` points to must outlive the call.
pub(super) fn prog_test_run(attr: &mut TestRunAttr, what: &str) -> Result<()> {
    // SAFETY: attr is a valid test-run attribute and the callers keep its buffers alive.
    unsafe { crate::dataplane::maps::sys_bpf(BPF_PROG_TEST_RUN, attr) }
        .map(drop)
        .map_err(|e| Error::bpf(what.to_owned(), e))
}

/// astra-ebpf's `astra-bench` object: the programs only the bench loads, so the dataplane's
/// own object carries none of them.
pub(super) static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/astra-bench"));

/// The bench's own XDP programs (an empty pass, a drop-all and the XDP_TX flood generator),
/// each loaded on first use. They share no maps with the dataplane.
pub struct BenchPrograms(aya::Ebpf);

impl BenchPrograms {
    pub fn load() -> Result<Self> {
        if BENCH_OBJECT.is_empty() {
            return Err(Error::NoEbpfObject);
        }
        aya::Ebpf::load(BENCH_OBJECT)
            .map(BenchPrograms)
            .map_err(|e| Error::bpf("loading the bench programs", e))
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        crate::dataplane::xdp_loaded(&mut self.0, name)
    }

    /// The do-nothing program the per-packet costs are measured against.
    pub fn floor(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::FLOOR_PROGRAM)
    }

    /// The XDP_TX program floods are generated with.
    pub fn generator(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::GEN_PROGRAM)
    }

    /// The XDP_TX program that forges a new source for every SYN it sends.
    pub fn syn_generator(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::GEN_SYN_PROGRAM)
    }

    /// The drop-everything program that measures a flood's ceiling.
    pub fn drop_all(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::DROP_ALL_PROGRAM)
    }
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it for context input.
#[repr(C)]
#[derive(Default)]
pub(super) struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

pub(super) const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Transmits `packet` `count` times out of interface `ifindex` (of the calling thread's
/// namespace) by running the XDP_TX generator in live-frames mode: the kernel builds and sends
/// the frames itself, several million a second on one core, so the receiver is what limits.
pub(super) fn generate(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    packet: &[u8],
    count: u32,
) -> Result<()> {
    let mut ctx = XdpMd {
        data_end: packet.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat: count,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &mut ctx as *mut XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: 256,
        ..Default::default()
    };
    prog_test_run(&mut attr, "BPF_PROG_TEST_RUN (live frames)")
}

pub(super) fn udp_packet(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), [198, 18, 0, 2], 64)
        .udp(sport, 53)
        .write(&mut v, &[0u8; 18])
        .expect("a UDP packet builds");
    v
}

/// A TCP segment with 32 bytes of payload (an established flow's data), from `src`.
pub(super) fn tcp_data_packet(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), [198, 18, 0, 2], 64)
        .tcp(sport, 2222, 1, 64240)
        .psh()
        .ack(1)
        .write(&mut v, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        .expect("a TCP packet builds");
    v
}

pub(super) fn mapped(a: Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

/// Fills the flow table with `n` synthetic live flows through batched map updates.
pub(super) fn fill_flows(maps: &mut PinnedMaps, n: u32, now_ns: u64) -> Result<()> {
    let chunk = 65_536u32;
    let mut start = 0u32;
    while start < n {
        let end = (start + chunk).min(n);
        let keys: Vec<FlowKey> = (start..end)
            .map(|i| FlowKey {
                src: mapped(Ipv4Addr::from(0x0a00_0000 | i)),
                dst: mapped(Ipv4Addr::new(198, 18, 0, 2)),
                src_port: 1024 + (i % 60_000) as u16,
                dst_port: 443,
                ifindex: 1,
                proto: 6,
                direction: 0,
                _pad: [0; 2],
            })
            .collect();
        let values: Vec<FlowValue> = (start..end)
            .map(|i| FlowValue {
                packets: 10 + u64::from(i % 7),
                bytes: 4_000,
                first_seen_ns: now_ns.saturating_sub(5_000_000_000),
                last_seen_ns: now_ns,
                syn_count: 1,
                fin_count: 0,
                rst_count: 0,
                tcp_flags: 0x18,
                min_len: 60,
                max_len: 1500,
                first_payload: 0,
            })
            .collect();
        maps.insert_flows(&keys, &values)?;
        start = end;
    }
    Ok(())
}

pub(super) fn bench_pin(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/bpf/astra-bench-{}-{tag}",
        std::process::id()
    ))
}

pub(super) struct PinGuard(pub(super) PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
