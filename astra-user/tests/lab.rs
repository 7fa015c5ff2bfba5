//! The lab's default scenario set, end to end, as `astra lab` runs it: every rule's scenario
//! must detect its attack (and block where the evidence allows), the benign one must stay
//! silent, and the report must have the promised shape.
mod common;

use serde_json::Value;

#[test]
fn default_scenarios_all_pass_and_the_report_has_every_field() {
    if !common::privileged() {
        return;
    }
    let report = std::env::temp_dir().join(common::unique("astra-lab-report-"));
    let child = std::process::Command::new(common::astra_bin())
        .args(["lab", "--report"])
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run astra lab");
    // The lab names everything it creates after its pid.
    let lab_pid = child.id();
    let prefix = format!("astra-lab-{lab_pid}-");
    let out = child.wait_with_output().expect("wait for astra lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "astra lab failed:\n{stdout}\n{stderr}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    let scenarios = r["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 11, "{r:#}");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
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
        if ci {
            assert!(s["skipped"].is_null(), "CI must run every scenario: {s:#}");
        }
        if s["skipped"].is_null() {
            assert_eq!(s["passed"], true, "{s:#}\n{stdout}");
            assert_eq!(s["false_alerts"], 0, "{s:#}");
            assert_eq!(s["false_blocks"], 0, "{s:#}");
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
    // And so is every process it started, with everything those forked: each carries the
    // lab's pid in its environment (nginx's workers and hydra's tasks used to stay).
    let tag = format!("{}={lab_pid}", astra::netns::LAB_RUN_ENV);
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == tag.as_bytes()))
        })
        .map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            format!("{} {}", e.file_name().to_string_lossy(), comm.trim())
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "processes left running: {survivors:?}"
    );
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
