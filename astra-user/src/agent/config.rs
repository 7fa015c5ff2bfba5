//! What `astra run` is configured with, once the CLI has merged its flags, the environment,
//! the configuration file and the defaults. The agent never parses a command line itself: a
//! SIGHUP calls the [`Reload`] the CLI handed it.
use std::{fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    dataplane::XdpModeArg,
    engine::DetectConfig,
    error::{Error, Result},
    sink::events::DEFAULT_EVENTS_FILE,
};

/// What the agent does with its attachments when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Detach the programs (the pinned maps stay for the next start).
    Detach,
    /// Leave the programs attached: the kernel keeps enforcing the lists.
    Keep,
}

/// Builds the configuration again, the way it was first built (for SIGHUP).
#[derive(Clone)]
pub struct Reload(Arc<dyn Fn() -> Result<AgentConfig> + Send + Sync>);

impl Reload {
    pub fn new(f: impl Fn() -> Result<AgentConfig> + Send + Sync + 'static) -> Self {
        Reload(Arc::new(f))
    }

    pub fn call(&self) -> Result<AgentConfig> {
        (self.0)()
    }
}

impl fmt::Debug for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reload")
    }
}

/// Everything `astra run` was configured with, after merging the configuration file, the
/// environment and the defaults; `astra config check` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct AgentConfig {
    /// The file merged in, if any (also re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    #[serde(rename = "iface")]
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpModeArg,
    pub metrics_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Reads need a viewer's or admin's token too.
    pub api_read_token: bool,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub flow_capacity: u32,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub active_timeout: Duration,
    /// The EVE-style event log; `None` = `<state-dir>/eve.json`.
    pub events: Option<PathBuf>,
    /// Every pass's feature rows, as CSV, when given.
    pub export_features: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub history_max_age: Duration,
    pub history_max_rows: u64,
    #[serde(rename = "feed")]
    pub feeds: Vec<PathBuf>,
    #[serde(rename = "auth_log")]
    pub auth_logs: Vec<PathBuf>,
    #[serde(rename = "zeek_conn_log")]
    pub zeek_conn_logs: Vec<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub feed_every: Duration,
    pub on_exit: OnExit,
    /// The CrowdSec bouncer, when a LAPI URL is given; its keys are top-level
    /// (`crowdsec_url`, ...), as the options are.
    #[serde(flatten)]
    pub crowdsec: Option<crate::agent::crowdsec::CrowdsecConfig>,
    pub detect: DetectConfig,
    /// How to build this configuration again on SIGHUP (the CLI re-reads its command line
    /// and configuration file); `None` ignores SIGHUP's reload.
    #[serde(skip)]
    pub reload: Option<Reload>,
}

/// The largest `--flow-capacity`: 16M flows, about 2 GiB of kernel memory for the table (and
/// what the agent mirrors of it). Beyond this the kernel's refusal to create the map says less.
pub const MAX_FLOW_CAPACITY: u32 = 1 << 24;

impl AgentConfig {
    /// The one check of a configuration, for `astra run`, SIGHUP reloads and `astra config
    /// check` alike (a reload used to accept `poll_interval = "0s"` and spin a core).
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("poll_interval", self.poll_interval),
            ("idle_timeout", self.idle_timeout),
            ("active_timeout", self.active_timeout),
            ("feed_every", self.feed_every),
            ("history_max_age", self.history_max_age),
        ];
        for (key, d) in nonzero {
            if d.is_zero() {
                return Err(Error::Usage(format!("{key} must be greater than 0")));
            }
        }
        if !(1..=MAX_FLOW_CAPACITY).contains(&self.flow_capacity) {
            return Err(Error::Usage(format!(
                "flow_capacity {} is out of range: 1 to {MAX_FLOW_CAPACITY}",
                self.flow_capacity
            )));
        }
        if let Some(p) = self
            .auth_logs
            .iter()
            .find(|p| !crate::agent::authlog::check(p))
        {
            return Err(Error::Usage(format!(
                "--auth-log {} is a directory, not a log file",
                p.display()
            )));
        }
        if let Some(p) = self
            .zeek_conn_logs
            .iter()
            .find(|p| !crate::agent::authlog::check(p))
        {
            return Err(Error::Usage(format!(
                "--zeek-conn-log {} is a directory, not a log file",
                p.display()
            )));
        }
        if let Some(c) = &self.crowdsec {
            c.check_syntax()?;
        }
        if self.ifaces.is_empty() && self.zeek_conn_logs.is_empty() {
            return Err(Error::Usage(
                "astra run needs at least one --iface or --zeek-conn-log".into(),
            ));
        }
        self.detect.validate()
    }

    pub fn events_path(&self) -> PathBuf {
        self.events
            .clone()
            .unwrap_or_else(|| self.state_dir.join(DEFAULT_EVENTS_FILE))
    }
}
