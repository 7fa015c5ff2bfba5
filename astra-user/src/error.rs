//! The library's error type. Each variant renders as one line a user can act on; the CLI maps
//! [`Error::exit_code`] to the process status (2 for bad input, 1 for everything else).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user: a malformed argument, an unknown interface, an unusable path.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Addr(#[from] crate::addr::AddrError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Pinned maps exist but were not made by this layout version.
    #[error("{0}")]
    Layout(String),
    /// The eBPF object was not built into this binary (built with AYA_BUILD_SKIP=1).
    #[error(
        "this astra binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    NoEbpfObject,
    #[error("{context}: {source}")]
    Bpf {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The interface already runs an XDP program that is not ours.
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Addr(_) => 2,
            Error::Store(e) if e.is_user_error() => 2,
            Error::Io { source, .. } if crate::files::operator_fixable(source) => 2,
            _ => 1,
        }
    }

    pub(crate) fn bpf(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Bpf {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
