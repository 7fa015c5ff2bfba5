use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds the eBPF object with aya-build (cargo-in-cargo on the nightly toolchain, as in
/// aya-template). `AYA_BUILD_SKIP=1` skips it so `cargo check`/clippy work without bpf-linker;
/// the binary then carries an empty object and `astra run` says how to build it properly.
fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // aya-build prints its own warning; keep a stale object from a real build if there is one.
        // One object per binary of astra-ebpf: the dataplane and the bench's programs.
        for name in ["astra", "astra-bench"] {
            let object = out_dir.join(name);
            if !object.exists() {
                fs::write(&object, []).context("writing placeholder eBPF object")?;
            }
        }
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "astra-ebpf")
        .ok_or_else(|| anyhow!("astra-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
