//! The block and allow lists: the durable store is written first (so a committed decision
//! survives a crash or reboot), then the kernel maps (so the decision is in force when the call
//! returns).

pub mod crowdsec;
pub mod feeds;
pub mod synproxy;

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    path::Path,
    time::Duration,
};

use astra_common::{ListEntry, ProtectEntry, ThrottleEntry, source};
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    clock::{mono_now_ns, now_unix},
    dataplane::maps::PinnedMaps,
    error::{Error, Result},
    store::{EntrySource, ListKind, Protection, Rate, Store, StoredEntry},
};

/// Converts a wall-clock expiry into the kernel's monotonic clock as of now. Expiries already in
/// the past map to 1 ns (expired), never to 0 (which would mean permanent).
fn kernel_expiry(expires_at: Option<u64>, now_unix: u64, now_mono: u64) -> u64 {
    match expires_at {
        None => 0,
        Some(t) if t <= now_unix => 1,
        // Saturating: an expiry centuries away (an import may carry one) must not wrap into
        // the past or panic.
        Some(t) => now_mono.saturating_add((t - now_unix).saturating_mul(1_000_000_000)),
    }
}

fn source_code(s: EntrySource) -> u32 {
    match s {
        EntrySource::Manual => source::MANUAL,
        EntrySource::Auto => source::AUTO,
        EntrySource::Feed => source::FEED,
        EntrySource::Crowdsec => source::CROWDSEC,
    }
}

fn source_from_code(c: u32) -> EntrySource {
    match c {
        source::AUTO => EntrySource::Auto,
        source::FEED => EntrySource::Feed,
        source::CROWDSEC => EntrySource::Crowdsec,
        _ => EntrySource::Manual,
    }
}

fn v4(net: &IpNet) -> Option<([u8; 4], u8)> {
    match net.addr() {
        IpAddr::V4(a) => Some((a.octets(), net.prefix_len())),
        IpAddr::V6(_) => None,
    }
}

fn v6(net: &IpNet) -> Option<([u8; 16], u8)> {
    match net.addr() {
        IpAddr::V6(a) => Some((a.octets(), net.prefix_len())),
        IpAddr::V4(_) => None,
    }
}

/// Reads one kernel entry, if present.
fn kernel_get(maps: &PinnedMaps, kind: ListKind, net: &IpNet) -> Option<ListEntry> {
    match (kind, v4(net), v6(net)) {
        (ListKind::Block, Some((a, 32)), _) => maps.block_v4.get(&a, 0).ok(),
        (ListKind::Block, Some((a, l)), _) => maps.bnet_v4.get(&Key::new(l.into(), a), 0).ok(),
        (ListKind::Block, _, Some((a, 128))) => maps.block_v6.get(&a, 0).ok(),
        (ListKind::Block, _, Some((a, l))) => maps.bnet_v6.get(&Key::new(l.into(), a), 0).ok(),
        (ListKind::Allow, Some((a, l)), _) => maps.anet_v4.get(&Key::new(l.into(), a), 0).ok(),
        (ListKind::Allow, _, Some((a, l))) => maps.anet_v6.get(&Key::new(l.into(), a), 0).ok(),
        (ListKind::Quarantine, Some((a, 32)), _) => maps.quar_v4.get(&a, 0).ok(),
        (ListKind::Quarantine, _, Some((a, 128))) => maps.quar_v6.get(&a, 0).ok(),
        (ListKind::Throttle, ..) => kernel_throttle(maps, net).map(|t| t.list),
        (ListKind::Protect, ..) => kernel_protect(maps, net).map(|p| p.budget.list),
        _ => None,
    }
}

fn kernel_protect(maps: &PinnedMaps, net: &IpNet) -> Option<ProtectEntry> {
    match (v4(net), v6(net)) {
        (Some((a, 32)), _) => maps.prot_v4.get(&a, 0).ok(),
        (_, Some((a, 128))) => maps.prot_v6.get(&a, 0).ok(),
        _ => None,
    }
}

/// The kernel form of a protect entry: the SYN budget as a throttle's packet rate (fresh, see
/// [`throttle_value`]), the ports and bits, and the counters of the entry it replaces.
fn protect_value(
    list: ListEntry,
    rate: &Rate,
    p: &Protection,
    old: Option<ProtectEntry>,
) -> ProtectEntry {
    let old = old.unwrap_or_default();
    let budget = Rate { bps: 0, ..*rate };
    let mut ports = [0u16; 8];
    for (slot, port) in ports.iter_mut().zip(&p.ports) {
        *slot = *port;
    }
    ProtectEntry {
        budget: throttle_value(list, &budget, Some(old.budget)),
        ports,
        flags: p.flags(),
        _pad: 0,
        known_syns: old.known_syns,
        reflected: old.reflected,
        reflected_bytes: old.reflected_bytes,
        cookies: old.cookies,
    }
}

/// What an entry carries besides its [`ListEntry`]: a throttle's or a protection's rate, and
/// a protection's terms.
#[derive(Clone, Copy, Default)]
struct Terms<'a> {
    rate: Option<&'a Rate>,
    protect: Option<&'a Protection>,
}

impl<'a> Terms<'a> {
    const NONE: Terms<'static> = Terms {
        rate: None,
        protect: None,
    };

    fn of(e: &'a StoredEntry) -> Self {
        Terms {
            rate: e.rate.as_ref(),
            protect: e.protect.as_ref(),
        }
    }
}

fn kernel_throttle(maps: &PinnedMaps, net: &IpNet) -> Option<ThrottleEntry> {
    match (v4(net), v6(net)) {
        (Some((a, l)), _) => maps.tnet_v4.get(&Key::new(l.into(), a), 0).ok(),
        (_, Some((a, l))) => maps.tnet_v6.get(&Key::new(l.into(), a), 0).ok(),
        _ => None,
    }
}

/// The kernel form of a throttle entry: the rate as GCRA costs (see `ThrottleEntry`), fresh
/// arrival times (a changed rate starts from a full burst), and the counters of the entry it
/// replaces.
fn throttle_value(list: ListEntry, rate: &Rate, old: Option<ThrottleEntry>) -> ThrottleEntry {
    let old = old.unwrap_or_default();
    ThrottleEntry {
        list,
        packet_ns: match rate.pps {
            0 => 0,
            pps => (1_000_000_000 / pps).max(1),
        },
        byte_ns_fp16: match rate.bps {
            0 => 0,
            bps => ((8_000_000_000u128 << 16) / u128::from(bps)).clamp(1, u64::MAX.into()) as u64,
        },
        burst_ns: rate.burst_ms.saturating_mul(1_000_000),
        packet_tat_ns: 0,
        byte_tat_ns: 0,
        dropped: old.dropped,
        dropped_bytes: old.dropped_bytes,
    }
}

fn kernel_insert(
    maps: &mut PinnedMaps,
    kind: ListKind,
    net: &IpNet,
    e: ListEntry,
    terms: Terms<'_>,
) -> Result<()> {
    let throttle = |maps: &PinnedMaps| -> Result<ThrottleEntry> {
        let rate = terms
            .rate
            .ok_or_else(|| Error::Usage(format!("throttling {net} needs a rate")))?;
        Ok(throttle_value(e, rate, kernel_throttle(maps, net)))
    };
    let protect = |maps: &PinnedMaps| -> Result<ProtectEntry> {
        let (Some(rate), Some(p)) = (terms.rate, terms.protect) else {
            return Err(Error::Usage(format!(
                "protecting {net} needs a budget and its terms"
            )));
        };
        Ok(protect_value(e, rate, p, kernel_protect(maps, net)))
    };
    let r = match (kind, v4(net), v6(net)) {
        (ListKind::Block, Some((a, 32)), _) => maps.block_v4.insert(a, e, 0),
        (ListKind::Block, Some((a, l)), _) => maps.bnet_v4.insert(&Key::new(l.into(), a), e, 0),
        (ListKind::Block, _, Some((a, 128))) => maps.block_v6.insert(a, e, 0),
        (ListKind::Block, _, Some((a, l))) => maps.bnet_v6.insert(&Key::new(l.into(), a), e, 0),
        (ListKind::Allow, Some((a, l)), _) => maps.anet_v4.insert(&Key::new(l.into(), a), e, 0),
        (ListKind::Allow, _, Some((a, l))) => maps.anet_v6.insert(&Key::new(l.into(), a), e, 0),
        (ListKind::Quarantine, Some((a, 32)), _) => maps.quar_v4.insert(a, e, 0),
        (ListKind::Quarantine, _, Some((a, 128))) => maps.quar_v6.insert(a, e, 0),
        (ListKind::Quarantine, ..) => {
            return Err(Error::Usage(format!(
                "{net}: quarantine takes single addresses, not prefixes"
            )));
        }
        (ListKind::Throttle, Some((a, l)), _) => {
            let t = throttle(maps)?;
            maps.tnet_v4.insert(&Key::new(l.into(), a), t, 0)
        }
        (ListKind::Throttle, _, Some((a, l))) => {
            let t = throttle(maps)?;
            maps.tnet_v6.insert(&Key::new(l.into(), a), t, 0)
        }
        (ListKind::Protect, Some((a, 32)), _) => {
            let p = protect(maps)?;
            maps.prot_v4.insert(a, p, 0)
        }
        (ListKind::Protect, _, Some((a, 128))) => {
            let p = protect(maps)?;
            maps.prot_v6.insert(a, p, 0)
        }
        (ListKind::Protect, ..) => {
            return Err(Error::Usage(format!(
                "{net}: protect takes single addresses, not prefixes"
            )));
        }
        _ => unreachable!("an IpNet is either v4 or v6"),
    };
    r.map_err(|err| Error::bpf(format!("writing {net} into the kernel {kind}list"), err))
}

/// Does any allowlist prefix the kernel holds overlap `net`? For an exact address that is one
/// longest-prefix lookup in the kernel's own trie.
fn kernel_allow_overlaps(maps: &PinnedMaps, net: &IpNet) -> bool {
    match (v4(net), v6(net)) {
        (Some((a, 32)), _) => maps.anet_v4.get(&Key::new(32, a), 0).is_ok(),
        (_, Some((a, 128))) => maps.anet_v6.get(&Key::new(128, a), 0).is_ok(),
        _ => AllowIndex::read(maps).overlaps(net),
    }
}

/// The allowlist prefixes the kernel holds, indexed by prefix length, to decide which block
/// entries get [`ListEntry::ALLOW_OVERLAP`] when many are written at once.
#[derive(Default)]
struct AllowIndex {
    nets: HashSet<IpNet>,
    lens_v4: BTreeSet<u8>,
    lens_v6: BTreeSet<u8>,
}

impl AllowIndex {
    fn read(maps: &PinnedMaps) -> Self {
        let mut index = Self::default();
        let v4 = maps
            .anet_v4
            .iter()
            .flatten()
            .filter_map(|(k, _)| lpm_net(&k));
        let v6 = maps
            .anet_v6
            .iter()
            .flatten()
            .filter_map(|(k, _)| lpm_net(&k));
        for net in v4.chain(v6) {
            index.insert(net);
        }
        index
    }

    fn insert(&mut self, net: IpNet) {
        match net {
            IpNet::V4(_) => self.lens_v4.insert(net.prefix_len()),
            IpNet::V6(_) => self.lens_v6.insert(net.prefix_len()),
        };
        self.nets.insert(net.trunc());
    }

    /// True if an allow prefix contains `net` or lies inside it.
    fn overlaps(&self, net: &IpNet) -> bool {
        let lens = match net {
            IpNet::V4(_) => &self.lens_v4,
            IpNet::V6(_) => &self.lens_v6,
        };
        let covering = lens
            .range(..=net.prefix_len())
            .any(|&l| IpNet::new(net.addr(), l).is_ok_and(|p| self.nets.contains(&p.trunc())));
        covering
            || (lens.range(net.prefix_len() + 1..).next().is_some()
                && self.nets.iter().any(|a| net.contains(a)))
    }
}

fn overlap_flag(overlaps: bool) -> u32 {
    if overlaps {
        ListEntry::ALLOW_OVERLAP
    } else {
        0
    }
}

/// Flags the kernel's block entries that `allow` overlaps, before the allow entries are
/// written, so there is no moment when an allow entry exists but the dataplane skips it.
fn flag_blocks_under(maps: &mut PinnedMaps, allow: &[IpNet]) -> Result<()> {
    if allow.is_empty() {
        return Ok(());
    }
    let mut index = AllowIndex::default();
    for net in allow {
        index.insert(*net);
    }
    let mut exact_v4: Vec<([u8; 4], ListEntry)> = Vec::new();
    let mut exact_v6: Vec<([u8; 16], ListEntry)> = Vec::new();
    for (kind, net, mut e) in kernel_entries(maps) {
        if kind != ListKind::Block
            || e.flags & ListEntry::ALLOW_OVERLAP != 0
            || !index.overlaps(&net)
        {
            continue;
        }
        e.flags |= ListEntry::ALLOW_OVERLAP;
        match (v4(&net), v6(&net)) {
            (Some((a, 32)), _) => exact_v4.push((a, e)),
            (_, Some((a, 128))) => exact_v6.push((a, e)),
            _ => kernel_insert(maps, ListKind::Block, &net, e, Terms::NONE)?,
        }
    }
    let (keys, values): (Vec<_>, Vec<_>) = exact_v4.into_iter().unzip();
    if !keys.is_empty() && maps.insert_block_v4(&keys, &values).is_err() {
        insert_blocks_one_by_one(maps, keys.into_iter().zip(values))?;
    }
    let (keys, values): (Vec<_>, Vec<_>) = exact_v6.into_iter().unzip();
    if !keys.is_empty() && maps.insert_block_v6(&keys, &values).is_err() {
        insert_blocks_one_by_one(maps, keys.into_iter().zip(values))?;
    }
    Ok(())
}

/// Exact block entries one at a time, where a batch write failed (kernels without batch
/// support for hash maps): slower, and it names the entry that fails.
fn insert_blocks_one_by_one<A: Into<IpAddr>>(
    maps: &mut PinnedMaps,
    entries: impl IntoIterator<Item = (A, ListEntry)>,
) -> Result<()> {
    for (a, e) in entries {
        kernel_insert(
            maps,
            ListKind::Block,
            &IpNet::from(a.into()),
            e,
            Terms::NONE,
        )?;
    }
    Ok(())
}

/// Writes many entries: exact addresses with batch updates (hash maps support them), prefixes
/// one by one (LPM tries have no batch operations on every kernel we support). Hit counts the
/// kernel already holds are kept, as in [`Lists::add`].
fn kernel_insert_many(
    maps: &mut PinnedMaps,
    entries: &[StoredEntry],
    now_unix: u64,
    now_mono: u64,
) -> Result<()> {
    let allow: Vec<IpNet> = entries
        .iter()
        .filter(|e| e.kind == ListKind::Allow)
        .map(|e| e.net)
        .collect();
    flag_blocks_under(maps, &allow)?;
    // The new allow entries are written below, with the block prefixes; count them already.
    let mut index = AllowIndex::read(maps);
    for net in &allow {
        index.insert(*net);
    }
    let value = |e: &StoredEntry, hits: u64| ListEntry {
        expires_ns: kernel_expiry(e.expires_at, now_unix, now_mono),
        hits,
        created_unix_s: e.created_at,
        source: source_code(e.source),
        flags: match e.kind {
            ListKind::Block => overlap_flag(index.overlaps(&e.net)),
            _ => 0,
        },
    };
    let mut exact_v4: Vec<(&StoredEntry, [u8; 4])> = Vec::new();
    let mut exact_v6: Vec<(&StoredEntry, [u8; 16])> = Vec::new();
    for e in entries {
        match (e.kind, v4(&e.net), v6(&e.net)) {
            (ListKind::Block, Some((a, 32)), _) => exact_v4.push((e, a)),
            (ListKind::Block, _, Some((a, 128))) => exact_v6.push((e, a)),
            _ => {
                let hits = kernel_get(maps, e.kind, &e.net).map_or(0, |k| k.hits);
                kernel_insert(maps, e.kind, &e.net, value(e, hits), Terms::of(e))?;
            }
        }
    }
    if !exact_v4.is_empty() {
        let current = maps.read_block_v4()?;
        let (keys, values) = exact_values(&exact_v4, current, value);
        if maps.insert_block_v4(&keys, &values).is_err() {
            // Kernels without batch support for hash maps: one at a time, which also names
            // the entry that failed.
            for ((e, _), v) in exact_v4.iter().zip(values) {
                kernel_insert(maps, e.kind, &e.net, v, Terms::NONE)?;
            }
        }
    }
    if !exact_v6.is_empty() {
        let current = maps.read_block_v6()?;
        let (keys, values) = exact_values(&exact_v6, current, value);
        if maps.insert_block_v6(&keys, &values).is_err() {
            for ((e, _), v) in exact_v6.iter().zip(values) {
                kernel_insert(maps, e.kind, &e.net, v, Terms::NONE)?;
            }
        }
    }
    maps.sync_tiers()?;
    Ok(())
}

/// Keys and kernel values for a batch of exact addresses, keeping the hit counts of `current`
/// (the map as read in one batched pass, cheaper than a lookup per address).
fn exact_values<const N: usize>(
    exact: &[(&StoredEntry, [u8; N])],
    current: Vec<([u8; N], ListEntry)>,
    value: impl Fn(&StoredEntry, u64) -> ListEntry,
) -> (Vec<[u8; N]>, Vec<ListEntry>) {
    let hits: std::collections::HashMap<[u8; N], u64> =
        current.into_iter().map(|(k, v)| (k, v.hits)).collect();
    exact
        .iter()
        .map(|(e, a)| (*a, value(e, hits.get(a).copied().unwrap_or(0))))
        .unzip()
}

fn kernel_remove(maps: &mut PinnedMaps, kind: ListKind, net: &IpNet) -> bool {
    let r = match (kind, v4(net), v6(net)) {
        (ListKind::Block, Some((a, 32)), _) => maps.block_v4.remove(&a),
        (ListKind::Block, Some((a, l)), _) => maps.bnet_v4.remove(&Key::new(l.into(), a)),
        (ListKind::Block, _, Some((a, 128))) => maps.block_v6.remove(&a),
        (ListKind::Block, _, Some((a, l))) => maps.bnet_v6.remove(&Key::new(l.into(), a)),
        (ListKind::Allow, Some((a, l)), _) => maps.anet_v4.remove(&Key::new(l.into(), a)),
        (ListKind::Allow, _, Some((a, l))) => maps.anet_v6.remove(&Key::new(l.into(), a)),
        (ListKind::Quarantine, Some((a, 32)), _) => maps.quar_v4.remove(&a),
        (ListKind::Quarantine, _, Some((a, 128))) => maps.quar_v6.remove(&a),
        (ListKind::Throttle, Some((a, l)), _) => maps.tnet_v4.remove(&Key::new(l.into(), a)),
        (ListKind::Throttle, _, Some((a, l))) => maps.tnet_v6.remove(&Key::new(l.into(), a)),
        (ListKind::Protect, Some((a, 32)), _) => maps.prot_v4.remove(&a),
        (ListKind::Protect, _, Some((a, 128))) => maps.prot_v6.remove(&a),
        _ => return false,
    };
    r.is_ok()
}

fn lpm_net<K: aya::Pod + Into<IpAddr>>(k: &Key<K>) -> Option<IpNet> {
    IpNet::new(k.data().into(), u8::try_from(k.prefix_len()).ok()?).ok()
}

/// Every entry in the kernel maps.
fn kernel_entries(maps: &PinnedMaps) -> Vec<(ListKind, IpNet, ListEntry)> {
    let mut out = Vec::new();
    // Batched reads: feeds put 100k+ addresses here, and walking them key by key costs two
    // syscalls each. Kernels without batch lookups for hash maps get the walk.
    let v4 = maps
        .read_block_v4()
        .unwrap_or_else(|_| maps.block_v4.iter().flatten().collect());
    for (a, e) in v4 {
        out.push((ListKind::Block, IpNet::from(IpAddr::from(a)), e));
    }
    let v6 = maps
        .read_block_v6()
        .unwrap_or_else(|_| maps.block_v6.iter().flatten().collect());
    for (a, e) in v6 {
        out.push((ListKind::Block, IpNet::from(IpAddr::from(a)), e));
    }
    for (k, e) in maps.bnet_v4.iter().flatten() {
        out.extend(lpm_net(&k).map(|n| (ListKind::Block, n, e)));
    }
    for (k, e) in maps.bnet_v6.iter().flatten() {
        out.extend(lpm_net(&k).map(|n| (ListKind::Block, n, e)));
    }
    for (k, e) in maps.anet_v4.iter().flatten() {
        out.extend(lpm_net(&k).map(|n| (ListKind::Allow, n, e)));
    }
    for (k, e) in maps.anet_v6.iter().flatten() {
        out.extend(lpm_net(&k).map(|n| (ListKind::Allow, n, e)));
    }
    for (a, e) in maps.quar_v4.iter().flatten() {
        out.push((ListKind::Quarantine, IpNet::from(IpAddr::from(a)), e));
    }
    for (a, e) in maps.quar_v6.iter().flatten() {
        out.push((ListKind::Quarantine, IpNet::from(IpAddr::from(a)), e));
    }
    for (k, t) in maps.tnet_v4.iter().flatten() {
        out.extend(lpm_net(&k).map(|n| (ListKind::Throttle, n, t.list)));
    }
    for (k, t) in maps.tnet_v6.iter().flatten() {
        out.extend(lpm_net(&k).map(|n| (ListKind::Throttle, n, t.list)));
    }
    for (a, p) in maps.prot_v4.iter().flatten() {
        out.push((
            ListKind::Protect,
            IpNet::from(IpAddr::from(a)),
            p.budget.list,
        ));
    }
    for (a, p) in maps.prot_v6.iter().flatten() {
        out.push((
            ListKind::Protect,
            IpNet::from(IpAddr::from(a)),
            p.budget.list,
        ));
    }
    out
}

/// One row of `astra list`.
#[derive(Clone, Debug, Serialize)]
pub struct ListRow {
    pub kind: ListKind,
    pub net: IpNet,
    /// Seconds left; `None` = permanent.
    pub ttl_remaining_s: Option<u64>,
    pub expires_at: Option<u64>,
    pub reason: String,
    pub source: EntrySource,
    /// The feed the entry came from; empty for manual and automatic entries.
    pub tag: String,
    pub hits: u64,
    pub created_at: u64,
    /// Whether the kernel currently holds the entry (false when no agent has run since boot).
    pub in_kernel: bool,
    /// A throttle entry's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// A throttle entry's packets dropped for being over the rate (`hits` counts all it
    /// matched); a protect entry's new SYNs over the budget and unsolicited answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// A protect entry's terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect: Option<Protection>,
}

/// Result of a block/allow call, for the CLI to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// Written to the kernel maps: in force now.
    InKernel,
    /// No pinned maps yet (no agent since boot): stored, applied when the agent starts.
    StoredOnly,
}

/// What adding one entry by hand did: the CLI's `block`/`allow` and the API's `POST` both
/// report it, so they tell the same story.
#[derive(Debug, Serialize)]
pub struct Added {
    pub entry: StoredEntry,
    /// False: stored only, applied when the agent starts.
    pub in_kernel: bool,
    /// For a block: an allowlisted prefix that overlaps it, under which packets keep passing.
    pub allowlisted_by: Option<IpNet>,
}

pub struct Lists {
    store: Store,
    maps: Option<PinnedMaps>,
    /// Keep conntrack tracking when no protection uses SYN cookies (see
    /// [`Lists::track_for_synproxy`]).
    synproxy_track: bool,
}

impl Lists {
    pub fn open(state_dir: &Path, pin_dir: &Path) -> Result<Self> {
        let store = Store::open(state_dir)?;
        let maps = PinnedMaps::open(pin_dir)?;
        Ok(Self {
            store,
            maps,
            synproxy_track: false,
        })
    }

    pub fn from_parts(store: Store, maps: Option<PinnedMaps>) -> Self {
        Self {
            store,
            maps,
            synproxy_track: false,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn maps(&self) -> Option<&PinnedMaps> {
        self.maps.as_ref()
    }

    pub fn maps_mut(&mut self) -> Option<&mut PinnedMaps> {
        self.maps.as_mut()
    }

    pub fn add(
        &mut self,
        kind: ListKind,
        net: IpNet,
        ttl: Option<Duration>,
        reason: &str,
        source: EntrySource,
    ) -> Result<(StoredEntry, Enforcement)> {
        self.add_rated(kind, net, ttl, reason, source, None)
    }

    /// [`Lists::add`] with a throttle entry's rate (`None` for the other kinds).
    pub fn add_rated(
        &mut self,
        kind: ListKind,
        net: IpNet,
        ttl: Option<Duration>,
        reason: &str,
        source: EntrySource,
        rate: Option<Rate>,
    ) -> Result<(StoredEntry, Enforcement)> {
        let now = now_unix();
        let entry = StoredEntry {
            kind,
            net,
            expires_at: ttl.map(|d| now + d.as_secs().max(1)),
            reason: reason.to_owned(),
            source,
            created_at: now,
            tag: String::new(),
            rate,
            protect: None,
        };
        self.add_entry(entry)
    }

    /// Stores `entry`, then writes it into the kernel.
    fn add_entry(&mut self, entry: StoredEntry) -> Result<(StoredEntry, Enforcement)> {
        let before = match entry.kind {
            ListKind::Protect => self.store.get(entry.kind, &entry.net)?,
            _ => None,
        };
        let cookie_ports = |e: Option<&StoredEntry>| {
            e.and_then(|e| e.protect.clone())
                .filter(|p| p.cookies)
                .map(|p| p.ports)
        };
        let (was, now) = (cookie_ports(before.as_ref()), cookie_ports(Some(&entry)));
        // The handshakes the cookies start need SYNPROXY in place first (an extension of
        // the same protection changes nothing there).
        if let Some(ports) = now.as_ref().filter(|p| Some(*p) != was.as_ref())
            && self.maps.is_some()
        {
            let mut targets = self.synproxy_targets()?;
            targets.retain(|(a, _)| *a != entry.net.addr());
            targets.push((entry.net.addr(), ports.clone()));
            synproxy::apply(&targets, self.synproxy_track)?;
        }
        self.store.upsert(&entry)?;
        if let (Some(e), None) = (&before, &now) {
            // A protection with cookies replaced by one without.
            self.resync_synproxy(&[e])?;
        }
        let enforcement = self.apply(&entry, now_unix(), mono_now_ns())?;
        Ok((entry, enforcement))
    }

    /// The live protections that answer with SYN cookies: their targets and ports.
    fn synproxy_targets(&self) -> Result<Vec<(IpAddr, Vec<u16>)>> {
        let now = now_unix();
        Ok(self
            .store
            .list(Some(ListKind::Protect))?
            .into_iter()
            .filter(|e| !e.is_expired(now))
            .filter_map(|e| {
                let p = e.protect.filter(|p| p.cookies)?;
                Some((e.net.addr(), p.ports))
            })
            .collect())
    }

    /// Brings nftables' SYNPROXY table in line with the stored protections after one that
    /// used cookies left (removed, expired, or replaced by one without them). Only where the
    /// kernel is enforced (not for a store alone).
    fn resync_synproxy(&self, changed: &[&StoredEntry]) -> Result<()> {
        if self.maps.is_none()
            || !changed
                .iter()
                .any(|e| e.protect.as_ref().is_some_and(|p| p.cookies))
        {
            return Ok(());
        }
        synproxy::apply(&self.synproxy_targets()?, self.synproxy_track)?;
        Ok(())
    }

    /// Has conntrack track connections from now on, ahead of any protection with SYN cookies
    /// (the agent, when `policy.protect_syn_cookies` is set; see [`synproxy`]), and keeps it
    /// on while this `Lists` changes protections.
    pub fn track_for_synproxy(&mut self) -> Result<()> {
        self.synproxy_track = true;
        if self.maps.is_some() {
            synproxy::apply(&self.synproxy_targets()?, true)?;
        }
        Ok(())
    }

    /// Protects `target` (an exact address) with `p`, its budget of new SYNs a second from
    /// strangers being `budget`.
    pub fn add_protect(
        &mut self,
        target: IpAddr,
        ttl: Option<Duration>,
        reason: &str,
        source: EntrySource,
        budget: Rate,
        p: Protection,
    ) -> Result<(StoredEntry, Enforcement)> {
        if let Some(why) = p.invalid() {
            return Err(Error::Usage(format!("protecting {target}: {why}")));
        }
        if budget.pps == 0 {
            return Err(Error::Usage(format!(
                "protecting {target} needs a budget of new SYNs a second"
            )));
        }
        let now = now_unix();
        let entry = StoredEntry {
            kind: ListKind::Protect,
            net: crate::addr::host_net(target),
            expires_at: ttl.map(|d| now + d.as_secs().max(1)),
            reason: reason.to_owned(),
            source,
            created_at: now,
            tag: String::new(),
            rate: Some(Rate { bps: 0, ..budget }),
            protect: Some(p),
        };
        self.add_entry(entry)
    }

    /// A protection made by hand (`astra protect`, `POST /api/v1/protect`): `syn_budget` new
    /// SYNs a second from strangers, bursting `burst` (as time at the budget) above it.
    pub fn protect_manual(
        &mut self,
        target: IpAddr,
        p: Protection,
        syn_budget: u64,
        burst: Duration,
        ttl: Option<Duration>,
        reason: &str,
    ) -> Result<Added> {
        if !(1..=Protection::MAX_SYN_BUDGET).contains(&syn_budget) {
            return Err(Error::Usage(format!(
                "syn budget {syn_budget}: between 1 and {} new SYNs a second",
                Protection::MAX_SYN_BUDGET
            )));
        }
        crate::limits::check_reason(reason)?;
        let budget = Rate {
            pps: syn_budget,
            bps: 0,
            burst_ms: burst.as_millis() as u64,
        };
        let (entry, enforcement) =
            self.add_protect(target, ttl, reason, EntrySource::Manual, budget, p)?;
        Ok(Added {
            entry,
            in_kernel: enforcement == Enforcement::InKernel,
            allowlisted_by: None,
        })
    }

    /// Marks `sources` as known to complete handshakes for `ttl`, so protected targets admit
    /// their new SYNs before the budget. Bounded by the kernel map: once it is full, new ones
    /// are left out (those known stay). Returns how many were written.
    pub fn learn_known(&mut self, sources: &[IpAddr], ttl: Duration) -> Result<usize> {
        let Some(maps) = self.maps.as_mut() else {
            return Ok(0);
        };
        let expires = mono_now_ns().saturating_add(ttl.as_nanos() as u64);
        let mut n = 0;
        for ip in sources {
            let key = match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            match maps.known.insert(key, expires, 0) {
                Ok(()) => n += 1,
                // E2BIG: full. Known sources are a help, not a promise.
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// [`Lists::add`] for an entry made by hand, with what the operator should know about it.
    pub fn add_manual(
        &mut self,
        kind: ListKind,
        net: IpNet,
        ttl: Option<Duration>,
        reason: &str,
    ) -> Result<Added> {
        self.add_manual_rated(kind, net, ttl, reason, None)
    }

    /// [`Lists::add_manual`] with a throttle entry's rate. Refuses what the tiers must never
    /// hold: a quarantined prefix, this host, or an allowlisted address (quarantine would
    /// pass its traffic anyway, and saying so beats a quarantine that does nothing).
    pub fn add_manual_rated(
        &mut self,
        kind: ListKind,
        net: IpNet,
        ttl: Option<Duration>,
        reason: &str,
        rate: Option<Rate>,
    ) -> Result<Added> {
        let store = self.store.clone();
        let allowlisted = || -> Result<Option<IpNet>> {
            Ok(store
                .list(Some(ListKind::Allow))?
                .into_iter()
                .find(|a| a.net.contains(&net.network()) || net.contains(&a.net.network()))
                .map(|a| a.net))
        };
        match kind {
            ListKind::Quarantine => {
                if net.prefix_len() != net.max_prefix_len() {
                    return Err(Error::Usage(format!(
                        "{net}: quarantine takes a single address, not a prefix"
                    )));
                }
                if crate::addr::own_addresses().contains(&net.addr()) {
                    return Err(Error::Usage(format!(
                        "{} is an address of this host: quarantining it would cut Astra off",
                        net.addr()
                    )));
                }
                if let Some(a) = allowlisted()? {
                    return Err(Error::Usage(format!(
                        "{} is allowlisted ({a}): remove it from the allowlist first",
                        net.addr()
                    )));
                }
            }
            ListKind::Throttle if rate.is_none_or(|r| r.pps == 0 && r.bps == 0) => {
                return Err(Error::Usage(format!("throttling {net} needs a rate")));
            }
            ListKind::Block | ListKind::Allow if rate.is_some() => {
                return Err(Error::Usage(format!("a {kind} entry takes no rate")));
            }
            ListKind::Protect => {
                return Err(Error::Usage(format!(
                    "protecting {net} takes its terms (Lists::add_protect)"
                )));
            }
            _ => {}
        }
        let (entry, enforcement) =
            self.add_rated(kind, net, ttl, reason, EntrySource::Manual, rate)?;
        let allowlisted_by = match kind {
            ListKind::Block | ListKind::Throttle => allowlisted()?,
            ListKind::Allow | ListKind::Quarantine | ListKind::Protect => None,
        };
        Ok(Added {
            entry,
            in_kernel: enforcement == Enforcement::InKernel,
            allowlisted_by,
        })
    }

    fn apply(&mut self, e: &StoredEntry, now_unix: u64, now_mono: u64) -> Result<Enforcement> {
        let Some(maps) = self.maps.as_mut() else {
            return Ok(Enforcement::StoredOnly);
        };
        // Re-blocking keeps the hit count the kernel accumulated.
        let hits = kernel_get(maps, e.kind, &e.net).map_or(0, |k| k.hits);
        let flags = match e.kind {
            ListKind::Block => overlap_flag(kernel_allow_overlaps(maps, &e.net)),
            ListKind::Allow => {
                flag_blocks_under(maps, &[e.net])?;
                0
            }
            ListKind::Quarantine | ListKind::Throttle | ListKind::Protect => 0,
        };
        let k = ListEntry {
            expires_ns: kernel_expiry(e.expires_at, now_unix, now_mono),
            hits,
            created_unix_s: e.created_at,
            source: source_code(e.source),
            flags,
        };
        kernel_insert(maps, e.kind, &e.net, k, Terms::of(e))?;
        if e.kind.is_tier() {
            maps.sync_tiers()?;
        }
        Ok(Enforcement::InKernel)
    }

    /// [`Lists::add`] for many entries at once (feeds): one store transaction, then batched
    /// kernel writes, so 100k entries take seconds rather than minutes. The entries are
    /// written as given (expiry, creation time, source, tag). If the kernel write fails the
    /// entries stay stored, like a failed [`Lists::add`], and are applied at the next agent start.
    pub fn add_many(&mut self, entries: &[StoredEntry]) -> Result<Enforcement> {
        self.add_many_in(entries, usize::MAX)
    }

    /// [`Lists::add_many`] with the store written in transactions of at most `batch`
    /// entries, so that a background writer (the agent's feed sync) never holds the store for
    /// long; the kernel is written once, after the store.
    pub fn add_many_in(&mut self, entries: &[StoredEntry], batch: usize) -> Result<Enforcement> {
        for chunk in entries.chunks(batch.max(1)) {
            self.store.upsert_many(chunk)?;
        }
        let Some(maps) = self.maps.as_mut() else {
            return Ok(Enforcement::StoredOnly);
        };
        kernel_insert_many(maps, entries, now_unix(), mono_now_ns())?;
        Ok(Enforcement::InKernel)
    }

    /// [`Lists::remove`] for many entries: one store transaction, batched kernel deletes.
    /// Returns how many the store had.
    pub fn remove_many(&mut self, keys: &[(ListKind, IpNet)]) -> Result<usize> {
        self.remove_many_in(keys, usize::MAX)
    }

    /// [`Lists::remove_many`] in store transactions of at most `batch` keys (see
    /// [`Lists::add_many_in`]).
    pub fn remove_many_in(&mut self, keys: &[(ListKind, IpNet)], batch: usize) -> Result<usize> {
        let mut n = 0;
        for chunk in keys.chunks(batch.max(1)) {
            n += self.store.remove_many(chunk)?;
        }
        if let Some(maps) = self.maps.as_mut() {
            let mut exact_v4 = Vec::new();
            let mut exact_v6 = Vec::new();
            for (kind, net) in keys {
                match (kind, v4(net), v6(net)) {
                    (ListKind::Block, Some((a, 32)), _) => exact_v4.push(a),
                    (ListKind::Block, _, Some((a, 128))) => exact_v6.push(a),
                    _ => {
                        kernel_remove(maps, *kind, net);
                    }
                }
            }
            maps.delete_block_v4(&exact_v4);
            maps.delete_block_v6(&exact_v6);
            maps.sync_tiers()?;
        }
        Ok(n)
    }

    /// Removes an entry from store and kernel; `false` if neither had it.
    pub fn remove(&mut self, kind: ListKind, net: &IpNet) -> Result<bool> {
        let before = match kind {
            ListKind::Protect => self.store.get(kind, net)?,
            _ => None,
        };
        let in_store = self.store.remove(kind, net)?;
        if let Some(e) = &before {
            self.resync_synproxy(&[e])?;
        }
        let in_kernel = self
            .maps
            .as_mut()
            .is_some_and(|m| kernel_remove(m, kind, net));
        if let Some(m) = self.maps.as_mut()
            && kind.is_tier()
        {
            m.sync_tiers()?;
        }
        Ok(in_store || in_kernel)
    }

    /// Store and kernel merged: the store gives reasons and expiries, the kernel gives hits
    /// (and entries the store lost, e.g. if the state dir was wiped while blocks were live).
    /// One page of one list as [`Lists::list`] shows it (expired entries included until the
    /// agent sweeps them), and the list's size; see [`Store::list_page`].
    pub fn list_page(
        &self,
        kind: ListKind,
        offset: u64,
        limit: u64,
        tag: Option<&str>,
    ) -> Result<(Vec<ListRow>, u64)> {
        let (now, now_mono) = (now_unix(), mono_now_ns());
        let (page, total) = self.store.list_page(kind, offset, limit, tag)?;
        let rows = page
            .into_iter()
            .map(|s| {
                let kernel = self
                    .maps
                    .as_ref()
                    .and_then(|m| kernel_get(m, s.kind, &s.net))
                    .filter(|e| !e.expired(now_mono));
                ListRow {
                    kind: s.kind,
                    net: s.net,
                    ttl_remaining_s: s.remaining(now).map(|d| d.as_secs()),
                    expires_at: s.expires_at,
                    reason: s.reason,
                    source: s.source,
                    tag: s.tag,
                    hits: kernel.map_or(0, |e| e.hits),
                    created_at: s.created_at,
                    in_kernel: kernel.is_some(),
                    dropped: self.dropped(s.kind, &s.net),
                    rate: s.rate,
                    protect: s.protect,
                }
            })
            .collect();
        Ok((rows, total))
    }

    pub fn list(&self) -> Result<Vec<ListRow>> {
        let now = now_unix();
        let now_mono = mono_now_ns();
        let mut kernel: std::collections::HashMap<(ListKind, IpNet), ListEntry> = self
            .maps
            .as_ref()
            .map(kernel_entries)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, n, e)| ((k, n), e))
            .collect();
        let mut rows = Vec::new();
        for s in self.store.list(None)? {
            if s.is_expired(now) {
                continue;
            }
            let hits = kernel.remove(&(s.kind, s.net)).map(|e| e.hits);
            rows.push(ListRow {
                kind: s.kind,
                net: s.net,
                ttl_remaining_s: s.remaining(now).map(|d| d.as_secs()),
                expires_at: s.expires_at,
                reason: s.reason.clone(),
                source: s.source,
                tag: s.tag.clone(),
                hits: hits.unwrap_or(0),
                created_at: s.created_at,
                in_kernel: hits.is_some(),
                dropped: self.dropped(s.kind, &s.net),
                rate: s.rate,
                protect: s.protect.clone(),
            });
        }
        for ((kind, net), e) in kernel {
            if e.expired(now_mono) {
                continue;
            }
            let remaining = (e.expires_ns != 0).then(|| (e.expires_ns - now_mono) / 1_000_000_000);
            rows.push(ListRow {
                kind,
                net,
                ttl_remaining_s: remaining,
                expires_at: remaining.map(|r| now + r),
                reason: String::new(),
                source: source_from_code(e.source),
                tag: String::new(),
                hits: e.hits,
                created_at: e.created_unix_s,
                in_kernel: true,
                dropped: self.dropped(kind, &net),
                rate: self.kernel_rate(kind, &net),
                protect: self.kernel_protection(kind, &net),
            });
        }
        rows.sort_by(|a, b| {
            (a.kind as u8, a.created_at, a.net).cmp(&(b.kind as u8, b.created_at, b.net))
        });
        Ok(rows)
    }

    /// Writes every live stored entry into the kernel maps: after a reboot emptied bpffs, or
    /// when the maps were recreated. Batched like [`Lists::add_many`], so an agent with a large
    /// feed starts in about a second.
    pub fn restore(&mut self) -> Result<usize> {
        let now = now_unix();
        let live: Vec<StoredEntry> = self
            .store
            .list(None)?
            .into_iter()
            .filter(|e| !e.is_expired(now))
            .collect();
        if self.maps.is_none() {
            return Ok(0);
        }
        let cookies: Vec<&StoredEntry> = live
            .iter()
            .filter(|e| e.protect.as_ref().is_some_and(|p| p.cookies))
            .collect();
        self.resync_synproxy(&cookies)?;
        let maps = self.maps.as_mut().expect("checked above");
        kernel_insert_many(maps, &live, now, mono_now_ns())?;
        Ok(live.len())
    }

    /// Copies into the store the live kernel entries it lacks (their reasons are gone: the
    /// kernel does not keep them). For a store that has just fallen back to memory, so that
    /// the in-memory lists, and the file they are merged into later, hold what is enforced.
    pub fn adopt_kernel_entries(&mut self) -> Result<usize> {
        let Some(maps) = self.maps.as_ref() else {
            return Ok(0);
        };
        let (now, mono) = (now_unix(), mono_now_ns());
        let stored: HashSet<(ListKind, IpNet)> = self
            .store
            .list(None)?
            .into_iter()
            .map(|e| (e.kind, e.net))
            .collect();
        let adopted: Vec<StoredEntry> = kernel_entries(maps)
            .into_iter()
            .filter(|(kind, net, e)| !e.expired(mono) && !stored.contains(&(*kind, *net)))
            .map(|(kind, net, e)| StoredEntry {
                kind,
                net,
                expires_at: (e.expires_ns != 0)
                    .then(|| now + e.expires_ns.saturating_sub(mono).div_ceil(1_000_000_000)),
                reason: String::new(),
                source: source_from_code(e.source),
                created_at: e.created_unix_s,
                tag: String::new(),
                rate: self.kernel_rate(kind, &net),
                protect: self.kernel_protection(kind, &net),
            })
            .collect();
        self.store.upsert_many(&adopted)?;
        Ok(adopted.len())
    }

    /// Drops expired entries from the store and their kernel copies. The kernel already
    /// ignores them; this frees the slots and keeps `astra list` honest. Cheap (an indexed
    /// query), so the agent runs it every poll.
    pub fn sweep_store(&mut self) -> Result<Vec<StoredEntry>> {
        let expired = self.store.take_expired(now_unix())?;
        self.resync_synproxy(&expired.iter().collect::<Vec<_>>())?;
        if let Some(maps) = self.maps.as_mut() {
            for e in &expired {
                kernel_remove(maps, e.kind, &e.net);
            }
            if expired.iter().any(|e| e.kind.is_tier()) {
                maps.sync_tiers()?;
            }
        }
        Ok(expired)
    }

    /// Removes expired kernel entries the store does not know about. Walks every kernel
    /// entry, so the agent runs it less often than [`Lists::sweep_store`].
    pub fn sweep_kernel(&mut self) -> Result<usize> {
        let Some(maps) = self.maps.as_mut() else {
            return Ok(0);
        };
        let mono = mono_now_ns();
        let stale: Vec<_> = kernel_entries(maps)
            .into_iter()
            .filter(|(_, _, e)| e.expired(mono))
            .collect();
        for (kind, net, _) in &stale {
            kernel_remove(maps, *kind, net);
        }
        maps.sync_tiers()?;
        Ok(stale.len())
    }

    /// The `n` blocklist entries with the most kernel drops (entries without any left out).
    pub fn top_blocked(&self, n: usize) -> Vec<(IpNet, u64)> {
        let Some(maps) = self.maps.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<_> = kernel_entries(maps)
            .into_iter()
            .filter(|(k, _, e)| *k == ListKind::Block && e.hits > 0)
            .map(|(_, net, e)| (net, e.hits))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Number of entries per kind currently in the kernel.
    pub fn kernel_counts(&self) -> KindCounts {
        let mut c = KindCounts::default();
        let Some(maps) = self.maps.as_ref() else {
            return c;
        };
        for (kind, _, _) in kernel_entries(maps) {
            *c.get_mut(kind) += 1;
        }
        c
    }

    /// Packets a throttle entry dropped for being over its rate; those a protect entry
    /// dropped (new SYNs over the budget and unsolicited answers).
    fn dropped(&self, kind: ListKind, net: &IpNet) -> Option<u64> {
        let maps = self.maps.as_ref()?;
        match kind {
            ListKind::Throttle => kernel_throttle(maps, net).map(|t| t.dropped),
            ListKind::Protect => kernel_protect(maps, net).map(|p| p.budget.dropped + p.reflected),
            _ => None,
        }
    }

    /// A kernel protect entry's counters (for the agent, which ends protection when they stop
    /// rising, and for status).
    pub fn protect_counters(&self, target: IpAddr) -> Option<ProtectEntry> {
        kernel_protect(self.maps.as_ref()?, &crate::addr::host_net(target))
    }

    /// The terms a kernel protect entry enforces (for entries the store does not know).
    fn kernel_protection(&self, kind: ListKind, net: &IpNet) -> Option<Protection> {
        let maps = self.maps.as_ref().filter(|_| kind == ListKind::Protect)?;
        let p = kernel_protect(maps, net)?;
        let ports = p.ports.iter().copied().filter(|&x| x != 0).collect();
        Some(Protection::from_flags(p.flags, ports))
    }

    /// The rate a kernel throttle entry enforces, read back from its costs (for entries the
    /// store does not know); a protect entry's SYN budget likewise.
    fn kernel_rate(&self, kind: ListKind, net: &IpNet) -> Option<Rate> {
        let maps = self.maps.as_ref()?;
        let t = match kind {
            ListKind::Throttle => kernel_throttle(maps, net)?,
            ListKind::Protect => kernel_protect(maps, net)?.budget,
            _ => return None,
        };
        Some(Rate {
            pps: 1_000_000_000u64.checked_div(t.packet_ns).unwrap_or(0),
            bps: ((8_000_000_000u128 << 16).checked_div(t.byte_ns_fp16.into()))
                .map_or(0, |v| v.min(u64::MAX.into()) as u64),
            burst_ms: t.burst_ns / 1_000_000,
        })
    }
}

/// Entries per list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    pub block: u64,
    pub allow: u64,
    pub quarantine: u64,
    pub throttle: u64,
    pub protect: u64,
}

impl KindCounts {
    pub fn get(&self, kind: ListKind) -> u64 {
        match kind {
            ListKind::Block => self.block,
            ListKind::Allow => self.allow,
            ListKind::Quarantine => self.quarantine,
            ListKind::Throttle => self.throttle,
            ListKind::Protect => self.protect,
        }
    }

    fn get_mut(&mut self, kind: ListKind) -> &mut u64 {
        match kind {
            ListKind::Block => &mut self.block,
            ListKind::Allow => &mut self.allow,
            ListKind::Quarantine => &mut self.quarantine,
            ListKind::Throttle => &mut self.throttle,
            ListKind::Protect => &mut self.protect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_conversion_never_turns_past_into_permanent() {
        assert_eq!(kernel_expiry(None, 100, 5), 0);
        assert_eq!(kernel_expiry(Some(50), 100, 5), 1);
        assert_eq!(kernel_expiry(Some(100), 100, 5), 1);
        assert_eq!(kernel_expiry(Some(103), 100, 5), 5 + 3_000_000_000);
        assert_eq!(kernel_expiry(Some(u64::MAX), 100, 5), u64::MAX);
    }

    #[test]
    fn source_codes_round_trip() {
        for s in [
            EntrySource::Manual,
            EntrySource::Auto,
            EntrySource::Feed,
            EntrySource::Crowdsec,
        ] {
            assert_eq!(source_from_code(source_code(s)), s);
        }
    }

    #[test]
    fn lpm_keys_map_back_to_networks() {
        let k = Key::new(24, [198, 18, 7, 0]);
        assert_eq!(lpm_net(&k), Some("198.18.7.0/24".parse().unwrap()));
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[1] = 0x01;
        a[2] = 0x0d;
        a[3] = 0xb8;
        let k = Key::new(32, a);
        assert_eq!(lpm_net(&k), Some("2001:db8::/32".parse().unwrap()));
    }
}
