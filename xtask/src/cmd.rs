//! Running child processes and steps: one header line per step, its elapsed time at the end,
//! and a child's exit code carried through to xtask's own.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt, fs,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};

/// A child process that did not succeed. `main` exits with `code`, so a failing
/// `cargo test` makes `cargo xtask test` exit with the same status.
#[derive(Debug)]
pub struct Failed {
    pub what: String,
    pub code: i32,
    pub signal: Option<i32>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal {
            Some(sig) => write!(f, "`{}` was killed by signal {sig}", self.what),
            None => write!(f, "`{}` failed with exit code {}", self.what, self.code),
        }
    }
}

impl std::error::Error for Failed {}

/// The exit code for xtask after `err`: the failed child's code, or 1.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failed>())
        .and_then(|f| u8::try_from(f.code).ok())
        .filter(|&c| c != 0)
        .unwrap_or(1)
}

fn check(status: ExitStatus, what: String) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let signal = status.signal();
    let code = status.code().or(signal.map(|s| 128 + s)).unwrap_or(1);
    Err(Failed { what, code, signal }.into())
}

/// Runs `cmd` with inherited stdio; a non-zero exit is a [`Failed`] error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    check(status, what)
}

/// Runs `cmd` and returns its trimmed stdout. On failure the error carries the first line
/// the child wrote to stderr, so it stays one line.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{what}`"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output");
    Err(anyhow!("{reason}")).context(
        check(out.status, what)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    )
}

/// Runs `f` as a named step: a header line first, then how it ended and how long it took.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("==> {name}");
    let start = Instant::now();
    let result = f();
    let took = elapsed(start.elapsed());
    match &result {
        Ok(_) => eprintln!("<== {name}: ok ({took})"),
        Err(_) => eprintln!("<== {name}: FAILED ({took})"),
    }
    result
}

/// Runs one command as a step named after its command line.
pub fn run_step(cmd: &mut Command) -> Result<()> {
    step(&display(cmd), || run(cmd))
}

/// `1.2s` below a minute, `3m05s` above.
pub fn elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// The command line as one could paste it into a shell, with the variables it sets.
pub fn display(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))));
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_owned();
    envs.chain(std::iter::once(quote(&program)))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// cargo's target directory, honouring `CARGO_TARGET_DIR`/`CARGO_BUILD_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|k| env::var_os(k).filter(|v| !v.is_empty()))
        .map(|dir| {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                env::current_dir().unwrap_or_default().join(dir)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo` (the one that runs xtask, if known), started in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(workspace_root());
    cmd
}

/// Effective uid from the text of `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid(proc_status: &str) -> Option<u32> {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

pub fn is_root() -> bool {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s));
    let uid = from_proc.or_else(|| output(Command::new("id").arg("-u")).ok()?.parse().ok());
    uid == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_effective_uid() {
        let status =
            "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tcat\n"), None);
    }

    #[test]
    fn formats_elapsed() {
        assert_eq!(elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
    }

    #[test]
    fn displays_commands_shell_style() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.env("RUSTFLAGS", "-C link-arg=x")
            .args(["clippy", "--", "-D", "warnings", "it's"]);
        assert_eq!(
            display(&cmd),
            r"RUSTFLAGS='-C link-arg=x' cargo clippy -- -D warnings 'it'\''s'"
        );
    }

    #[test]
    fn child_exit_code_becomes_ours() {
        let err = anyhow::Error::from(Failed {
            what: "cargo test".into(),
            code: 101,
            signal: None,
        })
        .context("test step");
        assert_eq!(exit_code_of(&err), 101);
        assert_eq!(exit_code_of(&anyhow!("plain")), 1);
        let failed = run(Command::new("sh").args(["-c", "exit 7"])).unwrap_err();
        assert_eq!(exit_code_of(&failed), 7);
        assert_eq!(
            failed.to_string(),
            "`sh -c 'exit 7'` failed with exit code 7"
        );
    }
}
