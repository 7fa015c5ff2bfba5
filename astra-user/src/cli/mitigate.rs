//! `astra throttle`, `unthrottle`, `quarantine`, `release`, `protect` and `unprotect`: the
//! mitigation tiers by hand.
//! Entries are stored first and then written into the kernel, like blocks
//! ([`crate::lists::Lists::add_manual_rated`] checks what a tier must never hold).
use std::{net::IpAddr, path::Path, time::Duration};

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use super::lists::{report_added, report_change};
use crate::{
    addr::{RateLimit, parse_burst, parse_host, parse_net, parse_rate, parse_target, parse_ttl},
    error::{Error, Result},
    lists::{Enforcement, Lists},
    store::{Half, ListKind, Protection, Rate},
};

#[derive(Args, Debug)]
pub struct ThrottleArgs {
    #[arg(value_parser = parse_net, value_name = "ADDR[/LEN]")]
    pub net: IpNet,
    /// The limit: packets (100pps, 20kpps) or bits per second (64kbit, 10mbit, 1gbit);
    /// repeat for both (a packet must be within each).
    #[arg(long = "rate", value_parser = parse_rate, value_name = "RATE", required = true)]
    pub rates: Vec<RateLimit>,
    /// How far a burst may go above the rate, as time at the rate (20ms to 10s).
    #[arg(long, value_parser = parse_burst, value_name = "DUR", default_value = "100ms")]
    pub burst: Duration,
    /// Allow 0.0.0.0/0 or ::/0, which holds every peer to one shared rate.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub entry: EntryArgs,
}

/// What every mitigation entry made by hand takes.
#[derive(Args, Debug)]
pub struct EntryArgs {
    /// How long the entry lasts (e.g. 10m, 2h); omit or 'permanent' for no expiry.
    #[arg(long, value_parser = parse_ttl, value_name = "DUR")]
    pub ttl: Option<Duration>,
    /// Why, shown by `astra list` (at most 512 characters).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

impl EntryArgs {
    /// The reason checked, and the TTL with 'permanent' as none.
    fn checked(&self) -> Result<Option<Duration>> {
        crate::limits::check_reason(&self.reason)?;
        Ok(self.ttl.filter(|d| !d.is_zero()))
    }
}

#[derive(Args, Debug)]
pub struct QuarantineArgs {
    #[arg(value_parser = parse_host, value_name = "ADDR")]
    pub addr: IpAddr,
    #[command(flatten)]
    pub entry: EntryArgs,
}

#[derive(Args, Debug)]
pub struct ProtectArgs {
    /// The target: an address of this host or of a server behind it, with the ports whose
    /// new SYNs meet the budget (every port when none): 198.18.0.2:80,443 or [2001:db8::1]:443.
    #[arg(value_parser = parse_target, value_name = "ADDR[:PORTS]")]
    pub target: (IpAddr, Vec<u16>),
    /// New SYNs a second accepted from sources not known to complete handshakes.
    #[arg(long, value_name = "N", default_value_t = Protection::DEFAULT_SYN_BUDGET,
          value_parser = clap::value_parser!(u64).range(1..=Protection::MAX_SYN_BUDGET))]
    pub syn_budget: u64,
    /// How far a burst of new SYNs may go above the budget, as time at the budget.
    #[arg(long, value_parser = parse_burst, value_name = "DUR", default_value = "100ms")]
    pub burst: Duration,
    /// Only one of the two protections (default: both).
    #[arg(long, value_enum)]
    pub only: Option<OnlyArg>,
    /// Answer strangers' new SYNs with SYN cookies from XDP instead of holding them to the
    /// budget (needs nftables, whose SYNPROXY completes the handshakes).
    #[arg(long)]
    pub syn_cookies: bool,
    #[command(flatten)]
    pub entry: EntryArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnlyArg {
    /// The budget of new SYNs from strangers.
    Syn,
    /// Dropping answers to requests the target never sent.
    Reflect,
}

impl OnlyArg {
    fn half(self) -> Half {
        match self {
            OnlyArg::Syn => Half::Syn,
            OnlyArg::Reflect => Half::Reflect,
        }
    }
}

/// `astra throttle NET --rate R`.
pub fn throttle(pin_dir: &Path, state_dir: &Path, a: ThrottleArgs) -> Result<()> {
    crate::addr::check_not_everything(&a.net, ListKind::Throttle.everything_warning(), a.force)?;
    let ttl = a.entry.checked()?;
    let rate = Rate::from_limits(&a.rates, Some(a.burst))?;
    let mut lists = Lists::open(state_dir, pin_dir)?;
    let added =
        lists.add_manual_rated(ListKind::Throttle, a.net, ttl, &a.entry.reason, Some(rate))?;
    report_added(a.entry.json, "throttled", &added)?;
    if !a.entry.json {
        println!("limit: {rate}; packets over it are dropped");
    }
    Ok(())
}

/// `astra quarantine ADDR`.
pub fn quarantine(pin_dir: &Path, state_dir: &Path, a: QuarantineArgs) -> Result<()> {
    let ttl = a.entry.checked()?;
    let mut lists = Lists::open(state_dir, pin_dir)?;
    let net = crate::addr::host_net(a.addr);
    let added = lists.add_manual(ListKind::Quarantine, net, ttl, &a.entry.reason)?;
    report_added(a.entry.json, "quarantined", &added)
}

/// `astra protect ADDR[:PORTS]`.
pub fn protect(pin_dir: &Path, state_dir: &Path, a: ProtectArgs) -> Result<()> {
    let ttl = a.entry.checked()?;
    let (target, ports) = a.target;
    let p = Protection::new(ports, a.only.map(OnlyArg::half)).with_cookies(a.syn_cookies);
    let mut lists = Lists::open(state_dir, pin_dir)?;
    let added = lists.protect_manual(
        target,
        p.clone(),
        a.syn_budget,
        a.burst,
        ttl,
        &a.entry.reason,
    )?;
    report_added(a.entry.json, "protected", &added)?;
    if !a.entry.json {
        if p.cookies {
            println!("{p}; strangers' new SYNs are answered from XDP, SYNPROXY completes them");
        } else {
            println!(
                "{p}; new SYNs from sources not seen completing a handshake: {} a second",
                a.syn_budget
            );
        }
    }
    Ok(())
}

/// `astra unthrottle NET`, `astra release ADDR` and `astra unprotect ADDR`.
pub fn remove(
    pin_dir: &Path,
    state_dir: &Path,
    kind: ListKind,
    net: IpNet,
    json: bool,
) -> Result<()> {
    let mut lists = Lists::open(state_dir, pin_dir)?;
    if !lists.remove(kind, &net)? {
        let what = match kind {
            ListKind::Quarantine => "quarantined",
            ListKind::Protect => "protected",
            _ => "throttled",
        };
        return Err(Error::Usage(format!("{net} is not {what}")));
    }
    let action = match kind {
        ListKind::Quarantine => "released",
        ListKind::Protect => "unprotected",
        _ => "unthrottled",
    };
    report_change(json, action, &net, None, &Enforcement::InKernel, None)
}
