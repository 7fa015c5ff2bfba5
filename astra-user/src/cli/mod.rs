//! Command-line interface: argument definitions and the verbs that act on the pinned maps and
//! the state store.

pub mod blocklist;
pub mod config;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    addr::{parse_net, parse_ttl},
    agent::{
        self,
        config::{AgentConfig, OnExit, Reload},
        status::{AgentStatus, FlowReport, StatusReport, flows_report, status_report},
    },
    clock::{now_ms, now_unix},
    dataplane::{self, XdpModeArg},
    detect::Alert,
    engine::DetectConfig,
    error::{Error, Result},
    lists::{Added, Enforcement, ListRow, Lists},
    store::{ListKind, Store},
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
    Run(RunArgs),
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
    /// List block and allow entries with remaining TTL, reason, source and hits.
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
    /// The HTTP API's bearer token (in <state-dir>/api.token, mode 0600).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The isolation-forest model: status, training, inspection, import from scikit-learn.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure Astra side by side with its floor and with the tools it replaces (XDP cost per
    /// packet, veth flood drop rate, agent poll time and memory, forest speed, detection
    /// latency); prints a table and can write the measurements as JSON.
    Bench {
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Only some groups: xdp, live, poll, forest, latency (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Internal: one agent-poll measurement in a process of its own.
        #[arg(long, hide = true, value_name = "FLOWS")]
        poll_child: Option<u32>,
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
    Lab {
        /// Scenario file (TOML); repeat for several. Default: the built-in set.
        #[arg(long = "scenario", value_name = "FILE")]
        scenarios: Vec<PathBuf>,
        /// Write the results as JSON.
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
        /// List the built-in scenarios and exit.
        #[arg(long)]
        list: bool,
        /// Keep each scenario's state dir (agent log, eve.json, incident reports).
        #[arg(long)]
        keep: bool,
    },
    /// Import blocklist feeds (FireHOL, Spamhaus DROP, CSV, JSON) and export the lists.
    #[command(subcommand)]
    Blocklist(blocklist::BlocklistCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print the token (generating one if the agent has not yet).
    Show,
    /// Replace the token; the old one stops working at once.
    Rotate,
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

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Whether a model exists, its age and origin, and what the running agent is doing.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Train a model from the agent's saved training rows (or a CSV with --rows) and save
    /// it; a running agent picks it up at its next poll.
    Train {
        /// CSV with a header of the feature names; default <state-dir>/training.csv.
        #[arg(long, value_name = "FILE")]
        rows: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        n_estimators: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print the saved model's parameters and trees summary.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Use a scikit-learn IsolationForest exported with tools/sklearn_export.py.
    ImportSklearn {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Block,
    Allow,
}

impl From<KindArg> for ListKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Block => ListKind::Block,
            KindArg::Allow => ListKind::Allow,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnExitArg {
    Detach,
    Keep,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum XdpModeCli {
    Auto,
    Native,
    Skb,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to (repeat for several).
    #[arg(long = "iface", required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
    /// XDP mode: auto tries native (driver) mode and falls back to skb (generic) mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeCli,
    /// Address for the Prometheus /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
    /// Address for the HTTP management API (loopback unless you choose otherwise; changes need
    /// the bearer token in <state-dir>/api.token).
    #[arg(long, default_value = "127.0.0.1:9478", value_name = "ADDR")]
    pub api_addr: SocketAddr,
    /// How often the flow table and counters are read.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub poll_interval: Duration,
    /// Flow table size in entries, fixed when the programs are loaded.
    #[arg(long, default_value_t = astra_common::DEFAULT_FLOW_CAPACITY, value_name = "N")]
    pub flow_capacity: u32,
    /// A flow with no packet for this long is closed and removed from the table.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub idle_timeout: Duration,
    /// A flow older than this is closed and restarted, so long transfers are reported too.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub active_timeout: Duration,
    /// Raise alerts but never block.
    #[arg(long)]
    pub dry_run: bool,
    /// What SIGINT/SIGTERM do to the programs: `detach` them, or `keep` them attached (blocks
    /// stay enforced, expiring on time, and the next `astra run` takes them over with no gap:
    /// what services and upgrades want). `astra detach` removes kept programs.
    #[arg(long, value_enum, default_value = "detach")]
    pub on_exit: OnExitArg,
    /// Event log (JSON lines, Suricata EVE style); default <state-dir>/eve.json.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Alerts and incidents older than this are deleted from the history (and the event log
    /// is rotated when it outgrows the history).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub history_max_age: Duration,
    /// At most this many alerts (and as many incidents) are kept in the history.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub history_max_rows: u64,
    /// Blocklist feed kept applied while the agent runs: entries are added and removed as the
    /// file changes (plain/FireHOL/Spamhaus, CSV or JSON; repeat for several).
    #[arg(long = "feed", value_name = "PATH")]
    pub feeds: Vec<PathBuf>,
    /// How often feed files are checked for changes.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub feed_every: Duration,
    /// Change a detection setting, e.g. rules.port_scan_ports=30 or policy.block_ttl=30m
    /// (repeatable; `astra detect-defaults` lists them all).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
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
    if let Command::Lab {
        scenarios,
        report,
        list,
        keep,
    } = cli.command
    {
        return lab(scenarios, report, list, keep);
    }
    Ok(run_verb(cli)?)
}

fn run_verb(cli: Cli) -> Result<()> {
    if matches!(cli.command, Command::Run(_)) {
        return run_agent(agent_config(cli)?);
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
            | Command::Blocklist(_)
    ) {
        check_agent_pin_dir(&pin_dir, &state_dir)?;
    }
    match command {
        Command::Run(_) => unreachable!("handled above"),
        Command::Config(ConfigCommand::Check { json }) => config_check(&argv, json),
        Command::Detach => detach(&pin_dir),
        Command::Token(t) => {
            let token = match t {
                TokenCommand::Show => crate::agent::token::ensure(&state_dir)?,
                TokenCommand::Rotate => crate::agent::token::rotate(&state_dir)?,
            };
            println!("{token}");
            Ok(())
        }
        Command::Block {
            net,
            ttl,
            reason,
            force,
            json,
        } => {
            crate::addr::check_not_everything(&net, true, force)?;
            crate::limits::check_reason(&reason)?;
            let ttl = ttl.filter(|d| !d.is_zero());
            let mut lists = Lists::open(&state_dir, &pin_dir)?;
            let added = lists.add_manual(ListKind::Block, net, ttl, &reason)?;
            report_added(json, "blocked", &added)
        }
        Command::Unblock { net, json } => {
            let mut lists = Lists::open(&state_dir, &pin_dir)?;
            if !lists.remove(ListKind::Block, &net)? {
                return Err(Error::Usage(format!("{net} is not blocked")));
            }
            report_change(json, "unblocked", &net, None, &Enforcement::InKernel, None)
        }
        Command::Allow {
            net,
            remove,
            reason,
            force,
            json,
        } => {
            if !remove {
                crate::addr::check_not_everything(&net, false, force)?;
                crate::limits::check_reason(&reason)?;
            }
            let mut lists = Lists::open(&state_dir, &pin_dir)?;
            if remove {
                if !lists.remove(ListKind::Allow, &net)? {
                    return Err(Error::Usage(format!("{net} is not allowlisted")));
                }
                report_change(
                    json,
                    "removed from allowlist",
                    &net,
                    None,
                    &Enforcement::InKernel,
                    None,
                )
            } else {
                let added = lists.add_manual(ListKind::Allow, net, None, &reason)?;
                report_added(json, "allowlisted", &added)
            }
        }
        Command::List {
            json,
            kind,
            limit,
            offset,
        } => {
            let lists = Lists::open(&state_dir, &pin_dir)?;
            let kind = kind.map(|k| match k {
                KindArg::Block => ListKind::Block,
                KindArg::Allow => ListKind::Allow,
            });
            let rows: Vec<ListRow> = match (kind, limit, offset) {
                // A page: what the API serves, so a million-entry list need not be read whole.
                (Some(k), l, o) if l.is_some() || o.is_some() => {
                    lists.list_page(k, o.unwrap_or(0), l.unwrap_or(u64::MAX))?.0
                }
                _ => lists
                    .list()?
                    .into_iter()
                    .filter(|r| kind.is_none_or(|k| r.kind == k))
                    .collect(),
            };
            if json {
                print_json(&rows)
            } else {
                print_list(&rows);
                Ok(())
            }
        }
        Command::Flows { top, json } => print_flows(&pin_dir, &state_dir, top, json),
        Command::Lab { .. } => unreachable!("handled in run"),
        Command::Status { json } => status(&pin_dir, &state_dir, json),
        Command::Alerts {
            json,
            since,
            events,
            limit,
        } => alerts(&state_dir, events, since, limit, json),
        Command::Incidents {
            id,
            since,
            limit,
            json,
        } => incidents(&state_dir, id.as_deref(), since, limit, json),
        Command::DetectDefaults => print_json(&DetectConfig::default()),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "astra", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => write_man_pages(&out),
        Command::Bench {
            json,
            only,
            poll_child,
        } => match poll_child {
            Some(n) => crate::bench::poll_child(n),
            None => crate::bench::run(json.as_deref(), &only),
        },
        Command::Model(m) => model_command(&state_dir, m),
        Command::Blocklist(b) => blocklist::run(b, &pin_dir, &state_dir),
    }
}

/// `astra lab`: list the scenarios, or run them and fail when one did not pass.
fn lab(
    scenarios: Vec<PathBuf>,
    report: Option<PathBuf>,
    list: bool,
    keep: bool,
) -> std::result::Result<(), CliError> {
    if list {
        for sc in crate::lab::scenario::default_set()? {
            println!(
                "{:<24} {:<12} {:>4}s  {}",
                sc.name,
                sc.expected.label(),
                sc.duration.as_secs(),
                sc.description
            );
        }
        return Ok(());
    }
    let r = crate::lab::run(crate::lab::LabOptions {
        scenarios,
        report,
        keep,
    })?;
    let failed = r
        .scenarios
        .iter()
        .filter(|s| !s.passed && s.skipped.is_none())
        .count();
    if failed > 0 {
        return Err(CliError::ScenariosFailed { failed });
    }
    Ok(())
}

fn run_agent(cfg: AgentConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    rt.block_on(agent::run(cfg))
}

/// The agent configuration a parsed `astra run` command line stands for.
pub fn agent_config(cli: Cli) -> Result<AgentConfig> {
    let Command::Run(a) = cli.command else {
        return Err(Error::Usage("not an `astra run` command line".into()));
    };
    let argv = cli.argv;
    let mut detect = DetectConfig::default();
    detect.apply_settings(&cli.detect_settings).map_err(|e| {
        let file = cli.config_file.as_deref().unwrap_or(Path::new("config"));
        Error::Usage(format!("{}: detect.{e}", file.display()))
    })?;
    detect.apply(&a.set)?;
    if a.dry_run {
        detect.policy.dry_run = true;
    }
    let cfg = AgentConfig {
        config_file: cli.config_file,
        pin_dir: cli.pin_dir,
        state_dir: cli.state_dir,
        ifaces: a.ifaces,
        xdp_mode: match a.xdp_mode {
            XdpModeCli::Auto => XdpModeArg::Auto,
            XdpModeCli::Native => XdpModeArg::Native,
            XdpModeCli::Skb => XdpModeArg::Skb,
        },
        metrics_addr: a.metrics_addr,
        api_addr: a.api_addr,
        poll_interval: a.poll_interval,
        flow_capacity: a.flow_capacity,
        idle_timeout: a.idle_timeout,
        active_timeout: a.active_timeout,
        events: a.events,
        history_max_age: a.history_max_age,
        history_max_rows: a.history_max_rows,
        feeds: a.feeds,
        feed_every: a.feed_every,
        on_exit: match a.on_exit {
            OnExitArg::Detach => OnExit::Detach,
            OnExitArg::Keep => OnExit::Keep,
        },
        detect,
        reload: Some(Reload::new(move || reload_config(&argv))),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Re-reads the command line and configuration file the agent started with.
pub fn reload_config(argv: &[std::ffi::OsString]) -> Result<AgentConfig> {
    let cli = crate::cli::config::parse(argv).map_err(|e| match e {
        crate::cli::config::ArgsError::Config(e) => e,
        crate::cli::config::ArgsError::Clap(e) => Error::Usage(e.kind().to_string()),
    })?;
    agent_config(cli)
}

/// `astra config check`: the effective `astra run` configuration. The command line is read
/// again as if it said `run`, so the file, environment and defaults merge exactly as they
/// would for the agent.
fn config_check(argv: &[std::ffi::OsString], json: bool) -> Result<()> {
    let parsed = crate::cli::config::as_run(argv).and_then(|a| crate::cli::config::parse(&a));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(crate::cli::config::ArgsError::Config(e)) => return Err(e),
        Err(crate::cli::config::ArgsError::Clap(e)) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid configuration");
            return Err(Error::Usage(
                first.trim_start_matches("error: ").replace(
                    "the following required arguments were not provided:",
                    "not set in the configuration file or on the command line:",
                ) + " "
                    + text.lines().nth(1).unwrap_or("").trim(),
            ));
        }
    };
    let cfg = agent_config(cli)?;
    if json {
        return print_json(&cfg);
    }
    let text = toml::to_string_pretty(&cfg)
        .map_err(|e| Error::Usage(format!("cannot show the configuration as TOML: {e}")))?;
    match &cfg.config_file {
        Some(f) => println!(
            "# effective configuration: {} merged with the command line, environment and defaults",
            f.display()
        ),
        None => println!(
            "# effective configuration: no configuration file; command line, environment and defaults"
        ),
    }
    print!("{text}");
    Ok(())
}

#[derive(Serialize)]
struct Change<'a> {
    action: &'a str,
    net: String,
    expires_at: Option<u64>,
    in_kernel: bool,
    allowlisted_by: Option<String>,
}

fn report_added(json: bool, action: &str, a: &Added) -> Result<()> {
    let enf = match a.in_kernel {
        true => Enforcement::InKernel,
        false => Enforcement::StoredOnly,
    };
    let e = &a.entry;
    report_change(json, action, &e.net, e.expires_at, &enf, a.allowlisted_by)
}

fn report_change(
    json: bool,
    action: &str,
    net: &IpNet,
    expires_at: Option<u64>,
    enf: &Enforcement,
    allowed_by: Option<IpNet>,
) -> Result<()> {
    if json {
        return print_json(&Change {
            action,
            net: net.to_string(),
            expires_at,
            in_kernel: *enf == Enforcement::InKernel,
            allowlisted_by: allowed_by.map(|n| n.to_string()),
        });
    }
    let ttl = match expires_at {
        Some(t) => format!(" for {}", fmt_secs(t.saturating_sub(now_unix()))),
        None if action == "blocked" => " permanently".into(),
        None => String::new(),
    };
    let state = match enf {
        Enforcement::InKernel => "in force now",
        Enforcement::StoredOnly => {
            "stored; no agent has run since boot, it applies when `astra run` starts"
        }
    };
    println!("{action} {net}{ttl} ({state})");
    if let Some(a) = allowed_by {
        println!("note: {a} is allowlisted, so matching packets keep passing");
    }
    Ok(())
}

fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("serialisable");
    println!("{s}");
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().copied());
    t
}

fn fmt_secs(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

fn fmt_time(unix: u64) -> String {
    crate::clock::rfc3339_seconds(unix)
}

fn print_list(rows: &[ListRow]) {
    if rows.is_empty() {
        println!("no block or allow entries");
        return;
    }
    let mut t = table(&[
        "LIST", "ADDRESS", "TTL", "REASON", "SOURCE", "HITS", "CREATED", "KERNEL",
    ]);
    for r in rows {
        t.add_row(vec![
            r.kind.to_string(),
            r.net.to_string(),
            r.ttl_remaining_s.map_or("permanent".into(), fmt_secs),
            if r.reason.is_empty() {
                "-".into()
            } else {
                // Feed comments are kept as they came; a terminal must not run them.
                crate::text::escape_controls(&r.reason).into_owned()
            },
            r.source.to_string(),
            r.hits.to_string(),
            fmt_time(r.created_at),
            if r.in_kernel {
                "yes".into()
            } else {
                "pending".into()
            },
        ]);
    }
    println!("{t}");
}

/// Prints the largest flows. Interface names come from the agent's status file when there is
/// one: the agent may run in another network namespace, where ifindexes mean other devices.
pub fn print_flows(pin_dir: &Path, state_dir: &Path, top: usize, json: bool) -> Result<()> {
    let out = flows_report(pin_dir, state_dir, top)?;
    if json {
        return print_json(&out);
    }
    if out.is_empty() {
        println!("no flows in the table");
        return Ok(());
    }
    print_flow_table(&out);
    Ok(())
}

fn print_flow_table(out: &[FlowReport]) {
    let mut t = table(&[
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "IFACE",
        "PKTS>",
        "BYTES>",
        "PKTS<",
        "BYTES<",
        "FIRST SEEN",
        "LAST SEEN",
    ]);
    for f in out {
        let b = &f.flow;
        let ep = |a: &std::net::IpAddr, p: u16| match (b.proto, a) {
            (1 | 58, _) => a.to_string(),
            (_, std::net::IpAddr::V6(_)) => format!("[{a}]:{p}"),
            _ => format!("{a}:{p}"),
        };
        t.add_row(vec![
            f.proto_name.clone(),
            ep(&b.src, b.src_port),
            ep(&b.dst, b.dst_port),
            f.iface.clone(),
            b.fwd.packets.to_string(),
            b.fwd.bytes.to_string(),
            b.rev.packets.to_string(),
            b.rev.bytes.to_string(),
            f.first_seen.clone(),
            f.last_seen.clone(),
        ]);
    }
    println!("{t}");
}

/// Man pages straight from the argument definitions, so they cannot drift from `--help`.
fn write_man_pages(dir: &Path) -> Result<()> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut render = |cmd: clap::Command, name: String| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone()))
            .render(&mut buf)
            .map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| Error::io(&path, e))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(sub.clone(), format!("astra-{}", sub.get_name()))?;
    }
    render(cmd, "astra".into())?;
    println!("wrote {} man pages to {}", written.len(), dir.display());
    Ok(())
}

#[derive(Serialize)]
struct ModelShow {
    path: PathBuf,
    origin: String,
    trained_at: u64,
    rows: usize,
    n_estimators: usize,
    max_samples: usize,
    offset: f64,
    features: Vec<String>,
}

fn model_command(state_dir: &Path, cmd: ModelCommand) -> Result<()> {
    use crate::detect::model::{
        MODEL_FILE, ModelConfig, ModelFile, TRAINING_FILE, read_rows, train,
    };
    let path = state_dir.join(MODEL_FILE);
    if state_dir.exists() && !state_dir.is_dir() {
        return Err(Error::io(
            state_dir,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    match cmd {
        ModelCommand::Status { json } => {
            let saved = path.exists().then(|| ModelFile::read(&path)).transpose()?;
            let agent = AgentStatus::read(state_dir)
                .filter(AgentStatus::alive)
                .and_then(|s| s.model);
            if json {
                return print_json(&serde_json::json!({
                    "model_file": path,
                    "saved": saved.as_ref().map(|m| serde_json::json!({
                        "origin": m.origin, "trained_at": m.trained_at, "rows": m.rows,
                        "age_s": now_unix().saturating_sub(m.trained_at),
                    })),
                    "agent": agent,
                }));
            }
            match &saved {
                Some(m) => println!(
                    "model:   {} ({}, trained {} ago on {} rows)",
                    path.display(),
                    m.origin,
                    fmt_secs(now_unix().saturating_sub(m.trained_at)),
                    m.rows
                ),
                None => println!("model:   none saved yet ({})", path.display()),
            }
            match agent {
                Some(a) => {
                    let mut line = format!("agent:   {}", a.state);
                    if let Some(s) = a.learning_remaining_s {
                        line += &format!(", first model in {}", fmt_secs(s));
                    }
                    if let Some(s) = a.next_retrain_s {
                        line += &format!(", next retrain in {}", fmt_secs(s));
                    }
                    println!("{line} ({} training rows collected)", a.rows_collected);
                }
                None => println!("agent:   not running"),
            }
            Ok(())
        }
        ModelCommand::Train {
            rows,
            n_estimators,
            seed,
            json,
        } => {
            let rows_path = rows.unwrap_or_else(|| state_dir.join(TRAINING_FILE));
            let data = read_rows(&rows_path)?;
            let cfg = ModelConfig {
                n_estimators,
                seed,
                ..ModelConfig::default()
            };
            let m = train(&data, &cfg)?;
            std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
            m.write(&path)?;
            if json {
                return print_json(&serde_json::json!({
                    "model_file": path, "rows": m.rows, "n_estimators": n_estimators,
                }));
            }
            println!(
                "trained on {} rows from {}; saved {}",
                m.rows,
                rows_path.display(),
                path.display()
            );
            Ok(())
        }
        ModelCommand::Show { json } => {
            if !path.exists() {
                return Err(Error::Usage(format!(
                    "no model saved at {}",
                    path.display()
                )));
            }
            let m = ModelFile::read(&path)?;
            let out = ModelShow {
                path: path.clone(),
                origin: m.origin.clone(),
                trained_at: m.trained_at,
                rows: m.rows,
                n_estimators: m.forest.n_estimators(),
                max_samples: m.forest.max_samples(),
                offset: m.forest.offset(),
                features: crate::features::FEATURE_NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            if json {
                return print_json(&out);
            }
            println!("model:        {}", out.path.display());
            println!("origin:       {}", out.origin);
            println!(
                "trained:      {} on {} rows",
                fmt_time(out.trained_at),
                out.rows
            );
            println!(
                "trees:        {} (max_samples {})",
                out.n_estimators, out.max_samples
            );
            println!("offset:       {}", out.offset);
            println!("features:     {}", out.features.join(", "));
            Ok(())
        }
        ModelCommand::ImportSklearn { file } => {
            let text =
                crate::limits::read_text_capped(&file, crate::limits::MODEL_FILE, "model file")?;
            let forest = crate::detect::forest::IsolationForest::from_sklearn_json(&text)
                .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
            crate::detect::model::check_features(&forest, &file)?;
            let m = ModelFile {
                format: crate::detect::model::MODEL_FORMAT,
                trained_at: now_unix(),
                rows: forest.max_samples(),
                origin: "sklearn".into(),
                forest,
                feature_max: Vec::new(),
            };
            std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
            m.write(&path)?;
            println!(
                "imported {} ({} trees); saved {}; a running agent uses it from its next poll",
                file.display(),
                m.forest.n_estimators(),
                path.display()
            );
            Ok(())
        }
    }
}

fn since_ms(since: Option<Duration>) -> u64 {
    since.map_or(0, |d| now_ms().saturating_sub(d.as_millis() as u64))
}

fn alerts(
    state_dir: &Path,
    events: Option<PathBuf>,
    since: Option<Duration>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let (alerts, from) = match events {
        Some(path) => {
            // Asked for by name: a missing or non-event file is an error, not "no alerts".
            if !path.is_file() {
                return Err(Error::Usage(format!(
                    "{}: no such event log (a file the agent's --events writes)",
                    path.display()
                )));
            }
            let scan = crate::sink::events::scan_alerts(&path, since_ms(since))?;
            if scan.lines > 0 && scan.garbage == scan.lines {
                return Err(Error::Usage(format!(
                    "{}: none of its {} lines is EVE JSON: not an event log",
                    path.display(),
                    scan.lines
                )));
            }
            if scan.garbage > 0 {
                eprintln!(
                    "astra: warning: {} of {} lines in {} are not JSON and were skipped",
                    scan.garbage,
                    scan.lines,
                    path.display()
                );
            }
            let mut a = scan.alerts;
            a.drain(..a.len().saturating_sub(limit));
            (a, path.display().to_string())
        }
        None => {
            let store = Store::open(state_dir)?;
            let a = crate::sink::history::alerts(&store, since_ms(since), limit)?;
            (a, format!("the history in {}", store.path().display()))
        }
    };
    print_alerts(&alerts, &from, json)
}

fn print_alerts(alerts: &[Alert], from: &str, json: bool) -> Result<()> {
    if json {
        return print_json(alerts);
    }
    if alerts.is_empty() {
        println!("no alerts in {from}");
        return Ok(());
    }
    let mut t = table(&[
        "TIME", "TYPE", "SEVERITY", "CONF", "RISK", "SOURCE", "TARGETS", "ACTION", "RULE",
    ]);
    for a in alerts {
        let targets: Vec<String> = a.targets.iter().take(3).map(|t| t.to_string()).collect();
        let more = a.targets.len().saturating_sub(3);
        t.add_row(vec![
            fmt_time(a.timestamp_ms / 1000),
            a.attack_type.to_string(),
            a.severity.as_str().to_string(),
            format!("{:.2}", a.confidence),
            a.risk_score.to_string(),
            a.source
                .map_or_else(|| "(spoofed?)".into(), |s| s.to_string()),
            if more > 0 {
                format!("{} +{more}", targets.join(","))
            } else {
                targets.join(",")
            },
            a.action.label().to_string(),
            a.rule.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

fn status(pin_dir: &Path, state_dir: &Path, json: bool) -> Result<()> {
    // A damaged database is reported, not fatal: what the kernel enforces is still worth seeing.
    let store = match Store::open(state_dir) {
        Ok(s) => s,
        Err(e) if e.is_user_error() => return Err(e.into()),
        Err(e) => {
            let s = Store::open_in_memory();
            let out = status_report(pin_dir, state_dir, s, Some(e.to_string()))?;
            return print_status_out(&out, json);
        }
    };
    let out = status_report(pin_dir, state_dir, store, None)?;
    print_status_out(&out, json)
}

fn print_status_out(out: &StatusReport, json: bool) -> Result<()> {
    if json {
        return print_json(out);
    }
    print_status(out);
    Ok(())
}

fn print_status(out: &StatusReport) {
    let (running, pin_dir) = (out.agent_running, &out.pin_dir);
    match (&out.agent, running) {
        (Some(s), true) => {
            println!(
                "agent:        running (pid {}, version {}, up {})",
                s.pid,
                s.version,
                fmt_secs(now_unix().saturating_sub(s.started_at))
            );
            for i in &s.interfaces {
                println!(
                    "interface:    {} (ifindex {}) xdp {}{}",
                    i.iface,
                    i.ifindex,
                    i.mode,
                    if i.egress { ", tc egress" } else { "" }
                );
            }
            match (s.last_poll_at, s.last_poll_ms) {
                (Some(t), Some(ms)) => println!(
                    "last poll:    {} ago, took {ms:.1} ms",
                    fmt_secs(now_unix().saturating_sub(t))
                ),
                _ => println!("last poll:    none yet"),
            }
            println!("metrics:      http://{}/metrics", s.metrics_addr);
            if !s.api_addr.is_empty() {
                println!("api:          http://{}/api/v1/", s.api_addr);
            }
            if let Some(m) = &s.model {
                let age = m
                    .trained_at
                    .map(|t| format!(", trained {} ago", fmt_secs(now_unix().saturating_sub(t))))
                    .unwrap_or_default();
                println!("model:        {}{age}", m.state);
            }
            if let Some(e) = &s.store_error {
                println!("agent store:  IN MEMORY ONLY ({e})");
            }
        }
        _ => println!("agent:        not running"),
    }
    println!(
        "pin dir:      {} (layout v{})",
        pin_dir.display(),
        out.layout_version
    );
    if out.maps_pinned {
        let cap = out.flow_capacity.unwrap_or(0);
        let n = out.flows.unwrap_or(0);
        let pct = if cap == 0 {
            0.0
        } else {
            n as f64 * 100.0 / cap as f64
        };
        println!("flow table:   {n} / {cap} ({pct:.1}% full)");
        println!(
            "kernel lists: {} blocked, {} allowlisted",
            out.block_entries.unwrap_or(0),
            out.allow_entries.unwrap_or(0)
        );
    } else {
        println!("maps:         none pinned (no agent has run since boot)");
    }
    match &out.store_error {
        Some(e) => println!("state store:  UNUSABLE: {e}"),
        None => println!(
            "state store:  {} ({} blocks, {} allows; history {} alerts, {} incidents)",
            out.store_path.display(),
            out.stored_blocks,
            out.stored_allows,
            out.history_alerts,
            out.history_incidents
        ),
    }
}

fn incidents(
    state_dir: &Path,
    id: Option<&str>,
    since: Option<Duration>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let store = Store::open(state_dir)?;
    if let Some(id) = id {
        let Some(row) = crate::sink::history::incident(&store, id)? else {
            return Err(Error::Usage(format!("no incident {id} in the history")));
        };
        if json {
            return print_json(&row.report);
        }
        println!("{}  {}", fmt_time(row.timestamp_ms / 1000), row.summary);
        println!(
            "{}",
            serde_json::to_string_pretty(&row.report).expect("JSON value prints")
        );
        return Ok(());
    }
    let rows = crate::sink::history::incidents(&store, since_ms(since), limit)?;
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no incidents in the history in {}", store.path().display());
        return Ok(());
    }
    let mut t = table(&["TIME", "ID", "SOURCE", "SUMMARY"]);
    for r in &rows {
        t.add_row(vec![
            fmt_time(r.timestamp_ms / 1000),
            r.id.clone(),
            r.source.clone().unwrap_or_default(),
            crate::text::escape_controls(&r.summary).into_owned(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// Refuses a list command whose pin dir is not the one the state dir's running agent uses: the
/// change would be stored but never reach the kernel maps the agent enforces (a mistyped
/// `--pin-dir` used to be reported as "stored; applies at start").
fn check_agent_pin_dir(pin_dir: &Path, state_dir: &Path) -> Result<()> {
    let Some(agent) = AgentStatus::read(state_dir).filter(AgentStatus::alive) else {
        return Ok(());
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(&agent.pin_dir, pin_dir) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the agent (pid {}) using state dir {} runs with --pin-dir {}, not {}: pass its pin dir",
        agent.pid,
        state_dir.display(),
        agent.pin_dir.display(),
        pin_dir.display()
    )))
}

fn detach(pin_dir: &Path) -> Result<()> {
    if !pin_dir.exists() {
        println!("nothing attached under {}", pin_dir.display());
        return Ok(());
    }
    if !pin_dir.is_dir() {
        return Err(Error::io(
            pin_dir,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    // By the pin dir's own lock, not the state dir's status file: an agent given another state
    // dir owns these programs just the same. Held while detaching, so no agent starts midway.
    let Some(_lock) = dataplane::PinDirLock::try_acquire(pin_dir)? else {
        return Err(Error::Usage(format!(
            "an astra agent{} is running with the programs pinned in {}: stop it instead (it detaches them on exit unless run with --on-exit keep)",
            dataplane::holder_text(pin_dir),
            pin_dir.display()
        )));
    };
    let dir = pin_dir.join("links");
    let mut names: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    names.sort();
    if names.is_empty() {
        println!("nothing attached under {}", dir.display());
    }
    for p in names {
        dataplane::detach_pinned_link(&p)?;
        println!(
            "detached {}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    Ok(())
}
