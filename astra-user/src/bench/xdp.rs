//! `xdp`: the per-packet cost of each XDP path against the empty floor, and against
//! xdp-filter dropping the same source.
use std::{net::Ipv4Addr, os::fd::AsFd, process::Stdio};

use astra_common::{FlowKey, ListEntry};
use aya::programs::Xdp;

use super::{programs::*, *};
use crate::{
    dataplane::{Dataplane, maps::PinnedMaps},
    error::{Error, Result},
    lab::{
        netns::{Netns, veth},
        traffic,
    },
};

/// Per-packet cost of Astra's XDP paths and of xdp-filter, against an empty program.
pub fn xdp_costs(out: &mut Vec<Measurement>) -> Result<()> {
    let pin = PinGuard(bench_pin("xdp"));
    let mut dp = Dataplane::load(&pin.0, 1 << 21)?;
    let mut maps = PinnedMaps::open(&pin.0)?.expect("just loaded");
    let blocked = Ipv4Addr::new(198, 18, 9, 9);
    maps.block_v4
        .insert(blocked.octets(), ListEntry::default(), 0)
        .map_err(|e| Error::bpf("block", e))?;
    let established = udp_packet(Ipv4Addr::new(198, 18, 0, 1), 40_000);
    let dropped = udp_packet(blocked, 40_000);
    let mut bench = BenchPrograms::load()?;
    let runs = |prog: &mut Xdp, pkt: &[u8]| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..RUNS {
            let fd = prog.fd().map_err(|e| Error::bpf("program fd", e))?;
            v.push(f64::from(test_run(fd.as_fd(), pkt, REPEAT)?.1));
        }
        Ok(median(v))
    };
    let floor = runs(bench.floor()?, &established)?;
    let drop = runs(dp.xdp()?, &dropped)?;
    let update = runs(dp.xdp()?, &established)?;
    // TCP data: the transport header's options and the first payload are looked at too.
    let tcp_data = tcp_data_packet(Ipv4Addr::new(198, 18, 0, 3), 40_001);
    let update_tcp = runs(dp.xdp()?, &tcp_data)?;
    out.push(m(
        "xdp floor (empty program)",
        floor,
        "ns/packet",
        None,
        "-",
    ));
    out.push(m(
        "xdp drop path (blocked source)",
        drop,
        "ns/packet",
        Some(("xdp floor", floor)),
        "<= floor + 15 ns",
    ));
    out.push(m(
        "xdp update path (established flow)",
        update,
        "ns/packet",
        Some(("xdp floor", floor)),
        "<= floor + 40 ns",
    ));
    out.push(m(
        "xdp update path (established TCP flow, data)",
        update_tcp,
        "ns/packet",
        Some(("xdp floor", floor)),
        "<= floor + 40 ns",
    ));
    tier_costs(out, &pin.0, &mut dp, floor, update, &established, &runs)?;
    protect_costs(out, &mut maps, &mut dp, floor, (update, update_tcp), &runs)?;
    match xdp_filter_drop(&dropped) {
        Ok(x) => out.push(m(
            "xdp drop path vs xdp-filter",
            drop,
            "ns/packet",
            Some(("xdp-filter drop (xdp-tools)", x)),
            "no slower than xdp-filter",
        )),
        Err(e) => eprintln!("xdp-filter comparison skipped: {e}"),
    }
    // Insert path: one fresh flow per run while the table holds `n` flows. Single runs carry
    // the test-run loop's own overhead, so the floor is measured the same way.
    let singles = |prog: &mut Xdp, base: u32, count: u32| -> Result<f64> {
        let mut v = Vec::with_capacity(count as usize);
        let fd = prog.fd().map_err(|e| Error::bpf("program fd", e))?;
        for i in 0..count {
            let pkt = udp_packet(Ipv4Addr::from(0xc612_8000u32 + base + i), 7);
            v.push(f64::from(test_run(fd.as_fd(), &pkt, 1)?.1));
        }
        Ok(median(v))
    };
    let single_floor = singles(bench.floor()?, 0, 5_000)?;
    let now = crate::clock::mono_now_ns();
    let mut base = 0;
    for (label, n) in [("1k", 1_000u32), ("64k", 65_536), ("1M", 1_000_000)] {
        // Reset the table to exactly n flows.
        let mut raw = Vec::new();
        maps.read_flows(&mut raw)?;
        let keys: Vec<FlowKey> = raw.iter().map(|(k, _)| *k).collect();
        maps.delete_flows(&keys)?;
        fill_flows(&mut maps, n, now)?;
        let ins = singles(dp.xdp()?, base, 5_000)?;
        base += 5_000;
        out.push(m(
            &format!("xdp insert path ({label} flows in table)"),
            ins,
            "ns/packet",
            Some(("xdp floor, single run", single_floor)),
            "-",
        ));
    }
    Ok(())
}

/// The quarantine and throttle tiers: what an unlisted source pays once they hold entries, and
/// their own drop and pass paths. Entries are made the way `astra quarantine` and `astra
/// throttle` make them, and removed again, so the rows after these see empty tiers.
fn tier_costs(
    out: &mut Vec<Measurement>,
    pin: &Path,
    dp: &mut Dataplane,
    floor: f64,
    update: f64,
    established: &[u8],
    runs: &dyn Fn(&mut Xdp, &[u8]) -> Result<f64>,
) -> Result<()> {
    use crate::{
        lists::Lists,
        store::{ListKind, Rate, Store},
    };
    let mut lists = Lists::from_parts(Store::open_in_memory(), PinnedMaps::open(pin)?);
    let net = |s: &str| -> Result<ipnet::IpNet> { Ok(crate::addr::parse_net(s)?) };
    let rate = |pps| Rate {
        pps,
        bps: 0,
        burst_ms: Rate::DEFAULT_BURST_MS,
    };
    lists.add_manual(ListKind::Quarantine, net("198.18.7.7")?, None, "bench")?;
    lists.add_manual_rated(
        ListKind::Throttle,
        net("198.18.6.0/24")?,
        None,
        "bench",
        Some(rate(1)),
    )?;
    // 100 Mpps with 100 ms of burst: ten million packets before the rate binds, more than a
    // measurement sends.
    lists.add_manual_rated(
        ListKind::Throttle,
        net("198.18.5.0/24")?,
        None,
        "bench",
        Some(rate(100_000_000)),
    )?;
    let with_tiers = runs(dp.xdp()?, established)?;
    let quarantined = runs(dp.xdp()?, &udp_packet(Ipv4Addr::new(198, 18, 7, 7), 40_000))?;
    let over = runs(dp.xdp()?, &udp_packet(Ipv4Addr::new(198, 18, 6, 1), 40_000))?;
    let under = runs(dp.xdp()?, &udp_packet(Ipv4Addr::new(198, 18, 5, 1), 40_000))?;
    for kind in [ListKind::Quarantine, ListKind::Throttle] {
        let keys: Vec<_> = lists
            .store()
            .list(Some(kind))?
            .into_iter()
            .map(|e| (e.kind, e.net))
            .collect();
        lists.remove_many(&keys)?;
    }
    out.push(m(
        "xdp update path, quarantine and throttle holding entries (source in neither)",
        with_tiers,
        "ns/packet",
        Some(("xdp update path, tiers empty", update)),
        "-",
    ));
    out.push(m(
        "xdp quarantine drop path (quarantined source)",
        quarantined,
        "ns/packet",
        Some(("xdp floor", floor)),
        "-",
    ));
    out.push(m(
        "xdp throttle drop path (source over its rate)",
        over,
        "ns/packet",
        Some(("xdp floor", floor)),
        "-",
    ));
    out.push(m(
        "xdp throttle pass path (source under its rate, flow updated)",
        under,
        "ns/packet",
        Some(("xdp update path, tiers empty", update)),
        "-",
    ));
    Ok(())
}

/// The protect tier: what traffic to an unprotected destination pays once the tier is on, and
/// a protected target's paths: a stranger's new SYN over the budget, an unsolicited DNS
/// answer, and established TCP data (which never meets the budget). The entries are written
/// straight into the maps and removed again.
fn protect_costs(
    out: &mut Vec<Measurement>,
    maps: &mut PinnedMaps,
    dp: &mut Dataplane,
    floor: f64,
    (update, update_tcp): (f64, f64),
    runs: &dyn Fn(&mut Xdp, &[u8]) -> Result<f64>,
) -> Result<()> {
    use astra_common::{ProtectEntry, ThrottleEntry, protect};
    let entry = ProtectEntry {
        // One new SYN a second from strangers, no burst: every SYN after the first drops.
        budget: ThrottleEntry {
            packet_ns: 1_000_000_000,
            ..Default::default()
        },
        flags: protect::ALL,
        ..Default::default()
    };
    let bpf = |what: &'static str| move |e| Error::bpf(what, e);
    let elsewhere = Ipv4Addr::new(198, 18, 0, 99).octets();
    maps.prot_v4
        .insert(elsewhere, entry, 0)
        .map_err(bpf("protect"))?;
    maps.sync_tiers()?;
    let established = udp_packet(Ipv4Addr::new(198, 18, 0, 1), 40_000);
    let unprotected = runs(dp.xdp()?, &established)?;
    maps.prot_v4.remove(&elsewhere).map_err(bpf("unprotect"))?;
    let target = Ipv4Addr::new(198, 18, 0, 2).octets();
    maps.prot_v4
        .insert(target, entry, 0)
        .map_err(bpf("protect"))?;
    maps.sync_tiers()?;
    let mut syn = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 4, 4], target, 64)
        .tcp(40_000, 80, 1, 64240)
        .syn()
        .write(&mut syn, &[])
        .expect("a SYN builds");
    let syn_drop = runs(dp.xdp()?, &syn)?;
    // From port 53 to port 53: an answer, and no request from the target in the table.
    let reflected = runs(dp.xdp()?, &udp_packet(Ipv4Addr::new(198, 18, 4, 5), 53))?;
    let data = runs(
        dp.xdp()?,
        &tcp_data_packet(Ipv4Addr::new(198, 18, 0, 3), 40_001),
    )?;
    // A SYN cookie rewrites the frame into its answer, so a repeated run would time the
    // answer instead: single runs, against the same SYN dropped over the budget the same way.
    let mut linux_syn = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 4, 4], target, 64)
        .tcp(40_000, 80, 1, 64240)
        .syn()
        .options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
            etherparse::TcpOptionElement::Timestamp(1, 0),
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::WindowScale(7),
        ])
        .expect("SYN options fit")
        .write(&mut linux_syn, &[])
        .expect("a SYN builds");
    let singles = |dp: &mut Dataplane| -> Result<f64> {
        let fd = dp.xdp()?.fd().map_err(|e| Error::bpf("program fd", e))?;
        let mut v = Vec::with_capacity(5_000);
        for _ in 0..5_000 {
            v.push(f64::from(test_run(fd.as_fd(), &linux_syn, 1)?.1));
        }
        Ok(median(v))
    };
    let budget_single = singles(dp)?;
    let with_cookies = ProtectEntry {
        flags: protect::SYN | protect::COOKIE,
        ..entry
    };
    maps.prot_v4
        .insert(target, with_cookies, 0)
        .map_err(bpf("protect"))?;
    let cookie_single = singles(dp)?;
    maps.prot_v4.remove(&target).map_err(bpf("unprotect"))?;
    maps.sync_tiers()?;
    out.push(m(
        "xdp update path, protect tier on (destination not protected)",
        unprotected,
        "ns/packet",
        Some(("xdp update path, tiers empty", update)),
        "-",
    ));
    out.push(m(
        "xdp protect drop path (new SYN from a stranger over the budget)",
        syn_drop,
        "ns/packet",
        Some(("xdp floor", floor)),
        "-",
    ));
    out.push(m(
        "xdp protect drop path (DNS answer the target never asked for)",
        reflected,
        "ns/packet",
        Some(("xdp floor", floor)),
        "-",
    ));
    out.push(m(
        "xdp protect SYN cookie path (a stranger's SYN answered, XDP_TX; single runs)",
        cookie_single,
        "ns/packet",
        Some((
            "the same SYN dropped over the budget, single runs",
            budget_single,
        )),
        "-",
    ));
    out.push(m(
        "xdp protect pass path (established TCP data to a protected target)",
        data,
        "ns/packet",
        Some(("xdp update path (established TCP flow, data)", update_tcp)),
        "-",
    ));
    Ok(())
}

/// xdp-filter (xdp-tools) blocking the same source on a veth of a scratch namespace; its
/// program is test-run on the same packet.
pub(super) fn xdp_filter_drop(packet: &[u8]) -> Result<f64> {
    if !traffic::have_tool("xdp-filter") {
        return Err(Error::Usage(
            "xdp-filter not installed (Debian: xdp-tools)".into(),
        ));
    }
    let a = Netns::create(&format!("astra-bench-{}-xa", std::process::id()))?;
    let b = Netns::create(&format!("astra-bench-{}-xb", std::process::id()))?;
    veth(&a, "xa", &b, "xb")?;
    let run = |args: &[&str]| -> Result<()> {
        let st = b
            .command("xdp-filter")?
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::io("xdp-filter", e))?;
        if st.success() {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "xdp-filter {} failed",
                args.join(" ")
            )))
        }
    };
    run(&["load", "xb", "-m", "skb"])?;
    run(&["ip", "198.18.9.9", "-m", "src"])?;
    let prog = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("xdpfilt")))
        .max_by_key(|p| p.id())
        .ok_or_else(|| Error::Usage("xdp-filter's program not found".into()))?;
    let fd = prog.fd().map_err(|e| Error::bpf("xdp-filter program", e))?;
    let mut v = Vec::new();
    for _ in 0..RUNS {
        let (verdict, ns) = test_run(fd.as_fd(), packet, REPEAT)?;
        if verdict != 1 {
            return Err(Error::Usage(format!(
                "xdp-filter returned {verdict}, not XDP_DROP"
            )));
        }
        v.push(f64::from(ns));
    }
    let _ = run(&["unload", "xb"]);
    Ok(median(v))
}
