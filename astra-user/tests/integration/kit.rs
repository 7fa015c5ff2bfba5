//! What only the tests need, on top of the kit they share with the lab
//! ([`astra::lab::kit`]): root checks, a two-namespace veth pair, the agent with HTTP helpers,
//! and the CLI run with a test's own pin and state dirs.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub use astra::lab::kit::{ScratchDir, unique};
use astra::lab::{
    kit::{AgentProcess, AgentSpec, End},
    netns::Netns,
};

/// Returns false (and says why) when the test cannot run here. Under CI=true a missing
/// privilege is a failure, never a skip.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("privileged test needs root, and CI=true forbids skipping it");
    }
    eprintln!("skipping: privileged test needs root (run `cargo xtask test` as root)");
    false
}

/// A fresh pin dir, removed with its pins at drop.
pub fn pin_dir() -> ScratchDir {
    ScratchDir::pin("astra-t").expect("pin dir")
}

/// A fresh state dir, removed at drop.
pub fn state_dir() -> ScratchDir {
    ScratchDir::dir_at(std::env::temp_dir().join(unique("astra-state-")), 0o755).expect("state dir")
}

/// Two network namespaces joined by a veth pair: `a` (198.18.N.1, 2001:db8:N::1) is the
/// traffic source, `b` (198.18.N.2, 2001:db8:N::2) is where Astra attaches. The namespaces
/// (and with them the veth pair) are deleted on drop.
pub struct Lab {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub net: u8,
    a: Netns,
    /// Held for its drop, which deletes the namespace.
    _b: Netns,
}

/// Picks each [`Lab`]'s subnet, so labs in one test process never share one.
static NET_SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub fn new() -> Self {
        Self::build(true)
    }

    /// A lab whose traffic source sends no IPv6 (no router solicitations or MLD reports), so
    /// every IP packet the sensor sees is one the test sent.
    pub fn quiet_v4() -> Self {
        Self::build(false)
    }

    fn build(ipv6: bool) -> Self {
        let a = Netns::create(&unique("astA")).expect("netns a");
        let b = Netns::create(&unique("astB")).expect("netns b");
        let net = (NET_SEQ.fetch_add(1, Ordering::SeqCst) % 200) as u8 + 1;
        let (if_a, if_b) = ("veth-a".to_owned(), "veth-b".to_owned());
        if !ipv6 {
            for ns in [&a, &b] {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6=1").unwrap();
                ns.sysctl("net.ipv6.conf.default.disable_ipv6=1").unwrap();
            }
        }
        let (a4, b4) = (format!("198.18.{net}.1/24"), format!("198.18.{net}.2/24"));
        let (a6, b6) = (
            format!("2001:db8:{net}::1/64"),
            format!("2001:db8:{net}::2/64"),
        );
        let (refs_a, refs_b): (Vec<&str>, Vec<&str>) = if ipv6 {
            (vec![&a4, &a6], vec![&b4, &b6])
        } else {
            (vec![&a4], vec![&b4])
        };
        astra::lab::kit::link(
            End {
                ns: &a,
                iface: &if_a,
                addrs: &refs_a,
            },
            End {
                ns: &b,
                iface: &if_b,
                addrs: &refs_b,
            },
        )
        .expect("veth pair");
        Lab {
            ns_a: a.name.clone(),
            ns_b: b.name.clone(),
            if_a,
            if_b,
            net,
            a,
            _b: b,
        }
    }

    pub fn a_v4(&self) -> String {
        format!("198.18.{}.1", self.net)
    }
    pub fn b_v4(&self) -> String {
        format!("198.18.{}.2", self.net)
    }
    pub fn a_v6(&self) -> String {
        format!("2001:db8:{}::1", self.net)
    }
    pub fn b_v6(&self) -> String {
        format!("2001:db8:{}::2", self.net)
    }

    /// The traffic source's namespace, for the lab's traffic tools.
    pub fn a(&self) -> &Netns {
        &self.a
    }

    /// Adds another address to A's interface (a second attacker or client).
    pub fn add_a_addr(&self, cidr: &str) {
        self.a.add_addr(&self.if_a, cidr).expect("add address");
    }

    /// ifindex of B's interface, as the programs attached there see it.
    pub fn b_ifindex(&self) -> u32 {
        let ifc = self.if_b.clone();
        Self::in_ns(&self.ns_b, move || {
            astra::dataplane::ifindex(&ifc).expect("ifindex")
        })
    }

    /// Sends `n` datagrams from `src` in A to a receiver in B listening on `dst`, and
    /// returns how many arrived: the end-to-end check that a packet passed or was dropped.
    pub fn deliver(&self, src: &str, dst: &str, n: usize) -> usize {
        self.deliver_from(src, dst, 0, n)
    }

    /// [`Lab::deliver`] from source port `sport` (0: an ephemeral one).
    pub fn deliver_from(&self, src: &str, dst: &str, sport: u16, n: usize) -> usize {
        let (port, receiver) = Self::receive(&self.ns_b, dst);
        self.send_udp(src, dst, sport, port, n);
        receiver.join().expect("receiver")
    }

    /// [`Lab::deliver`] the other way: from `src` in B (where the agent runs, so the datagrams
    /// leave through TC egress) to `dst` in A.
    pub fn deliver_back(&self, src: &str, dst: &str, n: usize) -> usize {
        let (port, receiver) = Self::receive(&self.ns_a, dst);
        Self::send_from(&self.ns_b, src, dst, 0, port, n, true);
        receiver.join().expect("receiver")
    }

    /// A receiver in `ns` on `addr`: its port, and a thread that counts datagrams until 400 ms
    /// pass without one.
    fn receive(ns: &str, addr: &str) -> (u16, std::thread::JoinHandle<usize>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, ns) = (addr.to_owned(), ns.to_owned());
        let receiver = std::thread::spawn(move || {
            Self::in_ns(&ns, move || {
                let sock = std::net::UdpSocket::bind(sock_addr(&addr, 0)).expect("bind receiver");
                sock.set_read_timeout(Some(Duration::from_millis(400)))
                    .expect("timeout");
                tx.send(sock.local_addr().expect("addr").port())
                    .expect("port");
                let mut buf = [0u8; 64];
                let mut got = 0;
                while sock.recv(&mut buf).is_ok() {
                    got += 1;
                }
                got
            })
        });
        (rx.recv().expect("receiver port"), receiver)
    }

    /// Runs `f` on a thread that has entered namespace `ns`.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        astra::lab::netns::in_ns(&format!("/var/run/netns/{ns}"), f).expect("enter netns")
    }

    /// Sends `n` UDP datagrams from namespace A to `dst` port `port`, from source port
    /// `sport`, and waits until they are on the wire.
    pub fn send_udp(&self, src: &str, dst: &str, sport: u16, port: u16, n: usize) {
        Self::send_from(&self.ns_a, src, dst, sport, port, n, false);
    }

    /// `dropped_ok`: a send the dataplane drops on this host's egress (a quarantine) may
    /// report an error; elsewhere a failed send is the test's failure.
    fn send_from(
        ns: &str,
        src: &str,
        dst: &str,
        sport: u16,
        port: u16,
        n: usize,
        dropped_ok: bool,
    ) {
        let (src, dst) = (src.to_owned(), dst.to_owned());
        Self::in_ns(ns, move || {
            let sock = std::net::UdpSocket::bind(sock_addr(&src, sport)).expect("bind udp");
            for _ in 0..n {
                let sent = sock.send_to(b"astra-test-payload", sock_addr(&dst, port));
                if !dropped_ok {
                    sent.expect("send");
                }
            }
        });
        // Veth delivery is synchronous, but give the softirq a moment on a loaded machine.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `addr:port`, with brackets for IPv6.
fn sock_addr(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    astra::lab::kit::free_port().expect("free port")
}

pub fn astra_bin() -> &'static str {
    env!("CARGO_BIN_EXE_astra")
}

/// Runs the CLI with the test's pin and state dirs; returns (status code, stdout, stderr).
pub fn cli(pin: &Path, state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(astra_bin())
        .args(args)
        .arg("--pin-dir")
        .arg(pin)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run astra");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn cli_ok(pin: &Path, state: &Path, args: &[&str]) -> String {
    let (code, out, err) = cli(pin, state, args);
    assert_eq!(code, 0, "astra {args:?} failed: {err}");
    out
}

/// The agent, running inside a namespace; killed (SIGKILL) on drop if still running.
pub struct Agent {
    process: AgentProcess,
    pub ns: String,
    pub metrics_port: u16,
    pub api_port: u16,
}

impl Agent {
    /// Starts `astra run` in `ns` (network namespace only: it shares our mount namespace,
    /// so its pins are visible to the test) and waits until it serves metrics. An empty
    /// `iface` starts it on no interface (its evidence then comes from logs).
    pub fn start(ns: &str, iface: &str, pin: &Path, state: &Path, extra: &[&str]) -> Agent {
        let (port, api_port) = (free_port(), free_port());
        let mut args = vec!["--poll-interval", "200ms"];
        args.extend_from_slice(extra);
        let netns = format!("/var/run/netns/{ns}");
        let process = AgentProcess::spawn(AgentSpec {
            exe: Path::new(astra_bin()),
            netns: &netns,
            ifaces: &[iface.to_owned()][..usize::from(!iface.is_empty())],
            pin_dir: pin,
            state_dir: state,
            metrics_port: port,
            api_port: Some(api_port),
            extra: &args,
            log: state.join(format!("agent-{port}.log")),
        })
        .expect("spawn agent");
        let mut agent = Agent {
            process,
            ns: ns.to_owned(),
            metrics_port: port,
            api_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = agent.process.try_wait() {
                panic!("agent exited early ({st}):\n{}", agent.log());
            }
            if agent
                .try_metrics()
                .is_some_and(|m| m.contains("astra_polls_total{result=\"ok\"}"))
            {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not come up:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    fn try_metrics(&self) -> Option<String> {
        http(&self.ns, self.metrics_port, "GET", "/metrics", None, None).map(|(_, body)| body)
    }

    /// One API request: (status, body). `token` goes in as a bearer token.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        http(&self.ns, self.api_port, method, path, token, body)
            .unwrap_or_else(|| panic!("API {method} {path} did not answer:\n{}", self.log()))
    }

    pub fn pid(&self) -> i32 {
        self.process.pid() as i32
    }

    pub fn metrics(&self) -> String {
        self.try_metrics().expect("metrics endpoint")
    }

    /// Waits for two more polls so counters read after this include everything sent before.
    pub fn settle(&self) {
        let polls = |m: &str| sample(m, "astra_polls_total{result=\"ok\"}").unwrap_or(0.0);
        let start = polls(&self.metrics());
        let deadline = Instant::now() + Duration::from_secs(10);
        while polls(&self.metrics()) < start + 2.0 {
            assert!(
                Instant::now() < deadline,
                "agent stopped polling:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        self.process.stop().expect("wait agent")
    }

    pub fn kill9(mut self) {
        self.process.kill();
    }
}

/// Value of the sample whose line starts with `series` (labels in Prometheus' sorted order).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port` inside namespace `ns`: (status, body).
pub fn http(
    ns: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
    } else {
        req += "\r\n";
    }
    raw_http(ns, port, req.into_bytes())
}

/// Reads the agent's event stream inside namespace `ns` until `n` events have come or
/// `within` has passed: (event name, data) each.
pub fn stream_events(
    ns: &str,
    port: u16,
    token: Option<&str>,
    n: usize,
    within: Duration,
) -> Vec<(String, String)> {
    let token = token.map(str::to_owned);
    Lab::in_ns(ns, move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut req = format!("GET /api/v1/stream HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
        if let Some(t) = token {
            req += &format!("Authorization: Bearer {t}\r\n");
        }
        s.write_all(format!("{req}\r\n").as_bytes()).unwrap();
        let (deadline, mut buf, mut chunk) = (Instant::now() + within, Vec::new(), [0u8; 65536]);
        let mut events = Vec::new();
        while events.len() < n && Instant::now() < deadline {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            events = body
                .split("\n\n")
                .filter_map(|ev| {
                    let name = ev.lines().find_map(|l| l.strip_prefix("event: "))?;
                    let data = ev.lines().find_map(|l| l.strip_prefix("data: "))?;
                    Some((name.to_owned(), data.to_owned()))
                })
                .collect();
            // The last event may be cut: only count those a blank line ended.
            if !body.ends_with("\n\n") {
                events.pop();
            }
        }
        // One read may bring more than were asked for.
        events.truncate(n);
        events
    })
}

/// Sends `request` as it is to 127.0.0.1:`port` inside namespace `ns` and reads the answer
/// to the end: (status, body).
pub fn raw_http(ns: &str, port: u16, request: Vec<u8>) -> Option<(u16, String)> {
    Lab::in_ns(ns, move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        // A server may answer (and close) before taking all of a large body.
        let _ = s.write_all(&request);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let buf = String::from_utf8_lossy(&buf).into_owned();
        let code = buf.split(' ').nth(1)?.parse().ok()?;
        let body = buf.split_once("\r\n\r\n")?.1.to_owned();
        Some((code, body))
    })
}
