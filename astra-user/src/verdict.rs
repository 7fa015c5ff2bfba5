//! Policy: what to do about an alert. Confidence decides between block, flag and record;
//! repeat offenders get longer blocks (like fail2ban's bantime.increment); the host's own and
//! allowlisted addresses are never blocked; new automatic blocks are capped per minute. Where
//! configured, the flag band throttles sources per attack type, and an inside host caught
//! exfiltrating is quarantined. A target-side alert (a flood from spoofed or countless
//! sources) protects the target in the kernel when it is one of ours.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    detect::{Action, Alert, AttackType},
    store::Rate,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Confidence at which a source is blocked.
    pub block_confidence: f64,
    /// Confidence at which an alert is flagged for review.
    pub flag_confidence: f64,
    /// First automatic block of a source.
    #[serde(with = "humantime_serde")]
    pub block_ttl: Duration,
    /// Each further block of the same source lasts this many times longer...
    pub ttl_factor: f64,
    /// ...up to this.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// New automatic blocks allowed per minute; beyond it alerts say the cap was reached.
    pub max_blocks_per_minute: usize,
    /// Alert, but never block.
    pub dry_run: bool,
    /// The same attack from the same source is not re-alerted within this, unless its
    /// confidence rose.
    #[serde(with = "humantime_serde")]
    pub realert_after: Duration,
    /// Rates to hold a source to when its alert is in the flag band (confident enough to flag,
    /// not to block), per attack type: e.g. `{"port_scan": "50pps", "udp_flood":
    /// "1kpps+20mbit"}`. Types not named are only flagged.
    pub throttle: BTreeMap<AttackType, String>,
    /// How long an automatic throttle lasts.
    #[serde(with = "humantime_serde")]
    pub throttle_ttl: Duration,
    /// Quarantine an inside host (one in `rules.home_net`; never this host, never an
    /// allowlisted one) whose exfiltration alert reaches `block_confidence`. Off by default:
    /// cutting off an inside host is the operator's call to delegate.
    pub quarantine_exfiltration: bool,
    #[serde(with = "humantime_serde")]
    pub quarantine_ttl: Duration,
    /// Protect a target of this host (its own address, or one in `rules.home_net`) that a
    /// target-side alert names: new SYNs from strangers held to `protect_syn_budget`, answers
    /// to requests it never sent dropped. Established connections are never touched.
    pub protect_targets: bool,
    /// How long a protection lasts after its last drop: the agent extends it while the
    /// kernel keeps dropping, so it ends on its own this long after the flood.
    #[serde(with = "humantime_serde")]
    pub protect_ttl: Duration,
    /// New SYNs a second a protected target accepts from sources not known to complete
    /// handshakes.
    pub protect_syn_budget: u64,
    /// Answer strangers' new SYNs to an automatically protected target with SYN cookies from
    /// XDP instead of the budget (needs nftables, whose SYNPROXY completes the handshakes).
    pub protect_syn_cookies: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            block_confidence: 0.9,
            flag_confidence: 0.6,
            block_ttl: Duration::from_secs(600),
            ttl_factor: 2.0,
            max_ttl: Duration::from_secs(24 * 3600),
            max_blocks_per_minute: 10,
            dry_run: false,
            realert_after: Duration::from_secs(60),
            throttle: BTreeMap::new(),
            throttle_ttl: Duration::from_secs(600),
            quarantine_exfiltration: false,
            quarantine_ttl: Duration::from_secs(3600),
            protect_targets: true,
            protect_ttl: Duration::from_secs(300),
            protect_syn_budget: crate::store::Protection::DEFAULT_SYN_BUDGET,
            protect_syn_cookies: false,
        }
    }
}

/// A `policy.throttle` rate that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("policy.throttle.{attack}: {source}")]
pub struct ThrottleRateError {
    attack: AttackType,
    source: crate::addr::AddrError,
}

impl PolicyConfig {
    /// The `throttle` rates, parsed; the first bad one is an error naming its attack type.
    pub fn throttle_rates(&self) -> Result<BTreeMap<AttackType, Rate>, ThrottleRateError> {
        self.throttle
            .iter()
            .map(|(t, s)| {
                s.parse::<Rate>()
                    .map(|r| (*t, r))
                    .map_err(|source| ThrottleRateError { attack: *t, source })
            })
            .collect()
    }
}

/// Addresses that are never blocked automatically, and the inside networks.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    pub own: HashSet<IpAddr>,
    pub allow: Vec<IpNet>,
    /// `rules.home_net`: the only hosts the policy may quarantine.
    pub inside: Vec<IpNet>,
}

impl Protected {
    fn why(&self, ip: &IpAddr) -> Option<String> {
        if self.own.contains(ip) {
            return Some(format!("{ip} is one of this host's own addresses"));
        }
        self.allow
            .iter()
            .find(|n| n.contains(ip))
            .map(|n| format!("{ip} is allowlisted by {n}"))
    }
}

/// What the caller must carry out for one alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A repeat of a recent alert: nothing to report.
    Suppress,
    /// Report the alert (its `action` says what was decided).
    Report,
    /// Report it and block `source` for `ttl`.
    Block { source: IpAddr, ttl: Duration },
    /// Report it and hold `source` to `rate` for `ttl`.
    Throttle {
        source: IpAddr,
        rate: Rate,
        ttl: Duration,
    },
    /// Report it and quarantine the inside host `host` for `ttl`.
    Quarantine { host: IpAddr, ttl: Duration },
    /// Report it and protect `target` (new SYNs to `ports`, every port when empty) for `ttl`.
    Protect {
        target: IpAddr,
        ports: Vec<u16>,
        ttl: Duration,
    },
}

type AlertKey = (AttackType, Option<IpAddr>, Option<IpAddr>);

/// How much a repeated alert's confidence must rise to be reported again within
/// `realert_after`: a growing flood is news once per step, not once per poll.
const REALERT_CONFIDENCE_STEP: f64 = 0.05;

pub struct Policy {
    pub cfg: PolicyConfig,
    throttle_rates: BTreeMap<AttackType, Rate>,
    /// Times of recent automatic kernel entries (blocks, throttles, quarantines), for the cap.
    recent_blocks: VecDeque<u64>,
    /// Last report time and confidence per (type, source, first target).
    last_alert: HashMap<AlertKey, (u64, f64)>,
}

impl Policy {
    /// A policy for `cfg`, whose throttle rates [`PolicyConfig::throttle_rates`] has checked
    /// (one that does not parse is left out).
    pub fn new(cfg: PolicyConfig) -> Self {
        let throttle_rates = cfg
            .throttle
            .iter()
            .filter_map(|(t, s)| Some((*t, s.parse::<Rate>().ok()?)))
            .collect();
        Self {
            cfg,
            throttle_rates,
            recent_blocks: VecDeque::new(),
            last_alert: HashMap::new(),
        }
    }

    /// The block length for a source blocked `previous` times before.
    pub fn ttl_for(&self, previous: u32) -> Duration {
        let secs = self.cfg.block_ttl.as_secs_f64() * self.cfg.ttl_factor.powi(previous as i32);
        Duration::from_secs_f64(secs.min(self.cfg.max_ttl.as_secs_f64()))
    }

    /// Decides about `alert` at `now_ms`, setting its `action`. `previous_blocks` is how many
    /// times its source was blocked automatically before; `blocked` says whether it is blocked
    /// right now.
    pub fn decide(
        &mut self,
        alert: &mut Alert,
        now_ms: u64,
        protected: &Protected,
        previous_blocks: u32,
        blocked: bool,
    ) -> Decision {
        let key = (
            alert.attack_type,
            alert.source,
            alert.targets.first().copied(),
        );
        let window_ms = self.cfg.realert_after.as_millis() as u64;
        if let Some((at, conf)) = self.last_alert.get(&key)
            && now_ms.saturating_sub(*at) < window_ms
            && alert.confidence < *conf + REALERT_CONFIDENCE_STEP
            && !self.crosses_a_level(*conf, alert.confidence)
        {
            return Decision::Suppress;
        }
        // Packets from a blocked source never reach the flow table; these alerts come from
        // conversations still in the window and add nothing.
        if blocked {
            return Decision::Suppress;
        }
        self.last_alert.insert(key, (now_ms, alert.confidence));
        self.last_alert
            .retain(|_, (at, _)| now_ms.saturating_sub(*at) < window_ms);
        if alert.action == Action::ProtectTarget {
            return self.decide_target(alert, now_ms, protected);
        }
        if alert.attack_type == AttackType::Exfiltration {
            return self.decide_inside(alert, now_ms, protected);
        }
        let (Some(src), true) = (alert.source, alert.confidence >= self.cfg.block_confidence)
        else {
            return self.decide_flag_band(alert, now_ms, protected);
        };
        if let Some(why) = protected.why(&src) {
            alert.action = Action::NotBlocked { why };
            return Decision::Report;
        }
        let ttl = self.ttl_for(previous_blocks);
        let ttl_s = ttl.as_secs();
        self.enact(
            alert,
            now_ms,
            Action::WouldBlock { ttl_s },
            Action::Blocked { ttl_s },
            Decision::Block { source: src, ttl },
        )
    }

    /// Below block confidence: flag or record, or throttle where `throttle` names the type.
    fn decide_flag_band(
        &mut self,
        alert: &mut Alert,
        now_ms: u64,
        protected: &Protected,
    ) -> Decision {
        if alert.confidence < self.cfg.flag_confidence {
            alert.action = Action::Recorded;
            return Decision::Report;
        }
        alert.action = Action::Flagged;
        let (Some(src), Some(rate)) = (alert.source, self.throttle_rates.get(&alert.attack_type))
        else {
            return Decision::Report;
        };
        let rate = *rate;
        if protected.why(&src).is_some() {
            return Decision::Report;
        }
        let ttl = self.cfg.throttle_ttl;
        let (rate_text, ttl_s) = (rate.to_string(), ttl.as_secs());
        self.enact(
            alert,
            now_ms,
            Action::WouldThrottle {
                rate: rate_text.clone(),
                ttl_s,
            },
            Action::Throttled {
                rate: rate_text,
                ttl_s,
            },
            Decision::Throttle {
                source: src,
                rate,
                ttl,
            },
        )
    }

    /// An inside host sending too much is never blocked; at block confidence it may be
    /// quarantined, where configured.
    fn decide_inside(&mut self, alert: &mut Alert, now_ms: u64, protected: &Protected) -> Decision {
        let (Some(host), true) = (alert.source, alert.confidence >= self.cfg.block_confidence)
        else {
            return self.decide_flag_band(alert, now_ms, protected);
        };
        let why = if let Some(why) = protected.why(&host) {
            Some(why)
        } else if !self.cfg.quarantine_exfiltration {
            Some("an inside host is never blocked; policy.quarantine_exfiltration is off".into())
        } else if !protected.inside.iter().any(|n| n.contains(&host)) {
            Some(format!(
                "{host} is not in rules.home_net: only inside hosts are quarantined"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            alert.action = Action::NotBlocked { why };
            return Decision::Report;
        }
        let ttl = self.cfg.quarantine_ttl;
        let ttl_s = ttl.as_secs();
        self.enact(
            alert,
            now_ms,
            Action::WouldQuarantine { ttl_s },
            Action::Quarantined { ttl_s },
            Decision::Quarantine { host, ttl },
        )
    }

    /// Carries out an automatic kernel action: a dry run reports `would`, the cap says why
    /// not, and otherwise the alert reports `done` and the caller gets `decision`.
    fn enact(
        &mut self,
        alert: &mut Alert,
        now_ms: u64,
        would: Action,
        done: Action,
        decision: Decision,
    ) -> Decision {
        if self.cfg.dry_run {
            alert.action = would;
            return Decision::Report;
        }
        if let Some(why) = self.capped(now_ms) {
            alert.action = Action::NotBlocked { why };
            return Decision::Report;
        }
        alert.action = done;
        decision
    }

    /// Whether a confidence rising from `before` to `now` reaches a level at which the policy
    /// acts differently (flag, block): such a repeat is news however small the step. Without
    /// this an upload first seen at 0.89 and then at 0.9 would never be acted on.
    fn crosses_a_level(&self, before: f64, now: f64) -> bool {
        [self.cfg.flag_confidence, self.cfg.block_confidence]
            .iter()
            .any(|level| before < *level && now >= *level)
    }

    /// A target-side alert: protect the target where it is ours and protection is on;
    /// otherwise the alert only recommends it.
    fn decide_target(&mut self, alert: &mut Alert, now_ms: u64, protected: &Protected) -> Decision {
        let Some(target) = alert.targets.first().copied() else {
            return Decision::Report;
        };
        if !self.cfg.protect_targets {
            return Decision::Report;
        }
        let ours =
            protected.own.contains(&target) || protected.inside.iter().any(|n| n.contains(&target));
        if !ours {
            alert.evidence.notes.push(format!(
                "{target} is neither this host's nor in rules.home_net: not protected"
            ));
            return Decision::Report;
        }
        let ttl = self.cfg.protect_ttl;
        let ttl_s = ttl.as_secs();
        let ports = alert.target_ports.clone();
        self.enact(
            alert,
            now_ms,
            Action::WouldProtect { ttl_s },
            Action::Protected { ttl_s },
            Decision::Protect { target, ports, ttl },
        )
    }

    /// Counts one more automatic kernel entry, or says why the cap refuses it.
    fn capped(&mut self, now_ms: u64) -> Option<String> {
        while self
            .recent_blocks
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 60_000)
        {
            self.recent_blocks.pop_front();
        }
        if self.recent_blocks.len() >= self.cfg.max_blocks_per_minute {
            return Some(format!(
                "automatic block cap reached ({} per minute)",
                self.cfg.max_blocks_per_minute
            ));
        }
        self.recent_blocks.push_back(now_ms);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Evidence, Severity};

    fn alert(t: AttackType, src: &str, conf: f64) -> Alert {
        Alert {
            id: String::new(),
            timestamp_ms: 0,
            attack_type: t,
            severity: Severity::High,
            confidence: conf,
            risk_score: 7,
            source: Some(src.parse().unwrap()),
            targets: vec!["198.18.1.1".parse().unwrap()],
            target_ports: vec![],
            rule: String::new(),
            evidence: Evidence::default(),
            action: Action::Recorded,
            recommended: vec![],
        }
    }

    /// A target-side alert protects the target only where it is ours (this host's, or in
    /// rules.home_net), and only as the policy allows.
    #[test]
    fn target_alerts_protect_only_our_targets() {
        let target_alert = |dst: &str| Alert {
            source: None,
            targets: vec![dst.parse().unwrap()],
            target_ports: vec![80],
            action: Action::ProtectTarget,
            ..alert(AttackType::SynFlood, "198.18.0.1", 0.99)
        };
        let prot = Protected {
            own: HashSet::from(["198.18.0.2".parse().unwrap()]),
            inside: vec!["198.18.5.0/24".parse().unwrap()],
            ..Protected::default()
        };
        let mut p = Policy::new(PolicyConfig::default());
        let mut a = target_alert("198.18.0.2");
        assert_eq!(
            p.decide(&mut a, 0, &prot, 0, false),
            Decision::Protect {
                target: "198.18.0.2".parse().unwrap(),
                ports: vec![80],
                ttl: Duration::from_secs(300),
            }
        );
        assert_eq!(a.action, Action::Protected { ttl_s: 300 });
        let mut a = target_alert("198.18.5.7");
        assert!(matches!(
            p.decide(&mut a, 0, &prot, 0, false),
            Decision::Protect { .. }
        ));
        // Someone else's server: recommended only.
        let mut a = target_alert("192.0.2.80");
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert_eq!(a.action, Action::ProtectTarget);
        assert!(a.evidence.notes.iter().any(|n| n.contains("not protected")));
        for cfg in [
            PolicyConfig {
                dry_run: true,
                ..PolicyConfig::default()
            },
            PolicyConfig {
                protect_targets: false,
                ..PolicyConfig::default()
            },
        ] {
            let dry = cfg.dry_run;
            let mut p = Policy::new(cfg);
            let mut a = target_alert("198.18.0.2");
            assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
            let expected = if dry {
                Action::WouldProtect { ttl_s: 300 }
            } else {
                Action::ProtectTarget
            };
            assert_eq!(a.action, expected);
        }
    }

    #[test]
    fn confidence_levels_map_to_actions() {
        let mut p = Policy::new(PolicyConfig::default());
        let prot = Protected::default();
        let mut a = alert(AttackType::PortScan, "198.18.0.1", 0.59);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert_eq!(a.action, Action::Recorded);
        let mut a = alert(AttackType::PortScan, "198.18.0.2", 0.6);
        p.decide(&mut a, 0, &prot, 0, false);
        assert_eq!(a.action, Action::Flagged);
        let mut a = alert(AttackType::PortScan, "198.18.0.3", 0.899);
        p.decide(&mut a, 0, &prot, 0, false);
        assert_eq!(a.action, Action::Flagged);
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.9);
        let d = p.decide(&mut a, 0, &prot, 0, false);
        assert_eq!(
            d,
            Decision::Block {
                source: "198.18.0.4".parse().unwrap(),
                ttl: Duration::from_secs(600)
            }
        );
        assert_eq!(a.action, Action::Blocked { ttl_s: 600 });
    }

    #[test]
    fn repeat_offenders_get_escalating_ttls_up_to_the_maximum() {
        let p = Policy::new(PolicyConfig::default());
        assert_eq!(p.ttl_for(0), Duration::from_secs(600));
        assert_eq!(p.ttl_for(1), Duration::from_secs(1200));
        assert_eq!(p.ttl_for(3), Duration::from_secs(4800));
        assert_eq!(p.ttl_for(20), Duration::from_secs(24 * 3600));
    }

    #[test]
    fn own_and_allowlisted_addresses_are_never_blocked() {
        let mut p = Policy::new(PolicyConfig::default());
        let prot = Protected {
            own: HashSet::from(["198.18.1.1".parse().unwrap()]),
            allow: vec!["198.18.5.0/24".parse().unwrap()],
            inside: vec![],
        };
        let mut a = alert(AttackType::BruteForce, "198.18.1.1", 0.99);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert!(matches!(a.action, Action::NotBlocked { ref why } if why.contains("own")));
        let mut a = alert(AttackType::BruteForce, "198.18.5.7", 0.99);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert!(matches!(a.action, Action::NotBlocked { ref why } if why.contains("allowlisted")));
    }

    #[test]
    fn blocks_are_capped_per_minute() {
        let mut p = Policy::new(PolicyConfig {
            max_blocks_per_minute: 3,
            ..PolicyConfig::default()
        });
        let prot = Protected::default();
        let mut blocks = 0;
        for i in 0..10 {
            let mut a = alert(AttackType::SynFlood, &format!("10.0.0.{i}"), 0.95);
            if matches!(
                p.decide(&mut a, 1000, &prot, 0, false),
                Decision::Block { .. }
            ) {
                blocks += 1;
            } else {
                assert!(matches!(a.action, Action::NotBlocked { ref why } if why.contains("cap")));
            }
        }
        assert_eq!(blocks, 3);
        // A minute later the cap has room again.
        let mut a = alert(AttackType::SynFlood, "10.0.1.1", 0.95);
        assert!(matches!(
            p.decide(&mut a, 61_000, &prot, 0, false),
            Decision::Block { .. }
        ));
    }

    #[test]
    fn dry_run_never_blocks() {
        let mut p = Policy::new(PolicyConfig {
            dry_run: true,
            ..PolicyConfig::default()
        });
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.99);
        assert_eq!(
            p.decide(&mut a, 0, &Protected::default(), 0, false),
            Decision::Report
        );
        assert_eq!(a.action, Action::WouldBlock { ttl_s: 600 });
    }

    #[test]
    fn repeats_are_suppressed_unless_confidence_rises() {
        let mut p = Policy::new(PolicyConfig::default());
        let prot = Protected::default();
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.7);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.7);
        assert_eq!(
            p.decide(&mut a, 30_000, &prot, 0, false),
            Decision::Suppress
        );
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.95);
        assert!(matches!(
            p.decide(&mut a, 31_000, &prot, 0, false),
            Decision::Block { .. }
        ));
        // A small rise that reaches block confidence is acted on.
        let mut a = alert(AttackType::HostSweep, "198.18.0.4", 0.88);
        assert_eq!(p.decide(&mut a, 40_000, &prot, 0, false), Decision::Report);
        let mut a = alert(AttackType::HostSweep, "198.18.0.4", 0.89);
        assert_eq!(
            p.decide(&mut a, 41_000, &prot, 0, false),
            Decision::Suppress
        );
        let mut a = alert(AttackType::HostSweep, "198.18.0.4", 0.9);
        assert!(matches!(
            p.decide(&mut a, 42_000, &prot, 0, false),
            Decision::Block { .. }
        ));
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.7);
        assert_eq!(
            p.decide(&mut a, 200_000, &prot, 0, true),
            Decision::Suppress,
            "already blocked"
        );
    }

    #[test]
    fn the_flag_band_throttles_the_types_configured() {
        let mut p = Policy::new(PolicyConfig {
            throttle: BTreeMap::from([(AttackType::PortScan, "50pps+1mbit".into())]),
            ..PolicyConfig::default()
        });
        let prot = Protected {
            allow: vec!["198.18.5.0/24".parse().unwrap()],
            ..Protected::default()
        };
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.7);
        let d = p.decide(&mut a, 0, &prot, 0, false);
        let rate = Rate {
            pps: 50,
            bps: 1_000_000,
            burst_ms: Rate::DEFAULT_BURST_MS,
        };
        assert_eq!(
            d,
            Decision::Throttle {
                source: "198.18.0.4".parse().unwrap(),
                rate,
                ttl: Duration::from_secs(600)
            }
        );
        assert!(
            matches!(a.action, Action::Throttled { ref rate, ttl_s: 600 } if rate.starts_with("50pps + 1mbit"))
        );
        // Other types, lower confidence and allowlisted sources are only flagged or recorded.
        let mut a = alert(AttackType::HostSweep, "198.18.0.5", 0.7);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert_eq!(a.action, Action::Flagged);
        let mut a = alert(AttackType::PortScan, "198.18.0.6", 0.5);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert_eq!(a.action, Action::Recorded);
        let mut a = alert(AttackType::PortScan, "198.18.5.6", 0.7);
        assert_eq!(p.decide(&mut a, 0, &prot, 0, false), Decision::Report);
        assert_eq!(a.action, Action::Flagged);
        // Block confidence still blocks.
        let mut a = alert(AttackType::PortScan, "198.18.0.7", 0.95);
        assert!(matches!(
            p.decide(&mut a, 0, &prot, 0, false),
            Decision::Block { .. }
        ));
        // A bad rate is refused by name.
        let bad = PolicyConfig {
            throttle: BTreeMap::from([(AttackType::UdpFlood, "lots".into())]),
            ..PolicyConfig::default()
        };
        assert!(
            bad.throttle_rates()
                .unwrap_err()
                .to_string()
                .starts_with("policy.throttle.udp_flood:")
        );
    }

    #[test]
    fn exfiltration_quarantines_inside_hosts_only_when_asked() {
        let inside = Protected {
            own: HashSet::from(["198.18.100.1".parse().unwrap()]),
            allow: vec!["198.18.100.50/32".parse().unwrap()],
            inside: vec!["198.18.100.0/24".parse().unwrap()],
        };
        // Off by default: reported, never blocked.
        let mut p = Policy::new(PolicyConfig::default());
        let mut a = alert(AttackType::Exfiltration, "198.18.100.7", 0.95);
        assert_eq!(p.decide(&mut a, 0, &inside, 0, false), Decision::Report);
        assert!(
            matches!(a.action, Action::NotBlocked { ref why } if why.contains("quarantine_exfiltration is off"))
        );
        let mut p = Policy::new(PolicyConfig {
            quarantine_exfiltration: true,
            ..PolicyConfig::default()
        });
        let mut a = alert(AttackType::Exfiltration, "198.18.100.7", 0.95);
        assert_eq!(
            p.decide(&mut a, 0, &inside, 0, false),
            Decision::Quarantine {
                host: "198.18.100.7".parse().unwrap(),
                ttl: Duration::from_secs(3600)
            }
        );
        assert_eq!(a.action, Action::Quarantined { ttl_s: 3600 });
        // Never this host, an allowlisted host or one outside home_net.
        for (host, why) in [
            ("198.18.100.1", "own"),
            ("198.18.100.50", "allowlisted"),
            ("203.0.113.9", "home_net"),
        ] {
            let mut a = alert(AttackType::Exfiltration, host, 0.95);
            assert_eq!(
                p.decide(&mut a, 0, &inside, 0, false),
                Decision::Report,
                "{host}"
            );
            assert!(
                matches!(a.action, Action::NotBlocked { why: ref w } if w.contains(why)),
                "{host}: {:?}",
                a.action
            );
        }
        // Below block confidence: flagged.
        let mut a = alert(AttackType::Exfiltration, "198.18.100.8", 0.7);
        assert_eq!(p.decide(&mut a, 0, &inside, 0, false), Decision::Report);
        assert_eq!(a.action, Action::Flagged);
    }
}
