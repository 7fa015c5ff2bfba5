//! Typed handles on the pinned maps. The agent, the CLI and the tests all go through these, so
//! a CLI command acts on exactly the maps the running programs use.
use std::{
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use astra_common::{
    Counter, FlowKey, FlowValue, ListEntry, ProtectEntry, ThrottleEntry, action, counter_index,
    map_names,
};
use aya::maps::{Array, HashMap, IterableMap, LpmTrie, Map, MapData, PerCpuArray};

use crate::{
    dataplane::{LayoutState, check_layout},
    error::{Error, Result},
};

pub type FlowMap = HashMap<MapData, FlowKey, FlowValue>;

pub struct PinnedMaps {
    pub pin_dir: PathBuf,
    pub flows: FlowMap,
    /// Second handle on the flow table for the batch syscalls, which need the raw fd.
    flows_raw: MapData,
    pub counters: PerCpuArray<MapData, Counter>,
    pub block_v4: HashMap<MapData, [u8; 4], ListEntry>,
    pub block_v6: HashMap<MapData, [u8; 16], ListEntry>,
    pub bnet_v4: LpmTrie<MapData, [u8; 4], ListEntry>,
    pub bnet_v6: LpmTrie<MapData, [u8; 16], ListEntry>,
    pub anet_v4: LpmTrie<MapData, [u8; 4], ListEntry>,
    pub anet_v6: LpmTrie<MapData, [u8; 16], ListEntry>,
    pub quar_v4: HashMap<MapData, [u8; 4], ListEntry>,
    pub quar_v6: HashMap<MapData, [u8; 16], ListEntry>,
    pub tnet_v4: LpmTrie<MapData, [u8; 4], ThrottleEntry>,
    pub tnet_v6: LpmTrie<MapData, [u8; 16], ThrottleEntry>,
    /// Protected targets, by destination address.
    pub prot_v4: HashMap<MapData, [u8; 4], ProtectEntry>,
    pub prot_v6: HashMap<MapData, [u8; 16], ProtectEntry>,
    /// Sources known to complete handshakes (IPv4-mapped), with their expiry.
    pub known: HashMap<MapData, [u8; 16], u64>,
    /// The `astra_common::tier` bits (see [`PinnedMaps::set_tiers`]).
    tiers: Array<MapData, u32>,
}

fn open<T>(pin_dir: &Path, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::bpf(format!("opening pinned map {}", path.display()), e))?;
    let map = Map::from_map_data(data)
        .map_err(|e| Error::bpf(format!("opening pinned map {}", path.display()), e))?;
    T::try_from(map).map_err(|e| {
        Error::bpf(
            format!("pinned map {} has the wrong type", path.display()),
            e,
        )
    })
}

impl PinnedMaps {
    /// Opens the maps pinned in `pin_dir`. Returns `Ok(None)` when nothing is pinned there
    /// (no agent has run since boot), and an error for pins of another layout.
    pub fn open(pin_dir: &Path) -> Result<Option<Self>> {
        if check_layout(pin_dir)? == LayoutState::Empty {
            return Ok(None);
        }
        Ok(Some(Self {
            pin_dir: pin_dir.to_owned(),
            flows: open(pin_dir, map_names::FLOWS)?,
            flows_raw: MapData::from_pin(pin_dir.join(map_names::FLOWS))
                .map_err(|e| Error::bpf("opening the flow table", e))?,
            counters: open(pin_dir, map_names::COUNTERS)?,
            block_v4: open(pin_dir, map_names::BLOCK_V4)?,
            block_v6: open(pin_dir, map_names::BLOCK_V6)?,
            bnet_v4: open(pin_dir, map_names::BLOCK_NET_V4)?,
            bnet_v6: open(pin_dir, map_names::BLOCK_NET_V6)?,
            anet_v4: open(pin_dir, map_names::ALLOW_NET_V4)?,
            anet_v6: open(pin_dir, map_names::ALLOW_NET_V6)?,
            quar_v4: open(pin_dir, map_names::QUARANTINE_V4)?,
            quar_v6: open(pin_dir, map_names::QUARANTINE_V6)?,
            tnet_v4: open(pin_dir, map_names::THROTTLE_V4)?,
            tnet_v6: open(pin_dir, map_names::THROTTLE_V6)?,
            prot_v4: open(pin_dir, map_names::PROTECT_V4)?,
            prot_v6: open(pin_dir, map_names::PROTECT_V6)?,
            known: open(pin_dir, map_names::KNOWN)?,
            tiers: open(pin_dir, map_names::TIERS)?,
        }))
    }

    /// The tier bits the dataplane reads before looking anything up in an optional tier.
    pub fn tiers(&self) -> Result<u32> {
        self.tiers
            .get(&0, 0)
            .map_err(|e| Error::bpf("reading the tier bits", e))
    }

    /// Sets the tier bits to what the quarantine, throttle and protect maps hold now. Called after
    /// every change to them and on every agent poll, so that a bit another process cleared
    /// while this one added an entry is back within a poll. Costs a key walk's first step per
    /// map.
    pub fn sync_tiers(&mut self) -> Result<u32> {
        // A failed read counts as an entry: a bit set in vain costs lookups, a bit wrongly
        // cleared would switch the tier off.
        let mut bits = 0;
        if self.quar_v4.keys().next().is_some() || self.quar_v6.keys().next().is_some() {
            bits |= astra_common::tier::QUARANTINE;
        }
        if self.tnet_v4.keys().next().is_some() || self.tnet_v6.keys().next().is_some() {
            bits |= astra_common::tier::THROTTLE;
        }
        if self.prot_v4.keys().next().is_some() || self.prot_v6.keys().next().is_some() {
            bits |= astra_common::tier::PROTECT;
        }
        self.set_tiers(bits)?;
        Ok(bits)
    }

    /// Writes the tier bits; see [`PinnedMaps::sync_tiers`].
    pub fn set_tiers(&mut self, bits: u32) -> Result<()> {
        if self.tiers()? == bits {
            return Ok(());
        }
        self.tiers
            .set(0, bits, 0)
            .map_err(|e| Error::bpf("writing the tier bits", e))
    }

    /// Sums the per-CPU counters of one interface: index = action.
    pub fn iface_counters(&self, ifindex: u32) -> Result<[Counter; action::COUNT as usize]> {
        let mut out = [Counter::default(); action::COUNT as usize];
        for (a, slot) in out.iter_mut().enumerate() {
            let values = self
                .counters
                .get(&counter_index(ifindex, a as u32), 0)
                .map_err(|e| Error::bpf("reading counters", e))?;
            for v in values.iter() {
                slot.packets += v.packets;
                slot.bytes += v.bytes;
            }
        }
        Ok(out)
    }

    /// Reads the whole flow table with BPF_MAP_LOOKUP_BATCH: a few syscalls per thousand flows
    /// instead of two per flow, which is what keeps a poll of a million flows under a second.
    pub fn read_flows(&self, out: &mut Vec<(FlowKey, FlowValue)>) -> Result<()> {
        out.clear();
        self.for_each_flow_batch(|k, v| out.extend(k.iter().copied().zip(v.iter().copied())))
    }

    /// Calls `f` with each batch of the flow table as the kernel hands it over.
    pub fn for_each_flow_batch(&self, f: impl FnMut(&[FlowKey], &[FlowValue])) -> Result<()> {
        let fd = self.flows_fd();
        batch::lookup_all(fd, f).map_err(|e| Error::bpf("reading the flow table", e))
    }

    /// Deletes flows in batches; keys already gone are not an error.
    pub fn delete_flows(&mut self, keys: &[FlowKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let fd = self.flows_fd();
        match batch::delete(fd, keys) {
            Ok(()) => Ok(()),
            Err(_) => {
                // A batch stops at the first missing key; fall back to one at a time.
                for k in keys {
                    let _ = self.flows.remove(k);
                }
                Ok(())
            }
        }
    }

    /// Writes flows in batches (benchmarks fill the table this way).
    pub fn insert_flows(&mut self, keys: &[FlowKey], values: &[FlowValue]) -> Result<()> {
        let fd = self.flows_fd();
        batch::update(fd, keys, values).map_err(|e| Error::bpf("writing the flow table", e))
    }

    /// Every exact IPv4 block entry, read with BPF_MAP_LOOKUP_BATCH.
    pub fn read_block_v4(&self) -> Result<Vec<([u8; 4], ListEntry)>> {
        read_all(&self.block_v4).map_err(|e| Error::bpf("reading the IPv4 blocklist", e))
    }

    /// Every exact IPv6 block entry, read with BPF_MAP_LOOKUP_BATCH.
    pub fn read_block_v6(&self) -> Result<Vec<([u8; 16], ListEntry)>> {
        read_all(&self.block_v6).map_err(|e| Error::bpf("reading the IPv6 blocklist", e))
    }

    /// Writes exact IPv4 block entries with BPF_MAP_UPDATE_BATCH (thousands per syscall).
    pub fn insert_block_v4(&mut self, keys: &[[u8; 4]], values: &[ListEntry]) -> Result<()> {
        batch::update(raw_fd(&self.block_v4), keys, values)
            .map_err(|e| Error::bpf("writing the IPv4 blocklist", e))
    }

    /// Writes exact IPv6 block entries with BPF_MAP_UPDATE_BATCH.
    pub fn insert_block_v6(&mut self, keys: &[[u8; 16]], values: &[ListEntry]) -> Result<()> {
        batch::update(raw_fd(&self.block_v6), keys, values)
            .map_err(|e| Error::bpf("writing the IPv6 blocklist", e))
    }

    /// Deletes exact IPv4 block entries in batches; keys already gone are not an error.
    pub fn delete_block_v4(&mut self, keys: &[[u8; 4]]) {
        if batch::delete(raw_fd(&self.block_v4), keys).is_err() {
            // A batch stops at the first missing key; finish one at a time.
            for k in keys {
                let _ = self.block_v4.remove(k);
            }
        }
    }

    /// Deletes exact IPv6 block entries in batches; keys already gone are not an error.
    pub fn delete_block_v6(&mut self, keys: &[[u8; 16]]) {
        if batch::delete(raw_fd(&self.block_v6), keys).is_err() {
            for k in keys {
                let _ = self.block_v6.remove(k);
            }
        }
    }

    pub fn flow_capacity(&self) -> Result<u32> {
        let info = aya::maps::MapInfo::from_pin(self.pin_dir.join(map_names::FLOWS))
            .map_err(|e| Error::bpf("reading flow table info", e))?;
        Ok(info.max_entries())
    }

    fn flows_fd(&self) -> i32 {
        self.flows_raw.fd().as_fd().as_raw_fd()
    }
}

/// The raw bpf(2) syscall, for the commands aya does not wrap (batch map operations, test
/// runs in live-frames mode, link detach); returns the syscall's result (an fd for some).
///
/// # Safety
/// `attr` must be a valid, fully initialised `union bpf_attr` prefix for `cmd`, and every
/// buffer it points to must outlive the call.
pub(crate) unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller vouches for attr; its size is passed so the kernel reads no further.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>() as u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn raw_fd<K: aya::Pod, V: aya::Pod>(m: &HashMap<MapData, K, V>) -> i32 {
    IterableMap::map(m).fd().as_fd().as_raw_fd()
}

fn read_all<K: aya::Pod + Default, V: aya::Pod + Default>(
    m: &HashMap<MapData, K, V>,
) -> std::io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    batch::lookup_all(raw_fd(m), |k: &[K], v: &[V]| {
        out.extend(k.iter().copied().zip(v.iter().copied()))
    })?;
    Ok(out)
}

/// Minimal BPF_MAP_*_BATCH wrappers (aya 0.14 has no batch API).
mod batch {
    use std::io;

    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
    const CHUNK: usize = 4096;

    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }

    fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
        // SAFETY: attr is a valid, fully initialised bpf_attr prefix for the batch commands and
        // its buffers outlive the call.
        unsafe { super::sys_bpf(cmd, attr) }.map(drop)
    }

    // Generic over the `#[repr(C)]` key and value types the maps hold: the kernel copies
    // key_size/value_size bytes per element, which must match size_of::<K>() and ::<V>().
    pub fn lookup_all<K: Copy + Default, V: Copy + Default>(
        fd: i32,
        mut f: impl FnMut(&[K], &[V]),
    ) -> io::Result<()> {
        let mut keys = vec![K::default(); CHUNK];
        let mut values = vec![V::default(); CHUNK];
        let mut token_in = 0u64;
        let mut token_out = 0u64;
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    &mut token_in as *mut u64 as u64
                },
                out_batch: &mut token_out as *mut u64 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: CHUNK as u32,
                map_fd: fd as u32,
                ..Default::default()
            };
            let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let n = attr.count as usize;
            f(&keys[..n], &values[..n]);
            match r {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                // ENOSPC: a hash bucket holds more entries than the chunk; cannot happen with
                // a 4096 chunk in practice, but report it rather than loop.
                Err(e) => return Err(e),
            }
            token_in = token_out;
            first = false;
        }
    }

    pub fn update<K, V>(fd: i32, keys: &[K], values: &[V]) -> io::Result<()> {
        for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
            let mut attr = BatchAttr {
                keys: k.as_ptr() as u64,
                values: v.as_ptr() as u64,
                count: k.len() as u32,
                map_fd: fd as u32,
                ..Default::default()
            };
            bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        }
        Ok(())
    }

    pub fn delete<K>(fd: i32, keys: &[K]) -> io::Result<()> {
        for chunk in keys.chunks(CHUNK) {
            let mut attr = BatchAttr {
                keys: chunk.as_ptr() as u64,
                count: chunk.len() as u32,
                map_fd: fd as u32,
                ..Default::default()
            };
            bpf(BPF_MAP_DELETE_BATCH, &mut attr)?;
        }
        Ok(())
    }
}
