//! `astra lab`: scenarios on network namespaces. A server namespace runs real services (sshd,
//! nginx, iperf3 when installed; built-in stand-ins otherwise) with the agent attached to every
//! interface; clients send benign traffic and attackers attack, with built-in generators or
//! real tools. Each scenario gets a fresh topology and agent; everything it creates
//! (namespaces, veths, pins, state, daemons) is removed afterwards, Ctrl-C included.

pub mod browser;
pub mod kit;
pub mod netns;
pub mod scenario;
pub mod sweep;
pub mod traffic;

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

use astra_common::action;
use comfy_table::{Table, presets};
use serde::Serialize;

use crate::{
    dataplane::maps::PinnedMaps,
    detect::{Action as AlertAction, Alert},
    error::{Error, Result},
    lab::{
        kit::{AgentProcess, AgentSpec, End, ScratchDir},
        netns::Netns,
        scenario::{Action, Expected, Scenario, Sender},
        traffic::SourceAddr,
    },
    sink::events::read_alerts,
    store::{ListKind, Store},
};

/// The built-in web service the tests use (the real nginx, when installed, is on 80).
pub const WEB_PORT: u16 = 8080;
pub const LOGIN_PORT: u16 = 22;
pub const SERVER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const SERVER_ATTACKER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// What every namespace, pin dir and state dir of a lab topology is named by: the prefix, then
/// the tag, which starts with the pid of the process that made it (see [`sweep`]).
pub const LAB_PREFIX: &str = "astra-lab-";

/// The gateway layout's server, behind the router Astra runs on, and the router's address on
/// that side.
pub const SERVER_BEHIND: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
pub const ROUTER_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// The router's interface toward the server behind it.
const ROUTER_SERVER_IFACE: &str = "s-srv";

/// Where Astra runs in a lab topology.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// On the server: its addresses are Astra's own.
    #[default]
    Host,
    /// On a router between the clients and attackers and a server behind it, whose address
    /// is not one of Astra's: what a gateway deployment sees, both directions of every
    /// conversation arriving on XDP ingress (on different interfaces).
    Gateway,
}

/// Addresses the server answers for all at once, so host sweeps get real answers.
const SWEEP_NET: &str = "198.19.0.0/22";

/// A host connected to the server by its own veth.
pub struct Host {
    pub ns: Netns,
    pub addr: Ipv4Addr,
    /// The server's address on this link.
    pub server_addr: Ipv4Addr,
    /// The server's interface on this link (where Astra attaches).
    pub server_iface: String,
    /// Its ifindex in the server namespace, where the agent's counters are keyed by it.
    pub server_ifindex: u32,
}

/// A server namespace, and client and attacker namespaces each on its own veth to it.
/// Client i uses 198.18.(2i-1).0/24, attacker i 198.18.(2i).0/24; the host is .2, the server .1.
/// In the gateway layout the namespace they link to is a router, and the services run on a
/// server behind it ([`SERVER_BEHIND`], on 198.18.100.0/24).
pub struct Topology {
    /// Where the agent runs: the server (host layout) or the router (gateway layout).
    pub server: Netns,
    /// The server behind the router, in the gateway layout.
    pub behind: Option<Netns>,
    /// The router's interface toward the server behind it, in the gateway layout.
    behind_iface: Option<u32>,
    pub layout: Layout,
    pub clients: Vec<Host>,
    pub attackers: Vec<Host>,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    agent: Option<AgentProcess>,
    /// Whether the agent serves its API (and UI), on a free port in the server namespace.
    pub api: bool,
    daemons: Vec<Child>,
    services: Arc<AtomicBool>,
    // Declared after the agent and the daemons, so they are gone before their dirs are.
    _pin: ScratchDir,
    state: ScratchDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.services.store(true, Ordering::SeqCst);
        self.stop_agent();
        for mut d in self.daemons.drain(..) {
            netns::kill_group(&mut d);
        }
        // The dirs and the namespaces are removed by their own guards right after this.
    }
}

fn link(server: &Netns, tag: &str, role: &str, i: u8, layout: Layout) -> Result<Host> {
    let ns = Netns::create(&format!("{LAB_PREFIX}{tag}-{role}{i}"))?;
    let subnet = if role == "cli" { 2 * i - 1 } else { 2 * i };
    let server_iface = if i == 1 {
        format!("s-{role}")
    } else {
        format!("s-{role}{i}")
    };
    let server_addr = Ipv4Addr::new(198, 18, subnet, 1);
    let addr = Ipv4Addr::new(198, 18, subnet, 2);
    kit::link(
        End {
            ns: server,
            iface: &server_iface,
            addrs: &[&format!("{server_addr}/24")],
        },
        End {
            ns: &ns,
            iface: "eth0",
            addrs: &[&format!("{addr}/24")],
        },
    )?;
    ns.ip(&["route", "add", SWEEP_NET, "via", &server_addr.to_string()])?;
    if layout == Layout::Gateway {
        ns.ip(&[
            "route",
            "add",
            "198.18.100.0/24",
            "via",
            &server_addr.to_string(),
        ])?;
    }
    let ifc = server_iface.clone();
    let server_ifindex = server.run(move || crate::dataplane::ifindex(&ifc))??;
    Ok(Host {
        ns,
        addr,
        server_addr,
        server_iface,
        server_ifindex,
    })
}

impl Topology {
    /// One client and one attacker.
    pub fn build(tag: &str) -> Result<Self> {
        Self::build_with(tag, 1, 1, Layout::Host)
    }

    /// Builds the namespaces and starts the services; `tag` makes every name unique, so
    /// several topologies (tests) can exist side by side.
    pub fn build_with(tag: &str, clients: u8, attackers: u8, layout: Layout) -> Result<Self> {
        let server = Netns::create(&format!("{LAB_PREFIX}{tag}-srv"))?;
        let behind = match layout {
            Layout::Host => {
                server.ip(&["route", "add", "local", SWEEP_NET, "dev", "lo"])?;
                None
            }
            Layout::Gateway => {
                let behind = Netns::create(&format!("{LAB_PREFIX}{tag}-web"))?;
                kit::link(
                    End {
                        ns: &server,
                        iface: ROUTER_SERVER_IFACE,
                        addrs: &[&format!("{ROUTER_SERVER_SIDE}/24")],
                    },
                    End {
                        ns: &behind,
                        iface: "eth0",
                        addrs: &[&format!("{SERVER_BEHIND}/24")],
                    },
                )?;
                behind.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    &ROUTER_SERVER_SIDE.to_string(),
                ])?;
                behind.ip(&["route", "add", "local", SWEEP_NET, "dev", "lo"])?;
                server.ip(&["route", "add", SWEEP_NET, "via", &SERVER_BEHIND.to_string()])?;
                server.sysctl("net.ipv4.ip_forward=1")?;
                Some(behind)
            }
        };
        let behind_iface = match behind {
            Some(_) => Some(server.run(|| crate::dataplane::ifindex(ROUTER_SERVER_IFACE))??),
            None => None,
        };
        let clients = (1..=clients)
            .map(|i| link(&server, tag, "cli", i, layout))
            .collect::<Result<Vec<_>>>()?;
        let attackers = (1..=attackers)
            .map(|i| link(&server, tag, "atk", i, layout))
            .collect::<Result<Vec<_>>>()?;
        let services = Arc::new(AtomicBool::new(false));
        let pin = ScratchDir::pin_at(PathBuf::from(format!("/sys/fs/bpf/{LAB_PREFIX}{tag}")))?;
        // 0755: the lab's web server reads its pages from here, and the agent refuses a state
        // dir others may write to.
        let state = ScratchDir::dir_at(
            std::env::temp_dir().join(format!("{LAB_PREFIX}{tag}")),
            0o755,
        )?;
        let mut t = Topology {
            pin_dir: pin.path().to_owned(),
            state_dir: state.path().to_owned(),
            agent: None,
            api: false,
            daemons: Vec::new(),
            services: services.clone(),
            _pin: pin,
            state,
            server,
            behind,
            behind_iface,
            layout,
            clients,
            attackers,
        };
        traffic::serve_tcp(
            t.service_ns(),
            WEB_PORT,
            b"",
            &[b'x'; 1024],
            1,
            services.clone(),
        )?;
        t.start_services()?;
        Ok(t)
    }

    /// Real sshd, nginx and iperf3 in the server namespace when they are installed; built-in
    /// stand-ins for sshd and nginx otherwise.
    fn start_services(&mut self) -> Result<()> {
        let dir = self.state_dir.join("services");
        std::fs::create_dir_all(dir.join("www")).map_err(|e| Error::io(&dir, e))?;
        if traffic::have_tool("sshd") && traffic::have_tool("ssh-keygen") {
            let key = dir.join("ssh_host_ed25519_key");
            let ok = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .is_ok_and(|s| s.success());
            // sshd insists on its privilege-separation directory.
            let _ = std::fs::create_dir_all("/run/sshd");
            let cfg = dir.join("sshd_config");
            let text = format!(
                "Port {LOGIN_PORT}\nHostKey {}\nPidFile {}\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nMaxStartups 200\nLogLevel ERROR\n",
                key.display(),
                dir.join("sshd.pid").display()
            );
            std::fs::write(&cfg, text).map_err(|e| Error::io(&cfg, e))?;
            if ok {
                self.spawn_daemon(
                    "/usr/sbin/sshd",
                    &["-D", "-e", "-f", &cfg.display().to_string()],
                )?;
            }
        } else {
            traffic::serve_tcp(
                self.service_ns(),
                LOGIN_PORT,
                b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
                b"Permission denied, please try again.\r\n",
                3,
                self.services.clone(),
            )?;
        }
        std::fs::write(dir.join("www/index.html"), vec![b'a'; 4096])
            .map_err(|e| Error::io(&dir, e))?;
        if traffic::have_tool("nginx") {
            let cfg = dir.join("nginx.conf");
            let text = format!(
                "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{ access_log off; client_body_temp_path {d}/nginx-body;\n\
                 server {{ listen 80; root {d}/www; }} }}\n",
                d = dir.display()
            );
            std::fs::write(&cfg, text).map_err(|e| Error::io(&cfg, e))?;
            self.spawn_daemon("nginx", &["-c", &cfg.display().to_string()])?;
        } else {
            traffic::serve_tcp(
                self.service_ns(),
                80,
                b"",
                &[b'x'; 4096],
                1,
                self.services.clone(),
            )?;
        }
        if traffic::have_tool("iperf3") {
            self.spawn_daemon("iperf3", &["-s"])?;
        }
        // Give the daemons a moment to bind before traffic starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn spawn_daemon(&mut self, program: &str, args: &[&str]) -> Result<()> {
        let log = std::fs::File::create(self.state_dir.join("services").join(format!(
            "{}.log",
            Path::new(program).file_name().map_or("daemon".into(), |n| n.to_string_lossy())
        )))
        .map_err(|e| Error::io(&self.state_dir, e))?;
        let child = self
            .service_ns()
            .lab_command(program)?
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Usage(format!("cannot start {program}: {e}")))?;
        self.daemons.push(child);
        Ok(())
    }

    /// Where the services run: the server, or the server behind the router.
    pub fn service_ns(&self) -> &Netns {
        self.behind.as_ref().unwrap_or(&self.server)
    }

    /// The address `host` reaches the services at.
    pub fn target(&self, host: &Host) -> Ipv4Addr {
        match self.layout {
            Layout::Host => host.server_addr,
            Layout::Gateway => SERVER_BEHIND,
        }
    }

    /// The services' own address, as the source of what the server sends.
    fn service_addr(&self) -> Ipv4Addr {
        match self.layout {
            Layout::Host => SERVER_CLIENT_SIDE,
            Layout::Gateway => SERVER_BEHIND,
        }
    }

    /// The agent's interfaces: toward every host, and toward the server behind a router.
    fn agent_ifaces(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .clients
            .iter()
            .chain(&self.attackers)
            .map(|h| (h.server_iface.clone(), h.server_ifindex))
            .collect();
        // Resolved once when the topology was built: kernel_drops asks ten times a second.
        if let Some(i) = self.behind_iface {
            v.push((ROUTER_SERVER_IFACE.to_owned(), i));
        }
        v
    }

    /// Starts `astra run` (the binary `exe`) on every server interface with this topology's
    /// pin and state dirs, and waits until it has polled once. Returns the metrics port
    /// (inside the server namespace).
    pub fn start_agent(&mut self, exe: &Path, extra: &[&str]) -> Result<u16> {
        let port = kit::free_port()?;
        let api_port = if self.api {
            Some(kit::free_port()?)
        } else {
            None
        };
        let ifaces: Vec<String> = self.agent_ifaces().into_iter().map(|(i, _)| i).collect();
        let netns = self.server.path();
        let mut agent = AgentProcess::spawn(AgentSpec {
            exe,
            netns: &netns,
            ifaces: &ifaces,
            pin_dir: &self.pin_dir,
            state_dir: &self.state_dir,
            metrics_port: port,
            api_port,
            extra,
            log: self.agent_log(),
        })?;
        let ready = agent.wait_polled(&self.state_dir, Duration::from_secs(20));
        self.agent = Some(agent);
        ready.map(|()| port)
    }

    /// Stops the agent with SIGTERM, so it detaches before its namespace goes away.
    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop();
        }
    }

    /// The agent's API port, when it serves one (see [`Topology::api`]).
    pub fn api_port(&self) -> Option<u16> {
        self.agent.as_ref().and_then(|a| a.api_port)
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(AgentProcess::pid)
    }

    /// Leaves the state dir (agent log, event log, incidents) for inspection.
    pub fn keep_state(&mut self) {
        self.state.keep();
    }

    pub fn agent_log(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }

    pub fn events_path(&self) -> PathBuf {
        self.state_dir
            .join(crate::sink::events::DEFAULT_EVENTS_FILE)
    }

    /// Whether the kernel blocklist holds `ip` right now.
    pub fn kernel_blocks(&self, ip: Ipv4Addr) -> bool {
        PinnedMaps::open(&self.pin_dir)
            .ok()
            .flatten()
            .is_some_and(|m| m.block_v4.get(&ip.octets(), 0).is_ok())
    }

    /// The kernel's throttle entry for `ip` (a /32), if any.
    pub fn kernel_throttle(&self, ip: Ipv4Addr) -> Option<astra_common::ThrottleEntry> {
        let maps = PinnedMaps::open(&self.pin_dir).ok().flatten()?;
        maps.tnet_v4
            .get(&aya::maps::lpm_trie::Key::new(32, ip.octets()), 0)
            .ok()
    }

    /// Whether the kernel quarantines `ip`.
    pub fn kernel_quarantines(&self, ip: Ipv4Addr) -> bool {
        PinnedMaps::open(&self.pin_dir)
            .ok()
            .flatten()
            .is_some_and(|m| m.quar_v4.get(&ip.octets(), 0).is_ok())
    }

    /// Number of entries in the kernel blocklist.
    pub fn kernel_block_count(&self) -> usize {
        PinnedMaps::open(&self.pin_dir)
            .ok()
            .flatten()
            .map_or(0, |m| m.block_v4.keys().count() + m.bnet_v4.keys().count())
    }

    /// Packets the kernel turned away on the server's interfaces: dropped, or answered from
    /// XDP with a SYN cookie.
    pub fn kernel_drops(&self) -> u64 {
        let Some(maps) = PinnedMaps::open(&self.pin_dir).ok().flatten() else {
            return 0;
        };
        let mut total = 0;
        for (_, ifindex) in self.agent_ifaces() {
            if let Ok(c) = maps.iface_counters(ifindex) {
                total += [
                    action::DROP_BLOCKED,
                    action::DROP_BLOCKED_NET,
                    action::DROP_QUARANTINED,
                    action::DROP_THROTTLED,
                    action::EGRESS_DROP_QUARANTINED,
                    action::DROP_SYN_BUDGET,
                    action::DROP_REFLECTED,
                    // Answered in XDP: the SYN never reached the stack either.
                    action::SYN_COOKIE,
                ]
                .iter()
                .map(|a| c[*a as usize].packets)
                .sum::<u64>();
            }
        }
        total
    }

    pub fn services_stop_flag(&self) -> Arc<AtomicBool> {
        self.services.clone()
    }

    fn hosts(&self, s: &Sender) -> Vec<&Host> {
        match s {
            Sender::Client(i) => self.clients.get(usize::from(*i) - 1).into_iter().collect(),
            Sender::Attacker(i) => self
                .attackers
                .get(usize::from(*i) - 1)
                .into_iter()
                .collect(),
            Sender::AllClients => self.clients.iter().collect(),
            Sender::AllAttackers => self.attackers.iter().collect(),
            Sender::Server => Vec::new(),
        }
    }
}

/// One scenario's line in the report (the fields the issue tracker and README promise, plus
/// whether it passed and why it was skipped).
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub expected: String,
    pub detected: bool,
    pub attack_type: Option<String>,
    pub time_to_alert_s: Option<f64>,
    pub time_to_drop_s: Option<f64>,
    /// From the first attack packet until the kernel blocklist held the attacker (drops need
    /// a further packet; this does not).
    pub time_to_block_s: Option<f64>,
    pub packets_dropped: u64,
    pub false_alerts: usize,
    pub false_blocks: usize,
    pub passed: bool,
    pub skipped: Option<String>,
    pub alerts: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentUsage {
    pub cpu_seconds: f64,
    pub max_rss_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenarios: Vec<ScenarioResult>,
    pub agent: AgentUsage,
}

impl Report {
    pub fn all_passed(&self) -> bool {
        self.scenarios
            .iter()
            .all(|s| s.passed || s.skipped.is_some())
    }
}

/// CPU seconds and peak RSS of a live process, from /proc.
fn usage(pid: u32) -> AgentUsage {
    let ticks = {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    };
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name: utime and stime are 12th and 13th.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024);
    AgentUsage {
        cpu_seconds: cpu,
        max_rss_bytes: rss,
    }
}

/// A password list for brute-force tools.
fn wordlist(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("wordlist.txt");
    let words: Vec<String> = (0..60).map(|i| format!("guess{i:02}")).collect();
    std::fs::write(&p, words.join("\n")).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}

fn fill(arg: &str, host: &Host, target: Ipv4Addr, wordlist: &Path, router_mac: &str) -> String {
    arg.replace("{target}", &target.to_string())
        .replace("{self}", &host.addr.to_string())
        .replace("{wordlist}", &wordlist.display().to_string())
        .replace("{router_mac}", router_mac)
        .replace("{iface}", "eth0")
}

/// Runs one traffic item from one host (or from the server).
fn perform(
    topo: &Topology,
    from: Option<&Host>,
    a: &Action,
    words: &Path,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let ns = from.map_or(topo.service_ns(), |h| &h.ns);
    let target = from.map_or(topo.service_addr(), |h| topo.target(h));
    let me = from.map_or(topo.service_addr(), |h| h.addr);
    match a {
        Action::Web { dur, gap, port } => {
            traffic::web_sessions(
                ns,
                SocketAddr::from((target, *port)),
                *gap,
                *dur,
                stop.clone(),
            )
            .join()
            .ok();
        }
        Action::LoginBurst { count, port } => {
            traffic::login_attempts(ns, SocketAddr::from((target, *port)), *count as usize)?;
        }
        Action::ConnectScan { ports } => {
            traffic::connect_scan(ns, IpAddr::V4(target), ports.clone())?;
        }
        Action::HostSweep { hosts, port } => {
            traffic::host_sweep(ns, *hosts, *port)?;
        }
        Action::UdpFlood {
            count,
            size,
            spoofed,
        } => {
            traffic::udp_flood(ns, SourceAddr::new(me, *spoofed), target, *count, *size)?;
        }
        Action::SynFlood {
            count,
            port,
            spoofed,
        } => {
            traffic::syn_flood(ns, SourceAddr::new(me, *spoofed), target, *port, *count)?;
        }
        Action::IcmpFlood { count } => {
            traffic::icmp_flood(ns, me, target, *count)?;
        }
        Action::Upload { bytes, to } => {
            let src = from.map_or(topo.service_ns(), |f| &f.ns);
            match (to, from) {
                // To the services, at the address they have toward the sender.
                (Sender::Server, Some(f)) => {
                    traffic::upload(src, topo.service_ns(), topo.target(f), *bytes)?;
                }
                _ => {
                    for h in topo.hosts(to) {
                        traffic::upload(src, &h.ns, h.addr, *bytes)?;
                    }
                }
            }
        }
        Action::Tool {
            program,
            args,
            timeout,
        } => {
            let host =
                from.ok_or_else(|| Error::Usage("tools run on clients or attackers".into()))?;
            let mac = topo.server.mac(&host.server_iface).unwrap_or_default();
            let target = topo.target(host);
            let args: Vec<String> = args
                .iter()
                .map(|a| fill(a, host, target, words, &mac))
                .collect();
            traffic::run_tool(ns, program, &args, *timeout)?;
        }
    }
    Ok(())
}

/// Runs one scenario on a fresh topology. `progress` shows live counters.
pub fn run_scenario(
    exe: &Path,
    sc: &Scenario,
    tag: &str,
    opts: &LabOptions,
    interrupted: &Arc<AtomicBool>,
    progress: &indicatif::ProgressBar,
) -> Result<(ScenarioResult, AgentUsage)> {
    let (layout, keep, shots) = (opts.layout, opts.keep, opts.screenshots.as_deref());
    let missing: Vec<&str> = sc
        .tools()
        .into_iter()
        .filter(|t| !traffic::have_tool(t))
        .collect();
    let mut result = ScenarioResult {
        name: sc.name.clone(),
        expected: sc.expected.label().into(),
        detected: false,
        attack_type: None,
        time_to_alert_s: None,
        time_to_drop_s: None,
        time_to_block_s: None,
        packets_dropped: 0,
        false_alerts: 0,
        false_blocks: 0,
        passed: false,
        skipped: None,
        alerts: Vec::new(),
    };
    if !missing.is_empty() {
        result.skipped = Some(format!("not installed: {}", missing.join(", ")));
        return Ok((result, AgentUsage::default()));
    }
    if layout == Layout::Gateway
        && sc.expected == Expected::Attack(crate::detect::AttackType::Exfiltration)
        && !sc.settings.iter().any(|s| s.starts_with("rules.home_net="))
    {
        // The exfiltration rule watches the host's own addresses and rules.home_net, and a
        // router has no server of its own.
        result.skipped =
            Some("exfiltration is judged on the host's own addresses (and rules.home_net)".into());
        return Ok((result, AgentUsage::default()));
    }
    let mut topo = Topology::build_with(tag, sc.clients, sc.attackers, layout)?;
    if keep {
        topo.keep_state();
    }
    let poll = humantime::format_duration(sc.poll_interval).to_string();
    let mut args: Vec<String> = vec!["--poll-interval".into(), poll];
    let features = topo.state_dir.join("features.csv");
    if opts.export_training.is_some() {
        args.push("--export-features".into());
        args.push(features.display().to_string());
    }
    for s in &sc.settings {
        args.push("--set".into());
        args.push(s.clone());
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    topo.api = shots.is_some();
    topo.start_agent(exe, &arg_refs)?;
    let words = wordlist(&topo.state_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // The clock for time-to-alert and time-to-drop starts with the first traffic that is not
    // a benign client's (attackers, or the server itself in the exfiltration case).
    let first_attack = sc
        .traffic
        .iter()
        .filter(|t| t.from.is_attacker() || t.from == Sender::Server)
        .map(|t| t.start)
        .min();
    let attacker_ips: Vec<IpAddr> = topo.attackers.iter().map(|h| IpAddr::V4(h.addr)).collect();
    let client_ips: Vec<IpAddr> = topo.clients.iter().map(|h| IpAddr::V4(h.addr)).collect();

    let outcome = std::thread::scope(|scope| -> Result<()> {
        for t in &sc.traffic {
            let senders: Vec<Option<&Host>> = match t.from {
                Sender::Server => vec![None],
                _ => topo.hosts(&t.from).into_iter().map(Some).collect(),
            };
            for h in senders {
                let (topo, words, stop) = (&topo, &words, &stop);
                scope.spawn(move || {
                    while t0.elapsed() < t.start {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if let Err(e) = perform(topo, h, &t.action, words, stop) {
                        tracing::warn!(error = %e, "traffic item failed");
                    }
                });
            }
        }
        // Watch what Astra does while the traffic runs.
        while t0.elapsed() < sc.duration && !interrupted.load(Ordering::SeqCst) {
            let alerts = read_alerts(&topo.events_path(), 0).unwrap_or_default();
            let since_attack = first_attack.map(|s| t0.elapsed().saturating_sub(s));
            if result.time_to_alert_s.is_none()
                && let Some(d) = since_attack
                && alerts.iter().any(|a| matches_expected(a, sc.expected))
            {
                result.time_to_alert_s = Some(d.as_secs_f64());
            }
            if result.time_to_block_s.is_none()
                && let Some(d) = since_attack
                && topo.attackers.iter().any(|h| {
                    topo.kernel_blocks(h.addr)
                        || topo.kernel_quarantines(h.addr)
                        || topo.kernel_throttle(h.addr).is_some()
                })
            {
                result.time_to_block_s = Some(d.as_secs_f64());
            }
            let drops = topo.kernel_drops();
            if result.time_to_drop_s.is_none()
                && drops > 0
                && let Some(d) = since_attack
            {
                result.time_to_drop_s = Some(d.as_secs_f64());
            }
            progress.set_message(format!(
                "{}: {:.0}s  alerts {}  blocks {}  dropped {drops}",
                sc.name,
                t0.elapsed().as_secs_f64(),
                alerts.len(),
                topo.kernel_block_count()
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
        Ok(())
    });
    outcome?;
    // One more detection pass over the last packets.
    std::thread::sleep(sc.poll_interval * 2);
    let usage = topo.agent_pid().map(usage).unwrap_or_default();
    let alerts = read_alerts(&topo.events_path(), 0)?;
    result.packets_dropped = topo.kernel_drops();
    score(&mut result, sc, &alerts, &attacker_ips, &client_ips, &topo)?;
    if let Some(dir) = shots {
        progress.set_message(format!("{}: screenshots", sc.name));
        screenshots(&topo, &sc.name, dir)?;
    }
    if let Some(out) = &opts.export_training {
        label_features(&features, sc, &attacker_ips, &client_ips, out)?;
    }
    Ok((result, usage))
}

/// The header of `astra lab --export-training`'s file.
pub fn training_header() -> String {
    format!(
        "scenario,source,label,{}\n",
        crate::features::FEATURE_NAMES.join(",")
    )
}

/// Appends the agent's feature rows of one scenario to `out`, labelled with what the lab
/// knows: an attacker's rows with the scenario's attack type, a benign client's `benign`, the
/// server's with the attack type only where the server is the attacker (exfiltration).
/// Rows of any other address (link-local chatter) are left out.
fn label_features(
    features: &Path,
    sc: &Scenario,
    attackers: &[IpAddr],
    clients: &[IpAddr],
    out: &Path,
) -> Result<()> {
    use std::io::Write as _;
    let text = std::fs::read_to_string(features).map_err(|e| Error::io(features, e))?;
    let server_attacks = sc.traffic.iter().any(|t| t.from == Sender::Server);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(out)
        .map_err(|e| Error::io(out, e))?;
    let mut rows = String::new();
    for line in text.lines().skip(1) {
        let mut cells = line.splitn(3, ',');
        let (Some(_), Some(src), Some(rest)) = (cells.next(), cells.next(), cells.next()) else {
            continue;
        };
        let Ok(ip) = src.parse::<IpAddr>() else {
            continue;
        };
        let label = if attackers.contains(&ip) {
            sc.expected.label()
        } else if clients.contains(&ip) {
            "benign"
        } else if server_attacks
            && (ip == IpAddr::V4(SERVER_CLIENT_SIDE) || ip == IpAddr::V4(SERVER_ATTACKER_SIDE))
        {
            sc.expected.label()
        } else {
            continue;
        };
        rows.push_str(&format!("{},{src},{label},{rest}\n", sc.name));
    }
    f.write_all(rows.as_bytes()).map_err(|e| Error::io(out, e))
}

/// The web UI's main views as the scenario left them, as PNG files `<scenario>-<view>.png`
/// in `dir`: what the README shows, taken by the tooling the UI's tests use.
fn screenshots(topo: &Topology, name: &str, dir: &Path) -> Result<()> {
    let Some(port) = topo.api_port() else {
        return Ok(());
    };
    let token = crate::agent::token::read(&topo.state_dir)?;
    // Incident reports are named by their id.
    let incident = std::fs::read_dir(topo.state_dir.join("incidents"))
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
                .min()
        });
    let mut views = vec![
        ("overview", "/overview".to_owned()),
        ("alerts", "/alerts".to_owned()),
        ("lists", "/lists".to_owned()),
    ];
    if let Some(id) = incident {
        views.push(("incident", format!("/incidents/{id}")));
    }
    for (view, hash) in views {
        let path = dir.join(format!("{name}-{view}.png"));
        let s = browser::Scenario {
            name: "shot",
            token: token.as_deref(),
            arg: &hash,
            shot: Some(&path),
            theme: None,
        };
        browser::run(&topo.server.path(), port, &s, Duration::from_secs(60))
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn matches_expected(a: &Alert, expected: Expected) -> bool {
    matches!(expected, Expected::Attack(t) if a.attack_type == t)
}

fn score(
    r: &mut ScenarioResult,
    sc: &Scenario,
    alerts: &[Alert],
    attackers: &[IpAddr],
    clients: &[IpAddr],
    topo: &Topology,
) -> Result<()> {
    r.alerts = alerts
        .iter()
        .map(|a| {
            let forest = a
                .evidence
                .forest_score
                .map_or(String::new(), |f| format!(", forest score {f:.2}"));
            format!(
                "{} from {} ({}, confidence {:.2}{forest})",
                a.attack_type,
                a.source.map_or("-".into(), |s| s.to_string()),
                a.action.label(),
                a.confidence
            )
        })
        .collect();
    let from_attacker = |a: &&Alert| a.source.is_some_and(|s| attackers.contains(&s));
    r.detected = alerts.iter().any(|a| matches_expected(a, sc.expected));
    r.attack_type = alerts
        .iter()
        .find(from_attacker)
        .or_else(|| alerts.first())
        .map(|a| a.attack_type.to_string());
    r.false_alerts = alerts
        .iter()
        .filter(|a| match (sc.expected, a.source) {
            (Expected::Benign, _) => true,
            // Behind a gateway, the server is as innocent as the clients.
            (_, Some(s)) => {
                clients.contains(&s)
                    || (topo.layout == Layout::Gateway && s == IpAddr::V4(SERVER_BEHIND))
            }
            (_, None) => false,
        })
        .count();
    // Blocks, throttles and quarantines of anyone but an attacker (a protection holds back
    // strangers' new connections to the target, no one's traffic as such).
    let store = Store::open(&topo.state_dir)?;
    r.false_blocks = store
        .list(None)?
        .iter()
        .filter(|e| {
            !matches!(e.kind, ListKind::Allow | ListKind::Protect)
                && !attackers.iter().any(|a| e.net.contains(a))
        })
        .count();
    let acted = |a: &&Alert| {
        matches!(
            (sc.expect_action, &a.action),
            (Some(ListKind::Block), AlertAction::Blocked { .. })
                | (Some(ListKind::Throttle), AlertAction::Throttled { .. })
                | (Some(ListKind::Quarantine), AlertAction::Quarantined { .. })
                | (Some(ListKind::Protect), AlertAction::Protected { .. })
        )
    };
    // A protection answers a target-side alert, which names no source.
    let mitigated = alerts
        .iter()
        .any(|a| acted(&a) && (from_attacker(&a) || sc.expect_action == Some(ListKind::Protect)));
    r.passed = match sc.expected {
        Expected::Benign => r.false_alerts == 0 && r.false_blocks == 0,
        Expected::Attack(_) => {
            r.detected
                && r.false_alerts == 0
                && r.false_blocks == 0
                && (sc.expect_action.is_none() || (mitigated && r.time_to_drop_s.is_some()))
        }
    };
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.1}"))
}

pub fn print_table(report: &Report) {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN);
    t.set_header([
        "scenario",
        "expected",
        "detected",
        "type",
        "alert (s)",
        "block (s)",
        "drop (s)",
        "dropped",
        "false alerts",
        "false blocks",
        "result",
    ]);
    for s in &report.scenarios {
        t.add_row(vec![
            s.name.clone(),
            s.expected.clone(),
            s.detected.to_string(),
            s.attack_type.clone().unwrap_or_else(|| "-".into()),
            fmt_opt(s.time_to_alert_s),
            fmt_opt(s.time_to_block_s),
            fmt_opt(s.time_to_drop_s),
            s.packets_dropped.to_string(),
            s.false_alerts.to_string(),
            s.false_blocks.to_string(),
            match (&s.skipped, s.passed) {
                (Some(why), _) => format!("skipped ({why})"),
                (None, true) => "pass".into(),
                (None, false) => "FAIL".into(),
            },
        ]);
    }
    println!("{t}");
    println!(
        "agent: {:.2} CPU seconds in all, peak RSS {:.1} MiB",
        report.agent.cpu_seconds,
        report.agent.max_rss_bytes as f64 / (1024.0 * 1024.0)
    );
}

pub struct LabOptions {
    /// Scenario files; empty = the built-in default set.
    pub scenarios: Vec<PathBuf>,
    pub report: Option<PathBuf>,
    /// Keep each scenario's state dir (agent log, eve.json, incidents).
    pub keep: bool,
    /// Where Astra runs: on the server, or on a router in front of it.
    pub layout: Layout,
    /// Take screenshots of the web UI after each scenario, into this directory.
    pub screenshots: Option<PathBuf>,
    /// Write every source's feature rows, labelled with the scenario's ground truth, here.
    pub export_training: Option<PathBuf>,
}

/// Runs the scenarios and prints a table; returns the report (and writes it if asked).
pub fn run(opts: LabOptions) -> Result<Report> {
    let set = if opts.scenarios.is_empty() {
        scenario::default_set()?
    } else {
        opts.scenarios
            .iter()
            .map(|p| scenario::load(p))
            .collect::<Result<Vec<_>>>()?
    };
    // Fail on an unwritable report path now, not after minutes of scenarios.
    if let Some(p) = &opts.report {
        std::fs::write(p, b"")
            .map_err(|e| Error::Usage(format!("cannot write report {}: {e}", p.display())))?;
    }
    if let Some(p) = &opts.export_training {
        std::fs::write(p, training_header()).map_err(|e| {
            Error::Usage(format!("cannot write training rows {}: {e}", p.display()))
        })?;
    }
    for what in sweep::sweep() {
        eprintln!("removed what a dead lab run left: {what}");
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            flag.store(true, Ordering::SeqCst);
            eprintln!("\ninterrupted: cleaning up");
        });
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let bar = indicatif::ProgressBar::new(set.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{pos}/{len}] {wide_msg}")
            .expect("static template"),
    );
    let mut report = Report {
        scenarios: Vec::new(),
        agent: AgentUsage::default(),
    };
    for (i, sc) in set.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        bar.set_message(format!("{}: setting up", sc.name));
        let tag = format!("{}-{i}", std::process::id());
        let (r, u) = run_scenario(&exe, sc, &tag, &opts, &interrupted, &bar)?;
        if opts.keep {
            let dir = std::env::temp_dir().join(format!("{LAB_PREFIX}{tag}"));
            bar.suspend(|| println!("{}: state kept in {}", sc.name, dir.display()));
        }
        report.agent.cpu_seconds += u.cpu_seconds;
        report.agent.max_rss_bytes = report.agent.max_rss_bytes.max(u.max_rss_bytes);
        bar.suspend(|| {
            println!(
                "{:<24} {:<8} {}",
                r.name,
                match (&r.skipped, r.passed) {
                    (Some(_), _) => "skipped",
                    (None, true) => "pass",
                    (None, false) => "FAIL",
                },
                if r.alerts.is_empty() {
                    "no alerts".into()
                } else {
                    r.alerts.join("; ")
                }
            );
        });
        report.scenarios.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_table(&report);
    if let Some(p) = &opts.report {
        let text = serde_json::to_vec_pretty(&report).expect("report serialises");
        std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
        println!("report written to {}", p.display());
    }
    Ok(report)
}
