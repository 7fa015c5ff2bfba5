//! CrowdSec: the agent as a bouncer of a Local API (`bouncer.rs`: its decisions kept in force
//! in the kernel) and as a watcher (`watcher.rs`: Astra's alerts, and a ban for every
//! automatic block, pushed to it), each on a thread of its own.
//!
//! Plain `http://` only: Astra carries no TLS stack yet. A LAPI on another host is reached
//! over a private network, or through a local TLS-terminating proxy.
pub mod bouncer;
pub mod watcher;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use self::{
    bouncer::{Bouncer, BouncerStatus, PullError},
    watcher::{Watcher, WatcherStatus},
};
use crate::{
    error::{Error, Result},
    lists::crowdsec::TypeMap,
};

/// The default pull interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The longest wait between retries of an unreachable LAPI (or the interval, if longer).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One request's time limit, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `--crowdsec-*` as configured.
#[derive(Clone, Debug, Serialize)]
pub struct CrowdsecConfig {
    /// The LAPI's base URL (`http://127.0.0.1:8080`).
    #[serde(rename = "crowdsec_url")]
    pub url: String,
    /// File holding the bouncer key (`cscli bouncers add NAME` prints it): pull decisions.
    #[serde(rename = "crowdsec_key_file")]
    pub key_file: Option<PathBuf>,
    /// Machine credentials as `cscli machines add NAME -f FILE` writes them: push alerts.
    #[serde(rename = "crowdsec_machine_file")]
    pub machine_file: Option<PathBuf>,
    #[serde(rename = "crowdsec_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `TYPE=ACTION` overrides of the decision types' mapping.
    #[serde(rename = "crowdsec_type")]
    pub types: Vec<String>,
}

impl CrowdsecConfig {
    /// What can be checked without reading files: the URL, the interval, the mapping, and
    /// that there is something to do. `astra config check` and SIGHUP run this.
    pub fn check_syntax(&self) -> Result<(String, TypeMap)> {
        let url = self.url.trim().trim_end_matches('/');
        let expected = || {
            Error::Usage(format!(
                "--crowdsec-url {url}: expected http://HOST:PORT, e.g. http://127.0.0.1:8080"
            ))
        };
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                Error::Usage(format!(
                    "--crowdsec-url {url}: https is not supported yet; reach the LAPI over http on a private network or through a local TLS proxy"
                ))
            } else {
                expected()
            }
        })?;
        let bad_host = rest.is_empty()
            || rest.starts_with('/')
            || rest
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
        if bad_host {
            return Err(expected());
        }
        if self.interval.is_zero() {
            return Err(Error::Usage(
                "crowdsec_interval must be greater than 0".into(),
            ));
        }
        if self.key_file.is_none() && self.machine_file.is_none() {
            return Err(Error::Usage(format!(
                "--crowdsec-url {url} needs --crowdsec-key-file (to take decisions) or --crowdsec-machine-file (to push alerts), or both"
            )));
        }
        let types = TypeMap::parse(&self.types).map_err(|e| Error::Usage(e.to_string()))?;
        Ok((url.to_owned(), types))
    }

    /// Everything checked and the files read, for `astra run` before anything is loaded.
    pub fn open(&self) -> Result<(Option<Bouncer>, Option<Watcher>)> {
        let (url, types) = self.check_syntax()?;
        let bouncer = match &self.key_file {
            Some(f) => Some(Bouncer {
                url: url.clone(),
                key: read_key(f)?,
                interval: self.interval,
                types,
            }),
            None => None,
        };
        let watcher = match &self.machine_file {
            Some(f) => Some(Watcher::from_file(&url, f)?),
            None => None,
        };
        Ok((bouncer, watcher))
    }
}

fn read_key(path: &std::path::Path) -> Result<String> {
    let text =
        crate::limits::read_text_capped(path, crate::limits::SMALL_FILE, "CrowdSec bouncer key")?;
    let key = text.trim();
    if key.is_empty() || key.len() > 512 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::Usage(format!(
            "--crowdsec-key-file {}: expected one line holding the bouncer key (`cscli bouncers add NAME` prints it)",
            path.display()
        )));
    }
    Ok(key.to_owned())
}

/// The HTTP client both sides use: a time limit per request, the bouncer User-Agent CrowdSec
/// expects, and HTTP errors as answers to look at rather than failures.
pub(crate) fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .user_agent(format!(
            "crowdsec-astra-bouncer/v{}",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .into()
}

/// The wait before the next try after `failures` failed ones in a row: the interval, then
/// doubling up to a minute (or the interval, if longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let cap = interval.max(MAX_BACKOFF);
    interval
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(cap)
}

/// Sleeps until `until` or `stop`, whichever comes first.
fn wait(stop: &AtomicBool, until: Instant) {
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the test's own, removed at drop.
    struct TmpFile(PathBuf);

    impl Drop for TmpFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn tmp(text: &str) -> TmpFile {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("astra-cs-test-{}-{n}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TmpFile(path)
    }

    fn cfg(url: &str, key: Option<&TmpFile>, machine: Option<&TmpFile>) -> CrowdsecConfig {
        CrowdsecConfig {
            url: url.into(),
            key_file: key.map(|k| k.0.clone()),
            machine_file: machine.map(|m| m.0.clone()),
            interval: DEFAULT_INTERVAL,
            types: vec![],
        }
    }

    #[test]
    fn configuration_is_checked_up_front() {
        let key = tmp("abc123\n");
        let machine = tmp("url: http://127.0.0.1:8080\nlogin: gw1\npassword: \"s3cret\"\n");
        let (b, w) = cfg("http://127.0.0.1:8080/", Some(&key), Some(&machine))
            .open()
            .unwrap();
        let b = b.unwrap();
        assert_eq!(
            (b.url.as_str(), b.key.as_str()),
            ("http://127.0.0.1:8080", "abc123")
        );
        let w = w.unwrap();
        assert_eq!(
            (w.login.as_str(), w.url.as_str()),
            ("gw1", "http://127.0.0.1:8080")
        );
        let (empty, words) = (tmp(""), tmp("two words"));
        for (url, key, says) in [
            ("https://lapi:8080", &key, "https is not supported"),
            ("lapi:8080", &key, "expected http://HOST:PORT"),
            ("http://", &key, "expected http://HOST:PORT"),
            ("http://127.0.0.1:8080", &empty, "expected one line"),
            ("http://127.0.0.1:8080", &words, "expected one line"),
        ] {
            let e = cfg(url, Some(key), None).open().unwrap_err();
            assert!(e.to_string().contains(says), "{url}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
        let e = cfg("http://127.0.0.1:8080", None, None)
            .check_syntax()
            .unwrap_err();
        assert!(e.to_string().contains("needs --crowdsec-key-file"), "{e}");
        let mut c = cfg("http://127.0.0.1:8080", Some(&key), None);
        c.types = vec!["ban=nothing".into()];
        assert!(
            c.check_syntax()
                .unwrap_err()
                .to_string()
                .contains("--crowdsec-type")
        );
        c.types = vec![];
        c.key_file = Some("/nonexistent/astra-key".into());
        assert!(
            c.check_syntax().is_ok(),
            "files are read at start, not by the check"
        );
        assert_eq!(c.open().unwrap_err().exit_code(), 2);
        let bad_machine = tmp("login: gw1\n");
        let e = cfg("http://127.0.0.1:8080", None, Some(&bad_machine))
            .open()
            .unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let s = Duration::from_secs;
        let got: Vec<Duration> = (0..6).map(|f| backoff(s(10), f)).collect();
        assert_eq!(got, [s(10), s(10), s(20), s(40), s(60), s(60)]);
        assert_eq!(backoff(s(120), 3), s(120));
    }
}
