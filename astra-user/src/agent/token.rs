//! The API bearer tokens: 32 random bytes in hex each, one per role, in `<state-dir>` with mode
//! 0600 (`api.token` for the admin, `api.viewer.token` for the read-only viewer). The API reads
//! the files on every request that carries a token, so `astra token rotate` takes effect at
//! once and the old token stops working without restarting the agent.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

pub const TOKEN_FILE: &str = "api.token";
pub const VIEWER_TOKEN_FILE: &str = "api.viewer.token";

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything the API shows; changes nothing.
    Viewer,
    /// Reads and changes: lists, protections, training.
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Admin, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Role::Viewer => VIEWER_TOKEN_FILE,
            Role::Admin => TOKEN_FILE,
        }
    }
}

/// The admin token's path.
pub fn path(state_dir: &Path) -> PathBuf {
    path_of(state_dir, Role::Admin)
}

pub fn path_of(state_dir: &Path, role: Role) -> PathBuf {
    state_dir.join(role.file())
}

/// The role whose token `given` is, if any. Every role's token is compared, in time
/// independent of where they differ.
pub fn role_of(state_dir: &Path, given: &str) -> Result<Option<Role>> {
    let mut found = None;
    for role in Role::ALL {
        if read_role(state_dir, role)?.is_some_and(|t| matches(&t, given)) {
            found = found.or(Some(role));
        }
    }
    Ok(found)
}

/// The current admin token, if one was generated.
pub fn read(state_dir: &Path) -> Result<Option<String>> {
    read_role(state_dir, Role::Admin)
}

/// The current token of `role`, if one was generated.
/// A symlink at the token's path, or a token others may read, is refused: either means
/// someone else may know it.
pub fn read_role(state_dir: &Path, role: Role) -> Result<Option<String>> {
    use std::io::Read as _;
    let p = path_of(state_dir, role);
    let f = match crate::files::open_read(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let mode = crate::files::mode_of(&f).map_err(|e| Error::io(&p, e))?;
    if mode & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "{} is readable by others (mode {mode:04o}): run `astra token rotate --role {}` for a new, private one",
            p.display(),
            role.as_str()
        )));
    }
    let mut text = String::new();
    f.take(crate::limits::SMALL_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&p, e))?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// The current token of `role`, generating one if there is none yet.
pub fn ensure(state_dir: &Path, role: Role) -> Result<String> {
    match read_role(state_dir, role)? {
        Some(t) => Ok(t),
        None => rotate(state_dir, role),
    }
}

/// Replaces the token of `role` with a fresh one and returns it.
pub fn rotate(state_dir: &Path, role: Role) -> Result<String> {
    let token = generate()?;
    ensure_private_dir(state_dir)?;
    let p = path_of(state_dir, role);
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
        let t1 = ensure(&dir, Role::Admin).unwrap();
        assert_eq!(t1.len(), 64);
        assert!(t1.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ensure(&dir, Role::Admin).unwrap(), t1);
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let t2 = rotate(&dir, Role::Admin).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(read(&dir).unwrap(), Some(t2.clone()));
        assert!(matches(&t2, &t2));
        assert!(!matches(&t2, &t1));
        assert!(!matches(&t2, &t2[..63]));
        // The viewer's token is another file, and tells its role apart.
        assert_eq!(role_of(&dir, &t2).unwrap(), Some(Role::Admin));
        assert_eq!(role_of(&dir, &t1).unwrap(), None);
        let v = ensure(&dir, Role::Viewer).unwrap();
        assert_ne!(v, t2);
        assert_eq!(role_of(&dir, &v).unwrap(), Some(Role::Viewer));
        let v2 = rotate(&dir, Role::Viewer).unwrap();
        assert_eq!(role_of(&dir, &v).unwrap(), None);
        assert_eq!(role_of(&dir, &v2).unwrap(), Some(Role::Viewer));
        assert_eq!(
            read(&dir).unwrap(),
            Some(t2.clone()),
            "the admin's token is untouched"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
