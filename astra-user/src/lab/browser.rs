//! Astra's web UI driven in Debian's Chromium by Playwright (`tools/ui/ui.mjs`), one scenario
//! a run, from inside a lab namespace where the agent's API listens on loopback. The tests,
//! the bench and the README's screenshots go through here; `cargo xtask test` installs
//! Chromium and the script's one npm package.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::lab::netns::{kill_group, lab_command_in};

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(
        "{what} is missing: run `cargo xtask test` (or `npm ci --prefix tools/ui` and install chromium)"
    )]
    Missing { what: String },
    #[error("browser scenario {scenario}: {message}")]
    Failed { scenario: String, message: String },
    #[error("browser scenario {scenario} did not finish in {secs} s")]
    TimedOut { scenario: String, secs: u64 },
    #[error("browser scenario {scenario}: could not start node: {source}")]
    Spawn {
        scenario: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where `ui.mjs` and its node_modules are: `ASTRA_UI_TOOLS`, else the source tree's.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("ASTRA_UI_TOOLS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/ui"),
        PathBuf::from,
    )
}

/// One scenario's inputs (see the top of `ui.mjs`).
#[derive(Debug, Default, Clone)]
pub struct Scenario<'a> {
    pub name: &'a str,
    pub token: Option<&'a str>,
    pub arg: &'a str,
    pub shot: Option<&'a Path>,
    pub theme: Option<&'a str>,
}

/// Runs `scenario` against the API at 127.0.0.1:`api_port` inside the namespace at
/// `netns_path`; its JSON result, or why it failed. The browser and everything node started
/// are killed if it overruns `limit`.
pub fn run(
    netns_path: &str,
    api_port: u16,
    scenario: &Scenario<'_>,
    limit: Duration,
) -> Result<Value, BrowserError> {
    let dir = tools_dir();
    let script = dir.join("ui.mjs");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err(BrowserError::Missing {
            what: format!("{}/node_modules/playwright-core", dir.display()),
        });
    }
    let chromium =
        std::env::var("ASTRA_UI_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(BrowserError::Missing { what: chromium });
    }
    let spawn = |source| BrowserError::Spawn {
        scenario: scenario.name.to_owned(),
        source,
    };
    let mut cmd = lab_command_in(netns_path, "node")
        .map_err(|e| spawn(std::io::Error::other(e.to_string())))?;
    cmd.arg(&script)
        .current_dir(&dir)
        .env("ASTRA_UI_URL", format!("http://127.0.0.1:{api_port}"))
        .env("ASTRA_UI_SCENARIO", scenario.name)
        .env("ASTRA_UI_ARG", scenario.arg)
        .env("ASTRA_UI_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = scenario.token {
        cmd.env("ASTRA_UI_TOKEN", t);
    }
    if let Some(p) = scenario.shot {
        cmd.env("ASTRA_UI_SHOT", p);
    }
    if let Some(t) = scenario.theme {
        cmd.env("ASTRA_UI_THEME", t);
    }
    let mut child = cmd.spawn().map_err(spawn)?;
    // Both pipes are read on threads so a chatty browser cannot fill one and stall.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    // Wait for node to exit without reaping it (WNOWAIT), so that its pid, the group's id,
    // stays its own until the group is killed.
    let exited = loop {
        // SAFETY: a zeroed siginfo_t is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own, unreaped child, writing only into `info`.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid set si_pid to the child's pid if it exited, and left it 0 if not.
        if r != 0 || unsafe { info.si_pid() } != 0 {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The whole group goes either way: node leaves no Chromium behind even when it crashed.
    kill_group(&mut child);
    let status = child.wait().ok().filter(|_| exited);
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let Some(status) = status else {
        return Err(BrowserError::TimedOut {
            scenario: scenario.name.to_owned(),
            secs: limit.as_secs(),
        });
    };
    let failed = |message: String| BrowserError::Failed {
        scenario: scenario.name.to_owned(),
        message,
    };
    if !status.success() {
        let why = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(failed(format!("{status}: {why}")));
    }
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).map_err(|e| failed(format!("its output is not JSON ({e}): {last}")))
}
