//! `astra block`, `unblock`, `allow` and `list`: the lists by hand.
use std::{path::Path, time::Duration};

use ipnet::IpNet;
use serde::Serialize;

use super::{
    KindArg,
    render::{fmt_secs, fmt_time, print_json, table},
};
use crate::{
    agent::status::AgentStatus,
    clock::now_unix,
    error::{Error, Result},
    lists::{Added, Enforcement, ListRow, Lists},
    store::ListKind,
};

/// `astra block NET`.
pub fn block(
    pin_dir: &Path,
    state_dir: &Path,
    net: IpNet,
    ttl: Option<Duration>,
    reason: &str,
    force: bool,
    json: bool,
) -> Result<()> {
    crate::addr::check_not_everything(&net, ListKind::Block.everything_warning(), force)?;
    crate::limits::check_reason(reason)?;
    let ttl = ttl.filter(|d| !d.is_zero());
    let mut lists = Lists::open(state_dir, pin_dir)?;
    let added = lists.add_manual(ListKind::Block, net, ttl, reason)?;
    report_added(json, "blocked", &added)
}

/// `astra unblock NET`.
pub fn unblock(pin_dir: &Path, state_dir: &Path, net: IpNet, json: bool) -> Result<()> {
    let mut lists = Lists::open(state_dir, pin_dir)?;
    if !lists.remove(ListKind::Block, &net)? {
        return Err(Error::Usage(format!("{net} is not blocked")));
    }
    report_change(json, "unblocked", &net, None, &Enforcement::InKernel, None)
}

/// `astra allow NET [--remove]`.
pub fn allow(
    pin_dir: &Path,
    state_dir: &Path,
    net: IpNet,
    remove: bool,
    reason: &str,
    force: bool,
    json: bool,
) -> Result<()> {
    if !remove {
        crate::addr::check_not_everything(&net, ListKind::Allow.everything_warning(), force)?;
        crate::limits::check_reason(reason)?;
    }
    let mut lists = Lists::open(state_dir, pin_dir)?;
    if remove {
        if !lists.remove(ListKind::Allow, &net)? {
            return Err(Error::Usage(format!("{net} is not allowlisted")));
        }
        return report_change(
            json,
            "removed from allowlist",
            &net,
            None,
            &Enforcement::InKernel,
            None,
        );
    }
    let added = lists.add_manual(ListKind::Allow, net, None, reason)?;
    report_added(json, "allowlisted", &added)
}

/// `astra list [--kind K] [--limit N] [--offset M]`.
pub fn list(
    pin_dir: &Path,
    state_dir: &Path,
    kind: Option<KindArg>,
    limit: Option<u64>,
    offset: Option<u64>,
    json: bool,
) -> Result<()> {
    let lists = Lists::open(state_dir, pin_dir)?;
    let kind = kind.map(ListKind::from);
    let rows: Vec<ListRow> = match (kind, limit, offset) {
        // A page: what the API serves, so a million-entry list need not be read whole.
        (Some(k), l, o) if l.is_some() || o.is_some() => {
            lists
                .list_page(k, o.unwrap_or(0), l.unwrap_or(u64::MAX), None)?
                .0
        }
        _ => lists
            .list()?
            .into_iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .collect(),
    };
    if json {
        print_json(&rows)
    } else {
        print_list(&rows);
        Ok(())
    }
}

#[derive(Serialize)]
struct Change<'a> {
    action: &'a str,
    net: String,
    expires_at: Option<u64>,
    in_kernel: bool,
    allowlisted_by: Option<String>,
}

pub(super) fn report_added(json: bool, action: &str, a: &Added) -> Result<()> {
    let enf = match a.in_kernel {
        true => Enforcement::InKernel,
        false => Enforcement::StoredOnly,
    };
    let e = &a.entry;
    report_change(json, action, &e.net, e.expires_at, &enf, a.allowlisted_by)
}

pub(super) fn report_change(
    json: bool,
    action: &str,
    net: &IpNet,
    expires_at: Option<u64>,
    enf: &Enforcement,
    allowed_by: Option<IpNet>,
) -> Result<()> {
    if json {
        return print_json(&Change {
            action,
            net: net.to_string(),
            expires_at,
            in_kernel: *enf == Enforcement::InKernel,
            allowlisted_by: allowed_by.map(|n| n.to_string()),
        });
    }
    let ttl = match expires_at {
        Some(t) => format!(" for {}", fmt_secs(t.saturating_sub(now_unix()))),
        None if matches!(action, "blocked" | "quarantined") => " permanently".into(),
        None => String::new(),
    };
    let state = match enf {
        Enforcement::InKernel => "in force now",
        Enforcement::StoredOnly => {
            "stored; no agent has run since boot, it applies when `astra run` starts"
        }
    };
    println!("{action} {net}{ttl} ({state})");
    if let Some(a) = allowed_by {
        println!("note: {a} is allowlisted, so matching packets keep passing");
    }
    Ok(())
}

fn print_list(rows: &[ListRow]) {
    if rows.is_empty() {
        println!("no list entries");
        return;
    }
    let mut t = table(&[
        "LIST", "ADDRESS", "TTL", "REASON", "SOURCE", "HITS", "CREATED", "KERNEL",
    ]);
    for r in rows {
        let kind = match (&r.protect, &r.rate, r.dropped) {
            (Some(p), Some(rate), dropped) => format!(
                "{} {p}, {} new SYNs/s, {} dropped",
                r.kind,
                rate.pps,
                dropped.unwrap_or(0)
            ),
            (_, Some(rate), dropped) => {
                format!("{} {rate}, {} dropped", r.kind, dropped.unwrap_or(0))
            }
            _ => r.kind.to_string(),
        };
        t.add_row(vec![
            kind,
            r.net.to_string(),
            r.ttl_remaining_s.map_or("permanent".into(), fmt_secs),
            if r.reason.is_empty() {
                "-".into()
            } else {
                // Feed comments are kept as they came; a terminal must not run them.
                crate::text::escape_controls(&r.reason).into_owned()
            },
            r.source.to_string(),
            r.hits.to_string(),
            fmt_time(r.created_at),
            if r.in_kernel {
                "yes".into()
            } else {
                "pending".into()
            },
        ]);
    }
    println!("{t}");
}

/// Refuses a list command whose pin dir is not the one the state dir's running agent uses: the
/// change would be stored but never reach the kernel maps the agent enforces (a mistyped
/// `--pin-dir` used to be reported as "stored; applies at start").
pub fn check_agent_pin_dir(pin_dir: &Path, state_dir: &Path) -> Result<()> {
    let Some(agent) = AgentStatus::read(state_dir).filter(AgentStatus::alive) else {
        return Ok(());
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(&agent.pin_dir, pin_dir) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the agent (pid {}) using state dir {} runs with --pin-dir {}, not {}: pass its pin dir",
        agent.pid,
        state_dir.display(),
        agent.pin_dir.display(),
        pin_dir.display()
    )))
}
