//! `astra replay`: captures through the real dataplane on their own clock, reported as tables
//! or JSON.
use std::{path::PathBuf, time::Duration};

use super::{
    history::alerts_table,
    render::{print_json, table},
};
use crate::{
    clock::rfc3339_micros,
    engine::DetectConfig,
    error::{Error, Result},
    replay::{ReplayConfig, ReplayReport, replay},
};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng; Ethernet, Linux cooked SLL/SLL2, raw IP or BSD
    /// loopback) or flow logs (Zeek conn.log as TSV or JSON lines, Argus CSV), told apart by
    /// their content and replayed in order as one timeline.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the EVE event log (alerts and blocks, as the agent writes them) to FILE.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Score with this isolation-forest model (a model.json `astra model` wrote); without one
    /// only the rules judge.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// How many top talkers to show.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Capture time between two reads of the flow table, as the agent's --poll-interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub poll_interval: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub idle_timeout: Duration,
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DUR")]
    pub active_timeout: Duration,
    #[arg(long, default_value_t = astra_common::DEFAULT_FLOW_CAPACITY, value_name = "N")]
    pub flow_capacity: u32,
    /// Change a detection setting, as `astra run --set` does.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn run(a: ReplayArgs, detect_settings: &[String]) -> Result<()> {
    let mut detect = DetectConfig::default();
    detect
        .apply_settings(detect_settings)
        .map_err(|e| Error::Usage(format!("config: detect.{e}")))?;
    detect.apply(&a.set)?;
    if a.flow_capacity == 0 {
        return Err(Error::Usage("--flow-capacity must be at least 1".into()));
    }
    let cfg = ReplayConfig {
        detect,
        poll_interval: a.poll_interval,
        idle_timeout: a.idle_timeout,
        active_timeout: a.active_timeout,
        flow_capacity: a.flow_capacity,
        events: a.events,
        model: a.model,
        top: a.top,
        progress: true,
        ..ReplayConfig::new(a.files)
    };
    let report = replay(&cfg)?;
    for w in &report.warnings {
        eprintln!("astra: warning: {w}");
    }
    if let Some(path) = &a.report {
        let text = serde_json::to_vec_pretty(&report).expect("the report serializes");
        crate::files::replace(path, &text, 0o644).map_err(|e| Error::io(path, e))?;
    }
    if a.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

fn print_report(r: &ReplayReport) {
    let p = &r.packets;
    let when = |ms: Option<u64>| ms.map_or_else(|| "-".into(), rfc3339_micros);
    println!(
        "{} packets ({} bytes) and {} logged conversations from {} file(s), {} to {} ({:.1} s of capture) in {:.2} s: {:.0} packets/s",
        p.read,
        p.bytes,
        r.conns,
        r.files.len(),
        when(r.first_ms),
        when(r.last_ms),
        r.capture_seconds,
        r.elapsed_seconds,
        r.packets_per_second
    );
    let mut t = table(&["FILE", "FORMAT", "LINK", "PACKETS", "CONVERSATIONS", "NOTE"]);
    for f in &r.files {
        t.add_row(vec![
            f.path.display().to_string(),
            f.format.clone(),
            f.link_types.join(","),
            f.packets.to_string(),
            f.conns.to_string(),
            f.stopped_at
                .map_or_else(String::new, |o| format!("stopped at byte {o}")),
        ]);
    }
    println!("{t}");
    let mut t = table(&[
        "PARSED",
        "FRAGMENTS",
        "PARSE ERRORS",
        "NON-IP",
        "DROPPED (BLOCKED)",
        "OUT OF ORDER",
    ]);
    t.add_row(vec![
        p.parsed.to_string(),
        p.fragments.to_string(),
        p.parse_errors.to_string(),
        p.non_ip.to_string(),
        p.dropped.to_string(),
        p.out_of_order.to_string(),
    ]);
    println!("{t}");
    println!();
    if r.alerts.is_empty() {
        println!("no alerts");
    } else {
        println!("alerts ({}):", r.alerts.len());
        println!("{}", alerts_table(&r.alerts));
    }
    if !r.incidents.is_empty() {
        println!("\nincidents ({}):", r.incidents.len());
        let mut t = table(&["ID", "SOURCE", "SUMMARY"]);
        for i in &r.incidents {
            t.add_row(vec![
                i.id.clone(),
                i.source.clone().unwrap_or_default(),
                crate::text::escape_controls(&i.summary).into_owned(),
            ]);
        }
        println!("{t}");
    }
    if !r.top_talkers.is_empty() {
        println!("\ntop talkers:");
        let mut t = table(&["SOURCE", "PACKETS", "BYTES"]);
        for x in &r.top_talkers {
            t.add_row(vec![
                x.addr.to_string(),
                x.packets.to_string(),
                x.bytes.to_string(),
            ]);
        }
        println!("{t}");
    }
}
