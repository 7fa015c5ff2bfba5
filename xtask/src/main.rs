//! `cargo xtask`: Astra's developer tasks (see DEVELOPERS.md).

mod bench;
mod build;
mod cmd;
mod demo;
mod deps;
mod fuzz;
mod man;
mod test;
mod tidy;
mod toolchain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Astra developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing toolchain pieces (nightly rust-src, bpf-linker), then build the workspace.
    Build(build::Args),
    /// Install what the tests need, then run fmt, clippy and the test suite (as root).
    Test(test::Args),
    /// Build release, then run `astra lab` with the given arguments.
    Demo(demo::Args),
    /// Build release, install the tools compared against, then run `astra bench`.
    Bench(bench::Args),
    /// Build release, then write man pages for astra and its subcommands to target/man.
    Man,
    /// Run the cargo-fuzz targets (captures, flow logs, login events), seeded with the public
    /// captures of the tests.
    Fuzz(fuzz::Args),
    /// Check astra-user's module layers and imports, clap's place, typed errors and commit
    /// messages (also the first step of `test`).
    Tidy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Build(args) => build::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Man => man::run(),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Tidy => tidy::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::from(cmd::exit_code_of(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn passes_extra_args_through() {
        let cli = Cli::parse_from(["xtask", "test", "--", "--test", "lab", "--", "--nocapture"]);
        let Task::Test(args) = cli.command else {
            panic!("not test")
        };
        assert_eq!(args.cargo_test_args, ["--test", "lab", "--", "--nocapture"]);

        let cli = Cli::parse_from(["xtask", "demo", "--iface", "veth0", "-v"]);
        let Task::Demo(args) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(args.lab_args, ["--iface", "veth0", "-v"]);

        let cli = Cli::parse_from(["xtask", "build", "--release"]);
        assert!(matches!(
            cli.command,
            Task::Build(build::Args { release: true })
        ));
    }
}
