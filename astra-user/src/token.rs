//! The API bearer token: 32 random bytes in hex, in `<state-dir>/api.token` with mode 0600.
//! The API reads the file on every mutating request, so `astra token rotate` takes effect at
//! once and the old token stops working without restarting the agent.
use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

pub const TOKEN_FILE: &str = "api.token";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// The current token, if one was generated.
pub fn read(state_dir: &Path) -> Result<Option<String>> {
    let p = path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&p, e)),
    }
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
    std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
    let p = path(state_dir);
    let tmp = state_dir.join(format!("{TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    // Created 0600 rather than chmod-ed afterwards, so the token is never readable by others.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

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
