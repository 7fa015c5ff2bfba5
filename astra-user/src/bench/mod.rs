//! `astra bench`: side-by-side measurements, each against its floor or the tool users would
//! otherwise pick, in one run. Results are medians over repeated runs; nothing here asserts a
//! speed (that is for people to read, in the table and the JSON).
use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use astra_common::{FlowKey, FlowValue, ListEntry, action};
use aya::programs::Xdp;
use etherparse::PacketBuilder;
use ndarray::Array2;
use serde::Serialize;

use crate::{
    dataplane::{Dataplane, maps::PinnedMaps},
    detect::forest::{ForestParams, IsolationForest},
    error::{Error, Result},
    features::FEATURE_NAMES,
    lab::{
        netns::{Netns, veth},
        traffic,
    },
};

/// One line of the results: `value` against `baseline_value`; `ratio` = value / baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline_name: Option<String>,
    pub baseline_value: Option<f64>,
    pub ratio: Option<f64>,
    /// The target from the issue, for people reading the table ("<= floor + 15 ns").
    #[serde(skip)]
    pub target: String,
}

fn m(
    name: &str,
    value: f64,
    unit: &str,
    baseline: Option<(&str, f64)>,
    target: &str,
) -> Measurement {
    Measurement {
        name: name.into(),
        value,
        unit: unit.into(),
        baseline_name: baseline.map(|b| b.0.into()),
        baseline_value: baseline.map(|b| b.1),
        ratio: baseline.map(|b| if b.1 == 0.0 { f64::NAN } else { value / b.1 }),
        target: target.into(),
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// BPF_PROG_TEST_RUN on any program fd (ours or another tool's); returns (verdict, ns per run).
pub fn test_run(prog: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    prog_test_run(&mut attr, "BPF_PROG_TEST_RUN")?;
    Ok((attr.retval, attr.duration))
}

/// The BPF_PROG_TEST_RUN syscall; every buffer `attr` points to must outlive the call.
fn prog_test_run(attr: &mut TestRunAttr, what: &str) -> Result<()> {
    // SAFETY: attr is a valid test-run attribute and the callers keep its buffers alive.
    unsafe { crate::dataplane::maps::sys_bpf(BPF_PROG_TEST_RUN, attr) }
        .map(drop)
        .map_err(|e| Error::bpf(what.to_owned(), e))
}

fn udp_packet(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), [198, 18, 0, 2], 64)
        .udp(sport, 53)
        .write(&mut v, &[0u8; 18])
        .expect("a UDP packet builds");
    v
}

fn mapped(a: Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

/// Fills the flow table with `n` synthetic live flows through batched map updates.
fn fill_flows(maps: &mut PinnedMaps, n: u32, now_ns: u64) -> Result<()> {
    let chunk = 65_536u32;
    let mut start = 0u32;
    while start < n {
        let end = (start + chunk).min(n);
        let keys: Vec<FlowKey> = (start..end)
            .map(|i| FlowKey {
                src: mapped(Ipv4Addr::from(0x0a00_0000 | i)),
                dst: mapped(Ipv4Addr::new(198, 18, 0, 2)),
                src_port: 1024 + (i % 60_000) as u16,
                dst_port: 443,
                ifindex: 1,
                proto: 6,
                direction: 0,
                _pad: [0; 2],
            })
            .collect();
        let values: Vec<FlowValue> = (start..end)
            .map(|i| FlowValue {
                packets: 10 + u64::from(i % 7),
                bytes: 4_000,
                first_seen_ns: now_ns.saturating_sub(5_000_000_000),
                last_seen_ns: now_ns,
                syn_count: 1,
                fin_count: 0,
                rst_count: 0,
                tcp_flags: 0x18,
                min_len: 60,
                max_len: 1500,
            })
            .collect();
        maps.insert_flows(&keys, &values)?;
        start = end;
    }
    Ok(())
}

fn bench_pin(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/bpf/astra-bench-{}-{tag}",
        std::process::id()
    ))
}

struct PinGuard(PathBuf);
impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// astra-ebpf's `astra-bench` object: the programs only the bench loads, so the dataplane's
/// own object carries none of them.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/astra-bench"));

/// The bench's own XDP programs (an empty pass, a drop-all and the XDP_TX flood generator),
/// each loaded on first use. They share no maps with the dataplane.
pub struct BenchPrograms(aya::Ebpf);

impl BenchPrograms {
    pub fn load() -> Result<Self> {
        if BENCH_OBJECT.is_empty() {
            return Err(Error::NoEbpfObject);
        }
        aya::Ebpf::load(BENCH_OBJECT)
            .map(BenchPrograms)
            .map_err(|e| Error::bpf("loading the bench programs", e))
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .0
            .program_mut(name)
            .ok_or_else(|| Error::Layout(format!("the bench object has no {name} program")))?
            .try_into()
            .map_err(|e| Error::bpf(name.to_owned(), e))?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
        }
        Ok(prog)
    }

    /// The do-nothing program the per-packet costs are measured against.
    pub fn floor(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::FLOOR_PROGRAM)
    }

    /// The XDP_TX program floods are generated with.
    pub fn generator(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::GEN_PROGRAM)
    }

    /// The drop-everything program that measures a flood's ceiling.
    pub fn drop_all(&mut self) -> Result<&mut Xdp> {
        self.program(astra_common::DROP_ALL_PROGRAM)
    }
}

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 5;

/// Per-packet cost of Astra's XDP paths and of xdp-filter, against an empty program.
pub fn xdp_costs(out: &mut Vec<Measurement>) -> Result<()> {
    let pin = PinGuard(bench_pin("xdp"));
    let mut dp = Dataplane::load(&pin.0, 1 << 21)?;
    let mut maps = PinnedMaps::open(&pin.0)?.expect("just loaded");
    let blocked = Ipv4Addr::new(198, 18, 9, 9);
    maps.block_v4
        .insert(blocked.octets(), ListEntry::default(), 0)
        .map_err(|e| Error::bpf("block", e))?;
    let established = udp_packet(Ipv4Addr::new(198, 18, 0, 1), 40_000);
    let dropped = udp_packet(blocked, 40_000);
    let mut bench = BenchPrograms::load()?;
    let runs = |prog: &mut Xdp, pkt: &[u8]| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..RUNS {
            let fd = prog.fd().map_err(|e| Error::bpf("program fd", e))?;
            v.push(f64::from(test_run(fd.as_fd(), pkt, REPEAT)?.1));
        }
        Ok(median(v))
    };
    let floor = runs(bench.floor()?, &established)?;
    let drop = runs(dp.xdp()?, &dropped)?;
    let update = runs(dp.xdp()?, &established)?;
    out.push(m(
        "xdp floor (empty program)",
        floor,
        "ns/packet",
        None,
        "-",
    ));
    out.push(m(
        "xdp drop path (blocked source)",
        drop,
        "ns/packet",
        Some(("xdp floor", floor)),
        "<= floor + 15 ns",
    ));
    out.push(m(
        "xdp update path (established flow)",
        update,
        "ns/packet",
        Some(("xdp floor", floor)),
        "<= floor + 40 ns",
    ));
    match xdp_filter_drop(&dropped) {
        Ok(x) => out.push(m(
            "xdp drop path vs xdp-filter",
            drop,
            "ns/packet",
            Some(("xdp-filter drop (xdp-tools)", x)),
            "no slower than xdp-filter",
        )),
        Err(e) => eprintln!("xdp-filter comparison skipped: {e}"),
    }
    // Insert path: one fresh flow per run while the table holds `n` flows. Single runs carry
    // the test-run loop's own overhead, so the floor is measured the same way.
    let singles = |prog: &mut Xdp, base: u32, count: u32| -> Result<f64> {
        let mut v = Vec::with_capacity(count as usize);
        let fd = prog.fd().map_err(|e| Error::bpf("program fd", e))?;
        for i in 0..count {
            let pkt = udp_packet(Ipv4Addr::from(0xc612_8000u32 + base + i), 7);
            v.push(f64::from(test_run(fd.as_fd(), &pkt, 1)?.1));
        }
        Ok(median(v))
    };
    let single_floor = singles(bench.floor()?, 0, 5_000)?;
    let now = crate::clock::mono_now_ns();
    let mut base = 0;
    for (label, n) in [("1k", 1_000u32), ("64k", 65_536), ("1M", 1_000_000)] {
        // Reset the table to exactly n flows.
        let mut raw = Vec::new();
        maps.read_flows(&mut raw)?;
        let keys: Vec<FlowKey> = raw.iter().map(|(k, _)| *k).collect();
        maps.delete_flows(&keys)?;
        fill_flows(&mut maps, n, now)?;
        let ins = singles(dp.xdp()?, base, 5_000)?;
        base += 5_000;
        out.push(m(
            &format!("xdp insert path ({label} flows in table)"),
            ins,
            "ns/packet",
            Some(("xdp floor, single run", single_floor)),
            "-",
        ));
    }
    Ok(())
}

/// xdp-filter (xdp-tools) blocking the same source on a veth of a scratch namespace; its
/// program is test-run on the same packet.
fn xdp_filter_drop(packet: &[u8]) -> Result<f64> {
    if !traffic::have_tool("xdp-filter") {
        return Err(Error::Usage(
            "xdp-filter not installed (Debian: xdp-tools)".into(),
        ));
    }
    let a = Netns::create(&format!("astra-bench-{}-xa", std::process::id()))?;
    let b = Netns::create(&format!("astra-bench-{}-xb", std::process::id()))?;
    veth(&a, "xa", &b, "xb")?;
    let run = |args: &[&str]| -> Result<()> {
        let st = b
            .command("xdp-filter")?
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::io("xdp-filter", e))?;
        if st.success() {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "xdp-filter {} failed",
                args.join(" ")
            )))
        }
    };
    run(&["load", "xb", "-m", "skb"])?;
    run(&["ip", "198.18.9.9", "-m", "src"])?;
    let prog = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("xdpfilt")))
        .max_by_key(|p| p.id())
        .ok_or_else(|| Error::Usage("xdp-filter's program not found".into()))?;
    let fd = prog.fd().map_err(|e| Error::bpf("xdp-filter program", e))?;
    let mut v = Vec::new();
    for _ in 0..RUNS {
        let (verdict, ns) = test_run(fd.as_fd(), packet, REPEAT)?;
        if verdict != 1 {
            return Err(Error::Usage(format!(
                "xdp-filter returned {verdict}, not XDP_DROP"
            )));
        }
        v.push(f64::from(ns));
    }
    let _ = run(&["unload", "xb"]);
    Ok(median(v))
}

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

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn hwm() -> u64 {
    status_kb("VmHWM:") * 1024
}

fn cpu_seconds() -> f64 {
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

/// Deterministic rows shaped like Astra's features: a few clusters plus outliers.
fn forest_data(rows: usize, seed: u64) -> Array2<f64> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let cols = FEATURE_NAMES.len();
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let cluster = (r % 3) as f64;
        let base = (c as f64 + 1.0) * (cluster + 1.0) * 10.0;
        if r % 97 == 0 {
            base * 20.0 * next()
        } else {
            base + next() * base * 0.2
        }
    })
}

/// Training time and scoring rate, Astra's forest against scikit-learn's on the same data and
/// settings, both single-threaded.
pub fn forest(out: &mut Vec<Measurement>) -> Result<()> {
    let train = forest_data(20_000, 7);
    let score = forest_data(100_000, 11);
    let names = FEATURE_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let params = ForestParams::default();
    let mut fits = Vec::new();
    let mut model = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        model = Some(
            IsolationForest::fit(train.view(), &params, names.clone())
                .map_err(|e| Error::Usage(e.to_string()))?,
        );
        fits.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let model = model.expect("fitted");
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let s = model
            .score_samples(score.view())
            .map_err(|e| Error::Usage(e.to_string()))?;
        std::hint::black_box(s);
        rates.push(score.nrows() as f64 / t.elapsed().as_secs_f64());
    }
    let (fit_ms, rate) = (median(fits), median(rates));
    match sklearn(&train, &score) {
        Ok((sk_fit_ms, sk_rate)) => {
            out.push(m(
                "forest training, 20k x 14, 100 trees",
                fit_ms,
                "ms",
                Some(("scikit-learn IsolationForest.fit", sk_fit_ms)),
                "-",
            ));
            out.push(m(
                "forest scoring, single thread",
                rate,
                "rows/s",
                Some(("scikit-learn score_samples", sk_rate)),
                ">= 4x scikit-learn",
            ));
        }
        Err(e) => {
            eprintln!("scikit-learn comparison skipped: {e}");
            out.push(m(
                "forest training, 20k x 14, 100 trees",
                fit_ms,
                "ms",
                None,
                "-",
            ));
            out.push(m(
                "forest scoring, single thread",
                rate,
                "rows/s",
                None,
                ">= 4x scikit-learn",
            ));
        }
    }
    Ok(())
}

fn write_csv(path: &Path, x: &Array2<f64>) -> Result<()> {
    let mut s = String::with_capacity(x.len() * 12);
    for row in x.rows() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.17e}")).collect();
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

const SKLEARN_TIMING: &str = r#"
import sys, time, numpy as np
from sklearn.ensemble import IsolationForest
train = np.loadtxt(sys.argv[1], delimiter=",")
score = np.loadtxt(sys.argv[2], delimiter=",")
runs = int(sys.argv[3])
fits, rates = [], []
for _ in range(runs):
    t = time.perf_counter(); m = IsolationForest(n_estimators=100, random_state=0, n_jobs=1).fit(train)
    fits.append((time.perf_counter() - t) * 1e3)
for _ in range(runs):
    t = time.perf_counter(); m.score_samples(score)
    rates.append(len(score) / (time.perf_counter() - t))
print(float(np.median(fits)), float(np.median(rates)))
"#;

/// Why there is no python with scikit-learn to compare against.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("no python3 on PATH")]
    NoPython,
    #[error("cannot run {python} -m pip: {cause}")]
    Pip {
        python: &'static str,
        cause: std::io::Error,
    },
    #[error("scikit-learn is not importable and `pip install scikit-learn` failed: {last_line}")]
    NotInstalled { last_line: String },
}

/// The python interpreter with scikit-learn importable, installing scikit-learn with pip when
/// it is missing; or why there is none.
pub fn python_with_sklearn() -> std::result::Result<String, PythonError> {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or(PythonError::NoPython)?;
    let importable = || {
        Command::new(python)
            .args(["-c", "import sklearn, joblib, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable() {
        return Ok(python.to_string());
    }
    eprintln!("scikit-learn is missing; installing it with {python} -m pip");
    let pip = |extra: &[&str]| {
        Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "scikit-learn"])
            .args(extra)
            .output()
            .map_err(|cause| PythonError::Pip { python, cause })
    };
    let out = pip(&[])?;
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Debian's system python refuses pip installs unless told the environment is ours.
    if !out.status.success() && stderr.contains("externally-managed-environment") {
        let out = pip(&["--break-system-packages"])?;
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    if importable() {
        Ok(python.to_string())
    } else {
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        Err(PythonError::NotInstalled {
            last_line: last.to_owned(),
        })
    }
}

fn sklearn(train: &Array2<f64>, score: &Array2<f64>) -> Result<(f64, f64)> {
    let python = python_with_sklearn().map_err(|e| Error::Usage(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("astra-bench-{}-sk", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let (tp, sp) = (dir.join("train.csv"), dir.join("score.csv"));
    write_csv(&tp, train)?;
    write_csv(&sp, score)?;
    let o = Command::new(&python)
        .args(["-c", SKLEARN_TIMING])
        .arg(&tp)
        .arg(&sp)
        .arg(RUNS.to_string())
        // One thread, as Astra scores on one.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output()
        .map_err(|e| Error::io("python3", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !o.status.success() {
        return Err(Error::Usage(format!(
            "python3 with scikit-learn failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>());
    match (it.next(), it.next()) {
        (Some(Ok(f)), Some(Ok(r))) => Ok((f, r)),
        _ => Err(Error::Usage(format!(
            "unexpected scikit-learn output {text:?}"
        ))),
    }
}

/// From the first packet of a SYN flood to the first packet the kernel drops, with the agent
/// at its default settings (1 s polls).
pub fn detection_latency(out: &mut Vec<Measurement>) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let mut v = Vec::new();
    for i in 0..3 {
        let mut topo = crate::lab::Topology::build(&format!("{}-b{i}", std::process::id()))?;
        topo.start_agent(&exe, &[])?;
        let (target, me) = (topo.attackers[0].server_addr, topo.attackers[0].addr);
        let t0 = Instant::now();
        let topo = &topo;
        let seen = std::thread::scope(|s| {
            // About 2000 SYNs a second from one address, until the kernel drops them (or 5 s).
            s.spawn(move || {
                while t0.elapsed() < Duration::from_secs(5) && topo.kernel_drops() == 0 {
                    let attacker = &topo.attackers[0].ns;
                    if traffic::syn_flood(attacker, traffic::SourceAddr::Real(me), target, 80, 20)
                        .is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            while t0.elapsed() < Duration::from_secs(6) {
                if topo.kernel_drops() > 0 {
                    return Some(t0.elapsed().as_secs_f64());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        });
        v.extend(seen);
    }
    if v.is_empty() {
        return Err(Error::Usage("no kernel drop within 6 s in any run".into()));
    }
    out.push(m(
        "detection latency, first attack packet to kernel drop (1 s polls)",
        median(v),
        "s",
        None,
        "< 2 s",
    ));
    Ok(())
}

fn sh_ok(ns: &Netns, prog: &str, args: &[&str]) -> Result<()> {
    let st = ns
        .command(prog)?
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::io(prog, e))?;
    if st.success() {
        Ok(())
    } else {
        Err(Error::Usage(format!("{prog} {} failed", args.join(" "))))
    }
}

/// Which filter drops the flood in [`live_drop`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Filter {
    /// A receiver that drops every frame unexamined: what the generator and veth can carry.
    Ceiling,
    None,
    Iptables,
    Nftables,
    Astra,
}

const LIVE_PACKETS: u32 = 5_000_000;

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it for context input.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Transmits `packet` `count` times out of interface `ifindex` (of the calling thread's
/// namespace) by running the XDP_TX generator in live-frames mode: the kernel builds and sends
/// the frames itself, several million a second on one core, so the receiver is what limits.
fn generate(prog: BorrowedFd<'_>, ifindex: u32, packet: &[u8], count: u32) -> Result<()> {
    let mut ctx = XdpMd {
        data_end: packet.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat: count,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &mut ctx as *mut XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: 256,
        ..Default::default()
    };
    prog_test_run(&mut attr, "BPF_PROG_TEST_RUN (live frames)")
}

/// Packets a command's output reports in its first `counter packets N` / `pkts` figure.
fn first_number_after(text: &str, word: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    while let Some(w) = it.next() {
        if w == word {
            return it.next()?.parse().ok();
        }
    }
    None
}

fn sh_out(ns: &Netns, prog: &str, args: &[&str]) -> Result<String> {
    let out = ns
        .command(prog)?
        .args(args)
        .output()
        .map_err(|e| Error::io(prog, e))?;
    if !out.status.success() {
        return Err(Error::Usage(format!("{prog} {} failed", args.join(" "))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Floods a veth from one namespace into another where `filter` drops the flood, and returns
/// the packets per second the filter handled (dropped, or for no filter, received). The flood
/// comes from Astra's XDP_TX generator in live-frames mode, and the receiving veth runs an XDP
/// program in native mode, as a NIC driver would: Astra's own, dropping before any socket
/// buffer exists, or for the other filters a pass-only one, after which the kernel builds the
/// socket buffer and the packet meets iptables' raw table or the nftables ingress hook. The
/// generator and the receiver share one core, so the rate is one over their summed cost.
fn live_rate(filter: Filter, run: usize) -> Result<f64> {
    let tag = format!("{}-{run}-{filter:?}", std::process::id()).to_lowercase();
    let a = Netns::create(&format!("astra-bench-{tag}-a"))?;
    let b = Netns::create(&format!("astra-bench-{tag}-b"))?;
    veth(&a, "ga", &b, "gb")?;
    a.add_addr("ga", "198.18.200.1/24")?;
    b.add_addr("gb", "198.18.200.2/24")?;
    let mac_b = b.mac("gb")?;
    let pin = PinGuard(bench_pin(&format!("live-{run}")));
    let sh = sh_ok;
    match filter {
        Filter::Ceiling | Filter::None | Filter::Astra => {}
        Filter::Iptables => sh(
            &b,
            "iptables",
            &[
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-s",
                "198.18.200.1",
                "-j",
                "DROP",
            ],
        )?,
        Filter::Nftables => {
            let rules = "table netdev astra_bench {\n chain c {\n  type filter hook ingress device gb priority 0;\n  ip saddr 198.18.200.1 counter drop\n }\n}\n";
            let f = std::env::temp_dir().join(format!("astra-bench-{tag}.nft"));
            std::fs::write(&f, rules).map_err(|e| Error::io(&f, e))?;
            let r = sh(&b, "nft", &["-f", &f.display().to_string()]);
            let _ = std::fs::remove_file(&f);
            r?;
        }
    }
    // The receiver: Astra blocking the source, or a pass-only program (a veth only takes XDP
    // frames when its peer runs XDP).
    let pin_dir = pin.0.clone();
    let astra = filter == Filter::Astra;
    let ceiling = filter == Filter::Ceiling;
    // Held until the end: dropping the dataplane or the programs detaches them.
    let receiver = b.run(
        move || -> Result<(Option<Dataplane>, Option<BenchPrograms>)> {
            if astra {
                let mut d = Dataplane::load(&pin_dir, 4096)?;
                d.attach("gb", crate::dataplane::XdpModeArg::Native)?;
                return Ok((Some(d), None));
            }
            let mut p = BenchPrograms::load()?;
            let (prog, what) = if ceiling {
                (p.drop_all()?, "drop-all")
            } else {
                (p.floor()?, "pass")
            };
            prog.attach("gb", aya::programs::XdpMode::Driver)
                .map_err(|e| Error::bpf(format!("attaching the {what} program to gb"), e))?;
            Ok((None, Some(p)))
        },
    )??;
    if astra {
        let mut maps = PinnedMaps::open(&pin.0)?.expect("just loaded");
        maps.block_v4
            .insert([198, 18, 200, 1], ListEntry::default(), 0)
            .map_err(|e| Error::bpf("block", e))?;
    }
    let rx_before = rx_packets(&b, "gb")?;
    let tx_dropped_before = tx_dropped(&a, "ga")?;

    let mac_b: [u8; 6] = parse_mac(&mac_b)?;
    let mut packet = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], mac_b)
        .ipv4([198, 18, 200, 1], [198, 18, 200, 2], 64)
        .udp(4000, 5000)
        .write(&mut packet, &[0u8; 18])
        .expect("a UDP packet builds");
    let mut generator = BenchPrograms::load()?;
    let fd = generator
        .generator()?
        .fd()
        .map_err(|e| Error::bpf("generator fd", e))?
        .try_clone()
        .map_err(|e| Error::bpf("generator fd", e))?;
    let t0 = Instant::now();
    a.run(move || -> Result<()> {
        let ifindex = crate::dataplane::ifindex("ga")?;
        generate(fd.as_fd(), ifindex, &packet, LIVE_PACKETS)
    })??;
    let secs = t0.elapsed().as_secs_f64();

    let handled = match filter {
        Filter::Astra => {
            let idx = b.run(|| crate::dataplane::ifindex("gb"))??;
            let c = PinnedMaps::open(&pin.0)?
                .expect("pinned")
                .iface_counters(idx)?;
            c[action::DROP_BLOCKED as usize].packets
        }
        Filter::Iptables => {
            let out = sh_out(
                &b,
                "iptables",
                &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
            )?;
            // The rule line starts with its packet count.
            out.lines()
                .find(|l| l.contains("DROP"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| Error::Usage(format!("no iptables counter in:\n{out}")))?
        }
        Filter::Nftables => {
            let out = sh_out(&b, "nft", &["list", "table", "netdev", "astra_bench"])?;
            first_number_after(&out, "packets")
                .ok_or_else(|| Error::Usage(format!("no nft counter in:\n{out}")))?
        }
        Filter::None => rx_packets(&b, "gb")?.saturating_sub(rx_before),
        // XDP drops are not counted as received: what the generator sent, less what the veth
        // could not queue (counted as the sender's transmit drops).
        Filter::Ceiling => u64::from(LIVE_PACKETS)
            .saturating_sub(tx_dropped(&a, "ga")?.saturating_sub(tx_dropped_before)),
    };
    let (dataplane, programs) = receiver;
    if let Some(mut d) = dataplane {
        d.detach_all();
    }
    // Dropping the programs drops their links, which detaches them.
    drop(programs);
    drop(generator);
    if handled < u64::from(LIVE_PACKETS) / 100 {
        return Err(Error::Usage(format!(
            "{filter:?}: only {handled} of {LIVE_PACKETS} packets reached the receiver"
        )));
    }
    Ok(handled as f64 / secs)
}

fn link_stat(ns: &Netns, iface: &str, dir: &str, field: &str) -> Result<u64> {
    let out = sh_out(ns, "ip", &["-s", "-j", "link", "show", iface])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Usage(format!("ip -s -j link: {e}")))?;
    v[0]["stats64"][dir][field]
        .as_u64()
        .ok_or_else(|| Error::Usage(format!("no {dir} {field} count in {out}")))
}

fn rx_packets(ns: &Netns, iface: &str) -> Result<u64> {
    link_stat(ns, iface, "rx", "packets")
}

fn tx_dropped(ns: &Netns, iface: &str) -> Result<u64> {
    link_stat(ns, iface, "tx", "dropped")
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(Error::Usage(format!("not a MAC address: {s}")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| Error::Usage(format!("not a MAC address: {s}")))?;
    }
    Ok(mac)
}

/// Packets per second a veth can take from a flood while dropping it: Astra (XDP) against
/// iptables raw DROP, nftables netdev ingress drop and no filter.
pub fn live_drop(out: &mut Vec<Measurement>) -> Result<()> {
    for tool in ["iptables", "nft"] {
        if !traffic::have_tool(tool) {
            return Err(Error::Usage(format!("{tool} not installed")));
        }
    }
    let mut rates = std::collections::HashMap::new();
    for filter in [
        Filter::Ceiling,
        Filter::None,
        Filter::Iptables,
        Filter::Nftables,
        Filter::Astra,
    ] {
        let mut v = Vec::new();
        for run in 0..5 {
            v.push(live_rate(filter, run)?);
        }
        rates.insert(format!("{filter:?}"), median(v));
    }
    let astra = rates["Astra"];
    out.push(m(
        "veth flood dropped by astra (XDP)",
        astra,
        "packets/s",
        Some(("iptables raw DROP", rates["Iptables"])),
        ">= 3x iptables",
    ));
    out.push(m(
        "veth flood dropped by astra (XDP)",
        astra,
        "packets/s",
        Some(("nftables netdev ingress drop", rates["Nftables"])),
        "-",
    ));
    out.push(m(
        "veth flood dropped by astra (XDP)",
        astra,
        "packets/s",
        Some(("no filter (stack discards)", rates["None"])),
        "-",
    ));
    // One core generates and receives, so each rate is one over the generator's and the
    // receiver's summed cost: taking off the ceiling's (generator, veth and a bare drop) leaves
    // what each filter itself costs per packet.
    let ceiling = rates["Ceiling"];
    let cost = |rate: f64| (1e9 / rate - 1e9 / ceiling).max(0.0);
    out.push(m(
        "veth flood ceiling (generator + veth, receiver drops all unexamined)",
        ceiling,
        "packets/s",
        None,
        "-",
    ));
    out.push(m(
        "veth flood, filter's own cost per packet (above the ceiling): astra",
        cost(astra),
        "ns/packet",
        Some(("iptables raw DROP", cost(rates["Iptables"]))),
        "-",
    ));
    out.push(m(
        "veth flood, filter's own cost per packet (above the ceiling): astra",
        cost(astra),
        "ns/packet",
        Some(("nftables netdev ingress drop", cost(rates["Nftables"]))),
        "-",
    ));
    Ok(())
}

#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel,
    }
}

/// A group of measurements, appending to the results.
type Group = fn(&mut Vec<Measurement>) -> Result<()>;

/// Everything, in one run: the table on stdout, and the JSON list if asked.
pub fn run(json: Option<&Path>, only: &[String]) -> Result<()> {
    let want = |k: &str| only.is_empty() || only.iter().any(|o| o == k);
    let mut out = Vec::new();
    let mut failed = Vec::new();
    let steps: [(&str, Group); 5] = [
        ("xdp", xdp_costs),
        ("live", live_drop),
        ("poll", agent_polls),
        ("forest", forest),
        ("latency", detection_latency),
    ];
    if let Some(bad) = only.iter().find(|o| !steps.iter().any(|(k, _)| k == o)) {
        let known: Vec<&str> = steps.iter().map(|(k, _)| *k).collect();
        return Err(Error::Usage(format!(
            "--only {}: no such benchmark group (groups: {})",
            crate::text::excerpt(bad),
            known.join(", ")
        )));
    }
    let bar = indicatif::ProgressBar::new(steps.iter().filter(|(k, _)| want(k)).count() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{pos}/{len}] {msg}").expect("static template"),
    );
    for (key, f) in steps {
        if !want(key) {
            continue;
        }
        bar.set_message(format!("measuring {key}"));
        if let Err(e) = f(&mut out) {
            bar.suspend(|| eprintln!("{key}: {e}"));
            failed.push(key);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mach = machine();
    println!(
        "machine: {} ({} cores), kernel {}; medians of repeated runs",
        mach.cpu, mach.cores, mach.kernel
    );
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header([
        "measurement",
        "value",
        "unit",
        "baseline",
        "baseline value",
        "ratio",
        "target",
    ]);
    let num = |v: f64| {
        if v.abs() >= 1000.0 {
            format!("{v:.0}")
        } else if v.abs() >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.3}")
        }
    };
    for x in &out {
        t.add_row(vec![
            x.name.clone(),
            num(x.value),
            x.unit.clone(),
            x.baseline_name.clone().unwrap_or_else(|| "-".into()),
            x.baseline_value.map_or("-".into(), num),
            x.ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            x.target.clone(),
        ]);
    }
    println!("{t}");
    if let Some(p) = json {
        let text = serde_json::to_vec_pretty(&out).expect("measurements serialise");
        std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
        println!("JSON written to {}", p.display());
    }
    if !failed.is_empty() {
        return Err(Error::Usage(format!(
            "could not measure: {}",
            failed.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn ratios_are_value_over_baseline() {
        let x = m("a", 30.0, "ns", Some(("b", 10.0)), "-");
        assert_eq!(x.ratio, Some(3.0));
        assert!(
            m("a", 1.0, "ns", Some(("b", 0.0)), "-")
                .ratio
                .unwrap()
                .is_nan()
        );
        assert_eq!(m("a", 1.0, "ns", None, "-").ratio, None);
    }

    #[test]
    fn forest_data_is_deterministic_and_shaped_like_the_features() {
        let a = forest_data(100, 3);
        assert_eq!(a.dim(), (100, FEATURE_NAMES.len()));
        assert_eq!(a, forest_data(100, 3));
        assert_ne!(a, forest_data(100, 4));
    }
}
