//! Lab scenarios: TOML files that say which hosts exist, what traffic each sends and when, and
//! what Astra is expected to conclude. The default set is compiled in; users write their own.
use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::{detect::AttackType, error::Error, store::ListKind};

/// The scenarios `astra lab` runs when given none (`astra-user/scenarios/*.toml`).
pub const DEFAULT_SET: &[(&str, &str)] = &[
    (
        "benign-mixed.toml",
        include_str!("../../scenarios/benign-mixed.toml"),
    ),
    (
        "web-churn.toml",
        include_str!("../../scenarios/web-churn.toml"),
    ),
    (
        "nmap-syn-scan.toml",
        include_str!("../../scenarios/nmap-syn-scan.toml"),
    ),
    (
        "nmap-connect-scan.toml",
        include_str!("../../scenarios/nmap-connect-scan.toml"),
    ),
    (
        "nmap-udp-scan.toml",
        include_str!("../../scenarios/nmap-udp-scan.toml"),
    ),
    (
        "nmap-protocol-scan.toml",
        include_str!("../../scenarios/nmap-protocol-scan.toml"),
    ),
    ("masscan.toml", include_str!("../../scenarios/masscan.toml")),
    (
        "host-sweep.toml",
        include_str!("../../scenarios/host-sweep.toml"),
    ),
    (
        "hping3-syn-flood.toml",
        include_str!("../../scenarios/hping3-syn-flood.toml"),
    ),
    (
        "spoofed-syn-flood.toml",
        include_str!("../../scenarios/spoofed-syn-flood.toml"),
    ),
    (
        "reflection-flood.toml",
        include_str!("../../scenarios/reflection-flood.toml"),
    ),
    (
        "hydra-ssh-brute-force.toml",
        include_str!("../../scenarios/hydra-ssh-brute-force.toml"),
    ),
    (
        "udp-flood.toml",
        include_str!("../../scenarios/udp-flood.toml"),
    ),
    (
        "icmp-flood.toml",
        include_str!("../../scenarios/icmp-flood.toml"),
    ),
    (
        "ddos-fan-in.toml",
        include_str!("../../scenarios/ddos-fan-in.toml"),
    ),
    (
        "exfiltration.toml",
        include_str!("../../scenarios/exfiltration.toml"),
    ),
    (
        "throttled-noisy-client.toml",
        include_str!("../../scenarios/throttled-noisy-client.toml"),
    ),
    (
        "quarantined-exfiltrating-host.toml",
        include_str!("../../scenarios/quarantined-exfiltrating-host.toml"),
    ),
    ("anomaly.toml", include_str!("../../scenarios/anomaly.toml")),
];

pub const MAX_DURATION: Duration = Duration::from_secs(300);
const MAX_HOSTS: u8 = 4;
const MAX_COUNT: u64 = 2_000_000;

/// What a scenario expects Astra to conclude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    Benign,
    Attack(AttackType),
}

impl Expected {
    pub fn label(&self) -> &'static str {
        match self {
            Expected::Benign => "benign",
            Expected::Attack(t) => t.as_str(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    expected: String,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    #[serde(default = "one")]
    clients: u8,
    #[serde(default = "one")]
    attackers: u8,
    #[serde(default)]
    settings: Vec<String>,
    expect_block: Option<bool>,
    /// `block`, `throttle` or `quarantine`: what the attackers' alert must have done.
    expect_action: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    poll_interval: Option<Duration>,
    #[serde(default)]
    traffic: Vec<RawTraffic>,
}

fn one() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    kind: String,
    from: String,
    #[serde(default, with = "humantime_serde")]
    start: Duration,
    #[serde(default, rename = "for", with = "humantime_serde::option")]
    dur: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    gap: Option<Duration>,
    count: Option<u64>,
    port: Option<u16>,
    ports: Option<String>,
    hosts: Option<u16>,
    size: Option<usize>,
    spoofed: Option<bool>,
    bytes: Option<u64>,
    to: Option<String>,
    program: Option<String>,
    args: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
}

/// Which hosts send a traffic item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    Client(u8),
    Attacker(u8),
    AllClients,
    AllAttackers,
    Server,
}

impl Sender {
    pub fn is_attacker(&self) -> bool {
        matches!(self, Sender::Attacker(_) | Sender::AllAttackers)
    }
}

/// A validated traffic item.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Request/response sessions to the server's web port, one every `gap`.
    Web {
        dur: Duration,
        gap: Duration,
        port: u16,
    },
    /// Short login attempts (connect, read banner, guess, read rejection, close).
    LoginBurst {
        count: u64,
        port: u16,
    },
    ConnectScan {
        ports: Vec<u16>,
    },
    /// Connections to `hosts` addresses behind the server (198.19.0.0/16), one port each.
    HostSweep {
        hosts: u16,
        port: u16,
    },
    UdpFlood {
        count: u64,
        size: usize,
        spoofed: bool,
    },
    SynFlood {
        count: u64,
        port: u16,
        spoofed: bool,
    },
    IcmpFlood {
        count: u64,
    },
    /// Bulk TCP upload of `bytes` to the peer host `to` (from the server: exfiltration).
    Upload {
        bytes: u64,
        to: Sender,
    },
    /// An outside tool, run in the sender's namespace with placeholders filled in:
    /// `{target}` the server address facing the sender, `{self}` the sender's address,
    /// `{wordlist}` a password list, `{router_mac}` the server interface's MAC,
    /// `{iface}` the sender's interface.
    Tool {
        program: String,
        args: Vec<String>,
        timeout: Duration,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    pub from: Sender,
    pub start: Duration,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub expected: Expected,
    pub duration: Duration,
    pub clients: u8,
    pub attackers: u8,
    pub settings: Vec<String>,
    pub expect_block: bool,
    /// The kernel entry the attackers' alert must have made (block, throttle, quarantine), if
    /// any; `expect_block` is this being a block.
    pub expect_action: Option<ListKind>,
    pub poll_interval: Duration,
    pub traffic: Vec<Traffic>,
}

impl Scenario {
    /// Outside programs the scenario runs; a scenario whose tools are missing is skipped.
    pub fn tools(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .traffic
            .iter()
            .filter_map(|t| match &t.action {
                Action::Tool { program, .. } => Some(program.as_str()),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A `[[traffic]]` entry of a scenario file that cannot be run.
#[derive(Debug, thiserror::Error)]
enum TrafficError {
    #[error(
        "from = {host:?}: no such host (the scenario has {clients} client(s) and {attackers} attacker(s); use client, client2, attacker, attackers, server, ...)"
    )]
    NoSuchHost {
        host: String,
        clients: u8,
        attackers: u8,
    },
    #[error("bad port range {0:?}")]
    BadPorts(String),
    #[error("kind {kind:?} needs `{what}`")]
    Needs { kind: String, what: &'static str },
    #[error("count {0} out of range (1..={MAX_COUNT})")]
    Count(u64),
    #[error(
        "unknown kind {0:?} (web, login_burst, connect_scan, host_sweep, udp_flood, syn_flood, icmp_flood, upload, tool)"
    )]
    UnknownKind(String),
}

fn parse_sender(s: &str, clients: u8, attackers: u8) -> Result<Sender, TrafficError> {
    let numbered = |prefix: &str| -> Option<u8> {
        let rest = s.strip_prefix(prefix)?;
        if rest.is_empty() {
            Some(1)
        } else {
            rest.parse().ok()
        }
    };
    let sender = match s {
        "server" => Sender::Server,
        "clients" => Sender::AllClients,
        "attackers" => Sender::AllAttackers,
        _ => match (numbered("client"), numbered("attacker")) {
            (Some(n), _) if (1..=clients).contains(&n) => Sender::Client(n),
            (_, Some(n)) if (1..=attackers).contains(&n) => Sender::Attacker(n),
            _ => {
                return Err(TrafficError::NoSuchHost {
                    host: s.to_owned(),
                    clients,
                    attackers,
                });
            }
        },
    };
    Ok(sender)
}

fn parse_ports(s: &str) -> Result<Vec<u16>, TrafficError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let bad = || TrafficError::BadPorts(part.to_owned());
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || a > b {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

impl RawTraffic {
    fn into_traffic(self, clients: u8, attackers: u8) -> Result<Traffic, TrafficError> {
        let need = |what: &'static str| TrafficError::Needs {
            kind: self.kind.clone(),
            what,
        };
        let count = |c: Option<u64>| -> Result<u64, TrafficError> {
            let c = c.ok_or_else(|| need("count"))?;
            if c == 0 || c > MAX_COUNT {
                return Err(TrafficError::Count(c));
            }
            Ok(c)
        };
        let from = parse_sender(&self.from, clients, attackers)?;
        let action = match self.kind.as_str() {
            "web" => Action::Web {
                dur: self.dur.ok_or_else(|| need("for"))?,
                gap: self.gap.unwrap_or(Duration::from_millis(200)),
                port: self.port.unwrap_or(80),
            },
            "login_burst" => Action::LoginBurst {
                count: count(self.count)?,
                port: self.port.unwrap_or(22),
            },
            "connect_scan" => Action::ConnectScan {
                ports: parse_ports(self.ports.as_deref().ok_or_else(|| need("ports"))?)?,
            },
            "host_sweep" => Action::HostSweep {
                hosts: self.hosts.ok_or_else(|| need("hosts"))?.min(1000),
                port: self.port.unwrap_or(80),
            },
            "udp_flood" => Action::UdpFlood {
                count: count(self.count)?,
                size: self.size.unwrap_or(64).min(1400),
                spoofed: self.spoofed.unwrap_or(false),
            },
            "syn_flood" => Action::SynFlood {
                count: count(self.count)?,
                port: self.port.unwrap_or(80),
                spoofed: self.spoofed.unwrap_or(false),
            },
            "icmp_flood" => Action::IcmpFlood {
                count: count(self.count)?,
            },
            "upload" => Action::Upload {
                bytes: self.bytes.ok_or_else(|| need("bytes"))?.min(1 << 31),
                to: parse_sender(
                    self.to.as_deref().ok_or_else(|| need("to"))?,
                    clients,
                    attackers,
                )?,
            },
            "tool" => Action::Tool {
                program: self.program.ok_or_else(|| need("program"))?,
                args: self.args.unwrap_or_default(),
                timeout: self
                    .timeout
                    .unwrap_or(Duration::from_secs(30))
                    .min(MAX_DURATION),
            },
            other => {
                return Err(TrafficError::UnknownKind(other.to_owned()));
            }
        };
        Ok(Traffic {
            from,
            start: self.start,
            action,
        })
    }
}

/// Parses and checks one scenario file's text; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<Scenario, Error> {
    let bad = |msg: String| Error::Usage(format!("{origin}: {msg}"));
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let msg = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        match line {
            Some(l) => bad(format!("line {l}: {msg}")),
            None => bad(msg),
        }
    })?;
    let expected = match raw.expected.as_str() {
        "benign" => Expected::Benign,
        other => Expected::Attack(
            AttackType::ALL
                .into_iter()
                .find(|t| t.as_str() == other)
                .ok_or_else(|| {
                    bad(format!(
                        "expected = {other:?}: use \"benign\" or one of {}",
                        AttackType::ALL.map(|t| t.as_str()).join(", ")
                    ))
                })?,
        ),
    };
    if raw.duration.is_zero() || raw.duration > MAX_DURATION {
        return Err(bad(format!(
            "duration must be between 1s and {}s",
            MAX_DURATION.as_secs()
        )));
    }
    if raw.clients > MAX_HOSTS || raw.attackers > MAX_HOSTS {
        return Err(bad(format!(
            "at most {MAX_HOSTS} clients and {MAX_HOSTS} attackers"
        )));
    }
    if raw.traffic.is_empty() {
        return Err(bad("no [[traffic]]".into()));
    }
    let (clients, attackers) = (raw.clients, raw.attackers);
    let traffic = raw
        .traffic
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.into_traffic(clients, attackers)
                .map_err(|m| bad(format!("traffic[{i}]: {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, t) in traffic.iter().enumerate() {
        if t.start >= raw.duration {
            return Err(bad(format!("traffic[{i}]: starts after the scenario ends")));
        }
    }
    // Target-side verdicts never block a source; everything else is expected to.
    let expect_action = match raw.expect_action.as_deref() {
        None => None,
        Some("block") => Some(ListKind::Block),
        Some("throttle") => Some(ListKind::Throttle),
        Some("quarantine") => Some(ListKind::Quarantine),
        Some("protect") => Some(ListKind::Protect),
        Some(other) => {
            return Err(bad(format!(
                "expect_action = {other:?}: use \"block\", \"throttle\", \"quarantine\" or \"protect\""
            )));
        }
    };
    let expect_block = match (expect_action, raw.expect_block) {
        (Some(k), _) => k == ListKind::Block,
        (None, Some(b)) => b,
        (None, None) => match expected {
            Expected::Benign => false,
            Expected::Attack(t) => !matches!(
                t,
                AttackType::Ddos | AttackType::Exfiltration | AttackType::Anomaly
            ),
        },
    };
    let expect_action = expect_action.or(expect_block.then_some(ListKind::Block));
    let settings = raw.settings;
    // Checked now, so a typo fails before any namespace is created.
    crate::engine::DetectConfig::default()
        .apply(&settings)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        expected,
        duration: raw.duration,
        clients,
        attackers,
        settings,
        expect_block,
        expect_action,
        poll_interval: raw.poll_interval.unwrap_or(Duration::from_millis(500)),
        traffic,
    })
}

pub fn load(path: &Path) -> Result<Scenario, Error> {
    let text =
        crate::limits::read_text_capped(path, crate::limits::SCENARIO_FILE, "scenario file")?;
    parse(&path.display().to_string(), &text)
}

pub fn default_set() -> Result<Vec<Scenario>, Error> {
    DEFAULT_SET
        .iter()
        .map(|(name, text)| parse(name, text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_parses_and_covers_every_rule() {
        let set = default_set().unwrap();
        for t in AttackType::ALL {
            assert!(
                set.iter().any(|s| s.expected == Expected::Attack(t)),
                "no default scenario expects {t}"
            );
        }
        assert!(set.iter().any(|s| s.expected == Expected::Benign));
        // The set is the demo (and one of the suite's longest tests): about three minutes.
        let total: Duration = set.iter().map(|s| s.duration).sum();
        assert!(
            total <= Duration::from_secs(175),
            "default set takes {total:?}"
        );
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let err = |t: &str| parse("x.toml", t).unwrap_err().to_string();
        let base = "name = \"n\"\nexpected = \"port_scan\"\nduration = \"5s\"\n";
        assert!(err("name = 3").starts_with("x.toml: line 1:"));
        assert!(err(&format!("{base}colour = 1\n")).contains("unknown field `colour`"));
        assert!(err("name = \"n\"\nexpected = \"ddoss\"\nduration = \"5s\"\n[[traffic]]\nkind = \"web\"\nfrom = \"client\"\nfor = \"1s\"\n")
            .contains("expected = \"ddoss\""));
        assert!(
            err(&format!(
                "{base}[[traffic]]\nkind = \"syn_flood\"\nfrom = \"attacker\"\n"
            ))
            .contains("traffic[0]: kind \"syn_flood\" needs `count`")
        );
        assert!(
            err(&format!(
                "{base}[[traffic]]\nkind = \"syn_flood\"\nfrom = \"attacker3\"\ncount = 5\n"
            ))
            .contains("no such host")
        );
        assert!(
            err(&format!(
                "{base}[[traffic]]\nkind = \"warp\"\nfrom = \"attacker\"\n"
            ))
            .contains("unknown kind")
        );
        assert!(err(&format!("{base}settings = [\"rules.nope=1\"]\n[[traffic]]\nkind = \"icmp_flood\"\nfrom = \"attacker\"\ncount = 5\n"))
            .contains("unknown setting rules.nope"));
        assert!(
            err("name = \"n\"\nexpected = \"benign\"\nduration = \"1h\"\n")
                .contains("duration must be")
        );
        assert!(
            err(&format!(
                "{base}[[traffic]]\nkind = \"connect_scan\"\nfrom = \"attacker\"\nports = \"9-3\"\n"
            ))
            .contains("bad port range")
        );
    }

    #[test]
    fn ports_and_senders() {
        assert_eq!(parse_ports("1-3,80").unwrap(), vec![1, 2, 3, 80]);
        assert_eq!(
            parse_sender("attacker2", 1, 2).unwrap(),
            Sender::Attacker(2)
        );
        assert_eq!(parse_sender("client", 1, 0).unwrap(), Sender::Client(1));
        assert!(parse_sender("attacker", 1, 0).is_err());
    }
}
