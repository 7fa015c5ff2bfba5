//! What `astra lab` and the integration tests both build on, so it exists once: names unique
//! across concurrent processes, scratch pin and state dirs that remove themselves, and
//! `astra run` as a child process in a network namespace.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    agent::status::AgentStatus,
    error::{Error, Result},
    lab::netns::{self, Netns},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique across concurrently running processes and threads (interface and
/// namespace names are short, so the pid is folded).
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A tag for a lab [`Topology`](super::Topology) that starts with this process's pid, as the
/// sweep of dead runs expects ([`super::sweep`]).
pub fn lab_tag(label: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{}-{label}{n}", std::process::id())
}

/// One end of a [`link`]: a namespace, the interface name there, and its addresses (CIDR).
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    pub ns: &'a Netns,
    pub iface: &'a str,
    pub addrs: &'a [&'a str],
}

/// A veth pair between two namespaces, both ends up and addressed: the lab's hosts and the
/// tests' namespace pairs are each made of these.
pub fn link(a: End<'_>, b: End<'_>) -> Result<()> {
    netns::veth(a.ns, a.iface, b.ns, b.iface)?;
    for end in [a, b] {
        for cidr in end.addrs {
            end.ns.add_addr(end.iface, cidr)?;
        }
    }
    Ok(())
}

/// A free TCP port on loopback, as the kernel hands one out.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("free port", e))
}

/// A directory removed with everything in it on drop (a pin dir takes its pins with it).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// A fresh pin dir under /sys/fs/bpf (mounting the BPF filesystem if need be).
    pub fn pin(prefix: &str) -> Result<Self> {
        Self::pin_at(PathBuf::from("/sys/fs/bpf").join(unique(prefix)))
    }

    pub fn pin_at(path: PathBuf) -> Result<Self> {
        crate::dataplane::ensure_pin_dir(&path)?;
        Ok(Self { path, keep: false })
    }

    /// A fresh state dir under the temporary directory, private to its owner.
    pub fn state(prefix: &str) -> Result<Self> {
        Self::dir_at(std::env::temp_dir().join(unique(prefix)), 0o700)
    }

    /// `path`, created with `mode` whatever the umask.
    pub fn dir_at(path: PathBuf, mode: u32) -> Result<Self> {
        fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place at drop (`astra lab --keep`), marked so that the next
    /// lab run's sweep leaves it too.
    pub fn keep(&mut self) {
        self.keep = true;
        let _ = fs::write(self.path.join(crate::lab::sweep::KEPT_MARKER), b"");
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// How to start an agent.
#[derive(Debug)]
pub struct AgentSpec<'a> {
    /// The `astra` binary.
    pub exe: &'a Path,
    /// The network namespace it runs in (`/var/run/netns/NAME`).
    pub netns: &'a str,
    pub ifaces: &'a [String],
    pub pin_dir: &'a Path,
    pub state_dir: &'a Path,
    pub metrics_port: u16,
    pub api_port: Option<u16>,
    /// More `astra run` arguments.
    pub extra: &'a [&'a str],
    /// Where its standard error goes (appended).
    pub log: PathBuf,
}

/// `astra run` in a namespace; killed on drop if still running.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    /// Reaped: its pid (and group id) may belong to another process now.
    reaped: bool,
    log: PathBuf,
    pub metrics_port: u16,
    pub api_port: Option<u16>,
}

impl AgentProcess {
    /// Starts the agent (in its own process group, so ending it ends everything it started)
    /// without waiting for it.
    pub fn spawn(spec: AgentSpec<'_>) -> Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| Error::io(&spec.log, e))?;
        let mut cmd = netns::lab_command_in(spec.netns, spec.exe)?;
        cmd.arg("run");
        for iface in spec.ifaces {
            cmd.args(["--iface", iface]);
        }
        cmd.arg(format!("--metrics-addr=127.0.0.1:{}", spec.metrics_port));
        if let Some(port) = spec.api_port {
            cmd.arg(format!("--api-addr=127.0.0.1:{port}"));
        }
        let child = cmd
            .arg("--pin-dir")
            .arg(spec.pin_dir)
            .arg("--state-dir")
            .arg(spec.state_dir)
            .args(spec.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io("starting the agent", e))?;
        Ok(Self {
            child,
            reaped: false,
            log: spec.log,
            metrics_port: spec.metrics_port,
            api_port: spec.api_port,
        })
    }

    /// Waits until this agent (this pid, not an earlier one's leftover status file) has
    /// polled once; an agent that exits or takes longer than `timeout` is an error naming its
    /// log.
    pub fn wait_polled(&mut self, state_dir: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        loop {
            let status = AgentStatus::read(state_dir);
            if status.is_some_and(|s| s.pid == pid && s.running && s.last_poll_at.is_some()) {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(Error::Usage(format!(
                    "the agent exited ({st}); see {}",
                    self.log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Usage(format!(
                    "the agent did not start; see {}",
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let st = self.child.try_wait().ok().flatten();
        self.reaped |= st.is_some();
        st
    }

    /// SIGTERM, so it detaches cleanly, then waits for it.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        // SAFETY: signalling our own child, not yet reaped, so the pid is still its.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.reaped = true;
        self.child.wait().ok()
    }

    /// SIGKILL (what a crash looks like to the kernel state it leaves), then waits.
    pub fn kill(&mut self) {
        if !self.reaped {
            self.reaped = true;
            netns::kill_group(&mut self.child);
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
