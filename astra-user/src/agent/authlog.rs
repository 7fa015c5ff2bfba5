//! `astra run --auth-log PATH`: following the logs of sshd and FTP servers for failed logins,
//! the way fail2ban's filters read them. Each failure goes into the same queue as those posted
//! to `/api/v1/events`, so it counts toward the brute-force rule over the login window, as
//! evidence the service saw (a password is only rejected over a connection the source made).
//!
//! A log is read from its end when the agent starts (old lines are history, not news), then
//! followed; when it is rotated or truncated (another file at the path, or a shorter one) it is
//! read again from the start. Lines longer than [`MAX_LINE`] are skipped.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        LazyLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use regex::Regex;
use tracing::{info, warn};

use crate::{
    agent::{
        api::LoginQueue,
        follow::{Follow, Line},
    },
    clock::mono_now_ns,
};

/// The longest line read; a longer one is skipped whole.
pub const MAX_LINE: usize = 16 * 1024;

/// How often the logs are checked for new lines.
const EVERY: Duration = Duration::from_millis(500);

/// One failed login a log line reports: the source and the login port it used.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub src: IpAddr,
    pub port: u16,
}

/// sshd's own lines for a rejected credential (one per attempt, as fail2ban's sshd filter
/// counts them), and vsftpd's.
static SSHD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"sshd(?:-session)?\[\d+\]: Failed (?:password|publickey|keyboard-interactive/pam|none) for (?:invalid user )?.*? from (\S+) port \d+",
    )
    .expect("a valid pattern")
});
static VSFTPD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"FAIL LOGIN: Client "(?:::ffff:)?([^"]+)""#).expect("a valid pattern")
});

/// The failed login `line` reports, if it reports one.
pub fn parse_line(line: &str) -> Option<Failure> {
    let (caps, port) = if let Some(c) = SSHD.captures(line) {
        (c, 22)
    } else {
        (VSFTPD.captures(line)?, 21)
    };
    let src = caps.get(1)?.as_str().parse().ok()?;
    Some(Failure { src, port })
}

/// Follows `paths` until `stop`, handing failures to `queue`.
pub fn follow(paths: Vec<PathBuf>, queue: &LoginQueue, stop: &AtomicBool) {
    let mut logs: Vec<Follow> = paths.into_iter().map(Follow::at_end).collect();
    for l in &logs {
        if l.is_open() {
            info!(path = %l.path().display(), "following auth log");
        } else {
            warn!(path = %l.path().display(), "auth log not readable yet; watching for it");
        }
    }
    let mut found = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for l in &mut logs {
            read_failures(l, &mut found);
        }
        if !found.is_empty() {
            let now = mono_now_ns();
            let batch = found.drain(..).map(|f| (f.src, f.port, now)).collect();
            if !queue.push_all(batch) {
                warn!("login queue full; dropped failures read from the auth logs");
            }
        }
        std::thread::sleep(EVERY);
    }
}

/// The failures in the lines added to `log` since the last call.
fn read_failures(log: &mut Follow, out: &mut Vec<Failure>) {
    log.read_new(MAX_LINE, |e| {
        if let Line::Text(line) = e
            && let Some(f) = parse_line(line)
        {
            out.push(f);
        }
    });
}

/// Whether `path` can be followed at all (a directory cannot).
pub fn check(path: &Path) -> bool {
    !path.is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_and_vsftpd_failures_are_read_and_nothing_else() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (line, want) in [
            (
                "Dec  1 10:00:01 host sshd[1234]: Failed password for root from 198.18.0.7 port 51234 ssh2",
                Some((ip("198.18.0.7"), 22)),
            ),
            (
                "Dec  1 10:00:02 host sshd[1234]: Failed password for invalid user admin from 2001:db8::7 port 4022 ssh2",
                Some((ip("2001:db8::7"), 22)),
            ),
            (
                "2026-12-01T10:00:03+00:00 host sshd-session[99]: Failed publickey for git from 198.18.0.8 port 2 ssh2: RSA SHA256:x",
                Some((ip("198.18.0.8"), 22)),
            ),
            // A user name that looks like the rest of the line does not move the address.
            (
                "Dec  1 10:00:04 host sshd[1]: Failed password for invalid user x from 1.2.3.4 from 198.18.0.9 port 5 ssh2",
                Some((ip("198.18.0.9"), 22)),
            ),
            (
                r#"Mon Dec  1 10:00:05 2026 [pid 7] [bob] FAIL LOGIN: Client "::ffff:198.18.0.10""#,
                Some((ip("198.18.0.10"), 21)),
            ),
            (
                "Dec  1 10:00:06 host sshd[1234]: Accepted password for root from 198.18.0.7 port 51234 ssh2",
                None,
            ),
            (
                "Dec  1 10:00:07 host sshd[1234]: Invalid user admin from 198.18.0.7 port 51234",
                None,
            ),
            (
                "Dec  1 10:00:08 host sshd[1234]: Failed password for root from not-an-ip port 1 ssh2",
                None,
            ),
        ] {
            assert_eq!(parse_line(line).map(|f| (f.src, f.port)), want, "{line}");
        }
    }

    #[test]
    fn a_followed_log_yields_new_lines_only_and_survives_rotation() {
        let dir = std::env::temp_dir().join(format!("astra-authlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.log");
        let fail = |ip: &str| {
            format!("Dec  1 10:00:00 h sshd[1]: Failed password for root from {ip} port 1 ssh2\n")
        };
        std::fs::write(&path, fail("198.18.0.1")).unwrap();
        let mut f = Follow::at_end(path.clone());
        let mut out = Vec::new();
        read_failures(&mut f, &mut out);
        assert!(out.is_empty(), "old lines are history");
        let append = |s: &str| {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(s.as_bytes()).unwrap();
        };
        append(&fail("198.18.0.2"));
        append(&format!("{}\n", "x".repeat(MAX_LINE + 10)));
        append("Dec  1 10:00:00 h sshd[1]: Failed password for root from 198.18.0.3 po");
        read_failures(&mut f, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        append("rt 1 ssh2\n");
        read_failures(&mut f, &mut out);
        assert_eq!(out.len(), 2, "the half-written line, once whole: {out:?}");
        // Rotation: a new file at the path is read from its start.
        std::fs::rename(&path, dir.join("auth.log.1")).unwrap();
        std::fs::write(&path, fail("198.18.0.4")).unwrap();
        read_failures(&mut f, &mut out);
        let srcs: Vec<String> = out.iter().map(|f| f.src.to_string()).collect();
        assert_eq!(srcs, ["198.18.0.2", "198.18.0.3", "198.18.0.4"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
