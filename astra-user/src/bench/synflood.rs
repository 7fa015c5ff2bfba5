//! `synflood`: a SYN flood from random sources, as fast as the generator goes (the bench's
//! XDP_TX generator, forging a source per frame), against nginx in a namespace. What a benign client sees: the share of its new connections that get an
//! answer, their p99 time, and whether a session it opened before the flood still works; with
//! Astra's protection, with the kernel's SYN cookies alone, and with neither.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;

use super::{programs::*, *};
use crate::{
    dataplane::maps::PinnedMaps,
    error::{Error, Result},
    lab::{Topology, traffic},
};

/// What stands between the flood and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defence {
    /// `tcp_syncookies=0`: the SYN queue is all there is.
    Nothing,
    /// `tcp_syncookies=1` (Linux's default): cookies once the SYN queue is full.
    Cookies,
    /// The agent with the target protected (`astra protect ADDR:80`), on top of the cookies.
    Astra,
    /// The same with the kernel's cookies off: the budget alone, as on a host that turned
    /// them off.
    AstraOnly,
    /// The kernel's cookies off, strangers' SYNs answered with SYN cookies from XDP
    /// (`astra protect --syn-cookies`, nftables' SYNPROXY completing the handshakes).
    AstraXdpCookies,
}

impl Defence {
    const ALL: [Defence; 5] = [
        Defence::Nothing,
        Defence::Cookies,
        Defence::Astra,
        Defence::AstraOnly,
        Defence::AstraXdpCookies,
    ];

    fn name(self) -> &'static str {
        match self {
            Defence::Nothing => "no defence",
            Defence::Cookies => "kernel SYN cookies alone",
            Defence::Astra => "astra protect (and kernel SYN cookies)",
            Defence::AstraOnly => "astra protect, kernel SYN cookies off",
            Defence::AstraXdpCookies => "astra protect --syn-cookies, kernel SYN cookies off",
        }
    }

    fn astra(self) -> bool {
        matches!(
            self,
            Defence::Astra | Defence::AstraOnly | Defence::AstraXdpCookies
        )
    }
}

/// One run's result.
#[derive(Debug)]
struct Outcome {
    /// New connections answered (an HTTP response within [`CONNECT_TIMEOUT`]) of those tried.
    answered: f64,
    /// p99 of the time to an answer, the unanswered counted at the timeout.
    p99_ms: f64,
    /// The session opened before the flood answered every request during it.
    session_ok: bool,
    /// SYNs a second the generator sent.
    flood_pps: f64,
}

/// New connections the benign client opens during the flood, and how often.
const CONNECTS: usize = 100;
const CONNECT_GAP: Duration = Duration::from_millis(20);
/// What a person waits for a page: two SYN retransmissions (1 s, then 2 s more) fit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the flood runs before the client starts, so the SYN queue is full by then.
const FLOOD_LEAD: Duration = Duration::from_secs(1);
/// A bound on the flood, whatever else happens.
const FLOOD_MAX: Duration = Duration::from_secs(12);
/// Frames per generator call: a fraction of a second, so the flood stops soon when asked.
const GEN_CHUNK: u32 = 100_000;
const RUNS: usize = 3;

/// GET / over `s` (HTTP/1.1, kept alive), reading the whole response.
fn get(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(());
        }
    }
}

/// Connects to `to` and fetches a page, within `timeout` in all.
fn fetch(to: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left))?;
    get(&mut s)
}

/// The p99 of `v` (nearest rank).
fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn run_once(exe: &Path, defence: Defence, run: usize) -> Result<Outcome> {
    let tag = format!("{}-sf{run}{:?}", std::process::id(), defence).to_lowercase();
    let mut topo = Topology::build(&tag)?;
    let target = flood_the_client_side(&topo)?;
    let (client, attacker) = (topo.clients[0].addr, topo.attackers[0].addr);
    let cookies = match defence {
        Defence::Nothing | Defence::AstraOnly | Defence::AstraXdpCookies => 0,
        Defence::Cookies | Defence::Astra => 1,
    };
    topo.server
        .sysctl(&format!("net.ipv4.tcp_syncookies={cookies}"))?;
    // The forged sources are answered toward the attacker, whose kernel drops the SYN-ACKs
    // as the Internet would lose them.
    topo.server.ip(&[
        "route",
        "add",
        "198.18.128.0/17",
        "via",
        &attacker.to_string(),
    ])?;
    let to = SocketAddr::new(target.into(), 80);
    if defence.astra() {
        // With XDP's cookies, conntrack must track the session before the protection starts
        // (see lists::synproxy).
        let track = if defence == Defence::AstraXdpCookies {
            "policy.protect_syn_cookies=true"
        } else {
            "policy.protect_syn_cookies=false"
        };
        topo.start_agent(exe, &["--set", track])?;
    }
    // The client's usual visits before the flood, and a session it keeps open.
    let warm = topo.clients[0]
        .ns
        .run(move || -> std::io::Result<TcpStream> {
            for _ in 0..10 {
                fetch(to, Duration::from_secs(2))?;
            }
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            get(&mut s)?;
            Ok(s)
        })?;
    let mut session = warm.map_err(|e| Error::io("the benign client before the flood", e))?;
    if defence.astra() {
        let cookies: &[&str] = if defence == Defence::AstraXdpCookies {
            &["--syn-cookies"]
        } else {
            &[]
        };
        protect(exe, &topo, &format!("{target}:80"), cookies)?;
        wait_known(&topo, client)?;
    }
    // A veth takes XDP_TX frames only when its peer runs XDP: the agent's program, or else a
    // pass-only one.
    let receiver = match defence {
        Defence::Astra | Defence::AstraOnly | Defence::AstraXdpCookies => None,
        Defence::Nothing | Defence::Cookies => {
            let iface = topo.attackers[0].server_iface.clone();
            Some(topo.server.run(move || -> Result<BenchPrograms> {
                let mut p = BenchPrograms::load()?;
                p.floor()?
                    .attach(&iface, aya::programs::XdpMode::Driver)
                    .map_err(|e| Error::bpf(format!("attaching the pass program to {iface}"), e))?;
                Ok(p)
            })??)
        }
    };
    let mac = live::parse_mac(&topo.server.mac(&topo.attackers[0].server_iface)?)?;
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], mac)
        .ipv4([198, 18, 128, 1], target.octets(), 64)
        .tcp(1024, 80, 1, 64_240)
        .syn()
        .write(&mut frame, &[])
        .map_err(|e| Error::Usage(format!("building the SYN: {e}")))?;
    let mut generator = BenchPrograms::load()?;
    let fd = generator
        .syn_generator()?
        .fd()
        .map_err(|e| Error::bpf("generator fd", e))?
        .try_clone()
        .map_err(|e| Error::bpf("generator fd", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood_start = Instant::now();
    let attacker_ns = &topo.attackers[0].ns;
    let (times, session_ok) = std::thread::scope(|s| -> Result<_> {
        let (stop_flood, sent_by_flood) = (stop.clone(), sent.clone());
        let flood = s.spawn(move || {
            attacker_ns.run(move || -> Result<()> {
                let ifindex = crate::dataplane::ifindex("eth0")?;
                while !stop_flood.load(Ordering::Relaxed) && flood_start.elapsed() < FLOOD_MAX {
                    generate(fd.as_fd(), ifindex, &frame, GEN_CHUNK)?;
                    sent_by_flood.fetch_add(u64::from(GEN_CHUNK), Ordering::Relaxed);
                }
                Ok(())
            })
        });
        std::thread::sleep(FLOOD_LEAD);
        let times = topo.clients[0].ns.run(move || {
            std::thread::scope(|s| {
                let tries: Vec<_> = (0..CONNECTS)
                    .map(|i| {
                        if i > 0 {
                            std::thread::sleep(CONNECT_GAP);
                        }
                        s.spawn(move || {
                            let t = Instant::now();
                            fetch(to, CONNECT_TIMEOUT).ok().map(|()| t.elapsed())
                        })
                    })
                    .collect();
                tries
                    .into_iter()
                    .map(|h| h.join().ok().flatten())
                    .collect::<Vec<_>>()
            })
        });
        // The session opened before the flood, asked again while it is on.
        let session_ok = (0..3).all(|_| get(&mut session).is_ok());
        stop.store(true, Ordering::Relaxed);
        let flooded = flood
            .join()
            .map_err(|_| Error::Usage("the flood thread panicked".into()))?;
        flooded??;
        Ok((times?, session_ok))
    })?;
    drop(generator);
    drop(receiver);
    let flood_pps = sent.load(Ordering::Relaxed) as f64 / flood_start.elapsed().as_secs_f64();
    topo.stop_agent();
    let answered = times.iter().filter(|t| t.is_some()).count() as f64 / times.len() as f64;
    let ms: Vec<f64> = times
        .iter()
        .map(|t| t.unwrap_or(CONNECT_TIMEOUT).as_secs_f64() * 1e3)
        .collect();
    Ok(Outcome {
        answered,
        p99_ms: p99(ms),
        session_ok,
        flood_pps,
    })
}

/// Routes the attacker to the server's client-side address, the one the client uses, and
/// returns it: a flood must hit what the benign client depends on.
pub(super) fn flood_the_client_side(topo: &Topology) -> Result<Ipv4Addr> {
    let target = topo.clients[0].server_addr;
    topo.attackers[0].ns.ip(&[
        "route",
        "add",
        &format!("{target}/32"),
        "via",
        &topo.attackers[0].server_addr.to_string(),
    ])?;
    Ok(target)
}

/// `astra protect TARGET ARGS...` on the topology's agent, as an operator on the server would
/// type it (in its namespace, where SYNPROXY's rules go).
pub(super) fn protect(exe: &Path, topo: &Topology, target: &str, args: &[&str]) -> Result<()> {
    let out = topo
        .server
        .command(exe)?
        .arg("protect")
        .arg(target)
        .args(args)
        .arg("--pin-dir")
        .arg(&topo.pin_dir)
        .arg("--state-dir")
        .arg(&topo.state_dir)
        .output()
        .map_err(|e| Error::io("astra protect", e))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "astra protect: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Waits until the agent has written `client` into the known-source map (it learns the
/// sources that completed handshakes with a protected target at its next pass).
fn wait_known(topo: &Topology, client: Ipv4Addr) -> Result<()> {
    let key = client.to_ipv6_mapped().octets();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(maps) = PinnedMaps::open(&topo.pin_dir)?
            && maps.known.get(&key, 0).is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::Usage(format!(
        "the agent did not learn {client} as a known source within 10 s"
    )))
}

pub fn syn_flood(out: &mut Vec<Measurement>) -> Result<()> {
    if !traffic::have_tool("nginx") {
        return Err(Error::Usage("nginx not installed".into()));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let mut results = Vec::new();
    for defence in Defence::ALL {
        let mut runs = Vec::new();
        for run in 0..RUNS {
            runs.push(run_once(&exe, defence, run)?);
        }
        results.push((defence, runs));
    }
    let of = |d: Defence| &results.iter().find(|(x, _)| *x == d).expect("measured").1;
    let answered = |d: Defence| median(of(d).iter().map(|o| o.answered * 100.0).collect());
    let p99_ms = |d: Defence| median(of(d).iter().map(|o| o.p99_ms).collect());
    let sessions = |d: Defence| {
        of(d).iter().filter(|o| o.session_ok).count() as f64 / of(d).len() as f64 * 100.0
    };
    // The generator shares a core with the receiving side, so the rate it reaches depends on
    // what the receiver does with each SYN.
    for d in Defence::ALL {
        out.push(m(
            &format!("SYN flood from random sources, rate reached: {}", d.name()),
            median(of(d).iter().map(|o| o.flood_pps).collect()),
            "SYN/s",
            None,
            "-",
        ));
    }
    let astra = Defence::Astra;
    for (d, base, target) in [
        (astra, Defence::Cookies, ">= 99%"),
        (astra, Defence::Nothing, "-"),
        (Defence::AstraOnly, Defence::Nothing, "-"),
        (Defence::AstraXdpCookies, Defence::Nothing, ">= 99%"),
    ] {
        out.push(m(
            &format!("SYN flood: benign new connections answered, {}", d.name()),
            answered(d),
            "%",
            Some((base.name(), answered(base))),
            target,
        ));
    }
    for (d, base) in [
        (astra, Defence::Cookies),
        (astra, Defence::Nothing),
        (Defence::AstraOnly, Defence::Nothing),
        (Defence::AstraXdpCookies, Defence::Cookies),
    ] {
        out.push(m(
            &format!("SYN flood: benign connect + page, p99, {}", d.name()),
            p99_ms(d),
            "ms",
            Some((base.name(), p99_ms(base))),
            "-",
        ));
    }
    for d in Defence::ALL {
        out.push(m(
            &format!(
                "SYN flood: session opened before it still served, {}",
                d.name()
            ),
            sessions(d),
            "% of runs",
            None,
            "100%",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_nearest_rank() {
        assert!(p99(vec![]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p99(v), 99.0);
        assert_eq!(p99(vec![5.0, 1.0]), 5.0);
    }
}
