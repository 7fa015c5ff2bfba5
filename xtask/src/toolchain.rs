//! The Rust pieces the eBPF build needs beyond a stable toolchain: the `nightly` toolchain with
//! `rust-src` (aya-build compiles astra-ebpf with `-Z build-std=core`) and `bpf-linker`, built
//! against the nightly's own libLLVM because there is no prebuilt download.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

/// Always the moving `nightly` channel, never a dated one.
pub const NIGHTLY: &str = "nightly";

/// What `rustc -vV` says about itself.
#[derive(Debug, PartialEq, Eq)]
pub struct RustcInfo {
    pub release: String,
    pub host: String,
    pub llvm_version: Option<String>,
}

impl RustcInfo {
    /// The LLVM major version, which picks bpf-linker's `llvm-<major>` feature.
    pub fn llvm_major(&self) -> Result<u32> {
        let version = self
            .llvm_version
            .as_deref()
            .ok_or_else(|| anyhow!("rustc {} does not report an LLVM version", self.release))?;
        let major = version.split('.').next().unwrap_or_default();
        major
            .parse()
            .with_context(|| format!("unexpected LLVM version {version:?} in `rustc -vV`"))
    }
}

/// Parses `rustc -vV` output (`release: ...`, `host: ...`, `LLVM version: 22.1.4`).
pub fn parse_rustc_vv(text: &str) -> Result<RustcInfo> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Ok(RustcInfo {
        release: field("release").ok_or_else(|| anyhow!("no `release:` line in `rustc -vV`"))?,
        host: field("host").ok_or_else(|| anyhow!("no `host:` line in `rustc -vV`"))?,
        llvm_version: field("LLVM version"),
    })
}

/// The one `libLLVM.so.*` among the file names of a sysroot's `lib` directory.
pub fn find_libllvm<S: AsRef<str>>(names: &[S]) -> Result<&str> {
    let found: Vec<&str> = names
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| n.starts_with("libLLVM.so."))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no libLLVM.so.* in the nightly sysroot's lib directory"),
        many => bail!(
            "several libLLVM.so.* in the nightly sysroot's lib directory: {}",
            many.join(", ")
        ),
    }
}

/// `cargo install` arguments for bpf-linker linked against LLVM `llvm_major`.
pub fn bpf_linker_install_args(llvm_major: u32, force: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        "bpf-linker",
        "--no-default-features",
        "--features",
    ]
    .map(String::from)
    .into();
    args.push(format!("llvm-{llvm_major}"));
    if force {
        args.push("--force".into());
    }
    args
}

/// Where rust-src puts `core`'s sources inside a sysroot.
pub fn rust_src_marker(sysroot: &Path) -> PathBuf {
    sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml")
}

fn rustup() -> Result<Command> {
    which::which("rustup")
        .map(Command::new)
        .map_err(|_| anyhow!("rustup not found on PATH: install it from https://rustup.rs"))
}

fn nightly_rustc(args: &[&str]) -> Result<String> {
    let mut cmd = rustup()?;
    cmd.args(["run", NIGHTLY, "rustc"]).args(args);
    cmd::output(&mut cmd)
}

fn nightly_sysroot() -> Result<PathBuf> {
    nightly_rustc(&["--print", "sysroot"]).map(PathBuf::from)
}

/// Makes sure the `nightly` toolchain and its `rust-src` component are installed.
pub fn ensure_rust_src() -> Result<()> {
    let sysroot = match nightly_sysroot() {
        Ok(sysroot) => sysroot,
        Err(err) => {
            eprintln!("note: nightly toolchain not usable ({err:#}); installing it");
            cmd::run(rustup()?.args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            nightly_sysroot()?
        }
    };
    if !rust_src_marker(&sysroot).exists() {
        cmd::run(rustup()?.args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

/// Makes sure `bpf-linker` is on PATH and runs, building it when it is missing (or reinstalling
/// it when it no longer starts, e.g. after a nightly update replaced the libLLVM it links).
pub fn ensure_bpf_linker() -> Result<()> {
    let force = match which::which("bpf-linker") {
        Ok(path) => match cmd::output(Command::new(&path).arg("--version")) {
            Ok(_) => return Ok(()),
            Err(err) => {
                eprintln!(
                    "note: {} does not run ({err:#}); rebuilding it",
                    path.display()
                );
                true
            }
        },
        Err(_) => false,
    };
    install_bpf_linker(force)?;
    if which::which("bpf-linker").is_err() {
        let home = cargo_home();
        bail!(
            "bpf-linker was installed into {} but that directory is not on PATH: add it",
            home.join("bin").display()
        );
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("~/.cargo"))
}

fn install_bpf_linker(force: bool) -> Result<()> {
    cmd::run(&mut bpf_linker_install_command(force)?)
}

/// `cargo install bpf-linker` set up to link the nightly's libLLVM (creates the LLVM prefix).
fn bpf_linker_install_command(force: bool) -> Result<Command> {
    let info = parse_rustc_vv(&nightly_rustc(&["-vV"])?)?;
    let major = info.llvm_major()?;
    let libdir = nightly_sysroot()?.join("lib");
    let names: Vec<String> = fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let libllvm = libdir.join(find_libllvm(&names)?);

    // bpf-linker's build script wants an LLVM prefix with lib/libLLVM.so; the rpath makes the
    // installed binary find the nightly's libLLVM at run time.
    let prefix = cmd::target_dir()
        .join("xtask")
        .join(format!("llvm-{major}"));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    symlink(&libllvm, &link).with_context(|| format!("creating {}", link.display()))?;

    let mut cmd = cmd::cargo();
    cmd.args(bpf_linker_install_args(major, force))
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", libdir.display()),
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    Ok(cmd)
}

/// Everything `cargo build` of the workspace needs.
pub fn ensure_build_tools() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

/// clippy for the toolchain that builds the workspace, and the nightly's rustfmt (rustfmt.toml
/// groups imports with options only the nightly formatter has).
pub fn ensure_check_tools() -> Result<()> {
    if cmd::output(cmd::cargo().args(["clippy", "--version"])).is_err() {
        let mut add = rustup()?;
        add.current_dir(cmd::workspace_root())
            .args(["component", "add", "clippy"]);
        cmd::run(&mut add)?;
    }
    if cmd::output(nightly_cargo()?.args(["fmt", "--version"])).is_err() {
        let mut add = rustup()?;
        add.args(["component", "add", "rustfmt", "--toolchain", NIGHTLY]);
        cmd::run(&mut add)?;
    }
    Ok(())
}

/// `cargo` of the nightly toolchain, run in the workspace.
pub fn nightly_cargo() -> Result<Command> {
    let mut cmd = rustup()?;
    cmd.current_dir(cmd::workspace_root())
        .args(["run", NIGHTLY, "cargo"]);
    Ok(cmd)
}

/// The host triple of the toolchain that builds the workspace.
pub fn host_triple() -> Result<String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.current_dir(cmd::workspace_root()).arg("-vV");
    Ok(parse_rustc_vv(&cmd::output(&mut cmd)?)?.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHTLY_VV: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)
binary: rustc
commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a
commit-date: 2026-05-19
host: x86_64-unknown-linux-gnu
release: 1.97.0-nightly
LLVM version: 22.1.4
";

    #[test]
    fn parses_rustc_vv() {
        let info = parse_rustc_vv(NIGHTLY_VV).unwrap();
        assert_eq!(
            info,
            RustcInfo {
                release: "1.97.0-nightly".into(),
                host: "x86_64-unknown-linux-gnu".into(),
                llvm_version: Some("22.1.4".into()),
            }
        );
        assert_eq!(info.llvm_major().unwrap(), 22);
    }

    #[test]
    fn llvm_major_needs_a_version() {
        let no_llvm = NIGHTLY_VV.replace("LLVM version: 22.1.4\n", "");
        let info = parse_rustc_vv(&no_llvm).unwrap();
        assert!(info.llvm_major().is_err());
        let odd = NIGHTLY_VV.replace("22.1.4", "twenty-two");
        assert!(parse_rustc_vv(&odd).unwrap().llvm_major().is_err());
        let bare = NIGHTLY_VV.replace("22.1.4", "23");
        assert_eq!(parse_rustc_vv(&bare).unwrap().llvm_major().unwrap(), 23);
    }

    #[test]
    fn rustc_vv_needs_host_and_release() {
        assert!(parse_rustc_vv("rustc 1.95.0\nrelease: 1.95.0\n").is_err());
        assert!(parse_rustc_vv("").is_err());
    }

    #[test]
    fn finds_the_one_libllvm() {
        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "rustlib",
        ];
        assert_eq!(
            find_libllvm(&names).unwrap(),
            "libLLVM.so.22.1-rust-1.97.0-nightly"
        );
        assert!(find_libllvm(&["rustlib"]).is_err());
        let two = ["libLLVM.so.21.1-rust", "libLLVM.so.22.1-rust"];
        let err = find_libllvm(&two).unwrap_err().to_string();
        assert!(
            err.contains("libLLVM.so.21.1-rust, libLLVM.so.22.1-rust"),
            "{err}"
        );
    }

    #[test]
    fn install_args_pick_the_llvm_feature() {
        assert_eq!(
            bpf_linker_install_args(22, false).join(" "),
            "install bpf-linker --no-default-features --features llvm-22"
        );
        assert!(bpf_linker_install_args(21, true).ends_with(&["llvm-21".into(), "--force".into()]));
    }
}
