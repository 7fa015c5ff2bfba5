use which::which;

/// Building this crate needs the `bpf-linker` binary, which cargo cannot express as a
/// dependency. Rebuild whenever the linker on PATH changes (as aya-template does).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            panic!("bpf-linker not found on PATH: run `cargo xtask build` once, it installs it")
        }
    }
    // bpf-linker does the code generation, so the backend's features are its arguments. Without
    // this one LLVM splits every load from packet data (only 2-byte aligned after Ethernet) into
    // byte loads and shifts; the kernel accepts unaligned packet loads wherever they are cheap,
    // and its verifier rejects the program at load time on the architectures where they are not.
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
