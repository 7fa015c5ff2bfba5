//! `astra throttle`, `unthrottle`, `quarantine` and `release`: the mitigation tiers by hand.
//! Entries are stored first and then written into the kernel, like blocks
//! ([`crate::lists::Lists::add_manual_rated`] checks what a tier must never hold).
use std::{net::IpAddr, path::Path, time::Duration};

use clap::Args;
use ipnet::IpNet;

use super::lists::{report_added, report_change};
use crate::{
    addr::{AddrError, RateLimit, parse_burst, parse_net, parse_rate, parse_ttl},
    error::{Error, Result},
    lists::{Enforcement, Lists},
    store::{ListKind, Rate},
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
    /// How long the limit lasts (e.g. 10m, 2h); omit or 'permanent' for no expiry.
    #[arg(long, value_parser = parse_ttl, value_name = "DUR")]
    pub ttl: Option<Duration>,
    /// Why, shown by `astra list` (at most 512 characters).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Allow 0.0.0.0/0 or ::/0, which holds every peer to one shared rate.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QuarantineArgs {
    #[arg(value_parser = parse_host, value_name = "ADDR")]
    pub addr: IpAddr,
    /// How long the quarantine lasts (e.g. 1h); omit or 'permanent' for no expiry.
    #[arg(long, value_parser = parse_ttl, value_name = "DUR")]
    pub ttl: Option<Duration>,
    /// Why, shown by `astra list` (at most 512 characters).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

/// An address, refusing a prefix with a message that says why (`parse_net` takes both).
fn parse_host(s: &str) -> std::result::Result<IpAddr, AddrError> {
    let net = parse_net(s)?;
    if net.prefix_len() != net.max_prefix_len() {
        return Err(AddrError::Invalid(format!(
            "{net}: quarantine takes a single address, not a prefix"
        )));
    }
    Ok(net.addr())
}

/// `astra throttle NET --rate R`.
pub fn throttle(pin_dir: &Path, state_dir: &Path, a: ThrottleArgs) -> Result<()> {
    crate::addr::check_not_everything(&a.net, ListKind::Throttle.everything_warning(), a.force)?;
    crate::limits::check_reason(&a.reason)?;
    let rate = Rate::from_limits(&a.rates, Some(a.burst))?;
    let ttl = a.ttl.filter(|d| !d.is_zero());
    let mut lists = Lists::open(state_dir, pin_dir)?;
    let added = lists.add_manual_rated(ListKind::Throttle, a.net, ttl, &a.reason, Some(rate))?;
    report_added(a.json, "throttled", &added)?;
    if !a.json {
        println!("limit: {rate}; packets over it are dropped");
    }
    Ok(())
}

/// `astra quarantine ADDR`.
pub fn quarantine(pin_dir: &Path, state_dir: &Path, a: QuarantineArgs) -> Result<()> {
    crate::limits::check_reason(&a.reason)?;
    let ttl = a.ttl.filter(|d| !d.is_zero());
    let mut lists = Lists::open(state_dir, pin_dir)?;
    let net = crate::addr::host_net(a.addr);
    let added = lists.add_manual(ListKind::Quarantine, net, ttl, &a.reason)?;
    report_added(a.json, "quarantined", &added)
}

/// `astra unthrottle NET` and `astra release ADDR`.
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
            _ => "throttled",
        };
        return Err(Error::Usage(format!("{net} is not {what}")));
    }
    let action = match kind {
        ListKind::Quarantine => "released",
        _ => "unthrottled",
    };
    report_change(json, action, &net, None, &Enforcement::InKernel, None)
}
