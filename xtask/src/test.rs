//! `cargo xtask test`: tidy, toolchain pieces and test tools, then fmt, clippy and the tests.
//! Tests load BPF programs and create network namespaces, so they run as root: when xtask is
//! not root, cargo runs the test binaries through `sudo -E` (as its target runner), so the build
//! itself stays unprivileged and target/ keeps its owner.

use std::{env, ffi::OsString, process::Command, time::Instant};

use anyhow::Result;

use crate::{build, cmd, deps, fuzz, tidy, toolchain};

/// Seconds each fuzz target runs at the end of `cargo xtask test`: enough to replay the seeds
/// and mutate them a while; longer runs are `cargo xtask fuzz`.
const FUZZ_SECONDS: u32 = 20;

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- --test integration lab:: -- --nocapture`).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_test_args: Vec<OsString>,
}

/// How the test binaries get root.
#[derive(Debug, PartialEq, Eq)]
pub enum Privilege {
    Root,
    Sudo,
    Unprivileged,
}

pub fn privilege(is_root: bool, have_sudo: bool) -> Privilege {
    match (is_root, have_sudo) {
        (true, _) => Privilege::Root,
        (false, true) => Privilege::Sudo,
        (false, false) => Privilege::Unprivileged,
    }
}

/// The variable that sets cargo's runner for `triple`, e.g.
/// `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER`.
pub fn runner_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_RUNNER",
        triple.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The three checks, in order; extra arguments go to `cargo test` only.
pub fn check_args(extra: &[OsString]) -> [Vec<OsString>; 3] {
    let os = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
    let fmt = os(&["fmt", "--all", "--", "--check"]);
    let mut clippy = os(&["clippy"]);
    clippy.extend(os(&build::WORKSPACE));
    clippy.extend(os(&["--all-targets", "--", "-D", "warnings"]));
    let mut test = os(&["test"]);
    test.extend(os(&build::WORKSPACE));
    test.extend(extra.iter().cloned());
    [fmt, clippy, test]
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    // First: it needs nothing installed and takes a second, so a structural mistake fails fast.
    cmd::step(
        "tidy (layers, imports, clap, typed errors, commits)",
        tidy::run,
    )?;
    cmd::step(
        "toolchain (nightly rust-src, bpf-linker, rustfmt, clippy)",
        || {
            toolchain::ensure_build_tools()?;
            toolchain::ensure_check_tools()
        },
    )?;
    cmd::step("test tools (apt)", || {
        deps::ensure(deps::TEST_REQUIREMENTS)?;
        deps::ensure(deps::LAB_REQUIREMENTS)
    })?;
    cmd::step("browser driver (npm)", deps::ensure_ui_tools)?;

    let [fmt, clippy, test] = check_args(&args.cargo_test_args);
    let cargo = |args: &[OsString]| {
        let mut cmd = cmd::cargo();
        build::no_build_skip(cmd.args(args));
        if env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        cmd
    };
    // The nightly's formatter: rustfmt.toml's import grouping is a nightly option.
    cmd::run_step(toolchain::nightly_cargo()?.args(&fmt))?;
    // Lints need no eBPF object (the bytes are only embedded), and building it takes a
    // minute; the test build right after builds it for real.
    cmd::run_step(cargo(&clippy).env("AYA_BUILD_SKIP", "1"))?;

    let mut test = cargo(&test);
    match privilege(cmd::is_root(), deps::command_present("sudo")) {
        Privilege::Root => {}
        Privilege::Sudo => {
            if cmd::run(Command::new("sudo").arg("-v")).is_ok() {
                eprintln!("note: not root: the test binaries run through `sudo -E`");
                test.env(runner_var(&toolchain::host_triple()?), "sudo -E");
            } else {
                unprivileged_note();
            }
        }
        Privilege::Unprivileged => unprivileged_note(),
    }
    cmd::run_step(&mut test)?;
    cmd::step("fuzz (a short run of each target)", || {
        fuzz::run_targets(&[], FUZZ_SECONDS, false)
    })?;
    eprintln!(
        "==> cargo xtask test: all steps passed ({})",
        cmd::elapsed(start.elapsed())
    );
    Ok(())
}

fn unprivileged_note() {
    let ci = env::var("CI").is_ok_and(|v| v == "true");
    let outcome = if ci { "fail (CI=true)" } else { "skip" };
    eprintln!("note: not root and no usable sudo: privileged tests will {outcome}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn extra_args_go_to_cargo_test_only() {
        let extra: Vec<OsString> = ["--test", "lab", "--", "--nocapture"]
            .map(OsString::from)
            .into();
        let [fmt, clippy, test] = check_args(&extra);
        assert_eq!(joined(&fmt), "fmt --all -- --check");
        assert_eq!(
            joined(&clippy),
            "clippy --workspace --exclude astra-ebpf --all-targets -- -D warnings"
        );
        assert_eq!(
            joined(&test),
            "test --workspace --exclude astra-ebpf --test lab -- --nocapture"
        );
    }

    #[test]
    fn runner_variable_for_host() {
        assert_eq!(
            runner_var("x86_64-unknown-linux-gnu"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER"
        );
    }

    #[test]
    fn privilege_decision() {
        assert_eq!(privilege(true, false), Privilege::Root);
        assert_eq!(privilege(false, true), Privilege::Sudo);
        assert_eq!(privilege(false, false), Privilege::Unprivileged);
    }
}
