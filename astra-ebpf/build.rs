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
}
