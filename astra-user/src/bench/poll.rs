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
    let store = crate::store::Store::open(&state)?;
    let mut lists = crate::lists::Lists::from_parts(store, Some(maps));
    let mut table = crate::flow::FlowTable::with_capacity(
        Duration::from_secs(3600),
        Duration::from_secs(3600),
        capacity as usize,
    );
    let mut engine = crate::engine::Engine::new(
        crate::engine::DetectConfig::default(),
        &state,
        state.join("eve.json"),
    )?;
    let metrics = crate::sink::metrics::Metrics::new();
    let (mut polls, mut poll_cpus, mut passes, mut pass_cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..4 {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let now = crate::clock::mono_now_ns();
        let maps = lists.maps_mut().expect("maps");
        table.poll(maps, now)?;
        let (t1, c1) = (Instant::now(), cpu_seconds());
        let closed = table.take_closed();
        engine.run(
            now,
            crate::clock::now_ms(),
            &table,
            &closed,
            &mut lists,
            &metrics,
        )?;
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
