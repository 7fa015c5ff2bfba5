//! Loading the eBPF object, checking and reusing pinned maps, and attaching the programs.
//!
//! Attachments are BPF links pinned under `<pin-dir>/links`, so the programs keep enforcing the
//! blocklist if the agent dies (`kill -9`), and a restarted agent swaps its freshly loaded
//! programs into the existing links atomically (`bpf_link_update`): no packet passes
//! unfiltered during the hand-over.
use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
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
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
            AttachedMode::Inherited => "inherited from the previous agent",
        })
    }
}

fn statfs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
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

    use astra_common::{Counter, FlowKey, FlowValue, ListEntry, LpmKey};
    let list = size_of::<ListEntry>() as u32;
    Some(match name {
        map_names::META => (4, size_of::<Meta>() as u32),
        map_names::FLOWS => (size_of::<FlowKey>() as u32, size_of::<FlowValue>() as u32),
        map_names::COUNTERS => (4, size_of::<Counter>() as u32),
        map_names::BLOCK_V4 => (4, list),
        map_names::BLOCK_V6 => (16, list),
        map_names::BLOCK_NET_V4 | map_names::ALLOW_NET_V4 => (size_of::<LpmKey<4>>() as u32, list),
        map_names::BLOCK_NET_V6 | map_names::ALLOW_NET_V6 => (size_of::<LpmKey<16>>() as u32, list),
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
    if info.value_size() as usize != std::mem::size_of::<Meta>() {
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
}

impl HeldLink {
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
        let tick_ns = crate::blocklist::clock_ns(libc::clock_getres, libc::CLOCK_MONOTONIC_COARSE);
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
        let mut dp = Self {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            attachments: Vec::new(),
        };
        dp.calibrate_clock()?;
        Ok(dp)
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

    /// The do-nothing XDP program, the floor benchmarks compare against; loaded on first use.
    pub fn floor(&mut self) -> Result<&mut Xdp> {
        self.extra_program(astra_common::FLOOR_PROGRAM)
    }

    /// The XDP_TX program the benchmarks generate floods with; loaded on first use.
    pub fn generator(&mut self) -> Result<&mut Xdp> {
        self.extra_program(astra_common::GEN_PROGRAM)
    }

    /// The drop-everything program the benchmarks measure a flood's ceiling with.
    pub fn drop_all(&mut self) -> Result<&mut Xdp> {
        self.extra_program(astra_common::DROP_ALL_PROGRAM)
    }

    /// An XDP program of the object other than the dataplane's own (the clock calibration and
    /// the benchmarks' programs), loaded on first use.
    fn extra_program(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
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
        Ok((
            HeldLink {
                path: pin.to_owned(),
                link: FdLink::from(pinned),
            },
            got,
        ))
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
        Ok(HeldLink {
            path: pin.to_owned(),
            link: fd,
        })
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
                Ok(HeldLink {
                    path: pin.to_owned(),
                    link: fd,
                })
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
                Ok(Some(HeldLink {
                    path: pin.to_owned(),
                    link: FdLink::from(pinned),
                }))
            }
            Err(_) => Ok(None),
        }
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
pub fn detach_pinned_link(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: path contains NUL", path.display())))?;
    // union bpf_attr, zero-filled: the kernel rejects non-zero bytes past the fields it knows.
    let mut attr = [0u64; 16];
    attr[0] = cpath.as_ptr() as u64;
    // SAFETY: a valid bpf_attr for BPF_OBJ_GET (pathname; flags 0); cpath outlives the call.
    let fd =
        unsafe { crate::maps::sys_bpf(BPF_OBJ_GET, &mut attr) }.map_err(|e| Error::io(path, e))?;
    let mut attr = [0u64; 16];
    attr[0] = fd as u64;
    // SAFETY: as above, for BPF_LINK_DETACH (link_fd in the first 32 bits).
    let detached = unsafe { crate::maps::sys_bpf(BPF_LINK_DETACH, &mut attr) };
    // SAFETY: fd came from BPF_OBJ_GET above and is closed once.
    unsafe { libc::close(fd as libc::c_int) };
    // Links that cannot be detached explicitly still go when their last reference does.
    if let Err(e) = detached
        && e.raw_os_error() != Some(libc::EOPNOTSUPP)
    {
        return Err(Error::io(path, e));
    }
    fs::remove_file(path).map_err(|e| Error::io(path, e))
}
