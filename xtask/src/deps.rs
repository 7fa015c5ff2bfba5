//! Debian packages the tests use, keyed by the command they provide. Only packages whose
//! command is missing get installed, with one `apt-get update` first.

use std::{env, ffi::OsString, path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::cmd;

/// A command the tests run and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub command: &'static str,
    pub package: &'static str,
}

const fn req(command: &'static str, package: &'static str) -> Requirement {
    Requirement { command, package }
}

/// What `cargo xtask test` makes sure of. Add a row when a test starts using a new tool
/// (several commands may share one package).
pub const TEST_REQUIREMENTS: &[Requirement] = &[
    req("promtool", "prometheus"),
    req("systemd-analyze", "systemd"),
    req("ip", "iproute2"),
    req("sysctl", "procps"),
];

/// What `cargo xtask bench` compares against and drives traffic with.
pub const BENCH_REQUIREMENTS: &[Requirement] = &[
    req("ip", "iproute2"),
    req("xdp-filter", "xdp-tools"),
    req("iptables", "iptables"),
    req("nft", "nftables"),
    req("python3", "python3"),
];

/// What `cargo xtask demo` (`astra lab`) needs: the real services and attack tools of the
/// default scenarios. The tests run the default scenarios too, so `cargo xtask test` ensures
/// these as well.
pub const LAB_REQUIREMENTS: &[Requirement] = &[
    req("ip", "iproute2"),
    req("sysctl", "procps"),
    req("nmap", "nmap"),
    req("hping3", "hping3"),
    req("hydra", "hydra"),
    req("masscan", "masscan"),
    req("iperf3", "iperf3"),
    req("sshd", "openssh-server"),
    req("ssh-keygen", "openssh-client"),
    req("nginx", "nginx-light"),
    req("curl", "curl"),
];

/// What to do about the requirements.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Satisfied,
    /// Install these packages (deduplicated, in table order).
    Install(Vec<&'static str>),
    /// Cannot install here; the message says what to install.
    Refuse(String),
}

/// Decides from which commands are `present` whether anything needs installing and whether
/// this process can do it (as root, with apt-get).
pub fn plan(
    reqs: &[Requirement],
    present: impl Fn(&str) -> bool,
    is_root: bool,
    have_apt: bool,
) -> Plan {
    let missing: Vec<&Requirement> = reqs.iter().filter(|r| !present(r.command)).collect();
    if missing.is_empty() {
        return Plan::Satisfied;
    }
    let mut packages: Vec<&'static str> = Vec::new();
    for r in &missing {
        if !packages.contains(&r.package) {
            packages.push(r.package);
        }
    }
    let commands = missing
        .iter()
        .map(|r| r.command)
        .collect::<Vec<_>>()
        .join(", ");
    let packages_list = packages.join(" ");
    match (is_root, have_apt) {
        (true, true) => Plan::Install(packages),
        (false, true) => Plan::Refuse(format!(
            "missing commands for the tests: {commands}; install them with: \
             sudo apt-get install -y --no-install-recommends {packages_list}"
        )),
        (_, false) => Plan::Refuse(format!(
            "missing commands for the tests: {commands}; no apt-get here, install the \
             packages that provide them (Debian names: {packages_list})"
        )),
    }
}

/// PATH plus the sbin directories, which a non-root PATH on Debian lacks.
fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    ] {
        let extra = PathBuf::from(extra);
        if !dirs.contains(&extra) {
            dirs.push(extra);
        }
    }
    env::join_paths(dirs).unwrap_or_default()
}

pub fn command_present(command: &str) -> bool {
    which::which_in(command, Some(search_path()), cmd::workspace_root()).is_ok()
}

/// Installs the packages for missing commands, or fails with one line saying what to install.
pub fn ensure(reqs: &[Requirement]) -> Result<()> {
    let have_apt = command_present("apt-get");
    match plan(reqs, command_present, cmd::is_root(), have_apt) {
        Plan::Satisfied => Ok(()),
        Plan::Refuse(message) => bail!(message),
        Plan::Install(packages) => {
            cmd::run(Command::new("apt-get").arg("update"))?;
            cmd::run(
                Command::new("apt-get")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(&packages),
            )?;
            let still_missing: Vec<&str> = reqs
                .iter()
                .filter(|r| !command_present(r.command))
                .map(|r| r.command)
                .collect();
            if !still_missing.is_empty() {
                bail!(
                    "installed {} but still missing: {}",
                    packages.join(" "),
                    still_missing.join(", ")
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Requirement] = &[
        req("promtool", "prometheus"),
        req("ip", "iproute2"),
        req("tcpreplay", "tcpreplay"),
        req("tcpprep", "tcpreplay"),
    ];

    #[test]
    fn nothing_to_do_when_all_present() {
        assert_eq!(plan(TABLE, |_| true, false, false), Plan::Satisfied);
    }

    #[test]
    fn installs_only_missing_packages_once_as_root() {
        let present = |c: &str| c == "ip";
        assert_eq!(
            plan(TABLE, present, true, true),
            Plan::Install(vec!["prometheus", "tcpreplay"])
        );
    }

    #[test]
    fn refuses_with_the_install_line_when_not_root() {
        let Plan::Refuse(msg) = plan(TABLE, |c| c != "promtool", false, true) else {
            panic!("expected a refusal");
        };
        assert_eq!(
            msg,
            "missing commands for the tests: promtool; install them with: \
             sudo apt-get install -y --no-install-recommends prometheus"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn refuses_without_apt_even_as_root() {
        let Plan::Refuse(msg) = plan(TABLE, |_| false, true, false) else {
            panic!("expected a refusal");
        };
        assert!(msg.contains("promtool, ip, tcpreplay, tcpprep"), "{msg}");
        assert!(msg.contains("prometheus iproute2 tcpreplay)"), "{msg}");
    }

    #[test]
    fn table_has_no_duplicate_commands() {
        for (i, r) in TEST_REQUIREMENTS.iter().enumerate() {
            assert!(
                TEST_REQUIREMENTS[..i]
                    .iter()
                    .all(|o| o.command != r.command),
                "{} listed twice",
                r.command
            );
        }
    }

    #[test]
    fn finds_sbin_commands() {
        // `sh` is everywhere; a name nobody has must not be found.
        assert!(command_present("sh"));
        assert!(!command_present("astra-no-such-command-xyz"));
    }
}
