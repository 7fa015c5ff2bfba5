//! Cleaning up after lab runs that could not clean up after themselves. A run killed with
//! SIGKILL (or a crash) leaves its namespaces, the daemons and tools running in them, its pin
//! dirs and its state dirs. Every one of those is named `astra-lab-<pid>-...` after the process
//! that made it, so the next run can tell a dead run's leftovers from a live run's own.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::LAB_PREFIX;

/// A state dir the operator asked to keep (`astra lab --keep`) has this file; it is never swept.
pub const KEPT_MARKER: &str = "KEPT";

/// Removes what dead lab runs left: kills every process in their namespaces, deletes the
/// namespaces, and removes their pin dirs and (unless kept) state dirs. Returns what it
/// removed, one line each. Runs that are still alive, in any process, are left alone.
pub fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    for (name, path) in dead_entries(Path::new("/var/run/netns")) {
        let killed = kill_processes_in(&path);
        let deleted = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status()
            .is_ok_and(|s| s.success());
        if deleted {
            removed.push(format!("namespace {name} ({killed} processes killed)"));
        }
    }
    for (name, path) in dead_entries(Path::new("/sys/fs/bpf")) {
        // Unlinking the pins releases the maps and links a dead agent left pinned.
        if fs::remove_dir_all(&path).is_ok() {
            removed.push(format!("pin dir /sys/fs/bpf/{name}"));
        }
    }
    for (_, path) in dead_entries(&std::env::temp_dir()) {
        if path.join(KEPT_MARKER).exists() {
            continue;
        }
        if fs::remove_dir_all(&path).is_ok() {
            removed.push(format!("state dir {}", path.display()));
        }
    }
    removed
}

/// Entries of `dir` named by a lab run whose process no longer exists.
fn dead_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = owner_pid(&name)?;
            (!alive(pid)).then(|| (name, e.path()))
        })
        .collect()
}

/// The pid in `astra-lab-<pid>-...`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(LAB_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|&p| p > 0)
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// SIGKILLs every process whose network namespace is the one at `ns_path`; returns how many.
fn kill_processes_in(ns_path: &Path) -> usize {
    let Ok(ns) = fs::metadata(ns_path) else {
        return 0;
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let same = fs::metadata(p.path().join("ns/net"))
            .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev());
        // SAFETY: a signal to a process found in that namespace; nothing else runs there.
        if same && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lab_names_with_a_pid_are_candidates() {
        assert_eq!(owner_pid("astra-lab-1234-0-srv"), Some(1234));
        assert_eq!(owner_pid("astra-lab-1234-b2"), Some(1234));
        assert_eq!(owner_pid("astra-lab-report-77x1"), None);
        assert_eq!(owner_pid("astra-lab-0-x"), None);
        assert_eq!(owner_pid("astra-t123x4"), None);
        assert!(alive(std::process::id()));
    }
}
