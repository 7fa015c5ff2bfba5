//! The bouncer: pulls a Local API's decision stream on its own thread and keeps its
//! decisions in force in the kernel lists (`lists::crowdsec` turns them into entries).
//!
//! An unreachable LAPI, at start or later, changes nothing in the kernel: the entries it
//! decided stay in force and expire on time by themselves. The bouncer retries with backoff,
//! says so once in the log and continuously in status and metrics, and after any failed pull
//! asks for the whole stream again (`startup=true`), so whatever changed meanwhile is
//! reconciled rather than lost. A rejected key is reported the same way, never fatal.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::backoff;
use crate::{
    addr::own_addresses,
    clock::now_unix,
    error::{Error, Result},
    lists::{
        Lists,
        crowdsec::{Decisions, Stream, TypeMap},
    },
    sink::metrics::CrowdsecMetrics,
};

/// The bouncer's side of `--crowdsec-*`, its files read.
#[derive(Clone, Debug)]
pub struct Bouncer {
    pub url: String,
    pub(super) key: String,
    pub interval: Duration,
    pub types: TypeMap,
}

/// The bouncer's state as `astra status` and the status file show it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BouncerStatus {
    pub url: String,
    /// The last pull succeeded.
    pub up: bool,
    /// UNIX seconds of the last successful pull.
    pub last_pull_at: Option<u64>,
    /// Why the last pull failed, while it does.
    pub last_error: Option<String>,
    /// The LAPI refused the key (HTTP 401/403).
    pub key_rejected: bool,
    /// Decisions in force, by origin (`CAPI`, `cscli`, `crowdsec`, ...).
    pub decisions: BTreeMap<String, usize>,
    pub pulls: u64,
    pub failed_pulls: u64,
    /// The decision types' mapping in force.
    pub types: Vec<String>,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "the LAPI rejected the bouncer key (HTTP {0}): check --crowdsec-key-file against `cscli bouncers list`"
    )]
    Rejected(u16),
    #[error("the LAPI answered HTTP {0}")]
    Status(u16),
    #[error("cannot reach the LAPI: {0}")]
    Transport(String),
    #[error("the LAPI's answer is not a decision stream: {0}")]
    Body(String),
}

impl Bouncer {
    /// The HTTP client the pulls go through.
    pub fn http_agent(&self) -> ureq::Agent {
        super::http_agent()
    }

    /// One pull of the stream: everything in force (`startup`), or what changed since the
    /// last pull.
    pub fn pull(&self, agent: &ureq::Agent, startup: bool) -> Result<Stream, PullError> {
        let url = format!(
            "{}/v1/decisions/stream?startup={startup}&scopes=ip,range",
            self.url
        );
        let mut resp = agent
            .get(&url)
            .header("X-Api-Key", &self.key)
            .call()
            .map_err(|e| PullError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            s @ (401 | 403) => return Err(PullError::Rejected(s)),
            s => return Err(PullError::Status(s)),
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(crate::limits::CROWDSEC_STREAM)
            .read_to_vec()
            .map_err(|e| PullError::Body(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| PullError::Body(e.to_string()))
    }
}

/// Pulls and applies decisions until `stop`; publishes its state into `shared` for the
/// status file and into `metrics`.
pub fn bouncer_loop(
    bouncer: Bouncer,
    mut lists: Lists,
    shared: &Mutex<Option<BouncerStatus>>,
    metrics: &CrowdsecMetrics,
    stop: &AtomicBool,
) {
    let agent = bouncer.http_agent();
    let mut decisions = Decisions::new(bouncer.types.clone(), own_addresses());
    let mut status = BouncerStatus {
        url: bouncer.url.clone(),
        types: bouncer.types.describe(),
        ..Default::default()
    };
    let (mut startup, mut failures) = (true, 0u32);
    info!(url = %bouncer.url, every = ?bouncer.interval, "CrowdSec bouncer started");
    while !stop.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        status.pulls += 1;
        let outcome = bouncer
            .pull(&agent, startup)
            .map_err(|e| {
                (
                    metrics_result(&e),
                    e.to_string(),
                    matches!(e, PullError::Rejected(_)),
                )
            })
            .and_then(|stream| {
                decisions.set_own(own_addresses());
                decisions
                    .apply(&mut lists, &stream, startup, now_unix())
                    .map_err(|e| ("error", format!("applying decisions: {e}"), false))
            });
        match outcome {
            Ok(r) => {
                if !status.up && status.pulls > 1 {
                    info!(url = %bouncer.url, "CrowdSec LAPI reachable again");
                }
                if r.applied + r.removed > 0 || startup {
                    info!(
                        startup,
                        applied = r.applied,
                        removed = r.removed,
                        skipped = r.skipped,
                        ignored = r.ignored,
                        invalid = r.invalid,
                        in_force = decisions.len(),
                        seconds = t0.elapsed().as_secs_f64(),
                        "CrowdSec decisions applied"
                    );
                }
                startup = false;
                failures = 0;
                status.up = true;
                status.key_rejected = false;
                status.last_error = None;
                status.last_pull_at = Some(now_unix());
                status.decisions = decisions.by_origin();
                metrics.pulled("ok", &status.decisions);
            }
            Err((result, message, rejected)) => {
                if rejected && !status.key_rejected {
                    error!(url = %bouncer.url, "{message}; enforcing what the kernel holds, retrying");
                } else if !rejected && (status.up || status.pulls == 1) {
                    warn!(url = %bouncer.url, error = %message, "CrowdSec pull failed; enforcing what the kernel holds, retrying with backoff");
                }
                // The next success reconciles everything that changed meanwhile.
                startup = true;
                failures = failures.saturating_add(1);
                status.up = false;
                status.key_rejected = rejected;
                status.failed_pulls += 1;
                status.last_error = Some(message);
                metrics.failed(result);
            }
        }
        *shared.lock().expect("bouncer status lock") = Some(status.clone());
        super::wait(stop, t0 + backoff(bouncer.interval, failures));
    }
}

fn metrics_result(e: &PullError) -> &'static str {
    match e {
        PullError::Rejected(_) => "rejected",
        PullError::Transport(_) => "unreachable",
        PullError::Status(_) | PullError::Body(_) => "error",
    }
}

/// Starts the bouncer's thread.
pub fn spawn(
    bouncer: Bouncer,
    lists: Lists,
    shared: Arc<Mutex<Option<BouncerStatus>>>,
    metrics: CrowdsecMetrics,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("astra-crowdsec".into())
        .spawn(move || bouncer_loop(bouncer, lists, &shared, &metrics, &stop))
        .map_err(|e| Error::io("CrowdSec bouncer thread", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_lapi_is_a_transport_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let b = Bouncer {
            url: format!("http://127.0.0.1:{port}"),
            key: "k".into(),
            interval: Duration::from_secs(10),
            types: TypeMap::default(),
        };
        assert!(matches!(
            b.pull(&b.http_agent(), true),
            Err(PullError::Transport(_))
        ));
    }
}
