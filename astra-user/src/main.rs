use std::process::ExitCode;

use astra::cli::{config::ArgsError, run};
use clap::error::ErrorKind;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `astra list | head` should end quietly, the way other Unix tools do, not panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let argv: Vec<_> = std::env::args_os().collect();
    let cli = match astra::cli::config::parse(&argv) {
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
            eprintln!("astra: {}", clap_line(&e));
            return ExitCode::from(2);
        }
    };
    // A replay reports what it found itself; the engine's per-block log lines (naming
    // incident files in a scratch dir that is gone afterwards) would only interleave with it.
    let default_level = match cli.command {
        astra::cli::Command::Replay(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ASTRA_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for people: the journal and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{e}`, not the source chain: every variant's message already ends with its
            // cause, and the chain printed it twice.
            eprintln!("astra: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// One line: clap's first line names the bad argument; the usage block that follows it is
/// noise in scripts and logs. A rejected value is quoted as an excerpt (clap quotes it whole,
/// and our parser's reason quotes it again).
fn clap_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() == ErrorKind::ValueValidation
        && let (Some(ContextValue::String(value)), Some(ContextValue::String(arg))) = (
            e.get(ContextKind::InvalidValue),
            e.get(ContextKind::InvalidArg),
        )
    {
        let why = std::error::Error::source(e).map_or_else(String::new, |s| format!(": {s}"));
        return format!(
            "invalid value '{}' for '{arg}'{why}",
            astra::text::excerpt(value)
        );
    }
    let text = e.render().to_string();
    let mut lines = text.lines();
    let mut first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    // "the following required arguments were not provided:" names them on the next line.
    if e.kind() == ErrorKind::MissingRequiredArgument
        && let Some(names) = lines.next()
    {
        first = format!("{first} {}", names.trim());
    }
    astra::text::excerpt_line(&first)
}
