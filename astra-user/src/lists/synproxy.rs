//! nftables' SYNPROXY for targets protected with SYN cookies. XDP answers a stranger's new SYN
//! with the kernel's own cookie ([`astra_common::protect::COOKIE`]); the ACK that completes the
//! handshake comes up untracked, and SYNPROXY checks the cookie (the same secret) and opens the
//! connection to the server. The SYNs XDP lets through (known sources, SYNs it cannot answer)
//! meet SYNPROXY too, which answers them with a cookie of its own. One table, `inet
//! astra_synproxy`, is rewritten whole from the protections that ask for cookies, in one nft
//! transaction, and removed when none does.
//!
//! SYNPROXY needs conntrack's loose pickup off (`nf_conntrack_tcp_loose=0`, as nftables'
//! documentation says), or the cookie's ACK would be picked up as a connection of its own and
//! never reach it; Astra sets it while a table with targets is in place and back to the
//! default (1) when it removes the table. With loose pickup off, a connection that conntrack
//! was not tracking when it opened is invalid, and the rules drop invalid packets to the
//! protected ports: conntrack must have been on before. The agent turns it on at start when
//! `policy.protect_syn_cookies` is set (a table that only tracks), so sessions opened after
//! that survive a protection; ones opened before do not.
use std::{
    io::Write as _,
    net::IpAddr,
    process::{Command, Stdio},
};

/// The nftables table Astra owns.
pub const TABLE: &str = "astra_synproxy";

#[derive(Debug, thiserror::Error)]
pub enum SynproxyError {
    #[error("SYN cookies need nftables (nft): {0}")]
    NoNft(std::io::Error),
    #[error("nft refused the SYNPROXY rules: {0}")]
    Refused(String),
}

/// What the operator can fix (install nftables, or its kernel support): exit 2.
impl From<SynproxyError> for crate::error::Error {
    fn from(e: SynproxyError) -> Self {
        crate::error::Error::Usage(e.to_string())
    }
}

/// The match for a target's new connections: its address and, when it names any, its ports.
fn target_match(addr: &IpAddr, ports: &[u16]) -> String {
    let family = if addr.is_ipv4() { "ip" } else { "ip6" };
    let mut m = format!("{family} daddr {addr} tcp dport ");
    if ports.is_empty() {
        m.truncate(m.len() - " tcp dport ".len());
        m.push_str(" meta l4proto tcp");
    } else {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        m.push_str(&format!("{{ {} }}", list.join(", ")));
    }
    m
}

/// The nft script that makes the table hold exactly `targets`' rules; with none, a table that
/// only has conntrack track connections when `track`, or no table. The table is created empty
/// first so that deleting it cannot fail, in the same transaction.
pub fn script(targets: &[(IpAddr, Vec<u16>)], track: bool) -> String {
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
    if targets.is_empty() && !track {
        return s;
    }
    let (mut raw, mut filter) = (String::new(), String::new());
    for (addr, ports) in targets {
        let m = target_match(addr, ports);
        raw.push_str(&format!("    {m} tcp flags syn notrack\n"));
        filter.push_str(&format!(
            "    {m} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm\n    {m} ct state invalid drop\n"
        ));
    }
    // Any conntrack expression turns tracking on in this namespace.
    filter.push_str("    ct state established counter\n");
    s.push_str(&format!("table inet {TABLE} {{\n"));
    s.push_str(&format!(
        "  chain raw {{\n    type filter hook prerouting priority raw; policy accept;\n{raw}  }}\n"
    ));
    // input for this host's own addresses, forward for servers behind a gateway.
    for hook in ["input", "forward"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n{filter}  }}\n"
        ));
    }
    if track {
        // The mark that tracking was asked for, which later rewrites keep (see [`apply`]).
        s.push_str(&format!("  chain {TRACKING} {{\n  }}\n"));
    }
    s.push_str("}\n");
    s
}

/// A chain with no hook and no rules: its presence says the agent asked for tracking.
const TRACKING: &str = "tracking";

/// Whether the table in place was written with tracking on.
fn tracking() -> bool {
    Command::new("nft")
        .args(["list", "chain", "inet", TABLE, TRACKING])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// conntrack's loose pickup: off while SYNPROXY has targets, the default otherwise.
const LOOSE: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";

/// Runs [`script`] through `nft -f -`. Tracking, once the agent asked for it, stays on across
/// rewrites by anyone else (`astra unprotect`, the API), who cannot know the agent's policy.
pub fn apply(targets: &[(IpAddr, Vec<u16>)], track: bool) -> Result<(), SynproxyError> {
    let track = track || tracking();
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SynproxyError::NoNft)?;
    let text = script(targets, track);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(SynproxyError::NoNft)?;
    }
    let out = child.wait_with_output().map_err(SynproxyError::NoNft)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(SynproxyError::Refused(
            err.lines()
                .find(|l| l.contains("Error"))
                .unwrap_or(err.trim())
                .to_owned(),
        ));
    }
    let loose = if targets.is_empty() { "1" } else { "0" };
    // Absent until conntrack first runs in this namespace: then there is nothing to turn off.
    if std::path::Path::new(LOOSE).exists() {
        std::fs::write(LOOSE, loose).map_err(SynproxyError::NoNft)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_replaces_the_table_in_one_go() {
        let none = script(&[], false);
        assert_eq!(
            none,
            "table inet astra_synproxy {}\ndelete table inet astra_synproxy\n"
        );
        let s = script(
            &[
                ("198.18.0.2".parse().unwrap(), vec![80, 443]),
                ("2001:db8::2".parse().unwrap(), vec![]),
            ],
            false,
        );
        assert!(s.starts_with(&none), "{s}");
        assert!(
            s.contains("ip daddr 198.18.0.2 tcp dport { 80, 443 } tcp flags syn notrack"),
            "{s}"
        );
        assert!(
            s.contains(
                "ip6 daddr 2001:db8::2 meta l4proto tcp ct state invalid,untracked synproxy"
            ),
            "{s}"
        );
        assert_eq!(s.matches("synproxy mss").count(), 4, "{s}");
        assert!(s.contains("hook forward"), "{s}");
        let track = script(&[], true);
        assert!(track.contains("ct state established counter"), "{track}");
        assert!(!track.contains("synproxy mss"), "{track}");
        assert!(track.contains("chain tracking"), "{track}");
    }
}
