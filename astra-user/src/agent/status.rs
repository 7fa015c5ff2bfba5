//! What the agent reports about itself and the kernel state: its status file, and the status
//! and flow reports that `astra status`/`astra flows` and the API's `/status`/`/flows` both
//! render (one builder, so the two always answer alike).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    clock::{mono_now_ns, mono_to_unix, now_unix, rfc3339_seconds},
    dataplane::{AttachedMode, ifname, maps::PinnedMaps},
    detect::model::ModelStatus,
    error::{Error, Result},
    flow::{BiFlow, pair_flows, proto_name},
    lists::Lists,
    store::{ListKind, Store},
};

/// Written to `<state-dir>/agent.json` after start-up and after every poll, for `astra status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub version: String,
    pub started_at: u64,
    pub pin_dir: PathBuf,
    pub metrics_addr: String,
    #[serde(default)]
    pub api_addr: String,
    pub poll_interval_ms: u64,
    pub flow_capacity: u32,
    pub interfaces: Vec<IfaceStatus>,
    pub last_poll_at: Option<u64>,
    pub last_poll_ms: Option<f64>,
    pub flows_active: usize,
    pub running: bool,
    pub events_path: PathBuf,
    pub dry_run: bool,
    pub alerts: u64,
    pub auto_blocks: u64,
    pub model: Option<ModelStatus>,
    /// Why the state store is not in use (the agent then keeps decisions in memory only).
    #[serde(default)]
    pub store_error: Option<String>,
    /// The CrowdSec bouncer's state, when one runs.
    #[serde(default)]
    pub crowdsec: Option<crate::agent::crowdsec::BouncerStatus>,
    /// The CrowdSec watcher's state, when one runs.
    #[serde(default)]
    pub crowdsec_watcher: Option<crate::agent::crowdsec::WatcherStatus>,
    /// What the interfaces saw, as of the last poll.
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// The monotonic time of the last poll, for the rates (not written out).
    #[serde(skip)]
    pub last_poll_at_ns: Option<u64>,
}

/// The kernel's counters over every attached interface (both directions): totals since the
/// maps were created, and rates over the last poll interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// Packets dropped in the kernel, for any reason.
    pub dropped: u64,
    pub packets_per_s: f64,
    pub bits_per_s: f64,
    pub dropped_per_s: f64,
}

impl Traffic {
    /// Totals from per-interface counters, with rates against `prev` taken `secs` earlier.
    pub fn from_counters(
        per_iface: &[&[astra_common::Counter]],
        prev: Option<&Traffic>,
        secs: f64,
    ) -> Traffic {
        let mut t = Traffic::default();
        for counters in per_iface {
            for (a, c) in counters.iter().enumerate() {
                if crate::sink::metrics::action_labels(a as u32).is_none() {
                    continue;
                }
                t.packets += c.packets;
                t.bytes += c.bytes;
                if crate::sink::metrics::drop_reason(a as u32).is_some() {
                    t.dropped += c.packets;
                }
            }
        }
        if let Some(p) = prev.filter(|_| secs > 0.0) {
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
            t.packets_per_s = rate(t.packets, p.packets);
            t.bits_per_s = rate(t.bytes, p.bytes) * 8.0;
            t.dropped_per_s = rate(t.dropped, p.dropped);
        }
        t
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IfaceStatus {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachedMode,
    pub egress: bool,
}

pub const STATUS_FILE: &str = "agent.json";

impl AgentStatus {
    pub fn read(state_dir: &Path) -> Option<AgentStatus> {
        let path = state_dir.join(STATUS_FILE);
        let text =
            crate::limits::read_capped(&path, crate::limits::SMALL_FILE, "status file").ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Whether the recorded agent process still runs.
    pub fn alive(&self) -> bool {
        if !self.running {
            return false;
        }
        // SAFETY: signal 0 only checks the pid exists and we may signal it.
        unsafe { libc::kill(self.pid as libc::pid_t, 0) == 0 }
    }

    pub(crate) fn write(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(STATUS_FILE);
        let text = serde_json::to_vec_pretty(self).expect("status serialises");
        crate::files::replace(&path, &text, crate::files::PRIVATE).map_err(|e| Error::io(&path, e))
    }
}

#[derive(Serialize)]
pub struct StatusReport {
    pub agent_running: bool,
    pub agent: Option<AgentStatus>,
    pub pin_dir: PathBuf,
    pub maps_pinned: bool,
    pub layout_version: u32,
    pub flows: Option<u64>,
    pub flow_capacity: Option<u32>,
    pub block_entries: Option<u64>,
    pub allow_entries: Option<u64>,
    pub quarantine_entries: Option<u64>,
    pub throttle_entries: Option<u64>,
    pub protect_entries: Option<u64>,
    /// Which optional tiers the dataplane consults (`quarantine`, `throttle`, `protect`): those holding
    /// entries.
    pub tiers: Option<Vec<&'static str>>,
    pub stored_blocks: u64,
    pub stored_allows: u64,
    pub stored_quarantines: u64,
    pub stored_throttles: u64,
    pub stored_protects: u64,
    /// Rows in the alert and incident history.
    pub history_alerts: u64,
    pub history_incidents: u64,
    /// Why the state store cannot be read (the kernel state above is still shown).
    pub store_error: Option<String>,
    pub store_path: PathBuf,
}

/// What `astra status` shows: the agent's own report plus what the maps and `store` hold now.
/// `store_error` says why `store` is not the state dir's database; a degraded resilient store
/// (the agent's) says so itself.
pub fn status_report(
    pin_dir: &Path,
    state_dir: &Path,
    store: Store,
    store_error: Option<String>,
) -> Result<StatusReport> {
    let store_error = store_error.or_else(|| store.degraded());
    let (history_alerts, history_incidents) = crate::sink::history::counts(&store)?;
    let maps = PinnedMaps::open(pin_dir)?;
    let agent = AgentStatus::read(state_dir);
    let running = agent.as_ref().is_some_and(AgentStatus::alive);
    let (flows, cap) = match &maps {
        Some(m) => {
            let mut raw = Vec::new();
            m.read_flows(&mut raw)?;
            (Some(raw.len() as u64), Some(m.flow_capacity()?))
        }
        None => (None, None),
    };
    let maps_pinned = maps.is_some();
    let tiers = match &maps {
        Some(m) => {
            let bits = m.tiers()?;
            let names = [
                (astra_common::tier::QUARANTINE, "quarantine"),
                (astra_common::tier::THROTTLE, "throttle"),
                (astra_common::tier::PROTECT, "protect"),
            ];
            Some(
                names
                    .into_iter()
                    .filter(|(b, _)| bits & b != 0)
                    .map(|(_, n)| n)
                    .collect(),
            )
        }
        None => None,
    };
    let lists = Lists::from_parts(store, maps);
    let counts = lists.kernel_counts();
    let out = StatusReport {
        agent_running: running,
        agent,
        pin_dir: pin_dir.to_owned(),
        maps_pinned,
        layout_version: astra_common::LAYOUT_VERSION,
        flows,
        flow_capacity: cap,
        block_entries: maps_pinned.then_some(counts.block),
        allow_entries: maps_pinned.then_some(counts.allow),
        quarantine_entries: maps_pinned.then_some(counts.quarantine),
        throttle_entries: maps_pinned.then_some(counts.throttle),
        protect_entries: maps_pinned.then_some(counts.protect),
        tiers,
        stored_blocks: lists.store().count(ListKind::Block)?,
        stored_allows: lists.store().count(ListKind::Allow)?,
        stored_quarantines: lists.store().count(ListKind::Quarantine)?,
        stored_throttles: lists.store().count(ListKind::Throttle)?,
        stored_protects: lists.store().count(ListKind::Protect)?,
        history_alerts,
        history_incidents,
        store_error,
        store_path: lists.store().path(),
    };
    Ok(out)
}

#[derive(Serialize)]
pub struct FlowReport {
    #[serde(flatten)]
    pub flow: BiFlow,
    pub proto_name: String,
    pub iface: String,
    pub first_seen: String,
    pub last_seen: String,
}

/// The `top` largest flows, both directions paired.
/// Which conversations a flow report keeps: either end in `net`, either port `port`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowMatch {
    pub net: Option<ipnet::IpNet>,
    pub port: Option<u16>,
}

impl FlowMatch {
    pub fn matches(&self, f: &BiFlow) -> bool {
        self.net
            .is_none_or(|n| n.contains(&f.src) || n.contains(&f.dst))
            && self.port.is_none_or(|p| f.src_port == p || f.dst_port == p)
    }
}

pub fn flows_report(pin_dir: &Path, state_dir: &Path, top: usize) -> Result<Vec<FlowReport>> {
    flows_matching(pin_dir, state_dir, top, FlowMatch::default())
}

/// The `top` largest conversations of the kernel table that `m` keeps.
pub fn flows_matching(
    pin_dir: &Path,
    state_dir: &Path,
    top: usize,
    m: FlowMatch,
) -> Result<Vec<FlowReport>> {
    let agent_ifaces = AgentStatus::read(state_dir)
        .map(|s| s.interfaces)
        .unwrap_or_default();
    let Some(maps) = PinnedMaps::open(pin_dir)? else {
        return Err(Error::Usage(format!(
            "no maps pinned in {}: start the agent with `astra run --iface IF`",
            pin_dir.display()
        )));
    };
    let mut raw = Vec::new();
    maps.read_flows(&mut raw)?;
    let mut flows = pair_flows(raw.iter().map(|(k, v)| (k, v)));
    flows.retain(|f| m.matches(f));
    flows.sort_by(|a, b| {
        b.total_bytes()
            .cmp(&a.total_bytes())
            .then(b.last_seen_ns.cmp(&a.last_seen_ns))
    });
    flows.truncate(top);
    let (now, mono) = (now_unix(), mono_now_ns());
    let out: Vec<FlowReport> = flows
        .into_iter()
        .map(|f| FlowReport {
            proto_name: proto_name(f.proto),
            iface: agent_ifaces
                .iter()
                .find(|i| i.ifindex == f.ifindex)
                .map(|i| i.iface.clone())
                .or_else(|| ifname(f.ifindex))
                .unwrap_or_else(|| format!("if{}", f.ifindex)),
            first_seen: rfc3339_seconds(mono_to_unix(f.first_seen_ns, now, mono)),
            last_seen: rfc3339_seconds(mono_to_unix(f.last_seen_ns, now, mono)),
            flow: f,
        })
        .collect();
    Ok(out)
}

/// What `/api/v1/stats` answers: the dashboard's headline numbers in one request.
#[derive(Serialize)]
pub struct StatsReport {
    pub agent_running: bool,
    /// Totals and rates as of the agent's last poll; `None` before one.
    pub traffic: Option<Traffic>,
    pub last_poll_at: Option<u64>,
    pub flows_active: Option<usize>,
    pub flow_capacity: Option<u32>,
    /// Alerts and automatic blocks since the agent started.
    pub alerts: u64,
    pub auto_blocks: u64,
    /// Rows in the history.
    pub history_alerts: u64,
    pub history_incidents: u64,
    /// Entries in the kernel lists, when maps are pinned.
    pub lists: Option<crate::lists::KindCounts>,
}

pub fn stats_report(pin_dir: &Path, state_dir: &Path, store: &Store) -> Result<StatsReport> {
    let agent = AgentStatus::read(state_dir);
    let running = agent.as_ref().is_some_and(AgentStatus::alive);
    let (history_alerts, history_incidents) = crate::sink::history::counts(store)?;
    let maps = PinnedMaps::open(pin_dir)?;
    let lists = maps
        .is_some()
        .then(|| Lists::from_parts(store.clone(), maps).kernel_counts());
    Ok(StatsReport {
        agent_running: running,
        traffic: agent.as_ref().and_then(|a| a.traffic.clone()),
        last_poll_at: agent.as_ref().and_then(|a| a.last_poll_at),
        flows_active: agent.as_ref().map(|a| a.flows_active),
        flow_capacity: agent.as_ref().map(|a| a.flow_capacity),
        alerts: agent.as_ref().map_or(0, |a| a.alerts),
        auto_blocks: agent.as_ref().map_or(0, |a| a.auto_blocks),
        history_alerts,
        history_incidents,
        lists,
    })
}

/// One source's share of the live traffic: what `/api/v1/top-talkers` lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Talker {
    pub addr: std::net::IpAddr,
    /// Live conversations it opened.
    pub conversations: u64,
    /// Distinct addresses it talks to.
    pub peers: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
}

/// The `top` sources of the live conversations in the kernel flow table, by bytes both ways.
pub fn top_talkers(pin_dir: &Path, top: usize) -> Result<Vec<Talker>> {
    let Some(maps) = PinnedMaps::open(pin_dir)? else {
        return Err(Error::Usage(format!(
            "no maps pinned in {}: start the agent with `astra run --iface IF`",
            pin_dir.display()
        )));
    };
    let mut raw = Vec::new();
    maps.read_flows(&mut raw)?;
    Ok(talkers(&pair_flows(raw.iter().map(|(k, v)| (k, v))), top))
}

/// The `top` sources of `flows` by bytes both ways.
pub fn talkers(flows: &impl crate::flow::Conversations, top: usize) -> Vec<Talker> {
    let mut by: std::collections::HashMap<
        std::net::IpAddr,
        (Talker, std::collections::HashSet<std::net::IpAddr>),
    > = std::collections::HashMap::new();
    for i in 0..flows.len() as u32 {
        let f = flows.get(i);
        let (t, peers) = by.entry(f.src).or_insert_with(|| {
            (
                Talker {
                    addr: f.src,
                    conversations: 0,
                    peers: 0,
                    packets_sent: 0,
                    bytes_sent: 0,
                    packets_received: 0,
                    bytes_received: 0,
                },
                Default::default(),
            )
        });
        t.conversations += 1;
        t.packets_sent += f.fwd.packets;
        t.bytes_sent += f.fwd.bytes;
        t.packets_received += f.rev.packets;
        t.bytes_received += f.rev.bytes;
        peers.insert(f.dst);
    }
    let mut out: Vec<Talker> = by
        .into_values()
        .map(|(mut t, peers)| {
            t.peers = peers.len() as u64;
            t
        })
        .collect();
    out.sort_by(|a, b| {
        (b.bytes_sent + b.bytes_received)
            .cmp(&(a.bytes_sent + a.bytes_received))
            .then(a.addr.cmp(&b.addr))
    });
    out.truncate(top);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talkers_add_up_their_conversations_largest_first() {
        use crate::features::tests::udp;
        let flows = vec![
            udp("198.18.0.1", "198.18.1.1", 5000, 53, 10, 1),
            udp("198.18.0.1", "198.18.1.2", 5001, 53, 10, 1),
            udp("198.18.0.2", "198.18.1.1", 40000, 123, 1, 1),
        ];
        let got = talkers(&flows, 10);
        assert_eq!(got.len(), 2);
        let first = &got[0];
        assert_eq!(
            first.addr,
            "198.18.0.1".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!((first.conversations, first.peers), (2, 2));
        assert_eq!(first.packets_sent, 20);
        assert_eq!(talkers(&flows, 1).len(), 1);
    }
}
