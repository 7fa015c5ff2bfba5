//! The lab's default scenario set, end to end, as `astra lab` runs it: every rule's scenario
//! must detect its attack (and block where the evidence allows), the benign one must stay
//! silent, and the report must have the promised shape.

use serde_json::Value;

/// Runs `astra lab ARGS --report FILE`; returns the report, the output, and the prefix of
/// everything the run named after its pid.
fn run_lab(args: &[&str]) -> (Value, String, String) {
    let report = std::env::temp_dir().join(crate::kit::unique("astra-lab-report-"));
    let child = std::process::Command::new(crate::kit::astra_bin())
        .arg("lab")
        .args(args)
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run astra lab");
    // The lab names everything it creates after its pid.
    let prefix = format!("astra-lab-{}-", child.id());
    let out = child.wait_with_output().expect("wait for astra lab");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "astra lab failed:\n{stdout}\n{stderr}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    (r, stdout, prefix)
}

/// Every scenario ran (under CI), passed, and neither alerted on nor blocked anyone but its
/// attackers.
fn assert_all_passed(r: &Value, stdout: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    for s in r["scenarios"].as_array().unwrap() {
        if ci {
            assert!(s["skipped"].is_null(), "CI must run every scenario: {s:#}");
        }
        if s["skipped"].is_null() {
            assert_eq!(s["passed"], true, "{s:#}\n{stdout}");
            assert_eq!(s["false_alerts"], 0, "{s:#}");
            assert_eq!(s["false_blocks"], 0, "{s:#}");
        }
    }
}

/// Astra on a router in front of the server: the server's address is not Astra's own, both
/// directions of every conversation come in on XDP ingress, and still only the attacker is
/// blocked (the server, which answers the attacks, least of all).
#[test]
fn on_a_gateway_the_attacks_are_caught_and_only_the_attacker_is_blocked() {
    if !crate::kit::privileged() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut args = vec!["--gateway".to_owned()];
    for name in [
        "nmap-connect-scan",
        "nmap-syn-scan",
        "hydra-ssh-brute-force",
        "masscan",
        // The server behind answers a forged flood with unreachables: it must stay unblocked.
        "reflection-flood",
        "benign-mixed",
    ] {
        args.push("--scenario".into());
        args.push(dir.join(format!("{name}.toml")).display().to_string());
    }
    // The same run writes labelled training rows.
    let training = std::env::temp_dir().join(crate::kit::unique("astra-lab-training-"));
    args.push("--export-training".into());
    args.push(training.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (r, stdout, prefix) = run_lab(&args);
    assert_eq!(r["scenarios"].as_array().unwrap().len(), 6, "{r:#}");
    let rows = std::fs::read_to_string(&training).unwrap();
    let _ = std::fs::remove_file(&training);
    let mut lines = rows.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "scenario,source,label,{}",
            astra::features::FEATURE_NAMES.join(",")
        )
    );
    let labelled: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let has = |scenario: &str, label: &str| {
        labelled.iter().any(|r| {
            r[0] == scenario && r[2] == label && r.len() == 3 + astra::features::FEATURE_NAMES.len()
        })
    };
    assert!(has("nmap-syn-scan", "port_scan"), "{rows}");
    assert!(has("hydra-ssh-brute-force", "brute_force"), "{rows}");
    assert!(has("benign-mixed", "benign"), "{rows}");
    // The attacker is the only source an attack's rows blame; the server behind is nobody's.
    for r in &labelled {
        assert_ne!(r[1], "198.18.100.2", "{r:?}");
        if r[2] == "port_scan" || r[2] == "brute_force" {
            assert!(r[1].starts_with("198.18.2."), "{r:?}");
        }
    }
    assert_all_passed(&r, &stdout);
    let attacks = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["expected"] != "benign" && s["skipped"].is_null());
    for s in attacks {
        assert!(s["packets_dropped"].as_u64().unwrap() > 0, "{s:#}");
    }
    assert!(entries_with_prefix("/var/run/netns", &prefix).is_empty());
}

#[test]
fn default_scenarios_all_pass_and_the_report_has_every_field() {
    if !crate::kit::privileged() {
        return;
    }
    let (r, stdout, prefix) = run_lab(&[]);
    let scenarios = r["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 11, "{r:#}");
    assert_all_passed(&r, &stdout);
    for s in scenarios {
        for field in [
            "name",
            "expected",
            "detected",
            "attack_type",
            "time_to_alert_s",
            "time_to_drop_s",
            "packets_dropped",
            "false_alerts",
            "false_blocks",
        ] {
            assert!(s.get(field).is_some(), "{field} missing in {s:#}");
        }
    }
    assert!(r["agent"]["cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["agent"]["max_rss_bytes"].as_u64().unwrap() > 0);
    // Everything the lab created is gone.
    let leftovers = entries_with_prefix("/var/run/netns", &prefix);
    assert!(
        leftovers.is_empty(),
        "namespaces left behind: {leftovers:?}"
    );
    let pins = entries_with_prefix("/sys/fs/bpf", &prefix);
    assert!(pins.is_empty(), "pin dirs left behind: {pins:?}");
    let temp = std::env::temp_dir();
    let dirs = entries_with_prefix(&temp.to_string_lossy(), &prefix);
    assert!(dirs.is_empty(), "state dirs left behind: {dirs:?}");
    // And so is every process it started, with everything those forked (nginx's workers and
    // hydra's tasks used to stay): nothing may still run in a namespace that is gone.
    let survivors = processes_in_deleted_namespaces();
    assert!(
        survivors.is_empty(),
        "processes left running: {survivors:?}"
    );
}

/// User processes whose network namespace is neither this test's nor a named one that still
/// exists: what a lab run left running after it deleted its namespaces. (Kernel threads,
/// which have no command line, live in the host's namespace, which a container's is not.)
fn processes_in_deleted_namespaces() -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let root = ns_of("self");
    let named: std::collections::HashSet<String> = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .map(|m| format!("net:[{}]", m.ino()))
                .collect()
        })
        .unwrap_or_default();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            pid.parse::<u32>().ok()?;
            let ns = ns_of(&pid)?;
            let ns_text = ns.to_string_lossy().into_owned();
            if Some(&ns) == root.as_ref() || named.contains(&ns_text) {
                return None;
            }
            if std::fs::read(e.path().join("cmdline")).map_or(true, |c| c.is_empty()) {
                return None;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            Some(format!("{pid} {} in {ns_text}", comm.trim()))
        })
        .collect()
}

fn entries_with_prefix(dir: &str, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// What a lab run killed with SIGKILL leaves (a namespace with a daemon still running in it, a
/// pin dir, a state dir) is removed by the next run's sweep; a state dir kept with `--keep`
/// and everything of a live run stay.
#[test]
fn a_dead_runs_leftovers_are_swept_and_a_live_runs_are_not() {
    use astra::lab::{netns, sweep};
    if !crate::kit::privileged() {
        return;
    }
    // A pid that existed and is gone: a finished child's.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let live = std::process::id();
    let name = |pid: u32, rest: &str| format!("astra-lab-{pid}-{rest}");
    let (dead_ns, live_ns) = (name(dead, "0-srv"), name(live, "sweep-srv"));
    for ns in [&dead_ns, &live_ns] {
        let status = std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {ns}");
    }
    // A daemon in the dead run's namespace, in a process group of its own as the lab's are.
    let mut daemon = netns::lab_command_in(&format!("/var/run/netns/{dead_ns}"), "sleep")
        .unwrap()
        .arg("600")
        .spawn()
        .unwrap();
    let bpf = std::path::Path::new("/sys/fs/bpf");
    let temp = std::env::temp_dir();
    let dead_pin = bpf.join(name(dead, "0"));
    let dead_state = temp.join(name(dead, "0"));
    let kept_state = temp.join(name(dead, "1"));
    let live_state = temp.join(name(live, "sweep"));
    astra::dataplane::ensure_pin_dir(&dead_pin).unwrap();
    for d in [&dead_state, &kept_state, &live_state] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("agent.log"), "x").unwrap();
    }
    std::fs::write(kept_state.join(sweep::KEPT_MARKER), "").unwrap();

    let removed = sweep::sweep();

    let exists = |p: &std::path::Path| p.exists();
    let netns_dir = std::path::Path::new("/var/run/netns");
    // The daemon is dead (and ours to reap), with its namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let killed = loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let live_left = exists(&netns_dir.join(&live_ns)) && exists(&live_state);
    // Clean up what the test made before asserting, so a failure leaves nothing either.
    let _ = daemon.kill();
    let _ = daemon.wait();
    for ns in [&dead_ns, &live_ns] {
        // The sweep may have deleted it already; that is what is checked below.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let dead_left: Vec<_> = [
        netns_dir.join(&dead_ns),
        dead_pin.clone(),
        dead_state.clone(),
    ]
    .into_iter()
    .filter(|p| exists(p))
    .collect();
    let kept_left = exists(&kept_state);
    for d in [&dead_pin, &dead_state, &kept_state, &live_state] {
        let _ = std::fs::remove_dir_all(d);
    }
    assert!(
        killed.is_some(),
        "the dead run's daemon still runs; swept: {removed:?}"
    );
    assert!(
        dead_left.is_empty(),
        "left behind: {dead_left:?}; swept: {removed:?}"
    );
    assert!(kept_left, "a kept state dir was swept: {removed:?}");
    assert!(
        live_left,
        "a live run's namespace or state was swept: {removed:?}"
    );
}
