//! `astra status` and `astra flows`: the library's reports, rendered for people or as JSON.
use std::path::Path;

use super::render::{fmt_secs, print_json, table};
use crate::{
    agent::status::{FlowReport, StatusReport, flows_report, status_report},
    clock::now_unix,
    error::Result,
    store::Store,
};

/// Prints the largest flows. Interface names come from the agent's status file when there is
/// one: the agent may run in another network namespace, where ifindexes mean other devices.
pub fn flows(pin_dir: &Path, state_dir: &Path, top: usize, json: bool) -> Result<()> {
    let out = flows_report(pin_dir, state_dir, top)?;
    if json {
        return print_json(&out);
    }
    if out.is_empty() {
        println!("no flows in the table");
        return Ok(());
    }
    print_flow_table(&out);
    Ok(())
}

fn print_flow_table(out: &[FlowReport]) {
    let mut t = table(&[
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "IFACE",
        "PKTS>",
        "BYTES>",
        "PKTS<",
        "BYTES<",
        "FIRST SEEN",
        "LAST SEEN",
    ]);
    for f in out {
        let b = &f.flow;
        let ep = |a: &std::net::IpAddr, p: u16| match (b.proto, a) {
            (1 | 58, _) => a.to_string(),
            (_, std::net::IpAddr::V6(_)) => format!("[{a}]:{p}"),
            _ => format!("{a}:{p}"),
        };
        t.add_row(vec![
            f.proto_name.clone(),
            ep(&b.src, b.src_port),
            ep(&b.dst, b.dst_port),
            f.iface.clone(),
            b.fwd.packets.to_string(),
            b.fwd.bytes.to_string(),
            b.rev.packets.to_string(),
            b.rev.bytes.to_string(),
            f.first_seen.clone(),
            f.last_seen.clone(),
        ]);
    }
    println!("{t}");
}

pub fn status(pin_dir: &Path, state_dir: &Path, json: bool) -> Result<()> {
    // A damaged database is reported, not fatal: what the kernel enforces is still worth seeing.
    let store = match Store::open(state_dir) {
        Ok(s) => s,
        Err(e) if e.is_user_error() => return Err(e.into()),
        Err(e) => {
            let s = Store::open_in_memory();
            let out = status_report(pin_dir, state_dir, s, Some(e.to_string()))?;
            return print_status_out(&out, json);
        }
    };
    let out = status_report(pin_dir, state_dir, store, None)?;
    print_status_out(&out, json)
}

fn print_status_out(out: &StatusReport, json: bool) -> Result<()> {
    if json {
        return print_json(out);
    }
    print_status(out);
    Ok(())
}

/// The CrowdSec bouncer's line: up or down (and why), the last good pull, decisions by origin.
fn print_bouncer(c: &crate::agent::crowdsec::BouncerStatus) {
    let last = c.last_pull_at.map_or_else(
        || "never pulled".to_owned(),
        |t| format!("last pull {} ago", fmt_secs(now_unix().saturating_sub(t))),
    );
    let state = match (&c.last_error, c.key_rejected) {
        (_, true) => "KEY REJECTED".to_owned(),
        (Some(_), false) => "DOWN (kernel entries stay in force)".to_owned(),
        (None, false) if c.up => "up".to_owned(),
        (None, false) => "starting".to_owned(),
    };
    let origins: Vec<String> = c
        .decisions
        .iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect();
    println!(
        "crowdsec:     {} {state}, {last}, decisions: {}",
        c.url,
        if origins.is_empty() {
            "none".to_owned()
        } else {
            origins.join(", ")
        }
    );
    if let Some(e) = &c.last_error {
        println!("              last error: {e}");
    }
}

/// The CrowdSec watcher's line: up or down, what was pushed and what waits.
fn print_watcher(w: &crate::agent::crowdsec::WatcherStatus) {
    let last = w.last_push_at.map_or_else(
        || "nothing pushed yet".to_owned(),
        |t| format!("last push {} ago", fmt_secs(now_unix().saturating_sub(t))),
    );
    println!(
        "crowdsec out: {} as {} {}, {last}, {} alerts pushed, {} waiting{}",
        w.url,
        w.login,
        if w.up {
            "up"
        } else {
            "DOWN (alerts wait in the outbox)"
        },
        w.pushed,
        w.queued,
        if w.refused > 0 {
            format!(", {} refused", w.refused)
        } else {
            String::new()
        }
    );
    if let Some(e) = &w.last_error {
        println!("              last error: {e}");
    }
}

fn print_status(out: &StatusReport) {
    let (running, pin_dir) = (out.agent_running, &out.pin_dir);
    match (&out.agent, running) {
        (Some(s), true) => {
            println!(
                "agent:        running (pid {}, version {}, up {})",
                s.pid,
                s.version,
                fmt_secs(now_unix().saturating_sub(s.started_at))
            );
            for i in &s.interfaces {
                println!(
                    "interface:    {} (ifindex {}) xdp {}{}",
                    i.iface,
                    i.ifindex,
                    i.mode,
                    if i.egress { ", tc egress" } else { "" }
                );
            }
            match (s.last_poll_at, s.last_poll_ms) {
                (Some(t), Some(ms)) => println!(
                    "last poll:    {} ago, took {ms:.1} ms",
                    fmt_secs(now_unix().saturating_sub(t))
                ),
                _ => println!("last poll:    none yet"),
            }
            println!("metrics:      http://{}/metrics", s.metrics_addr);
            if !s.api_addr.is_empty() {
                println!("api:          http://{}/api/v1/", s.api_addr);
            }
            if let Some(m) = &s.model {
                let age = m
                    .trained_at
                    .map(|t| format!(", trained {} ago", fmt_secs(now_unix().saturating_sub(t))))
                    .unwrap_or_default();
                println!("model:        {}{age}", m.state);
            }
            if let Some(e) = &s.store_error {
                println!("agent store:  IN MEMORY ONLY ({e})");
            }
            if let Some(c) = &s.crowdsec {
                print_bouncer(c);
            }
            if let Some(w) = &s.crowdsec_watcher {
                print_watcher(w);
            }
        }
        _ => println!("agent:        not running"),
    }
    println!(
        "pin dir:      {} (layout v{})",
        pin_dir.display(),
        out.layout_version
    );
    if out.maps_pinned {
        let cap = out.flow_capacity.unwrap_or(0);
        let n = out.flows.unwrap_or(0);
        let pct = if cap == 0 {
            0.0
        } else {
            n as f64 * 100.0 / cap as f64
        };
        println!("flow table:   {n} / {cap} ({pct:.1}% full)");
        println!(
            "kernel lists: {} blocked, {} allowlisted, {} quarantined, {} throttled (of {}), {} protected (of {})",
            out.block_entries.unwrap_or(0),
            out.allow_entries.unwrap_or(0),
            out.quarantine_entries.unwrap_or(0),
            out.throttle_entries.unwrap_or(0),
            astra_common::THROTTLE_CAPACITY,
            out.protect_entries.unwrap_or(0),
            astra_common::PROTECT_CAPACITY
        );
        let tiers = out.tiers.as_deref().unwrap_or_default();
        println!(
            "xdp tiers:    allowlist, block, {}flow accounting",
            ["quarantine", "throttle", "protect"]
                .iter()
                .map(|t| match tiers.contains(t) {
                    true => format!("{t}, "),
                    false => format!("({t}: empty, skipped), "),
                })
                .collect::<String>()
        );
    } else {
        println!("maps:         none pinned (no agent has run since boot)");
    }
    match &out.store_error {
        Some(e) => println!("state store:  UNUSABLE: {e}"),
        None => println!(
            "state store:  {} ({} blocks, {} allows, {} quarantines, {} throttles, {} protects; history {} alerts, {} incidents)",
            out.store_path.display(),
            out.stored_blocks,
            out.stored_allows,
            out.stored_quarantines,
            out.stored_throttles,
            out.stored_protects,
            out.history_alerts,
            out.history_incidents
        ),
    }
}
