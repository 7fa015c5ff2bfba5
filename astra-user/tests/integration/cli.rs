//! The CLI's contract for bad input: exit code 2, one line naming what is wrong, nothing
//! written. These need no privileges: with no maps pinned, verbs act on the store alone.

use crate::kit::{ScratchDir, cli, state_dir};

fn dirs() -> (ScratchDir, ScratchDir) {
    (state_dir(), state_dir())
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let (pin, state) = dirs();
    let (code, out, err) = cli(pin.path(), state.path(), args);
    assert_eq!(code, 2, "astra {args:?}: {err}");
    assert!(out.is_empty(), "stdout: {out}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains(needle),
        "astra {args:?}: {err:?} lacks {needle:?}"
    );
}

#[test]
fn malformed_addresses_and_ttls_exit_2_with_one_line() {
    assert_usage_error(&["block", "300.1.1.1"], "300.1.1.1");
    assert_usage_error(&["block", "198.18.0.0/33"], "out of range");
    assert_usage_error(&["block", "2001:db8::/129"], "out of range");
    assert_usage_error(&["block", "198.18.0.1/16"], "did you mean 198.18.0.0/16");
    assert_usage_error(&["block", "198.18.0.1", "--ttl", "soon"], "TTL");
    assert_usage_error(&["unblock", "nonsense"], "nonsense");
    assert_usage_error(&["allow", "1.2.3.4/"], "1.2.3.4/");
    assert_usage_error(&["flows", "--top", "many"], "--top");
    assert_usage_error(
        &["run", "--iface", "lo", "--poll-interval", "often"],
        "often",
    );
}

#[test]
fn unwritable_state_dir_exits_2() {
    let (pin, state) = dirs();
    let file = state.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("sub");
    let (code, _, err) = cli(pin.path(), &bad, &["block", "198.18.0.9"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot be written"), "{err}");
}

#[test]
fn unblocking_what_is_not_blocked_is_an_error_and_changes_nothing() {
    let (pin, state) = dirs();
    let (code, _, err) = cli(pin.path(), state.path(), &["unblock", "198.18.0.7"]);
    assert_eq!(code, 2);
    assert!(err.contains("not blocked"), "{err}");
}

#[test]
fn store_only_blocks_round_trip_through_list() {
    let (pin, state) = dirs();
    let (code, out, err) = cli(
        pin.path(),
        state.path(),
        &[
            "block",
            "198.18.0.0/24",
            "--ttl",
            "10m",
            "--reason",
            "scanner",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stored"), "{out}");
    // Global options are accepted before the subcommand too.
    let out = std::process::Command::new(crate::kit::astra_bin())
        .arg("--state-dir")
        .arg(state.path())
        .arg("--pin-dir")
        .arg(pin.path())
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["net"], "198.18.0.0/24");
    assert_eq!(row["reason"], "scanner");
    assert_eq!(row["in_kernel"], false);
    let ttl = row["ttl_remaining_s"].as_u64().unwrap();
    assert!((595..=600).contains(&ttl), "{ttl}");
    let (code, out, _) = cli(pin.path(), state.path(), &["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("198.18.0.0/24") && out.contains("scanner") && out.contains("pending"),
        "{out}"
    );
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(crate::kit::astra_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for verb in [
            "block", "unblock", "allow", "list", "flows", "status", "alerts", "lab",
        ] {
            assert!(text.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let (code, _, err) = cli(
        std::path::Path::new("/tmp"),
        std::path::Path::new("/tmp"),
        &["completions", "tcsh"],
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn man_pages_are_generated_for_astra_and_each_subcommand() {
    let dir = state_dir();
    let out = std::process::Command::new(crate::kit::astra_bin())
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("astra.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH astra"),
        "{page}"
    );
    let block = std::fs::read_to_string(dir.path().join("astra-block.1")).unwrap();
    assert!(
        block.contains(".TH astra-block") && block.contains("ttl"),
        "{block}"
    );
    assert!(dir.path().join("astra-run.1").exists());
}

/// Hostile or careless input from the issue "Reliability": each exits 2 with one line, quotes
/// no more than an excerpt of what it was given, and changes nothing.
#[test]
fn hostile_input_exits_2_with_one_short_line() {
    // Everything, from the CLI, without --force.
    assert_usage_error(&["block", "0.0.0.0/0"], "--force");
    assert_usage_error(&["block", "::/0"], "covers every address");
    assert_usage_error(&["allow", "0.0.0.0/0"], "turns every block off");
    // A 100 kB argument (about the most one argument may be) comes back as an excerpt, not
    // twice over.
    let huge = "1".repeat(100_000);
    let (pin, state) = dirs();
    let (code, _, err) = cli(pin.path(), state.path(), &["block", &huge]);
    assert_eq!(code, 2);
    assert!(err.len() < 400, "{} bytes of stderr", err.len());
    assert!(err.contains("100000 bytes in all"), "{err}");
    let long_reason = "r".repeat(600);
    assert_usage_error(
        &["block", "198.18.0.9", "--reason", &long_reason],
        "at most 512",
    );
    // Files without a size bound: /dev/zero as the config file.
    assert_usage_error(
        &["--config", "/dev/zero", "list"],
        "larger than 1048576 bytes",
    );
    // Names that are not there, or are not what they should be.
    assert_usage_error(
        &["alerts", "--events", "/nonexistent/eve.json"],
        "no such event log",
    );
    assert_usage_error(&["bench", "--only", "nonsense"], "no such benchmark group");
    assert_usage_error(
        &["run", "--iface", "lo", "--flow-capacity", "4294967295"],
        "out of range",
    );
    assert_usage_error(
        &["run", "--iface", "lo", "--poll-interval", "0s"],
        "poll_interval must be greater than 0",
    );
}

#[test]
fn files_in_place_of_dirs_and_garbage_logs_exit_2_once() {
    let (pin, state) = dirs();
    let file = state.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for args in [
        &["token", "show"][..],
        &["model", "status"][..],
        &["model", "train"][..],
    ] {
        let (code, out, err) = cli(pin.path(), &file, args);
        assert_eq!(code, 2, "astra {args:?}: {err}");
        assert!(out.is_empty(), "astra {args:?}: {out}");
        assert_eq!(err.trim().lines().count(), 1, "astra {args:?}: {err}");
    }
    let (code, _, err) = cli(&file, state.path(), &["detach"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A directory as the event log, and an event log of garbage.
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["alerts", "--events", state.path().to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    let garbage = state.path().join("eve.json");
    std::fs::write(&garbage, "not json\n\u{1b}[2J\n").unwrap();
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["alerts", "--events", garbage.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an event log"), "{err}");
}

/// Feed comments keep their bytes in the store, but `astra list` escapes control characters,
/// so a comment can neither clear the screen nor forge a row; a feed may never hold /0.
#[test]
fn feed_text_is_escaped_on_output_and_feeds_never_hold_everything() {
    let (pin, state) = dirs();
    let feed = state.path().join("feed.txt");
    std::fs::write(&feed, "198.18.0.1 ; evil\u{1b}[2J\u{0}comment\n").unwrap();
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "import", feed.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(pin.path(), state.path(), &["list"]);
    assert!(!out.contains('\u{1b}') && !out.contains('\0'), "{out:?}");
    assert!(out.contains("evil\\u{1b}[2J\\u{0}comment"), "{out}");
    let (_, json, _) = cli(pin.path(), state.path(), &["list", "--json"]);
    assert!(json.contains("evil\\u001b[2J\\u0000comment"), "{json}");

    std::fs::write(&feed, "198.18.0.2\n0.0.0.0/0\n").unwrap();
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "import", feed.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("a feed may not hold it"), "{err}");
}

/// `blocklist export -o` writes into a device or FIFO as it is and refuses a symlink, instead
/// of renaming a regular file over it (it turned /dev/full into a regular file).
#[test]
fn export_writes_into_special_files_and_refuses_symlinks() {
    use std::os::unix::fs::FileTypeExt as _;
    let (pin, state) = dirs();
    let (code, _, err) = cli(pin.path(), state.path(), &["block", "198.18.0.5"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "export", "-o", "/dev/null"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device(),
        "/dev/null was replaced"
    );
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "export", "-o", "/dev/full"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device(),
        "/dev/full was replaced"
    );
    let target = state.path().join("target.txt");
    std::fs::write(&target, "keep").unwrap();
    let link = state.path().join("link.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "export", "-o", link.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

/// A state dir others may write to, and a token others may read, are refused: either lets
/// another local user plant links for root to follow or learn the API token.
#[test]
fn shared_state_dirs_and_readable_tokens_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let (pin, state) = dirs();
    let token = cli(pin.path(), state.path(), &["token", "show"]);
    assert_eq!(token.0, 0, "{}", token.2);
    let mode = |m: u32| std::fs::Permissions::from_mode(m);

    std::fs::set_permissions(state.path().join("api.token"), mode(0o644)).unwrap();
    let (code, _, err) = cli(pin.path(), state.path(), &["token", "show"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("readable by others (mode 0644)"), "{err}");
    // Rotating makes a new private one.
    let (code, _, err) = cli(pin.path(), state.path(), &["token", "rotate"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(pin.path(), state.path(), &["token", "show"]);
    assert_eq!(code, 0, "{err}");

    // A token that is a link is refused as well.
    let elsewhere = state.path().join("elsewhere");
    std::fs::write(&elsewhere, "0".repeat(64)).unwrap();
    std::fs::set_permissions(&elsewhere, mode(0o600)).unwrap();
    std::fs::remove_file(state.path().join("api.token")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.path().join("api.token")).unwrap();
    let (code, _, err) = cli(pin.path(), state.path(), &["token", "show"]);
    assert_ne!(code, 0, "a linked token was used");
    assert!(err.contains("api.token"), "{err}");

    for m in [0o777, 0o770, 0o1777] {
        std::fs::set_permissions(state.path(), mode(m)).unwrap();
        for args in [
            &["list"][..],
            &["token", "rotate"][..],
            &["block", "198.18.0.4"][..],
        ] {
            let (code, out, err) = cli(pin.path(), state.path(), args);
            assert_eq!(code, 2, "mode {m:o}, astra {args:?}: {err}");
            assert!(out.is_empty(), "{out}");
            assert!(err.contains("may be written by group or others"), "{err}");
        }
    }
    std::fs::set_permissions(state.path(), mode(0o755)).unwrap();
    assert_eq!(cli(pin.path(), state.path(), &["list"]).0, 0);
}

/// `astra list --kind K --limit N --offset M` reads one page, as the API does.
#[test]
fn list_reads_pages() {
    let (pin, state) = dirs();
    let feed = state.path().join("f.txt");
    let text: String = (1..=7).map(|i| format!("198.18.7.{i}\n")).collect();
    std::fs::write(&feed, text).unwrap();
    let (code, _, err) = cli(
        pin.path(),
        state.path(),
        &["blocklist", "import", feed.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let page = |args: &[&str]| {
        let mut a = vec!["list", "--json", "--kind", "block"];
        a.extend_from_slice(args);
        let (code, out, err) = cli(pin.path(), state.path(), &a);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(page(&[]), 7);
    assert_eq!(page(&["--limit", "3"]), 3);
    assert_eq!(page(&["--offset", "5", "--limit", "3"]), 2);
    assert_eq!(page(&["--offset", "9"]), 0);
    assert_usage_error(&["list", "--limit", "3"], "--kind");
}

#[test]
fn throttle_and_quarantine_input_is_checked_before_anything_is_stored() {
    assert_usage_error(&["throttle", "198.18.0.7"], "--rate");
    assert_usage_error(&["throttle", "198.18.0.7", "--rate", "10mbps"], "ambiguous");
    assert_usage_error(&["throttle", "198.18.0.7", "--rate", "fast"], "fast");
    assert_usage_error(&["throttle", "198.18.0.7", "--rate", "0pps"], "1pps");
    assert_usage_error(
        &["throttle", "198.18.0.7", "--rate", "1pps", "--rate", "2pps"],
        "two packet rates",
    );
    assert_usage_error(
        &["throttle", "198.18.0.7", "--rate", "1pps", "--burst", "1ms"],
        "20ms",
    );
    assert_usage_error(&["throttle", "0.0.0.0/0", "--rate", "1pps"], "--force");
    assert_usage_error(&["quarantine", "198.18.0.0/24"], "single address");
    assert_usage_error(&["quarantine", "127.0.0.1"], "address of this host");
    assert_usage_error(&["release", "198.18.0.7"], "not quarantined");
    assert_usage_error(&["unthrottle", "198.18.0.7"], "not throttled");
    assert_usage_error(
        &["blocklist", "export", "--kind", "throttle"],
        "feeds hold block or allow entries",
    );
}

#[test]
fn protect_input_is_checked_and_entries_round_trip_through_list() {
    assert_usage_error(&["protect", "198.18.0.0/24"], "single address");
    assert_usage_error(&["protect", "198.18.0.2:0"], "not a port");
    assert_usage_error(
        &["protect", "198.18.0.2:1,2,3,4,5,6,7,8,9"],
        "at most 8 ports",
    );
    assert_usage_error(
        &["protect", "198.18.0.2", "--syn-budget", "0"],
        "syn-budget",
    );
    assert_usage_error(&["protect", "198.18.0.2", "--only", "both"], "--only");
    assert_usage_error(
        &[
            "protect",
            "198.18.0.2",
            "--only",
            "reflect",
            "--syn-cookies",
        ],
        "need the SYN protection",
    );
    assert_usage_error(&["unprotect", "198.18.0.2"], "not protected");
    let (pin, state) = dirs();
    let run = |args: &[&str]| {
        let (code, out, err) = cli(pin.path(), state.path(), args);
        assert_eq!(code, 0, "astra {args:?}: {err}");
        out
    };
    let out = run(&[
        "protect",
        "198.18.0.2:80,443",
        "--syn-budget",
        "500",
        "--ttl",
        "10m",
        "--reason",
        "flood",
    ]);
    assert!(out.contains("protected 198.18.0.2/32 for 10m"), "{out}");
    assert!(
        out.contains("SYN budget and reflection filter, ports 80,443"),
        "{out}"
    );
    run(&["protect", "[2001:db8::2]", "--only", "reflect"]);
    let rows: serde_json::Value =
        serde_json::from_str(&run(&["list", "--kind", "protect", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["protect"]["ports"], serde_json::json!([80, 443]));
    assert_eq!(rows[0]["rate"]["pps"], 500);
    assert_eq!(rows[1]["net"], "2001:db8::2/128");
    assert_eq!(rows[1]["protect"]["syn"], false);
    let table = run(&["list"]);
    assert!(
        table.contains("protect reflection filter, every port"),
        "{table}"
    );
    run(&["unprotect", "198.18.0.2"]);
    run(&["unprotect", "2001:db8::2"]);
    let rows: serde_json::Value = serde_json::from_str(&run(&["list", "--json"])).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 0);
}

#[test]
fn throttle_and_quarantine_entries_round_trip_through_list() {
    let (pin, state) = dirs();
    let run = |args: &[&str]| {
        let (code, out, err) = cli(pin.path(), state.path(), args);
        assert_eq!(code, 0, "astra {args:?}: {err}");
        out
    };
    let out = run(&[
        "throttle",
        "198.18.0.0/24",
        "--rate",
        "100pps",
        "--rate",
        "10mbit",
        "--ttl",
        "10m",
        "--reason",
        "noisy",
    ]);
    assert!(out.contains("throttled 198.18.0.0/24 for 10m"), "{out}");
    assert!(
        out.contains("limit: 100pps + 10mbit (burst 100 ms)"),
        "{out}"
    );
    run(&["quarantine", "198.18.0.9", "--reason", "worm"]);
    // An allowlisted address is refused, and says which entry covers it.
    run(&["allow", "198.18.5.0/24"]);
    let (code, _, err) = cli(pin.path(), state.path(), &["quarantine", "198.18.5.5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("allowlisted (198.18.5.0/24)"), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&run(&["list", "--json"])).unwrap();
    let by_kind = |k: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} row in {rows}"))
            .clone()
    };
    let t = by_kind("throttle");
    assert_eq!(t["net"], "198.18.0.0/24");
    assert_eq!(t["rate"]["pps"], 100);
    assert_eq!(t["rate"]["bps"], 10_000_000);
    assert_eq!(t["rate"]["burst_ms"], 100);
    assert_eq!(t["reason"], "noisy");
    let q = by_kind("quarantine");
    assert_eq!(q["net"], "198.18.0.9/32");
    assert_eq!(q["ttl_remaining_s"], serde_json::Value::Null);
    assert!(q.get("rate").is_none(), "{q}");
    let only: serde_json::Value =
        serde_json::from_str(&run(&["list", "--kind", "throttle", "--json"])).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    let table = run(&["list"]);
    assert!(table.contains("throttle 100pps + 10mbit"), "{table}");
    assert!(table.contains("quarantine"), "{table}");
    run(&["release", "198.18.0.9"]);
    run(&["unthrottle", "198.18.0.0/24"]);
    let rows: serde_json::Value = serde_json::from_str(&run(&["list", "--json"])).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "only the allow entry: {rows}"
    );
}
