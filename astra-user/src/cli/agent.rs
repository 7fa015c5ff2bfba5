//! `astra run` and the verbs about the agent itself: `config check`, `token`, `detach`.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, ValueEnum};

use super::{Cli, Command, render::print_json};
use crate::{
    agent::{
        self,
        config::{AgentConfig, OnExit, Reload},
    },
    dataplane::{self, XdpModeArg},
    engine::DetectConfig,
    error::{Error, Result},
};

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
    /// Interface to attach to (repeat for several); at least one, unless --zeek-conn-log is
    /// given.
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// XDP mode: auto tries native (driver) mode and falls back to skb (generic) mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeCli,
    /// Address for the Prometheus /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
    /// Address for the HTTP management API and the web UI at `/` (loopback unless you choose
    /// otherwise; changes need the admin token in <state-dir>/api.token).
    #[arg(long, default_value = "127.0.0.1:9478", value_name = "ADDR")]
    pub api_addr: SocketAddr,
    /// Reads need a token too (the viewer's or the admin's), not only changes: for an API that
    /// listens beyond loopback. The UI's page itself stays public and asks for a token.
    #[arg(long)]
    pub api_read_token: bool,
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
    /// Write every source's features at each poll as CSV (t_ms, source, the features), to
    /// train classifiers on; `astra lab --export-training` labels them.
    #[arg(long, value_name = "FILE")]
    pub export_features: Option<PathBuf>,
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
    /// Log of sshd or an FTP server (vsftpd) to follow for failed logins, the way fail2ban's
    /// filters read them; they count toward the brute-force rule (repeat for several).
    #[arg(long = "auth-log", value_name = "PATH")]
    pub auth_logs: Vec<PathBuf>,
    /// Zeek's conn.log to follow as it grows (tab-separated or JSON, across rotation): its
    /// conversations are judged like those the interfaces count; with it, --iface may be left
    /// out (repeat for several).
    #[arg(long = "zeek-conn-log", value_name = "PATH")]
    pub zeek_conn_logs: Vec<PathBuf>,
    /// How often feed files are checked for changes.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub feed_every: Duration,
    /// CrowdSec Local API (e.g. http://127.0.0.1:8080) to take decisions from as a bouncer
    /// (with --crowdsec-key-file: bans become blocks that expire in the kernel with the
    /// decision) and to push alerts to as a watcher (with --crowdsec-machine-file).
    #[arg(long, value_name = "URL")]
    pub crowdsec_url: Option<String>,
    /// File holding the bouncer key (`cscli bouncers add astra` prints one).
    #[arg(long, value_name = "FILE")]
    pub crowdsec_key_file: Option<PathBuf>,
    /// Machine credentials as `cscli machines add NAME -f FILE` writes them: alerts are
    /// pushed to the LAPI, with a ban for every automatic block.
    #[arg(long, value_name = "FILE")]
    pub crowdsec_machine_file: Option<PathBuf>,
    /// How often the LAPI's decision stream is pulled.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub crowdsec_interval: Duration,
    /// What a decision type becomes: TYPE=block, TYPE=ignore or TYPE=throttle:RATE (repeat;
    /// `*` is every type not named). Default: ban=block, captcha=throttle:20pps,
    /// throttle=throttle:20pps, *=ignore.
    #[arg(long = "crowdsec-type", value_name = "TYPE=ACTION")]
    pub crowdsec_types: Vec<String>,
    /// Change a detection setting, e.g. rules.port_scan_ports=30 or policy.block_ttl=30m
    /// (repeatable; `astra detect-defaults` lists them all).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn run_agent(cfg: AgentConfig) -> Result<()> {
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
    let a = *a;
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
        api_read_token: a.api_read_token,
        poll_interval: a.poll_interval,
        flow_capacity: a.flow_capacity,
        idle_timeout: a.idle_timeout,
        active_timeout: a.active_timeout,
        events: a.events,
        export_features: a.export_features,
        history_max_age: a.history_max_age,
        history_max_rows: a.history_max_rows,
        feeds: a.feeds,
        auth_logs: a.auth_logs,
        zeek_conn_logs: a.zeek_conn_logs,
        feed_every: a.feed_every,
        on_exit: match a.on_exit {
            OnExitArg::Detach => OnExit::Detach,
            OnExitArg::Keep => OnExit::Keep,
        },
        crowdsec: match a.crowdsec_url {
            Some(url) => Some(agent::crowdsec::CrowdsecConfig {
                url,
                key_file: a.crowdsec_key_file,
                machine_file: a.crowdsec_machine_file,
                interval: a.crowdsec_interval,
                types: a.crowdsec_types,
            }),
            None if a.crowdsec_key_file.is_some() || a.crowdsec_machine_file.is_some() => {
                return Err(Error::Usage(
                    "--crowdsec-key-file and --crowdsec-machine-file need --crowdsec-url".into(),
                ));
            }
            None => None,
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
pub fn config_check(argv: &[std::ffi::OsString], json: bool) -> Result<()> {
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

pub fn detach(pin_dir: &Path) -> Result<()> {
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

/// `astra token show|rotate`.
pub fn token(state_dir: &Path, t: super::TokenCommand) -> Result<()> {
    let token = match t {
        super::TokenCommand::Show { role } => agent::token::ensure(state_dir, role.into())?,
        super::TokenCommand::Rotate { role } => agent::token::rotate(state_dir, role.into())?,
    };
    println!("{token}");
    Ok(())
}
