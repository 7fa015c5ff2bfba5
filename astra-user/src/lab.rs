//! `astra lab`: a self-contained demonstration on network namespaces. A server namespace runs
//! the agent on its two interfaces; a client sends benign request/response traffic and an
//! attacker scans and floods. Everything it creates (namespaces, veths, pins, state) is removed
//! on exit, Ctrl-C included. The same [`Topology`] serves the end-to-end detection tests.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
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
    traffic,
};

pub const WEB_PORT: u16 = 8080;
pub const LOGIN_PORT: u16 = 22;
pub const SERVER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const SERVER_ATTACKER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);

/// A server namespace (Astra attached to `s-cli` and `s-atk`, a web service on 8080 and a
/// login service on 22), a client namespace and an attacker namespace, each on its own veth.
pub struct Topology {
    pub server: Netns,
    pub client: Netns,
    pub attacker: Netns,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    agent: Option<Child>,
    services: Arc<AtomicBool>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.services.store(true, Ordering::SeqCst);
        self.stop_agent();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        // The namespaces are removed by their own guards right after this.
    }
}

impl Topology {
    /// Builds the namespaces and services; `tag` makes every name unique, so several
    /// topologies (tests) can exist side by side.
    pub fn build(tag: &str) -> Result<Self> {
        let server = Netns::create(&format!("astra-lab-{tag}-srv"))?;
        let client = Netns::create(&format!("astra-lab-{tag}-cli"))?;
        let attacker = Netns::create(&format!("astra-lab-{tag}-atk"))?;
        veth(&server, "s-cli", &client, "eth0")?;
        veth(&server, "s-atk", &attacker, "eth0")?;
        server.add_addr("s-cli", &format!("{SERVER_CLIENT_SIDE}/24"))?;
        client.add_addr("eth0", &format!("{CLIENT}/24"))?;
        server.add_addr("s-atk", &format!("{SERVER_ATTACKER_SIDE}/24"))?;
        attacker.add_addr("eth0", &format!("{ATTACKER}/24"))?;
        let services = Arc::new(AtomicBool::new(false));
        let t = Topology {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/astra-lab-{tag}")),
            state_dir: std::env::temp_dir().join(format!("astra-lab-{tag}")),
            agent: None,
            services: services.clone(),
            server,
            client,
            attacker,
        };
        std::fs::create_dir_all(&t.state_dir).map_err(|e| Error::io(&t.state_dir, e))?;
        traffic::serve_tcp(&t.server, WEB_PORT, b"", &[b'x'; 1024], 1, services.clone())?;
        // Looks like sshd to a login-guessing client: a banner, then a rejection per guess.
        traffic::serve_tcp(
            &t.server,
            LOGIN_PORT,
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
            b"Permission denied, please try again.\r\n",
            3,
            services,
        )?;
        Ok(t)
    }

    /// Starts `astra run` (the binary `exe`) on both server interfaces with this topology's
    /// pin and state dirs, and waits until it has polled once. Returns the metrics port
    /// (inside the server namespace).
    pub fn start_agent(&mut self, exe: &Path, extra: &[&str]) -> Result<u16> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::io("free port", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log())
            .map_err(|e| Error::io(self.agent_log(), e))?;
        let child = self
            .server
            .command(exe)?
            .args(["run", "--iface", "s-cli", "--iface", "s-atk"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io("starting the agent", e))?;
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = crate::agent::AgentStatus::read(&self.state_dir);
            if status.is_some_and(|s| s.running && s.last_poll_at.is_some()) {
                return Ok(port);
            }
            if let Some(Ok(Some(st))) = self.agent.as_mut().map(|c| c.try_wait()) {
                return Err(Error::Usage(format!(
                    "the agent exited ({st}); see {}",
                    self.agent_log().display()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Usage(format!(
                    "the agent did not start; see {}",
                    self.agent_log().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // SIGTERM lets the agent detach cleanly before its namespace goes away.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
        }
    }

    pub fn agent_log(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }

    pub fn events_path(&self) -> PathBuf {
        self.state_dir.join(crate::events::DEFAULT_EVENTS_FILE)
    }

    /// Whether the kernel blocklist holds `ip` right now.
    pub fn kernel_blocks(&self, ip: Ipv4Addr) -> bool {
        PinnedMaps::open(&self.pin_dir)
            .ok()
            .flatten()
            .is_some_and(|m| m.block_v4.get(&ip.octets(), 0).is_ok())
    }

    /// Number of entries in the kernel blocklist.
    pub fn kernel_block_count(&self) -> usize {
        PinnedMaps::open(&self.pin_dir)
            .ok()
            .flatten()
            .map_or(0, |m| m.block_v4.keys().count() + m.bnet_v4.keys().count())
    }

    pub fn services_stop_flag(&self) -> Arc<AtomicBool> {
        self.services.clone()
    }
}

#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Length of each traffic phase.
    pub phase: Duration,
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

fn counters_table(pin: &Path, ifaces: &[(&str, u32)]) -> Result<()> {
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
    {
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
        });
    }
    let mut topo = Topology::build(&std::process::id().to_string())?;
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
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let port = topo.start_agent(&exe, &["--poll-interval", "500ms"])?;
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

    step(stop, "benign traffic: the client makes web-like requests")?;
    let client = traffic::web_sessions(
        &topo.client,
        SocketAddr::from((SERVER_CLIENT_SIDE, WEB_PORT)),
        Duration::from_millis(100),
        opts.phase * 3,
        stop.clone(),
    );
    sleep_unless_stopped(stop, opts.phase);

    step(
        stop,
        "attack: the attacker scans 200 TCP ports, then floods 20000 UDP datagrams",
    )?;
    let open = traffic::connect_scan(
        &topo.attacker,
        IpAddr::V4(SERVER_ATTACKER_SIDE),
        (1..=200).collect(),
    )?;
    let sent = traffic::udp_flood(&topo.attacker, ATTACKER, SERVER_ATTACKER_SIDE, 20_000, 64)?;
    println!(
        "attacker found {} open ports, sent {sent} datagrams",
        open.len()
    );
    sleep_unless_stopped(stop, Duration::from_secs(1));
    println!("flows Astra sees (largest first):");
    crate::cli::print_flows(&topo.pin_dir, &topo.state_dir, 8, false)?;
    counters_table(&topo.pin_dir, &ifaces)?;

    step(stop, "detection: what Astra concluded on its own")?;
    sleep_unless_stopped(stop, Duration::from_secs(2));
    crate::cli::print_alerts(&topo.events_path(), None, false)?;
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
    let sent = traffic::udp_flood(&topo.attacker, ATTACKER, SERVER_ATTACKER_SIDE, 20_000, 64)?;
    println!("attacker sent {sent} more datagrams");
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
