//! Running Astra the way operators do: the HTTP API with its token, the configuration file
//! with SIGHUP reloads, a damaged state store, and the deploy/ files against a live agent.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kit::{Agent, Lab, ScratchDir, cli, cli_ok, pin_dir, state_dir};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The agent's API token, as `astra token show` prints it.
fn token(pin: &std::path::Path, state: &std::path::Path) -> String {
    cli_ok(pin, state, &["token", "show"]).trim().to_owned()
}

fn blocked(pin: &std::path::Path, state: &std::path::Path) -> Vec<String> {
    let out = cli_ok(pin, state, &["list", "--kind", "block", "--json"]);
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["net"].as_str().unwrap().to_owned())
        .collect()
}

/// A quiet lab with the agent on B at its defaults, polled once; none without privileges.
fn lab_with_agent() -> Option<(Lab, ScratchDir, ScratchDir, Agent)> {
    if !crate::kit::privileged() {
        return None;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    agent.settle();
    Some((lab, pin, state, agent))
}

/// The summary endpoints a dashboard draws from: traffic totals and rates, the sources of the
/// live conversations, and alerts by type.
#[test]
fn stats_top_talkers_and_attack_summary_describe_what_was_seen() {
    let Some((lab, pin, state, agent)) = lab_with_agent() else {
        return;
    };
    let (a, b) = (lab.a_v4(), lab.b_v4());
    assert_eq!(lab.deliver(&a, &b, 50), 50);
    agent.settle();
    let stats = json(&agent.api("GET", "/api/v1/stats", None, None).1);
    assert_eq!(stats["agent_running"], true, "{stats}");
    assert!(stats["traffic"]["packets"].as_u64() >= Some(50), "{stats}");
    assert!(
        stats["traffic"]["bytes"].as_u64() > Some(50 * 28),
        "{stats}"
    );
    assert!(
        stats["traffic"]["packets_per_s"].as_f64().is_some(),
        "{stats}"
    );
    assert!(stats["flows_active"].as_u64() >= Some(1), "{stats}");
    // A block, and the drops it makes, show in the next poll's rates and totals.
    cli_ok(pin.path(), state.path(), &["block", &a]);
    assert_eq!(lab.deliver(&a, &b, 200), 0);
    agent.settle();
    let stats = json(&agent.api("GET", "/api/v1/stats", None, None).1);
    assert!(stats["traffic"]["dropped"].as_u64() >= Some(200), "{stats}");
    assert_eq!(stats["lists"]["block"], 1, "{stats}");

    let talkers = json(
        &agent
            .api("GET", "/api/v1/top-talkers?limit=5", None, None)
            .1,
    );
    let first = &talkers.as_array().expect("a list")[0];
    assert_eq!(first["addr"], a.as_str(), "{talkers}");
    assert!(first["packets_sent"].as_u64() >= Some(50), "{talkers}");
    let (code, body) = agent.api("GET", "/api/v1/top-talkers?limit=0", None, None);
    assert_eq!(code, 400, "{body}");

    let summary = json(
        &agent
            .api("GET", "/api/v1/attack-summary?since=1h", None, None)
            .1,
    );
    assert_eq!(summary["alerts"], 0, "{summary}");
    let (code, body) = agent.api("GET", "/api/v1/attack-summary?since=soon", None, None);
    assert_eq!(code, 400, "{body}");
}

#[test]
fn api_serves_reads_and_guards_changes_with_the_token() {
    let Some((lab, pin, state, agent)) = lab_with_agent() else {
        return;
    };

    assert_eq!(agent.api("GET", "/healthz", None, None).0, 200);
    let (code, body) = agent.api("GET", "/readyz", None, None);
    assert_eq!(code, 200, "{body}");

    // Every read the OpenAPI document lists answers (the document matches the router).
    let doc = json(&agent.api("GET", "/api/v1/openapi.json", None, None).1);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if ops.get("get").is_none() || path.contains('{') || path.ends_with("/stream") {
            continue;
        }
        let (code, body) = agent.api("GET", path, None, None);
        assert_eq!(code, 200, "GET {path}: {body}");
    }
    // The stream never ends: read its first events. The hello carries the samples of the
    // last minutes, so traffic sent before shows in it, on the interface it came in by.
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 20), 20);
    agent.settle();
    let events =
        crate::kit::stream_events(&agent.ns, agent.api_port, None, 2, Duration::from_secs(10));
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["hello", "sample"], "{events:?}");
    let hello = json(&events[0].1);
    let seen = hello["samples"].as_array().unwrap().iter().any(|s| {
        s["rates"].as_array().unwrap().iter().any(|r| {
            r["iface"] == lab.if_b.as_str()
                && r["action"] == "pass"
                && r["pps"].as_f64() > Some(0.0)
        })
    });
    assert!(seen, "{hello}");
    let status = json(&agent.api("GET", "/api/v1/status", None, None).1);
    assert_eq!(status["agent_running"], true);
    assert!(status["flow_capacity"].as_u64().is_some());

    // The token is the agent's, private to root.
    let token = token(pin.path(), state.path());
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(state.path().join("api.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let a = lab.a_v4();
    let body = format!(r#"{{"net": "{a}", "ttl": "10m", "reason": "api test"}}"#);
    // No token, a wrong token, a bad body, a bad address: refused, and nothing changes.
    let (code, resp) = agent.api("POST", "/api/v1/blocklist", None, Some(&body));
    assert_eq!(code, 401, "{resp}");
    let (code, _) = agent.api("POST", "/api/v1/blocklist", Some("0000"), Some(&body));
    assert_eq!(code, 401);
    let (code, resp) = agent.api(
        "POST",
        "/api/v1/blocklist",
        Some(&token),
        Some(r#"{"nett": "198.18.0.1"}"#),
    );
    assert_eq!(code, 400, "{resp}");
    assert!(
        json(&resp)["error"].as_str().unwrap().contains("nett"),
        "{resp}"
    );
    let (code, resp) = agent.api(
        "POST",
        "/api/v1/blocklist",
        Some(&token),
        Some(r#"{"net": "198.18.0.300"}"#),
    );
    assert_eq!(code, 400, "{resp}");
    let (code, _) = agent.api(
        "POST",
        "/api/v1/blocklist",
        Some(&token),
        Some(&format!(r#"{{"net": "{a}", "ttl": "soon"}}"#)),
    );
    assert_eq!(code, 400);
    // Everything, and a reason beyond the cap: refused too.
    let (code, resp) = agent.api(
        "POST",
        "/api/v1/blocklist",
        Some(&token),
        Some(r#"{"net": "0.0.0.0/0"}"#),
    );
    assert_eq!(code, 400, "{resp}");
    assert!(resp.contains("covers every address"), "{resp}");
    let long = format!(r#"{{"net": "{a}", "reason": "{}"}}"#, "r".repeat(600));
    let (code, resp) = agent.api("POST", "/api/v1/blocklist", Some(&token), Some(&long));
    assert_eq!(code, 400, "{resp}");
    assert!(blocked(pin.path(), state.path()).is_empty());
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 5);

    // With the token the block is in force in the kernel when the call returns.
    let (code, resp) = agent.api("POST", "/api/v1/blocklist", Some(&token), Some(&body));
    assert_eq!(code, 201, "{resp}");
    assert_eq!(json(&resp)["in_kernel"], true);
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);
    let list = json(&agent.api("GET", "/api/v1/blocklist", None, None).1);
    assert_eq!(list["entries"][0]["net"], format!("{a}/32"));
    assert_eq!(list["entries"][0]["reason"], "api test");
    assert_eq!(list["entries"][0]["in_kernel"], true);
    assert_eq!(list["total"], 1);
    assert_eq!(list["next_offset"], Value::Null);

    // DELETE needs the token too; a prefix's '/' may come as is.
    let path = format!("/api/v1/blocklist/{a}/32");
    assert_eq!(agent.api("DELETE", &path, None, None).0, 401);
    assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 204);
    assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 404);
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 5);

    // Allowlist round trip, with %2F for the prefix.
    let (code, _) = agent.api(
        "POST",
        "/api/v1/allowlist",
        Some(&token),
        Some(r#"{"net": "198.18.250.0/24"}"#),
    );
    assert_eq!(code, 201);
    // A block under it is reported the same way by the API and by the CLI: what the block
    // does is one library answer, which both render.
    let (code, resp) = agent.api(
        "POST",
        "/api/v1/blocklist",
        Some(&token),
        Some(r#"{"net": "198.18.250.7"}"#),
    );
    assert_eq!(code, 201, "{resp}");
    assert_eq!(json(&resp)["allowlisted_by"], "198.18.250.0/24", "{resp}");
    let cli_says = json(&cli_ok(
        pin.path(),
        state.path(),
        &["block", "198.18.250.8", "--json"],
    ));
    assert_eq!(cli_says["allowlisted_by"], "198.18.250.0/24", "{cli_says}");
    for n in ["198.18.250.7/32", "198.18.250.8/32"] {
        let path = format!("/api/v1/blocklist/{n}");
        assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 204);
    }
    let code = agent
        .api(
            "DELETE",
            "/api/v1/allowlist/198.18.250.0%2F24",
            Some(&token),
            None,
        )
        .0;
    assert_eq!(code, 204);

    // Rotation: the old token stops working at once.
    let new = cli_ok(pin.path(), state.path(), &["token", "rotate"])
        .trim()
        .to_owned();
    assert_ne!(new, token);
    assert_eq!(
        agent
            .api("POST", "/api/v1/blocklist", Some(&token), Some(&body))
            .0,
        401
    );
    assert_eq!(
        agent
            .api("POST", "/api/v1/blocklist", Some(&new), Some(&body))
            .0,
        201
    );
    agent.stop();
}

/// Failed logins a service posts count like those seen on the wire: five to one port from
/// one address and it is blocked (the service saw it connect, so it is taken as real). A bad
/// event anywhere in a batch applies none of it, and successes alone block nothing.
#[test]
fn reported_failed_logins_block_their_source() {
    let Some((_lab, pin, state, agent)) = lab_with_agent() else {
        return;
    };
    let token = token(pin.path(), state.path());
    let event = |src: &str, kind: &str| {
        format!(
            r#"{{"src_ip": "{src}", "dst_port": 22, "protocol": "ssh", "event_type": "{kind}"}}"#
        )
    };
    let batch = |events: Vec<String>| format!("[{}]", events.join(","));
    let five = |src: &str, kind: &str| batch((0..5).map(|_| event(src, kind)).collect());

    // No token; a bad fifth event: nothing taken.
    let body = five("198.18.77.7", "login_failed");
    assert_eq!(
        agent.api("POST", "/api/v1/events", None, Some(&body)).0,
        401
    );
    let mut events: Vec<String> = (0..4)
        .map(|_| event("198.18.77.8", "login_failed"))
        .collect();
    events.push(
        r#"{"src_ip": "198.18.77.8", "dst_port": 99999, "event_type": "login_failed"}"#.into(),
    );
    let (code, resp) = agent.api("POST", "/api/v1/events", Some(&token), Some(&batch(events)));
    assert_eq!(code, 400, "{resp}");
    assert!(
        json(&resp)["error"]
            .as_str()
            .unwrap()
            .contains("events[4].dst_port"),
        "{resp}"
    );
    let (code, resp) = agent.api(
        "POST",
        "/api/v1/events",
        Some(&token),
        Some(&five("198.18.77.9", "login_success")),
    );
    assert_eq!(code, 202, "{resp}");
    assert_eq!(json(&resp)["login_failed"], 0);

    let (code, resp) = agent.api("POST", "/api/v1/events", Some(&token), Some(&body));
    assert_eq!(code, 202, "{resp}");
    assert_eq!(json(&resp)["accepted"], 5);
    wait_for(
        "the reported brute force to be blocked",
        || blocked(pin.path(), state.path()).contains(&"198.18.77.7/32".to_owned()),
        &agent,
    );
    agent.settle();
    let nets = blocked(pin.path(), state.path());
    assert_eq!(
        nets,
        ["198.18.77.7/32"],
        "only the reported source: {nets:?}"
    );
    agent.stop();
}

/// sshd's "Failed password" lines in a followed log count like reported failures: five and
/// the source is blocked; other lines block nothing.
#[test]
fn failed_logins_in_a_followed_sshd_log_block_their_source() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let log = state.path().join("auth.log");
    std::fs::write(&log, "").unwrap();
    let log_arg = format!("--auth-log={}", log.display());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[&log_arg]);
    agent.settle();
    let append = |text: &str| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append(
        "Dec  1 10:00:00 srv sshd[7]: Accepted password for alice from 198.18.66.5 port 4000 ssh2\n",
    );
    for i in 0..5 {
        append(&format!(
            "Dec  1 10:00:0{i} srv sshd[7]: Failed password for root from 198.18.66.6 port 400{i} ssh2\n"
        ));
    }
    wait_for(
        "the brute force in the log to be blocked",
        || blocked(pin.path(), state.path()).contains(&"198.18.66.6/32".to_owned()),
        &agent,
    );
    assert_eq!(blocked(pin.path(), state.path()), ["198.18.66.6/32"]);
    agent.stop();
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_status(state: &std::path::Path) -> Value {
    json(&std::fs::read_to_string(state.join("agent.json")).unwrap())
}

#[test]
fn config_file_applies_and_sighup_reloads_it() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let cfg = state.path().join("astra.toml");
    // The command line's --iface wins over the file's.
    std::fs::write(
        &cfg,
        "iface = [\"lo\"]\nidle_timeout = \"90s\"\n[detect.policy]\ndry_run = true\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let agent = Agent::start(
        &lab.ns_b,
        &lab.if_b,
        pin.path(),
        state.path(),
        &["--config", cfg_s],
    );
    assert_eq!(agent_status(state.path())["dry_run"], true);

    // `config check` shows the same merge the agent made.
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["config", "check", "--json", "--config", cfg_s],
    );
    let eff = json(&out);
    assert_eq!(eff["iface"][0], "lo");
    assert_eq!(eff["idle_timeout"], "1m 30s");
    assert_eq!(eff["detect"]["policy"]["dry_run"], true);

    // A bad edit is refused on SIGHUP and the running configuration stays.
    std::fs::write(&cfg, "idle_timeout = \"90s\"\nbogus = 1\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid(), libc::SIGHUP) };
    wait_for(
        "the rejection",
        || agent.log().contains("configuration rejected"),
        &agent,
    );
    assert!(agent.log().contains("unknown key `bogus`"));
    assert_eq!(agent_status(state.path())["dry_run"], true);

    // A good edit takes effect without a restart, and the flows and blocks stay.
    cli_ok(pin.path(), state.path(), &["block", "198.18.251.1"]);
    std::fs::write(&cfg, "[detect.policy]\ndry_run = false\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid(), libc::SIGHUP) };
    wait_for(
        "the reload",
        || agent_status(state.path())["dry_run"] == false,
        &agent,
    );
    assert!(agent.log().contains("configuration reloaded"));
    assert_eq!(blocked(pin.path(), state.path()), vec!["198.18.251.1/32"]);
    agent.settle();

    // Unknown keys are errors naming the key, before anything is loaded.
    std::fs::write(&cfg, "pol_interval = \"1s\"\n").unwrap();
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["config", "check", "--config", cfg_s],
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown key `pol_interval`"), "{err}");
    agent.stop();
}

#[test]
fn damaged_store_is_reported_and_enforcement_continues() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let a = lab.a_v4();
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    cli_ok(pin.path(), state.path(), &["block", &a]);
    assert_eq!(agent.stop().code(), Some(0));

    // The database is overwritten with garbage while no agent runs.
    let db = state.path().join("astra.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(state.path().join(format!("astra.db{suffix}")));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();

    let (code, out, err) = cli(pin.path(), state.path(), &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("UNUSABLE") && out.contains("corrupt"), "{out}");
    let (code, _, err) = cli(pin.path(), state.path(), &["list"]);
    assert_ne!(code, 0);
    assert!(err.contains("corrupt"), "{err}");

    // The agent starts anyway, says why decisions are not durable, and the block the pinned
    // map holds is still enforced.
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert!(
        agent.log().contains("state store unusable"),
        "{}",
        agent.log()
    );
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);
    let st = agent_status(state.path());
    assert!(st["store_error"].as_str().unwrap().contains("corrupt"));
    agent.stop();
}

#[test]
fn run_keeps_a_feed_applied_as_the_file_changes() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let a = lab.a_v4();
    let feed = state.path().join("drop.netset");
    std::fs::write(&feed, format!("# test feed\n{a}\n198.18.252.0/24 ; SBL1\n")).unwrap();
    let feed_s = feed.to_str().unwrap();
    // A manual block the feed must never remove.
    cli_ok(pin.path(), state.path(), &["block", "198.18.253.1"]);
    let agent = Agent::start(
        &lab.ns_b,
        &lab.if_b,
        pin.path(),
        state.path(),
        &["--feed", feed_s, "--feed-every", "200ms"],
    );
    wait_for(
        "the feed",
        || blocked(pin.path(), state.path()).len() == 3,
        &agent,
    );
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);

    // The address leaves the file: its block goes; the others stay.
    std::fs::write(&feed, "198.18.252.0/24\n").unwrap();
    wait_for(
        "the feed change",
        || !blocked(pin.path(), state.path()).contains(&format!("{a}/32")),
        &agent,
    );
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 5);
    let mut left = blocked(pin.path(), state.path());
    left.sort();
    assert_eq!(left, vec!["198.18.252.0/24", "198.18.253.1/32"]);

    // A broken file keeps the previous entries in force.
    std::fs::write(&feed, "198.18.252.0/24\nnot-an-address\n").unwrap();
    wait_for(
        "the warning",
        || agent.log().contains("feed not applied"),
        &agent,
    );
    assert!(blocked(pin.path(), state.path()).contains(&"198.18.252.0/24".to_string()));
    agent.stop();
}

/// Sends UDP from `src` in namespace `ns_a` to `dst` in `ns_b` every millisecond until `stop`,
/// and returns (sent, received).
fn steady_stream(
    lab: &Lab,
    src: String,
    dst: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    use std::sync::atomic::Ordering;
    let (ns_a, ns_b) = (lab.ns_a.clone(), lab.ns_b.clone());
    std::thread::spawn(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop_rx = stop.clone();
        let dst_rx = dst.clone();
        let receiver = std::thread::spawn(move || {
            Lab::in_ns(&ns_b, move || {
                let sock = std::net::UdpSocket::bind(format!("{dst_rx}:0")).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                tx.send(sock.local_addr().unwrap().port()).unwrap();
                let mut got = 0;
                let mut buf = [0u8; 64];
                // Keep reading a little past the stop so late packets are counted.
                let mut quiet_after_stop = 0;
                while quiet_after_stop < 5 {
                    match sock.recv(&mut buf) {
                        Ok(_) => got += 1,
                        Err(_) if stop_rx.load(Ordering::SeqCst) => quiet_after_stop += 1,
                        Err(_) => {}
                    }
                }
                got
            })
        });
        let port = rx.recv().unwrap();
        let sent = Lab::in_ns(&ns_a, move || {
            let sock = std::net::UdpSocket::bind(format!("{src}:0")).unwrap();
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                sock.send_to(b"steady", format!("{dst}:{port}")).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        });
        (sent, receiver.join().unwrap())
    })
}

#[test]
fn restart_with_programs_kept_lets_no_blocked_packet_through() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let a = lab.a_v4();
    let keep = ["--on-exit", "keep"];
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &keep);
    cli_ok(pin.path(), state.path(), &["block", &a]);
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);

    // A blocked source streams throughout a stop and a start (an upgrade or `systemctl
    // restart`): not one packet may arrive.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = steady_stream(&lab, a.clone(), lab.b_v4(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.stop().code(), Some(0));
    // The gap between the agents, as long as a slow restart.
    std::thread::sleep(Duration::from_millis(500));
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &keep);
    agent.settle();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, received) = stream.join().unwrap();
    assert!(sent > 200, "the stream sent only {sent} packets");
    assert_eq!(
        received, 0,
        "{received} of {sent} blocked packets got through"
    );
    assert!(
        agent.log().contains("took over the XDP link"),
        "the second agent did not take over the links:\n{}",
        agent.log()
    );

    // `astra detach` is refused while the agent runs, and removes kept programs after.
    let (code, _, err) = cli(pin.path(), state.path(), &["detach"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(agent.stop().code(), Some(0));
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);
    let out = cli_ok(pin.path(), state.path(), &["detach"]);
    assert!(out.contains("detached xdp-"), "{out}");
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 5);
}

fn polls_failed(agent: &Agent) -> f64 {
    crate::kit::sample(&agent.metrics(), "astra_polls_total{result=\"error\"}").unwrap_or(0.0)
}

fn integrity(db: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The `i`th address after `base`, within its /17: the two writers below each get a /17 of
/// their own, so neither can unblock what the other blocked however fast they go.
fn nth_addr(base: [u8; 4], i: u32) -> String {
    assert!(i < 1 << 15, "a writer outran its address range");
    std::net::Ipv4Addr::from(u32::from_be_bytes(base) + 1 + i).to_string()
}

/// The database of a running agent survives the CLI and the API used side by side: the
/// reported sequence (an API read, a CLI block, an API block, a CLI block) first, then a
/// minute of CLI and API writers and readers at once. Nothing is lost, no poll fails, and the
/// file passes integrity_check. (Every API request used to open the file outside SQLite,
/// which dropped the agent's locks, and the next CLI command deleted the WAL under it.)
#[test]
fn store_survives_cli_and_api_side_by_side() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let token = token(pin.path(), state.path());
    let post = |net: &str| {
        let body = format!(r#"{{"net": "{net}", "reason": "api"}}"#);
        let (code, resp) = agent.api("POST", "/api/v1/blocklist", Some(&token), Some(&body));
        assert_eq!(code, 201, "POST {net}: {resp}\n{}", agent.log());
    };

    assert_eq!(agent.api("GET", "/api/v1/status", None, None).0, 200);
    cli_ok(pin.path(), state.path(), &["block", "198.18.210.1"]);
    post("198.18.210.2");
    cli_ok(pin.path(), state.path(), &["block", "198.18.210.3"]);
    agent.settle();
    assert_eq!(polls_failed(&agent), 0.0, "{}", agent.log());
    assert_eq!(blocked(pin.path(), state.path()).len(), 3);

    let secs: u64 = std::env::var("ASTRA_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut expected: Vec<String> = ["198.18.210.1", "198.18.210.2", "198.18.210.3"]
        .map(|a| format!("{a}/32"))
        .to_vec();
    std::thread::scope(|s| {
        // CLI writer: block, and unblock every third address again.
        let cli_writer = s.spawn(|| {
            let mut kept = Vec::new();
            for i in 0u32.. {
                if Instant::now() >= until {
                    break;
                }
                let a = nth_addr([198, 18, 128, 0], i);
                cli_ok(pin.path(), state.path(), &["block", &a, "--reason", "cli"]);
                if i % 3 == 2 {
                    cli_ok(pin.path(), state.path(), &["unblock", &a]);
                } else {
                    kept.push(format!("{a}/32"));
                }
            }
            kept
        });
        // API writer: the same through the API.
        let api_writer = s.spawn(|| {
            let mut kept = Vec::new();
            for i in 0u32.. {
                if Instant::now() >= until {
                    break;
                }
                let a = nth_addr([198, 19, 0, 0], i);
                post(&a);
                if i % 3 == 2 {
                    let path = format!("/api/v1/blocklist/{a}");
                    let (code, resp) = agent.api("DELETE", &path, Some(&token), None);
                    assert_eq!(code, 204, "DELETE {a}: {resp}");
                } else {
                    kept.push(format!("{a}/32"));
                }
            }
            kept
        });
        // Readers of every kind, CLI and API.
        for _ in 0..2 {
            s.spawn(|| {
                while Instant::now() < until {
                    for path in [
                        "/api/v1/status",
                        "/api/v1/blocklist",
                        "/api/v1/alerts",
                        "/api/v1/incidents",
                    ] {
                        let (code, body) = agent.api("GET", path, None, None);
                        assert_eq!(code, 200, "GET {path}: {body}\n{}", agent.log());
                    }
                    cli_ok(pin.path(), state.path(), &["status"]);
                    cli_ok(pin.path(), state.path(), &["list", "--json"]);
                    cli_ok(pin.path(), state.path(), &["alerts"]);
                }
            });
        }
        expected.extend(cli_writer.join().unwrap());
        expected.extend(api_writer.join().unwrap());
    });
    agent.settle();
    assert_eq!(polls_failed(&agent), 0.0, "{}", agent.log());
    assert!(!agent.log().contains("malformed"), "{}", agent.log());
    assert_eq!(agent_status(state.path())["store_error"], Value::Null);
    assert_eq!(agent.stop().code(), Some(0));

    assert_eq!(integrity(&state.path().join("astra.db")), "ok");
    let mut got = blocked(pin.path(), state.path());
    got.sort();
    expected.sort();
    assert!(expected.len() > 30, "too little happened: {expected:?}");
    assert_eq!(got, expected);
}

/// A database damaged while the agent runs: the agent falls back to memory (detection, blocks
/// and the API go on), says so in status and metrics, and moves back to the file once the
/// operator moves the damaged one away, keeping what it decided meanwhile.
#[test]
fn store_damaged_while_running_falls_back_and_recovers() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let token = token(pin.path(), state.path());
    cli_ok(pin.path(), state.path(), &["block", "198.18.230.1"]);
    let durable = |agent: &Agent| crate::kit::sample(&agent.metrics(), "astra_store_durable");
    assert_eq!(durable(&agent), Some(1.0));

    // Damage as a disk would: the schema becomes unreadable, and every connection hears of it.
    let db = state.path().join("astra.db");
    {
        let evil = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = evil
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap();
        evil.execute_batch(&format!(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = 'CREATE TABLE list_entries (' WHERE name = 'list_entries';
             PRAGMA schema_version = {};",
            v + 1
        ))
        .unwrap();
    }
    wait_for("the fall-back", || durable(&agent) == Some(0.0), &agent);
    let st = agent_status(state.path());
    assert!(
        st["store_error"].as_str().unwrap().contains("corrupt"),
        "{st}"
    );
    let api_status = json(&agent.api("GET", "/api/v1/status", None, None).1);
    assert!(api_status["store_error"].is_string(), "{api_status}");
    // Polls go on, and so do blocks through the API (in memory and in the kernel).
    agent.settle();
    let failed = polls_failed(&agent);
    let a = lab.a_v4();
    let body = format!(r#"{{"net": "{a}", "reason": "while degraded"}}"#);
    let (code, resp) = agent.api("POST", "/api/v1/blocklist", Some(&token), Some(&body));
    assert_eq!(code, 201, "{resp}");
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);
    agent.settle();
    assert_eq!(polls_failed(&agent), failed, "{}", agent.log());

    // The operator moves the damaged file away: the agent comes back to a new file with the
    // block it took meanwhile.
    std::fs::rename(&db, state.path().join("astra.db.bad")).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(state.path().join(format!("astra.db{suffix}")));
    }
    wait_for("the recovery", || durable(&agent) == Some(1.0), &agent);
    assert!(
        agent.log().contains("state store usable again"),
        "{}",
        agent.log()
    );
    assert_eq!(agent_status(state.path())["store_error"], Value::Null);
    // Both blocks are in the file: the one taken meanwhile, and the one the damaged file had
    // lost, which the in-memory store took over from the kernel.
    let mut got = blocked(pin.path(), state.path());
    got.sort();
    let mut want = vec!["198.18.230.1/32".to_owned(), format!("{a}/32")];
    want.sort();
    assert_eq!(got, want);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM list_entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 2);
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);
    agent.stop();
    assert_eq!(integrity(&db), "ok");
}

/// Commands act on the right agent: `astra detach` is refused by what is pinned and locked
/// (whatever state dir it is given), a list change with a mistyped --pin-dir is refused with the
/// agent's pin dir named, and an agent whose programs are detached under it says so.
#[test]
fn commands_refuse_another_agents_programs_and_the_agent_notices_a_detach() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state, other_state, other_pin) = (pin_dir(), state_dir(), state_dir(), pin_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let a = lab.a_v4();
    cli_ok(pin.path(), state.path(), &["block", &a]);
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);

    // detach with another state dir: refused, and the programs stay.
    let (code, _, err) = cli(pin.path(), other_state.path(), &["detach"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("(pid {})", agent.pid())) && err.contains("stop it instead"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 0);

    // A second agent on the same pin dir is refused too.
    let (code, _, err) = cli(
        pin.path(),
        other_state.path(),
        &[
            "run",
            "--iface",
            "lo",
            "--metrics-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("another astra agent"), "{err}");

    // A mistyped pin dir with the agent's state dir: refused, naming the agent's pin dir, and
    // nothing is stored.
    let b = "198.18.240.9";
    let (code, _, err) = cli(other_pin.path(), state.path(), &["block", b]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&pin.path().display().to_string()), "{err}");
    assert_eq!(blocked(pin.path(), state.path()), vec![format!("{a}/32")]);

    // The agent's XDP link detached under it (as `bpftool link detach` would): it says so in
    // its log, status, metrics and readiness.
    let link = pin.path().join("links").join(format!("xdp-{}", lab.if_b));
    astra::dataplane::detach_pinned_link(&link).unwrap();
    assert_eq!(lab.deliver(&a, &lab.b_v4(), 5), 5);
    wait_for(
        "the agent to notice",
        || agent_status(state.path())["interfaces"][0]["mode"] == "detached",
        &agent,
    );
    assert!(
        agent.log().contains("detached from this interface"),
        "{}",
        agent.log()
    );
    let series = format!("astra_interface_attached{{iface=\"{}\"}}", lab.if_b);
    assert_eq!(crate::kit::sample(&agent.metrics(), &series), Some(0.0));
    let (code, body) = agent.api("GET", "/readyz", None, None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("detached"), "{body}");
    agent.stop();
}

/// Hostile clients of the API: lists come in pages, idle connections are capped and cut after
/// the header timeout, and /metrics (its own listener) answers throughout.
#[test]
fn api_pages_lists_and_bounds_idle_connections() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let feed = state.path().join("many.txt");
    let text: String = (1..=25).map(|i| format!("198.18.244.{i}\n")).collect();
    std::fs::write(&feed, text).unwrap();
    cli_ok(
        pin.path(),
        state.path(),
        &["blocklist", "import", feed.to_str().unwrap()],
    );
    let page = |q: &str| {
        let (code, body) = agent.api("GET", &format!("/api/v1/blocklist{q}"), None, None);
        assert_eq!(code, 200, "{q}: {body}");
        json(&body)
    };
    let first = page("?limit=10");
    assert_eq!(first["entries"].as_array().unwrap().len(), 10);
    assert_eq!(
        (first["total"].clone(), first["next_offset"].clone()),
        (25.into(), 10.into())
    );
    let last = page("?offset=20&limit=10");
    assert_eq!(last["entries"].as_array().unwrap().len(), 5);
    assert_eq!(last["next_offset"], Value::Null);
    let mut seen: Vec<String> = Vec::new();
    for q in ["?limit=10", "?offset=10&limit=10", "?offset=20&limit=10"] {
        for e in page(q)["entries"].as_array().unwrap() {
            seen.push(e["net"].as_str().unwrap().to_owned());
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "pages overlap or miss entries");
    for q in [
        "?limit=0",
        "?limit=100000",
        "?offset=x",
        "?offset=9007199254740992",
    ] {
        let (code, _) = agent.api("GET", &format!("/api/v1/blocklist{q}"), None, None);
        assert_eq!(code, 400, "{q}");
    }

    // 600 clients that connect and send half a request, then nothing.
    let port = agent.api_port;
    let base = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .unwrap()
        .count();
    let mut idle = Lab::in_ns(&lab.ns_b, move || {
        (0..600)
            .filter_map(|_| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                use std::io::Write as _;
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
                Some(s)
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(idle.len(), 600, "the kernel refused connections");
    // The agent keeps at most its connection cap (256) of them; the rest are closed at once.
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .unwrap()
        .count();
    assert!(
        fds <= base + 256 + 8,
        "the agent holds {fds} descriptors ({base} before the idle clients)"
    );
    // /metrics has its own listener and slots.
    assert!(agent.metrics().contains("astra_polls_total"));
    // The header timeout (10 s) cuts a held half-request: the server closes it, so a read
    // sees the end of the stream (or a reset) rather than waiting on.
    // The first connection: surely one the agent holds (the last ones were over the cap).
    let held = idle.remove(0);
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 256];
    let cut = match std::io::Read::read(&mut &held, &mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        cut,
        "a half-sent request was held for 20 s:\n{}",
        agent.log()
    );
    // And with the slots freed, the API answers again without anyone closing.
    let deadline = Instant::now() + Duration::from_secs(25);
    while crate::kit::http(&lab.ns_b, port, "GET", "/healthz", None, None)
        .is_none_or(|(c, _)| c != 200)
    {
        assert!(
            Instant::now() < deadline,
            "idle connections were never cut:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    agent.stop();
}

/// The API's own refusals are `{"error": ...}` like the rest, the token is checked before a
/// body is read, the scheme is case-insensitive, and a loopback API refuses foreign Host
/// names (DNS rebinding). Found by schemathesis (ST105: text/plain errors).
#[test]
fn api_errors_are_json_and_requests_are_checked_before_their_bodies() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    let token = token(pin.path(), state.path());
    let port = agent.api_port;
    let send = |head: &str, body: &[u8]| {
        let mut req = head.replace('\n', "\r\n").into_bytes();
        req.extend_from_slice(body);
        crate::kit::raw_http(&lab.ns_b, port, req)
            .unwrap_or_else(|| panic!("no answer to {head}:\n{}", agent.log()))
    };
    let json_error = |(code, body): (u16, String), want: u16| {
        assert_eq!(code, want, "{body}");
        let v = json(&body);
        assert!(v["error"].is_string(), "{body}");
        v["error"].as_str().unwrap().to_owned()
    };
    let host = format!("Host: 127.0.0.1:{port}");

    for path in [
        "/api/v1/blocklist?bogus=1",
        "/api/v1/flows?top=many",
        "/api/v1/flows?top=10001",
        "/api/v1/alerts?limit=-1",
    ] {
        json_error(send(&format!("GET {path} HTTP/1.0\n{host}\n\n"), b""), 400);
    }
    json_error(send(&format!("GET /nope HTTP/1.0\n{host}\n\n"), b""), 404);
    let auth = format!("Authorization: Bearer {token}");
    json_error(
        send(
            &format!("PUT /api/v1/blocklist HTTP/1.0\n{host}\n{auth}\n\n"),
            b"",
        ),
        405,
    );

    // A 3 MB body without a token: 401, not 413; with the token: 413, as JSON.
    let big = vec![b'x'; 3 << 20];
    let head = |auth: &str| {
        format!(
            "POST /api/v1/blocklist HTTP/1.0\n{host}\n{auth}Content-Type: application/json\nContent-Length: {}\n\n",
            big.len()
        )
    };
    json_error(send(&head(""), &big), 401);
    json_error(send(&head(&format!("{auth}\n")), &big), 413);

    // The scheme in lower case is the same scheme.
    let body = r#"{"net": "198.18.245.1"}"#;
    let (code, resp) = send(
        &format!(
            "POST /api/v1/blocklist HTTP/1.0\n{host}\nAuthorization: bearer {token}\nContent-Type: application/json\nContent-Length: {}\n\n",
            body.len()
        ),
        body.as_bytes(),
    );
    assert_eq!(code, 201, "{resp}");

    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host.
    let e = json_error(
        send(
            "GET /api/v1/status HTTP/1.0\nHost: evil.example:80\n\n",
            b"",
        ),
        421,
    );
    assert!(e.contains("evil.example"), "{e}");
    for h in ["localhost", "[::1]:9", "127.0.0.1"] {
        let (code, _) = send(&format!("GET /api/v1/status HTTP/1.0\nHost: {h}\n\n"), b"");
        assert_eq!(code, 200, "Host: {h}");
    }
    agent.stop();
}

/// A large feed swapped for a small one is applied beside the polls, not instead of them (a
/// 1M-line swap stopped polling for 22 s): polls complete while the feed thread works.
#[test]
fn a_large_feed_change_does_not_stop_the_polls() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let feed = state.path().join("big.netset");
    // 300k addresses in 100.64.0.0/10.
    let text: String = (0..300_000u32)
        .map(|i| format!("100.{}.{}.{}\n", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff))
        .collect();
    std::fs::write(&feed, text).unwrap();
    let feed_s = feed.to_str().unwrap();
    let agent = Agent::start(
        &lab.ns_b,
        &lab.if_b,
        pin.path(),
        state.path(),
        &["--feed", feed_s, "--feed-every", "200ms"],
    );
    let applied = |agent: &Agent| agent.log().matches("feed applied").count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied(&agent) < 1 {
        assert!(
            Instant::now() < deadline,
            "the feed never applied:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = |agent: &Agent| {
        crate::kit::sample(&agent.metrics(), "astra_polls_total{result=\"ok\"}").unwrap_or(0.0)
    };

    // Swap it for a small one: 300k removals, in batches on the feed thread.
    std::fs::write(&feed, "100.64.0.1\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while agent.log().matches("feed changed: applying it").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the change was never seen:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let polls_at_start = ok(&agent);
    let mut polls_during = 0.0;
    while applied(&agent) < 2 {
        assert!(
            Instant::now() < deadline,
            "the change never applied:\n{}",
            agent.log()
        );
        polls_during = ok(&agent) - polls_at_start;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        polls_during >= 1.0,
        "no poll completed while the feed change was applied:\n{}",
        agent.log()
    );
    assert_eq!(
        blocked(pin.path(), state.path()),
        vec!["100.64.0.1/32"],
        "{}",
        agent.log()
    );
    agent.stop();
}

/// `astra run --zeek-conn-log` with no interface at all: conversations Zeek logs as they end
/// are judged like counted ones (a scan, then after the log is rotated, password guessing),
/// and a line that is not a record is skipped, not fatal.
#[test]
fn a_followed_zeek_conn_log_is_judged_like_traffic() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::quiet_v4();
    let (pin, state) = (pin_dir(), state_dir());
    let log = state.path().join("conn.log");
    let header = "#separator \\x09\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\tconn_state\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\n";
    std::fs::write(&log, header).unwrap();
    let log_arg = log.display().to_string();
    let agent = Agent::start(
        &lab.ns_b,
        "",
        pin.path(),
        state.path(),
        &["--zeek-conn-log", &log_arg],
    );
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let append = |text: String| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let t = now();
    let mut scan = String::from("not a record\n");
    for p in 1..=60u16 {
        scan.push_str(&format!(
            "{:.6}\tC\t198.51.100.66\t{}\t198.51.100.10\t{p}\ttcp\t0.0002\tREJ\tSr\t1\t44\t1\t40\n",
            t - 2.0 + f64::from(p) * 0.01,
            40000 + p
        ));
    }
    append(scan);
    let alerted = |who: &str, kind: &str| {
        let out = cli_ok(pin.path(), state.path(), &["alerts", "--json"]);
        json(&out)
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["source"] == who && a["attack_type"] == kind)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !alerted("198.51.100.66", "port_scan") {
        assert!(Instant::now() < deadline, "no scan alert:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Zeek rotates its log: the new file is read from its start, header and all.
    std::fs::rename(&log, state.path().join("conn.log.1")).unwrap();
    let t = now();
    let mut guesses = String::from(header);
    for i in 0..8u16 {
        guesses.push_str(&format!(
            "{:.6}\tC\t198.51.100.77\t{}\t198.51.100.10\t22\ttcp\t1.2\tSF\tShAdDaFf\t12\t2100\t10\t2700\n",
            t - 3.0 + f64::from(i) * 0.2,
            50000 + i
        ));
    }
    std::fs::write(&log, guesses).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !alerted("198.51.100.77", "brute_force") {
        assert!(
            Instant::now() < deadline,
            "no brute-force alert:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        agent.log().contains("following Zeek conn.log"),
        "{}",
        agent.log()
    );
    let blocks = blocked(pin.path(), state.path());
    assert!(
        blocks
            .iter()
            .all(|b| b.starts_with("198.51.100.66") || b.starts_with("198.51.100.77")),
        "{blocks:?}"
    );
    agent.stop();
}

#[test]
fn throttle_quarantine_and_protect_through_the_api_hold_real_traffic() {
    let Some((lab, pin, state, agent)) = lab_with_agent() else {
        return;
    };
    let token = token(pin.path(), state.path());
    let (a, b) = (lab.a_v4(), lab.b_v4());
    let post = |path: &str, body: &str| agent.api("POST", path, Some(&token), Some(body));

    // Bad requests change nothing: a throttle needs a rate, other lists take none.
    for (path, body, needle) in [
        (
            "/api/v1/throttle",
            format!(r#"{{"net": "{a}"}}"#),
            "needs a rate",
        ),
        (
            "/api/v1/throttle",
            format!(r#"{{"net": "{a}", "rate": "9mbps"}}"#),
            "ambiguous",
        ),
        (
            "/api/v1/throttle",
            format!(r#"{{"net": "{a}", "rate": ["1pps", "2pps", "3pps"]}}"#),
            "at most two",
        ),
        (
            "/api/v1/blocklist",
            format!(r#"{{"net": "{a}", "rate": "1pps"}}"#),
            "throttle entries",
        ),
        (
            "/api/v1/quarantine",
            r#"{"net": "198.18.0.0/24"}"#.to_owned(),
            "single address",
        ),
        (
            "/api/v1/quarantine",
            format!(r#"{{"net": "{b}"}}"#),
            "address of this host",
        ),
    ] {
        let (code, resp) = post(path, &body);
        assert_eq!(code, 400, "{path} {body}: {resp}");
        assert!(resp.contains(needle), "{path} {body}: {resp}");
    }
    assert_eq!(
        agent.api("POST", "/api/v1/throttle", None, Some("{}")).0,
        401
    );
    assert_eq!(lab.deliver(&a, &b, 50), 50);

    // 20 packets a second with 100 ms of burst: of a quick 200, a handful pass.
    let body = format!(r#"{{"net": "{a}", "rate": "20pps", "ttl": "10m", "reason": "noisy"}}"#);
    let (code, resp) = post("/api/v1/throttle", &body);
    assert_eq!(code, 201, "{resp}");
    assert_eq!(json(&resp)["in_kernel"], true);
    let got = lab.deliver(&a, &b, 200);
    assert!(
        (1..=12).contains(&got),
        "{got} of 200 passed a 20 pps throttle"
    );
    let list = json(&agent.api("GET", "/api/v1/throttle", None, None).1);
    let row = &list["entries"][0];
    assert_eq!(row["rate"]["pps"], 20);
    assert_eq!(row["dropped"].as_u64().unwrap(), 200 - got as u64);
    let status = json(&agent.api("GET", "/api/v1/status", None, None).1);
    assert_eq!(status["throttle_entries"], 1);
    assert_eq!(status["tiers"], serde_json::json!(["throttle"]));
    let path = format!("/api/v1/throttle/{a}/32");
    assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 204);
    assert_eq!(lab.deliver(&a, &b, 50), 50);

    // Quarantined: cut off both ways, on ingress (XDP) and on egress (TC).
    assert_eq!(lab.deliver_back(&b, &a, 20), 20);
    let (code, resp) = post(
        "/api/v1/quarantine",
        &format!(r#"{{"net": "{a}", "ttl": "1h"}}"#),
    );
    assert_eq!(code, 201, "{resp}");
    assert_eq!(lab.deliver(&a, &b, 20), 0);
    assert_eq!(lab.deliver_back(&b, &a, 20), 0);
    // The drops reach the metrics at the next poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.metrics().contains(r#"reason="quarantined""#) {
        assert!(
            Instant::now() < deadline,
            "no quarantine drops in the metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = format!("/api/v1/quarantine/{a}");
    assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 204);
    assert_eq!(lab.deliver(&a, &b, 20), 20);
    assert_eq!(lab.deliver_back(&b, &a, 20), 20);
    let status = json(&agent.api("GET", "/api/v1/status", None, None).1);
    assert_eq!(status["tiers"], serde_json::json!([]));

    // Protected: answers from a reflection port that B never asked for are dropped.
    for (body, needle) in [
        (
            r#"{"target": "198.18.0.0/24"}"#.to_owned(),
            "single address",
        ),
        (format!(r#"{{"target": "{b}:0"}}"#), "not a port"),
        (
            format!(r#"{{"target": "{b}", "syn_budget": 0}}"#),
            "syn budget",
        ),
        (
            format!(r#"{{"target": "{b}", "only": "both"}}"#),
            "unknown variant",
        ),
        (format!(r#"{{"target": "{b}", "burst": "1h"}}"#), "burst"),
        (format!(r#"{{"net": "{b}"}}"#), "unknown field"),
    ] {
        let (code, resp) = post("/api/v1/protect", &body);
        assert_eq!(code, 400, "{body}: {resp}");
        assert!(resp.contains(needle), "{body}: {resp}");
    }
    let list = agent.api("GET", "/api/v1/protect", None, None).1;
    assert!(!list.contains(&b), "{list}");
    let (code, resp) = post(
        "/api/v1/protect",
        &format!(r#"{{"target": "{b}:80", "only": "reflect", "ttl": "10m", "reason": "dns"}}"#),
    );
    assert_eq!(code, 201, "{resp}");
    assert_eq!(json(&resp)["in_kernel"], true);
    assert_eq!(lab.deliver_from(&a, &b, 53, 20), 0);
    // Not from a reflection port: nothing to do with the protection.
    assert_eq!(lab.deliver(&a, &b, 20), 20);
    let list = json(&agent.api("GET", "/api/v1/protect", None, None).1);
    let row = &list["entries"][0];
    assert_eq!(row["protect"]["ports"], serde_json::json!([80]));
    assert_eq!(row["protect"]["syn"], false);
    assert_eq!(row["dropped"], 20, "{row}");
    let status = json(&agent.api("GET", "/api/v1/status", None, None).1);
    assert_eq!(status["tiers"], serde_json::json!(["protect"]));
    let path = format!("/api/v1/protect/{b}");
    assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 204);
    assert_eq!(agent.api("DELETE", &path, Some(&token), None).0, 404);
    assert_eq!(lab.deliver_from(&a, &b, 53, 20), 20);
}

/// SYN cookies answered from XDP and completed by nftables' SYNPROXY: with the kernel's own
/// cookies off, a client that never connected before (so no known source) reaches a service
/// on the protected target, its SYN answered by XDP; `astra unprotect` takes SYNPROXY's
/// rules away again.
#[test]
fn syn_cookies_from_xdp_and_synproxy_let_a_new_client_in() {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        process::Command,
    };
    let Some((lab, pin, state, agent)) = lab_with_agent() else {
        return;
    };
    let b = lab.b_v4();
    // A veth passes XDP_TX frames on only when its peer runs XDP: a pass-only program on A.
    let if_a = lab.if_a.clone();
    let _pass = Lab::in_ns(&lab.ns_a, move || {
        let mut p = astra::bench::programs::BenchPrograms::load().expect("bench programs");
        p.floor()
            .expect("pass program")
            .attach(&if_a, aya::programs::XdpMode::Driver)
            .expect("attach the pass program");
        p
    });
    let in_b = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &lab.ns_b])
            .args(args)
            .output()
            .expect("ip netns exec")
    };
    assert!(
        in_b(&["sysctl", "-qw", "net.ipv4.tcp_syncookies=0"])
            .status
            .success()
    );
    // An echo service on B, for one connection.
    let port = crate::kit::free_port();
    let listener = Lab::in_ns(&lab.ns_b, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("listen")
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("write");
    });
    // The CLI enters B's network namespace only (`ip netns exec` would remount /sys, and
    // with it the bpffs the pins are on).
    let astra = |args: &[&str]| {
        let netns = format!("/var/run/netns/{}", lab.ns_b);
        let out = astra::lab::netns::command_in(&netns, crate::kit::astra_bin())
            .expect("command in B")
            .args(args)
            .arg("--pin-dir")
            .arg(pin.path())
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .expect("astra");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    astra(&["protect", &format!("{b}:{port}"), "--syn-cookies"]);
    let rules = in_b(&["nft", "list", "table", "inet", "astra_synproxy"]);
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("synproxy mss"),
        "{rules:?}"
    );
    let to = format!("{b}:{port}").parse().unwrap();
    let echoed = Lab::in_ns(&lab.ns_a, move || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    });
    assert_eq!(echoed.expect("the new client's connection"), b"hello");
    server.join().expect("server");
    let maps = astra::dataplane::maps::PinnedMaps::open(pin.path())
        .unwrap()
        .unwrap();
    let c = maps.iface_counters(lab.b_ifindex()).unwrap();
    assert!(c[astra_common::action::SYN_COOKIE as usize].packets >= 1);
    astra(&["unprotect", &b]);
    let rules = in_b(&["nft", "list", "table", "inet", "astra_synproxy"]);
    assert!(!rules.status.success(), "{rules:?}");
    agent.stop();
}
