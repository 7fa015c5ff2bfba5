//! Network namespaces and veth pairs for the lab and the tests. Everything created here is
//! owned by a guard that deletes it on drop, so a panic or Ctrl-C leaves nothing behind.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt as _},
    process::Command,
};

use crate::error::{Error, Result};

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io("ip (iproute2)", e))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    pub fn sysctl(&self, key_value: &str) -> Result<()> {
        ip(&["netns", "exec", &self.name, "sysctl", "-qw", key_value])
    }

    pub fn add_addr(&self, iface: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", iface, "nodad"])
        } else {
            self.ip(&["addr", "add", cidr, "dev", iface])
        }
    }

    /// The MAC address of `iface` in this namespace.
    pub fn mac(&self, iface: &str) -> Result<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-br", "link", "show", "dev", iface])
            .output()
            .map_err(|e| Error::io("ip (iproute2)", e))?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .ok_or_else(|| Error::Usage(format!("no MAC address for {iface} in {}", self.name)))
    }

    /// Runs `f` on a thread that has joined this namespace, and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        in_ns(&self.path(), f)
    }

    /// A command that starts inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        command_in(&self.path(), program)
    }

    /// [`lab_command_in`] for this namespace.
    pub fn lab_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        lab_command_in(&self.path(), program)
    }
}

/// A command that starts inside the network namespace at `path` (network namespace only:
/// mounts, and so the pin directory, stay shared with the caller).
pub fn command_in(path: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut cmd = Command::new(program);
    // SAFETY: setns is async-signal-safe, and the closure owns the fd until exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// A command for a lab daemon or tool in the namespace at `path`: as [`command_in`], leading
/// a process group of its own, so [`kill_group`] ends it with every process it forked.
pub fn lab_command_in(path: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
    let mut cmd = command_in(path, program)?;
    cmd.process_group(0);
    Ok(cmd)
}

/// Kills `child`'s whole process group (see [`lab_command_in`]) and reaps `child`. Killing the
/// child alone left nginx's workers and hydra's tasks running after every lab scenario.
pub fn kill_group(child: &mut std::process::Child) {
    // SAFETY: a signal to the group the child leads (its pgid is its pid); the child is not
    // yet reaped, so the id cannot have been reused.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends inside it, and with them their peers.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Creates a veth pair with one end in each namespace.
pub fn veth(a: &Netns, if_a: &str, b: &Netns, if_b: &str) -> Result<()> {
    ip(&[
        "link", "add", if_a, "netns", &a.name, "type", "veth", "peer", "name", if_b, "netns",
        &b.name,
    ])?;
    a.ip(&["link", "set", if_a, "up"])?;
    b.ip(&["link", "set", if_b, "up"])
}

/// Runs `f` on a new thread that has entered the network namespace at `path`.
pub fn in_ns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let path = path.to_owned();
    std::thread::spawn(move || {
        // SAFETY: setns affects only this thread; the fd is a valid namespace handle.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Usage("namespace worker thread panicked".into()))?
}
