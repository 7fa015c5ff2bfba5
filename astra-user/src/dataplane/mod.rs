//! Loading the eBPF object, checking and reusing pinned maps, and attaching the programs.
//!
//! Attachments are BPF links pinned under `<pin-dir>/links`, so the programs keep enforcing the
//! blocklist if the agent dies (`kill -9`), and a restarted agent swaps its freshly loaded
//! programs into the existing links atomically (`bpf_link_update`): no packet passes
//! unfiltered during the hand-over.

pub mod maps;

use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use astra_common::{LAYOUT_VERSION, META_MAGIC, Meta, TC_EGRESS_PROGRAM, XDP_PROGRAM, map_names};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapInfo},
    programs::{
        SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, qdisc_add_clsact},
        xdp::XdpLink,
    },
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{Error, Result};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/astra";
const SYS_FS_BPF: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/astra"));

/// Requested XDP attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic (skb) mode where the driver lacks XDP.
    Auto,
    Native,
    Skb,
}

/// Mode an interface actually ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    Native,
    Skb,
    /// Took over a link pinned by an earlier agent; the kernel keeps that link's mode.
    Inherited,
    /// The agent's link was detached under it (not by the agent): nothing is filtered there.
    Detached,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
            AttachedMode::Inherited => "inherited from the previous agent",
            AttachedMode::Detached => "DETACHED by someone else: nothing is filtered or counted",
        })
    }
}

fn statfs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs is plain integers, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

fn is_bpffs(path: &Path) -> bool {
    statfs_magic(path).is_ok_and(|m| m == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a BPF filesystem. /sys/fs/bpf is not mounted everywhere (a
/// container, a minimal VM): like systemd, mount it when the pin dir lives there.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<()> {
    let sys_fs_bpf = Path::new(SYS_FS_BPF);
    if pin_dir.starts_with(sys_fs_bpf) && !is_bpffs(sys_fs_bpf) {
        if !sys_fs_bpf.is_dir() {
            return Err(Error::Usage(format!(
                "{SYS_FS_BPF} does not exist, so the pin dir {} cannot be created; mount a bpffs and pass --pin-dir",
                pin_dir.display()
            )));
        }
        let src = CString::new("bpf").expect("static string");
        let target = CString::new(SYS_FS_BPF).expect("static string");
        // SAFETY: all pointers are valid NUL-terminated strings; no mount data is passed.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(Error::Usage(format!(
                "{SYS_FS_BPF} is not a BPF filesystem and mounting one failed ({e}); run `mount -t bpf bpf {SYS_FS_BPF}` as root"
            )));
        }
        info!("mounted bpffs at {SYS_FS_BPF}");
    }
    fs::create_dir_all(pin_dir.join("links"))
        .map_err(|e| Error::Usage(format!("cannot create pin dir {}: {e}", pin_dir.display())))?;
    if !is_bpffs(pin_dir) {
        return Err(Error::Usage(format!(
            "pin dir {} is not on a BPF filesystem; mount one with `mount -t bpf bpf {}` or choose a dir under {SYS_FS_BPF}",
            pin_dir.display(),
            pin_dir.display()
        )));
    }
    Ok(())
}

/// Whether the pin dir holds maps, and whether they are ours.
#[derive(Debug, PartialEq, Eq)]
pub enum LayoutState {
    Empty,
    Current,
}

fn layout_error(pin_dir: &Path, what: &str) -> Error {
    Error::Layout(format!(
        "pinned maps in {dir} {what}, but this astra uses layout v{LAYOUT_VERSION}; stop the old agent, detach its programs (`astra --pin-dir {dir} detach`) and remove the pins (`rm -r {dir}`): the blocklist is restored from the state store at the next start",
        dir = pin_dir.display()
    ))
}

/// Refuses pins this version cannot read instead of misinterpreting their bytes.
pub fn check_layout(pin_dir: &Path) -> Result<LayoutState> {
    let present: Vec<&str> = map_names::ALL
        .iter()
        .copied()
        .filter(|n| pin_dir.join(n).exists())
        .collect();
    if present.is_empty() {
        return Ok(LayoutState::Empty);
    }
    if !present.contains(&map_names::META) {
        return Err(layout_error(
            pin_dir,
            "carry no layout version (made by an older astra)",
        ));
    }
    let meta = read_meta(pin_dir)?;
    if meta.magic != META_MAGIC {
        return Err(layout_error(pin_dir, "were not made by astra"));
    }
    if meta != Meta::CURRENT {
        return Err(layout_error(
            pin_dir,
            &format!("use layout v{}", meta.layout_version),
        ));
    }
    for name in present {
        let info = MapInfo::from_pin(pin_dir.join(name))
            .map_err(|e| Error::bpf(format!("reading {}", pin_dir.join(name).display()), e))?;
        if let Some((k, v)) = expected_sizes(name)
            && (info.key_size() != k || info.value_size() != v)
        {
            return Err(layout_error(
                pin_dir,
                &format!(
                    "include {name} with key/value sizes {}/{} (expected {k}/{v})",
                    info.key_size(),
                    info.value_size()
                ),
            ));
        }
    }
    Ok(LayoutState::Current)
}

fn expected_sizes(name: &str) -> Option<(u32, u32)> {
    use std::mem::size_of;

    use astra_common::{Counter, FlowKey, FlowValue, ListEntry, LpmKey, ThrottleEntry};
    let list = size_of::<ListEntry>() as u32;
    let throttle = size_of::<ThrottleEntry>() as u32;
    Some(match name {
        map_names::META => (4, size_of::<Meta>() as u32),
        map_names::FLOWS => (size_of::<FlowKey>() as u32, size_of::<FlowValue>() as u32),
        map_names::COUNTERS => (4, size_of::<Counter>() as u32),
        map_names::BLOCK_V4 => (4, list),
        map_names::BLOCK_V6 => (16, list),
        map_names::BLOCK_NET_V4 | map_names::ALLOW_NET_V4 => (size_of::<LpmKey<4>>() as u32, list),
        map_names::BLOCK_NET_V6 | map_names::ALLOW_NET_V6 => (size_of::<LpmKey<16>>() as u32, list),
        map_names::QUARANTINE_V4 => (4, list),
        map_names::QUARANTINE_V6 => (16, list),
        map_names::THROTTLE_V4 => (size_of::<LpmKey<4>>() as u32, throttle),
        map_names::THROTTLE_V6 => (size_of::<LpmKey<16>>() as u32, throttle),
        map_names::TIERS => (4, 4),
        _ => return None,
    })
}

fn read_meta(pin_dir: &Path) -> Result<Meta> {
    let path = pin_dir.join(map_names::META);
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::bpf(format!("opening {}", path.display()), e))?;
    let info = data
        .info()
        .map_err(|e| Error::bpf(format!("reading {}", path.display()), e))?;
    if info.value_size() as usize != size_of::<Meta>() {
        return Err(layout_error(
            pin_dir,
            "have a layout marker of another size",
        ));
    }
    let map = Map::from_map_data(data).map_err(|e| Error::bpf("opening layout marker", e))?;
    let arr: Array<MapData, Meta> =
        Array::try_from(map).map_err(|e| Error::bpf("opening layout marker", e))?;
    arr.get(&0, 0)
        .map_err(|e| Error::bpf(format!("reading {}", path.display()), e))
}

/// A link we own, pinned at `path`. Dropping it leaves the program attached (the pin holds
/// it); [`HeldLink::detach`] removes the pin and so detaches.
#[derive(Debug)]
struct HeldLink {
    path: PathBuf,
    link: FdLink,
    /// A descriptor of the same link (aya keeps its own private) to ask the kernel whether it
    /// is still attached: `astra detach` or bpftool may detach it under the agent.
    watch: OwnedFd,
}

impl HeldLink {
    fn new(path: &Path, link: FdLink) -> Result<HeldLink> {
        Ok(HeldLink {
            path: path.to_owned(),
            link,
            watch: obj_get(path).map_err(|e| Error::io(path, e))?,
        })
    }

    fn detach(self) -> io::Result<()> {
        let r = fs::remove_file(&self.path);
        drop(self.link);
        r
    }
}

#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachedMode,
    /// Whether egress traffic is counted too (a TC program could be attached).
    pub egress: bool,
    links: Vec<HeldLink>,
}

/// The loaded programs and maps.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    attachments: Vec<Attachment>,
}

/// The global the dataplane's clock multiplies jiffies by.
const TICK_GLOBAL: &str = "ASTRA_TICK_NS";

impl Dataplane {
    /// Loads the programs, reusing the maps pinned in `pin_dir` (creating and pinning them if
    /// there are none). `flow_capacity` sizes the flow table; a pinned flow table of another
    /// size is discarded, since flows are transient and the size is the operator's choice.
    pub fn load(pin_dir: &Path, flow_capacity: u32) -> Result<Self> {
        let mut dp = Self::load_with(pin_dir, flow_capacity, crate::clock::coarse_tick_ns())?;
        dp.calibrate_clock()?;
        Ok(dp)
    }

    /// A dataplane of its own for `astra replay`: maps that no agent or CLI can reach, never
    /// attached, and a clock that reads whatever [`Dataplane::set_clock`] last set (loaded with
    /// a tick of 0, the jiffies term vanishes). The maps are pinned only while they are opened,
    /// under a fresh dir that is removed at once, so a killed replay leaves nothing behind;
    /// they live as long as the returned handles.
    pub fn load_private(flow_capacity: u32) -> Result<(Self, maps::PinnedMaps)> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(SYS_FS_BPF).join(format!("astra-replay-{}-{n}", std::process::id()));
        let loaded = Self::load_with(&dir, flow_capacity, 0).and_then(|dp| {
            let maps = maps::PinnedMaps::open(&dir)?
                .ok_or_else(|| Error::Layout("private maps were not pinned".into()))?;
            Ok((dp, maps))
        });
        // Whatever happened, the pins go: open handles keep the maps alive.
        for name in map_names::ALL {
            let _ = fs::remove_file(dir.join(name));
        }
        let _ = fs::remove_dir(dir.join("links"));
        let _ = fs::remove_dir(&dir);
        loaded
    }

    /// Sets a private dataplane's clock (see [`Dataplane::load_private`]) to `ns`.
    pub fn set_clock(&mut self, ns: u64) -> Result<()> {
        // The smallest frame XDP's test run accepts is an Ethernet header's 14 bytes.
        let mut frame = [0u8; 14];
        frame[..8].copy_from_slice(&ns.to_le_bytes());
        self.extra_program(astra_common::SET_CLOCK_PROGRAM)?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| Error::bpf("setting the dataplane clock", e))?;
        Ok(())
    }

    /// Runs the XDP program on one frame with BPF_PROG_TEST_RUN; returns its verdict.
    pub fn run_frame(&mut self, frame: &[u8]) -> Result<u32> {
        let r = xdp_program(&mut self.ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| Error::bpf("running the XDP program on a frame", e))?;
        Ok(r.return_value)
    }

    fn load_with(pin_dir: &Path, flow_capacity: u32, tick_ns: u64) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            return Err(Error::NoEbpfObject);
        }
        if flow_capacity == 0 {
            return Err(Error::Usage("--flow-capacity must be at least 1".into()));
        }
        ensure_pin_dir(pin_dir)?;
        let state = check_layout(pin_dir)?;
        let flows_pin = pin_dir.join(map_names::FLOWS);
        if let Ok(info) = MapInfo::from_pin(&flows_pin)
            && info.max_entries() != flow_capacity
        {
            info!(
                old = info.max_entries(),
                new = flow_capacity,
                "flow table capacity changed; starting with an empty flow table"
            );
            fs::remove_file(&flows_pin).map_err(|e| Error::io(&flows_pin, e))?;
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(TICK_GLOBAL, &tick_ns, true)
            .default_map_pin_directory(pin_dir)
            .map_max_entries(map_names::FLOWS, flow_capacity)
            .load(EBPF_OBJECT)
            .map_err(|e| Error::bpf("loading the eBPF object", e))?;
        if state == LayoutState::Empty {
            let map = ebpf
                .map_mut(map_names::META)
                .ok_or_else(|| Error::Layout("eBPF object has no layout marker map".into()))?;
            let mut meta: Array<&mut MapData, Meta> =
                Array::try_from(map).map_err(|e| Error::bpf("opening layout marker", e))?;
            meta.set(0, Meta::CURRENT, 0)
                .map_err(|e| Error::bpf("writing layout marker", e))?;
        }
        xdp_program(&mut ebpf)?
            .load()
            .map_err(|e| Error::bpf("loading the XDP program (verifier)", e))?;
        tc_program(&mut ebpf)?
            .load()
            .map_err(|e| Error::bpf("loading the TC egress program (verifier)", e))?;
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            attachments: Vec::new(),
        })
    }

    /// Runs the clock calibration program once, so the dataplane's jiffies clock reads as
    /// CLOCK_MONOTONIC_COARSE. Done before anything is attached: until then the clock is wrong.
    fn calibrate_clock(&mut self) -> Result<()> {
        // The smallest frame XDP's test run accepts: an Ethernet header.
        let frame = [0u8; 14];
        self.extra_program(astra_common::CLOCK_PROGRAM)?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| Error::bpf("calibrating the dataplane clock", e))?;
        Ok(())
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp> {
        xdp_program(&mut self.ebpf)
    }

    /// An XDP program of the object other than the dataplane's own (the clock calibration),
    /// loaded on first use.
    fn extra_program(&mut self, name: &str) -> Result<&mut Xdp> {
        xdp_loaded(&mut self.ebpf, name)
    }

    pub fn tc_egress(&mut self) -> Result<&mut SchedClassifier> {
        tc_program(&mut self.ebpf)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Attaches XDP on ingress and TC on egress of `iface`, taking over links an earlier agent
    /// pinned for the same interface.
    pub fn attach(&mut self, iface: &str, mode: XdpModeArg) -> Result<&Attachment> {
        let ifindex = ifindex(iface)?;
        let slot = ifindex % astra_common::IFACE_SLOTS;
        if let Some(other) = self
            .attachments
            .iter()
            .find(|a| a.ifindex % astra_common::IFACE_SLOTS == slot)
        {
            return Err(Error::Usage(format!(
                "interfaces {} and {iface} share counter slot {slot}; attach them from separate agents",
                other.iface
            )));
        }
        let links_dir = self.pin_dir.join("links");
        let xdp_pin = links_dir.join(format!("xdp-{iface}"));
        let (xdp_link, mode) = self.attach_xdp(iface, ifindex, mode, &xdp_pin)?;
        let mut links = vec![xdp_link];
        let tc_pin = links_dir.join(format!("tc-egress-{iface}"));
        let egress = match self.attach_tc(iface, &tc_pin) {
            Ok(Some(l)) => {
                links.push(l);
                true
            }
            Ok(None) => true,
            Err(e) => {
                warn!(%iface, error = %e, "egress counting unavailable; only ingress flows will be seen");
                false
            }
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode,
            egress,
            links,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: XdpModeArg,
        pin: &Path,
    ) -> Result<(HeldLink, AttachedMode)> {
        if pin.exists() {
            match self.take_over_xdp(pin) {
                Ok(link) => {
                    info!(%iface, "took over the XDP link of a previous agent");
                    return Ok((link, AttachedMode::Inherited));
                }
                Err(e) => {
                    // The interface was recreated or the link detached: the pin is stale.
                    warn!(%iface, error = %e, "stale XDP link pin; attaching afresh");
                    fs::remove_file(pin).map_err(|e| Error::io(pin, e))?;
                }
            }
        }
        let prog = self.xdp()?;
        let try_mode = |prog: &mut Xdp, m: XdpMode| prog.attach_to_if_index(ifindex, m);
        let (id, got) = match mode {
            XdpModeArg::Native => (try_mode(prog, XdpMode::Driver), AttachedMode::Native),
            XdpModeArg::Skb => (try_mode(prog, XdpMode::Skb), AttachedMode::Skb),
            XdpModeArg::Auto => match try_mode(prog, XdpMode::Driver) {
                Ok(id) => (Ok(id), AttachedMode::Native),
                Err(e) if !is_busy(&e) => {
                    info!(%iface, reason = %e, "native XDP unavailable; falling back to skb (generic) mode");
                    (try_mode(prog, XdpMode::Skb), AttachedMode::Skb)
                }
                Err(e) => (Err(e), AttachedMode::Native),
            },
        };
        let id = id.map_err(|e| {
            if is_busy(&e) {
                Error::Conflict(format!(
                    "{iface} already has an XDP program attached that astra did not create; astra will not replace it: detach it first (e.g. `ip link set dev {iface} xdp off`)"
                ))
            } else {
                Error::bpf(format!("attaching XDP to {iface}"), e)
            }
        })?;
        let link = prog
            .take_link(id)
            .map_err(|e| Error::bpf("taking XDP link", e))?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            Error::bpf(
                format!("XDP on {iface} is not a BPF link (kernel < 5.9?), cannot pin it"),
                e,
            )
        })?;
        let pinned = fd_link
            .pin(pin)
            .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
        Ok((HeldLink::new(pin, FdLink::from(pinned))?, got))
    }

    fn take_over_xdp(&mut self, pin: &Path) -> Result<HeldLink> {
        let old = PinnedLink::from_pin(pin).map_err(|e| Error::bpf("opening pinned link", e))?;
        let link = XdpLink::try_from(FdLink::from(old))
            .map_err(|e| Error::bpf("pinned link is not XDP", e))?;
        let prog = self.xdp()?;
        let id = prog
            .attach_to_link(link)
            .map_err(|e| Error::bpf("replacing program in pinned XDP link", e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| Error::bpf("taking XDP link", e))?;
        let fd = FdLink::try_from(link).map_err(|e| Error::bpf("XDP link", e))?;
        HeldLink::new(pin, fd)
    }

    /// Returns `Ok(None)` when attached through netlink (no pinnable link on old kernels).
    fn attach_tc(&mut self, iface: &str, pin: &Path) -> Result<Option<HeldLink>> {
        if pin.exists() {
            let taken = (|| -> Result<HeldLink> {
                let old =
                    PinnedLink::from_pin(pin).map_err(|e| Error::bpf("opening pinned link", e))?;
                let link = SchedClassifierLink::try_from(FdLink::from(old))
                    .map_err(|e| Error::bpf("pinned link is not TCX", e))?;
                let prog = self.tc_egress()?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| Error::bpf("replacing program in pinned TC link", e))?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| Error::bpf("taking TC link", e))?;
                let fd = FdLink::try_from(link).map_err(|e| Error::bpf("TC link", e))?;
                HeldLink::new(pin, fd)
            })();
            match taken {
                Ok(l) => return Ok(Some(l)),
                Err(e) => {
                    warn!(%iface, error = %e, "stale TC link pin; attaching afresh");
                    fs::remove_file(pin).map_err(|e| Error::io(pin, e))?;
                }
            }
        }
        // Only needed for the netlink fallback on kernels without TCX; harmless otherwise.
        let _ = qdisc_add_clsact(iface);
        let prog = self.tc_egress()?;
        let id = prog
            .attach(iface, TcAttachType::Egress)
            .map_err(|e| Error::bpf(format!("attaching TC egress to {iface}"), e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| Error::bpf("taking TC link", e))?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                let pinned = fd
                    .pin(pin)
                    .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
                Ok(Some(HeldLink::new(pin, FdLink::from(pinned))?))
            }
            Err(_) => Ok(None),
        }
    }

    /// Descriptors of every attached link, for the poll loop to notice links detached under
    /// it (see [`LinkWatch`]).
    pub fn watch(&self) -> Result<LinkWatch> {
        let mut links = Vec::new();
        for a in &self.attachments {
            for l in &a.links {
                let fd = l.watch.try_clone().map_err(|e| Error::io(&l.path, e))?;
                links.push((a.iface.clone(), l.path.clone(), fd));
            }
        }
        Ok(LinkWatch { links })
    }

    /// Detaches every program we attached and removes the link pins. Map pins stay, so blocks
    /// survive and the next agent restores from them.
    pub fn detach_all(&mut self) {
        for a in self.attachments.drain(..) {
            for l in a.links {
                let path = l.path.clone();
                if let Err(e) = l.detach() {
                    warn!(path = %path.display(), error = %e, "removing link pin");
                }
            }
            info!(iface = %a.iface, "detached");
        }
    }
}

fn is_busy(e: &aya::programs::ProgramError) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST));
        }
        if let Some(sys) = s.downcast_ref::<aya::sys::SyscallError>() {
            return matches!(
                sys.io_error.raw_os_error(),
                Some(libc::EBUSY) | Some(libc::EEXIST)
            );
        }
        src = s.source();
    }
    false
}

/// The XDP program `name` of a loaded object, verified and loaded into the kernel on first use.
pub fn xdp_loaded<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Layout(format!("eBPF object has no {name} program")))?
        .try_into()
        .map_err(|e| Error::bpf(name.to_owned(), e))?;
    if prog.fd().is_err() {
        prog.load()
            .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
    }
    Ok(prog)
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(XDP_PROGRAM)
        .ok_or_else(|| Error::Layout(format!("eBPF object has no program {XDP_PROGRAM}")))?
        .try_into()
        .map_err(|e| Error::bpf(XDP_PROGRAM, e))
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    ebpf.program_mut(TC_EGRESS_PROGRAM)
        .ok_or_else(|| Error::Layout(format!("eBPF object has no program {TC_EGRESS_PROGRAM}")))?
        .try_into()
        .map_err(|e| Error::bpf(TC_EGRESS_PROGRAM, e))
}

/// Resolves an interface name, rejecting unknown ones as bad input.
pub fn ifindex(iface: &str) -> Result<u32> {
    let c = CString::new(iface)
        .map_err(|_| Error::Usage(format!("invalid interface name {iface:?}")))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::Usage(format!("unknown interface {iface}")));
    }
    Ok(idx)
}

pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// Detaches the program of a pinned link at once and removes the pin. Removing the pin alone
/// also detaches, but from a kernel work item a moment later; an operator who runs
/// `astra detach` expects traffic to flow when the command returns.
/// BPF_OBJ_GET: a new descriptor of the object pinned at `path`.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr, zero-filled: the kernel rejects non-zero bytes past the fields it knows.
    let mut attr = [0u64; 16];
    attr[0] = cpath.as_ptr() as u64;
    // SAFETY: a valid bpf_attr for BPF_OBJ_GET (pathname; flags 0); cpath outlives the call.
    let fd = unsafe { maps::sys_bpf(BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The interface a link is attached to (`bpf_link_info.xdp.ifindex`, or `tcx.ifindex`: both
/// the first field of the union); 0 once the link was detached.
fn link_ifindex(fd: &OwnedFd) -> io::Result<u32> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_link_info: type, id, prog_id (u32 each), then the union at offset 16.
    let mut info = [0u64; 16];
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u64 | ((size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: bpf_fd and info_len in the first 8 bytes, the info pointer after; `info` is a
    // writable buffer of info_len bytes that outlives the call.
    unsafe { maps::sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info[2] as u32)
}

/// Descriptors of the agent's links, to notice them detached under it (`astra detach` from
/// another shell, `bpftool link detach`, `ip link set dev IF xdp off`).
pub struct LinkWatch {
    links: Vec<(String, PathBuf, OwnedFd)>,
}

impl LinkWatch {
    /// Interfaces one of whose links is no longer attached, or whose pin is gone (the next
    /// agent could not take the link over).
    pub fn detached(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .links
            .iter()
            .filter(|(_, path, fd)| link_ifindex(fd).is_ok_and(|i| i == 0) || !path.exists())
            .map(|(iface, _, _)| iface.clone())
            .collect();
        out.dedup();
        out
    }
}

/// An exclusive `flock(2)` on the pin dir, held by the agent for as long as it runs: how
/// `astra detach` and a second agent know the programs pinned there are in use, whatever state
/// dir they were given. (flock rather than fcntl locks: those drop when any descriptor of the
/// directory in the process closes.)
#[derive(Debug)]
pub struct PinDirLock {
    /// The lock lives as long as this descriptor.
    _dir: fs::File,
}

impl PinDirLock {
    /// Takes the lock, or returns None when another process holds it.
    pub fn try_acquire(pin_dir: &Path) -> Result<Option<PinDirLock>> {
        let dir = fs::File::open(pin_dir).map_err(|e| Error::io(pin_dir, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(PinDirLock { _dir: dir }));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(Error::io(pin_dir, e))
        }
    }

    /// Takes the lock for an agent, waiting a moment for a concurrent `astra detach` to finish;
    /// another agent on the same pin dir is a conflict.
    pub fn acquire(pin_dir: &Path) -> Result<PinDirLock> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(lock) = PinDirLock::try_acquire(pin_dir)? {
                return Ok(lock);
            }
            if Instant::now() >= deadline {
                return Err(Error::Conflict(format!(
                    "another astra agent{} runs with the pin dir {}: stop it first, or give this one its own --pin-dir",
                    holder_text(pin_dir),
                    pin_dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// " (pid N)" for the process holding the flock on `dir`, from /proc/locks; empty when unknown.
pub fn holder_text(dir: &Path) -> String {
    lock_holder(dir).map_or_else(String::new, |pid| format!(" (pid {pid})"))
}

fn lock_holder(dir: &Path) -> Option<u32> {
    let meta = fs::metadata(dir).ok()?;
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    // "1: FLOCK  ADVISORY  WRITE 2379 00:28:74995 0 EOF"
    fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
                .then(|| f.get(4)?.parse().ok())
                .flatten()
        })
}

pub fn detach_pinned_link(path: &Path) -> Result<()> {
    const BPF_LINK_DETACH: libc::c_long = 34;
    let fd = obj_get(path).map_err(|e| Error::io(path, e))?;
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u64;
    // SAFETY: a zero-filled bpf_attr for BPF_LINK_DETACH (link_fd in the first 32 bits).
    let detached = unsafe { maps::sys_bpf(BPF_LINK_DETACH, &mut attr) };
    drop(fd);
    // Links that cannot be detached explicitly still go when their last reference does.
    if let Err(e) = detached
        && e.raw_os_error() != Some(libc::EOPNOTSUPP)
    {
        return Err(Error::io(path, e));
    }
    fs::remove_file(path).map_err(|e| Error::io(path, e))
}
