//! `astra replay`: a capture judged as the live path would judge it.
//!
//! Every packet goes through the real XDP program with BPF_PROG_TEST_RUN, into a private set
//! of maps (never a running agent's), and the detection engine polls those maps on the
//! capture's own clock: before each packet the dataplane's clock is set to the packet's
//! timestamp ([`Dataplane::set_clock`]), and every poll interval of capture time the flow table
//! is read and the engine runs with this thread's clocks reading capture time
//! ([`clock::set_virtual`]). So a 20-minute capture is judged on its real rates, windows and
//! expiries while it is processed far faster than real time. Blocks go into the private maps
//! too, so an attacker's later packets are dropped in the replay as they would have been.
//!
//! Both directions of a conversation arrive on one interface here; nothing downstream depends
//! on the interface or hook a packet was counted on (conversations are paired by addresses and
//! ports alone), as on a gateway, where both directions arrive on XDP ingress.
pub mod capture;
pub mod flowlog;

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use astra_common::action;
use capture::{Capture, CaptureError, End};
use flowlog::FlowLog;
use serde::Serialize;
use tracing::warn;

use crate::{
    clock,
    dataplane::Dataplane,
    detect::Alert,
    engine::{DetectConfig, Engine},
    error::{Error, Result},
    flow::{FastMap, FlowTable, key_addr},
    lists::Lists,
    sink::{
        history::{self, IncidentRow},
        metrics::Metrics,
    },
    store::Store,
};

/// Sources whose traffic is summed for the top talkers; beyond this many (a spoofed flood),
/// the rest are counted together.
const TALKERS_MAX: usize = 1 << 20;
/// The replay's clock moves in steps of this much: the live dataplane's own resolution is a
/// jiffy (1-10 ms), and one clock update per step rather than per packet halves the syscalls.
const CLOCK_STEP_NS: u64 = 1_000_000;

#[derive(Clone, Debug)]
pub struct ReplayConfig {
    pub files: Vec<PathBuf>,
    pub detect: DetectConfig,
    pub poll_interval: Duration,
    pub idle_timeout: Duration,
    pub active_timeout: Duration,
    pub flow_capacity: u32,
    /// Where the EVE event log goes; none is kept otherwise.
    pub events: Option<PathBuf>,
    /// An isolation-forest model to score with (`astra model` writes them); without one only
    /// the rules judge, as a replay is too short to learn a baseline.
    pub model: Option<PathBuf>,
    /// Top talkers to report.
    pub top: usize,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl ReplayConfig {
    pub fn new(files: Vec<PathBuf>) -> Self {
        Self {
            files,
            detect: DetectConfig::default(),
            poll_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            active_timeout: Duration::from_secs(30 * 60),
            flow_capacity: astra_common::DEFAULT_FLOW_CAPACITY,
            events: None,
            model: None,
            top: 10,
            progress: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: String,
    pub link_types: Vec<String>,
    pub packets: u64,
    /// Conversations read from a flow log.
    pub conns: u64,
    /// Where the file was cut (it ends inside a record), or where it stopped making sense.
    pub stopped_at: Option<u64>,
    /// Seconds its timestamps were moved forward to follow the file before it.
    pub shifted_s: f64,
}

/// Every packet read, by what the dataplane made of it: `read` is the sum of the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PacketCounts {
    pub read: u64,
    /// Counted into a flow.
    pub parsed: u64,
    /// Non-first IP fragments (no transport header).
    pub fragments: u64,
    /// Malformed or truncated headers, the link header included.
    pub parse_errors: u64,
    pub non_ip: u64,
    /// Dropped in the kernel: the source was blocked by then.
    pub dropped: u64,
    pub bytes: u64,
    /// Parsed packets whose new flow found the flow table full (counted, not in a flow).
    pub flow_table_full: u64,
    /// Packets whose timestamp was earlier than the one before (stamped with the later one).
    pub out_of_order: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Talker {
    pub addr: IpAddr,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub files: Vec<FileReport>,
    pub packets: PacketCounts,
    /// Conversations read from flow logs.
    pub conns: u64,
    /// Capture time of the first and last packet, UNIX milliseconds.
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    pub capture_seconds: f64,
    pub elapsed_seconds: f64,
    pub packets_per_second: f64,
    pub alerts: Vec<Alert>,
    pub incidents: Vec<IncidentRow>,
    /// Sources by bytes sent, largest first.
    pub top_talkers: Vec<Talker>,
    pub warnings: Vec<String>,
}

impl From<CaptureError> for Error {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::Io { path, source } => Error::io(path, source),
            e => Error::Usage(e.to_string()),
        }
    }
}

/// A state dir of the replay's own (incident reports, the model), removed when it ends.
struct ScratchState(PathBuf);

impl ScratchState {
    fn create() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("astra-replay-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Clears the thread's virtual clock however the replay ends.
struct VirtualClock;

impl VirtualClock {
    fn set(ns: u64) {
        clock::set_virtual(Some(ns));
    }
}

impl Drop for VirtualClock {
    fn drop(&mut self) {
        clock::set_virtual(None);
    }
}

struct Replayer {
    dp: Dataplane,
    lists: Lists,
    table: FlowTable,
    engine: Engine,
    metrics: Metrics,
    talkers: FastMap<IpAddr, (u64, u64)>,
    others: (u64, u64),
    interval_ns: u64,
    next_poll: Option<u64>,
    clock_ns: Option<u64>,
}

impl Replayer {
    /// Polls the flow table and runs the engine at `at_ns`, capture time.
    fn poll(&mut self, at_ns: u64) -> Result<()> {
        VirtualClock::set(at_ns);
        let maps = self
            .lists
            .maps_mut()
            .ok_or_else(|| Error::Layout("replay lost its maps".into()))?;
        self.table.poll(maps, at_ns)?;
        let closed = self.table.take_closed();
        let deltas = self
            .table
            .flows()
            .map(|(k, s)| (k, s.delta_packets, s.delta_bytes))
            .chain(
                closed
                    .iter()
                    .map(|r| (&r.key, r.delta_packets, r.delta_bytes)),
            );
        for (k, p, b) in deltas {
            if p == 0 {
                continue;
            }
            let addr = key_addr(k.src);
            let full = self.talkers.len() >= TALKERS_MAX;
            match self.talkers.get_mut(&addr) {
                Some(t) => {
                    t.0 += p;
                    t.1 += b;
                }
                None if full => {
                    self.others.0 += p;
                    self.others.1 += b;
                }
                None => {
                    self.talkers.insert(addr, (p, b));
                }
            }
        }
        self.lists.sweep_store()?;
        self.engine.run(
            at_ns,
            at_ns / 1_000_000,
            &self.table,
            &closed,
            &mut self.lists,
            &self.metrics,
        )?;
        Ok(())
    }

    /// Writes a flow log's conversation into the flow table, as the dataplane would have.
    fn insert(
        &mut self,
        entries: &[(astra_common::FlowKey, astra_common::FlowValue)],
    ) -> Result<()> {
        let maps = self
            .lists
            .maps_mut()
            .ok_or_else(|| Error::Layout("replay lost its maps".into()))?;
        let (keys, values): (Vec<_>, Vec<_>) = entries.iter().copied().unzip();
        maps.insert_flows(&keys, &values)
    }

    /// Runs the polls due before a packet stamped `ts_ns`, then sets the dataplane's clock.
    fn advance(&mut self, ts_ns: u64) -> Result<()> {
        let next = *self
            .next_poll
            .get_or_insert(ts_ns - ts_ns % self.interval_ns + self.interval_ns);
        if ts_ns >= next {
            self.poll(next)?;
            // A gap longer than a poll needs no empty polls in between: one more, at the
            // packet's own interval, sees everything time alone changed.
            let aligned = ts_ns - ts_ns % self.interval_ns;
            if aligned > next {
                self.poll(aligned)?;
            }
            self.next_poll = Some(aligned + self.interval_ns);
        }
        let step = ts_ns - ts_ns % CLOCK_STEP_NS;
        if self.clock_ns != Some(step) {
            self.dp.set_clock(step)?;
            self.clock_ns = Some(step);
        }
        Ok(())
    }
}

/// One input file: a packet capture, or a flow log.
enum Input {
    Packets(Capture),
    Log(FlowLog),
}

impl Input {
    fn open(path: &std::path::Path) -> Result<Input> {
        match Capture::open(path) {
            Ok(c) => Ok(Input::Packets(c)),
            Err(CaptureError::NotACapture { .. }) => match FlowLog::open(path) {
                Ok(Some(log)) => Ok(Input::Log(log)),
                Ok(None) => Err(Error::Usage(format!(
                    "{}: not a pcap or pcapng capture, nor a flow log (Zeek conn.log, Argus CSV)",
                    path.display()
                ))),
                Err(e) => Err(Error::io(path, e)),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// The replay's one timeline across files: times only move forward (an earlier one is
/// counted and takes the latest), and a file that starts before the previous one ended is
/// moved, whole, to just after it.
#[derive(Default)]
struct Timeline {
    first_ns: Option<u64>,
    last_ns: u64,
    shift: Option<u64>,
    out_of_order: u64,
}

impl Timeline {
    fn next_file(&mut self) {
        self.shift = None;
    }

    /// How far the current file was moved.
    fn shift(&self) -> u64 {
        self.shift.unwrap_or(0)
    }

    /// Where a record stamped `ts` of the current file sits on the timeline.
    fn place(&mut self, ts: u64) -> u64 {
        let (first, last) = (self.first_ns, self.last_ns);
        let shift = *self.shift.get_or_insert_with(|| match first {
            Some(_) if ts <= last => last - ts + CLOCK_STEP_NS,
            _ => 0,
        });
        let mut ts = ts.saturating_add(shift);
        if ts < self.last_ns {
            self.out_of_order += 1;
            ts = self.last_ns;
        }
        self.first_ns.get_or_insert(ts);
        self.last_ns = ts;
        ts
    }
}

/// Replays the files of `cfg` in order, as one timeline (a file that starts before the one
/// before it ended is moved to follow it), and reports what Astra made of them.
pub fn replay(cfg: &ReplayConfig) -> Result<ReplayReport> {
    if cfg.files.is_empty() {
        return Err(Error::Usage("no capture to replay".into()));
    }
    cfg.detect.validate()?;
    if cfg.poll_interval.is_zero() {
        return Err(Error::Usage("--poll-interval must be more than 0".into()));
    }
    // Every file is checked before anything runs, so a bad argument costs nothing.
    let mut inputs = Vec::new();
    for f in &cfg.files {
        inputs.push(Input::open(f)?);
    }
    let scratch = ScratchState::create()?;
    if let Some(model) = &cfg.model {
        let m = crate::detect::model::ModelFile::read(model)?;
        m.write(&scratch.0.join(crate::detect::model::MODEL_FILE))?;
    }
    let events = cfg
        .events
        .clone()
        .unwrap_or_else(|| scratch.0.join("eve.json"));
    let (dp, maps) = Dataplane::load_private(cfg.flow_capacity)?;
    let mut r = Replayer {
        dp,
        lists: Lists::from_parts(Store::open_in_memory(), Some(maps)),
        table: FlowTable::new(cfg.idle_timeout, cfg.active_timeout),
        engine: Engine::new(cfg.detect.clone(), &scratch.0, events)?,
        metrics: Metrics::new(),
        talkers: FastMap::default(),
        others: (0, 0),
        interval_ns: cfg.poll_interval.as_nanos().min(u64::MAX as u128) as u64,
        next_poll: None,
        clock_ns: None,
    };
    let _clock = VirtualClock;
    let total_bytes: u64 = cfg
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(cfg.progress, total_bytes);
    let t0 = Instant::now();
    let mut counts = PacketCounts::default();
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut time = Timeline::default();
    let mut done_bytes = 0u64;
    let mut link_errors = 0u64;
    let mut conns = 0u64;
    for (path, input) in cfg.files.iter().zip(inputs) {
        let mut report = FileReport {
            path: path.clone(),
            ..Default::default()
        };
        time.next_file();
        match input {
            Input::Packets(mut cap) => {
                report.format = cap.format.to_owned();
                loop {
                    let frame = match cap.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(CaptureError::Corrupt {
                            path,
                            offset,
                            reason,
                        }) => {
                            report.stopped_at = Some(offset);
                            warnings.push(format!(
                                "{}: stopped at byte {offset}: {reason}; the packets before it were replayed",
                                path.display()
                            ));
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let ts = time.place(frame.ts_ns);
                    report.packets += 1;
                    counts.read += 1;
                    r.advance(ts)?;
                    match frame.frame {
                        Some(f) => {
                            counts.bytes += f.len() as u64;
                            r.dp.run_frame(f)?;
                        }
                        None => link_errors += 1,
                    }
                    if counts.read.is_multiple_of(4096) {
                        bar.set_position(done_bytes + cap.position());
                    }
                }
                if let End::Truncated { offset } = cap.end {
                    report.stopped_at = Some(offset);
                    warnings.push(format!(
                        "{}: truncated at byte {offset}, inside a record; the {} packets before it were replayed",
                        path.display(),
                        report.packets
                    ));
                }
                report.link_types = cap.links.iter().map(|s| (*s).to_owned()).collect();
            }
            Input::Log(mut log) => {
                report.format = log.format.name().to_owned();
                // A conversation is logged when it ends, so it enters the flow table then,
                // whole.
                while let Some(c) = log
                    .next_conn()
                    .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
                {
                    let end = time.place(c.end_ns);
                    let shift = time.shift();
                    report.conns += 1;
                    conns += 1;
                    r.advance(end)?;
                    r.insert(&c.entries(|t| t.saturating_add(shift).min(end)))?;
                    if conns.is_multiple_of(4096) {
                        bar.set_position(done_bytes + log.position());
                    }
                }
            }
        }
        report.shifted_s = time.shift() as f64 / 1e9;
        if report.shifted_s > 0.0 {
            warnings.push(format!(
                "{}: starts before the file before it ends; its times were moved {:.3} s later",
                path.display(),
                report.shifted_s
            ));
        }
        done_bytes += std::fs::metadata(path).map_or(0, |m| m.len());
        bar.set_position(done_bytes);
        files.push(report);
    }
    counts.out_of_order = time.out_of_order;
    let (first_ns, last_ns) = (time.first_ns, time.last_ns);
    // The last packets are judged at the end of their poll interval, as live.
    if first_ns.is_some() {
        r.poll(last_ns - last_ns % r.interval_ns + r.interval_ns)?;
    }
    bar.finish_and_clear();
    let elapsed = t0.elapsed().as_secs_f64();
    let maps = r
        .lists
        .maps()
        .ok_or_else(|| Error::Layout("replay lost its maps".into()))?;
    // BPF_PROG_TEST_RUN runs on the loopback device of this namespace.
    let c = maps.iface_counters(crate::dataplane::ifindex("lo")?)?;
    let n = |a: u32| c[a as usize].packets;
    counts.parsed = n(action::PASS) + n(action::PASS_ALLOWLISTED);
    counts.fragments = n(action::FRAGMENT);
    counts.parse_errors = n(action::PARSE_ERROR) + link_errors;
    counts.non_ip = n(action::NON_IP);
    counts.dropped = n(action::DROP_BLOCKED) + n(action::DROP_BLOCKED_NET);
    counts.flow_table_full = n(action::FLOW_INSERT_FAIL);
    if counts.flow_table_full > 0 {
        warnings.push(format!(
            "the flow table ({} entries) was full: {} packets were counted but not in a flow; raise --flow-capacity",
            cfg.flow_capacity, counts.flow_table_full
        ));
    }
    let accounted =
        counts.parsed + counts.fragments + counts.parse_errors + counts.non_ip + counts.dropped;
    if accounted != counts.read {
        warn!(read = counts.read, accounted, "packets unaccounted for");
        warnings.push(format!(
            "{} packets read but {accounted} counted by the dataplane",
            counts.read
        ));
    }
    let store = r.lists.store();
    let alerts = history::alerts(store, 0, usize::MAX)?;
    let incidents = history::incidents(store, 0, usize::MAX)?;
    let mut top: Vec<Talker> = r
        .talkers
        .iter()
        .map(|(a, (p, b))| Talker {
            addr: *a,
            packets: *p,
            bytes: *b,
        })
        .collect();
    top.sort_unstable_by(|a, b| b.bytes.cmp(&a.bytes).then(a.addr.cmp(&b.addr)));
    top.truncate(cfg.top);
    if r.others.0 > 0 {
        warnings.push(format!(
            "more than {TALKERS_MAX} sources: {} packets from the rest are not in the top talkers",
            r.others.0
        ));
    }
    let capture_seconds = first_ns.map_or(0.0, |f| (last_ns - f) as f64 / 1e9);
    Ok(ReplayReport {
        files,
        packets: counts,
        conns,
        first_ms: first_ns.map(|f| f / 1_000_000),
        last_ms: first_ns.map(|_| last_ns / 1_000_000),
        capture_seconds,
        elapsed_seconds: elapsed,
        packets_per_second: if elapsed > 0.0 {
            counts.read as f64 / elapsed
        } else {
            0.0
        },
        alerts,
        incidents,
        top_talkers: top,
        warnings,
    })
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replaying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .expect("static template"),
    );
    bar
}
