//! The detection pass the agent runs after every poll: conversations into windows, windows
//! into alerts, alerts through the policy, and decisions into the kernel blocklist, the event
//! log, incident reports and metrics.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    clock::now_unix,
    detect::{
        Alert, AttackType, ExfilBaselines, RuleConfig, anomaly_alert,
        classify::{Classifier, join},
        model::{Learner, ModelConfig, ModelStatus},
        source_rules, target_rules,
    },
    error::{Error, Result},
    features::{FeatureConfig, Tracker},
    flow::{BiFlow, Conversations, FlowRecord, FlowTable, pair_flows},
    lists::Lists,
    sink::{
        events::{EventLog, alert_id},
        metrics::Metrics,
        report,
    },
    store::{EntrySource, ListKind, Protection, Rate},
    verdict::{Decision, Policy, PolicyConfig, Protected},
};

/// A `SECTION.KEY=VALUE` detection setting that cannot be applied; each names the setting.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("{0}: expected SECTION.KEY=VALUE, e.g. rules.port_scan_ports=30")]
    NotKeyValue(String),
    #[error("{0}: key must be SECTION.KEY (sections: features, rules, policy, model)")]
    NotSectionKey(String),
    #[error("{setting}: unknown setting {key}")]
    Unknown { setting: String, key: String },
    #[error("{setting}: bad value for {key}: {cause}")]
    BadValue {
        setting: String,
        key: String,
        cause: serde_json::Error,
    },
}

/// Every detection setting, settable with `astra run --set SECTION.KEY=VALUE`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub features: FeatureSettings,
    pub rules: RuleConfig,
    pub policy: PolicyConfig,
    pub model: ModelConfig,
}

/// The serialisable form of [`FeatureConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureSettings {
    #[serde(with = "humantime_serde")]
    pub short_window: Duration,
    #[serde(with = "humantime_serde")]
    pub long_window: Duration,
    pub failed_login_max_reply_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub failed_login_max_duration: Duration,
    /// How long failed logins count against a source (fail2ban's findtime).
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        let d = FeatureConfig::default();
        Self {
            short_window: d.short_window,
            long_window: d.long_window,
            failed_login_max_reply_bytes: d.failed_login_max_reply_bytes,
            failed_login_max_duration: d.failed_login_max_duration,
            login_window: d.login_window,
        }
    }
}

impl FeatureSettings {
    fn to_config(&self) -> FeatureConfig {
        FeatureConfig {
            short_window: self.short_window,
            long_window: self.long_window,
            failed_login_max_reply_bytes: self.failed_login_max_reply_bytes,
            failed_login_max_duration: self.failed_login_max_duration,
            login_window: self.login_window,
        }
    }
}

impl DetectConfig {
    /// Applies `SECTION.KEY=VALUE` settings given with `--set`, then checks the result.
    pub fn apply(&mut self, settings: &[String]) -> Result<()> {
        self.apply_settings(settings)
            .map_err(|e| Error::Usage(format!("--set {e}")))?;
        self.validate()
    }

    /// Applies `SECTION.KEY=VALUE` settings without the cross-field checks of
    /// [`Self::validate`]. Values are read as JSON when they parse as such (numbers, booleans)
    /// and as strings otherwise ("10m"); an unknown key or a value of the wrong type is an
    /// error naming it.
    pub fn apply_settings(&mut self, settings: &[String]) -> std::result::Result<(), SettingError> {
        let mut v = serde_json::to_value(&*self).expect("config serialises");
        for s in settings {
            let setting = || s.clone();
            let (key, value) = s
                .split_once('=')
                .ok_or_else(|| SettingError::NotKeyValue(setting()))?;
            let (section, field) = key
                .split_once('.')
                .ok_or_else(|| SettingError::NotSectionKey(setting()))?;
            let slot = v
                .get_mut(section)
                .and_then(|sec| sec.get_mut(field))
                .ok_or_else(|| SettingError::Unknown {
                    setting: setting(),
                    key: key.to_owned(),
                })?;
            *slot = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            *self = serde_json::from_value(v.clone()).map_err(|cause| SettingError::BadValue {
                setting: setting(),
                key: key.to_owned(),
                cause,
            })?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        let p = &self.policy;
        if !(0.0..=1.0).contains(&p.block_confidence) || !(0.0..=1.0).contains(&p.flag_confidence) {
            return Err(Error::Usage(
                "policy confidences must be between 0 and 1".into(),
            ));
        }
        if p.ttl_factor < 1.0 {
            return Err(Error::Usage("policy.ttl_factor must be at least 1".into()));
        }
        p.throttle_rates()
            .map_err(|e| Error::Usage(e.to_string()))?;
        if p.protect_syn_budget == 0 {
            return Err(Error::Usage(
                "policy.protect_syn_budget must be at least 1".into(),
            ));
        }
        for (what, ttl) in [
            ("throttle_ttl", p.throttle_ttl),
            ("quarantine_ttl", p.quarantine_ttl),
            ("protect_ttl", p.protect_ttl),
        ] {
            if ttl < Duration::from_secs(1) {
                return Err(Error::Usage(format!("policy.{what} must be at least 1s")));
            }
        }
        if self.features.short_window.is_zero()
            || self.features.long_window < self.features.short_window
            || self.features.login_window < self.features.long_window
        {
            return Err(Error::Usage(
                "features windows must be non-zero, long_window >= short_window and login_window >= long_window".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PassStats {
    pub alerts: usize,
    pub blocks: usize,
    pub suppressed: usize,
    /// The alerts this pass reported, for the live UI.
    #[serde(skip)]
    pub raised: Vec<Alert>,
}

pub struct Engine {
    cfg: DetectConfig,
    tracker: Tracker,
    policy: Policy,
    exfil: ExfilBaselines,
    events: EventLog,
    incidents_dir: PathBuf,
    seq: u64,
    protected: Protected,
    own_refreshed: Option<Instant>,
    learner: Learner,
    /// The imported classifier, advising on the sources alerts name.
    classifier: Classifier,
    rng: u64,
    /// Consecutive polls each source has scored at or above the anomaly threshold.
    odd_streak: std::collections::HashMap<IpAddr, u32>,
    /// Automatically protected targets, and the drops their kernel entry had counted at the
    /// last pass: while it keeps dropping, the protection is extended.
    protecting: std::collections::HashMap<IpAddr, u64>,
    /// Sources written to the kernel's known-source map, and when (ms): rewritten once half
    /// their time has passed.
    known: std::collections::HashMap<IpAddr, u64>,
    /// Whether alerts are queued for the CrowdSec watcher.
    push_crowdsec: bool,
    /// The targets under protection at the last pass.
    protect_targets: Vec<IpAddr>,
    /// Where each pass's feature rows go (`astra run --export-features`).
    export: Option<FeatureExport>,
}

/// Every source's long-window features, a CSV row each per pass, for training classifiers
/// (the lab labels them with its ground truth: `astra lab --export-training`).
struct FeatureExport {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// The first write error, reported once; later rows are dropped.
    failed: bool,
}

/// How long a source that completed a handshake stays known to protected targets.
const KNOWN_TTL: Duration = Duration::from_secs(3600);

impl Engine {
    pub fn new(cfg: DetectConfig, state_dir: &Path, events_path: PathBuf) -> Result<Self> {
        Ok(Self {
            learner: Learner::new(cfg.model.clone(), state_dir),
            classifier: Classifier::new(state_dir),
            rng: 0x2545_f491_4f6c_dd1d,
            odd_streak: std::collections::HashMap::new(),
            protecting: std::collections::HashMap::new(),
            known: std::collections::HashMap::new(),
            push_crowdsec: false,
            protect_targets: Vec::new(),
            export: None,
            incidents_dir: state_dir.join("incidents"),
            tracker: Tracker::new(cfg.features.to_config()),
            policy: Policy::new(cfg.policy.clone()),
            exfil: ExfilBaselines::default(),
            events: EventLog::open(&events_path)?,
            seq: 0,
            protected: Protected::default(),
            own_refreshed: None,
            cfg,
        })
    }

    /// Takes new detection settings without losing what the engine has learned: conversations,
    /// offender history, the model and alert de-duplication all carry over.
    pub fn reconfigure(&mut self, cfg: DetectConfig) {
        if cfg == self.cfg {
            return;
        }
        self.tracker.set_config(cfg.features.to_config());
        self.policy.cfg = cfg.policy.clone();
        self.learner.set_config(cfg.model.clone());
        self.cfg = cfg;
        info!("detection settings reloaded");
    }

    pub fn incidents_dir(&self) -> &Path {
        &self.incidents_dir
    }

    pub fn events_path(&self) -> &Path {
        self.events.path()
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn model_status(&self) -> ModelStatus {
        self.learner.status()
    }

    /// Trains the model at the next pass (see [`crate::detect::model::Learner::request_training`]).
    /// Writes every pass's feature rows to `path` as CSV (`t_ms,source,` then the features),
    /// starting it afresh.
    pub fn export_features(&mut self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(
            out,
            "t_ms,source,{}",
            crate::features::FEATURE_NAMES.join(",")
        )
        .map_err(|e| Error::io(path, e))?;
        self.export = Some(FeatureExport {
            path: path.to_owned(),
            out,
            failed: false,
        });
        Ok(())
    }

    pub fn request_training(&mut self) {
        self.learner.request_training();
    }

    fn refresh_protected(&mut self, lists: &Lists) -> Result<()> {
        if self
            .own_refreshed
            .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
        {
            self.protected.own = crate::addr::own_addresses();
            self.own_refreshed = Some(Instant::now());
        }
        self.protected.inside.clone_from(&self.cfg.rules.home_net);
        self.protected.allow = lists
            .store()
            .list(Some(ListKind::Allow))?
            .into_iter()
            .map(|e| e.net)
            .collect();
        Ok(())
    }

    /// The budget of an automatic protection: `policy.protect_syn_budget` new SYNs a second.
    fn syn_budget(&self) -> Rate {
        Rate {
            pps: self.cfg.policy.protect_syn_budget,
            bps: 0,
            burst_ms: Rate::DEFAULT_BURST_MS,
        }
    }

    /// Writes the sources that completed handshakes with a protected target into the
    /// kernel's known-source map (only those not written within half their time, unless
    /// `fresh`: a protection that just started), while any target is protected.
    fn learn_known(
        &mut self,
        lists: &mut Lists,
        live: &dyn Conversations,
        fresh: bool,
    ) -> Result<()> {
        let entries = lists.store().list(Some(ListKind::Protect))?;
        // Automatic protections made before a restart are extended too, from their next drop.
        for e in entries.iter().filter(|e| e.source == EntrySource::Auto) {
            self.protecting.entry(e.net.addr()).or_insert(u64::MAX);
        }
        let targets: Vec<IpAddr> = entries.iter().map(|e| e.net.addr()).collect();
        self.protect_targets.clone_from(&targets);
        if targets.is_empty() {
            self.known.clear();
            return Ok(());
        }
        let now = crate::clock::now_ms();
        let half = KNOWN_TTL.as_millis() as u64 / 2;
        let cap = astra_common::KNOWN_CAPACITY as usize;
        let new: Vec<IpAddr> = self
            .tracker
            .handshake_sources(live, &targets, cap)
            .into_iter()
            .filter(|s| {
                fresh
                    || self
                        .known
                        .get(s)
                        .is_none_or(|t| now.saturating_sub(*t) >= half)
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let n = lists.learn_known(&new, KNOWN_TTL)?;
        self.known
            .retain(|_, t| now.saturating_sub(*t) < KNOWN_TTL.as_millis() as u64);
        for s in &new[..n] {
            if self.known.len() < cap || self.known.contains_key(s) {
                self.known.insert(*s, now);
            }
        }
        Ok(())
    }

    /// Extends each automatic protection whose kernel entry dropped since the last pass, so
    /// it lasts `policy.protect_ttl` beyond the flood's last packet; forgets those that ended.
    fn refresh_protection(&mut self, lists: &mut Lists) -> Result<()> {
        if self.protecting.is_empty() {
            return Ok(());
        }
        let ttl = self.cfg.policy.protect_ttl;
        for target in self.protecting.keys().copied().collect::<Vec<_>>() {
            let net = IpNet::from(target);
            let stored = lists.store().get(ListKind::Protect, &net)?;
            let (Some(e), Some(k)) = (stored, lists.protect_counters(target)) else {
                self.protecting.remove(&target);
                continue;
            };
            // What it turned away: over the budget, unsolicited, or answered with a cookie.
            let drops = k.budget.dropped + k.reflected + k.cookies;
            let before = self.protecting[&target];
            if before != u64::MAX && drops > before && e.source == EntrySource::Auto {
                let (Some(budget), Some(p)) = (e.rate, e.protect) else {
                    continue;
                };
                lists.add_protect(target, Some(ttl), &e.reason, EntrySource::Auto, budget, p)?;
            }
            self.protecting.insert(target, drops);
        }
        Ok(())
    }

    /// A failed login a service reported (see the API's `/api/v1/events`), at `at_ns` on the
    /// dataplane's clock.
    pub fn report_login_failure(&mut self, src: IpAddr, port: u16, at_ns: u64) {
        self.tracker.report_login_failure(src, port, at_ns);
    }

    /// One detection pass over the records of the poll that just ended.
    pub fn run(
        &mut self,
        now_ns: u64,
        now_ms: u64,
        table: &FlowTable,
        closed: &[FlowRecord],
        lists: &mut Lists,
        metrics: &Metrics,
    ) -> Result<PassStats> {
        // The previous poll's conversations go before this poll's are paired, so the two
        // never take memory at the same time.
        self.tracker.release_active();
        let live = table.conversations();
        let bi_closed = pair_flows(closed.iter().map(|r| (&r.key, &r.value)));
        let deltas = table
            .flows()
            .map(|(k, s)| (k, s.delta_packets, s.delta_bytes))
            .chain(closed.iter().map(FlowRecord::delta));
        self.tracker.update(now_ns, &live, &bi_closed, deltas);
        self.refresh_protected(lists)?;
        self.learn_known(lists, &live, false)?;
        self.refresh_protection(lists)?;

        let long = self.cfg.features.long_window;
        let mut alerts = Vec::new();
        self.exfil.begin_pass();
        // This host's own addresses, and the inside hosts of rules.home_net that sent.
        let mut inside: Vec<IpAddr> = self.protected.own.iter().copied().collect();
        if !self.cfg.rules.home_net.is_empty() {
            inside.extend(
                self.tracker
                    .senders_in(&self.cfg.rules.home_net)
                    .filter(|h| !self.protected.own.contains(h)),
            );
        }
        for host in inside {
            let sent = self.tracker.sent_bytes(&host, now_ns);
            if let Some(a) = self
                .exfil
                .check(&self.cfg.rules, host, sent, long.as_secs(), now_ms)
            {
                alerts.push(a);
            }
        }
        metrics.set_conversations(self.tracker.conversations());
        self.source_pass(&mut alerts, now_ns, now_ms, &live, metrics);

        // Rules name their targets only for the few sources that alert.
        for a in alerts.iter_mut() {
            if let Some(src) = a.source
                && (a.targets.is_empty() || a.target_ports.is_empty())
            {
                let (dsts, ports) = self.tracker.targets(src, 16, 32);
                if a.targets.is_empty() {
                    a.targets = dsts;
                }
                if a.target_ports.is_empty() {
                    a.target_ports = ports;
                }
            }
        }
        let mut stats = PassStats::default();
        // Sources blocked earlier in this pass: later alerts about them are still reported
        // (they add to the picture) but do not block twice.
        let mut blocked_now: std::collections::HashMap<IpAddr, u64> =
            std::collections::HashMap::new();
        let mut recorded = Vec::new();
        let mut incidents = Vec::new();
        for mut a in alerts {
            self.seq += 1;
            a.id = alert_id(now_ms, self.seq, a.source.or(a.targets.first().copied()));
            let (offenses, blocked) = match a.source {
                Some(src) if blocked_now.contains_key(&src) => (0, false),
                Some(src) => (
                    lists.store().offenses(&src)?,
                    lists
                        .store()
                        .get(ListKind::Block, &IpNet::from(src))?
                        .is_some(),
                ),
                None => (0, false),
            };
            if let Some(src) = a.source
                && unanswered_client(&a, &self.known, &self.protect_targets)
            {
                // Flagged at most: the flood left its SYNs unanswered (a full SYN queue drops
                // everyone's), and its retries are what looked like a flood.
                a.confidence = a
                    .confidence
                    .min(self.cfg.policy.block_confidence - 0.01)
                    .max(0.0);
                a.evidence.notes.push(format!(
                    "{src} completed handshakes with the protected target before: its SYNs went unanswered in the flood, so it is not blocked for them"
                ));
            }
            let decision = self
                .policy
                .decide(&mut a, now_ms, &self.protected, offenses, blocked);
            if decision == Decision::Suppress {
                stats.suppressed += 1;
                continue;
            }
            let flows = evidence_flows(&self.tracker, &live, &a);
            let flows: Vec<&BiFlow> = flows.iter().collect();
            if let Decision::Block { source, .. } = decision
                && let Some(ttl_s) = blocked_now.get(&source)
            {
                a.action = crate::detect::Action::Blocked { ttl_s: *ttl_s };
            } else if let Some((kind, source, ttl, rate, ports)) = match decision {
                Decision::Block { source, ttl } => Some((ListKind::Block, source, ttl, None, None)),
                Decision::Throttle { source, rate, ttl } => {
                    Some((ListKind::Throttle, source, ttl, Some(rate), None))
                }
                Decision::Quarantine { host, ttl } => {
                    Some((ListKind::Quarantine, host, ttl, None, None))
                }
                Decision::Protect { target, ports, ttl } => Some((
                    ListKind::Protect,
                    target,
                    ttl,
                    Some(self.syn_budget()),
                    Some(ports),
                )),
                Decision::Suppress | Decision::Report => None,
            } {
                if kind == ListKind::Block {
                    blocked_now.insert(source, ttl.as_secs());
                }
                let reason = format!("auto: {} ({})", a.attack_type, a.rule);
                let net = IpNet::from(source);
                if let (Some(ports), Some(budget)) = (ports, rate) {
                    let p = Protection {
                        ports,
                        syn: true,
                        reflect: true,
                        cookies: self.cfg.policy.protect_syn_cookies,
                    };
                    lists.add_protect(source, Some(ttl), &reason, EntrySource::Auto, budget, p)?;
                    self.protecting.insert(source, 0);
                    self.learn_known(lists, &live, true)?;
                } else {
                    lists.add_rated(kind, net, Some(ttl), &reason, EntrySource::Auto, rate)?;
                }
                if kind == ListKind::Block {
                    lists.store().record_offense(&source, now_unix())?;
                }
                self.events.mitigation(
                    kind.as_str(),
                    &net.to_string(),
                    ttl,
                    rate,
                    &reason,
                    &a.id,
                )?;
                match report::write(&self.incidents_dir, &a, &flows) {
                    Ok((p, row)) => {
                        info!(src = %source, ttl = ?ttl, kind = %a.attack_type, report = %p.display(), action = %kind, "mitigated");
                        incidents.push(row);
                    }
                    Err(e) => warn!(error = %e, "writing incident report"),
                }
                metrics.auto_action(kind.as_str());
                if kind == ListKind::Block {
                    stats.blocks += 1;
                }
            }
            self.events.alert(&a, flows.first().copied(), now_ns)?;
            metrics.alert(&a);
            stats.alerts += 1;
            recorded.push(a);
        }
        // The block itself is already durable (lists.add); a history that cannot be written
        // must not stop detection, so this only warns.
        if let Err(e) = crate::sink::history::record(lists.store(), &recorded, &incidents) {
            warn!(error = %e, "recording alerts in the history");
        }
        if self.push_crowdsec {
            match crate::sink::crowdsec::enqueue(lists.store(), &recorded, now_unix()) {
                Ok(0) => {}
                Ok(n) => warn!(
                    dropped = n,
                    "CrowdSec outbox full: the oldest alerts waiting for the LAPI were dropped"
                ),
                Err(e) => warn!(error = %e, "queueing alerts for CrowdSec"),
            }
        }
        stats.raised = recorded;
        Ok(stats)
    }
}

impl Engine {
    /// Queues every alert worth the fleet's attention for the CrowdSec watcher from now on.
    pub fn push_to_crowdsec(&mut self, on: bool) {
        self.push_crowdsec = on;
    }

    /// Runs the per-source rules and the forest over each source's windows as the tracker
    /// computes them, one source at a time, so a pass over a million sources never holds a
    /// million windows. A source's forest score goes into the evidence of its rule alerts, or
    /// raises an `anomaly` alert of its own; sources without alerts feed the training sample.
    /// The target-side rules run last, over the destinations' windows.
    fn source_pass(
        &mut self,
        alerts: &mut Vec<Alert>,
        now_ns: u64,
        now_ms: u64,
        live: &dyn Conversations,
        metrics: &Metrics,
    ) {
        let windows_s = (
            self.cfg.features.short_window.as_secs(),
            self.cfg.features.long_window.as_secs(),
            self.cfg.features.login_window.as_secs(),
        );
        // Alerts raised before this pass (exfiltration) also get their source's score.
        let earlier = alerts.len();
        self.classifier.reload_if_changed();
        let mut sample = self.learner.sample();
        let mut streak = std::collections::HashMap::new();
        let Self {
            tracker,
            learner,
            classifier,
            odd_streak,
            protected,
            cfg,
            rng,
            export,
            ..
        } = self;
        let dst_short = tracker.visit_windows(now_ns, live, |src, short, long| {
            let first = alerts.len();
            source_rules(&cfg.rules, src, short, long, windows_s, now_ms, alerts);
            let mut flagged =
                alerts.len() > first || alerts[..earlier].iter().any(|a| a.source == Some(src));
            let row = long.features.to_vec();
            if let Some(x) = export.as_mut().filter(|x| !x.failed) {
                use std::io::Write as _;
                let cells: Vec<String> = row.iter().map(f64::to_string).collect();
                if let Err(e) = writeln!(x.out, "{now_ms},{src},{}", cells.join(",")) {
                    warn!(path = %x.path.display(), error = %e, "feature export stopped");
                    x.failed = true;
                }
            }
            if let Some(assessment) = learner.assess(&row) {
                let score = assessment.score;
                metrics.anomaly_score(score);
                sample.score(score);
                tracing::debug!(%src, score, features = ?long.features, "forest score");
                let n = if learner.is_anomalous(&assessment) {
                    odd_streak.get(&src).copied().unwrap_or(0) + 1
                } else {
                    0
                };
                if n > 0 {
                    streak.insert(src, n);
                }
                if flagged {
                    for a in alerts.iter_mut().filter(|a| a.source == Some(src)) {
                        a.evidence.forest_score = Some(score);
                    }
                } else if learner.may_alert()
                    && n >= learner.anomaly_polls()
                    && !protected.own.contains(&src)
                {
                    let mut a = anomaly_alert(&cfg.rules, src, long, &assessment, now_ms);
                    a.evidence
                        .notes
                        .push(format!("anomalous for {n} consecutive polls"));
                    alerts.push(a);
                    flagged = true;
                }
            }
            if !flagged {
                sample.offer(row, rng);
            } else if let Some(v) = classifier.classify(&row) {
                // This pass's alerts on the source, and those raised before it (exfiltration).
                let mine =
                    |a: &&mut Alert| a.source == Some(src) && a.evidence.classifier.is_none();
                for a in alerts.iter_mut().filter(mine) {
                    join(a, &v);
                }
            }
        });
        target_rules(&cfg.rules, &dst_short, windows_s.0, now_ms, alerts);
        if let Some(x) = export.as_mut().filter(|x| !x.failed) {
            use std::io::Write as _;
            if let Err(e) = x.out.flush() {
                warn!(path = %x.path.display(), error = %e, "feature export stopped");
                x.failed = true;
            }
        }
        *odd_streak = streak;
        learner.observe(sample);
    }
}

/// The source's conversations toward its first target, largest first.
/// Whether `a` blames a client for SYNs a protected target left unanswered: a `syn_flood`
/// alert on half-open connections alone, from a source known to complete handshakes (see
/// [`Engine::learn_known`]), toward protected targets only. Under a spoofed flood a target's
/// full SYN queue drops its own clients' SYNs too, and a busy client (an office behind one
/// NAT address) retrying a hundred connections crossed the rule and was blocked. A known
/// source flooding fast still meets the rate rules (`spike_pps`).
fn unanswered_client(
    a: &Alert,
    known: &std::collections::HashMap<IpAddr, u64>,
    protect_targets: &[IpAddr],
) -> bool {
    a.attack_type == AttackType::SynFlood
        && a.source.is_some_and(|s| known.contains_key(&s))
        && !a.targets.is_empty()
        && a.targets.iter().all(|t| protect_targets.contains(t))
        && !a.evidence.thresholds.is_empty()
        && a.evidence
            .thresholds
            .iter()
            .all(|c| c.name == "half_open_to_one_destination")
}

fn evidence_flows(tracker: &Tracker, live: &dyn Conversations, a: &Alert) -> Vec<BiFlow> {
    tracker.flows_matching(live, a.source, a.targets.first().copied(), 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_by_section_and_key() {
        let mut c = DetectConfig::default();
        c.apply(&[
            "rules.port_scan_ports=30".into(),
            "policy.block_ttl=5m".into(),
            "policy.dry_run=true".into(),
            "features.long_window=2m".into(),
        ])
        .unwrap();
        assert_eq!(c.rules.port_scan_ports, 30);
        assert_eq!(c.policy.block_ttl, Duration::from_secs(300));
        assert!(c.policy.dry_run);
        assert_eq!(c.features.long_window, Duration::from_secs(120));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = |s: &str| {
            DetectConfig::default()
                .apply(&[s.into()])
                .unwrap_err()
                .to_string()
        };
        assert!(err("rules.port_scan=3").contains("unknown setting rules.port_scan"));
        assert!(err("nonsense").contains("SECTION.KEY=VALUE"));
        assert!(err("rules.port_scan_ports=many").contains("bad value for rules.port_scan_ports"));
        assert!(err("policy.block_ttl=soon").contains("policy.block_ttl"));
        assert!(err("policy.block_confidence=2").contains("between 0 and 1"));
    }

    fn syn(src: [u8; 4], dst_port: u16, now_ns: u64) -> FlowRecord {
        let key = astra_common::FlowKey {
            src: std::net::Ipv4Addr::from(src).to_ipv6_mapped().octets(),
            dst: std::net::Ipv4Addr::new(198, 18, 0, 1)
                .to_ipv6_mapped()
                .octets(),
            src_port: 40_000,
            dst_port,
            ifindex: 1,
            proto: 6,
            direction: 0,
            _pad: [0; 2],
        };
        let value = astra_common::FlowValue {
            packets: 1,
            bytes: 60,
            first_seen_ns: now_ns - 1_000_000_000,
            last_seen_ns: now_ns - 1_000_000_000,
            syn_count: 1,
            tcp_flags: 0x0202,
            min_len: 60,
            max_len: 60,
            ..Default::default()
        };
        FlowRecord::new(key, value)
    }

    /// One detection pass over `flows`, as the agent's poll makes it.
    fn pass(
        engine: &mut Engine,
        flows: &[FlowRecord],
        now_ns: u64,
        lists: &mut Lists,
    ) -> PassStats {
        let snapshot: Vec<_> = flows.iter().map(|r| (r.key, r.value)).collect();
        let mut table = FlowTable::new(Duration::from_secs(600), Duration::from_secs(600));
        table.apply(&snapshot, now_ns);
        engine
            .run(now_ns, 1_000_000, &table, &[], lists, &Metrics::new())
            .unwrap()
    }

    #[test]
    fn only_sources_without_alerts_feed_the_training_sample() {
        let dir = std::env::temp_dir().join(format!("astra-engine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut engine = Engine::new(DetectConfig::default(), &dir, dir.join("eve.json")).unwrap();
        let mut lists = Lists::from_parts(crate::store::Store::open_in_memory(), None);
        let now_ns = 100_000_000_000;
        // One scanner (40 ports) and three quiet sources (one conversation each).
        let mut flows: Vec<FlowRecord> = (0..40)
            .map(|p| syn([198, 18, 0, 66], 1000 + p, now_ns))
            .collect();
        for host in 5..8 {
            flows.push(syn([198, 18, 0, host], 443, now_ns));
        }
        let stats = pass(&mut engine, &flows, now_ns, &mut lists);
        assert!(stats.alerts >= 1, "the scan raised no alert");
        assert_eq!(engine.model_status().rows_collected, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An imported classifier that names the scan's type raises its risk by one and says so;
    /// the rule's action stands.
    #[test]
    fn the_classifier_joins_the_alerts_of_the_sources_it_agrees_on() {
        let dir = std::env::temp_dir().join(format!("astra-engine-cls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // More than 10 distinct ports: a port scan; else benign.
        let model = crate::detect::ensemble::stump_classifier(
            &["distinct_dst_ports"],
            ["benign", "port_scan"],
            10.0,
            [1.0, 0.0],
            [0.0, 1.0],
        );
        std::fs::write(dir.join("classifier.json"), model.to_json()).unwrap();
        let mut engine = Engine::new(DetectConfig::default(), &dir, dir.join("eve.json")).unwrap();
        let mut lists = Lists::from_parts(crate::store::Store::open_in_memory(), None);
        let now_ns = 100_000_000_000;
        let flows: Vec<FlowRecord> = (0..40)
            .map(|p| syn([198, 18, 0, 66], 1000 + p, now_ns))
            .collect();
        let stats = pass(&mut engine, &flows, now_ns, &mut lists);
        let a = stats
            .raised
            .iter()
            .find(|a| a.attack_type == AttackType::PortScan)
            .expect("a port scan alert");
        let v = a
            .evidence
            .classifier
            .as_ref()
            .expect("the classifier's verdict");
        assert_eq!((v.class.as_str(), v.probability), ("port_scan", 1.0));
        assert_eq!(
            a.risk_score,
            crate::detect::risk_score(a.attack_type, a.confidence) + 1
        );
        assert!(
            a.evidence
                .notes
                .iter()
                .any(|n| n.contains("classifier agrees")),
            "{:?}",
            a.evidence.notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_known_client_of_a_protected_target_is_not_blamed_for_unanswered_syns() {
        use crate::detect::{Crossed, Evidence};
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (client, target) = (ip("198.18.1.2"), ip("198.18.1.1"));
        let mut a = Alert {
            id: String::new(),
            timestamp_ms: 0,
            attack_type: AttackType::SynFlood,
            severity: crate::detect::Severity::High,
            confidence: 0.95,
            risk_score: 8,
            source: Some(client),
            targets: vec![target],
            target_ports: vec![80],
            rule: String::new(),
            evidence: Evidence {
                thresholds: vec![Crossed::new(
                    "half_open_to_one_destination",
                    100.0,
                    100.0,
                    10,
                )],
                ..Default::default()
            },
            action: crate::detect::Action::Recorded,
            recommended: vec![],
        };
        let known = std::collections::HashMap::from([(client, 0)]);
        assert!(unanswered_client(&a, &known, &[target]));
        // Not known, not protected, or flooding fast: blamed as before.
        assert!(!unanswered_client(&a, &Default::default(), &[target]));
        assert!(!unanswered_client(&a, &known, &[]));
        a.evidence.thresholds[0].name = "pps".into();
        assert!(!unanswered_client(&a, &known, &[target]));
    }

    #[test]
    fn own_addresses_include_loopback() {
        assert!(crate::addr::own_addresses().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
    }
}
