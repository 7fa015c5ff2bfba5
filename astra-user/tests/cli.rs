//! The CLI's contract for bad input: exit code 2, one line naming what is wrong, nothing
//! written. These need no privileges: with no maps pinned, verbs act on the store alone.
mod common;

use common::{TempDir, cli};

fn dirs() -> (TempDir, TempDir) {
    (TempDir::new(), TempDir::new())
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
    let out = std::process::Command::new(common::astra_bin())
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
        let out = std::process::Command::new(common::astra_bin())
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
    let dir = TempDir::new();
    let out = std::process::Command::new(common::astra_bin())
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
