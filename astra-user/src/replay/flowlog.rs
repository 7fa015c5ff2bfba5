//! Flow logs as evidence: Zeek's `conn.log` (tab-separated with its `#fields` header, or JSON
//! lines) and Argus binetflow CSV. Each record becomes the two flow-table entries the dataplane
//! would have counted for that conversation (one per direction, with the TCP flags its history
//! or state names), so the engine judges a log as it judges packets.
//!
//! What a log cannot say is filled in plainly: a record's packets all land at its end (so
//! per-second rates over a long connection come out as one burst), Argus CSV gives no packet
//! count per direction (it is estimated from the byte split), and a direction with no packets
//! gets no entry.
use std::net::IpAddr;

use astra_common::{FlowKey, FlowValue, ip_proto, tcp_flags};
use serde::Deserialize;

/// The longest line read; a longer one is an error (a flow log's lines are short).
pub const MAX_LINE: usize = 64 * 1024;
/// The ifindex flow-log entries are counted under: no interface has it, so they never mix
/// with entries the dataplane counts.
pub const LOG_IFINDEX: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    ZeekTsv,
    ZeekJson,
    ArgusCsv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::ZeekTsv => "zeek-conn-tsv",
            Format::ZeekJson => "zeek-conn-json",
            Format::ArgusCsv => "argus-csv",
        }
    }

    /// The format of a file that starts with `head`, by its content.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
        let first = text.lines().find(|l| !l.trim().is_empty())?.trim_start();
        if first.starts_with("#separator") || first.starts_with("#fields") {
            return Some(Format::ZeekTsv);
        }
        if first.starts_with('{') && first.contains("\"id.orig_h\"") {
            return Some(Format::ZeekJson);
        }
        let cols: Vec<&str> = first.split(',').map(str::trim).collect();
        let has = |c: &str| cols.iter().any(|x| x.eq_ignore_ascii_case(c));
        (has("SrcAddr") && has("DstAddr") && has("StartTime")).then_some(Format::ArgusCsv)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowLogError {
    #[error("line {line}: {what}")]
    Bad { line: u64, what: String },
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// A flow log being read record by record.
pub struct FlowLog {
    pub format: Format,
    reader: std::io::BufReader<std::fs::File>,
    line: u64,
    position: u64,
    tsv: ZeekTsv,
    argus: ArgusCsv,
    buf: Vec<u8>,
}

impl FlowLog {
    /// Opens `path` if its content is a flow log Astra reads; `None` if it is not one.
    pub fn open(path: &std::path::Path) -> std::io::Result<Option<FlowLog>> {
        use std::io::{Read as _, Seek as _};
        let mut file = std::fs::File::open(path)?;
        let mut head = vec![0u8; 4096];
        let n = file.by_ref().take(4096).read(&mut head)?;
        let Some(format) = Format::sniff(&head[..n]) else {
            return Ok(None);
        };
        file.rewind()?;
        Ok(Some(FlowLog {
            format,
            reader: std::io::BufReader::with_capacity(1 << 16, file),
            line: 0,
            position: 0,
            tsv: ZeekTsv::new(),
            argus: ArgusCsv::new(),
            buf: Vec::new(),
        }))
    }

    /// Bytes read so far (for progress).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next conversation; `None` at the end. A bad record is an error naming its line.
    pub fn next_conn(&mut self) -> Result<Option<Conn>, FlowLogError> {
        use std::io::{BufRead as _, Read as _};
        loop {
            self.buf.clear();
            let n = self
                .reader
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.position += n as u64;
            if n > MAX_LINE {
                return Err(FlowLogError::Bad {
                    line: self.line,
                    what: format!("longer than {} KiB", MAX_LINE / 1024),
                });
            }
            let text = String::from_utf8_lossy(&self.buf);
            let conn = match self.format {
                Format::ZeekTsv => self.tsv.line(self.line, &text)?,
                Format::ZeekJson => zeek_json_line(self.line, &text)?,
                Format::ArgusCsv => self.argus.line(self.line, &text)?,
            };
            if conn.is_some() {
                return Ok(conn);
            }
        }
    }
}

/// One conversation of a log, as the dataplane would have counted it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conn {
    /// Start and end, UNIX nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    pub orig: (IpAddr, u16),
    pub resp: (IpAddr, u16),
    pub proto: u8,
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub resp_packets: u64,
    pub resp_bytes: u64,
    /// TCP flags of each side: (OR of all, first packet's).
    pub orig_flags: (u32, u32),
    pub resp_flags: (u32, u32),
    /// What the log says the responder's service is (Zeek's `service`, found by content), as
    /// the greeting such a service opens with: the dataplane's first payload bytes.
    pub resp_greeting: u64,
}

/// The greeting a Zeek `service` name stands for (login services only), as
/// [`FlowValue::first_payload`] holds it.
fn greeting(service: Option<&str>) -> u64 {
    let text: &[u8] = match service.unwrap_or("").split(',').next().unwrap_or("") {
        "ssh" => b"SSH-2.0-",
        "ftp" | "smtp" => b"220 \r\n\0\0\0",
        "pop3" => b"+OK \r\n\0\0",
        "imap" => b"* OK \r\n\0",
        _ => return 0,
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(&text[..8]);
    u64::from_le_bytes(b)
}

fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Conn {
    /// The flow-table entries of the two directions (a direction that sent nothing has none),
    /// stamped on the dataplane clock `to_clock` maps UNIX nanoseconds to.
    pub fn entries(&self, to_clock: impl Fn(u64) -> u64) -> Vec<(FlowKey, FlowValue)> {
        let (first, last) = (to_clock(self.start_ns), to_clock(self.end_ns));
        let icmp = matches!(self.proto, ip_proto::ICMP | ip_proto::ICMPV6);
        let mut out = Vec::with_capacity(2);
        for (from, to, packets, bytes, (flags, first_flags), reply, payload) in [
            (
                self.orig,
                self.resp,
                self.orig_packets,
                self.orig_bytes,
                self.orig_flags,
                false,
                0,
            ),
            (
                self.resp,
                self.orig,
                self.resp_packets,
                self.resp_bytes,
                self.resp_flags,
                true,
                self.resp_greeting,
            ),
        ] {
            if packets == 0 {
                continue;
            }
            // ICMP: Zeek and Argus give the type as the source port and the code as the
            // destination port; the dataplane keys (0, type << 8 | code). A reply's type is
            // the echo reply, which pairs with the request.
            let (src_port, dst_port) = if icmp {
                let (t, c) = (self.orig.1, self.resp.1);
                let t = match (reply, self.proto, t) {
                    (true, ip_proto::ICMP, 8) => 0,
                    (true, ip_proto::ICMPV6, 128) => 129,
                    _ => t,
                };
                (0, (t & 0xff) << 8 | (c & 0xff))
            } else {
                (from.1, to.1)
            };
            let count = |f: u32| u32::from(flags & f != 0);
            out.push((
                FlowKey {
                    src: mapped(from.0),
                    dst: mapped(to.0),
                    src_port,
                    dst_port,
                    ifindex: LOG_IFINDEX,
                    proto: self.proto,
                    direction: 0,
                    _pad: [0; 2],
                },
                FlowValue {
                    packets,
                    bytes,
                    first_seen_ns: first,
                    last_seen_ns: last,
                    syn_count: count(tcp_flags::SYN),
                    fin_count: count(tcp_flags::FIN),
                    rst_count: count(tcp_flags::RST),
                    tcp_flags: (flags & 0xff) | (first_flags & 0xff) << 8,
                    min_len: (bytes / packets) as u32,
                    max_len: (bytes / packets) as u32,
                    first_payload: payload,
                },
            ));
        }
        out
    }
}

fn proto_number(p: &str) -> Option<u8> {
    Some(match p.to_ascii_lowercase().as_str() {
        "tcp" => ip_proto::TCP,
        "udp" => ip_proto::UDP,
        "icmp" => ip_proto::ICMP,
        "icmp6" | "ipv6-icmp" | "icmpv6" => ip_proto::ICMPV6,
        "sctp" => ip_proto::SCTP,
        n => n.parse().ok()?,
    })
}

const ETH: u64 = 14;

/// Flags each side sent, from Zeek's `history` (upper case the originator, lower case the
/// responder; `S` SYN, `H`/`h` SYN-ACK, `A` ACK, `D` data, `F` FIN, `R` RST) or, without one,
/// from `conn_state`.
fn zeek_flags(history: Option<&str>, state: Option<&str>) -> ((u32, u32), (u32, u32)) {
    use tcp_flags::{ACK, FIN, PSH, RST, SYN};
    let mut sides = [(0u32, None::<u32>); 2];
    if let Some(h) = history.filter(|h| !h.is_empty()) {
        for c in h.chars() {
            let side = usize::from(c.is_ascii_lowercase());
            let f = match c.to_ascii_uppercase() {
                'S' => SYN,
                'H' => SYN | ACK,
                'A' => ACK,
                'D' => PSH | ACK,
                'F' => FIN | ACK,
                'R' => RST,
                _ => continue,
            };
            // A lone S on the responder side (a simultaneous open) is still a SYN-ACK.
            let f = if side == 1 && f == SYN { SYN | ACK } else { f };
            sides[side].0 |= f;
            sides[side].1.get_or_insert(f);
        }
    } else {
        let (o, r) = match state.unwrap_or("") {
            "S0" | "SH" => (SYN, 0),
            "REJ" => (SYN, RST | ACK),
            "SF" | "S1" | "S2" | "S3" => (SYN | ACK | FIN, SYN | ACK | FIN),
            "RSTO" | "RSTOS0" => (SYN | ACK | RST, SYN | ACK),
            "RSTR" | "RSTRH" => (SYN | ACK, SYN | ACK | RST),
            _ => (ACK, ACK),
        };
        let first = |f: u32| match f {
            0 => None,
            f if f & SYN != 0 && f & ACK != 0 && f & FIN == 0 && f & RST == 0 => Some(SYN | ACK),
            f if f & SYN != 0 => Some(SYN),
            f => Some(f),
        };
        sides[0] = (o, first(o).map(|f| if f & SYN != 0 { SYN } else { f }));
        sides[1] = (
            r,
            first(r).map(|f| if f & SYN != 0 { SYN | ACK } else { f }),
        );
    }
    let pick = |(all, first): (u32, Option<u32>)| (all, first.unwrap_or(0));
    (pick(sides[0]), pick(sides[1]))
}

/// Zeek's tab-separated conn.log: the `#fields` header names the columns; `#separator`,
/// `#unset_field` and `#empty_field` are honoured. Other `#` lines are skipped.
#[derive(Debug, Default)]
pub struct ZeekTsv {
    separator: String,
    unset: String,
    columns: Vec<String>,
}

fn zeek_escape_decode(s: &str) -> String {
    // `#separator \x09`: Zeek writes the separator as an escape.
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Field `name`'s text `v` read as a `T` (`what` says as what, for the error).
fn parse_as<T: std::str::FromStr>(
    line: u64,
    name: &str,
    v: &str,
    what: &str,
) -> Result<T, FlowLogError> {
    v.parse().map_err(|_| FlowLogError::Bad {
        line,
        what: format!("{name} is not {what}: {}", crate::text::excerpt(v)),
    })
}

/// A field holding a count, 0 when absent.
fn count_of(line: u64, name: &str, v: Option<&str>) -> Result<u64, FlowLogError> {
    v.map_or(Ok(0), |v| parse_as(line, name, v, "a count"))
}

/// A Zeek record's fields, by name, whatever the format.
trait Fields {
    fn get(&self, name: &str) -> Option<&str>;
}

fn conn_from(f: &impl Fields, line: u64) -> Result<Option<Conn>, FlowLogError> {
    let bad = |what: String| FlowLogError::Bad { line, what };
    let need = |name: &str| f.get(name).ok_or_else(|| bad(format!("no {name}")));
    let num = |name: &str| count_of(line, name, f.get(name));
    let secs = |name: &str, v: &str| -> Result<u64, FlowLogError> {
        let x: f64 = parse_as(line, name, v, "a time")?;
        if !x.is_finite() || x < 0.0 {
            return Err(bad(format!("{name} is out of range")));
        }
        Ok((x * 1e9).min(u64::MAX as f64) as u64)
    };
    let addr = |name: &str| -> Result<IpAddr, FlowLogError> {
        parse_as(line, name, need(name)?, "an address")
    };
    let port =
        |name: &str| -> Result<u16, FlowLogError> { parse_as(line, name, need(name)?, "a port") };
    let proto_text = need("proto")?;
    let Some(proto) = proto_number(proto_text) else {
        return Err(bad(format!(
            "proto is not a protocol: {}",
            crate::text::excerpt(proto_text)
        )));
    };
    let start = secs("ts", need("ts")?)?;
    let dur = match f.get("duration") {
        Some(d) => secs("duration", d)?,
        None => 0,
    };
    let (mut op, mut rp) = (num("orig_pkts")?, num("resp_pkts")?);
    let (ob, rb) = (num("orig_ip_bytes")?, num("resp_ip_bytes")?);
    if op == 0 && rp == 0 {
        // A log without packet counts still saw the conversation.
        op = 1;
        rp = u64::from(num("resp_bytes")? > 0);
    }
    let (orig_flags, resp_flags) = if proto == ip_proto::TCP {
        zeek_flags(f.get("history"), f.get("conn_state"))
    } else {
        ((0, 0), (0, 0))
    };
    Ok(Some(Conn {
        start_ns: start,
        end_ns: start.saturating_add(dur),
        orig: (addr("id.orig_h")?, port("id.orig_p")?),
        resp: (addr("id.resp_h")?, port("id.resp_p")?),
        proto,
        orig_packets: op,
        orig_bytes: ob.max(op * 40) + op * ETH,
        resp_packets: rp,
        resp_bytes: rb.max(rp * 40) + rp * ETH,
        orig_flags,
        resp_flags,
        resp_greeting: greeting(f.get("service")),
    }))
}

struct TsvFields<'a> {
    columns: &'a [String],
    values: Vec<&'a str>,
    unset: &'a str,
}

impl Fields for TsvFields<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == name)?;
        let v = *self.values.get(i)?;
        (v != self.unset && !v.is_empty()).then_some(v)
    }
}

impl ZeekTsv {
    pub fn new() -> Self {
        Self {
            separator: "\t".into(),
            unset: "-".into(),
            columns: Vec::new(),
        }
    }

    /// The conversation line `n` holds; `None` for headers and comments.
    pub fn line(&mut self, n: u64, line: &str) -> Result<Option<Conn>, FlowLogError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(h) = line.strip_prefix('#') {
            let (key, value) = h.split_once([' ', '\t']).unwrap_or((h, ""));
            match key {
                "separator" => self.separator = zeek_escape_decode(value.trim()),
                "unset_field" => {
                    value
                        .split(self.separator.as_str())
                        .next()
                        .unwrap_or("-")
                        .clone_into(&mut self.unset);
                }
                "fields" => {
                    self.columns = value
                        .split(self.separator.as_str())
                        .map(str::to_owned)
                        .collect()
                }
                _ => {}
            }
            return Ok(None);
        }
        if line.trim().is_empty() {
            return Ok(None);
        }
        if self.columns.is_empty() {
            return Err(FlowLogError::Bad {
                line: n,
                what: "a record before the #fields header".into(),
            });
        }
        let f = TsvFields {
            columns: &self.columns,
            values: line.split(self.separator.as_str()).collect(),
            unset: &self.unset,
        };
        conn_from(&f, n)
    }
}

/// One JSON line of conn.log (`LogAscii::use_json`); fields Astra does not use are ignored.
#[derive(Deserialize)]
struct JsonConn {
    ts: serde_json::Value,
    #[serde(rename = "id.orig_h")]
    orig_h: String,
    #[serde(rename = "id.orig_p")]
    orig_p: u16,
    #[serde(rename = "id.resp_h")]
    resp_h: String,
    #[serde(rename = "id.resp_p")]
    resp_p: u16,
    proto: String,
    duration: Option<f64>,
    orig_pkts: Option<u64>,
    resp_pkts: Option<u64>,
    orig_ip_bytes: Option<u64>,
    resp_ip_bytes: Option<u64>,
    resp_bytes: Option<u64>,
    conn_state: Option<String>,
    history: Option<String>,
    service: Option<String>,
}

struct Owned(Vec<(&'static str, String)>);

impl Fields for Owned {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A JSON line of conn.log; `ts` may be epoch seconds or an ISO 8601 time.
pub fn zeek_json_line(n: u64, line: &str) -> Result<Option<Conn>, FlowLogError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let bad = |what: String| FlowLogError::Bad { line: n, what };
    let j: JsonConn = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let ts = match &j.ts {
        serde_json::Value::Number(x) => x.to_string(),
        serde_json::Value::String(s) => match humantime::parse_rfc3339_weak(s) {
            Ok(t) => format!(
                "{}",
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| bad("ts before 1970".into()))?
                    .as_secs_f64()
            ),
            Err(_) => {
                return Err(bad(format!(
                    "ts is not a time: {}",
                    crate::text::excerpt(s)
                )));
            }
        },
        _ => return Err(bad("ts is not a time".into())),
    };
    let mut v: Vec<(&'static str, String)> = vec![
        ("ts", ts),
        ("id.orig_h", j.orig_h),
        ("id.orig_p", j.orig_p.to_string()),
        ("id.resp_h", j.resp_h),
        ("id.resp_p", j.resp_p.to_string()),
        ("proto", j.proto),
    ];
    let mut opt = |k: &'static str, x: Option<String>| {
        if let Some(x) = x {
            v.push((k, x));
        }
    };
    opt("duration", j.duration.map(|d| d.to_string()));
    opt("orig_pkts", j.orig_pkts.map(|d| d.to_string()));
    opt("resp_pkts", j.resp_pkts.map(|d| d.to_string()));
    opt("orig_ip_bytes", j.orig_ip_bytes.map(|d| d.to_string()));
    opt("resp_ip_bytes", j.resp_ip_bytes.map(|d| d.to_string()));
    opt("resp_bytes", j.resp_bytes.map(|d| d.to_string()));
    opt("conn_state", j.conn_state);
    opt("history", j.history);
    opt("service", j.service);
    conn_from(&Owned(v), n)
}

/// Argus binetflow CSV (`ra -c , -s stime dur proto saddr sport dir daddr dport state
/// pkts bytes sbytes`, the layout of the CTU-13 captures): the header names the columns.
#[derive(Debug, Default)]
pub struct ArgusCsv {
    columns: Vec<String>,
}

impl ArgusCsv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn line(&mut self, n: u64, line: &str) -> Result<Option<Conn>, FlowLogError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(None);
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if self.columns.is_empty() {
            self.columns = cells.iter().map(|c| c.to_ascii_lowercase()).collect();
            return Ok(None);
        }
        let bad = |what: String| FlowLogError::Bad { line: n, what };
        let get = |name: &str| {
            self.columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| cells.get(i).copied())
                .filter(|v| !v.is_empty())
        };
        let need = |name: &str| get(name).ok_or_else(|| bad(format!("no {name}")));
        let start = argus_time(need("starttime")?).ok_or_else(|| {
            bad(format!(
                "StartTime is not a time: {}",
                crate::text::excerpt(get("starttime").unwrap_or(""))
            ))
        })?;
        let dur: f64 = get("dur").unwrap_or("0").parse().unwrap_or(0.0);
        let dur_ns = if dur.is_finite() && dur > 0.0 {
            (dur * 1e9) as u64
        } else {
            0
        };
        let proto_text = need("proto")?;
        let proto = proto_number(proto_text).ok_or_else(|| {
            bad(format!(
                "Proto is not a protocol: {}",
                crate::text::excerpt(proto_text)
            ))
        })?;
        let addr = |name: &str| -> Result<IpAddr, FlowLogError> {
            parse_as(n, name, need(name)?, "an address")
        };
        // Ports may be written in hex (ICMP types: 0x0008); none for protocols without them.
        let port = |name: &str| -> Result<u16, FlowLogError> {
            match get(name) {
                None => Ok(0),
                Some(v) => v
                    .strip_prefix("0x")
                    .map_or_else(|| v.parse(), |h| u16::from_str_radix(h, 16))
                    .map_err(|_| bad(format!("{name} is not a port: {}", crate::text::excerpt(v)))),
            }
        };
        let count = |name: &str| count_of(n, name, get(name));
        let (pkts, bytes, sbytes) = (count("totpkts")?, count("totbytes")?, count("srcbytes")?);
        let sbytes = sbytes.min(bytes);
        // The split of packets between the directions follows the split of bytes.
        let spkts = match (pkts, bytes) {
            (0, _) => 1,
            (1, _) => 1,
            (p, 0) => p,
            (p, b) => ((p as f64 * sbytes as f64 / b as f64).round() as u64).clamp(1, p),
        };
        let dpkts = pkts.saturating_sub(spkts);
        let (orig_flags, resp_flags) = if proto == ip_proto::TCP {
            argus_flags(get("state").unwrap_or(""))
        } else {
            ((0, 0), (0, 0))
        };
        Ok(Some(Conn {
            start_ns: start,
            end_ns: start.saturating_add(dur_ns),
            orig: (addr("srcaddr")?, port("sport")?),
            resp: (addr("dstaddr")?, port("dport")?),
            proto,
            orig_packets: spkts,
            orig_bytes: sbytes.max(spkts * 54),
            resp_packets: dpkts,
            resp_bytes: (bytes - sbytes).max(dpkts * 54),
            orig_flags,
            resp_flags,
            resp_greeting: 0,
        }))
    }
}

/// `2011/08/10 09:46:53.047277` (the CTU-13 files) or an RFC 3339 time, read as UTC.
fn argus_time(s: &str) -> Option<u64> {
    let t = s.replacen('/', "-", 2).replacen(' ', "T", 1);
    let t = humantime::parse_rfc3339_weak(&t).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// Argus' TCP state `S_RA` or `FSPA_FSPA`: the flags the source sent, `_`, the destination's.
fn argus_flags(state: &str) -> ((u32, u32), (u32, u32)) {
    use tcp_flags::{ACK, FIN, PSH, RST, SYN};
    let (s, d) = state.split_once('_').unwrap_or((state, ""));
    let flags = |x: &str| {
        x.chars().fold(0, |f, c| {
            f | match c {
                'S' => SYN,
                'A' => ACK,
                'P' => PSH,
                'F' => FIN,
                'R' => RST,
                _ => 0,
            }
        })
    };
    let (fs, fd) = (flags(s), flags(d));
    // Which packet came first is not written down; a SYN would have been.
    let first = |f: u32, reply: bool| match (f & SYN != 0, reply) {
        (true, false) => SYN,
        (true, true) if f & ACK != 0 => SYN | ACK,
        _ if f & RST != 0 && f & ACK == 0 => RST,
        _ => f & (ACK | RST),
    };
    ((fs, first(fs, false)), (fd, first(fd, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSV: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n1300475167.096535\tCHhAvVGS1DHFjwGM9\t141.142.220.202\t5353\t224.0.0.251\t5353\tudp\tdns\t-\t-\t-\tS0\t-\t-\t0\tD\t1\t73\t0\t0\t-\n1300475168.853899\tC4J4Th3PJpwUYZZ6gc\t141.142.220.118\t43927\t141.142.2.2\t53\tudp\tdns\t0.000435\t38\t89\tSF\t-\t-\t0\tDd\t1\t66\t1\t117\t-\n1300475169.780331\tCtPZjS20MLrsMUOJi2\t192.168.56.1\t59550\t192.168.56.101\t21\ttcp\tftp\t1.5\t40\t120\tSF\t-\t-\t0\tShAdDaFf\t8\t460\t7\t500\t-\n1300475170.0\tCx\t10.0.0.9\t40000\t10.0.0.1\t23\ttcp\t-\t0.001\t0\t0\tREJ\t-\t-\t0\tSr\t1\t44\t1\t40\t-\n";

    #[test]
    fn formats_are_told_by_their_content() {
        assert_eq!(Format::sniff(TSV.as_bytes()), Some(Format::ZeekTsv));
        assert_eq!(
            Format::sniff(br#"{"ts":1.5,"uid":"C","id.orig_h":"10.0.0.1"}"#),
            Some(Format::ZeekJson)
        );
        assert_eq!(
            Format::sniff(b"StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State\n"),
            Some(Format::ArgusCsv)
        );
        assert_eq!(Format::sniff(b"hello\nworld\n"), None);
        assert_eq!(Format::sniff(b""), None);
    }

    #[test]
    fn zeek_tsv_records_become_both_directions_with_their_flags() {
        let mut r = ZeekTsv::new();
        let conns: Vec<Conn> = TSV
            .lines()
            .enumerate()
            .filter_map(|(i, l)| r.line(i as u64 + 1, l).unwrap())
            .collect();
        assert_eq!(conns.len(), 4);
        let ftp = conns[2];
        assert_eq!(ftp.orig, ("192.168.56.1".parse().unwrap(), 59550));
        assert_eq!(ftp.resp.1, 21);
        assert_eq!((ftp.orig_packets, ftp.resp_packets), (8, 7));
        assert_eq!(ftp.orig_bytes, 460 + 8 * 14);
        assert_eq!(ftp.end_ns - ftp.start_ns, 1_500_000_000);
        let e = ftp.entries(|t| t);
        assert_eq!(e.len(), 2);
        let (o, rsp) = (&e[0].1, &e[1].1);
        // Zeek's `service` says what the responder is: its greeting stands in for the first
        // payload bytes the dataplane would have seen.
        assert!(rsp.first_payload.to_le_bytes().starts_with(b"220"));
        assert_eq!(o.first_payload, 0);
        assert_eq!(o.tcp_flags >> 8, tcp_flags::SYN);
        assert_eq!(rsp.tcp_flags >> 8, tcp_flags::SYN | tcp_flags::ACK);
        assert!(o.tcp_flags & tcp_flags::FIN != 0 && rsp.fin_count == 1);
        // The multicast record had no reply: one entry.
        assert_eq!(conns[0].entries(|t| t).len(), 1);
        // A refused connection: the responder's first packet is a RST.
        let rej = conns[3].entries(|t| t);
        assert_eq!(rej[1].1.tcp_flags >> 8 & tcp_flags::RST, tcp_flags::RST);
        // Paired as the dataplane's entries would be: the originator opened it.
        let bi = crate::flow::pair_flows(e.iter().map(|(k, v)| (k, v)));
        assert_eq!(bi[0].src, ftp.orig.0);
    }

    #[test]
    fn zeek_json_and_argus_csv_read_the_same_conversation() {
        let j = r#"{"ts":1300475169.780331,"uid":"C","id.orig_h":"192.168.56.1","id.orig_p":59550,"id.resp_h":"192.168.56.101","id.resp_p":21,"proto":"tcp","duration":1.5,"conn_state":"SF","history":"ShAdDaFf","orig_pkts":8,"orig_ip_bytes":460,"resp_pkts":7,"resp_ip_bytes":500}"#;
        let c = zeek_json_line(1, j).unwrap().unwrap();
        assert_eq!((c.orig_packets, c.resp_packets), (8, 7));
        assert_eq!(c.orig_flags.1, tcp_flags::SYN);
        let iso = j.replace("1300475169.780331", "\"2011-03-18T19:06:09.780331Z\"");
        assert_eq!(
            zeek_json_line(1, &iso).unwrap().unwrap().start_ns,
            c.start_ns
        );
        let mut a = ArgusCsv::new();
        assert_eq!(
            a.line(1, "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label")
                .unwrap(),
            None
        );
        let c = a
            .line(2, "2011/08/10 09:46:53.047277,3.124,tcp,147.32.84.165,1027,   ->,74.125.232.195,80,SRPA_SPA,0,0,10,1000,400,flow=Background")
            .unwrap()
            .unwrap();
        assert_eq!(c.resp, ("74.125.232.195".parse().unwrap(), 80));
        assert_eq!((c.orig_packets, c.resp_packets), (4, 6));
        assert_eq!(c.orig_flags.1, tcp_flags::SYN);
        assert_eq!(c.resp_flags.1, tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(c.end_ns - c.start_ns, 3_124_000_000);
        let icmp = a
            .line(3, "2011/08/10 09:46:54.0,0,icmp,10.0.0.1,0x0008,->,10.0.0.2,0x0000,ECO,0,0,2,196,98,x")
            .unwrap()
            .unwrap();
        let e = icmp.entries(|t| t);
        assert_eq!((e[0].0.src_port, e[0].0.dst_port), (0, 8 << 8));
        assert_eq!(e[1].0.dst_port, 0, "the echo reply pairs with its request");
    }

    #[test]
    fn bad_records_name_their_line_and_field() {
        let mut r = ZeekTsv::new();
        assert!(matches!(
            r.line(1, "1.0\tx"),
            Err(FlowLogError::Bad { line: 1, .. })
        ));
        for l in TSV.lines().take(6) {
            r.line(0, l).unwrap();
        }
        let e = r
            .line(
                9,
                "nope\tC\t1.2.3.4\t1\t5.6.7.8\t2\ttcp\t-\t-\t-\t-\tSF\t-\t-\t0\t-\t1\t40\t1\t40\t-",
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "line 9: ts is not a time: nope");
        let e = r
            .line(10, "1.0\tC\t1.2.3.999\t1\t5.6.7.8\t2\ttcp\t-\t-\t-\t-\tSF\t-\t-\t0\t-\t1\t40\t1\t40\t-")
            .unwrap_err();
        assert!(e.to_string().contains("id.orig_h is not an address"), "{e}");
        assert!(zeek_json_line(3, "{not json").is_err());
        let e = zeek_json_line(4, r#"{"ts":-1,"id.orig_h":"1.2.3.4","id.orig_p":1,"id.resp_h":"1.2.3.5","id.resp_p":2,"proto":"tcp"}"#).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
