//! `cargo xtask fuzz`: the cargo-fuzz targets in astra-user/fuzz (what Astra reads from others:
//! captures, flow logs, login events), each for a while, seeded with the public captures the
//! tests keep. `cargo xtask test` ends with a short run of each; longer runs are by hand
//! (`cargo xtask fuzz --seconds 600 capture`). Installs cargo-fuzz when it is missing.

use std::{ffi::OsString, fs, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, toolchain};

/// Every target, in the order they run.
pub const TARGETS: [&str; 3] = ["capture", "flowlog", "events"];

#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Build optimised (slower to build, faster to fuzz: for long runs).
    #[arg(long)]
    pub release: bool,
    /// Only these targets (default: all).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}

/// The `cargo fuzz run` arguments for one target: a fresh corpus dir first (libFuzzer writes
/// there), then the seed dirs, and libFuzzer's own limits.
pub fn run_args(
    target: &str,
    target_dir: &str,
    release: bool,
    corpus: &str,
    seeds: &[String],
    seconds: u32,
) -> Vec<String> {
    let mut v: Vec<String> = vec!["fuzz".into(), "run".into()];
    // A debug build takes minutes less to make, which is what a short run in the test suite
    // wants; its checks (overflow, debug assertions) are on either way.
    v.push(if release { "--release" } else { "--dev" }.into());
    // The code the targets run (readers and parsers) has no `unsafe`, so AddressSanitizer
    // only watches dependencies there; it costs the short runs 1.5 min of build and half
    // their speed. A long (release) run keeps it.
    if !release {
        v.extend(["--sanitizer".into(), "none".into()]);
    }
    v.extend(["--target-dir".into(), target_dir.into()]);
    v.extend([target.into(), corpus.into()]);
    v.extend(seeds.iter().cloned());
    v.extend([
        "--".into(),
        format!("-max_total_time={seconds}"),
        "-max_len=262144".into(),
        "-rss_limit_mb=2048".into(),
    ]);
    v
}

fn ensure_cargo_fuzz() -> Result<()> {
    if cmd::output(toolchain::nightly_cargo()?.args(["fuzz", "--version"])).is_ok() {
        return Ok(());
    }
    cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")
}

pub fn run(args: &Args) -> Result<()> {
    run_targets(&args.targets, args.seconds, args.release)
}

/// Runs `targets` (all when empty) for `seconds` each.
pub fn run_targets(targets: &[String], seconds: u32, release: bool) -> Result<()> {
    if let Some(bad) = targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        bail!("no fuzz target {bad} (targets: {})", TARGETS.join(", "));
    }
    ensure_cargo_fuzz()?;
    let root = cmd::workspace_root();
    let user = root.join("astra-user");
    let data = user.join("tests/data/captures");
    for t in TARGETS
        .iter()
        .filter(|t| targets.is_empty() || targets.iter().any(|x| x == *t))
    {
        let corpus = cmd::target_dir().join("fuzz-corpus").join(t);
        fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let seeds: Vec<String> = match *t {
            "capture" => ["bruteforce", "benign", "linktypes", "malformed"]
                .iter()
                .map(|d| data.join(d).display().to_string())
                .collect(),
            _ => Vec::new(),
        };
        let target_dir = cmd::target_dir().join("fuzz");
        let args = run_args(
            t,
            &target_dir.display().to_string(),
            release,
            &corpus.display().to_string(),
            &seeds,
            seconds,
        );
        let mut c: Command = toolchain::nightly_cargo()?;
        c.current_dir(&user)
            .args(args.iter().map(OsString::from))
            // The eBPF object is not needed to read files; fuzzing builds without it.
            .env("AYA_BUILD_SKIP", "1");
        cmd::run_step(&mut c).with_context(|| format!("fuzz target {t}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_writes_to_its_own_corpus_and_reads_the_seeds() {
        let a = run_args(
            "capture",
            "/t",
            false,
            "/t/c",
            &["/s1".into(), "/s2".into()],
            15,
        );
        assert_eq!(
            a,
            [
                "fuzz",
                "run",
                "--dev",
                "--sanitizer",
                "none",
                "--target-dir",
                "/t",
                "capture",
                "/t/c",
                "/s1",
                "/s2",
                "--",
                "-max_total_time=15",
                "-max_len=262144",
                "-rss_limit_mb=2048"
            ]
        );
    }
}
