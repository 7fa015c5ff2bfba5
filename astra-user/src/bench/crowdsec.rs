//! `crowdsec`: a LAPI's startup stream of 100k decisions applied to the kernel, by Astra's
//! bouncer and by Debian's `crowdsec-firewall-bouncer` (nftables), both pulling the same
//! stream from the same stand-in LAPI: a small HTTP server that answers
//! `/v1/decisions/stream` with the canned page (what the LAPI's own database takes to build it
//! is not what is measured).
use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{programs::*, *};
use crate::{
    agent::crowdsec::CrowdsecConfig,
    dataplane::{Dataplane, maps::PinnedMaps},
    error::{Error, Result},
    lab::netns::Netns,
    lists::{
        Lists,
        crowdsec::{Decisions, TypeMap},
    },
    store::Store,
};

const DECISIONS: u32 = 100_000;
/// Of those, IPv6 addresses (the rest are IPv4).
const V6_DECISIONS: u32 = 1_000;
const RUNS: usize = 3;
/// How long the firewall bouncer is given; it is measured by what it applied by then.
const BASELINE_LIMIT: Duration = Duration::from_secs(60);

/// The startup page: 100k bans from CAPI, as a LAPI writes them.
fn stream_page() -> Vec<u8> {
    let new: Vec<serde_json::Value> = (0..DECISIONS)
        .map(|i| {
            let value = if i < V6_DECISIONS {
                format!("2001:db8:cafe::{:x}", i + 1)
            } else {
                // 100.64.0.0/10, which no bench host holds.
                std::net::Ipv4Addr::from(0x6440_0000 + i).to_string()
            };
            serde_json::json!({
                "duration": "3h59m59.5s", "id": i + 1, "origin": "CAPI",
                "scenario": "crowdsecurity/ssh-bf", "scope": "Ip", "type": "ban", "value": value,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"new": new, "deleted": null})).expect("JSON")
}

/// Serves `page` for `startup=true` pulls and an empty page for the others, until `stop`.
fn serve(listener: TcpListener, page: Arc<Vec<u8>>, stop: Arc<AtomicBool>) {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let startup = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .is_some_and(|l| l.contains("startup=true"));
        let empty: &[u8] = br#"{"new":null,"deleted":null}"#;
        let body: &[u8] = if startup { &page } else { empty };
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(body);
    }
}

/// A stand-in LAPI on `listener`, stopped on drop.
struct FakeLapi {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeLapi {
    fn start(listener: TcpListener, page: Arc<Vec<u8>>) -> Result<Self> {
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("stand-in LAPI", e))?
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || serve(listener, page, stop))
        };
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FakeLapi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_loopback() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("stand-in LAPI", e))
}

/// One run of Astra's bouncer: pull, parse and apply the startup page into fresh maps and a
/// fresh store; seconds from the request to the last entry in the kernel.
fn astra_once(page: &Arc<Vec<u8>>, run: usize) -> Result<f64> {
    let lapi = FakeLapi::start(bind_loopback()?, page.clone())?;
    let pin = PinGuard(bench_pin(&format!("crowdsec{run}")));
    let state = crate::lab::kit::ScratchDir::state("astra-bench-crowdsec")?;
    let _dp = Dataplane::load(&pin.0, 1024)?;
    let maps =
        PinnedMaps::open(&pin.0)?.ok_or_else(|| Error::Layout("bench maps not pinned".into()))?;
    let mut lists = Lists::from_parts(Store::open(state.path())?, Some(maps));
    let key_file = state.path().join("bouncer.key");
    std::fs::write(&key_file, "bench-key\n").map_err(|e| Error::io(&key_file, e))?;
    let (bouncer, _) = CrowdsecConfig {
        url: format!("http://127.0.0.1:{}", lapi.port),
        key_file: Some(key_file),
        machine_file: None,
        interval: Duration::from_secs(10),
        types: vec![],
    }
    .open()?;
    let bouncer = bouncer.expect("a key file was given");
    let mut decisions = Decisions::new(TypeMap::default(), Default::default());
    let agent = bouncer.http_agent();
    let t0 = Instant::now();
    let stream = bouncer
        .pull(&agent, true)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let report = decisions.apply(&mut lists, &stream, true, crate::clock::now_unix())?;
    let took = t0.elapsed().as_secs_f64();
    let in_kernel = lists.kernel_counts().block;
    if report.applied != DECISIONS as usize || in_kernel != u64::from(DECISIONS) {
        return Err(Error::Usage(format!(
            "Astra applied {} decisions, the kernel holds {in_kernel} blocks, of {DECISIONS}",
            report.applied
        )));
    }
    Ok(took)
}

/// Elements in the firewall bouncer's two nftables sets, in `ns`.
fn nft_elements(ns: &Netns) -> u64 {
    [
        ("ip", "crowdsec", "crowdsec-blacklists"),
        ("ip6", "crowdsec6", "crowdsec6-blacklists"),
    ]
    .iter()
    .map(|(family, table, set)| {
        ns.command("nft")
            .ok()
            .and_then(|mut c| {
                c.args(["-j", "list", "set", family, table, set])
                    .output()
                    .ok()
            })
            .map_or(0, |o| {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                v["nftables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["set"]["elem"].as_array())
                    .map(|e| e.len() as u64)
                    .sum()
            })
    })
    .sum()
}

/// Debian's crowdsec-firewall-bouncer (nftables mode) in a namespace of its own, so its
/// tables never touch the host's: (decisions in its sets, seconds) when it has them all or
/// when [`BASELINE_LIMIT`] passes.
fn firewall_bouncer(page: &Arc<Vec<u8>>) -> Result<(u64, f64)> {
    let ns = Netns::create(&crate::lab::kit::unique("astcsfw"))?;
    let listener = ns.run(bind_loopback)??;
    let lapi = FakeLapi::start(listener, page.clone())?;
    let dir = crate::lab::kit::ScratchDir::state("astra-bench-fwbouncer")?;
    let config = dir.path().join("bouncer.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: nftables\npid_dir: {d}/\nupdate_frequency: 10s\ndaemonize: false\n\
             log_mode: file\nlog_dir: {d}/\nlog_level: info\n\
             api_url: http://127.0.0.1:{port}/\napi_key: bench-key\n\
             disable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\n\
             blacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n\
             \x20 ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\n\
             prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n",
            d = dir.path().display(),
            port = lapi.port
        ),
    )
    .map_err(|e| Error::io(&config, e))?;
    let t0 = Instant::now();
    let mut child = ns
        .lab_command("crowdsec-firewall-bouncer")?
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("crowdsec-firewall-bouncer", e))?;
    let mut got = 0;
    while t0.elapsed() < BASELINE_LIMIT {
        // Listing 100k elements costs the bouncer CPU too: not too often.
        std::thread::sleep(Duration::from_secs(1));
        got = nft_elements(&ns);
        if got >= u64::from(DECISIONS) {
            break;
        }
    }
    let took = t0.elapsed().as_secs_f64();
    crate::lab::netns::kill_group(&mut child);
    Ok((got, took))
}

pub fn crowdsec(out: &mut Vec<Measurement>) -> Result<()> {
    let page = Arc::new(stream_page());
    let mut times = Vec::new();
    for run in 0..RUNS {
        times.push(astra_once(&page, run)?);
    }
    let astra_s = median(times);
    let astra_rate = f64::from(DECISIONS) / astra_s;
    out.push(m(
        "crowdsec: startup stream of 100k decisions, pulled and in the kernel",
        astra_s,
        "s",
        None,
        "< 2 s",
    ));
    let have = Command::new("crowdsec-firewall-bouncer")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let baseline = if have {
        let (n, s) = firewall_bouncer(&page)?;
        let label = if n >= u64::from(DECISIONS) {
            "crowdsec-firewall-bouncer (nftables)".to_owned()
        } else {
            format!(
                "crowdsec-firewall-bouncer (nftables; {n} of 100k in {:.0} s)",
                BASELINE_LIMIT.as_secs_f64()
            )
        };
        Some((label, n as f64 / s))
    } else {
        None
    };
    out.push(m(
        "crowdsec: decisions applied per second (100k-decision startup stream)",
        astra_rate,
        "decisions/s",
        baseline.as_ref().map(|(l, v)| (l.as_str(), *v)),
        "faster than the firewall bouncer",
    ));
    Ok(())
}
