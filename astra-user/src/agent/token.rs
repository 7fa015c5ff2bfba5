//! The API bearer token: 32 random bytes in hex, in `<state-dir>/api.token` with mode 0600.
//! The API reads the file on every mutating request, so `astra token rotate` takes effect at
//! once and the old token stops working without restarting the agent.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const TOKEN_FILE: &str = "api.token";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// The current token, if one was generated.
/// A symlink at the token's path, or a token others may read, is refused: either means
/// someone else may know it.
pub fn read(state_dir: &Path) -> Result<Option<String>> {
    use std::io::Read as _;
    let p = path(state_dir);
    let f = match crate::files::open_read(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let mode = crate::files::mode_of(&f).map_err(|e| Error::io(&p, e))?;
    if mode & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "{} is readable by others (mode {mode:04o}): run `astra token rotate` for a new, private one",
            p.display()
        )));
    }
    let mut text = String::new();
    f.take(crate::limits::SMALL_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&p, e))?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// The current token, generating one if there is none yet.
pub fn ensure(state_dir: &Path) -> Result<String> {
    match read(state_dir)? {
        Some(t) => Ok(t),
        None => rotate(state_dir),
    }
}

/// Replaces the token with a fresh one and returns it.
pub fn rotate(state_dir: &Path) -> Result<String> {
    let token = generate()?;
    ensure_private_dir(state_dir)?;
    let p = path(state_dir);
    // Created 0600 rather than chmod-ed afterwards, so the token is never readable by others.
    crate::files::replace(&p, format!("{token}\n").as_bytes(), crate::files::PRIVATE)
        .map_err(|e| Error::io(&p, e))?;
    Ok(token)
}

fn generate() -> Result<String> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("getrandom", e));
        }
        filled += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares in time independent of where the strings differ, so response timing does not
/// leak how much of a guessed token was right.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates `dir` (0700) if need be, and refuses one others may write to.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    match crate::files::shared_dir_mode(dir) {
        None => Ok(()),
        Some(mode) => Err(Error::Usage(crate::files::shared_dir_message(dir, mode))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn tokens_are_private_random_and_rotate() {
        let dir = std::env::temp_dir().join(format!("astra-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read(&dir).unwrap(), None);
        let t1 = ensure(&dir).unwrap();
        assert_eq!(t1.len(), 64);
        assert!(t1.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ensure(&dir).unwrap(), t1);
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let t2 = rotate(&dir).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(read(&dir).unwrap(), Some(t2.clone()));
        assert!(matches(&t2, &t2));
        assert!(!matches(&t2, &t1));
        assert!(!matches(&t2, &t2[..63]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
