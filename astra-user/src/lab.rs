//! `astra lab`: a self-contained demonstration on network namespaces. A server namespace runs
//! the agent on its two interfaces; a client sends benign request/response traffic and an
//! attacker scans and floods. Everything it creates (namespaces, veths, pins, state) is removed
//! on exit, Ctrl-C included.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    blocklist::Lists,
    error::{Error, Result},
    maps::PinnedMaps,
    metrics::action_labels,
    netns::{Netns, veth},
    store::{EntrySource, ListKind},
};

const SERVER_PORT: u16 = 8080;

#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Length of each traffic phase.
    pub phase: Duration,
}

struct Topology {
    server: Netns,
    client: Netns,
    attacker: Netns,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    agent: Option<Child>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // SIGTERM lets the agent detach cleanly before its namespace goes away.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        // The namespaces are removed by their own guards right after this.
    }
}

fn step(stop: &AtomicBool, msg: &str) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Usage("interrupted".into()));
    }
    println!("\n== {msg}");
    Ok(())
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn build(tag: &str) -> Result<Topology> {
    let server = Netns::create(&format!("astra-lab-{tag}-srv"))?;
    let client = Netns::create(&format!("astra-lab-{tag}-cli"))?;
    let attacker = Netns::create(&format!("astra-lab-{tag}-atk"))?;
    veth(&server, "s-cli", &client, "eth0")?;
    veth(&server, "s-atk", &attacker, "eth0")?;
    server.add_addr("s-cli", "198.18.1.1/24")?;
    client.add_addr("eth0", "198.18.1.2/24")?;
    server.add_addr("s-atk", "198.18.2.1/24")?;
    attacker.add_addr("eth0", "198.18.2.2/24")?;
    client.ip(&["route", "add", "default", "via", "198.18.1.1"])?;
    attacker.ip(&["route", "add", "default", "via", "198.18.2.1"])?;
    Ok(Topology {
        server,
        client,
        attacker,
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/astra-lab-{tag}")),
        state_dir: std::env::temp_dir().join(format!("astra-lab-{tag}")),
        agent: None,
    })
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("free port", e))
}

/// A request/response service in the server namespace: reads a request, answers 1 KiB.
fn serve(server: &Netns, stop: Arc<AtomicBool>) -> Result<()> {
    let l = server.run(|| TcpListener::bind(("0.0.0.0", SERVER_PORT)))?;
    let l = l.map_err(|e| Error::io("lab server socket", e))?;
    l.set_nonblocking(true)
        .map_err(|e| Error::io("lab server socket", e))?;
    std::thread::spawn(move || {
        let body = [b'x'; 1024];
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 512];
                    if s.read(&mut buf).is_ok_and(|n| n > 0) {
                        let _ = s.write_all(&body);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(())
}

fn benign_client(
    client: &Netns,
    stop: Arc<AtomicBool>,
    dur: Duration,
) -> Result<std::thread::JoinHandle<usize>> {
    let path = client.path();
    Ok(std::thread::spawn(move || {
        crate::netns::in_ns(&path, move || {
            let end = Instant::now() + dur;
            let mut ok = 0;
            let to: SocketAddr = (
                "198.18.1.1".parse::<std::net::IpAddr>().expect("addr"),
                SERVER_PORT,
            )
                .into();
            while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 2048];
                    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                        && s.read(&mut buf).is_ok_and(|n| n > 0)
                    {
                        ok += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        })
        .unwrap_or(0)
    }))
}

/// A connect scan of the first `ports` ports followed by a bounded UDP flood.
fn attack(attacker: &Netns, ports: u16, flood: usize) -> Result<(usize, usize)> {
    attacker.run(move || {
        let mut open = 0;
        for p in 1..=ports {
            let to: SocketAddr =
                ("198.18.2.1".parse::<std::net::IpAddr>().expect("addr"), p).into();
            if TcpStream::connect_timeout(&to, Duration::from_millis(20)).is_ok() {
                open += 1;
            }
        }
        let mut sent = 0;
        if let Ok(sock) = UdpSocket::bind("198.18.2.2:0") {
            for i in 0..flood {
                let port = 10_000 + (i % 1000) as u16;
                if sock.send_to(&[0u8; 64], ("198.18.2.1", port)).is_ok() {
                    sent += 1;
                }
            }
        }
        (open, sent)
    })
}

fn counters_table(pin: &std::path::Path, ifaces: &[(&str, u32)]) -> Result<()> {
    let Some(maps) = PinnedMaps::open(pin)? else {
        return Ok(());
    };
    for (name, idx) in ifaces {
        let c = maps.iface_counters(*idx)?;
        let mut parts = Vec::new();
        for (a, v) in c.iter().enumerate() {
            if v.packets > 0
                && let Some((dir, label)) = action_labels(a as u32)
            {
                parts.push(format!("{dir}/{label}={}", v.packets));
            }
        }
        println!("  {name:6} {}", parts.join("  "));
    }
    Ok(())
}

pub fn run(opts: LabOptions) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            stop.store(true, Ordering::SeqCst);
            eprintln!("\ninterrupted: cleaning up");
        })
    };
    let _ = watcher;
    let tag = format!("{}", std::process::id());
    let mut topo = build(&tag)?;
    let result = run_in(&mut topo, &opts, &stop);
    stop.store(true, Ordering::SeqCst);
    drop(topo);
    println!("\nlab removed (namespaces, veths, pins and state)");
    result
}

fn run_in(topo: &mut Topology, opts: &LabOptions, stop: &Arc<AtomicBool>) -> Result<()> {
    step(
        stop,
        "topology: client 198.18.1.2 and attacker 198.18.2.2, server 198.18.1.1/198.18.2.1 with Astra on s-cli and s-atk",
    )?;
    let port = free_port()?;
    std::fs::create_dir_all(&topo.state_dir).map_err(|e| Error::io(&topo.state_dir, e))?;
    let log = std::fs::File::create(topo.state_dir.join("agent.log"))
        .map_err(|e| Error::io(&topo.state_dir, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let child = topo
        .server
        .command(exe)?
        .args([
            "run",
            "--iface",
            "s-cli",
            "--iface",
            "s-atk",
            "--poll-interval",
            "500ms",
        ])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--pin-dir")
        .arg(&topo.pin_dir)
        .arg("--state-dir")
        .arg(&topo.state_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io("starting the agent", e))?;
    topo.agent = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while PinnedMaps::open(&topo.pin_dir).ok().flatten().is_none()
        || !topo.pin_dir.join("links/xdp-s-atk").exists()
    {
        if Instant::now() > deadline {
            return Err(Error::Usage(format!(
                "the agent did not start; see {}",
                topo.state_dir.join("agent.log").display()
            )));
        }
        sleep_unless_stopped(stop, Duration::from_millis(100));
    }
    println!("agent attached (metrics on 127.0.0.1:{port} inside the server namespace)");
    let ifaces = [
        (
            "s-cli",
            topo.server.run(|| crate::loader::ifindex("s-cli"))??,
        ),
        (
            "s-atk",
            topo.server.run(|| crate::loader::ifindex("s-atk"))??,
        ),
    ];
    serve(&topo.server, stop.clone())?;

    step(stop, "benign traffic: the client makes web-like requests")?;
    let client = benign_client(&topo.client, stop.clone(), opts.phase * 3)?;
    sleep_unless_stopped(stop, opts.phase);

    step(
        stop,
        "attack: the attacker scans 200 TCP ports, then floods 20000 UDP datagrams",
    )?;
    let (open, sent) = attack(&topo.attacker, 200, 20_000)?;
    println!("attacker found {open} open ports, sent {sent} datagrams");
    sleep_unless_stopped(stop, Duration::from_secs(1));
    println!("flows Astra sees (largest first):");
    crate::cli::print_flows(&topo.pin_dir, &topo.state_dir, 8, false)?;
    counters_table(&topo.pin_dir, &ifaces)?;

    step(stop, "detection: what Astra concluded on its own")?;
    sleep_unless_stopped(stop, Duration::from_secs(2));
    crate::cli::print_alerts(
        &topo.state_dir.join(crate::events::DEFAULT_EVENTS_FILE),
        None,
        false,
    )?;
    let lists = Lists::open(&topo.state_dir, &topo.pin_dir)?;
    let auto: Vec<_> = lists
        .list()?
        .into_iter()
        .filter(|r| r.kind == ListKind::Block && r.source == EntrySource::Auto)
        .collect();
    if auto.is_empty() {
        println!("no automatic block was placed");
    }
    for r in &auto {
        println!(
            "automatically blocked {} for {}s: {}",
            r.net,
            r.ttl_remaining_s.unwrap_or(0),
            r.reason
        );
    }

    step(stop, "the attacker tries again")?;
    let (_, sent) = attack(&topo.attacker, 50, 20_000)?;
    println!("attacker tried again: 50 ports and {sent} datagrams");
    sleep_unless_stopped(stop, opts.phase);
    let ok = client.join().unwrap_or(0);
    println!("client completed {ok} requests throughout, unaffected by the block");
    counters_table(&topo.pin_dir, &ifaces)?;
    println!();
    for r in lists.list()? {
        println!(
            "blocklist: {} hits={} ttl={}s source={} reason={:?}",
            r.net,
            r.hits,
            r.ttl_remaining_s.unwrap_or(0),
            r.source,
            r.reason
        );
    }
    Ok(())
}
