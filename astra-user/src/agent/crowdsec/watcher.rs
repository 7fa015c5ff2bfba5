//! The watcher: pushes the alerts the engine queued in the store's outbox
//! (`sink::crowdsec`) to a Local API as a machine (`POST /v1/watchers/login`, then
//! `POST /v1/alerts` with the JWT, renewed before it expires).
//!
//! Nothing is pushed twice, across outages and restarts: a batch is marked in the outbox as
//! being sent before the request, and removed once the LAPI has taken it. A batch whose fate
//! is unknown (the agent stopped, or the connection broke, during the request) is looked for
//! on the LAPI by its Astra alert ids before it is sent again.
use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::backoff;
use crate::{
    clock::now_unix,
    error::{Error, Result},
    sink::{
        crowdsec::{ID_META, OUTBOX},
        metrics::CrowdsecMetrics,
    },
    store::{OutboxItem, Store},
};

/// Alerts per push.
const BATCH: usize = 50;
/// How often the outbox is looked at while things go well: alerts reach the LAPI within it.
const PUSH_EVERY: Duration = Duration::from_secs(1);
/// A JWT this close to its expiry is renewed first.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// The machine credentials, read from the file `cscli machines add NAME -f FILE` writes.
#[derive(Clone)]
pub struct Watcher {
    pub url: String,
    pub login: String,
    password: String,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("url", &self.url)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// The watcher's state as `astra status` and the status file show it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatcherStatus {
    pub url: String,
    pub login: String,
    /// The last login or push succeeded.
    pub up: bool,
    /// UNIX seconds of the last successful push.
    pub last_push_at: Option<u64>,
    pub last_error: Option<String>,
    /// Alerts the LAPI took since the agent started.
    pub pushed: u64,
    /// Alerts waiting in the outbox.
    pub queued: u64,
    /// Alerts the LAPI refused as malformed (dropped, with a warning).
    pub refused: u64,
}

/// Why a login or push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "the LAPI refused the machine's credentials (HTTP {0}): check --crowdsec-machine-file against `cscli machines list`"
    )]
    Credentials(u16),
    #[error("the LAPI answered HTTP {0}: {1}")]
    Status(u16, String),
    #[error("cannot reach the LAPI: {0}")]
    Transport(String),
    #[error("the LAPI's answer is not what a login returns: {0}")]
    Body(String),
}

#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
    #[serde(default)]
    expire: String,
}

struct Session {
    token: String,
    renew_at: Instant,
}

impl Watcher {
    /// Reads `url:`, `login:` and `password:` lines (YAML, as cscli writes them); `url` comes
    /// from `--crowdsec-url`, which wins over the file's.
    pub fn from_file(url: &str, path: &Path) -> Result<Self> {
        let text = crate::limits::read_text_capped(
            path,
            crate::limits::SMALL_FILE,
            "CrowdSec machine credentials",
        )?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_owned())
                .filter(|v| !v.is_empty())
        };
        let missing = |what: &str| {
            Error::Usage(format!(
                "--crowdsec-machine-file {}: no {what}: expected the file `cscli machines add NAME -f FILE` writes (login: and password: lines)",
                path.display()
            ))
        };
        Ok(Self {
            url: url.to_owned(),
            login: field("login").ok_or_else(|| missing("login"))?,
            password: field("password").ok_or_else(|| missing("password"))?,
        })
    }

    fn login(&self, agent: &ureq::Agent) -> Result<Session, PushError> {
        let body = serde_json::json!({
            "machine_id": self.login,
            "password": self.password,
            "scenarios": crate::detect::AttackType::ALL
                .iter()
                .map(|t| format!("astra/{}", t.as_str()))
                .collect::<Vec<_>>(),
        });
        let mut resp = agent
            .post(format!("{}/v1/watchers/login", self.url))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .map_err(|e| PushError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            s @ (401 | 403) => return Err(PushError::Credentials(s)),
            s => return Err(PushError::Status(s, answer(&mut resp))),
        }
        let a: LoginAnswer = serde_json::from_slice(
            &resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .map_err(|e| PushError::Body(e.to_string()))?,
        )
        .map_err(|e| PushError::Body(e.to_string()))?;
        // Renewed a minute before it expires; a token that says nothing of its expiry lasts
        // an hour here (the LAPI's default is 2 h).
        let lifetime = humantime::parse_rfc3339_weak(a.expire.trim_end_matches('Z'))
            .ok()
            .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(3600));
        Ok(Session {
            token: a.token,
            renew_at: Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
        })
    }

    /// `POST /v1/alerts` with the bodies of `items`.
    fn push(
        &self,
        agent: &ureq::Agent,
        s: &Session,
        items: &[OutboxItem],
    ) -> Result<(), PushError> {
        let body = format!(
            "[{}]",
            items
                .iter()
                .map(|i| i.body.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut resp = agent
            .post(format!("{}/v1/alerts", self.url))
            .header("Authorization", &format!("Bearer {}", s.token))
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| PushError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 | 201 => Ok(()),
            s @ (401 | 403) => Err(PushError::Credentials(s)),
            s => Err(PushError::Status(s, answer(&mut resp))),
        }
    }

    /// Whether the LAPI already holds the alert of `item` (a push whose answer was lost).
    fn holds(
        &self,
        agent: &ureq::Agent,
        s: &Session,
        item: &OutboxItem,
    ) -> Result<bool, PushError> {
        let v: serde_json::Value = serde_json::from_str(&item.body).unwrap_or_default();
        let (scenario, value) = (
            v["scenario"].as_str().unwrap_or_default(),
            v["source"]["value"].as_str().unwrap_or_default(),
        );
        let mut resp = agent
            .get(format!("{}/v1/alerts", self.url))
            .query("scenario", scenario)
            .query("value", value)
            .query("limit", "100")
            .header("Authorization", &format!("Bearer {}", s.token))
            .call()
            .map_err(|e| PushError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            s @ (401 | 403) => return Err(PushError::Credentials(s)),
            s => return Err(PushError::Status(s, answer(&mut resp))),
        }
        let found: serde_json::Value = serde_json::from_slice(
            &resp
                .body_mut()
                .with_config()
                .limit(crate::limits::CROWDSEC_STREAM)
                .read_to_vec()
                .map_err(|e| PushError::Body(e.to_string()))?,
        )
        .unwrap_or_default();
        let ids = found.as_array().into_iter().flatten().flat_map(|a| {
            a["events"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["meta"].as_array().into_iter().flatten())
                .chain(a["meta"].as_array().into_iter().flatten())
                .filter(|m| m["key"] == ID_META)
                .filter_map(|m| m["value"].as_str())
                .collect::<Vec<_>>()
        });
        Ok(ids.into_iter().any(|id| id == item.key))
    }
}

/// The first line of an error answer, short.
fn answer(resp: &mut ureq::http::Response<ureq::Body>) -> String {
    let text = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// One round: log in if needed, settle batches of unknown fate, push the oldest batch.
/// Returns whether there is more to push right away.
fn round(
    w: &Watcher,
    agent: &ureq::Agent,
    session: &mut Option<Session>,
    store: &Store,
    status: &mut WatcherStatus,
    metrics: &CrowdsecMetrics,
) -> Result<bool, PushError> {
    if session
        .as_ref()
        .is_none_or(|s| Instant::now() >= s.renew_at)
    {
        *session = Some(w.login(agent)?);
    }
    let s = session.as_ref().expect("logged in above");
    let db = |e: crate::store::StoreError| PushError::Status(0, format!("state store: {e}"));
    let mut items = store.outbox_peek(OUTBOX, BATCH).map_err(db)?;
    // Pushed before an answer was lost: what the LAPI holds already goes.
    let mut known = Vec::new();
    for i in items.iter().filter(|i| i.sending) {
        if w.holds(agent, s, i)? {
            known.push(i.seq);
        }
    }
    if !known.is_empty() {
        info!(
            alerts = known.len(),
            "CrowdSec already holds alerts pushed before an answer was lost"
        );
        store.outbox_remove(&known).map_err(db)?;
        items.retain(|i| !known.contains(&i.seq));
    }
    if items.is_empty() {
        return Ok(false);
    }
    let seqs: Vec<i64> = items.iter().map(|i| i.seq).collect();
    store.outbox_mark_sending(&seqs).map_err(db)?;
    match w.push(agent, s, &items) {
        Ok(()) => {
            store.outbox_remove(&seqs).map_err(db)?;
            status.pushed += items.len() as u64;
            status.last_push_at = Some(now_unix());
            metrics.pushed(items.len());
            Ok(items.len() == BATCH)
        }
        Err(PushError::Status(code, why)) if (400..500).contains(&code) && code != 429 => {
            // Refused as it is: it never will be taken. A batch is split to find the bad
            // one; a single alert is dropped.
            if items.len() == 1 {
                warn!(code, why = %why, alert = %items[0].key, "CrowdSec refused an alert; dropped");
                store.outbox_remove(&seqs).map_err(db)?;
                status.refused += 1;
                Ok(true)
            } else {
                for i in &items {
                    if w.push(agent, s, std::slice::from_ref(i)).is_ok() {
                        store.outbox_remove(&[i.seq]).map_err(db)?;
                        status.pushed += 1;
                        metrics.pushed(1);
                    } else {
                        warn!(code, alert = %i.key, "CrowdSec refused an alert; dropped");
                        store.outbox_remove(&[i.seq]).map_err(db)?;
                        status.refused += 1;
                    }
                }
                Ok(true)
            }
        }
        Err(e) => Err(e),
    }
}

/// Pushes queued alerts until `stop`; publishes its state into `shared`.
pub fn watcher_loop(
    w: Watcher,
    store: Store,
    shared: &Mutex<Option<WatcherStatus>>,
    metrics: &CrowdsecMetrics,
    stop: &AtomicBool,
) {
    let agent = super::http_agent();
    let mut session = None;
    let mut status = WatcherStatus {
        url: w.url.clone(),
        login: w.login.clone(),
        ..Default::default()
    };
    let mut failures = 0u32;
    info!(url = %w.url, login = %w.login, "CrowdSec watcher started");
    while !stop.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        let outcome = round(&w, &agent, &mut session, &store, &mut status, metrics);
        let more = match outcome {
            Ok(more) => {
                if !status.up && failures > 0 {
                    info!(url = %w.url, "CrowdSec LAPI takes alerts again");
                }
                failures = 0;
                status.up = true;
                status.last_error = None;
                more
            }
            Err(e) => {
                if matches!(e, PushError::Credentials(_)) {
                    // A LAPI restarted with a new signing key refuses the old token: log in
                    // again (a wrong password fails there, and is reported).
                    session = None;
                }
                if status.up || failures == 0 {
                    warn!(url = %w.url, error = %e, "CrowdSec push failed; alerts wait in the outbox, retrying with backoff");
                }
                failures = failures.saturating_add(1);
                status.up = false;
                status.last_error = Some(e.to_string());
                false
            }
        };
        status.queued = store.outbox_len(OUTBOX).unwrap_or(status.queued);
        metrics.set_watcher(status.up, status.queued);
        *shared.lock().expect("watcher status lock") = Some(status.clone());
        if !more {
            super::wait(stop, t0 + backoff(PUSH_EVERY, failures));
        }
    }
}

/// Starts the watcher's thread.
pub fn spawn(
    w: Watcher,
    store: Store,
    shared: Arc<Mutex<Option<WatcherStatus>>>,
    metrics: CrowdsecMetrics,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("astra-crowdsec-watcher".into())
        .spawn(move || watcher_loop(w, store, &shared, &metrics, &stop))
        .map_err(|e| Error::io("CrowdSec watcher thread", e))
}
