//! Why the store could not be opened or used.
use std::{
    io,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use rusqlite::ErrorCode;

use super::*;

/// Why the store could not be opened or used. Every variant displays as one line naming the
/// path and the cause. Causes are deliberately not exposed via `Error::source`, since they are
/// already part of the message and error reporters that print the chain would repeat them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state dir or database file cannot be created or written because of permissions, a
    /// read-only filesystem or a path that is not what it should be (a file where a directory
    /// belongs, or vice versa). Fixable by the operator, hence [`StoreError::is_user_error`].
    #[error("{what} {} cannot be written: {cause}", path.display())]
    Unwritable {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// Any other I/O failure on the state dir or database file (disk full, I/O error).
    #[error("{what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// The file is not SQLite, is damaged, belongs to another program, or holds rows Astra
    /// cannot decode.
    #[error("database {} is corrupt or not an Astra database: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Written by a newer Astra; refusing it protects tables this build does not know about.
    #[error(
        "database {} has schema version {found}, newer than this astra ({supported}): upgrade astra",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Another process held the write lock for longer than [`BUSY_TIMEOUT`].
    #[error(
        "database {} is locked by another process (gave up after {}s): {cause}",
        path.display(),
        BUSY_TIMEOUT.as_secs()
    )]
    Busy {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    /// The state dir may be written by group or others, who could plant links in it.
    #[error("{}", crate::files::shared_dir_message(path, *mode))]
    SharedDir { path: PathBuf, mode: u32 },
    /// An entry that cannot be represented in the database.
    #[error("cannot store {net}: {reason}")]
    InvalidEntry { net: IpNet, reason: String },
    /// Any other SQLite failure.
    #[error("database {}: {cause}", path.display())]
    Sqlite {
        path: PathBuf,
        cause: rusqlite::Error,
    },
}

impl StoreError {
    /// True when the operator pointed Astra at a state dir it cannot use (the CLI exits with
    /// code 2 for these rather than reporting an internal failure).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::Unwritable { .. } | StoreError::SharedDir { .. }
        )
    }

    /// True when the database file itself cannot serve (damaged, replaced by something else,
    /// unreadable or unwritable, out of space) as opposed to a passing lock or a bad entry: a
    /// resilient store falls back to memory on these.
    pub fn is_unusable(&self) -> bool {
        match self {
            StoreError::Unwritable { .. }
            | StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::TooNew { .. } => true,
            StoreError::Sqlite { cause, .. } => matches!(
                cause.sqlite_error_code(),
                Some(
                    ErrorCode::SystemIoFailure
                        | ErrorCode::ReadOnly
                        | ErrorCode::CannotOpen
                        | ErrorCode::DiskFull
                        | ErrorCode::NotADatabase
                        | ErrorCode::DatabaseCorrupt
                )
            ),
            StoreError::Busy { .. }
            | StoreError::InvalidEntry { .. }
            | StoreError::SharedDir { .. } => false,
        }
    }
}

pub(super) fn io_error(what: &'static str, path: &Path, cause: io::Error) -> StoreError {
    let path = path.to_path_buf();
    if crate::files::operator_fixable(&cause) {
        StoreError::Unwritable { what, path, cause }
    } else {
        StoreError::Io { what, path, cause }
    }
}

pub(crate) fn db_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Busy { path, cause: e }
        }
        _ => StoreError::Sqlite { path, cause: e },
    }
}
