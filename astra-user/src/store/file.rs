//! Opening the database file safely: the state dir created private, symlinks and shared
//! dirs refused, only SQLite opening the file; and merging an in-memory fall-back back in.
use std::{
    ffi::CString,
    fs::{self, DirBuilder, File},
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, PermissionsExt},
    },
    path::Path,
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, params};

use super::*;

/// Opens the database file: the state dir is checked and created first, then SQLite itself
/// opens (and if need be creates) the file. Nothing here opens the file outside SQLite, see
/// [`Store`].
pub(super) fn open_db(state_dir: &Path) -> Result<Db, StoreError> {
    prepare_state_dir(state_dir)?;
    let path = state_dir.join(DB_FILE_NAME);
    let created = prepare_db_file(&path)?;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    if created {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    // Without CREATE when the file was there a moment ago: if it vanished in between, failing
    // is more honest than silently starting an empty list.
    let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| db_error(&path, e))?;
    if created {
        // chmod by path (no descriptor of the file to close) before the first row is written;
        // the state dir is 0700, so nobody else could reach the file in between anyway.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("database", &path, e))?;
        // Without this a power loss right after the first block could lose the file's
        // directory entry, and with it the committed block.
        sync_dir(state_dir);
    }
    // Switching a fresh file to WAL and migrating it take locks that SQLite refuses at once,
    // without waiting in the busy handler, when another process is doing the same (an agent
    // and a CLI starting together): retry those refusals for as long as a busy wait would.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let r = configure(&conn)
            .map_err(|e| db_error(&path, e))
            .and_then(|()| migrate(&mut conn, &path));
        match r {
            Err(StoreError::Busy { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => {
                return r.map(|()| Db {
                    conn,
                    path,
                    resilient: None,
                    degraded: None,
                });
            }
        }
    }
}

/// Creates the state dir and verifies it is writable before SQLite sees it: SQLite reports a
/// missing or read-only directory as "unable to open database file", which does not tell the
/// operator what to fix.
pub(super) fn prepare_state_dir(dir: &Path) -> Result<(), StoreError> {
    let what = "state dir";
    if dir.as_os_str().is_empty() {
        return Err(io_error(
            what,
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, "empty path"),
        ));
    }
    // Remember which ancestors we are about to create so their entries can be made durable.
    let created: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(
            |p| matches!(fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound),
        )
        .collect();

    if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        // mkdir on an existing regular file says EEXIST, which reads as if nothing were wrong.
        let e = if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::from_raw_os_error(libc::ENOTDIR)
        } else {
            e
        };
        return Err(io_error(what, dir, e));
    }
    for p in &created {
        sync_dir(parent_or_dot(p));
    }

    // W_OK because SQLite must create the -wal and -shm files next to the database; X_OK to
    // reach them.
    access(what, dir, libc::W_OK | libc::X_OK)?;
    match crate::files::shared_dir_mode(dir) {
        None => Ok(()),
        Some(mode) => Err(StoreError::SharedDir {
            path: dir.to_path_buf(),
            mode,
        }),
    }
}

/// `faccessat(2)` with the effective uid (AT_EACCESS), which is what open(2) will use.
pub(super) fn access(what: &'static str, path: &Path, mode: libc::c_int) -> Result<(), StoreError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error(
            what,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) };
    if rc != 0 {
        return Err(io_error(what, path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Checks the database file before SQLite opens it, without opening it (see [`Store`]), so
/// that permission problems are reported with the real errno rather than SQLite's "unable to
/// open database file". Returns whether the file has yet to be created.
pub(super) fn prepare_db_file(path: &Path) -> Result<bool, StoreError> {
    let what = "database";
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io_error(what, path, e)),
    };
    if meta.file_type().is_symlink() {
        // SQLite would follow it (and is told not to); a planted link must not redirect the
        // lists into another file.
        return Err(io_error(
            what,
            path,
            io::Error::from_raw_os_error(libc::ELOOP),
        ));
    }
    if meta.is_dir() {
        return Err(io_error(
            what,
            path,
            io::Error::from_raw_os_error(libc::EISDIR),
        ));
    }
    access(what, path, libc::R_OK | libc::W_OK)?;
    Ok(false)
}

pub(super) fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Best effort: some filesystems refuse fsync on directories, and there is nothing better to
/// fall back to, so a failure here must not stop the store from opening.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Copies every row of the in-memory database `mem` into the database file at `path`, which
/// has the same schema (both ran the same migrations). Offence counts add up; list entries
/// decided in memory win over the file's; history rows are kept where both have them.
pub(super) fn merge_into(mem: &Connection, path: &Path) -> rusqlite::Result<()> {
    mem.busy_timeout(BUSY_TIMEOUT)?;
    mem.execute(
        "ATTACH DATABASE ?1 AS disk",
        params![path.to_string_lossy()],
    )?;
    let merged = mem.execute_batch(
        "PRAGMA disk.synchronous = FULL;
         BEGIN IMMEDIATE;
         INSERT OR REPLACE INTO disk.list_entries SELECT * FROM main.list_entries;
         INSERT INTO disk.offenders SELECT * FROM main.offenders WHERE true
             ON CONFLICT (ip) DO UPDATE SET blocks = blocks + excluded.blocks,
                                            last_at = max(last_at, excluded.last_at);
         INSERT OR IGNORE INTO disk.alerts SELECT * FROM main.alerts;
         INSERT OR IGNORE INTO disk.incidents SELECT * FROM main.incidents;
         COMMIT;",
    );
    if merged.is_err() {
        let _ = mem.execute_batch("ROLLBACK");
    }
    let detached = mem.execute_batch("DETACH DATABASE disk");
    merged.and(detached)
}
