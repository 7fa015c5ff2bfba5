//! `cargo xtask build`: toolchain pieces, then the workspace. astra-ebpf is not built directly;
//! astra-user's build.rs builds it for the BPF target with aya-build.

use std::{env, process::Command};

use anyhow::Result;

use crate::{cmd, toolchain};

/// The eBPF crate: `#![no_std]`, nightly-only, never built for the host.
pub const EBPF_CRATE: &str = "astra-ebpf";

#[derive(clap::Args)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// Arguments selecting every workspace package that builds on the host.
pub const WORKSPACE: [&str; 3] = ["--workspace", "--exclude", EBPF_CRATE];

pub fn build_args(release: bool) -> Vec<&'static str> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(WORKSPACE);
    args
}

/// A real build must not skip the eBPF object, so an inherited `AYA_BUILD_SKIP` is dropped.
pub fn no_build_skip(cmd: &mut Command) -> &mut Command {
    if env::var_os("AYA_BUILD_SKIP").is_some() {
        eprintln!("note: ignoring AYA_BUILD_SKIP for `{}`", cmd::display(cmd));
    }
    cmd.env_remove("AYA_BUILD_SKIP")
}

pub fn run(args: &Args) -> Result<()> {
    cmd::step(
        "toolchain (nightly rust-src, bpf-linker)",
        toolchain::ensure_build_tools,
    )?;
    cmd::run_step(no_build_skip(cmd::cargo().args(build_args(args.release))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_host_workspace() {
        assert_eq!(
            build_args(false).join(" "),
            "build --workspace --exclude astra-ebpf"
        );
        assert_eq!(
            build_args(true).join(" "),
            "build --release --workspace --exclude astra-ebpf"
        );
    }
}
