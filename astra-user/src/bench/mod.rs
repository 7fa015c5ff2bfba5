//! `astra bench`: side-by-side measurements, each against its floor or the tool users would
//! otherwise pick, in one run. Results are medians over repeated runs; nothing here asserts a
//! speed (that is for people to read, in the table and the JSON). One file per group (`xdp`,
//! `live`, `poll`, `forest`, `latency`, `synflood`,
//! `reflection`, `replay`, `crowdsec`, `trees`, `ui`); `programs.rs` has the bench's own eBPF programs and
//! the BPF_PROG_TEST_RUN plumbing they share.
pub mod crowdsec;
pub mod forest;
pub mod latency;
pub mod live;
pub mod poll;
pub mod programs;
pub mod reflection;
pub mod replay;
pub mod synflood;
pub mod trees;
pub mod ui;
pub mod xdp;

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Repeats of one packet per BPF_PROG_TEST_RUN call.
const REPEAT: u32 = 1_000_000;
/// Runs per measurement; the median is reported.
const RUNS: usize = 5;

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
    let steps: [(&str, Group); 12] = [
        ("xdp", xdp::xdp_costs),
        ("live", live::live_drop),
        ("poll", poll::agent_polls),
        ("botnet", poll::botnet),
        ("forest", forest::forest),
        ("trees", trees::trees),
        ("latency", latency::detection_latency),
        ("synflood", synflood::syn_flood),
        ("reflection", reflection::reflection),
        ("replay", replay::replay_rate),
        ("crowdsec", crowdsec::crowdsec),
        ("ui", ui::ui),
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
}
