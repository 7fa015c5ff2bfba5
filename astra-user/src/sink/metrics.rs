//! Prometheus metrics. Kernel counters are cumulative and survive agent restarts (they live in
//! a pinned map), so each poll advances the exported counters to the kernel's totals rather than
//! counting from the agent's start.
use std::collections::HashMap;

use astra_common::{Counter, action};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::flow::PollStats;

/// (direction, action label) of each counter slot that describes a packet outcome.
pub fn action_labels(a: u32) -> Option<(&'static str, &'static str)> {
    Some(match a {
        action::PASS => ("ingress", "pass"),
        action::DROP_BLOCKED => ("ingress", "drop_blocked"),
        action::DROP_BLOCKED_NET => ("ingress", "drop_blocked_prefix"),
        action::PASS_ALLOWLISTED => ("ingress", "pass_allowlisted"),
        action::PARSE_ERROR => ("ingress", "parse_error"),
        action::FRAGMENT => ("ingress", "fragment"),
        action::NON_IP => ("ingress", "non_ip"),
        action::EGRESS_PASS => ("egress", "pass"),
        action::EGRESS_PARSE_ERROR => ("egress", "parse_error"),
        action::EGRESS_FRAGMENT => ("egress", "fragment"),
        action::EGRESS_NON_IP => ("egress", "non_ip"),
        action::DROP_QUARANTINED => ("ingress", "drop_quarantined"),
        action::DROP_THROTTLED => ("ingress", "drop_throttled"),
        action::EGRESS_DROP_QUARANTINED => ("egress", "drop_quarantined"),
        action::DROP_SYN_BUDGET => ("ingress", "drop_syn_budget"),
        action::DROP_REFLECTED => ("ingress", "drop_reflected"),
        action::SYN_COOKIE => ("ingress", "syn_cookie"),
        _ => return None,
    })
}

/// Drop reason of the slots that drop.
pub fn drop_reason(a: u32) -> Option<&'static str> {
    match a {
        action::DROP_BLOCKED => Some("blocked_address"),
        action::DROP_BLOCKED_NET => Some("blocked_prefix"),
        action::DROP_QUARANTINED | action::EGRESS_DROP_QUARANTINED => Some("quarantined"),
        action::DROP_THROTTLED => Some("throttled"),
        action::DROP_SYN_BUDGET => Some("syn_budget"),
        action::DROP_REFLECTED => Some("reflected"),
        _ => None,
    }
}

pub struct Metrics {
    registry: Registry,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    drops: IntCounterVec,
    insert_failures: IntCounterVec,
    flows_active: IntGauge,
    flow_capacity: IntGauge,
    flows_evicted: IntCounterVec,
    list_entries: IntGaugeVec,
    blocklist_entries: IntGauge,
    poll_duration: Histogram,
    polls: IntCounterVec,
    alerts: IntCounterVec,
    auto_blocks: IntCounter,
    auto_actions: IntCounterVec,
    anomaly_score: Histogram,
    conversations: IntGauge,
    top_blocked: IntGaugeVec,
    last_poll: Gauge,
    model_age: Gauge,
    history_rows: IntGaugeVec,
    store_durable: IntGauge,
    attached: IntGaugeVec,
    /// What has been exported so far per (iface, action), to advance counters by the difference.
    exported: HashMap<(String, u32), Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let packets = IntCounterVec::new(
            Opts::new(
                "astra_packets_total",
                "Packets seen by the dataplane, by outcome.",
            ),
            &["iface", "direction", "action"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "astra_bytes_total",
                "Bytes seen by the dataplane, by outcome.",
            ),
            &["iface", "direction", "action"],
        )
        .expect("valid metric");
        let drops = IntCounterVec::new(
            Opts::new(
                "astra_drops_total",
                "Packets dropped in the kernel, by reason.",
            ),
            &["iface", "reason"],
        )
        .expect("valid metric");
        let insert_failures = IntCounterVec::new(
            Opts::new(
                "astra_flow_table_insert_failures_total",
                "New flows that could not be recorded because the flow table was full.",
            ),
            &["iface"],
        )
        .expect("valid metric");
        let flows_active = IntGauge::new(
            "astra_flows_active",
            "Flows currently in the kernel flow table.",
        )
        .expect("valid metric");
        let flow_capacity = IntGauge::new(
            "astra_flow_table_capacity",
            "Size of the kernel flow table (--flow-capacity).",
        )
        .expect("valid metric");
        let flows_evicted = IntCounterVec::new(
            Opts::new(
                "astra_flows_evicted_total",
                "Flows removed from the table by the agent, by timeout.",
            ),
            &["timeout"],
        )
        .expect("valid metric");
        let list_entries = IntGaugeVec::new(
            Opts::new(
                "astra_list_entries",
                "Entries in the kernel lists (block, allow, quarantine, throttle).",
            ),
            &["list"],
        )
        .expect("valid metric");
        let blocklist_entries = IntGauge::new(
            "astra_blocklist_entries",
            "Entries in the kernel blocklist (addresses and prefixes).",
        )
        .expect("valid metric");
        let poll_duration = Histogram::with_opts(
            HistogramOpts::new(
                "astra_poll_duration_seconds",
                "Time to read the flow table and counters once.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid metric");
        let polls = IntCounterVec::new(
            Opts::new("astra_polls_total", "Polls of the kernel maps, by result."),
            &["result"],
        )
        .expect("valid metric");
        let alerts = IntCounterVec::new(
            Opts::new(
                "astra_alerts_total",
                "Alerts raised, by attack type and severity.",
            ),
            &["type", "severity"],
        )
        .expect("valid metric");
        let auto_blocks = IntCounter::new(
            "astra_auto_blocks_total",
            "Sources blocked automatically by the detection engine.",
        )
        .expect("valid metric");
        let auto_actions = IntCounterVec::new(
            Opts::new(
                "astra_auto_actions_total",
                "Kernel entries the detection engine made, by action (block, throttle, quarantine).",
            ),
            &["action"],
        )
        .expect("valid metric");
        let anomaly_score = Histogram::with_opts(
            HistogramOpts::new(
                "astra_anomaly_score",
                "Isolation-forest anomaly scores of sources (0..1, higher = more anomalous).",
            )
            .buckets(vec![0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9]),
        )
        .expect("valid metric");
        let conversations = IntGauge::new(
            "astra_conversations",
            "Conversations the detection windows currently hold.",
        )
        .expect("valid metric");
        let top_blocked = IntGaugeVec::new(
            Opts::new(
                "astra_top_blocked_drops",
                "Packets dropped in the kernel for each of the blocklist entries with the most \
                 drops (at most 20 entries, so the label set stays small).",
            ),
            &["address"],
        )
        .expect("valid metric");
        let last_poll = Gauge::new(
            "astra_last_poll_timestamp_seconds",
            "UNIX time of the last successful poll of the kernel maps.",
        )
        .expect("valid metric");
        let start_time = Gauge::new("astra_start_time_seconds", "UNIX time the agent started.")
            .expect("valid metric");
        start_time.set(crate::clock::now_ms() as f64 / 1e3);
        let model_age = Gauge::new(
            "astra_model_age_seconds",
            "Seconds since the isolation-forest model in use was trained (NaN without a model).",
        )
        .expect("valid metric");
        model_age.set(f64::NAN);
        let history_rows = IntGaugeVec::new(
            Opts::new(
                "astra_history_rows",
                "Rows in the alert and incident history of the state store.",
            ),
            &["table"],
        )
        .expect("valid metric");
        let store_durable = IntGauge::new(
            "astra_store_durable",
            "1 while decisions are written to the state store's file, 0 while the agent runs on \
             an in-memory store because the file is unusable.",
        )
        .expect("valid metric");
        store_durable.set(1);
        let attached = IntGaugeVec::new(
            Opts::new(
                "astra_interface_attached",
                "1 while the agent's programs are attached to the interface, 0 once they were \
                 detached under it.",
            ),
            &["iface"],
        )
        .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new("astra_build_info", "Astra version (value is always 1)."),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Every alert series exists from the start at 0, so rate() and increase() see the
        // first alert of a kind as a rise rather than as a series appearing.
        for t in crate::detect::AttackType::ALL {
            for s in [
                crate::detect::Severity::Low,
                crate::detect::Severity::Medium,
                crate::detect::Severity::High,
                crate::detect::Severity::Critical,
            ] {
                alerts.with_label_values(&[t.as_str(), s.as_str()]);
            }
        }
        for c in [
            Box::new(packets.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(bytes.clone()),
            Box::new(drops.clone()),
            Box::new(insert_failures.clone()),
            Box::new(flows_active.clone()),
            Box::new(flow_capacity.clone()),
            Box::new(flows_evicted.clone()),
            Box::new(list_entries.clone()),
            Box::new(blocklist_entries.clone()),
            Box::new(poll_duration.clone()),
            Box::new(polls.clone()),
            Box::new(alerts.clone()),
            Box::new(auto_blocks.clone()),
            Box::new(auto_actions.clone()),
            Box::new(anomaly_score.clone()),
            Box::new(conversations.clone()),
            Box::new(top_blocked.clone()),
            Box::new(model_age.clone()),
            Box::new(last_poll.clone()),
            Box::new(start_time),
            Box::new(history_rows.clone()),
            Box::new(store_durable.clone()),
            Box::new(attached.clone()),
            Box::new(build),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            packets,
            bytes,
            drops,
            insert_failures,
            flows_active,
            flow_capacity,
            flows_evicted,
            list_entries,
            blocklist_entries,
            poll_duration,
            polls,
            alerts,
            auto_blocks,
            auto_actions,
            anomaly_score,
            conversations,
            top_blocked,
            last_poll,
            model_age,
            history_rows,
            store_durable,
            attached,
            exported: HashMap::new(),
        }
    }

    /// Advances the exported counters of `iface` to the kernel totals in `totals`.
    pub fn observe_counters(&mut self, iface: &str, totals: &[Counter]) {
        for (a, total) in totals.iter().enumerate() {
            let a = a as u32;
            let prev = self.exported.entry((iface.to_owned(), a)).or_default();
            // Totals only go down if the pinned counters were recreated: restart from them.
            let dp = total
                .packets
                .checked_sub(prev.packets)
                .unwrap_or(total.packets);
            let db = total.bytes.checked_sub(prev.bytes).unwrap_or(total.bytes);
            *prev = *total;
            if let Some((dir, label)) = action_labels(a) {
                self.packets
                    .with_label_values(&[iface, dir, label])
                    .inc_by(dp);
                self.bytes
                    .with_label_values(&[iface, dir, label])
                    .inc_by(db);
            }
            if let Some(reason) = drop_reason(a) {
                self.drops.with_label_values(&[iface, reason]).inc_by(dp);
            }
            if a == action::FLOW_INSERT_FAIL {
                self.insert_failures.with_label_values(&[iface]).inc_by(dp);
            }
        }
    }

    pub fn observe_poll(&self, stats: &PollStats, kernel_flows: usize, seconds: f64) {
        self.flows_active.set(kernel_flows as i64);
        self.flows_evicted
            .with_label_values(&["idle"])
            .inc_by(stats.evicted_idle as u64);
        self.flows_evicted
            .with_label_values(&["active"])
            .inc_by(stats.evicted_active as u64);
        self.poll_duration.observe(seconds);
        self.polls.with_label_values(&["ok"]).inc();
        self.last_poll.set(crate::clock::now_ms() as f64 / 1e3);
    }

    pub fn poll_failed(&self) {
        self.polls.with_label_values(&["error"]).inc();
    }

    pub fn set_flow_capacity(&self, n: u32) {
        self.flow_capacity.set(n.into());
    }

    pub fn set_list_entries(&self, counts: &crate::lists::KindCounts) {
        self.blocklist_entries.set(counts.block as i64);
        for kind in crate::store::ListKind::ALL {
            self.list_entries
                .with_label_values(&[kind.as_str()])
                .set(counts.get(kind) as i64);
        }
    }

    /// Pre-creates the label sets of an interface so dashboards and alerts see zeros rather
    /// than missing series before the first packet.
    pub fn register_iface(&self, iface: &str) {
        for a in 0..action::COUNT {
            if let Some((dir, label)) = action_labels(a) {
                self.packets.with_label_values(&[iface, dir, label]);
                self.bytes.with_label_values(&[iface, dir, label]);
            }
            if let Some(reason) = drop_reason(a) {
                self.drops.with_label_values(&[iface, reason]);
            }
        }
        self.insert_failures.with_label_values(&[iface]);
        self.set_attached(iface, true);
    }

    pub fn set_attached(&self, iface: &str, attached: bool) {
        self.attached
            .with_label_values(&[iface])
            .set(i64::from(attached));
    }

    pub fn alert(&self, a: &crate::detect::Alert) {
        self.alerts
            .with_label_values(&[a.attack_type.as_str(), a.severity.as_str()])
            .inc();
    }

    /// One automatic kernel entry: `block`, `throttle` or `quarantine`.
    pub fn auto_action(&self, kind: &str) {
        if kind == "block" {
            self.auto_blocks.inc();
        }
        self.auto_actions.with_label_values(&[kind]).inc();
    }

    pub fn anomaly_score(&self, score: f64) {
        self.anomaly_score.observe(score);
    }

    /// The blocklist entries with the most drops, largest first.
    pub fn set_top_blocked(&self, top: &[(String, u64)]) {
        self.top_blocked.reset();
        for (addr, hits) in top {
            self.top_blocked
                .with_label_values(&[addr.as_str()])
                .set(i64::try_from(*hits).unwrap_or(i64::MAX));
        }
    }

    /// Age of the model in use; NaN while there is none (still learning, or disabled), so
    /// every comparison on it in an alert rule is false rather than the series vanishing.
    pub fn set_model_trained_at(&self, trained_unix: Option<u64>) {
        self.model_age.set(trained_unix.map_or(f64::NAN, |t| {
            (crate::clock::now_ms() as f64 / 1e3 - t as f64).max(0.0)
        }));
    }

    pub fn set_history_rows(&self, alerts: u64, incidents: u64) {
        self.history_rows
            .with_label_values(&["alerts"])
            .set(i64::try_from(alerts).unwrap_or(i64::MAX));
        self.history_rows
            .with_label_values(&["incidents"])
            .set(i64::try_from(incidents).unwrap_or(i64::MAX));
    }

    pub fn set_store_durable(&self, durable: bool) {
        self.store_durable.set(i64::from(durable));
    }

    pub fn set_conversations(&self, n: usize) {
        self.conversations.set(n as i64);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// The CrowdSec bouncer's series, registered beside the agent's; the bouncer's thread
/// updates them itself (the prometheus types are shared handles).
#[derive(Clone)]
pub struct CrowdsecMetrics {
    up: IntGauge,
    last_pull: Gauge,
    decisions: IntGaugeVec,
    pulls: IntCounterVec,
    watcher_up: IntGauge,
    pushed: IntCounter,
    outbox: IntGauge,
}

impl CrowdsecMetrics {
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            up: IntGauge::new(
                "astra_crowdsec_up",
                "1 while the last pull of the CrowdSec LAPI's decision stream succeeded.",
            )
            .expect("valid metric"),
            last_pull: Gauge::new(
                "astra_crowdsec_last_pull_timestamp_seconds",
                "UNIX time of the last successful pull from the CrowdSec LAPI.",
            )
            .expect("valid metric"),
            decisions: IntGaugeVec::new(
                Opts::new(
                    "astra_crowdsec_decisions",
                    "CrowdSec decisions in force in the kernel lists, by origin.",
                ),
                &["origin"],
            )
            .expect("valid metric"),
            pulls: IntCounterVec::new(
                Opts::new(
                    "astra_crowdsec_pulls_total",
                    "Pulls of the CrowdSec decision stream, by result (ok, unreachable, rejected, error).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            watcher_up: IntGauge::new(
                "astra_crowdsec_watcher_up",
                "1 while the last login or push of alerts to the CrowdSec LAPI succeeded.",
            )
            .expect("valid metric"),
            pushed: IntCounter::new(
                "astra_crowdsec_alerts_pushed_total",
                "Alerts the CrowdSec LAPI took from this agent.",
            )
            .expect("valid metric"),
            outbox: IntGauge::new(
                "astra_crowdsec_outbox",
                "Alerts waiting in the state store for the CrowdSec LAPI.",
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.last_pull.clone()),
            Box::new(m.decisions.clone()),
            Box::new(m.pulls.clone()),
            Box::new(m.watcher_up.clone()),
            Box::new(m.pushed.clone()),
            Box::new(m.outbox.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        m
    }

    /// A successful pull, and the decisions now in force by origin.
    pub fn pulled(&self, result: &str, by_origin: &std::collections::BTreeMap<String, usize>) {
        self.up.set(1);
        self.last_pull.set(crate::clock::now_ms() as f64 / 1e3);
        self.pulls.with_label_values(&[result]).inc();
        self.decisions.reset();
        for (origin, n) in by_origin {
            self.decisions
                .with_label_values(&[origin.as_str()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Alerts the LAPI took.
    pub fn pushed(&self, n: usize) {
        self.pushed.inc_by(n as u64);
    }

    /// The watcher's state after a round.
    pub fn set_watcher(&self, up: bool, queued: u64) {
        self.watcher_up.set(i64::from(up));
        self.outbox.set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    /// A failed pull: what the kernel holds stays, so the decision gauges do too.
    pub fn failed(&self, result: &str) {
        self.up.set(0);
        self.pulls.with_label_values(&[result]).inc();
    }
}

pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding to a Vec cannot fail");
    String::from_utf8(buf).expect("prometheus text format is UTF-8")
}

/// One interface's counters with `pass` packets passed and `drop` dropped as blocked, 60
/// bytes each, for the tests of what reads counters.
#[cfg(test)]
pub(crate) fn test_counters(pass: u64, drop: u64) -> Vec<Counter> {
    let mut t = vec![Counter::default(); action::COUNT as usize];
    t[action::PASS as usize] = Counter {
        packets: pass,
        bytes: pass * 60,
    };
    t[action::DROP_BLOCKED as usize] = Counter {
        packets: drop,
        bytes: drop * 60,
    };
    t
}

#[cfg(test)]
mod tests {
    use super::{test_counters as totals, *};

    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
    }

    #[test]
    fn counters_follow_kernel_totals() {
        let mut m = Metrics::new();
        m.observe_counters("eth0", &totals(5, 2));
        m.observe_counters("eth0", &totals(12, 2));
        let t = m.render();
        assert_eq!(
            value(
                &t,
                r#"astra_packets_total{action="pass",direction="ingress",iface="eth0"}"#
            ),
            12.0
        );
        assert_eq!(
            value(
                &t,
                r#"astra_drops_total{iface="eth0",reason="blocked_address"}"#
            ),
            2.0
        );
        // Recreated kernel counters restart from the new totals instead of going backwards.
        m.observe_counters("eth0", &totals(3, 2));
        let t = m.render();
        assert_eq!(
            value(
                &t,
                r#"astra_packets_total{action="pass",direction="ingress",iface="eth0"}"#
            ),
            15.0
        );
    }

    #[test]
    fn every_packet_outcome_has_a_label() {
        for a in [
            action::PASS,
            action::DROP_BLOCKED,
            action::DROP_BLOCKED_NET,
            action::PASS_ALLOWLISTED,
            action::PARSE_ERROR,
            action::FRAGMENT,
            action::NON_IP,
            action::EGRESS_PASS,
            action::EGRESS_PARSE_ERROR,
            action::EGRESS_FRAGMENT,
            action::EGRESS_NON_IP,
        ] {
            assert!(action_labels(a).is_some(), "action {a}");
        }
        assert!(action_labels(action::FLOW_INSERT_FAIL).is_none());
    }
}
