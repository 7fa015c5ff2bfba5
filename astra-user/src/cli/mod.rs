//! The `astra` command line: the only module that knows clap. Flags are parsed and checked
//! here, turned into the library's own types, and the results rendered for people (tables) or
//! scripts (`--json`). One file per verb group; [`config`] merges the configuration file into
//! the command line before clap sees it.

pub mod agent;
pub mod blocklist;
pub mod config;
pub mod history;
pub mod lists;
pub mod mitigate;
pub mod model;
pub mod render;
pub mod replay;
pub mod status;
pub mod tools;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::{
    addr::{parse_net, parse_ttl},
    dataplane,
    engine::DetectConfig,
    error::{Error, Result},
    store::ListKind,
};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/astra";

#[derive(Parser, Debug)]
#[command(
    name = "astra",
    version,
    about = "Kernel-accelerated network sensor: XDP flow accounting, in-kernel blocklist, anomaly detection"
)]
pub struct Cli {
    /// Directory on a BPF filesystem where maps and links are pinned.
    #[arg(long, global = true, env = "ASTRA_PIN_DIR", default_value = dataplane::DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
    /// Directory for the durable state store and the agent's status file.
    #[arg(long, global = true, env = "ASTRA_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Configuration file (TOML; keys are the long option names with `_` for `-`). Default:
    /// /etc/astra/astra.toml when it exists. Options on the command line win over the file.
    #[arg(long, global = true, env = "ASTRA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
    /// The configuration file that was merged in, if any.
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
    /// `[detect]` settings from the configuration file, applied before `--set`.
    #[arg(skip)]
    pub detect_settings: Vec<String>,
    /// The command line as given, to re-read the configuration on SIGHUP.
    #[arg(skip)]
    pub argv: Vec<std::ffi::OsString>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the dataplane, attach it to interfaces and run the agent until SIGINT/SIGTERM.
    Run(Box<agent::RunArgs>),
    /// Block a source address or prefix in the kernel (in force when the command returns).
    Block {
        #[arg(value_parser = parse_net, value_name = "ADDR[/LEN]")]
        net: IpNet,
        /// How long the block lasts (e.g. 30s, 10m, 2h); omit or 'permanent' for no expiry.
        #[arg(long, value_parser = parse_ttl, value_name = "DUR")]
        ttl: Option<Duration>,
        /// Why the block was placed, shown by `astra list` (at most 512 characters).
        #[arg(long, default_value = "")]
        reason: String,
        /// Allow 0.0.0.0/0 or ::/0, which cuts this host off from every peer.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove a block.
    Unblock {
        #[arg(value_parser = parse_net, value_name = "ADDR[/LEN]")]
        net: IpNet,
        #[arg(long)]
        json: bool,
    },
    /// Allowlist an address or prefix: it is never dropped, whatever the blocklist says.
    Allow {
        #[arg(value_parser = parse_net, value_name = "ADDR[/LEN]")]
        net: IpNet,
        /// Remove the allowlist entry instead of adding it.
        #[arg(long)]
        remove: bool,
        /// Why the entry exists, shown by `astra list` (at most 512 characters).
        #[arg(long, default_value = "")]
        reason: String,
        /// Allow 0.0.0.0/0 or ::/0, which turns every block off.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Hold a source address or prefix to a rate in the kernel (packets/s and/or bits/s):
    /// what goes over it is dropped in XDP, what stays under passes.
    Throttle(mitigate::ThrottleArgs),
    /// Remove a throttle.
    Unthrottle {
        #[arg(value_parser = parse_net, value_name = "ADDR[/LEN]")]
        net: IpNet,
        #[arg(long)]
        json: bool,
    },
    /// Quarantine a host: its traffic is dropped both ways on every attached interface (as
    /// source and as destination), except to and from allowlisted addresses.
    Quarantine(mitigate::QuarantineArgs),
    /// Release a quarantined host.
    Release {
        #[arg(value_parser = parse_net, value_name = "ADDR")]
        net: IpNet,
        #[arg(long)]
        json: bool,
    },
    /// Protect a target from floods: new SYNs from sources not known to complete handshakes
    /// are held to a budget, and answers to requests the target never sent (reflection,
    /// stray SYN-ACKs) are dropped; established connections are never touched.
    Protect(mitigate::ProtectArgs),
    /// End a target's protection.
    Unprotect {
        #[arg(value_parser = parse_net, value_name = "ADDR")]
        net: IpNet,
        #[arg(long)]
        json: bool,
    },
    /// List block, allow, quarantine, throttle and protect entries with remaining TTL,
    /// reason, source and hits.
    List {
        #[arg(long)]
        json: bool,
        /// Only one list.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// At most N entries of the list (oldest first), read a page at a time from the store;
        /// needs --kind.
        #[arg(long, value_name = "N", requires = "kind")]
        limit: Option<u64>,
        /// Skip the first N entries; needs --kind.
        #[arg(long, value_name = "N", requires = "kind")]
        offset: Option<u64>,
    },
    /// Show the flows in the kernel flow table, both directions paired, largest first.
    Flows {
        #[arg(long, default_value_t = 20, value_name = "N")]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show whether the agent runs, its interfaces and modes, and map fill levels.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show alerts from the history (or an event log), oldest first.
    Alerts {
        #[arg(long)]
        json: bool,
        /// Only alerts from the last DUR (e.g. 10m, 1h).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
        since: Option<Duration>,
        /// Read this EVE event log instead of the history in the state store.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// At most the newest N.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        limit: usize,
    },
    /// Show incidents (automatic blocks with their evidence) from the history, oldest first;
    /// with an ID, that incident's full report.
    Incidents {
        #[arg(value_name = "ID")]
        id: Option<String>,
        /// Only incidents from the last DUR (e.g. 10m, 1h).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
        since: Option<Duration>,
        /// At most the newest N.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print every detection setting with its default value (for `astra run --set`).
    DetectDefaults,
    /// Detach programs an agent left attached (`--on-exit keep`, or killed): remove the pinned
    /// links. Refused while an agent runs.
    Detach,
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The HTTP API's bearer tokens: the admin's (<state-dir>/api.token) changes things, the
    /// viewer's (<state-dir>/api.viewer.token) only reads. Both mode 0600.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The isolation-forest model: status, training, inspection, import from scikit-learn.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Measure Astra side by side with its floor and with the tools it replaces (XDP cost per
    /// packet, veth flood drop rate, agent poll time and memory, forest speed, detection
    /// latency); prints a table and can write the measurements as JSON.
    Bench {
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Only some groups: xdp, live, poll, botnet, forest, latency, synflood, reflection, replay,
        /// crowdsec, trees, ui (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Internal: one agent-poll measurement in a process of its own.
        #[arg(long, hide = true, value_name = "FLOWS")]
        poll_child: Option<u32>,
        /// Internal: the botnet-shaped flood in a process of its own.
        #[arg(long, hide = true)]
        botnet_child: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (astra.1 and one per subcommand) into a directory.
    Man {
        #[arg(long, default_value = "man", value_name = "DIR")]
        out: PathBuf,
    },
    /// Run lab scenarios on network namespaces it creates and removes: real services, benign
    /// clients and attackers, Astra attached; prints a table and can write a JSON report.
    Lab(tools::LabArgs),
    /// Replay packet captures (pcap, pcapng) through the real XDP program into private maps,
    /// judged on the capture's own clock: alerts, incidents, top talkers and a summary.
    Replay(replay::ReplayArgs),
    /// Import blocklist feeds (FireHOL, Spamhaus DROP, CSV, JSON) and export the lists.
    #[command(subcommand)]
    Blocklist(blocklist::BlocklistCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a role's token (generating one if there is none yet).
    Show {
        #[arg(long, value_enum, default_value = "admin")]
        role: RoleArg,
    },
    /// Replace a role's token; the old one stops working at once.
    Rotate {
        #[arg(long, value_enum, default_value = "admin")]
        role: RoleArg,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    /// Reads and changes.
    Admin,
    /// Reads only.
    Viewer,
}

impl From<RoleArg> for crate::agent::token::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => crate::agent::token::Role::Admin,
            RoleArg::Viewer => crate::agent::token::Role::Viewer,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration file and print the effective `astra run` configuration (file,
    /// environment and defaults merged) as TOML, or JSON with --json.
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Block,
    Allow,
    Quarantine,
    Throttle,
    Protect,
}

impl From<KindArg> for ListKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Block => ListKind::Block,
            KindArg::Allow => ListKind::Allow,
            KindArg::Quarantine => ListKind::Quarantine,
            KindArg::Throttle => ListKind::Throttle,
            KindArg::Protect => ListKind::Protect,
        }
    }
}

/// Why a command did not succeed: the library's errors, and the verdicts of the tools the
/// CLI runs (the library's error type knows nothing of the lab).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Astra(#[from] Error),
    /// `astra lab`: the scenarios ran, and some did not pass.
    #[error("{failed} scenario(s) failed")]
    ScenariosFailed { failed: usize },
}

impl CliError {
    /// The process status: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Astra(e) => e.exit_code(),
            CliError::ScenariosFailed { .. } => 1,
        }
    }
}

pub fn run(cli: Cli) -> std::result::Result<(), CliError> {
    if let Command::Lab(args) = cli.command {
        return tools::lab(args);
    }
    Ok(run_verb(cli)?)
}

fn run_verb(cli: Cli) -> Result<()> {
    if let Command::Replay(a) = cli.command {
        return replay::run(a, &cli.detect_settings);
    }
    run_other(cli)
}

fn run_other(cli: Cli) -> Result<()> {
    if matches!(cli.command, Command::Run(_)) {
        return agent::run_agent(agent::agent_config(cli)?);
    }
    let Cli {
        pin_dir,
        state_dir,
        command,
        argv,
        ..
    } = cli;
    if matches!(
        command,
        Command::Block { .. }
            | Command::Unblock { .. }
            | Command::Allow { .. }
            | Command::List { .. }
            | Command::Throttle(_)
            | Command::Unthrottle { .. }
            | Command::Quarantine(_)
            | Command::Release { .. }
            | Command::Protect(_)
            | Command::Unprotect { .. }
            | Command::Blocklist(_)
    ) {
        lists::check_agent_pin_dir(&pin_dir, &state_dir)?;
    }
    match command {
        Command::Run(_) => unreachable!("handled above"),
        Command::Config(ConfigCommand::Check { json }) => agent::config_check(&argv, json),
        Command::Detach => agent::detach(&pin_dir),
        Command::Token(t) => agent::token(&state_dir, t),
        Command::Block {
            net,
            ttl,
            reason,
            force,
            json,
        } => lists::block(&pin_dir, &state_dir, net, ttl, &reason, force, json),
        Command::Unblock { net, json } => lists::unblock(&pin_dir, &state_dir, net, json),
        Command::Allow {
            net,
            remove,
            reason,
            force,
            json,
        } => lists::allow(&pin_dir, &state_dir, net, remove, &reason, force, json),
        Command::List {
            json,
            kind,
            limit,
            offset,
        } => lists::list(&pin_dir, &state_dir, kind, limit, offset, json),
        Command::Throttle(a) => mitigate::throttle(&pin_dir, &state_dir, a),
        Command::Unthrottle { net, json } => {
            mitigate::remove(&pin_dir, &state_dir, ListKind::Throttle, net, json)
        }
        Command::Quarantine(a) => mitigate::quarantine(&pin_dir, &state_dir, a),
        Command::Release { net, json } => {
            mitigate::remove(&pin_dir, &state_dir, ListKind::Quarantine, net, json)
        }
        Command::Protect(a) => mitigate::protect(&pin_dir, &state_dir, a),
        Command::Unprotect { net, json } => {
            mitigate::remove(&pin_dir, &state_dir, ListKind::Protect, net, json)
        }
        Command::Flows { top, json } => status::flows(&pin_dir, &state_dir, top, json),
        Command::Lab { .. } => unreachable!("handled in run"),
        Command::Replay(_) => unreachable!("handled in run_verb"),
        Command::Status { json } => status::status(&pin_dir, &state_dir, json),
        Command::Alerts {
            json,
            since,
            events,
            limit,
        } => history::alerts(&state_dir, events, since, limit, json),
        Command::Incidents {
            id,
            since,
            limit,
            json,
        } => history::incidents(&state_dir, id.as_deref(), since, limit, json),
        Command::DetectDefaults => render::print_json(&DetectConfig::default()),
        Command::Completions { shell } => tools::completions(shell),
        Command::Man { out } => tools::write_man_pages(&out),
        Command::Bench {
            json,
            only,
            poll_child,
            botnet_child,
        } => match (poll_child, botnet_child) {
            (Some(n), _) => crate::bench::poll::poll_child(n),
            (None, true) => crate::bench::poll::botnet_child(),
            (None, false) => crate::bench::run(json.as_deref(), &only),
        },
        Command::Model(m) => model::run(&state_dir, m),
        Command::Blocklist(b) => blocklist::run(b, &pin_dir, &state_dir),
    }
}
