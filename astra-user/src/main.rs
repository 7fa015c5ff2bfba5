use std::process::ExitCode;

use astra::{cli::run, config::ArgsError};
use clap::error::ErrorKind;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `astra list | head` should end quietly, the way other Unix tools do, not panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let argv: Vec<_> = std::env::args_os().collect();
    let cli = match astra::config::parse(&argv) {
        Ok(cli) => cli,
        Err(ArgsError::Config(e)) => {
            eprintln!("astra: {e}");
            return ExitCode::from(2);
        }
        Err(ArgsError::Clap(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Clap(e)) => {
            // One line: clap's first line names the bad argument; the usage block that
            // follows it is noise in scripts and logs.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("astra: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ASTRA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for people: the journal and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli).map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("astra: {e:#}");
            let code = e
                .downcast_ref::<astra::Error>()
                .map_or(1, astra::Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}
