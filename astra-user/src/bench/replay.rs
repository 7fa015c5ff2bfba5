//! `replay`: packets per second through `astra replay`, side by side with what people run on a
//! capture today: tshark's conversation statistics and Argus, a flow tool, on the same file.
use std::{path::Path, process::Command, time::Instant};

use etherparse::PacketBuilder;

use super::*;
use crate::{
    error::{Error, Result},
    replay::capture::write_pcap,
};

const NS: u64 = 1_000_000_000;

/// Sixty seconds of a busy office uplink, deterministic: 40 bulk TCP transfers (1448-byte
/// segments and their ACKs), 8000 short web conversations (handshake, request, a few reply
/// segments, close) and 10000 DNS lookups, interleaved in time. About 200k packets and 18,000
/// conversations: flows churn as on a real link, without one kind dominating.
pub fn office_capture(path: &Path) -> Result<u64> {
    let mut pkts: Vec<(u64, Vec<u8>)> = Vec::with_capacity(210_000);
    let t0 = 1_700_000_000 * NS;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let server = |i: u64| [203, 0, 113, (i % 200) as u8 + 1];
    let client = |i: u64| [198, 18, (i / 250 % 250) as u8, (i % 250) as u8 + 1];
    let tcp = |src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, f: u8, len: usize| {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, 1, 64240);
        let b = match f {
            0 => b.syn(),
            1 => b.syn().ack(1),
            2 => b.ack(1),
            3 => b.psh().ack(1),
            _ => b.fin().ack(1),
        };
        let payload = vec![0u8; len];
        let mut out = Vec::with_capacity(b.size(len));
        b.write(&mut out, &payload).expect("frame builds");
        out
    };
    for i in 0..40u64 {
        let (c, s, sp) = (client(i), server(i), 40_000 + i as u16);
        let mut t = t0 + next(5 * NS);
        pkts.push((t, tcp(c, s, sp, 443, 0, 0)));
        pkts.push((t + 200_000, tcp(s, c, 443, sp, 1, 0)));
        for k in 0..1250u64 {
            t += 40_000_000 + next(4_000_000);
            pkts.push((t, tcp(s, c, 443, sp, 3, 1448)));
            if k % 2 == 1 {
                pkts.push((t + 50_000, tcp(c, s, sp, 443, 2, 0)));
            }
        }
        pkts.push((t + 100_000, tcp(c, s, sp, 443, 4, 0)));
    }
    for i in 0..8000u64 {
        let (c, s, sp) = (client(i + 40), server(i), 20_000 + (i % 40_000) as u16);
        let t = t0 + next(60 * NS);
        let step = 300_000 + next(700_000);
        let at = |k: u64| t + k * step;
        pkts.push((at(0), tcp(c, s, sp, 80, 0, 0)));
        pkts.push((at(1), tcp(s, c, 80, sp, 1, 0)));
        pkts.push((at(2), tcp(c, s, sp, 80, 3, 300)));
        for k in 0..4 {
            pkts.push((at(3 + k), tcp(s, c, 80, sp, 3, 1448)));
        }
        pkts.push((at(7), tcp(c, s, sp, 80, 2, 0)));
        pkts.push((at(8), tcp(c, s, sp, 80, 4, 0)));
        pkts.push((at(9), tcp(s, c, 80, sp, 4, 0)));
    }
    for i in 0..10_000u64 {
        let (c, sp) = (client(i + 8040), 30_000 + (i % 30_000) as u16);
        let resolver = [203, 0, 113, 250];
        let t = t0 + next(60 * NS);
        for (src, dst, s, d, len, dt) in [
            (c, resolver, sp, 53, 40, 0),
            (resolver, c, 53, sp, 120, 2_000_000),
        ] {
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(src, dst, 64)
                .udp(s, d);
            let mut out = Vec::with_capacity(b.size(len));
            b.write(&mut out, &vec![0u8; len]).expect("frame builds");
            pkts.push((t + dt, out));
        }
    }
    pkts.sort_by_key(|p| p.0);
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    write_pcap(
        std::io::BufWriter::new(f),
        1,
        pkts.iter().map(|(t, d)| (*t, d.as_slice(), d.len() as u32)),
    )
    .map_err(|e| Error::io(path, e))?;
    Ok(pkts.len() as u64)
}

/// Median wall time of `cmd` over the runs, in seconds; an error if it fails.
fn time_of(what: &str, mut cmd: impl FnMut() -> Command) -> Result<f64> {
    let mut secs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = cmd()
            .output()
            .map_err(|e| Error::Usage(format!("cannot run {what}: {e}")))?;
        if !out.status.success() {
            return Err(Error::Usage(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            )));
        }
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(median(secs))
}

/// Packets per second replayed by `astra replay` (the real XDP program and the detection
/// engine on the capture's clock), by `tshark -r -q -z conv,tcp` and by `argus -r`, on one
/// capture, each as a process of its own from start to exit.
pub fn replay_rate(out: &mut Vec<Measurement>) -> Result<()> {
    let scratch = crate::lab::kit::ScratchDir::dir_at(
        std::env::temp_dir().join(format!("astra-bench-replay-{}", std::process::id())),
        0o700,
    )?;
    let dir = scratch.path();
    let pcap = dir.join("office.pcap");
    let packets = office_capture(&pcap)? as f64;
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let astra = time_of("astra replay", || {
        let mut c = Command::new(&exe);
        c.arg("replay").arg(&pcap).arg("--json");
        c
    })?;
    // The same with a single poll at the end: what the packets cost on their way through
    // BPF_PROG_TEST_RUN, without the detection passes a poll interval of capture time brings.
    let packets_only = time_of("astra replay --poll-interval 1h", || {
        let mut c = Command::new(&exe);
        c.arg("replay")
            .arg(&pcap)
            .args(["--json", "--poll-interval", "100000h"]);
        c
    })?;
    let tshark = time_of("tshark", || {
        let mut c = Command::new("tshark");
        c.args(["-n", "-q", "-z", "conv,tcp", "-r"]).arg(&pcap);
        c
    })?;
    let argus_out = dir.join("argus.out");
    let argus = time_of("argus", || {
        let _ = std::fs::remove_file(&argus_out);
        let mut c = Command::new("argus");
        c.arg("-r").arg(&pcap).arg("-w").arg(&argus_out);
        c
    })?;
    let rate = packets / astra;
    let target = ">= 500k packets/s, faster than both";
    out.push(m(
        "replay: astra replay packets/s (vs tshark -z conv,tcp)",
        rate,
        "packets/s",
        Some(("tshark -r -q -z conv,tcp", packets / tshark)),
        target,
    ));
    out.push(m(
        "replay: astra replay packets/s (vs argus -r)",
        rate,
        "packets/s",
        Some(("argus -r -w", packets / argus)),
        target,
    ));
    out.push(m(
        "replay: packets only, one poll at the end (vs argus -r)",
        packets / packets_only,
        "packets/s",
        Some(("argus -r -w", packets / argus)),
        "-",
    ));
    Ok(())
}
