//! `astra run --zeek-conn-log PATH`: following Zeek's conn.log as it grows, beside or instead
//! of interfaces. Each logged conversation is handed to the poll thread, which writes it into
//! the kernel flow table under [`LOG_IFINDEX`] (no interface has it, so logged and counted
//! entries never mix); from there the polls, windows and rules judge it like any other.
//!
//! A log is followed from its end when the agent starts (what is there is history), with its
//! `#fields` header read from the top; when Zeek rotates it (a new file at the path), the new
//! one is read from its start, header included. Tab-separated and JSON logs are both read, told
//! apart by content. A bad line is skipped with a warning (once per minute at most), as a
//! rejected log line must not stop a sensor.
use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

pub use crate::replay::flowlog::LOG_IFINDEX;
use crate::{
    agent::follow::{Follow, Line, header_lines},
    replay::flowlog::{Conn, Format, MAX_LINE, ZeekTsv, zeek_json_line},
};

/// How often the logs are checked for new lines.
const EVERY: Duration = Duration::from_millis(500);
/// Logged conversations that may wait for the next poll; more are dropped with a warning.
pub const CONN_QUEUE_MAX: usize = 200_000;

/// Conversations read from the logs and not yet written into the flow table.
#[derive(Debug, Default)]
pub struct ConnQueue(Mutex<Vec<Conn>>);

impl ConnQueue {
    /// Adds `conns`, as many as fit; returns how many were dropped.
    pub fn push(&self, conns: &mut Vec<Conn>) -> usize {
        let mut q = self.0.lock().expect("conn queue lock");
        let room = CONN_QUEUE_MAX.saturating_sub(q.len());
        let dropped = conns.len().saturating_sub(room);
        q.extend(conns.drain(..).take(room));
        dropped
    }

    pub fn take(&self) -> Vec<Conn> {
        std::mem::take(&mut *self.0.lock().expect("conn queue lock"))
    }
}

/// One followed conn.log and its parser.
struct ConnLog {
    follow: Follow,
    tsv: ZeekTsv,
    /// Decided by the first record line after each (re)open.
    format: Option<Format>,
    line: u64,
    bad: u64,
    warned: Option<Instant>,
}

impl ConnLog {
    fn new(path: PathBuf) -> Self {
        let mut tsv = ZeekTsv::new();
        for (i, h) in header_lines(&path, 64).iter().enumerate() {
            let _ = tsv.line(i as u64 + 1, h);
        }
        Self {
            follow: Follow::at_end(path),
            tsv,
            format: None,
            line: 0,
            bad: 0,
            warned: None,
        }
    }

    fn read_new(&mut self, out: &mut Vec<Conn>) {
        let Self {
            follow,
            tsv,
            format,
            line,
            bad,
            ..
        } = self;
        follow.read_new(MAX_LINE, |e| match e {
            Line::Reopened => {
                *tsv = ZeekTsv::new();
                *format = None;
                *line = 0;
            }
            Line::Text(text) => {
                *line += 1;
                let f = *format.get_or_insert_with(|| {
                    if text.trim_start().starts_with('{') {
                        Format::ZeekJson
                    } else {
                        Format::ZeekTsv
                    }
                });
                let parsed = match f {
                    Format::ZeekJson => zeek_json_line(*line, text),
                    _ => tsv.line(*line, text),
                };
                match parsed {
                    Ok(Some(c)) => out.push(c),
                    Ok(None) => {}
                    Err(_) => *bad += 1,
                }
            }
        });
        if self.bad > 0
            && self
                .warned
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            warn!(path = %self.follow.path().display(), lines = self.bad, "conn.log lines that do not read as Zeek records were skipped");
            self.bad = 0;
            self.warned = Some(Instant::now());
        }
    }
}

/// Follows `paths` until `stop`, handing the conversations to `queue`.
pub fn follow(paths: Vec<PathBuf>, queue: &ConnQueue, stop: &AtomicBool) {
    let mut logs: Vec<ConnLog> = paths.into_iter().map(ConnLog::new).collect();
    for l in &logs {
        if l.follow.is_open() {
            info!(path = %l.follow.path().display(), "following Zeek conn.log");
        } else {
            warn!(path = %l.follow.path().display(), "conn.log not readable yet; watching for it");
        }
    }
    let mut found = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for l in &mut logs {
            l.read_new(&mut found);
        }
        let dropped = queue.push(&mut found);
        if dropped > 0 {
            warn!(dropped, "conn.log queue full; dropped conversations");
        }
        std::thread::sleep(EVERY);
    }
}

/// The flow-table entries of `conns`, their UNIX times put on the dataplane's monotonic clock
/// as of now (a time in the future is taken as now).
pub fn entries(conns: &[Conn]) -> (Vec<astra_common::FlowKey>, Vec<astra_common::FlowValue>) {
    let now_mono = crate::clock::mono_now_ns();
    let now_unix_ns = crate::clock::now_ms().saturating_mul(1_000_000);
    let to_clock = |t: u64| now_mono.saturating_sub(now_unix_ns.saturating_sub(t));
    conns.iter().flat_map(|c| c.entries(to_clock)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_conn_log_yields_new_records_with_its_header_and_after_rotation() {
        let dir = std::env::temp_dir().join(format!("astra-connlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("conn.log");
        let header = "#separator \\x09\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\tconn_state\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\n";
        let rec = |ip: &str| {
            format!(
                "1700000000.5\tC\t{ip}\t40000\t198.18.1.10\t23\ttcp\t0.001\tREJ\tSr\t1\t44\t1\t40\n"
            )
        };
        std::fs::write(&path, format!("{header}{}", rec("198.18.0.1"))).unwrap();
        let mut log = ConnLog::new(path.clone());
        let mut out = Vec::new();
        log.read_new(&mut out);
        assert!(out.is_empty(), "old records are history");
        let append = |s: &str| {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(s.as_bytes()).unwrap();
        };
        append(&rec("198.18.0.2"));
        append("garbage line\n");
        log.read_new(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].orig.0.to_string(), "198.18.0.2");
        // Rotation: the new file's header and records are read from its start.
        std::fs::rename(&path, dir.join("conn.log.1")).unwrap();
        std::fs::write(&path, format!("{header}{}", rec("198.18.0.3"))).unwrap();
        log.read_new(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].orig.0.to_string(), "198.18.0.3");
        let q = ConnQueue::default();
        assert_eq!(q.push(&mut out), 0);
        let (keys, values) = entries(&q.take());
        assert_eq!(keys.len(), 4, "both directions of both");
        assert!(keys.iter().all(|k| k.ifindex == LOG_IFINDEX));
        assert!(
            values
                .iter()
                .all(|v| v.last_seen_ns <= crate::clock::mono_now_ns())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
