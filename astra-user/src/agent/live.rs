//! What the web UI shows live: one sample of the kernel's counters per poll (rates by interface,
//! direction and action), kept for the last 15 minutes, and a broadcast of every sample, alert,
//! list change and top-talker summary to the UI's event streams (`/api/v1/stream`).
//!
//! Frames are serialised once, on the poll thread, and shared by every subscriber. A
//! subscriber that falls behind by more than [`BACKLOG`] frames is told to resync instead of
//! holding the frames back, so a stalled browser costs the agent nothing.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::{agent::status::Talker, detect::Alert};

/// How far back the charts reach.
pub const WINDOW_MS: u64 = 15 * 60 * 1000;
/// Samples kept at most, whatever the poll interval (15 minutes at 250 ms).
pub const MAX_SAMPLES: usize = 3600;
/// Frames a subscriber may lag behind before it is told to resync.
pub const BACKLOG: usize = 256;

/// One interface's rate for one action over the last poll interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rate {
    pub iface: String,
    /// `ingress` or `egress`.
    pub dir: &'static str,
    pub action: &'static str,
    /// The drop reason, for the actions that drop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<&'static str>,
    pub pps: f64,
    pub bps: f64,
}

/// One poll: what the charts plot.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// UNIX milliseconds.
    pub t: u64,
    /// Non-zero rates only.
    pub rates: Vec<Rate>,
    pub flows_active: usize,
    pub poll_ms: f64,
    /// Alerts this poll's pass raised, by attack type.
    pub alerts: BTreeMap<String, u32>,
}

/// A message on the stream: its SSE event name and JSON data.
#[derive(Clone, Debug)]
pub struct Frame {
    pub event: &'static str,
    pub data: Arc<str>,
}

/// The live state, shared by the poll thread (which writes) and the API (which reads and
/// subscribes).
pub struct Live {
    /// Each sample's time (UNIX ms) and its JSON.
    samples: Mutex<VecDeque<(u64, Arc<str>)>>,
    /// The previous poll's counters per interface, and when they were read (monotonic ns).
    prev: Mutex<Option<(u64, Vec<Vec<astra_common::Counter>>)>>,
    tx: broadcast::Sender<Frame>,
    /// Subscribers at the last summary, so a new one gets a summary at the next poll rather
    /// than after the next list scan.
    summarised_for: std::sync::atomic::AtomicUsize,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            samples: Mutex::new(VecDeque::new()),
            prev: Mutex::new(None),
            tx: broadcast::channel(BACKLOG).0,
            summarised_for: Default::default(),
        }
    }
}

impl Live {
    /// Whether any UI listens: the summaries that cost a pass over the flow table are made
    /// only then.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Whether a subscriber came since the last summary.
    pub fn newly_watched(&self) -> bool {
        self.tx.receiver_count()
            > self
                .summarised_for
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.tx.subscribe()
    }

    /// The samples of the last 15 minutes, oldest first, as one JSON array.
    pub fn history(&self) -> String {
        let samples = self.samples.lock().expect("live lock");
        let mut out =
            String::with_capacity(samples.iter().map(|(_, s)| s.len() + 1).sum::<usize>() + 2);
        out.push('[');
        for (i, (_, s)) in samples.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(s);
        }
        out.push(']');
        out
    }

    /// Records one poll: rates from the counters against the previous poll's, then the sample
    /// into the window and onto the stream. `counters` is one slice per attached interface, in
    /// the same order every poll.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        now_ms: u64,
        now_ns: u64,
        counters: &[(&str, &[astra_common::Counter])],
        flows_active: usize,
        poll_ms: f64,
        alerts: &[Alert],
    ) {
        let mut prev = self.prev.lock().expect("live lock");
        let mut rates = Vec::new();
        if let Some((then_ns, before)) = prev.as_ref()
            && *then_ns < now_ns
            && before.len() == counters.len()
        {
            let secs = (now_ns - then_ns) as f64 / 1e9;
            for ((iface, now), before) in counters.iter().zip(before) {
                for (a, (c, b)) in now.iter().zip(before).enumerate() {
                    let Some((dir, action)) = crate::sink::metrics::action_labels(a as u32) else {
                        continue;
                    };
                    let packets = c.packets.saturating_sub(b.packets);
                    if packets == 0 {
                        continue;
                    }
                    rates.push(Rate {
                        iface: (*iface).to_owned(),
                        dir,
                        action,
                        drop: crate::sink::metrics::drop_reason(a as u32),
                        pps: packets as f64 / secs,
                        bps: c.bytes.saturating_sub(b.bytes) as f64 * 8.0 / secs,
                    });
                }
            }
        }
        *prev = Some((now_ns, counters.iter().map(|(_, c)| c.to_vec()).collect()));
        drop(prev);
        let mut by_type = BTreeMap::new();
        for a in alerts {
            *by_type.entry(a.attack_type.to_string()).or_insert(0) += 1;
        }
        let sample = Sample {
            t: now_ms,
            rates,
            flows_active,
            poll_ms,
            alerts: by_type,
        };
        let data: Arc<str> = serde_json::to_string(&sample)
            .expect("a sample serialises")
            .into();
        {
            let mut samples = self.samples.lock().expect("live lock");
            samples.push_back((now_ms, data.clone()));
            while samples.len() > MAX_SAMPLES
                || samples.front().is_some_and(|(t, _)| t + WINDOW_MS < now_ms)
            {
                samples.pop_front();
            }
        }
        self.send("sample", data);
        for a in alerts {
            if let Ok(json) = serde_json::to_string(a) {
                self.send("alert", json.into());
            }
        }
    }

    /// Says that a list changed (the UI re-reads the page it shows).
    pub fn lists_changed(&self, what: &str) {
        if self.watched() {
            self.send(
                "lists",
                serde_json::json!({ "changed": what }).to_string().into(),
            );
        }
    }

    /// The top talkers and the top blocked sources, when a UI listens.
    pub fn summary(&self, talkers: &[Talker], blocked: Option<&[(String, u64)]>) {
        let blocked = blocked.map(|b| {
            b.iter()
                .map(|(net, hits)| serde_json::json!({ "net": net, "hits": hits }))
                .collect::<Vec<_>>()
        });
        self.summarised_for.store(
            self.tx.receiver_count(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let data = serde_json::json!({ "talkers": talkers, "blocked": blocked });
        self.send("summary", data.to_string().into());
    }

    fn send(&self, event: &'static str, data: Arc<str>) {
        // No subscriber is not an error: the UI may simply be closed.
        let _ = self.tx.send(Frame { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::metrics::test_counters as counters;

    #[test]
    fn samples_are_rates_between_polls_kept_for_the_window() {
        let live = Live::default();
        let mut rx = live.subscribe();
        let c0 = counters(1000, 0);
        live.observe(1_000, 1_000_000_000, &[("eth0", &c0)], 3, 1.5, &[]);
        let c1 = counters(3000, 500);
        let alert = crate::detect::sample_alert("a1", 2_000);
        live.observe(2_000, 3_000_000_000, &[("eth0", &c1)], 4, 2.0, &[alert]);
        let history: Vec<serde_json::Value> = serde_json::from_str(&live.history()).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(
            history[0]["rates"].as_array().unwrap().len(),
            0,
            "no rate without a previous poll"
        );
        let rates = history[1]["rates"].as_array().unwrap();
        assert_eq!(rates.len(), 2);
        let pass = rates.iter().find(|r| r["action"] == "pass").unwrap();
        assert_eq!(pass["pps"], 1000.0, "2000 packets over 2 s");
        assert_eq!(pass["bps"], 480_000.0, "60-byte packets");
        assert!(pass.get("drop").is_none());
        let dropped = rates
            .iter()
            .find(|r| r["action"] == "drop_blocked")
            .unwrap();
        assert_eq!(dropped["drop"], "blocked_address");
        assert_eq!(dropped["pps"], 250.0);
        assert_eq!(history[1]["alerts"]["port_scan"], 1);
        let events: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| f.event)
            .collect();
        assert_eq!(events, ["sample", "sample", "alert"]);
        // Past the window, the first samples leave.
        live.observe(
            1_000 + WINDOW_MS + 1,
            4_000_000_000,
            &[("eth0", &c1)],
            4,
            2.0,
            &[],
        );
        let history: Vec<serde_json::Value> = serde_json::from_str(&live.history()).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0]["t"], 2_000);
    }

    #[test]
    fn a_slow_subscriber_is_told_to_resync_and_costs_nothing() {
        let live = Live::default();
        let mut rx = live.subscribe();
        let c = counters(0, 0);
        for i in 0..(BACKLOG as u64 + 10) {
            live.observe(i, i + 1, &[("eth0", &c)], 0, 0.0, &[]);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        assert!(live.samples.lock().unwrap().len() <= MAX_SAMPLES);
    }
}
