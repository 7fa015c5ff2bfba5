//! `reflection`: a DNS reflection flood (answers from port 53 of random spoofed sources that
//! the target never asked) against a server that is itself a DNS client: how much of the flood
//! Astra's protection drops, and whether the server's own queries are still answered, with
//! the protection and without.
use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use astra_common::action;

use super::*;
use crate::{
    dataplane::maps::PinnedMaps,
    error::{Error, Result},
    lab::{Topology, traffic},
};

/// Queries the server sends its resolver during the flood, how often, and how long each waits.
const QUERIES: usize = 100;
const QUERY_GAP: Duration = Duration::from_millis(20);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Answer size of the flood: an amplified DNS answer.
const ANSWER_BYTES: usize = 512;
const FLOOD_LEAD: Duration = Duration::from_millis(500);
const FLOOD_MAX: Duration = Duration::from_secs(10);
const RUNS: usize = 3;

struct Outcome {
    /// The server's queries answered, of those sent.
    answered: f64,
    /// Flood datagrams the kernel dropped, of those sent.
    dropped: f64,
    flood_pps: f64,
}

fn run_once(exe: &Path, protected: bool, run: usize) -> Result<Outcome> {
    let tag = format!("{}-rf{run}{}", std::process::id(), u8::from(protected));
    let mut topo = Topology::build(&tag)?;
    let target = synflood::flood_the_client_side(&topo)?;
    let resolver = SocketAddr::new(topo.clients[0].addr.into(), 53);
    let atk_ifindex = topo.attackers[0].server_ifindex;
    // The resolver: answers every query with its own bytes, in the client namespace.
    let stop = Arc::new(AtomicBool::new(false));
    let sock = topo.clients[0]
        .ns
        .run(move || UdpSocket::bind(resolver))?
        .map_err(|e| Error::io("binding the resolver", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| Error::io("resolver", e))?;
    let resolver_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        })
    };
    // Every run has the agent on; the protection is the difference, so the unprotected run
    // keeps the policy from protecting the target by itself.
    let auto = if protected {
        "policy.protect_targets=true"
    } else {
        "policy.protect_targets=false"
    };
    topo.start_agent(exe, &["--set", auto])?;
    if protected {
        synflood::protect(exe, &topo, &target.to_string(), &["--only", "reflect"])?;
    }
    let before = drops(&topo, atk_ifindex)?;
    let sent = Arc::new(AtomicU64::new(0));
    let flood_start = Instant::now();
    let attacker_ns = &topo.attackers[0].ns;
    let answered = std::thread::scope(|s| -> Result<f64> {
        let flood = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) && flood_start.elapsed() < FLOOD_MAX {
                match traffic::reflection_flood(attacker_ns, target, 10_000, ANSWER_BYTES) {
                    Ok(n) => sent.fetch_add(n, Ordering::Relaxed),
                    Err(_) => break,
                };
            }
        });
        std::thread::sleep(FLOOD_LEAD);
        let answered = topo.server.run(move || -> std::io::Result<usize> {
            let q = UdpSocket::bind("0.0.0.0:0")?;
            q.connect(resolver)?;
            q.set_read_timeout(Some(QUERY_TIMEOUT))?;
            let mut buf = [0u8; 64];
            let mut got = 0;
            for i in 0..QUERIES {
                let query = (i as u32).to_be_bytes();
                q.send(&query)?;
                // Only this query's answer counts; a late one to an earlier query is skipped.
                let deadline = Instant::now() + QUERY_TIMEOUT;
                while Instant::now() < deadline {
                    match q.recv(&mut buf) {
                        Ok(4) if buf[..4] == query => {
                            got += 1;
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                std::thread::sleep(QUERY_GAP);
            }
            Ok(got)
        });
        stop.store(true, Ordering::Relaxed);
        let _ = flood.join();
        Ok(answered?.map_err(|e| Error::io("the server's queries", e))? as f64 / QUERIES as f64)
    })?;
    let flood_pps = sent.load(Ordering::Relaxed) as f64 / flood_start.elapsed().as_secs_f64();
    let _ = resolver_thread.join();
    let dropped = drops(&topo, atk_ifindex)?.saturating_sub(before) as f64
        / sent.load(Ordering::Relaxed).max(1) as f64;
    topo.stop_agent();
    Ok(Outcome {
        answered,
        dropped,
        flood_pps,
    })
}

/// Answers the kernel dropped as unasked on the attacker's link.
fn drops(topo: &Topology, ifindex: u32) -> Result<u64> {
    let maps = PinnedMaps::open(&topo.pin_dir)?
        .ok_or_else(|| Error::Usage("the agent's maps are not pinned".into()))?;
    Ok(maps.iface_counters(ifindex)?[action::DROP_REFLECTED as usize].packets)
}

pub fn reflection(out: &mut Vec<Measurement>) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for run in 0..RUNS {
        without.push(run_once(&exe, false, run)?);
        with.push(run_once(&exe, true, run)?);
    }
    let med = |v: &[Outcome], f: fn(&Outcome) -> f64| median(v.iter().map(f).collect());
    out.push(m(
        "reflection flood (512 B from port 53, random sources), rate sent",
        med(&with, |o| o.flood_pps),
        "packets/s",
        None,
        "-",
    ));
    out.push(m(
        "reflection flood: answers nobody asked for dropped in XDP, astra protect",
        med(&with, |o| o.dropped * 100.0),
        "%",
        Some(("unprotected", med(&without, |o| o.dropped * 100.0))),
        "-",
    ));
    out.push(m(
        "reflection flood: the target's own DNS queries answered, astra protect",
        med(&with, |o| o.answered * 100.0),
        "%",
        Some(("unprotected", med(&without, |o| o.answered * 100.0))),
        "100%",
    ));
    Ok(())
}
