//! `ui`: the web UI in Chromium at real sizes. The same page is measured on an agent with
//! 100k blocklist entries and 1M flows and on an empty one, each with a little live traffic:
//! the overview's chart drawn from navigation, a live update's work in the page (a sample's
//! arrival to the frame that drew it), and the first page of the blocklist and of the flows.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::*;
use crate::{
    dataplane::maps::PinnedMaps,
    error::{Error, Result},
    lab::{Layout, Topology, browser, netns},
    store::{EntrySource, ListKind, Store, StoredEntry},
};

const ENTRIES: u32 = 100_000;
const FLOWS: u32 = 1_000_000;

struct Seen {
    chart_ms: f64,
    update_ms: f64,
    list_ms: f64,
    flows_ms: f64,
}

pub fn ui(out: &mut Vec<Measurement>) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let empty = measure(&exe, 0, 0)?;
    let full = measure(&exe, ENTRIES, FLOWS)?;
    let sizes = "100k blocklist entries, 1M flows";
    for (what, f, target) in [
        (
            "UI: overview's traffic chart drawn, from navigation",
            (|s: &Seen| s.chart_ms) as fn(&Seen) -> f64,
            "< 1000 ms",
        ),
        (
            "UI: a live update's work in the page, sample in to frame drawn (median)",
            |s| s.update_ms,
            "< 100 ms",
        ),
        (
            "UI: the blocklist's first page, from navigation",
            |s| s.list_ms,
            "< 1000 ms",
        ),
        (
            "UI: the flows view's first page (top 100), from navigation",
            |s| s.flows_ms,
            "-",
        ),
    ] {
        out.push(m(
            &format!("{what} ({sizes})"),
            f(&full),
            "ms",
            Some(("the same on an empty agent", f(&empty))),
            target,
        ));
    }
    Ok(())
}

fn measure(exe: &Path, entries: u32, flows: u32) -> Result<Seen> {
    let tag = format!("{}-ui{entries}", std::process::id());
    let mut topo = Topology::build_with(&tag, 1, 0, Layout::Host)?;
    topo.api = true;
    if entries > 0 {
        seed_blocklist(&topo.state_dir, entries)?;
    }
    let capacity = (flows + flows / 4).max(astra_common::DEFAULT_FLOW_CAPACITY);
    let capacity = capacity.to_string();
    // The seeded flows must outlive the measurement.
    topo.start_agent(
        exe,
        &["--flow-capacity", &capacity, "--idle-timeout", "30m"],
    )?;
    let client = &topo.clients[0];
    if flows > 0 {
        seed_flows(&topo.pin_dir, client.server_ifindex, flows)?;
    }
    let port = topo
        .api_port()
        .ok_or_else(|| Error::Usage("the lab agent serves no API".into()))?;
    let token = crate::agent::token::read(&topo.state_dir)?;
    // A little live traffic, so the chart has a line to draw and each poll a sample.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, path) = (stop.clone(), client.ns.path());
        let to = SocketAddr::new(IpAddr::V4(client.server_addr), 9);
        std::thread::spawn(move || {
            netns::in_ns(&path, move || -> std::io::Result<()> {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                while !stop.load(Ordering::Relaxed) {
                    s.send_to(&[0u8; 100], to)?;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })
        })
    };
    let run = |name: &str, arg: &str| {
        let s = browser::Scenario {
            name,
            token: token.as_deref(),
            arg,
            ..Default::default()
        };
        browser::run(&topo.server.path(), port, &s, Duration::from_secs(180))
            .map_err(|e| Error::Usage(e.to_string()))
    };
    // The first poll of a million flows takes a while: let the agent reach its stride.
    std::thread::sleep(Duration::from_secs(if flows > 0 { 5 } else { 1 }));
    let result = (|| {
        let ov = run("overview", &client.server_iface)?;
        let lists = run("lists", "")?;
        let fl = run("flows", "")?;
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        let updates = ov["update_ms"]
            .as_array()
            .map(|a| a.iter().map(num).collect())
            .unwrap_or_default();
        Ok(Seen {
            chart_ms: num(&ov["chart_ms"]),
            update_ms: median(updates),
            list_ms: num(&lists["first_page_ms"]),
            flows_ms: num(&fl["first_page_ms"]),
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    result
}

/// `n` blocklist entries in the store before the agent starts, which puts them in the kernel
/// as it would after a restart: two feeds' worth, each with an hour to run.
fn seed_blocklist(state_dir: &Path, n: u32) -> Result<()> {
    let now = crate::clock::now_unix();
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let entries: Vec<StoredEntry> = (0..n)
        .map(|i| StoredEntry {
            kind: ListKind::Block,
            net: ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::from(base + i))),
            expires_at: Some(now + 3600),
            reason: "bench feed".into(),
            source: EntrySource::Feed,
            created_at: now,
            tag: if i % 2 == 0 { "feed-a" } else { "feed-b" }.into(),
            rate: None,
            protect: None,
        })
        .collect();
    Store::open(state_dir)?.upsert_many(&entries)?;
    Ok(())
}

/// `n` UDP flows from as many sources in the running agent's flow table, as a botnet leaves
/// them.
fn seed_flows(pin_dir: &Path, ifindex: u32, n: u32) -> Result<()> {
    use astra_common::{FlowKey, FlowValue};
    let mut maps = PinnedMaps::open(pin_dir)?
        .ok_or_else(|| Error::Usage(format!("no maps pinned in {}", pin_dir.display())))?;
    let now = crate::clock::mono_now_ns();
    let value = FlowValue {
        packets: 3,
        bytes: 240,
        first_seen_ns: now,
        last_seen_ns: now,
        min_len: 80,
        max_len: 80,
        ..Default::default()
    };
    const CHUNK: u32 = 65_536;
    for from in (0..n).step_by(CHUNK as usize) {
        let keys: Vec<FlowKey> = (from..(from + CHUNK).min(n))
            .map(|i| FlowKey {
                src: Ipv4Addr::from(0x0a00_0000 | i).to_ipv6_mapped().octets(),
                dst: Ipv4Addr::new(198, 18, 1, 1).to_ipv6_mapped().octets(),
                src_port: 1024 + (i % 60_000) as u16,
                dst_port: 53,
                ifindex,
                proto: 17,
                ..Default::default()
            })
            .collect();
        maps.insert_flows(&keys, &vec![value; keys.len()])?;
    }
    Ok(())
}
