//! CrowdSec decisions as list entries: what a Local API's decision stream
//! (`GET /v1/decisions/stream`) says, kept in force as block and throttle entries of source
//! `crowdsec`. The HTTP side lives in the agent (`agent::crowdsec`); this is the part that
//! needs no network: the stream's JSON, the decision types' mapping, and the bookkeeping that
//! makes repeated and overlapping decisions come out right.
//!
//! What a real LAPI (crowdsec 1.4.6) does and this relies on: an empty list is `null`;
//! `duration` is a Go duration (`3h59m59.04s`, negative once a decision is deleted or
//! expired); the same deletion comes back in several deltas; one address may hold several
//! decisions at once (a `cscli` ban beside a scenario's).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    addr::{RateLimit, canonical_net, check_not_everything, parse_net, parse_rate},
    error::Result,
    lists::Lists,
    store::{EntrySource, ListKind, Rate, StoredEntry},
};

/// One page of the decision stream. Either list may be `null` or missing.
#[derive(Debug, Default, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<Decision>>,
    #[serde(default)]
    pub deleted: Option<Vec<Decision>>,
}

/// A decision as the LAPI sends it (the fields Astra uses; others are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub value: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
}

/// A bad `--crowdsec-type` mapping, or a Go duration that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrowdsecError {
    #[error(
        "invalid --crowdsec-type '{0}': use TYPE=block, TYPE=ignore or TYPE=throttle:RATE (e.g. captcha=throttle:20pps; TYPE * for every other type)"
    )]
    Mapping(String),
    #[error("invalid --crowdsec-type '{spec}': {reason}")]
    Rate { spec: String, reason: String },
    #[error("not a Go duration: '{0}'")]
    Duration(String),
}

/// Seconds in a Go duration string (`1h2m3.5s`, `-14.5ms`, `0s`), negative for negative ones.
pub fn parse_go_duration(s: &str) -> Result<f64, CrowdsecError> {
    let bad = || CrowdsecError::Duration(s.chars().take(64).collect());
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = tail;
    }
    Ok(if neg { -total } else { total })
}

/// What a decision type becomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Dropped in the kernel (a block entry).
    Block,
    /// Held to a rate in the kernel (a throttle entry).
    Throttle(#[serde(skip)] Rate),
    /// Not enforced (counted as ignored).
    Ignore,
}

/// Decision types to actions: `ban` blocks; `captcha` (which a network sensor cannot show)
/// and `throttle` hold the source to 20 packets a second, enough for a person to browse and
/// too little for a scan or a flood; any other type is ignored. `--crowdsec-type` entries
/// override these, and `*` stands for every type not named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeMap {
    rules: Vec<(String, Action)>,
}

/// The throttle rate of the default mapping.
pub const DEFAULT_THROTTLE: &str = "20pps";

impl Default for TypeMap {
    fn default() -> Self {
        let rate = throttle_rate(DEFAULT_THROTTLE).expect("a valid default rate");
        Self {
            rules: vec![
                ("ban".into(), Action::Block),
                ("captcha".into(), Action::Throttle(rate)),
                ("throttle".into(), Action::Throttle(rate)),
                ("*".into(), Action::Ignore),
            ],
        }
    }
}

fn throttle_rate(s: &str) -> Result<Rate, crate::addr::AddrError> {
    let limit = parse_rate(s)?;
    let (pps, bps) = match limit {
        RateLimit::Pps(p) => (p, 0),
        RateLimit::Bps(b) => (0, b),
    };
    Ok(Rate {
        pps,
        bps,
        burst_ms: Rate::DEFAULT_BURST_MS,
    })
}

impl TypeMap {
    /// The default mapping with `specs` (`TYPE=ACTION`) laid over it; types are matched
    /// case-insensitively.
    pub fn parse(specs: &[String]) -> Result<Self, CrowdsecError> {
        let mut map = Self::default();
        for spec in specs {
            let (t, action) = spec
                .split_once('=')
                .ok_or_else(|| CrowdsecError::Mapping(spec.clone()))?;
            let t = t.trim().to_ascii_lowercase();
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(CrowdsecError::Mapping(spec.clone()));
            }
            let action = match action.trim() {
                "block" => Action::Block,
                "ignore" => Action::Ignore,
                a => match a.strip_prefix("throttle:") {
                    Some(rate) => {
                        Action::Throttle(throttle_rate(rate).map_err(|e| CrowdsecError::Rate {
                            spec: spec.clone(),
                            reason: e.to_string(),
                        })?)
                    }
                    None => return Err(CrowdsecError::Mapping(spec.clone())),
                },
            };
            map.rules.retain(|(k, _)| *k != t);
            // Named types before the catch-all.
            let at = map.rules.iter().position(|(k, _)| k == "*");
            match (t.as_str(), at) {
                (_, None) | ("*", _) => map.rules.push((t, action)),
                (_, Some(i)) => map.rules.insert(i, (t, action)),
            }
        }
        Ok(map)
    }

    /// The action for decisions of type `t`.
    pub fn action(&self, t: &str) -> &Action {
        let t = t.to_ascii_lowercase();
        self.rules
            .iter()
            .find(|(k, _)| *k == t)
            .or_else(|| self.rules.iter().find(|(k, _)| k == "*"))
            .map_or(&Action::Ignore, |(_, a)| a)
    }

    /// The mapping as `TYPE=ACTION` lines, for status and docs.
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|(t, a)| match a {
                Action::Block => format!("{t}=block"),
                Action::Ignore => format!("{t}=ignore"),
                Action::Throttle(r) if r.pps > 0 => format!("{t}=throttle:{}pps", r.pps),
                Action::Throttle(r) => {
                    format!("{t}=throttle:{}", crate::addr::format_bps(r.bps))
                }
            })
            .collect()
    }
}

/// Above this many entries to settle, the store is read whole rather than entry by entry.
const BULK_READ: usize = 256;

/// What one page of the stream changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Entries written (new, or with a new expiry).
    pub applied: usize,
    /// Entries removed because no decision holds them any more.
    pub removed: usize,
    /// Decisions left out because an entry of another source holds the address, or it
    /// covers one of this host's own addresses, or all of them.
    pub skipped: usize,
    /// Decisions of a type mapped to `ignore`, or of a scope other than `Ip` and `Range`.
    pub ignored: usize,
    /// Decisions whose value or duration could not be read.
    pub invalid: usize,
}

/// A decision in force: which entry it holds, until when (UNIX seconds), and what the entry
/// says of it.
#[derive(Clone, Debug)]
struct Held {
    key: (ListKind, IpNet),
    until: u64,
    origin: String,
    scenario: String,
    rate: Option<Rate>,
}

/// The decisions in force, by id, and the entries they hold. A pull's deltas change the
/// entries only as far as they change what is in force: an entry lives as long as its
/// longest decision, and a decision deleted twice is deleted once.
#[derive(Debug)]
pub struct Decisions {
    map: TypeMap,
    held: HashMap<i64, Held>,
    /// Addresses of this host: never blocked, whatever a fleet decides.
    own: HashSet<IpAddr>,
}

/// The tag of entries from decisions of `origin` (`crowdsec/CAPI`, `crowdsec/cscli`).
pub fn origin_tag(origin: &str) -> String {
    let clean: String = origin
        .chars()
        .filter(|c| c.is_alphanumeric() || "-_.:@+".contains(*c))
        .take(48)
        .collect();
    format!(
        "crowdsec/{}",
        if clean.is_empty() { "unknown" } else { &clean }
    )
}

impl Decisions {
    pub fn new(map: TypeMap, own: HashSet<IpAddr>) -> Self {
        Self {
            map,
            held: HashMap::new(),
            own,
        }
    }

    /// This host's addresses, as they are now (they change with DHCP and interfaces).
    pub fn set_own(&mut self, own: HashSet<IpAddr>) {
        self.own = own;
    }

    /// Decisions in force, by origin.
    pub fn by_origin(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for h in self.held.values() {
            *out.entry(h.origin.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Decisions in force.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// What `d` would hold, or why it holds nothing.
    fn read(&self, d: &Decision, now: u64) -> Result<Held, Outcome> {
        let kind = match self.map.action(&d.kind) {
            Action::Block => (ListKind::Block, None),
            Action::Throttle(r) => (ListKind::Throttle, Some(*r)),
            Action::Ignore => return Err(Outcome::Ignored),
        };
        let net = match d.scope.to_ascii_lowercase().as_str() {
            "ip" => d
                .value
                .parse::<IpAddr>()
                .map(crate::addr::host_net)
                .map_err(|_| Outcome::Invalid)?,
            "range" => parse_net(&d.value).map_err(|_| Outcome::Invalid)?,
            _ => return Err(Outcome::Ignored),
        };
        let net = canonical_net(net);
        if check_not_everything(&net, "", false).is_err()
            || self.own.iter().any(|a| net.contains(a))
        {
            return Err(Outcome::Skipped);
        }
        let secs = parse_go_duration(&d.duration).map_err(|_| Outcome::Invalid)?;
        if secs <= 0.0 {
            return Err(Outcome::Expired);
        }
        Ok(Held {
            key: (kind.0, net),
            until: now.saturating_add(secs.ceil() as u64),
            origin: d.origin.clone(),
            scenario: d.scenario.clone(),
            rate: kind.1,
        })
    }

    /// Applies one page of the stream. `startup`: the page is everything in force (the
    /// first pull, and the first after a failed one), so entries of source `crowdsec` that it
    /// does not hold are removed, as are decisions remembered from before.
    pub fn apply(
        &mut self,
        lists: &mut Lists,
        stream: &Stream,
        startup: bool,
        now: u64,
    ) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let mut touched: HashSet<(ListKind, IpNet)> = HashSet::new();
        let mut stored = None;
        if startup {
            touched.extend(self.held.drain().map(|(_, h)| h.key));
            let all = read_all(lists)?;
            touched.extend(
                all.values()
                    .filter(|e| e.source == EntrySource::Crowdsec)
                    .map(|e| (e.kind, e.net)),
            );
            stored = Some(all);
        }
        for d in stream.deleted.iter().flatten() {
            if let Some(h) = self.held.remove(&d.id) {
                touched.insert(h.key);
            }
        }
        for d in stream.new.iter().flatten() {
            match self.read(d, now) {
                Ok(h) => {
                    touched.insert(h.key);
                    if let Some(old) = self.held.insert(d.id, h) {
                        touched.insert(old.key);
                    }
                }
                Err(Outcome::Ignored) => report.ignored += 1,
                Err(Outcome::Invalid) => {
                    report.invalid += 1;
                    tracing::warn!(id = d.id, scope = %d.scope, value = %d.value, duration = %d.duration, "CrowdSec decision not understood; ignored");
                }
                Err(Outcome::Skipped) => {
                    report.skipped += 1;
                    tracing::warn!(id = d.id, value = %d.value, "CrowdSec decision covers this host's own address (or every address); not enforced");
                }
                Err(Outcome::Expired) => {}
            }
        }
        if stored.is_none() && touched.len() > BULK_READ {
            // Many entries to settle: one read of the list beats a lookup each.
            stored = Some(read_all(lists)?);
        }
        self.settle(lists, &touched, stored.as_ref(), now, &mut report)?;
        Ok(report)
    }

    /// Makes the entries of `keys` what the decisions in force say: the longest decision's
    /// expiry, or no entry. Entries of other sources are left alone.
    fn settle(
        &self,
        lists: &mut Lists,
        keys: &HashSet<(ListKind, IpNet)>,
        all: Option<&HashMap<(ListKind, IpNet), StoredEntry>>,
        now: u64,
        report: &mut ApplyReport,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut longest: HashMap<(ListKind, IpNet), &Held> = HashMap::new();
        for h in self.held.values() {
            if keys.contains(&h.key) {
                let e = longest.entry(h.key).or_insert(h);
                if h.until > e.until {
                    *e = h;
                }
            }
        }
        let mut write = Vec::new();
        let mut remove = Vec::new();
        for key in keys {
            let stored = match all {
                Some(all) => all.get(key).cloned(),
                None => lists.store().get(key.0, &key.1)?,
            };
            let ours = stored
                .as_ref()
                .is_none_or(|e| e.source == EntrySource::Crowdsec || e.is_expired(now));
            match longest.get(key) {
                Some(_) if !ours => report.skipped += 1,
                Some(h) => {
                    let reason = if h.scenario.is_empty() {
                        format!("crowdsec decision from {}", h.origin)
                    } else {
                        h.scenario.chars().take(200).collect()
                    };
                    let mut e = StoredEntry::new(
                        key.0,
                        key.1,
                        Duration::from_secs(h.until.saturating_sub(now).max(1)),
                        &reason,
                        EntrySource::Crowdsec,
                        now,
                    )
                    .with_tag(origin_tag(&h.origin));
                    e.rate = h.rate;
                    let same = stored.as_ref().is_some_and(|s| {
                        s.expires_at == e.expires_at
                            && s.reason == e.reason
                            && s.tag == e.tag
                            && s.rate == e.rate
                    });
                    if !same {
                        if let Some(s) = &stored {
                            e.created_at = s.created_at;
                        }
                        write.push(e);
                    }
                }
                None if ours && stored.is_some() => remove.push(*key),
                None => {}
            }
        }
        if !write.is_empty() {
            report.applied += write.len();
            lists.add_many_in(&write, crate::lists::feeds::SYNC_BATCH)?;
        }
        if !remove.is_empty() {
            report.removed += lists.remove_many_in(&remove, crate::lists::feeds::SYNC_BATCH)?;
        }
        Ok(())
    }
}

/// Every stored entry, by key.
fn read_all(lists: &Lists) -> Result<HashMap<(ListKind, IpNet), StoredEntry>> {
    Ok(lists
        .store()
        .list(None)?
        .into_iter()
        .map(|e| ((e.kind, e.net), e))
        .collect())
}

/// Why a decision holds no entry.
enum Outcome {
    Ignored,
    Invalid,
    Skipped,
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn lists() -> Lists {
        Lists::from_parts(Store::open_in_memory(), None)
    }

    fn d(id: i64, t: &str, scope: &str, value: &str, dur: &str) -> Decision {
        Decision {
            id,
            origin: "cscli".into(),
            kind: t.into(),
            scope: scope.into(),
            value: value.into(),
            duration: dur.into(),
            scenario: format!("manual '{t}' from 'test'"),
        }
    }

    /// One page of the stream with `new` and `deleted`, applied.
    fn pull(
        ds: &mut Decisions,
        l: &mut Lists,
        new: Vec<Decision>,
        deleted: Vec<Decision>,
        startup: bool,
        now: u64,
    ) -> ApplyReport {
        let page = Stream {
            new: Some(new),
            deleted: Some(deleted),
        };
        ds.apply(l, &page, startup, now).unwrap()
    }

    fn rows(l: &Lists) -> Vec<StoredEntry> {
        l.store().list(None).unwrap()
    }

    #[test]
    fn go_durations_as_the_lapi_writes_them() {
        let close = |s: &str, v: f64| {
            let got = parse_go_duration(s).unwrap();
            assert!((got - v).abs() < 1e-6, "{s}: {got} != {v}");
        };
        close("3h59m59.04s", 4.0 * 3600.0 - 0.96);
        close("59m58.514608682s", 3598.514608682);
        close("-14.556456ms", -0.014556456);
        close("0s", 0.0);
        close("0", 0.0);
        close("1h", 3600.0);
        close("1.5µs", 1.5e-6);
        close("72h0m0s", 72.0 * 3600.0);
        for bad in ["", "-", "1", "h", "1x", "1h2", "1..5s", "s1"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stream_reads_nulls_and_unknown_fields() {
        let s: Stream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert!(s.new.is_none() && s.deleted.is_none());
        let s: Stream = serde_json::from_str(
            r#"{"new":[{"duration":"59m58.5s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'x'","scope":"Ip","type":"ban","value":"198.18.5.5","simulated":false,"until":"2026-12-02T06:36:08Z"}]}"#,
        )
        .unwrap();
        assert_eq!(s.new.unwrap()[0].value, "198.18.5.5");
        assert!(s.deleted.is_none());
    }

    #[test]
    fn mapping_defaults_overrides_and_errors() {
        let m = TypeMap::default();
        assert_eq!(m.action("ban"), &Action::Block);
        assert_eq!(m.action("BAN"), &Action::Block);
        assert!(matches!(m.action("captcha"), Action::Throttle(r) if r.pps == 20));
        assert_eq!(m.action("something"), &Action::Ignore);
        let m = TypeMap::parse(&["captcha=block".into(), "*=throttle:1mbit".into()]).unwrap();
        assert_eq!(m.action("captcha"), &Action::Block);
        assert!(matches!(m.action("other"), Action::Throttle(r) if r.bps == 1_000_000));
        assert_eq!(m.action("ban"), &Action::Block);
        for bad in [
            "ban",
            "ban=drop",
            "=block",
            "ban=throttle:",
            "ban=throttle:10bps",
        ] {
            assert!(TypeMap::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(
            TypeMap::parse(&["x=throttle:10bps".into()])
                .unwrap_err()
                .to_string()
                .contains("ambiguous rate")
        );
    }

    #[test]
    fn bans_ranges_and_captchas_become_entries_with_their_expiry() {
        let mut l = lists();
        let mut ds = Decisions::new(TypeMap::default(), HashSet::new());
        let now = 1_000_000;
        let r = pull(
            &mut ds,
            &mut l,
            vec![
                d(1, "ban", "Ip", "198.18.5.5", "59m58.5s"),
                d(2, "ban", "Range", "198.19.0.0/24", "2h"),
                d(3, "captcha", "Ip", "2001:db8::5", "4h"),
                d(4, "ban", "Range", "2001:db8:1::/48", "1h"),
                d(5, "ban", "Country", "FR", "1h"),
                d(6, "ban", "Ip", "not-an-address", "1h"),
                d(7, "ban", "range", "198.20.0.0/16", "1h"),
            ],
            vec![],
            true,
            now,
        );
        assert_eq!(
            r,
            ApplyReport {
                applied: 5,
                ignored: 1,
                invalid: 1,
                ..Default::default()
            }
        );
        let rows = rows(&l);
        let get = |net: &str| {
            rows.iter()
                .find(|e| e.net.to_string() == net)
                .unwrap_or_else(|| panic!("{net} not stored"))
        };
        let ban = get("198.18.5.5/32");
        assert_eq!(
            (ban.kind, ban.source, ban.expires_at),
            (ListKind::Block, EntrySource::Crowdsec, Some(now + 3599))
        );
        assert_eq!(ban.tag, "crowdsec/cscli");
        assert_eq!(ban.reason, "manual 'ban' from 'test'");
        assert_eq!(get("198.19.0.0/24").expires_at, Some(now + 7200));
        let captcha = get("2001:db8::5/128");
        assert_eq!(captcha.kind, ListKind::Throttle);
        assert_eq!(captcha.rate.map(|r| r.pps), Some(20));
        assert_eq!(get("2001:db8:1::/48").kind, ListKind::Block);
        assert_eq!(get("198.20.0.0/16").kind, ListKind::Block);
        assert_eq!(ds.by_origin().get("cscli"), Some(&5));
    }

    #[test]
    fn deletions_are_idempotent_and_the_longest_decision_holds_the_entry() {
        let mut l = lists();
        let mut ds = Decisions::new(TypeMap::default(), HashSet::new());
        let now = 1_000_000;
        let (short, long) = (
            d(1, "ban", "Ip", "198.18.5.5", "1h"),
            d(2, "ban", "Ip", "198.18.5.5", "4h"),
        );
        pull(
            &mut ds,
            &mut l,
            vec![short.clone(), long.clone()],
            vec![],
            true,
            now,
        );
        assert_eq!(rows(&l)[0].expires_at, Some(now + 4 * 3600));
        // The long one goes: the short one still holds the address, for its own time.
        let r = pull(&mut ds, &mut l, vec![], vec![long.clone()], false, now + 10);
        assert_eq!((r.applied, r.removed), (1, 0));
        assert_eq!(rows(&l)[0].expires_at, Some(now + 3600));
        // The same deletion again, as the LAPI sends it: nothing happens.
        let r = pull(&mut ds, &mut l, vec![], vec![long], false, now + 20);
        assert_eq!(r, ApplyReport::default());
        assert_eq!(rows(&l).len(), 1);
        let r = pull(
            &mut ds,
            &mut l,
            vec![],
            vec![short.clone()],
            false,
            now + 30,
        );
        assert_eq!(r.removed, 1);
        assert!(rows(&l).is_empty());
        let r = pull(&mut ds, &mut l, vec![], vec![short], false, now + 40);
        assert_eq!(r, ApplyReport::default());
    }

    #[test]
    fn other_sources_and_own_addresses_win() {
        let mut l = lists();
        let now = crate::clock::now_unix();
        let manual: IpNet = "198.18.7.7/32".parse().unwrap();
        l.add_manual(ListKind::Block, manual, None, "by hand")
            .unwrap();
        let own: IpAddr = "198.18.9.1".parse().unwrap();
        let mut ds = Decisions::new(TypeMap::default(), HashSet::from([own]));
        let r = pull(
            &mut ds,
            &mut l,
            vec![
                d(1, "ban", "Ip", "198.18.7.7", "1h"),
                d(2, "ban", "Ip", "198.18.9.1", "1h"),
                d(3, "ban", "Range", "198.18.9.0/24", "1h"),
                d(4, "ban", "Range", "0.0.0.0/0", "1h"),
            ],
            vec![],
            true,
            now,
        );
        assert_eq!((r.applied, r.skipped), (0, 4));
        // Deleting the decision leaves the manual entry alone.
        let r = pull(
            &mut ds,
            &mut l,
            vec![],
            vec![d(1, "ban", "Ip", "198.18.7.7", "-1s")],
            false,
            now,
        );
        assert_eq!(r.removed, 0);
        let rows = rows(&l);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].source, EntrySource::Manual);
    }

    #[test]
    fn a_startup_page_removes_what_the_lapi_no_longer_holds() {
        let mut l = lists();
        let now = 1_000_000;
        let mut ds = Decisions::new(TypeMap::default(), HashSet::new());
        pull(
            &mut ds,
            &mut l,
            vec![
                d(1, "ban", "Ip", "198.18.5.5", "1h"),
                d(2, "ban", "Ip", "198.18.5.6", "1h"),
            ],
            vec![],
            true,
            now,
        );
        // A restart: nothing remembered, the store still holds both; the LAPI now holds one.
        let mut ds = Decisions::new(TypeMap::default(), HashSet::new());
        let r = pull(
            &mut ds,
            &mut l,
            vec![d(2, "ban", "Ip", "198.18.5.6", "1h")],
            vec![],
            true,
            now,
        );
        assert_eq!((r.applied, r.removed), (0, 1));
        let rows = rows(&l);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].net.to_string(), "198.18.5.6/32");
        assert_eq!(ds.len(), 1);
    }
}
