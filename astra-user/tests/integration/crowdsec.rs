//! The CrowdSec bouncer against a real Local API: Debian's crowdsec, one LAPI per test, on the
//! loopback of the namespace the agent runs in, with a config dir, database and port of the
//! test's own. Decisions go in with `cscli`, as an operator's would.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use astra::lab::kit::ScratchDir;

use crate::kit::{Agent, Lab, cli_ok, free_port, pin_dir, state_dir};

/// A LAPI (`crowdsec -no-cs -no-capi`) in a network namespace; killed, with everything it
/// started, on drop.
struct Lapi {
    dir: ScratchDir,
    ns: String,
    port: u16,
    child: Option<Child>,
}

impl Lapi {
    fn start(ns: &str) -> Lapi {
        Self::start_on(ns, "127.0.0.1")
    }

    /// A LAPI listening on `ip` (`0.0.0.0`: every address of its namespace).
    fn start_on(ns: &str, ip: &str) -> Lapi {
        let dir = ScratchDir::dir_at(
            std::env::temp_dir().join(astra::lab::kit::unique("astra-lapi-")),
            0o700,
        )
        .expect("LAPI dir");
        let port = free_port();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("hub")).unwrap();
        std::fs::write(dir.path().join("simulation.yaml"), "simulation: false\n").unwrap();
        std::fs::write(
            dir.path().join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: {d}
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
cscli:
  output: json
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
api:
  client:
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: {ip}:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
prometheus:
  enabled: false
"
            ),
        )
        .unwrap();
        let mut lapi = Lapi {
            dir,
            ns: ns.to_owned(),
            port,
            child: None,
        };
        // The machine cscli adds decisions as; written to the database, no LAPI needed.
        lapi.cscli(&[
            "machines",
            "add",
            "astra-test",
            "--password",
            "astra-test-password",
            "-f",
            &format!("{d}/local_api_credentials.yaml"),
        ]);
        lapi.run();
        lapi
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    fn command(&self, program: &str) -> Command {
        let mut c =
            astra::lab::netns::lab_command_in(&format!("/var/run/netns/{}", self.ns), program)
                .expect("command in the namespace");
        c.current_dir(self.dir.path()).arg("-c").arg(self.config());
        c
    }

    /// Starts the LAPI and waits until it answers.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("lapi.log"))
            .unwrap();
        let child = self
            .command("crowdsec")
            .args(["-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start crowdsec (cargo xtask test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = self.port;
        while !Lab::in_ns(&self.ns, move || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            assert!(
                Instant::now() < deadline,
                "LAPI did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            astra::lab::netns::kill_group(&mut c);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lapi.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Machine credentials for a watcher, as `cscli machines add -f` writes them.
    fn machine_file(&self, name: &str) -> PathBuf {
        let file = self.dir.path().join(format!("{name}.yaml"));
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            &format!("{name}-password-{}", std::process::id()),
            "-f",
            file.to_str().unwrap(),
        ]);
        file
    }

    /// The alerts the LAPI holds (`cscli alerts list -a`).
    fn alerts(&self) -> Vec<serde_json::Value> {
        let out = self.cscli(&["alerts", "list", "-a", "-l", "0", "-o", "json"]);
        serde_json::from_str::<Option<Vec<serde_json::Value>>>(&out)
            .unwrap_or_else(|e| panic!("cscli alerts list: {e}: {out}"))
            .unwrap_or_default()
    }

    fn cscli(&self, args: &[&str]) -> String {
        let out = self
            .command("cscli")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cscli");
        assert!(
            out.status.success(),
            "cscli {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A bouncer key registered with the LAPI, in a file for `--crowdsec-key-file`.
    fn bouncer_key_file(&self, name: &str) -> PathBuf {
        let key = format!("astra-key-{name}-{}", std::process::id());
        self.cscli(&["bouncers", "add", name, "-k", &key]);
        let file = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&file, format!("{key}\n")).unwrap();
        file
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The agent's list rows (`astra list --json`).
fn listed(pin: &Path, state: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&cli_ok(pin, state, &["list", "--json"])).expect("list JSON")
}

/// `astra status --json`.
fn status_of(pin: &Path, state: &Path) -> serde_json::Value {
    serde_json::from_str(&cli_ok(pin, state, &["status", "--json"])).unwrap()
}

/// The agent's bouncer status, from `astra status --json`.
fn bouncer(pin: &Path, state: &Path) -> serde_json::Value {
    status_of(pin, state)["agent"]["crowdsec"].clone()
}

/// Waits up to `limit` for `f`, checking every 100 ms; how long it took, or a panic saying
/// `what`.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

fn agent_with(lab: &Lab, lapi: &Lapi, key: &Path, pin: &Path, state: &Path) -> Agent {
    Agent::start(
        &lab.ns_b,
        &lab.if_b,
        pin,
        state,
        &[
            "--crowdsec-url",
            &lapi.url(),
            "--crowdsec-key-file",
            key.to_str().unwrap(),
            "--crowdsec-interval",
            "1s",
        ],
    )
}

#[test]
fn cscli_decisions_are_dropped_in_the_kernel_and_lifted_when_deleted() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let other = format!("198.19.{}.1", lab.net);
    lab.add_a_addr(&format!("{other}/24"));
    let lapi = Lapi::start(&lab.ns_b);
    let key = lapi.bouncer_key_file("astra");
    let (pin, state) = (pin_dir(), state_dir());
    let agent = agent_with(&lab, &lapi, &key, pin.path(), state.path());
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 3), 3);
    assert_eq!(lab.deliver(&other, &lab.b_v4(), 3), 3);
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 3), 3);

    let range = format!("198.19.{}.0/24", lab.net);
    let own_range = format!("198.18.{}.0/24", lab.net);
    lapi.cscli(&[
        "decisions",
        "add",
        "-i",
        &lab.a_v4(),
        "-d",
        "1h",
        "-R",
        "astra test ban",
    ]);
    lapi.cscli(&["decisions", "add", "-r", &range, "-d", "2h"]);
    lapi.cscli(&["decisions", "add", "-i", &lab.a_v6(), "-d", "30m"]);
    // Covers the agent's own address: never enforced.
    lapi.cscli(&["decisions", "add", "-r", &own_range, "-d", "1h"]);
    let took = within(
        Duration::from_secs(5),
        "three decisions in the kernel",
        || {
            listed(pin.path(), state.path())
                .iter()
                .filter(|r| r["source"] == "crowdsec" && r["in_kernel"] == true)
                .count()
                == 3
        },
    );
    println!("cscli decisions in the kernel after {took:.2?} (interval 1 s)");
    let (a4, a6, b4, b6) = (lab.a_v4(), lab.a_v6(), lab.b_v4(), lab.b_v6());
    let senders = [
        (&a4, &b4, "the banned address"),
        (&other, &b4, "the banned range"),
        (&a6, &b6, "the banned IPv6 address"),
    ];
    for (src, dst, who) in senders {
        assert_eq!(lab.deliver(src, dst, 5), 0, "{who} passed");
    }
    let rows = listed(pin.path(), state.path());
    let row = |net: &str| {
        rows.iter()
            .find(|r| r["net"] == net)
            .unwrap_or_else(|| panic!("{net} not listed: {rows:?}"))
            .clone()
    };
    let ban = row(&format!("{}/32", lab.a_v4()));
    assert_eq!(ban["tag"], "crowdsec/cscli", "{ban}");
    assert_eq!(ban["reason"], "astra test ban", "{ban}");
    let ttl = ban["ttl_remaining_s"].as_u64().expect("a ban expires");
    assert!(
        (3500..=3600).contains(&ttl),
        "the decision's remaining time: {ban}"
    );
    assert_eq!(row(&range)["kind"], "block");
    assert!(
        !rows.iter().any(|r| r["net"] == own_range.as_str()),
        "{rows:?}"
    );
    let st = bouncer(pin.path(), state.path());
    assert_eq!(st["up"], true, "{st}");
    // In force: the one on the agent's own network is not.
    assert_eq!(st["decisions"]["cscli"], 3, "{st}");

    lapi.cscli(&["decisions", "delete", "-i", &lab.a_v4()]);
    lapi.cscli(&["decisions", "delete", "-r", &range]);
    within(Duration::from_secs(5), "deleted decisions lifted", || {
        listed(pin.path(), state.path())
            .iter()
            .filter(|r| r["source"] == "crowdsec")
            .count()
            == 1
    });
    // The first two were deleted; the IPv6 ban stays.
    for ((src, dst, who), left) in senders.into_iter().zip([3, 3, 0]) {
        assert_eq!(lab.deliver(src, dst, 3), left, "{who} after the deletions");
    }
    let m = agent.metrics();
    assert!(m.contains("astra_crowdsec_up 1"), "{m}");
    assert!(
        m.contains("astra_crowdsec_decisions{origin=\"cscli\"} 1"),
        "{m}"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_lapi_killed_and_restarted_loses_nothing_and_a_wrong_key_is_reported() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let mut lapi = Lapi::start(&lab.ns_b);
    let (pin, state) = (pin_dir(), state_dir());

    // A key the LAPI does not know: reported, retried, never fatal.
    let wrong = lapi.dir.path().join("wrong.key");
    std::fs::write(&wrong, "not-a-registered-key\n").unwrap();
    let agent = agent_with(&lab, &lapi, &wrong, pin.path(), state.path());
    within(Duration::from_secs(5), "a rejected key in status", || {
        bouncer(pin.path(), state.path())["key_rejected"] == true
    });
    within(Duration::from_secs(10), "the rejected key retried", || {
        bouncer(pin.path(), state.path())["failed_pulls"].as_u64() >= Some(3)
    });
    let log = agent.log();
    assert_eq!(
        log.matches("rejected the bouncer key").count(),
        1,
        "one log line for a rejected key:\n{log}"
    );
    assert!(agent.stop().success());

    let key = lapi.bouncer_key_file("astra");
    let agent = agent_with(&lab, &lapi, &key, pin.path(), state.path());
    let (a, b) = (lab.a_v4(), lab.b_v4());
    let second = format!("198.18.{}.9", lab.net);
    lab.add_a_addr(&format!("{second}/24"));
    lapi.cscli(&["decisions", "add", "-i", &a, "-d", "1h"]);
    within(Duration::from_secs(5), "the ban in the kernel", || {
        lab.deliver(&a, &b, 2) == 0
    });

    lapi.kill();
    within(Duration::from_secs(5), "the LAPI reported down", || {
        let st = bouncer(pin.path(), state.path());
        st["up"] == false && st["last_error"].as_str().is_some()
    });
    // Down: the kernel keeps enforcing, the agent keeps running.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.deliver(&a, &b, 5),
        0,
        "ban lost while the LAPI was down"
    );
    assert_eq!(lab.deliver(&second, &b, 3), 3);
    let m = agent.metrics();
    assert!(m.contains("astra_crowdsec_up 0"), "{m}");

    // Back: the ban deleted and another added before the bouncer's first pull since.
    lapi.run();
    lapi.cscli(&["decisions", "delete", "-i", &a]);
    lapi.cscli(&["decisions", "add", "-i", &second, "-d", "1h"]);
    within(
        Duration::from_secs(20),
        "changes made around the outage applied",
        || {
            let st = bouncer(pin.path(), state.path());
            st["up"] == true && lab.deliver(&second, &b, 1) == 0
        },
    );
    assert_eq!(
        lab.deliver(&a, &b, 3),
        3,
        "a ban deleted during the outage stayed"
    );
    let log = agent.log();
    assert!(log.contains("CrowdSec LAPI reachable again"), "{log}");
    assert!(agent.stop().success());
}

/// Joins the agents' namespaces of two labs with a veth pair, 198.19.254.1 (first) and .2.
fn join(l1: &Lab, l2: &Lab) {
    let run = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    run(&[
        "-n", &l1.ns_b, "link", "add", "vcs", "type", "veth", "peer", "name", "vcs", "netns",
        &l2.ns_b,
    ]);
    for (ns, addr) in [(&l1.ns_b, "198.19.254.1/30"), (&l2.ns_b, "198.19.254.2/30")] {
        run(&["-n", ns, "addr", "add", addr, "dev", "vcs"]);
        run(&["-n", ns, "link", "set", "vcs", "up"]);
    }
}

#[test]
fn a_scan_one_agent_blocks_is_dropped_by_the_other_through_the_lapi() {
    if !crate::kit::privileged() {
        return;
    }
    use astra::lab::traffic;
    // Two hosts, each attacked from the same address; a LAPI on the first, reachable from
    // the second over a link of their own.
    let (l1, l2) = (Lab::quiet_v4(), Lab::quiet_v4());
    join(&l1, &l2);
    let scanner = l1.a_v4();
    l2.add_a_addr(&format!("{scanner}/24"));
    let mut lapi = Lapi::start_on(&l1.ns_b, "0.0.0.0");
    let (p1, s1, p2, s2) = (pin_dir(), state_dir(), pin_dir(), state_dir());
    let (k1, k2, machine) = (
        lapi.bouncer_key_file("gw1"),
        lapi.bouncer_key_file("gw2"),
        lapi.machine_file("gw1"),
    );
    let common = |key: &Path, url: &str| {
        vec![
            "--crowdsec-url".to_owned(),
            url.to_owned(),
            "--crowdsec-key-file".to_owned(),
            key.display().to_string(),
            "--crowdsec-interval".to_owned(),
            "1s".to_owned(),
        ]
    };
    let mut a1 = common(&k1, &lapi.url());
    a1.extend([
        "--crowdsec-machine-file".to_owned(),
        machine.display().to_string(),
    ]);
    let a1: Vec<&str> = a1.iter().map(String::as_str).collect();
    let a2 = common(&k2, &format!("http://198.19.254.1:{}", lapi.port));
    let a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    let agent1 = Agent::start(&l1.ns_b, &l1.if_b, p1.path(), s1.path(), &a1);
    let agent2 = Agent::start(&l2.ns_b, &l2.if_b, p2.path(), s2.path(), &a2);
    assert_eq!(l2.deliver(&scanner, &l2.b_v4(), 3), 3);

    let t0 = Instant::now();
    traffic::connect_scan(l1.a(), l1.b_v4().parse().unwrap(), (1..=100).collect()).unwrap();
    let blocked_here = within(
        Duration::from_secs(5),
        "the scanner blocked by the first agent",
        || {
            listed(p1.path(), s1.path())
                .iter()
                .any(|r| r["net"] == format!("{scanner}/32") && r["source"] == "auto")
        },
    );
    let there = within(
        Duration::from_secs(8),
        "the scanner dropped by the second agent",
        || l2.deliver(&scanner, &l2.b_v4(), 1) == 0,
    );
    println!(
        "scan blocked by the first agent after {blocked_here:.2?}, dropped by the second {there:.2?} later (push every 1 s, pull every 1 s); {:.2?} in all",
        t0.elapsed()
    );
    let rows = listed(p2.path(), s2.path());
    let row = rows
        .iter()
        .find(|r| r["net"] == format!("{scanner}/32"))
        .unwrap_or_else(|| panic!("not listed on the second agent: {rows:?}"));
    assert_eq!(
        (row["source"].as_str(), row["tag"].as_str()),
        (Some("crowdsec"), Some("crowdsec/astra")),
        "{row}"
    );
    assert_eq!(row["reason"], "astra/port_scan", "{row}");
    let alerts = lapi.alerts();
    let pushed: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["scenario"] == "astra/port_scan")
        .collect();
    assert!(!pushed.is_empty(), "{alerts:?}");
    assert_eq!(pushed[0]["source"]["value"], scanner.as_str());

    // An outage: the next block's alert waits in the outbox, and reaches the second agent
    // once the LAPI is back.
    lapi.kill();
    let flooder = format!("198.18.{}.9", l1.net);
    l1.add_a_addr(&format!("{flooder}/24"));
    l2.add_a_addr(&format!("{flooder}/24"));
    traffic::syn_flood(
        l1.a(),
        traffic::SourceAddr::Real(flooder.parse().unwrap()),
        l1.b_v4().parse().unwrap(),
        80,
        400,
    )
    .unwrap();
    within(
        Duration::from_secs(5),
        "the flooder blocked by the first agent",
        || {
            listed(p1.path(), s1.path())
                .iter()
                .any(|r| r["net"] == format!("{flooder}/32"))
        },
    );
    within(
        Duration::from_secs(5),
        "the alert waiting in the outbox",
        || {
            bouncer(p1.path(), s1.path()).is_object()
                && status_of(p1.path(), s1.path())["agent"]["crowdsec_watcher"]["queued"].as_u64()
                    >= Some(1)
        },
    );
    assert_eq!(l2.deliver(&flooder, &l2.b_v4(), 3), 3);
    lapi.run();
    let t_back = Instant::now();
    while l2.deliver(&flooder, &l2.b_v4(), 1) != 0 {
        assert!(
            t_back.elapsed() < Duration::from_secs(40),
            "the outbox was not pushed after the outage:\n{}\n{}",
            status_of(p1.path(), s1.path())["agent"]["crowdsec_watcher"],
            agent1.log()
        );
    }
    let back = t_back.elapsed();
    println!("after the LAPI came back, the queued block reached the second agent in {back:.2?}");

    // A restart pushes nothing twice, not even a batch whose answer was lost: the scan's
    // alert, put back in the outbox as if the agent had died during its push, is found on the
    // LAPI and not sent again.
    assert!(agent1.stop().success());
    {
        use astra::sink::crowdsec::{OUTBOX, OUTBOX_CAP, to_lapi};
        let store = astra::store::Store::open(s1.path()).unwrap();
        let scan = astra::sink::history::alerts(&store, 0, 1000)
            .unwrap()
            .into_iter()
            .find(|a| a.attack_type.as_str() == "port_scan")
            .expect("the scan's alert in the history");
        store
            .outbox_push(
                OUTBOX,
                &[(scan.id.clone(), to_lapi(&scan).to_string())],
                0,
                OUTBOX_CAP,
            )
            .unwrap();
        let seqs: Vec<i64> = store
            .outbox_peek(OUTBOX, 10)
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect();
        assert_eq!(seqs.len(), 1);
        store.outbox_mark_sending(&seqs).unwrap();
    }
    let agent1 = Agent::start(&l1.ns_b, &l1.if_b, p1.path(), s1.path(), &a1);
    within(
        Duration::from_secs(10),
        "the in-flight alert settled",
        || status_of(p1.path(), s1.path())["agent"]["crowdsec_watcher"]["queued"] == 0,
    );
    let log = agent1.log();
    assert!(
        log.contains("CrowdSec already holds alerts pushed before an answer was lost"),
        "{log}"
    );
    let alerts = lapi.alerts();
    let mut ids: Vec<String> = alerts
        .iter()
        .flat_map(|a| a["events"].as_array().cloned().unwrap_or_default())
        .flat_map(|e| e["meta"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["key"] == "astra_alert_id")
        .filter_map(|m| m["value"].as_str().map(str::to_owned))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an alert was pushed twice: {alerts:?}");
    assert!(n >= 2, "{alerts:?}");
    assert_eq!(
        status_of(p1.path(), s1.path())["agent"]["crowdsec_watcher"]["queued"],
        0
    );
    assert!(agent1.stop().success());
    assert!(agent2.stop().success());
}
