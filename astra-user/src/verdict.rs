//! Policy: what to do about an alert. Confidence decides between block, flag and record;
//! repeat offenders get longer blocks (like fail2ban's bantime.increment); the host's own and
//! allowlisted addresses are never blocked; new automatic blocks are capped per minute.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::detect::{Action, Alert, AttackType};

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
        }
    }
}

/// Addresses that are never blocked automatically.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    pub own: HashSet<IpAddr>,
    pub allow: Vec<IpNet>,
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
}

type AlertKey = (AttackType, Option<IpAddr>, Option<IpAddr>);

/// How much a repeated alert's confidence must rise to be reported again within
/// `realert_after`: a growing flood is news once per step, not once per poll.
const REALERT_CONFIDENCE_STEP: f64 = 0.05;

pub struct Policy {
    pub cfg: PolicyConfig,
    recent_blocks: VecDeque<u64>,
    /// Last report time and confidence per (type, source, first target).
    last_alert: HashMap<AlertKey, (u64, f64)>,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
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
            return Decision::Report;
        }
        let (Some(src), true) = (alert.source, alert.confidence >= self.cfg.block_confidence)
        else {
            alert.action = if alert.confidence >= self.cfg.flag_confidence {
                Action::Flagged
            } else {
                Action::Recorded
            };
            return Decision::Report;
        };
        if let Some(why) = protected.why(&src) {
            alert.action = Action::NotBlocked { why };
            return Decision::Report;
        }
        let ttl = self.ttl_for(previous_blocks);
        if self.cfg.dry_run {
            alert.action = Action::WouldBlock {
                ttl_s: ttl.as_secs(),
            };
            return Decision::Report;
        }
        while self
            .recent_blocks
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 60_000)
        {
            self.recent_blocks.pop_front();
        }
        if self.recent_blocks.len() >= self.cfg.max_blocks_per_minute {
            alert.action = Action::NotBlocked {
                why: format!(
                    "automatic block cap reached ({} per minute)",
                    self.cfg.max_blocks_per_minute
                ),
            };
            return Decision::Report;
        }
        self.recent_blocks.push_back(now_ms);
        alert.action = Action::Blocked {
            ttl_s: ttl.as_secs(),
        };
        Decision::Block { source: src, ttl }
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
        let mut a = alert(AttackType::PortScan, "198.18.0.4", 0.7);
        assert_eq!(
            p.decide(&mut a, 200_000, &prot, 0, true),
            Decision::Suppress,
            "already blocked"
        );
    }
}
