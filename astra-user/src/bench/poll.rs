//! `poll`: what one poll of a full flow table costs the agent, in time and memory, each table
//! size in a child process of its own.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{programs::*, *};
use crate::{
    dataplane::{Dataplane, maps::PinnedMaps},
    error::{Error, Result},
};

/// The agent's poll (flow table read, bookkeeping, detection pass) at several table sizes, in
/// child processes so each one's peak RSS is its own.
pub fn agent_polls(out: &mut Vec<Measurement>) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    for (label, n) in [("10k", 10_000u32), ("100k", 100_000), ("1M", 1_000_000)] {
        let o = Command::new(&exe)
            .args(["bench", "--poll-child", &n.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::io("bench child", e))?;
        if !o.status.success() {
            return Err(Error::Usage(format!(
                "poll benchmark with {n} flows failed"
            )));
        }
        let r: serde_json::Value = serde_json::from_slice(&o.stdout)
            .map_err(|e| Error::Usage(format!("poll benchmark output: {e}")))?;
        let get = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        out.push(m(
            &format!("agent poll, {label} live flows (read, deltas, eviction; wall)"),
            get("poll_wall_s"),
            "s",
            None,
            if n == 1_000_000 { "< 1 s" } else { "-" },
        ));
        out.push(m(
            &format!("agent poll, {label} live flows (CPU)"),
            get("poll_cpu_s"),
            "s",
            None,
            "-",
        ));
        out.push(m(
            &format!("detection pass, {label} live flows (wall)"),
            get("pass_wall_s"),
            "s",
            None,
            "-",
        ));
        if n == 1_000_000 {
            let rss = r["max_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1024.0 * 1024.0);
            out.push(m("agent RSS, 1M live flows", rss, "MiB", None, "< 512 MiB"));
        }
    }
    Ok(())
}

pub(super) fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

pub(super) fn hwm() -> u64 {
    status_kb("VmHWM:") * 1024
}

pub(super) fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The agent's parts a poll and a detection pass need, on maps of the bench's own, with
/// flows that never time out.
struct Agent {
    lists: crate::lists::Lists,
    table: crate::flow::FlowTable,
    engine: crate::engine::Engine,
    metrics: crate::sink::metrics::Metrics,
}

impl Agent {
    fn new(maps: PinnedMaps, state: &Path, capacity: u32) -> Result<Self> {
        let store = crate::store::Store::open(state)?;
        Ok(Self {
            lists: crate::lists::Lists::from_parts(store, Some(maps)),
            table: crate::flow::FlowTable::with_capacity(
                Duration::from_secs(3600),
                Duration::from_secs(3600),
                capacity as usize,
            ),
            engine: crate::engine::Engine::new(
                crate::engine::DetectConfig::default(),
                state,
                state.join("eve.json"),
            )?,
            metrics: crate::sink::metrics::Metrics::new(),
        })
    }

    /// The agent's poll of the flow table at `now_ns`.
    fn poll(&mut self, now_ns: u64) -> Result<()> {
        let maps = self.lists.maps_mut().expect("maps");
        self.table.poll(maps, now_ns)?;
        Ok(())
    }

    /// The detection pass after a poll.
    fn pass(&mut self, now_ns: u64, now_ms: u64) -> Result<()> {
        let closed = self.table.take_closed();
        self.engine.run(
            now_ns,
            now_ms,
            &self.table,
            &closed,
            &mut self.lists,
            &self.metrics,
        )?;
        Ok(())
    }
}

/// The child side of [`agent_polls`]: fill a table with `n` flows, run the agent's poll and
/// detection pass several times, print {wall_s, cpu_s, max_rss_bytes} (medians of the steady
/// polls) as JSON.
pub fn poll_child(n: u32) -> Result<()> {
    let pin = PinGuard(bench_pin(&format!("poll{n}")));
    let state = std::env::temp_dir().join(format!("astra-bench-{}-state", std::process::id()));
    let capacity = (n + n / 4).max(1024);
    let _dp = Dataplane::load(&pin.0, capacity)?;
    let mut maps = PinnedMaps::open(&pin.0)?.expect("just loaded");
    fill_flows(&mut maps, n, crate::clock::mono_now_ns())?;
    let mut agent = Agent::new(maps, &state, capacity)?;
    let (mut polls, mut poll_cpus, mut passes, mut pass_cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..4 {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let now = crate::clock::mono_now_ns();
        agent.poll(now)?;
        let (t1, c1) = (Instant::now(), cpu_seconds());
        agent.pass(now, crate::clock::now_ms())?;
        // The first poll sees every flow as new; the agent's steady state is the later ones.
        if i > 0 {
            polls.push((t1 - t0).as_secs_f64());
            poll_cpus.push(c1 - c0);
            passes.push(t1.elapsed().as_secs_f64());
            pass_cpus.push(cpu_seconds() - c1);
        }
    }
    let rss = hwm();
    let _ = std::fs::remove_dir_all(&state);
    println!(
        "{}",
        serde_json::json!({
            "poll_wall_s": median(polls), "poll_cpu_s": median(poll_cpus),
            "pass_wall_s": median(passes), "pass_cpu_s": median(pass_cpus),
            "max_rss_bytes": rss,
        })
    );
    Ok(())
}

/// Seconds of the botnet-shaped flood: the long window's length, so the rate sums reach
/// their steady size.
const BOTNET_SECONDS: u64 = 60;
const BOTNET_SOURCES: u32 = 1_000_000;

/// The agent under a botnet-shaped flood, in a child process (see [`botnet_child`]): peak RSS
/// and the slowest poll plus detection pass of the steady state.
pub fn botnet(out: &mut Vec<Measurement>) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let o = Command::new(&exe)
        .args(["bench", "--botnet-child"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io("bench child", e))?;
    if !o.status.success() {
        return Err(Error::Usage("botnet benchmark failed".into()));
    }
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| Error::Usage(format!("botnet benchmark output: {e}")))?;
    let get = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let what = "1M sources, each sending every second for 60 s";
    out.push(m(
        &format!("agent RSS under a botnet-shaped flood ({what})"),
        get("max_rss_bytes") / (1024.0 * 1024.0),
        "MiB",
        None,
        "< 512 MiB",
    ));
    out.push(m(
        &format!("agent poll + pass, slowest of the last 10 s ({what})"),
        get("slowest_s"),
        "s",
        None,
        "< 1 s (the default poll interval)",
    ));
    out.push(m(
        &format!("agent poll alone, median of the last 10 s ({what})"),
        get("median_poll_s"),
        "s",
        None,
        "-",
    ));
    Ok(())
}

/// The child side of [`botnet`]: a million sources each with one UDP flow that gains a
/// packet every second, written into the kernel flow table once a second of dataplane time,
/// and the agent's poll and detection pass after each second, for the long window's 60 s.
/// Prints {max_rss_bytes, slowest_s, median_s} as JSON.
pub fn botnet_child() -> Result<()> {
    use astra_common::{FlowKey, FlowValue};
    let pin = PinGuard(bench_pin("botnet"));
    let state = std::env::temp_dir().join(format!("astra-bench-{}-state", std::process::id()));
    let n = BOTNET_SOURCES;
    let capacity = n + n / 4;
    let _dp = Dataplane::load(&pin.0, capacity)?;
    let maps = PinnedMaps::open(&pin.0)?.expect("just loaded");
    let mut agent = Agent::new(maps, &state, capacity)?;
    let key = |i: u32| FlowKey {
        src: std::net::Ipv4Addr::from(0x0a00_0000 | i)
            .to_ipv6_mapped()
            .octets(),
        dst: std::net::Ipv4Addr::new(198, 18, 0, 2)
            .to_ipv6_mapped()
            .octets(),
        src_port: 1024 + (i % 60_000) as u16,
        dst_port: 53,
        ifindex: 1,
        proto: 17,
        ..Default::default()
    };
    let (t0_ns, t0_ms) = (crate::clock::mono_now_ns(), crate::clock::now_ms());
    let mut took = Vec::new();
    // The flood is written in chunks so the generator's own buffers (a million keys and
    // values would be 140 MB) do not count in the agent's peak.
    const CHUNK: u32 = 65_536;
    for s in 1..=BOTNET_SECONDS {
        let now = t0_ns + s * 1_000_000_000;
        let value = FlowValue {
            packets: s,
            bytes: 80 * s,
            first_seen_ns: t0_ns,
            last_seen_ns: now,
            min_len: 80,
            max_len: 80,
            ..Default::default()
        };
        let maps = agent.lists.maps_mut().expect("maps");
        for from in (0..n).step_by(CHUNK as usize) {
            let keys: Vec<FlowKey> = (from..(from + CHUNK).min(n)).map(key).collect();
            maps.insert_flows(&keys, &vec![value; keys.len()])?;
        }
        let t = Instant::now();
        agent.poll(now)?;
        let polled = t.elapsed().as_secs_f64();
        agent.pass(now, t0_ms + s * 1000)?;
        took.push((polled, t.elapsed().as_secs_f64()));
    }
    let rss = hwm();
    let _ = std::fs::remove_dir_all(&state);
    let last = &took[took.len().saturating_sub(10)..];
    let col = |f: fn(&(f64, f64)) -> f64| last.iter().map(f).collect::<Vec<f64>>();
    println!(
        "{}",
        serde_json::json!({
            "max_rss_bytes": rss,
            "slowest_s": col(|t| t.1).into_iter().fold(0.0, f64::max),
            "median_s": median(col(|t| t.1)),
            "median_poll_s": median(col(|t| t.0)),
        })
    );
    Ok(())
}
