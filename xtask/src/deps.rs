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
    // Public captures replayed into a live agent, to compare with `astra replay`.
    req("tcpreplay", "tcpreplay"),
    // SYNPROXY's table for protections with SYN cookies.
    req("nft", "nftables"),
    // A real CrowdSec Local API for the bouncer's tests (each test starts its own).
    req("cscli", "crowdsec"),
    // The event log checked against Suricata's EVE schema.
    req("jsonschema", "python3-jsonschema"),
    // The web UI's tests: Debian's Chromium, driven by Playwright under Node.js.
    req("chromium", "chromium"),
    req("node", "nodejs"),
    req("npm", "npm"),
];

/// What `cargo xtask bench` compares against and drives traffic with.
pub const BENCH_REQUIREMENTS: &[Requirement] = &[
    req("ip", "iproute2"),
    req("xdp-filter", "xdp-tools"),
    req("iptables", "iptables"),
    req("nft", "nftables"),
    req("python3", "python3"),
    // `astra replay` against the capture tools people use today.
    req("tshark", "tshark"),
    req("argus", "argus-server"),
    // The bouncer CrowdSec ships, beside Astra's on the same decision stream.
    req("crowdsec-firewall-bouncer", "crowdsec-firewall-bouncer"),
    // The web UI measured in a real browser.
    req("chromium", "chromium"),
    req("node", "nodejs"),
    req("npm", "npm"),
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

/// The locks apt and dpkg take. On a fresh machine unattended upgrades often hold them for
/// minutes, and `apt-get update` fails at once rather than wait (apt's DPkg::Lock::Timeout
/// covers only the dpkg lock).
const APT_LOCKS: [&str; 4] = [
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
];

/// How long to wait for another apt or dpkg before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The pid of a process holding a POSIX lock on `path` (how apt and dpkg lock), if any.
fn lock_holder(path: &str) -> Option<u32> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    // SAFETY: an all-zero flock is a valid value to fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_GETLK on a descriptor we own, with a valid flock to fill in.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    (rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid as u32)
}

/// Waits, up to `limit` and saying so, while another process holds one of `locks`.
fn wait_for_package_locks(locks: &[&str], limit: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        let Some((path, pid)) = locks
            .iter()
            .find_map(|p| lock_holder(p).map(|pid| (*p, pid)))
        else {
            return Ok(());
        };
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if start.elapsed() >= limit {
            bail!(
                "{path} is still held by pid {pid} ({}) after {} s: wait for it to finish, or stop it",
                name.trim(),
                limit.as_secs()
            );
        }
        if !said {
            eprintln!(
                "xtask: waiting for {path}, held by pid {pid} ({}), for up to {} s",
                name.trim(),
                limit.as_secs()
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Installs the packages for missing commands, or fails with one line saying what to install.
pub fn ensure(reqs: &[Requirement]) -> Result<()> {
    // A crowdsec left half-configured by an earlier offline install breaks every later
    // apt-get, whatever it installs.
    finish_crowdsec_offline()?;
    let have_apt = command_present("apt-get");
    match plan(reqs, command_present, cmd::is_root(), have_apt) {
        Plan::Satisfied => Ok(()),
        Plan::Refuse(message) => bail!(message),
        Plan::Install(packages) => {
            wait_for_package_locks(&APT_LOCKS, LOCK_WAIT)?;
            cmd::run(Command::new("apt-get").arg("update"))?;
            wait_for_package_locks(&APT_LOCKS, LOCK_WAIT)?;
            let installed = cmd::run(
                Command::new("apt-get")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    // apt's own wait, for a lock taken between our check and its start.
                    .args([
                        "-o",
                        &format!("DPkg::Lock::Timeout={}", LOCK_WAIT.as_secs()),
                    ])
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(&packages),
            );
            if let Err(e) = installed {
                // The one failure known to be harmless: crowdsec's offline post-install step,
                // whichever package pulled it in. Any other failure stands.
                if !finish_crowdsec_offline()? {
                    return Err(e);
                }
                eprintln!("xtask: {e:#}; finished crowdsec's set-up offline");
            }
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

/// The browser driver's npm package (playwright-core, pinned by tools/ui/package-lock.json),
/// installed when missing or older than the lock. Playwright's own browser download is never
/// used: the driver starts Debian's Chromium.
pub fn ensure_ui_tools() -> Result<()> {
    let dir = cmd::workspace_root().join("tools/ui");
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed).is_some_and(|i| modified(&lock).is_some_and(|l| i >= l)) {
        return Ok(());
    }
    cmd::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
    )
}

/// crowdsec's post-install step registers with CrowdSec's central API, which fails without
/// the network, and leaves the package half-configured. With a placeholder for those
/// credentials it skips the registration; the tests run their own LAPIs without the central
/// API (`-no-capi`), so nothing needs real ones.
///
/// Returns whether there was such a half-configured crowdsec to finish.
fn finish_crowdsec_offline() -> Result<bool> {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "crowdsec"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !status.contains("unpacked") && !status.contains("half-configured") {
        return Ok(false);
    }
    let creds = std::path::Path::new("/etc/crowdsec/online_api_credentials.yaml");
    let empty = std::fs::metadata(creds).map_or(true, |m| m.len() == 0);
    if empty {
        std::fs::create_dir_all("/etc/crowdsec")?;
        std::fs::write(
            creds,
            "# Placeholder written by `cargo xtask`: no central API offline.\n\
             url: https://api.crowdsec.net/\nlogin: offline-placeholder\npassword: offline-placeholder\n",
        )?;
    }
    wait_for_package_locks(&APT_LOCKS, LOCK_WAIT)?;
    cmd::run(
        Command::new("dpkg")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["--configure", "-a"]),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    /// A lock held by another process is waited for, with its holder named, and the wait
    /// ends when it is released (or fails once the limit passes).
    #[test]
    fn package_locks_held_by_others_are_waited_for() {
        let path = env::temp_dir().join(format!("xtask-lock-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let p = path.to_str().unwrap().to_owned();
        assert_eq!(lock_holder(&p), None);
        // A child takes the lock the way dpkg does (fcntl), holds it, then exits.
        let c = std::ffi::CString::new(p.clone()).unwrap();
        // SAFETY: the child only calls async-signal-safe functions before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: a valid NUL-terminated path and a zeroed flock (plain integers); the
            // child exits without returning into the test harness.
            unsafe {
                let fd = libc::open(c.as_ptr(), libc::O_RDWR);
                let mut fl: libc::flock = std::mem::zeroed();
                fl.l_type = libc::F_WRLCK as libc::c_short;
                libc::fcntl(fd, libc::F_SETLK, &fl);
                libc::sleep(2);
                libc::_exit(0);
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while lock_holder(&p).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(lock_holder(&p), Some(pid as u32));
        assert!(wait_for_package_locks(&[&p], std::time::Duration::ZERO).is_err());
        wait_for_package_locks(&[&p], std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(lock_holder(&p), None);
        let mut status = 0;
        // SAFETY: reaping the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = std::fs::remove_file(&path);
    }

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
