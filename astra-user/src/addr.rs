//! Parsing of the addresses, networks and TTLs that operators type on the command line.
//!
//! Everything here is strict on purpose: a block rule that silently covers a different range
//! than the operator meant is worse than a rejected command, so ambiguous input is refused with
//! a message that says what was probably meant.

use std::{net::IpAddr, time::Duration};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A rejected address, network or TTL. The message is a single line that names the input, fit
/// to print after "error: "; callers map it to exit code 2 (usage error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> AddrError {
    AddrError::Invalid(msg.into())
}

/// Longer than any address with a prefix length (an IPv6 address with an embedded IPv4 one and
/// /128 is 49 characters) or any TTL anyone types.
const MAX_TEXT: usize = 64;

/// Refuses input that cannot be an address or TTL before any message quotes it: too long (a
/// 10 MB feed line used to come back as a 20 MB error) or holding control characters.
fn refuse_odd_text(input: &str, what: &str, examples: &str) -> Result<(), AddrError> {
    if input.len() > MAX_TEXT || input.chars().any(char::is_control) {
        return Err(invalid(format!(
            "invalid {what} '{}': {examples}",
            crate::text::excerpt(input)
        )));
    }
    Ok(())
}

/// Refuses an entry covering every address of a family (`0.0.0.0/0`, `::/0`) unless `force`;
/// `consequence` says what such an entry would do (blocking one cuts the host off, allowing
/// one turns every block off).
pub fn check_not_everything(net: &IpNet, consequence: &str, force: bool) -> Result<(), AddrError> {
    if net.prefix_len() != 0 || force {
        return Ok(());
    }
    Err(invalid(format!(
        "{net} covers every address: {consequence}; pass --force (the API: \"force\": true) if that is what you mean"
    )))
}

const NET_EXAMPLES: &str = "use e.g. 192.0.2.1, 192.0.2.0/24 or 2001:db8::/32";

/// Parses `ADDR` (a single host: /32 or /128) or `ADDR/LEN`, IPv4 or IPv6.
///
/// A prefix with host bits set is refused rather than truncated, because `10.1.2.3/8` is far
/// more often a typo for `10.1.2.3/32` or `10.1.2.0/24` than a deliberate request to cover 16M
/// hosts. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is returned in IPv4 form because that is how the
/// kernel sees the traffic, and one rule must not exist under two keys.
pub fn parse_net(s: &str) -> Result<IpNet, AddrError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(invalid(format!("empty address: {NET_EXAMPLES}")));
    }
    refuse_odd_text(input, "address", NET_EXAMPLES)?;

    let (addr_text, len_text) = match input.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (input, None),
    };
    if addr_text.is_empty() {
        return Err(invalid(format!(
            "missing address before '/' in '{input}': {NET_EXAMPLES}"
        )));
    }
    let addr: IpAddr = addr_text.parse().map_err(|_| {
        invalid(format!(
            "invalid IP address '{addr_text}' in '{input}': {NET_EXAMPLES}"
        ))
    })?;

    let max_len: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let len = match len_text {
        None => max_len,
        Some(text) => parse_prefix_len(input, text, family, max_len)?,
    };

    // Only the range is checked above, so construction cannot fail; mapping the error anyway
    // keeps this function free of panics.
    let net =
        IpNet::new(addr, len).map_err(|_| out_of_range(input, len.into(), family, max_len))?;
    let base = net.trunc();
    if base.addr() != addr {
        return Err(invalid(format!(
            "{input} has host bits set; did you mean {base}?"
        )));
    }
    Ok(canonical_net(net))
}

fn parse_prefix_len(input: &str, text: &str, family: &str, max_len: u8) -> Result<u8, AddrError> {
    if text.is_empty() {
        return Err(invalid(format!(
            "missing prefix length after '/' in '{input}': {NET_EXAMPLES}"
        )));
    }
    // u8::from_str would accept "+8"; a sign here is a typo, not an intent.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "invalid prefix length '{text}' in '{input}': expected a number 0-{max_len} for {family}"
        )));
    }
    match text.parse::<u64>() {
        Ok(len) if len <= u64::from(max_len) => Ok(len as u8),
        Ok(len) => Err(out_of_range(input, len, family, max_len)),
        // Only reachable for absurdly long digit strings.
        Err(_) => Err(invalid(format!(
            "prefix length '{text}' in '{input}' is out of range for {family} (0-{max_len})"
        ))),
    }
}

fn out_of_range(input: &str, len: u64, family: &str, max_len: u8) -> AddrError {
    invalid(format!(
        "prefix length {len} is out of range for {family} (0-{max_len}) in '{input}'"
    ))
}

/// The one form under which a network is stored and keyed: host bits cleared and IPv4-mapped
/// IPv6 folded into IPv4. Two spellings of the same range must never become two rules.
pub fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        // prefix_len >= 96 guarantees the subtraction is in 0..=32, so this cannot fail.
        if let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
            return IpNet::V4(v4net);
        }
    }
    net
}

/// Upper bound for a TTL: 100 years as humantime counts them (365.25 days). Beyond a century an
/// expiry is indistinguishable from a mistake, and keeping `now + ttl` far from `i64::MAX`
/// (SQLite's integer range) spares every caller an overflow check.
const MAX_TTL: Duration = Duration::from_secs(3_155_760_000);

const TTL_EXAMPLES: &str = "use e.g. 30s, 10m, 2h, or 'permanent'";

/// Parses a TTL such as `90s`, `10m`, `1h30m`. `0`, `permanent` and `forever` mean "never
/// expires" and are returned as [`Duration::ZERO`], which is the convention the store and CLI
/// use for permanent entries.
///
/// Non-zero TTLs under one second are refused: expiries are stored in whole seconds, so they
/// would round to "already expired" (or, worse, to zero = permanent).
pub fn parse_ttl(s: &str) -> Result<Duration, AddrError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(invalid(format!("empty TTL: {TTL_EXAMPLES}")));
    }
    refuse_odd_text(input, "TTL", TTL_EXAMPLES)?;
    if input == "0"
        || input.eq_ignore_ascii_case("permanent")
        || input.eq_ignore_ascii_case("forever")
    {
        return Ok(Duration::ZERO);
    }
    let ttl = humantime::parse_duration(input)
        .map_err(|_| invalid(format!("unparsable TTL '{input}': {TTL_EXAMPLES}")))?;
    if ttl.is_zero() {
        // "0s", "0m": the same request as "0", just spelt with a unit.
        return Ok(Duration::ZERO);
    }
    if ttl < Duration::from_secs(1) {
        return Err(invalid(format!(
            "invalid TTL '{input}': shorter than one second; {TTL_EXAMPLES}"
        )));
    }
    if ttl > MAX_TTL {
        return Err(invalid(format!(
            "invalid TTL '{input}': longer than 100 years; use 'permanent' for no expiry"
        )));
    }
    Ok(ttl)
}

/// One limit of a throttle: packets or bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Pps(u64),
    Bps(u64),
}

const RATE_EXAMPLES: &str = "use e.g. 100pps, 20kpps, 64kbit, 10mbit or 1gbit";
const MAX_PPS: u64 = 100_000_000;
const MIN_BPS: u64 = 1_000;
const MAX_BPS: u64 = 400_000_000_000;

/// Parses a rate as `tc` spells them: `100pps`, `20kpps`, `2mpps` for packets and `64kbit`,
/// `10mbit`, `1gbit` (decimal: k = 1000) for bits per second. `bps` is refused: `tc` reads it
/// as bytes, most people as bits, and a limit off by eight is worse than an error.
pub fn parse_rate(s: &str) -> Result<RateLimit, AddrError> {
    let input = s.trim();
    refuse_odd_text(input, "rate", RATE_EXAMPLES)?;
    let lower = input.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| invalid(format!("unparsable rate '{input}': {RATE_EXAMPLES}")))?;
    let (pps, scale) = match unit {
        "pps" => (true, 1),
        "kpps" => (true, 1_000),
        "mpps" => (true, 1_000_000),
        "bit" => (false, 1),
        "kbit" => (false, 1_000),
        "mbit" => (false, 1_000_000),
        "gbit" => (false, 1_000_000_000),
        "bps" | "kbps" | "mbps" | "gbps" => {
            return Err(invalid(format!(
                "ambiguous rate '{input}': write bits per second as kbit, mbit or gbit, packets as pps"
            )));
        }
        _ => {
            return Err(invalid(format!(
                "unknown rate unit in '{input}': {RATE_EXAMPLES}"
            )));
        }
    };
    let v = n.saturating_mul(scale);
    if pps {
        if !(1..=MAX_PPS).contains(&v) {
            return Err(invalid(format!(
                "invalid rate '{input}': packet rates go from 1pps to 100mpps"
            )));
        }
        Ok(RateLimit::Pps(v))
    } else {
        if !(MIN_BPS..=MAX_BPS).contains(&v) {
            return Err(invalid(format!(
                "invalid rate '{input}': bit rates go from 1kbit to 400gbit"
            )));
        }
        Ok(RateLimit::Bps(v))
    }
}

/// A bit rate in the largest unit [`parse_rate`] takes back exactly.
pub fn format_bps(bps: u64) -> String {
    for (scale, unit) in [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ] {
        if bps >= scale && bps.is_multiple_of(scale) {
            return format!("{}{unit}", bps / scale);
        }
    }
    format!("{bps}bit")
}

/// The burst a throttle allows, as time at its rate: 20 ms (a few kernel clock ticks, below
/// which fast rates could not be met) to 10 s.
pub fn parse_burst(s: &str) -> Result<Duration, AddrError> {
    let input = s.trim();
    refuse_odd_text(input, "burst", "use e.g. 100ms or 1s")?;
    let d = humantime::parse_duration(input)
        .map_err(|_| invalid(format!("unparsable burst '{input}': use e.g. 100ms or 1s")))?;
    if !(Duration::from_millis(20)..=Duration::from_secs(10)).contains(&d) {
        return Err(invalid(format!(
            "invalid burst '{input}': from 20ms to 10s"
        )));
    }
    Ok(d)
}

/// The host's own addresses: never blocked, and the inside hosts the exfiltration rule watches.
pub fn own_addresses() -> std::collections::HashSet<IpAddr> {
    let mut out = std::collections::HashSet::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read sockaddrs of the
    // families we check.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.insert(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// Convenience for tests and callers that hold a bare address.
pub fn host_net(addr: IpAddr) -> IpNet {
    let net = match addr {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::from(a)),
    };
    canonical_net(net)
}

/// A protected target: `ADDR`, `ADDR:PORT,PORT`, `[V6]` or `[V6]:PORT,PORT`, with at most
/// [`astra_common::PROTECT_PORTS`] distinct ports (none: every port).
pub fn parse_target(s: &str) -> Result<(IpAddr, Vec<u16>), AddrError> {
    // An address and eight ports fit; more would only be quoted back in the message.
    if s.len() > 2 * MAX_TEXT || s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "invalid target '{}': use e.g. 198.18.0.2:80,443 or [2001:db8::1]:443",
            crate::text::excerpt(s)
        )));
    }
    let (addr, ports) =
        if let Some(rest) = s.strip_prefix('[') {
            let (a, tail) = rest
                .split_once(']')
                .ok_or_else(|| AddrError::Invalid(format!("{s}: '[' without ']'")))?;
            match tail {
                "" => (a, None),
                t => (
                    a,
                    Some(t.strip_prefix(':').ok_or_else(|| {
                        AddrError::Invalid(format!("{s}: expected ':' after ']'"))
                    })?),
                ),
            }
        } else if s.matches(':').count() == 1 {
            let (a, p) = s.split_once(':').expect("one colon");
            (a, Some(p))
        } else {
            (s, None)
        };
    let addr = parse_host(addr)?;
    let mut list = Vec::new();
    for p in ports.into_iter().flat_map(|p| p.split(',')) {
        let port = p
            .parse::<u16>()
            .ok()
            .filter(|&v| v != 0)
            .ok_or_else(|| AddrError::Invalid(format!("{s}: '{p}' is not a port (1-65535)")))?;
        if !list.contains(&port) {
            list.push(port);
        }
    }
    if list.len() > astra_common::PROTECT_PORTS {
        return Err(AddrError::Invalid(format!(
            "{s}: at most {} ports",
            astra_common::PROTECT_PORTS
        )));
    }
    Ok((addr, list))
}

/// A single address, refusing a prefix with a message that says why (`parse_net` takes both).
pub fn parse_host(s: &str) -> Result<IpAddr, AddrError> {
    let net = parse_net(s)?;
    if net.prefix_len() != net.max_prefix_len() {
        return Err(AddrError::Invalid(format!(
            "{net}: takes a single address, not a prefix"
        )));
    }
    Ok(net.addr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_ports() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_target("198.18.0.2").unwrap(),
            (ip("198.18.0.2"), vec![])
        );
        assert_eq!(
            parse_target("198.18.0.2:80,443,80").unwrap(),
            (ip("198.18.0.2"), vec![80, 443])
        );
        assert_eq!(
            parse_target("2001:db8::1").unwrap(),
            (ip("2001:db8::1"), vec![])
        );
        assert_eq!(
            parse_target("[2001:db8::1]:443").unwrap(),
            (ip("2001:db8::1"), vec![443])
        );
        assert_eq!(
            parse_target("[2001:db8::1]").unwrap(),
            (ip("2001:db8::1"), vec![])
        );
        for bad in [
            "198.18.0.2:0",
            "198.18.0.2:http",
            "198.18.0.0/24",
            "[2001:db8::1",
            "[2001:db8::1]443",
            "198.18.0.2:1,2,3,4,5,6,7,8,9",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        match parse_net(s) {
            Ok(n) => panic!("'{s}' unexpectedly parsed as {n}"),
            Err(AddrError::Invalid(m)) => m,
        }
    }

    fn ttl_err(s: &str) -> String {
        match parse_ttl(s) {
            Ok(d) => panic!("'{s}' unexpectedly parsed as {d:?}"),
            Err(AddrError::Invalid(m)) => m,
        }
    }

    fn assert_one_line_lowercase(msg: &str) {
        assert!(!msg.contains('\n'), "multi-line message: {msg:?}");
        let first = msg.chars().next().unwrap();
        assert!(
            !first.is_ascii_uppercase(),
            "message starts upper-case: {msg:?}"
        );
    }

    #[test]
    fn bare_addresses_become_host_routes() {
        assert_eq!(parse_net("192.0.2.1").unwrap(), net("192.0.2.1/32"));
        assert_eq!(parse_net("2001:db8::1").unwrap(), net("2001:db8::1/128"));
        assert_eq!(
            parse_net("255.255.255.255").unwrap(),
            net("255.255.255.255/32")
        );
        assert_eq!(parse_net("::").unwrap(), net("::/128"));
    }

    #[test]
    fn prefixes_parse() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap(), net("10.0.0.0/8"));
        assert_eq!(parse_net("0.0.0.0/0").unwrap(), net("0.0.0.0/0"));
        assert_eq!(parse_net("::/0").unwrap(), net("::/0"));
        assert_eq!(
            parse_net("255.255.255.255/32").unwrap(),
            net("255.255.255.255/32")
        );
        assert_eq!(parse_net("2001:db8::/32").unwrap(), net("2001:db8::/32"));
        assert_eq!(
            parse_net("2001:db8::1/128").unwrap(),
            net("2001:db8::1/128")
        );
        // Leading zeros in the length are harmless and unambiguous.
        assert_eq!(parse_net("10.0.0.0/08").unwrap(), net("10.0.0.0/8"));
    }

    #[test]
    fn whitespace_is_trimmed() {
        assert_eq!(parse_net("  10.0.0.0/8\n").unwrap(), net("10.0.0.0/8"));
        assert_eq!(parse_net("\t2001:db8::1 ").unwrap(), net("2001:db8::1/128"));
    }

    #[test]
    fn empty_input_is_rejected() {
        for s in ["", "   ", "\n"] {
            let m = err(s);
            assert!(m.starts_with("empty address"), "{m}");
            assert_one_line_lowercase(&m);
        }
    }

    #[test]
    fn prefix_out_of_range() {
        let m = err("10.0.0.0/33");
        assert!(
            m.contains("prefix length 33 is out of range for IPv4 (0-32)"),
            "{m}"
        );
        assert!(m.contains("10.0.0.0/33"), "{m}");
        assert_one_line_lowercase(&m);

        let m = err("2001:db8::/129");
        assert!(
            m.contains("prefix length 129 is out of range for IPv6 (0-128)"),
            "{m}"
        );
        assert_one_line_lowercase(&m);

        let m = err("10.0.0.0/99999999999999999999999");
        assert!(m.contains("out of range"), "{m}");
    }

    #[test]
    fn host_bits_are_refused_with_a_suggestion() {
        assert_eq!(
            err("10.1.2.3/8"),
            "10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("2001:db8::1/32"),
            "2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?"
        );
        assert_eq!(
            err("1.2.3.4/0"),
            "1.2.3.4/0 has host bits set; did you mean 0.0.0.0/0?"
        );
        assert_one_line_lowercase(&err("10.1.2.3/8"));
    }

    #[test]
    fn malformed_prefixes() {
        let m = err("1.2.3.4/");
        assert!(
            m.contains("missing prefix length") && m.contains("'1.2.3.4/'"),
            "{m}"
        );
        assert_one_line_lowercase(&m);

        let m = err("/24");
        assert!(m.contains("missing address") && m.contains("'/24'"), "{m}");
        assert_one_line_lowercase(&m);

        for s in [
            "1.2.3.4/-1",
            "1.2.3.4/abc",
            "1.2.3.4/+8",
            "1.2.3.4/8/8",
            "1.2.3.4/ 8",
        ] {
            let m = err(s);
            assert!(m.contains("invalid prefix length"), "{s}: {m}");
            assert!(m.contains(s), "{s}: {m}");
            assert_one_line_lowercase(&m);
        }
    }

    #[test]
    fn malformed_addresses() {
        for s in [
            "abc",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "010.0.0.1",
            "fe80::1%eth0",
            "[::1]",
            "1.2.3.4 /8",
            "gggg::1/64",
        ] {
            let m = err(s);
            assert!(m.starts_with("invalid IP address"), "{s}: {m}");
            assert!(m.contains(s.trim()), "{s}: {m}");
            assert_one_line_lowercase(&m);
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_normalised() {
        assert_eq!(parse_net("::ffff:1.2.3.4").unwrap(), net("1.2.3.4/32"));
        assert_eq!(parse_net("::ffff:1.2.3.4/128").unwrap(), net("1.2.3.4/32"));
        assert_eq!(parse_net("::ffff:10.0.0.0/104").unwrap(), net("10.0.0.0/8"));
        assert_eq!(parse_net("::ffff:0.0.0.0/96").unwrap(), net("0.0.0.0/0"));
        assert_eq!(parse_net("::FFFF:102:304").unwrap(), net("1.2.3.4/32"));
        // Shorter than /96 the network is not inside the mapped space; since the mapped
        // address itself has bits set above /96 this is always a host-bits error.
        let m = err("::ffff:1.2.3.4/64");
        assert!(m.contains("host bits set; did you mean ::/64?"), "{m}");
        let m = err("::ffff:1.2.3.4/120");
        assert!(m.contains("did you mean ::ffff:1.2.3.0/120?"), "{m}");
        // The deprecated IPv4-compatible form is a genuine IPv6 address and stays one.
        assert_eq!(parse_net("::1.2.3.4").unwrap(), net("::102:304/128"));
    }

    #[test]
    fn canonical_net_truncates_and_unmaps() {
        assert_eq!(canonical_net(net("10.1.2.3/8")), net("10.0.0.0/8"));
        assert_eq!(canonical_net(net("::ffff:1.2.3.4/120")), net("1.2.3.0/24"));
        assert_eq!(canonical_net(net("::ffff:1.2.3.4/64")), net("::/64"));
        assert_eq!(canonical_net(net("2001:db8::/32")), net("2001:db8::/32"));
        assert_eq!(
            host_net("::ffff:192.0.2.7".parse().unwrap()),
            net("192.0.2.7/32")
        );
    }

    #[test]
    fn every_parsed_net_round_trips_through_display() {
        for s in [
            "0.0.0.0/0",
            "::/0",
            "255.255.255.255/32",
            "2001:db8::/32",
            "::ffff:1.2.3.4",
            "10.0.0.0/8",
        ] {
            let n = parse_net(s).unwrap();
            assert_eq!(parse_net(&n.to_string()).unwrap(), n, "{s}");
        }
    }

    #[test]
    fn ttl_durations() {
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_ttl("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_ttl(" 30s\n").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_ttl("1500ms").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn ttl_permanent_spellings() {
        for s in [
            "0",
            "permanent",
            "forever",
            "Permanent",
            "FOREVER",
            " 0 ",
            "0s",
            "0m",
        ] {
            assert_eq!(parse_ttl(s).unwrap(), Duration::ZERO, "{s}");
        }
    }

    #[test]
    fn ttl_rejections() {
        assert_eq!(
            ttl_err("abc"),
            "unparsable TTL 'abc': use e.g. 30s, 10m, 2h, or 'permanent'"
        );
        for s in ["30", "-5m", "10 parsecs", "1h30", "never"] {
            let m = ttl_err(s);
            assert!(m.starts_with("unparsable TTL") && m.contains(s), "{s}: {m}");
            assert_one_line_lowercase(&m);
        }
        let m = ttl_err("");
        assert!(m.starts_with("empty TTL"), "{m}");
        let m = ttl_err("500ms");
        assert!(
            m.contains("shorter than one second") && m.contains("500ms"),
            "{m}"
        );
        assert_one_line_lowercase(&m);
        let m = ttl_err("101years");
        assert!(m.contains("longer than 100 years"), "{m}");
        assert_one_line_lowercase(&m);
        assert_eq!(
            parse_ttl("100years").unwrap(),
            Duration::from_secs(3_155_760_000)
        );
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn rates_parse_as_tc_spells_them() {
        assert_eq!(parse_rate("100pps"), Ok(RateLimit::Pps(100)));
        assert_eq!(parse_rate("20kpps"), Ok(RateLimit::Pps(20_000)));
        assert_eq!(parse_rate("10mbit"), Ok(RateLimit::Bps(10_000_000)));
        assert_eq!(parse_rate("1Gbit"), Ok(RateLimit::Bps(1_000_000_000)));
        assert_eq!(parse_rate("64kbit"), Ok(RateLimit::Bps(64_000)));
        for bad in [
            "", "pps", "10", "10mbps", "1.5mbit", "0pps", "999bit", "500gbit", "-1pps",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(
            parse_rate("10mbps")
                .unwrap_err()
                .to_string()
                .contains("ambiguous")
        );
        for bps in [
            1_000,
            64_000,
            10_000_000,
            1_500_000_000,
            2_000_000_000,
            1_234,
        ] {
            assert_eq!(
                parse_rate(&format_bps(bps)),
                Ok(RateLimit::Bps(bps)),
                "{bps}"
            );
        }
    }

    #[test]
    fn bursts_stay_within_what_the_kernel_clock_can_meet() {
        assert_eq!(parse_burst("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_burst("5ms").is_err());
        assert!(parse_burst("1m").is_err());
        assert!(parse_burst("soon").is_err());
    }
}
