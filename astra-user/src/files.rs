//! Writing Astra's own files (status, token, model, training rows, incident reports, the event
//! log, exports) without following a symlink someone planted where the file goes: every open
//! passes `O_NOFOLLOW`, and temporary files are created with `O_EXCL`, so a link at either
//! name is an error (ELOOP, EEXIST) instead of a write into whatever it points at.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Mode of the files Astra writes into the state dir: operational data for root only.
pub const PRIVATE: u32 = 0o600;

fn options(mode: u32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).mode(mode).custom_flags(libc::O_NOFOLLOW);
    o
}

/// Creates or truncates `path` and writes `bytes` (not atomically: for files nothing reads
/// while they are written, such as an incident report under a fresh id).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = options(mode).create(true).truncate(true).open(path)?;
    f.write_all(bytes)
}

/// Replaces `path` with `bytes` atomically: a fresh temporary file beside it (`O_EXCL`, so a
/// planted link at the temporary name fails too), synced, then renamed over `path` (a rename
/// replaces a symlink at `path` itself, never its target).
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_name(path);
    // A leftover of a crash, or a planted link: removing it removes the link, not its target.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let r = options(mode)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    PathBuf::from(name)
}

/// Opens `path` for appending, creating it with `mode`; a symlink there is refused.
pub fn append(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens `path` for reading; a symlink there is refused.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The mode of `dir` when group or others may write to it (they could plant links or files
/// there for root to follow); None when only its owner may.
pub fn shared_dir_mode(dir: &Path) -> Option<u32> {
    let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o7777;
    (mode & 0o022 != 0).then_some(mode)
}

/// An I/O error the operator causes and fixes by pointing Astra at another path: permissions,
/// a read-only filesystem, a file where a directory belongs or the reverse, a missing or
/// dangling path, a planted symlink. (Disk full or EIO are failures, not usage.)
pub fn operator_fixable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EACCES
                | libc::EPERM
                | libc::EROFS
                | libc::ENOTDIR
                | libc::EISDIR
                | libc::EEXIST
                | libc::ENOENT
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::EFBIG
        )
    ) || e.kind() == io::ErrorKind::InvalidInput
}

/// One line for a state dir others may write to.
pub fn shared_dir_message(dir: &Path, mode: u32) -> String {
    format!(
        "state dir {} may be written by group or others (mode {mode:04o}), who could plant files or links in it: `chmod go-w {}` or choose another",
        dir.display(),
        dir.display()
    )
}

/// The permission bits of an open file.
pub fn mode_of(f: &File) -> io::Result<u32> {
    Ok(f.metadata()?.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("astra-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn planted_links_are_refused_and_their_targets_untouched() {
        let d = scratch("links");
        let target = d.join("precious");
        fs::write(&target, "keep").unwrap();
        let at = |n: &str| {
            let p = d.join(n);
            std::os::unix::fs::symlink(&target, &p).unwrap();
            p
        };
        // write and append refuse a link at the name.
        assert!(write(&at("report.json"), b"x", PRIVATE).is_err());
        assert!(append(&at("eve.json"), PRIVATE).is_err());
        assert!(open_read(&at("api.token")).is_err());
        // replace goes through a fresh temporary file: a link at the temporary name is
        // removed, a link at the name itself is replaced by the file.
        let status = d.join("agent.json");
        std::os::unix::fs::symlink(&target, temp_name(&status)).unwrap();
        replace(&status, b"{}", PRIVATE).unwrap();
        let linked = at("model.json");
        replace(&linked, b"{}", PRIVATE).unwrap();
        assert!(
            !fs::symlink_metadata(&linked)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read(&status).unwrap(), b"{}");
        assert_eq!(mode_of(&File::open(&status).unwrap()).unwrap(), PRIVATE);
        let _ = fs::remove_dir_all(&d);
    }
}

/// A value loaded from a file and loaded again only when the file's modification time
/// changes: what the agent does with models a CLI command replaces under it. A file that does
/// not load leaves no value, and its error is returned once, until the file changes again.
#[derive(Debug)]
pub struct Watched<T> {
    path: PathBuf,
    seen: Option<std::time::SystemTime>,
    value: Option<T>,
}

impl<T> Watched<T> {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            seen: None,
            value: None,
        }
    }

    /// Loads the file if it changed (or went: then there is no value). `Ok(true)` when a new
    /// value was loaded.
    pub fn refresh<E>(&mut self, load: impl FnOnce(&Path) -> Result<T, E>) -> Result<bool, E> {
        let now = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if now.is_none() {
            (self.seen, self.value) = (None, None);
            return Ok(false);
        }
        if self.seen == now {
            return Ok(false);
        }
        self.seen = now;
        self.value = None;
        self.value = Some(load(&self.path)?);
        Ok(true)
    }

    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod watched_tests {
    use super::*;

    /// Loaded when it changes and not otherwise; a bad file leaves no value and says so once.
    #[test]
    fn a_watched_file_loads_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("astra-watched-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.txt");
        let mut w = Watched::new(path.clone());
        let load = |p: &Path| fs::read_to_string(p).unwrap().trim().parse::<u32>();
        assert!(!w.refresh(load).unwrap(), "no file yet");
        fs::write(&path, "1").unwrap();
        assert!(w.refresh(load).unwrap());
        assert!(!w.refresh(load).unwrap(), "unchanged");
        assert_eq!(w.get(), Some(&1));
        // A later mtime, as a replacing command leaves it.
        let later = |secs| {
            let f = File::options().write(true).open(&path).unwrap();
            f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        fs::write(&path, "x").unwrap();
        later(10);
        assert!(w.refresh(load).is_err());
        assert_eq!(w.get(), None);
        assert!(!w.refresh(load).unwrap(), "the error is told once");
        fs::write(&path, "2").unwrap();
        later(20);
        assert!(w.refresh(load).unwrap());
        assert_eq!(w.get(), Some(&2));
        fs::remove_file(&path).unwrap();
        assert!(!w.refresh(load).unwrap());
        assert_eq!(w.get(), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
