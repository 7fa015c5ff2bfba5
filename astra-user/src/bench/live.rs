//! `live`: a flood through a veth pair, dropped by Astra, iptables, nftables or nothing at
//! all, against a drop-everything ceiling.
use std::{os::fd::AsFd, process::Stdio, time::Instant};

use astra_common::{ListEntry, action};
use etherparse::PacketBuilder;

use super::{programs::*, *};
use crate::{
    dataplane::{Dataplane, maps::PinnedMaps},
    error::{Error, Result},
    lab::{
        netns::{Netns, veth},
        traffic,
    },
};

pub(super) fn sh_ok(ns: &Netns, prog: &str, args: &[&str]) -> Result<()> {
    let st = ns
        .command(prog)?
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::io(prog, e))?;
    if st.success() {
        Ok(())
    } else {
        Err(Error::Usage(format!("{prog} {} failed", args.join(" "))))
    }
}

/// Which filter drops the flood in [`live_drop`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Filter {
    /// A receiver that drops every frame unexamined: what the generator and veth can carry.
    Ceiling,
    None,
    Iptables,
    Nftables,
    Astra,
}

pub(super) const LIVE_PACKETS: u32 = 5_000_000;

/// Packets a command's output reports in its first `counter packets N` / `pkts` figure.
pub(super) fn first_number_after(text: &str, word: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    while let Some(w) = it.next() {
        if w == word {
            return it.next()?.parse().ok();
        }
    }
    None
}

pub(super) fn sh_out(ns: &Netns, prog: &str, args: &[&str]) -> Result<String> {
    let out = ns
        .command(prog)?
        .args(args)
        .output()
        .map_err(|e| Error::io(prog, e))?;
    if !out.status.success() {
        return Err(Error::Usage(format!("{prog} {} failed", args.join(" "))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Floods a veth from one namespace into another where `filter` drops the flood, and returns
/// the packets per second the filter handled (dropped, or for no filter, received). The flood
/// comes from Astra's XDP_TX generator in live-frames mode, and the receiving veth runs an XDP
/// program in native mode, as a NIC driver would: Astra's own, dropping before any socket
/// buffer exists, or for the other filters a pass-only one, after which the kernel builds the
/// socket buffer and the packet meets iptables' raw table or the nftables ingress hook. The
/// generator and the receiver share one core, so the rate is one over their summed cost.
pub(super) fn live_rate(filter: Filter, run: usize) -> Result<f64> {
    let tag = format!("{}-{run}-{filter:?}", std::process::id()).to_lowercase();
    let a = Netns::create(&format!("astra-bench-{tag}-a"))?;
    let b = Netns::create(&format!("astra-bench-{tag}-b"))?;
    veth(&a, "ga", &b, "gb")?;
    a.add_addr("ga", "198.18.200.1/24")?;
    b.add_addr("gb", "198.18.200.2/24")?;
    let mac_b = b.mac("gb")?;
    let pin = PinGuard(bench_pin(&format!("live-{run}")));
    let sh = sh_ok;
    match filter {
        Filter::Ceiling | Filter::None | Filter::Astra => {}
        Filter::Iptables => sh(
            &b,
            "iptables",
            &[
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-s",
                "198.18.200.1",
                "-j",
                "DROP",
            ],
        )?,
        Filter::Nftables => {
            let rules = "table netdev astra_bench {\n chain c {\n  type filter hook ingress device gb priority 0;\n  ip saddr 198.18.200.1 counter drop\n }\n}\n";
            let f = std::env::temp_dir().join(format!("astra-bench-{tag}.nft"));
            std::fs::write(&f, rules).map_err(|e| Error::io(&f, e))?;
            let r = sh(&b, "nft", &["-f", &f.display().to_string()]);
            let _ = std::fs::remove_file(&f);
            r?;
        }
    }
    // The receiver: Astra blocking the source, or a pass-only program (a veth only takes XDP
    // frames when its peer runs XDP).
    let pin_dir = pin.0.clone();
    let astra = filter == Filter::Astra;
    let ceiling = filter == Filter::Ceiling;
    // Held until the end: dropping the dataplane or the programs detaches them.
    let receiver = b.run(
        move || -> Result<(Option<Dataplane>, Option<BenchPrograms>)> {
            if astra {
                let mut d = Dataplane::load(&pin_dir, 4096)?;
                d.attach("gb", crate::dataplane::XdpModeArg::Native)?;
                return Ok((Some(d), None));
            }
            let mut p = BenchPrograms::load()?;
            let (prog, what) = if ceiling {
                (p.drop_all()?, "drop-all")
            } else {
                (p.floor()?, "pass")
            };
            prog.attach("gb", aya::programs::XdpMode::Driver)
                .map_err(|e| Error::bpf(format!("attaching the {what} program to gb"), e))?;
            Ok((None, Some(p)))
        },
    )??;
    if astra {
        let mut maps = PinnedMaps::open(&pin.0)?.expect("just loaded");
        maps.block_v4
            .insert([198, 18, 200, 1], ListEntry::default(), 0)
            .map_err(|e| Error::bpf("block", e))?;
    }
    let rx_before = rx_packets(&b, "gb")?;
    let tx_dropped_before = tx_dropped(&a, "ga")?;

    let mac_b: [u8; 6] = parse_mac(&mac_b)?;
    let mut packet = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], mac_b)
        .ipv4([198, 18, 200, 1], [198, 18, 200, 2], 64)
        .udp(4000, 5000)
        .write(&mut packet, &[0u8; 18])
        .expect("a UDP packet builds");
    let mut generator = BenchPrograms::load()?;
    let fd = generator
        .generator()?
        .fd()
        .map_err(|e| Error::bpf("generator fd", e))?
        .try_clone()
        .map_err(|e| Error::bpf("generator fd", e))?;
    let t0 = Instant::now();
    a.run(move || -> Result<()> {
        let ifindex = crate::dataplane::ifindex("ga")?;
        generate(fd.as_fd(), ifindex, &packet, LIVE_PACKETS)
    })??;
    let secs = t0.elapsed().as_secs_f64();

    let handled = match filter {
        Filter::Astra => {
            let idx = b.run(|| crate::dataplane::ifindex("gb"))??;
            let c = PinnedMaps::open(&pin.0)?
                .expect("pinned")
                .iface_counters(idx)?;
            c[action::DROP_BLOCKED as usize].packets
        }
        Filter::Iptables => {
            let out = sh_out(
                &b,
                "iptables",
                &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
            )?;
            // The rule line starts with its packet count.
            out.lines()
                .find(|l| l.contains("DROP"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| Error::Usage(format!("no iptables counter in:\n{out}")))?
        }
        Filter::Nftables => {
            let out = sh_out(&b, "nft", &["list", "table", "netdev", "astra_bench"])?;
            first_number_after(&out, "packets")
                .ok_or_else(|| Error::Usage(format!("no nft counter in:\n{out}")))?
        }
        Filter::None => rx_packets(&b, "gb")?.saturating_sub(rx_before),
        // XDP drops are not counted as received: what the generator sent, less what the veth
        // could not queue (counted as the sender's transmit drops).
        Filter::Ceiling => u64::from(LIVE_PACKETS)
            .saturating_sub(tx_dropped(&a, "ga")?.saturating_sub(tx_dropped_before)),
    };
    let (dataplane, programs) = receiver;
    if let Some(mut d) = dataplane {
        d.detach_all();
    }
    // Dropping the programs drops their links, which detaches them.
    drop(programs);
    drop(generator);
    if handled < u64::from(LIVE_PACKETS) / 100 {
        return Err(Error::Usage(format!(
            "{filter:?}: only {handled} of {LIVE_PACKETS} packets reached the receiver"
        )));
    }
    Ok(handled as f64 / secs)
}

pub(super) fn link_stat(ns: &Netns, iface: &str, dir: &str, field: &str) -> Result<u64> {
    let out = sh_out(ns, "ip", &["-s", "-j", "link", "show", iface])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Usage(format!("ip -s -j link: {e}")))?;
    v[0]["stats64"][dir][field]
        .as_u64()
        .ok_or_else(|| Error::Usage(format!("no {dir} {field} count in {out}")))
}

pub(super) fn rx_packets(ns: &Netns, iface: &str) -> Result<u64> {
    link_stat(ns, iface, "rx", "packets")
}

pub(super) fn tx_dropped(ns: &Netns, iface: &str) -> Result<u64> {
    link_stat(ns, iface, "tx", "dropped")
}

pub(super) fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(Error::Usage(format!("not a MAC address: {s}")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| Error::Usage(format!("not a MAC address: {s}")))?;
    }
    Ok(mac)
}

/// Packets per second a veth can take from a flood while dropping it: Astra (XDP) against
/// iptables raw DROP, nftables netdev ingress drop and no filter.
pub fn live_drop(out: &mut Vec<Measurement>) -> Result<()> {
    for tool in ["iptables", "nft"] {
        if !traffic::have_tool(tool) {
            return Err(Error::Usage(format!("{tool} not installed")));
        }
    }
    let mut rates = std::collections::HashMap::new();
    for filter in [
        Filter::Ceiling,
        Filter::None,
        Filter::Iptables,
        Filter::Nftables,
        Filter::Astra,
    ] {
        let mut v = Vec::new();
        for run in 0..5 {
            v.push(live_rate(filter, run)?);
        }
        rates.insert(format!("{filter:?}"), median(v));
    }
    let astra = rates["Astra"];
    out.push(m(
        "veth flood dropped by astra (XDP)",
        astra,
        "packets/s",
        Some(("iptables raw DROP", rates["Iptables"])),
        ">= 3x iptables",
    ));
    out.push(m(
        "veth flood dropped by astra (XDP)",
        astra,
        "packets/s",
        Some(("nftables netdev ingress drop", rates["Nftables"])),
        "-",
    ));
    out.push(m(
        "veth flood dropped by astra (XDP)",
        astra,
        "packets/s",
        Some(("no filter (stack discards)", rates["None"])),
        "-",
    ));
    // One core generates and receives, so each rate is one over the generator's and the
    // receiver's summed cost: taking off the ceiling's (generator, veth and a bare drop) leaves
    // what each filter itself costs per packet.
    let ceiling = rates["Ceiling"];
    let cost = |rate: f64| (1e9 / rate - 1e9 / ceiling).max(0.0);
    out.push(m(
        "veth flood ceiling (generator + veth, receiver drops all unexamined)",
        ceiling,
        "packets/s",
        None,
        "-",
    ));
    out.push(m(
        "veth flood, filter's own cost per packet (above the ceiling): astra",
        cost(astra),
        "ns/packet",
        Some(("iptables raw DROP", cost(rates["Iptables"]))),
        "-",
    ));
    out.push(m(
        "veth flood, filter's own cost per packet (above the ceiling): astra",
        cost(astra),
        "ns/packet",
        Some(("nftables netdev ingress drop", cost(rates["Nftables"]))),
        "-",
    ));
    Ok(())
}
