//! `astra blocklist import/export` through the binary: the contract for bad files (exit 2,
//! file:line, nothing imported), round trips, and — privileged — 100k entries into a running
//! agent's maps with a packet from one of them dropped.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use crate::kit::{Agent, Lab, cli, cli_ok, pin_dir, state_dir};

fn list(pin: &Path, state: &Path) -> Vec<serde_json::Value> {
    let out = cli_ok(pin, state, &["list", "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `n` distinct IPv4 host addresses in 10.0.0.0/8, one per line.
fn addresses(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 14);
    for i in 0..n {
        let [_, a, b, c] = i.to_be_bytes();
        s.push_str(&format!("10.{a}.{b}.{c}\n"));
    }
    s
}

#[test]
fn a_bad_line_names_file_and_line_and_imports_nothing() {
    let (pin, state) = (state_dir(), state_dir());
    let file = state.path().join("drop.txt");
    std::fs::write(
        &file,
        "; Spamhaus DROP\r\n1.10.16.0/20 ; SBL256894\r\n1.19.0.0/16 ; SBL434604\r\n1.2.3.4/8 ; typo\r\n",
    )
    .unwrap();
    let file_s = file.to_str().unwrap();
    let (code, out, err) = cli(pin.path(), state.path(), &["blocklist", "import", file_s]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{file_s}:4: 1.2.3.4/8 has host bits set"))
            && err.contains("nothing imported"),
        "{err}"
    );
    assert!(list(pin.path(), state.path()).is_empty());

    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "import", file_s, "--tag", "two words"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid tag"), "{err}");
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "import", "/nonexistent/feed.txt"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read /nonexistent/feed.txt"), "{err}");
}

#[test]
fn stdin_import_then_export_round_trips_through_another_state_dir() {
    let (pin, state) = (state_dir(), state_dir());
    let mut child = Command::new(crate::kit::astra_bin())
        .args([
            "blocklist",
            "import",
            "-",
            "--ttl",
            "1h",
            "--reason",
            "piped",
        ])
        .arg("--pin-dir")
        .arg(pin.path())
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# firehol style\n192.0.2.0/24\n2001:db8:bad::/48\n198.51.100.7 ; own reason\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 3 entries from stdin (plain, tag stdin)")
            && stdout.contains("stored"),
        "{stdout}"
    );
    let rows = list(pin.path(), state.path());
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["source"], "feed");
        assert_eq!(r["tag"], "stdin");
        let ttl = r["ttl_remaining_s"].as_u64().unwrap();
        assert!((3595..=3600).contains(&ttl), "{ttl}");
    }
    let reasons: Vec<&str> = rows.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.contains(&"piped") && reasons.contains(&"own reason"),
        "{reasons:?}"
    );

    for format in ["json", "csv"] {
        let file = state.path().join(format!("export.{format}"));
        cli_ok(
            pin.path(),
            state.path(),
            &[
                "blocklist",
                "export",
                "--format",
                format,
                "--tag",
                "stdin",
                "-o",
                file.to_str().unwrap(),
            ],
        );
        let other = state_dir();
        let out = cli_ok(
            pin.path(),
            other.path(),
            &["blocklist", "import", file.to_str().unwrap(), "--json"],
        );
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["imported"], 3, "{out}");
        assert_eq!(report["format"], format);
        let key = |r: &serde_json::Value| {
            (
                r["net"].to_string(),
                r["reason"].to_string(),
                r["tag"].to_string(),
                r["kind"].to_string(),
            )
        };
        let mut want: Vec<_> = rows.iter().map(key).collect();
        let back = list(pin.path(), other.path());
        let mut got: Vec<_> = back.iter().map(key).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{format}");
        for r in &back {
            let ttl = r["ttl_remaining_s"].as_u64().unwrap();
            assert!((3590..=3600).contains(&ttl), "{format}: {ttl}");
        }
    }
    // Plain exports are addresses only; another tag filters everything out.
    let out = cli_ok(pin.path(), state.path(), &["blocklist", "export"]);
    assert_eq!(
        out.lines().filter(|l| !l.starts_with('#')).count(),
        3,
        "{out}"
    );
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["blocklist", "export", "--tag", "other"],
    );
    assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 0);
}

#[test]
fn importing_100k_entries_without_an_agent_stores_them() {
    let (pin, state) = (state_dir(), state_dir());
    let file = state.path().join("big.netset");
    std::fs::write(&file, addresses(100_000)).unwrap();
    let t = Instant::now();
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["blocklist", "import", file.to_str().unwrap()],
    );
    println!(
        "astra blocklist import, 100k entries, no agent (store only): {:.2?}\n{out}",
        t.elapsed()
    );
    assert!(out.contains("imported 100000 entries"), "{out}");
    let status = cli_ok(pin.path(), state.path(), &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["stored_blocks"], 100_000);
}

#[test]
fn a_100k_feed_reaches_the_kernel_and_drops_a_listed_source() {
    if !crate::kit::privileged() {
        return;
    }
    let lab = Lab::new();
    let (pin, state) = (pin_dir(), state_dir());
    let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 3), 3);
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 3), 3);

    // 99,997 addresses, the lab's IPv6 source, its IPv4 source and a prefix: exact entries in
    // both families (batched) and one in the LPM trie.
    let mut text = String::from("# test feed\n");
    text.push_str(&addresses(99_997));
    text.push_str(&format!(
        "{} ; lab v4\n{} ; lab v6\n203.0.113.0/24\n",
        lab.a_v4(),
        lab.a_v6()
    ));
    let file = state.path().join("lab-feed.txt");
    std::fs::write(&file, &text).unwrap();
    let t = Instant::now();
    let out = cli_ok(
        pin.path(),
        state.path(),
        &["blocklist", "import", file.to_str().unwrap()],
    );
    let first = t.elapsed();
    assert!(
        out.contains("imported 100000 entries") && out.contains("in force now"),
        "{out}"
    );
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 10), 0, "v4 passed");
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 10), 0, "v6 passed");

    // Again: every entry exists, so this is the update path, and hits survive it.
    let t = Instant::now();
    cli_ok(
        pin.path(),
        state.path(),
        &["blocklist", "import", file.to_str().unwrap()],
    );
    let again = t.elapsed();
    println!(
        "astra blocklist import, 100k entries into a running agent's maps: {first:.2?} new, {again:.2?} re-imported"
    );

    let rows = list(pin.path(), state.path());
    assert_eq!(rows.len(), 100_000);
    assert!(
        rows.iter()
            .all(|r| r["in_kernel"] == true && r["tag"] == "lab-feed")
    );
    let lab_row = rows
        .iter()
        .find(|r| r["net"] == format!("{}/32", lab.a_v4()))
        .expect("lab source listed");
    assert_eq!(lab_row["hits"], 10, "{lab_row}");
    assert_eq!(lab_row["reason"], "lab v4");
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["status", "--json"])).unwrap();
    assert_eq!(status["block_entries"], 100_000);

    let out = cli_ok(
        pin.path(),
        state.path(),
        &["blocklist", "export", "--format", "json"],
    );
    let exported: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(exported.as_array().unwrap().len(), 100_000);

    // A reboot empties bpffs: the next agent refills the maps from the store before attaching.
    assert!(agent.stop().success());
    std::fs::remove_dir_all(pin.path()).unwrap();
    let t = Instant::now();
    let _agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
    println!(
        "agent start restoring 100k entries, until it serves metrics: {:.2?}",
        t.elapsed()
    );
    assert_eq!(lab.deliver(&lab.a_v4(), &lab.b_v4(), 5), 0, "v4 restored");
    assert_eq!(lab.deliver(&lab.a_v6(), &lab.b_v6(), 5), 0, "v6 restored");
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(pin.path(), state.path(), &["status", "--json"])).unwrap();
    assert_eq!(status["block_entries"], 100_000);
}
