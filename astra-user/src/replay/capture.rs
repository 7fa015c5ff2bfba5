//! Reading packet captures (pcap and pcapng) into the Ethernet frames the XDP program parses.
//!
//! Every supported link type is turned into an Ethernet frame: Ethernet as it is, Linux cooked
//! captures (SLL, SLL2), raw IPv4/IPv6 and BSD loopback behind a synthetic Ethernet header that
//! carries their EtherType. A frame that was cut by the capture's snap length is padded back to
//! its original length (up to [`MAX_FRAME`]) so that byte counts, and everything judged on them,
//! see the packet as it was on the wire; only headers are ever parsed.
use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use pcap_parser::{
    Block, LegacyPcapBlock, Linktype, PcapBlockOwned, PcapError, create_reader,
    pcapng::{EnhancedPacketBlock, InterfaceDescriptionBlock},
};

/// The largest frame handed to the XDP program: what BPF_PROG_TEST_RUN takes in one buffer
/// (a page less XDP's headroom and the shared info). Longer packets (jumbo frames, offloaded
/// super-packets captured on a host) count this many bytes.
pub const MAX_FRAME: usize = 3_500;
/// The reader's buffer, and the largest record it accepts: pcapng's and libpcap's maximum
/// snap length is 256 KiB, so a record claiming more is corrupt, not big.
const BUFFER: usize = 1 << 20;
const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a pcap or pcapng capture", path.display())]
    NotACapture { path: PathBuf },
    #[error("{}: {what} is not supported (link types: Ethernet, Linux cooked SLL and SLL2, raw IPv4/IPv6, BSD loopback)", path.display())]
    UnsupportedLinkType { path: PathBuf, what: String },
    #[error("{}: corrupt at byte {offset} ({reason})", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// How a capture's link layer becomes an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// Linux cooked capture v1: a 16-byte header ending in the EtherType.
    Sll,
    /// Linux cooked capture v2: a 20-byte header starting with the EtherType.
    Sll2,
    /// An IP packet with no link header; the version nibble says which.
    Raw,
    Ipv4,
    Ipv6,
    /// BSD loopback: a 4-byte address family in the capturing host's byte order (`Null`) or in
    /// network order (`Loop`).
    Null,
    Loop,
}

impl Link {
    fn from_linktype(t: Linktype) -> Option<Link> {
        // The field's upper bits say whether frames end in an FCS (harmless here: bytes after
        // the headers); bits 16-25 are reserved and must be zero, as libpcap insists.
        if t.0 & 0x03ff_0000 != 0 {
            return None;
        }
        Some(match t.0 & 0xffff {
            1 => Link::Ethernet,
            113 => Link::Sll,
            276 => Link::Sll2,
            // LINKTYPE_RAW, and the DLT_RAW values some BSDs write into pcap headers.
            101 | 12 | 14 => Link::Raw,
            228 => Link::Ipv4,
            229 => Link::Ipv6,
            0 => Link::Null,
            108 => Link::Loop,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Link::Ethernet => "ethernet",
            Link::Sll => "linux-sll",
            Link::Sll2 => "linux-sll2",
            Link::Raw => "raw",
            Link::Ipv4 => "ipv4",
            Link::Ipv6 => "ipv6",
            Link::Null => "bsd-loopback",
            Link::Loop => "openbsd-loopback",
        }
    }

    /// The link header's length and the EtherType it stands for, or `None` when the packet
    /// is too short to hold the header.
    fn header(self, data: &[u8]) -> Option<(usize, u16)> {
        let be16 = |i: usize| data.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let ip_version = |d: &[u8]| match d.first().map(|b| b >> 4) {
            Some(4) => ETHERTYPE_IPV4,
            Some(6) => ETHERTYPE_IPV6,
            // Not IP: the dataplane counts it as such.
            _ => 0,
        };
        let family = |f: u32| match f {
            2 => ETHERTYPE_IPV4,
            // AF_INET6 is 24, 28 or 30 depending on the BSD.
            24 | 28 | 30 => ETHERTYPE_IPV6,
            _ => 0,
        };
        match self {
            Link::Ethernet => (data.len() >= ETH_HEADER).then_some((0, 0)),
            Link::Sll => be16(14).map(|t| (16, t)).filter(|_| data.len() >= 16),
            Link::Sll2 => be16(0).map(|t| (20, t)).filter(|_| data.len() >= 20),
            Link::Raw => Some((0, ip_version(data))),
            Link::Ipv4 => Some((0, ETHERTYPE_IPV4)),
            Link::Ipv6 => Some((0, ETHERTYPE_IPV6)),
            Link::Null | Link::Loop => {
                let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
                let f = match self {
                    Link::Loop => u32::from_be_bytes(b),
                    // The capturing host's order, unknown here: whichever reads as a family.
                    _ => {
                        let le = u32::from_le_bytes(b);
                        if le < 256 { le } else { u32::from_be_bytes(b) }
                    }
                };
                Some((4, family(f)))
            }
        }
    }

    /// Writes the packet as an Ethernet frame into `out`, padded to its original length; false
    /// when the packet is too short for its own link header.
    pub fn to_ethernet(self, data: &[u8], orig_len: u32, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some((skip, ethertype)) = self.header(data) else {
            return false;
        };
        let payload = &data[skip..];
        // Padding a packet cut inside its headers would make zeros into header fields: such a
        // packet goes as it was captured, and the dataplane reports what it cannot parse.
        let wire = if headers_complete(ethertype_of(self, data, ethertype), payload, self) {
            orig_len as usize
        } else {
            0
        };
        let orig_payload = wire.saturating_sub(skip).max(payload.len());
        if self == Link::Ethernet {
            out.extend_from_slice(&payload[..payload.len().min(MAX_FRAME)]);
            out.resize(orig_payload.min(MAX_FRAME), 0);
            return true;
        }
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&ethertype.to_be_bytes());
        let room = MAX_FRAME - ETH_HEADER;
        out.extend_from_slice(&payload[..payload.len().min(room)]);
        out.resize(ETH_HEADER + orig_payload.min(room), 0);
        true
    }
}

/// The EtherType of a packet: the link header's, or an Ethernet frame's own.
fn ethertype_of(link: Link, data: &[u8], from_header: u16) -> u16 {
    match link {
        Link::Ethernet => data
            .get(12..14)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]])),
        _ => from_header,
    }
}

/// Whether the captured bytes hold every header the dataplane reads (VLAN tags, the IP
/// header, and the transport header's fixed part, TCP options included). A packet that is not
/// IP is complete by definition: nothing of it is parsed.
fn headers_complete(mut ethertype: u16, payload: &[u8], link: Link) -> bool {
    let mut at = if link == Link::Ethernet { 14 } else { 0 };
    let byte = |i: usize| payload.get(i).copied();
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        let Some(b) = payload.get(at + 2..at + 4) else {
            return false;
        };
        ethertype = u16::from_be_bytes([b[0], b[1]]);
        at += 4;
    }
    let (proto, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let Some(vihl) = byte(at) else { return false };
            let Some(proto) = byte(at + 9) else {
                return false;
            };
            (proto, at + usize::from(vihl & 0x0f) * 4)
        }
        // Extension headers are not followed here: the common case is TCP or UDP right after.
        ETHERTYPE_IPV6 => match byte(at + 6) {
            Some(next) => (next, at + 40),
            None => return false,
        },
        _ => return true,
    };
    let need = match proto {
        6 => match byte(l4 + 12) {
            Some(off) => usize::from(off >> 4) * 4,
            None => return false,
        },
        17 | 1 | 58 => 8,
        _ => 0,
    };
    payload.len() >= l4 + need
}

/// One packet of a capture, as the XDP program gets it.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time, UNIX nanoseconds.
    pub ts_ns: u64,
    /// The Ethernet frame, or `None` when the packet is too short for its own link header.
    pub frame: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link: Option<Link>,
    linktype: Linktype,
    /// Timestamp units per second.
    resolution: u64,
    offset_s: i64,
}

/// How a capture ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Complete,
    /// The file ends inside a record: everything before byte `offset` was read.
    Truncated {
        offset: u64,
    },
}

/// A capture being read packet by packet.
pub struct Capture {
    path: PathBuf,
    reader: Box<dyn pcap_parser::traits::PcapReaderIterator + Send>,
    pub format: &'static str,
    /// pcapng: the section's interfaces, by id.
    interfaces: Vec<Interface>,
    /// pcap: the one link type of the file.
    legacy: Option<Interface>,
    last_ts_ns: u64,
    frame: Vec<u8>,
    /// Link types seen, for the summary.
    pub links: Vec<&'static str>,
    pub end: End,
    /// pcapng: the current section's byte order.
    big_endian: bool,
}

fn linktype_text(t: Linktype) -> String {
    format!("link type {} ({t:?})", t.0)
}

/// A record's timestamp in UNIX nanoseconds; saturating, as a hostile file may say anything.
fn timestamp_ns(units: u64, resolution: u64, offset_s: i64) -> u64 {
    let r = u128::from(resolution.max(1));
    let ns = u128::from(units) / r * 1_000_000_000 + u128::from(units) % r * 1_000_000_000 / r;
    let ns = ns as i128 + i128::from(offset_s) * 1_000_000_000;
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

enum Found<'b> {
    Packet {
        iface: Interface,
        /// Timestamp units, `None` for a Simple Packet Block.
        ts: Option<u64>,
        orig_len: u32,
        data: &'b [u8],
    },
    Skip,
    BadInterface(u32),
    BadResolution,
}

fn interface(idb: &InterfaceDescriptionBlock<'_>) -> Option<Interface> {
    Some(Interface {
        link: Link::from_linktype(idb.linktype),
        linktype: idb.linktype,
        resolution: idb.ts_resolution()?,
        offset_s: idb.ts_offset(),
    })
}

/// What one block holds, keeping track of the pcapng interfaces it describes.
fn classify<'b>(
    block: &'b PcapBlockOwned<'_>,
    interfaces: &mut Vec<Interface>,
    legacy: Option<&Interface>,
) -> Found<'b> {
    match block {
        PcapBlockOwned::Legacy(LegacyPcapBlock {
            ts_sec,
            ts_usec,
            origlen,
            data,
            ..
        }) => {
            let Some(iface) = legacy.copied() else {
                return Found::Skip;
            };
            Found::Packet {
                iface,
                ts: Some(u64::from(*ts_sec) * iface.resolution + u64::from(*ts_usec)),
                orig_len: *origlen,
                data,
            }
        }
        PcapBlockOwned::LegacyHeader(_) => Found::Skip,
        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
            // A new section starts its own list of interfaces.
            interfaces.clear();
            Found::Skip
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => match interface(idb) {
            Some(i) => {
                interfaces.push(i);
                Found::Skip
            }
            None => Found::BadResolution,
        },
        PcapBlockOwned::NG(Block::EnhancedPacket(EnhancedPacketBlock {
            if_id,
            ts_high,
            ts_low,
            origlen,
            data,
            caplen,
            ..
        })) => match interfaces.get(*if_id as usize) {
            Some(iface) => Found::Packet {
                iface: *iface,
                ts: Some(u64::from(*ts_high) << 32 | u64::from(*ts_low)),
                orig_len: *origlen,
                // The block's data is padded to 32 bits; the packet is `caplen` of it.
                data: &data[..(*caplen as usize).min(data.len())],
            },
            None => Found::BadInterface(*if_id),
        },
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => match interfaces.first() {
            Some(iface) => Found::Packet {
                iface: *iface,
                ts: None,
                orig_len: spb.origlen,
                data: &spb.data[..(spb.origlen as usize).min(spb.data.len())],
            },
            None => Found::BadInterface(0),
        },
        PcapBlockOwned::NG(_) => Found::Skip,
    }
}

enum Step {
    Consume(usize),
    Packet { n: usize, ts_ns: u64, ok: bool },
    Fail(String),
    Unsupported(Linktype),
    Refill,
    Done,
}

impl Capture {
    /// Opens `path`; a file that is neither pcap nor pcapng is an error, as is a pcap whose
    /// link type is not supported.
    pub fn open(path: &Path) -> Result<Capture, CaptureError> {
        let io = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            return Err(io(io::Error::from(io::ErrorKind::IsADirectory)));
        }
        Self::from_reader(path, file, BUFFER)
    }

    /// A capture held in memory (the fuzzer's way in): no record can be larger than it, so
    /// the buffer need not be either.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Capture, CaptureError> {
        let buffer = (bytes.len() + 1).clamp(4096, BUFFER);
        Self::from_reader(Path::new("<memory>"), io::Cursor::new(bytes), buffer)
    }

    fn from_reader(
        path: &Path,
        input: impl io::Read + Send + 'static,
        buffer: usize,
    ) -> Result<Capture, CaptureError> {
        let not_a_capture = || CaptureError::NotACapture {
            path: path.to_owned(),
        };
        let reader = create_reader(buffer, input).map_err(|_| not_a_capture())?;
        let mut cap = Capture {
            path: path.to_owned(),
            reader,
            format: "pcapng",
            interfaces: Vec::new(),
            legacy: None,
            last_ts_ns: 0,
            frame: Vec::with_capacity(MAX_FRAME),
            links: Vec::new(),
            end: End::Complete,
            big_endian: false,
        };
        // A pcap file's first block is its header, with the one link type.
        let header = match cap.reader.next() {
            Ok((n, PcapBlockOwned::LegacyHeader(h))) => Some((n, h)),
            Ok(_) => None,
            Err(_) => return Err(not_a_capture()),
        };
        if let Some((n, h)) = header {
            cap.reader.consume(n);
            cap.format = "pcap";
            let Some(link) = Link::from_linktype(h.network) else {
                return Err(CaptureError::UnsupportedLinkType {
                    path: path.to_owned(),
                    what: linktype_text(h.network),
                });
            };
            cap.links.push(link.name());
            cap.legacy = Some(Interface {
                link: Some(link),
                linktype: h.network,
                resolution: if h.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                },
                offset_s: 0,
            });
        }
        Ok(cap)
    }

    /// Bytes of the file read so far (for progress).
    pub fn position(&self) -> u64 {
        self.reader.consumed() as u64
    }

    /// The next packet, `None` at the end of the file ([`Capture::end`] says whether the file
    /// was cut). A pcapng packet on an interface of an unsupported link type is an error: its
    /// bytes cannot be read as anything.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            let offset = self.reader.consumed() as u64;
            if self.legacy.is_none()
                && let Some(len) = short_block(self.reader.data(), self.big_endian)
            {
                return Err(CaptureError::Corrupt {
                    path: self.path.clone(),
                    offset,
                    reason: format!("a block of {len} bytes, shorter than its own 12-byte frame"),
                });
            }
            // The block borrows the reader's buffer, so it is turned into a frame here and
            // dropped before the reader moves on.
            let step = match self.reader.next() {
                Ok((n, block)) => {
                    if let PcapBlockOwned::NG(Block::SectionHeader(shb)) = &block {
                        self.big_endian = shb.big_endian();
                    }
                    match classify(&block, &mut self.interfaces, self.legacy.as_ref()) {
                        Found::Packet {
                            iface,
                            ts,
                            orig_len,
                            data,
                        } => match iface.link {
                            Some(link) => {
                                if !self.links.contains(&link.name()) {
                                    self.links.push(link.name());
                                }
                                let ts_ns = ts.map_or(self.last_ts_ns, |t| {
                                    timestamp_ns(t, iface.resolution, iface.offset_s)
                                });
                                let ok = link.to_ethernet(data, orig_len, &mut self.frame);
                                Step::Packet { n, ts_ns, ok }
                            }
                            None => Step::Unsupported(iface.linktype),
                        },
                        Found::Skip => Step::Consume(n),
                        Found::BadInterface(id) => Step::Fail(format!(
                            "a packet names interface {id}, which no interface block describes"
                        )),
                        Found::BadResolution => {
                            Step::Fail("an interface's timestamp resolution is invalid".into())
                        }
                    }
                }
                Err(PcapError::Eof) => Step::Done,
                Err(PcapError::Incomplete(_)) => Step::Refill,
                Err(PcapError::UnexpectedEof) => {
                    self.end = End::Truncated { offset };
                    Step::Done
                }
                Err(PcapError::BufferTooSmall) => {
                    Step::Fail("a record larger than any capture's snap length".into())
                }
                Err(e) => Step::Fail(parse_error_text(&e)),
            };
            match step {
                Step::Consume(n) => self.reader.consume(n),
                Step::Packet { n, ts_ns, ok } => {
                    self.reader.consume(n);
                    self.last_ts_ns = ts_ns;
                    return Ok(Some(Frame {
                        ts_ns,
                        frame: ok.then_some(self.frame.as_slice()),
                    }));
                }
                Step::Refill => {
                    self.reader.refill().map_err(|_| CaptureError::Io {
                        path: self.path.clone(),
                        source: io::Error::other("read failed"),
                    })?;
                }
                Step::Done => return Ok(None),
                Step::Unsupported(t) => {
                    return Err(CaptureError::UnsupportedLinkType {
                        path: self.path.clone(),
                        what: linktype_text(t),
                    });
                }
                Step::Fail(reason) => {
                    return Err(CaptureError::Corrupt {
                        path: self.path.clone(),
                        offset,
                        reason,
                    });
                }
            }
        }
    }
}

/// The length of the pcapng block at the start of `data` when it is shorter than a block's
/// fixed frame (type, length, length again: 12 bytes). pcap-parser subtracts 12 from it
/// unchecked (0.17.0, `pcapng/block.rs`): fuzzing found it, a panic in builds with overflow
/// checks and a wrapped length in the others. Section headers carry their own byte order and
/// are checked by the parser.
fn short_block(data: &[u8], big_endian: bool) -> Option<u32> {
    const SECTION_HEADER: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
    let head: [u8; 8] = data.get(..8)?.try_into().ok()?;
    if head[..4] == SECTION_HEADER {
        return None;
    }
    let len = [head[4], head[5], head[6], head[7]];
    let len = if big_endian {
        u32::from_be_bytes(len)
    } else {
        u32::from_le_bytes(len)
    };
    (len < 12).then_some(len)
}

fn parse_error_text(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::NomError(_, kind) => format!("unreadable record: {}", kind.description()),
        PcapError::OwnedNomError(_, kind) => format!("unreadable record: {}", kind.description()),
        PcapError::HeaderNotRecognized => "unrecognised block".into(),
        PcapError::ReadError => "read failed".into(),
        _ => "unreadable record".into(),
    }
}

/// Writes a pcap file (nanosecond timestamps, little-endian) of `packets`: (capture time in
/// UNIX nanoseconds, the bytes as captured, the length on the wire). For the bench and the
/// tests, which make their own captures.
pub fn write_pcap<'p>(
    mut w: impl io::Write,
    linktype: u32,
    packets: impl IntoIterator<Item = (u64, &'p [u8], u32)>,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&262_144u32.to_le_bytes());
    header.extend_from_slice(&linktype.to_le_bytes());
    w.write_all(&header)?;
    for (ts, data, orig) in packets {
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&((ts % 1_000_000_000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&orig.max(data.len() as u32).to_le_bytes());
        w.write_all(&rec)?;
        w.write_all(data)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's find: a process information block claiming 4 bytes after a section
    /// header. One clear error where pcap-parser panicked in debug builds.
    #[test]
    fn a_pcapng_block_shorter_than_its_frame_is_corrupt() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/data/captures/malformed/astra-fuzz-pcapng-block-shorter-than-header.pcapng",
        );
        let mut cap = Capture::open(&path).unwrap();
        let err = loop {
            match cap.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("read to the end"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("a block of 4 bytes"), "{err}");
        assert_eq!(
            short_block(&[0x0a, 0x0d, 0x0d, 0x0a, 4, 0, 0, 0], false),
            None
        );
        assert_eq!(short_block(&[1, 0, 0, 0, 0, 0, 0, 8], true), Some(8));
        assert_eq!(short_block(&[1, 0, 0, 0, 12, 0, 0, 0], false), None);
        assert_eq!(short_block(&[1, 0, 0], false), None);
    }

    #[test]
    fn timestamps_convert_at_any_resolution_and_saturate() {
        assert_eq!(timestamp_ns(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(timestamp_ns(3, 2, 0), 1_500_000_000);
        assert_eq!(timestamp_ns(7, 1, -10), 0);
        assert_eq!(timestamp_ns(u64::MAX, 1, i64::MAX), u64::MAX);
        assert_eq!(timestamp_ns(5, 0, 0), 5_000_000_000);
    }

    #[test]
    fn every_link_type_becomes_ethernet_padded_to_the_wire_length() {
        // IPv4 (protocol UDP) and a UDP header: all the headers there are.
        let mut ip = vec![0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 17];
        ip.resize(28, 0);
        let mut out = Vec::new();
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        assert!(Link::Sll.to_ethernet(&sll, 100, &mut out));
        assert_eq!(out.len(), 14 + 100 - 16);
        assert_eq!(&out[12..18], &[0x08, 0x00, 0x45, 0, 0, 28]);
        // Cut inside the UDP header: not padded, so no zeros pose as header fields.
        assert!(Link::Sll.to_ethernet(&sll[..16 + 24], 100, &mut out));
        assert_eq!(out.len(), 14 + 24);
        // A TCP header's options count too.
        let mut tcp = vec![0x45u8, 0, 0, 60, 0, 0, 0, 0, 64, 6];
        tcp.resize(20 + 13, 0);
        tcp[20 + 12] = 10 << 4;
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&tcp);
        assert!(Link::Ethernet.to_ethernet(&eth, 1514, &mut out));
        assert_eq!(out.len(), eth.len(), "options cut short");
        eth.resize(14 + 20 + 40, 0);
        assert!(Link::Ethernet.to_ethernet(&eth, 1514, &mut out));
        assert_eq!(out.len(), 1514);
        let mut sll2 = vec![0x86, 0xdd];
        sll2.extend_from_slice(&[0; 18]);
        sll2.push(0x60);
        assert!(Link::Sll2.to_ethernet(&sll2, 0, &mut out));
        assert_eq!(&out[12..15], &[0x86, 0xdd, 0x60]);
        assert!(Link::Raw.to_ethernet(&[0x60, 0], 2, &mut out));
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        assert!(Link::Raw.to_ethernet(&[0x20, 0], 2, &mut out));
        assert_eq!(&out[12..14], &[0, 0], "not IP stays not IP");
        // BSD loopback in either byte order; AF_INET6 as three BSDs number it.
        for f in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let mut p = f.to_vec();
            p.push(0x45);
            assert!(Link::Null.to_ethernet(&p, 0, &mut out));
            assert_eq!(&out[12..15], &[0x08, 0x00, 0x45]);
        }
        for af in [24u32, 28, 30] {
            assert!(Link::Loop.to_ethernet(&af.to_be_bytes(), 0, &mut out));
            assert_eq!(&out[12..14], &[0x86, 0xdd]);
        }
        // Too short for the link header: reported, not misread.
        assert!(!Link::Sll.to_ethernet(&[0; 15], 15, &mut out));
        assert!(!Link::Ethernet.to_ethernet(&[0; 13], 13, &mut out));
        assert!(!Link::Null.to_ethernet(&[2, 0], 2, &mut out));
        // Jumbo frames stop at what the test run takes.
        assert!(Link::Ethernet.to_ethernet(&[0; 60], 9000, &mut out));
        assert_eq!(out.len(), MAX_FRAME);
    }

    #[test]
    fn what_is_not_a_capture_says_so() {
        let dir = std::env::temp_dir().join(format!("astra-capture-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("text");
        std::fs::write(&f, b"hello, this is not a capture\n").unwrap();
        assert!(matches!(
            Capture::open(&f),
            Err(CaptureError::NotACapture { .. })
        ));
        std::fs::write(&f, b"").unwrap();
        assert!(matches!(
            Capture::open(&f),
            Err(CaptureError::NotACapture { .. })
        ));
        assert!(matches!(Capture::open(&dir), Err(CaptureError::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
