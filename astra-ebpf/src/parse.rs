//! Header parsing shared by the XDP and TC programs.
//!
//! Every read goes through [`Cursor`], which checks the packet bounds before handing out a
//! pointer, and every loop has a constant bound, so the verifier accepts the program and a
//! truncated or malformed packet is reported as an error instead of being misread.
use astra_common::{FlowKey, ip_proto};

/// The most header bytes the parser can need: Ethernet, two VLAN tags, IPv6, a bounded chain of
/// extension headers and a TCP header. The TC program pulls this much into the linear area.
pub const MAX_HEADER_BYTES: u32 = 256;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 6;

struct Cursor {
    pos: usize,
    end: usize,
}

impl Cursor {
    /// Returns a pointer to the next `N` bytes and moves past them, or `None` if the packet ends
    /// first.
    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Option<*const [u8; N]> {
        let start = self.pos;
        if start + N > self.end {
            return None;
        }
        self.pos = start + N;
        Some(start as *const [u8; N])
    }

    #[inline(always)]
    fn peek<const N: usize>(&self) -> Option<*const [u8; N]> {
        if self.pos + N > self.end {
            return None;
        }
        Some(self.pos as *const [u8; N])
    }

    /// Skips `n` bytes; `n` must be bounded by the caller so the verifier can follow it.
    #[inline(always)]
    fn skip(&mut self, n: usize) -> Option<()> {
        if self.pos + n > self.end {
            return None;
        }
        self.pos += n;
        Some(())
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// An address as the packet carries it (network byte order), held as four 32-bit words: the
/// BPF backend copies a `[u8; 16]` one byte at a time through the stack, which cost more than
/// the map lookups on the drop path.
pub type Addr = [u32; 4];

/// Word 2 of an IPv4-mapped address (`::ffff:0:0/96`), in memory order.
const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The network header as far as the block and allow lists need it: who sent the packet.
/// Everything else is read by [`Ip::l3`] once the source has passed the lists, so a dropped
/// packet pays for nothing more (values kept across a map lookup are spilled to the stack).
pub struct Ip {
    /// Start of the IP header.
    hdr: usize,
    pub is_v6: bool,
    /// IPv4 sources are kept IPv4-mapped, as in the flow key.
    pub src: Addr,
}

impl Ip {
    #[inline(always)]
    pub fn src_v4(&self) -> [u8; 4] {
        self.src[3].to_ne_bytes()
    }

    #[inline(always)]
    pub fn src_bytes(&self) -> [u8; 16] {
        bytes(self.src)
    }

    /// The rest of the network header: destination, protocol, fragment offset and where the
    /// transport header starts. `None` only if the packet no longer holds the header
    /// [`parse_ip`] checked, which the verifier cannot know.
    #[inline(always)]
    pub fn l3(&self, data: usize, end: usize) -> Option<L3> {
        let c = Cursor { pos: self.hdr, end };
        if self.is_v6 {
            l3_v6(c, data, self.src)
        } else {
            l3_v4(c, data, self.src)
        }
    }
}

pub struct L3 {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    pub non_first_fragment: bool,
    /// False when the addresses are known but the way to the transport header is not (IPv4
    /// options cut short, too many or truncated IPv6 extension headers). The blocklist still
    /// applies to such a packet; only its flow accounting is skipped.
    pub l4_ok: bool,
    /// Offset of the transport header from the start of the packet.
    pub l4_off: usize,
}

pub enum Packet {
    Ip(Ip),
    NonIp,
    Error,
}

#[inline(always)]
fn mapped(a: u32) -> Addr {
    [0, 0, MAPPED_WORD, a]
}

#[inline(always)]
pub fn bytes(a: Addr) -> [u8; 16] {
    // SAFETY: same size, and every bit pattern is a valid byte array.
    unsafe { core::mem::transmute(a) }
}

/// Reads the 32-bit word at `p` as it lies in memory. Packet data is only 2-byte aligned after
/// an Ethernet header; BPF packet loads need no alignment on the architectures that JIT them
/// efficiently, and the verifier enforces strict alignment where they do.
#[inline(always)]
unsafe fn word(p: *const u8) -> u32 {
    unsafe { core::ptr::read_unaligned(p as *const u32) }
}

#[inline(always)]
unsafe fn addr(p: *const u8) -> Addr {
    unsafe { [word(p), word(p.add(4)), word(p.add(8)), word(p.add(12))] }
}

/// Parses Ethernet, up to two VLAN tags and the fixed part of the IP header: enough to know the
/// source. [`Ip::l3`] reads the rest.
#[inline(always)]
pub fn parse_ip(data: usize, end: usize) -> Packet {
    let mut c = Cursor { pos: data, end };
    let Some(eth) = c.take::<14>() else {
        return Packet::Error;
    };
    let mut proto = be16(unsafe { [(*eth)[12], (*eth)[13]] });
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let Some(tag) = c.take::<4>() else {
            return Packet::Error;
        };
        proto = be16(unsafe { [(*tag)[2], (*tag)[3]] });
    }
    match proto {
        ETH_P_IP => {
            let Some(h) = c.peek::<20>() else {
                return Packet::Error;
            };
            let h = unsafe { &*h };
            if h[0] >> 4 != 4 || h[0] & 0x0f < 5 {
                return Packet::Error;
            }
            Packet::Ip(Ip {
                hdr: c.pos,
                is_v6: false,
                src: mapped(unsafe { word(h.as_ptr().add(12)) }),
            })
        }
        ETH_P_IPV6 => {
            let Some(h) = c.peek::<40>() else {
                return Packet::Error;
            };
            let h = unsafe { &*h };
            if h[0] >> 4 != 6 {
                return Packet::Error;
            }
            Packet::Ip(Ip {
                hdr: c.pos,
                is_v6: true,
                src: unsafe { addr(h.as_ptr().add(8)) },
            })
        }
        // A third stacked tag is more than we promise to walk: report it rather than guess.
        ETH_P_8021Q | ETH_P_8021AD => Packet::Error,
        _ => Packet::NonIp,
    }
}

#[inline(always)]
fn l3_v4(mut c: Cursor, data: usize, src: Addr) -> Option<L3> {
    let h = unsafe { &*c.peek::<20>()? };
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let frag_offset = be16([h[6], h[7]]) & 0x1fff;
    let dst = mapped(unsafe { word(h.as_ptr().add(16)) });
    let proto = h[9];
    // Options are skipped, not parsed; the whole header must still be in the packet.
    let l4_ok = c.skip(ihl).is_some();
    Some(L3 {
        src,
        dst,
        proto,
        non_first_fragment: frag_offset != 0,
        l4_ok,
        l4_off: c.pos - data,
    })
}

#[inline(always)]
fn l3_v6(mut c: Cursor, data: usize, src: Addr) -> Option<L3> {
    let h = unsafe { &*c.take::<40>()? };
    let dst = unsafe { addr(h.as_ptr().add(24)) };
    let mut next = h[6];
    let mut non_first_fragment = false;
    // The source is known from the fixed header alone: whatever the extension headers hold,
    // the caller can still apply the blocklist.
    let mut l4_ok = false;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        if !is_ext_header(next) {
            l4_ok = true;
            break;
        }
        let Some(e) = c.peek::<8>() else {
            break;
        };
        let e = unsafe { &*e };
        let len = match next {
            ip_proto::FRAGMENT => {
                if be16([e[2], e[3]]) >> 3 != 0 {
                    // No transport header follows in a non-first fragment.
                    non_first_fragment = true;
                    l4_ok = true;
                    break;
                }
                8
            }
            ip_proto::AH => (e[1] as usize + 2) * 4,
            _ => (e[1] as usize + 1) * 8,
        };
        if c.skip(len).is_none() {
            break;
        }
        next = e[0];
    }
    Some(L3 {
        src,
        dst,
        proto: next,
        non_first_fragment,
        l4_ok,
        l4_off: c.pos - data,
    })
}

#[inline(always)]
fn is_ext_header(nh: u8) -> bool {
    matches!(
        nh,
        ip_proto::HOPOPTS
            | ip_proto::ROUTING
            | ip_proto::DSTOPTS
            | ip_proto::AH
            | ip_proto::FRAGMENT
    )
}

/// Transport-layer fields that go into the flow key.
pub struct Parsed {
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    /// The first 8 payload bytes of a TCP segment that carries at least 8 (as they lie in the
    /// packet, read as one little-endian word), else 0: what a banner-first service (SSH, FTP,
    /// SMTP, POP3, IMAP) says first, so userspace can tell a login service on any port.
    pub payload8: u64,
}

impl Parsed {
    #[inline(always)]
    pub fn flow_key(&self, l3: &L3, ifindex: u32, direction: u8) -> FlowKey {
        FlowKey {
            src: bytes(l3.src),
            dst: bytes(l3.dst),
            src_port: self.src_port,
            dst_port: self.dst_port,
            ifindex,
            proto: l3.proto,
            direction,
            _pad: [0; 2],
        }
    }
}

/// Parses the transport header. Protocols without ports are accounted with ports 0; a header
/// of a known protocol that is cut short or inconsistent is an error.
#[inline(always)]
pub fn parse_l4(l3: &L3, data: usize, end: usize) -> Option<Parsed> {
    let mut c = Cursor { pos: data, end };
    // l4_off is at most 14 + 8 + 60 (IPv4) or 14 + 8 + 40 + 7 * 2048 (IPv6 extension walk);
    // the mask only tells the verifier so.
    c.skip(l3.l4_off & 0x3fff)?;
    match l3.proto {
        ip_proto::TCP => {
            let h = unsafe { &*c.peek::<20>()? };
            let doff = (h[12] >> 4) as usize * 4;
            // The ports and flags sit in the first 20 bytes, but a header cut inside its
            // options is still a malformed packet, not a flow.
            if doff < 20 {
                return None;
            }
            c.skip(doff)?;
            // SAFETY: peek checked that 8 bytes are in the packet; they need no alignment.
            let payload8 = c
                .peek::<8>()
                .map_or(0, |p| unsafe { core::ptr::read_unaligned(p as *const u64) });
            Some(Parsed {
                src_port: be16([h[0], h[1]]),
                dst_port: be16([h[2], h[3]]),
                tcp_flags: h[13],
                payload8,
            })
        }
        ip_proto::UDP | ip_proto::UDPLITE => {
            let h = unsafe { &*c.peek::<8>()? };
            Some(Parsed {
                src_port: be16([h[0], h[1]]),
                dst_port: be16([h[2], h[3]]),
                tcp_flags: 0,
                payload8: 0,
            })
        }
        ip_proto::SCTP => {
            let h = unsafe { &*c.peek::<12>()? };
            Some(Parsed {
                src_port: be16([h[0], h[1]]),
                dst_port: be16([h[2], h[3]]),
                tcp_flags: 0,
                payload8: 0,
            })
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let h = unsafe { &*c.peek::<4>()? };
            Some(Parsed {
                src_port: 0,
                dst_port: be16([h[0], h[1]]),
                tcp_flags: 0,
                payload8: 0,
            })
        }
        _ => Some(Parsed {
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            payload8: 0,
        }),
    }
}
