//! The log's error type. Messages are lowercase, name the thing, and say what to do.

use std::path::PathBuf;

use confstore_core::state::RejectError;
use confstore_core::{KeyId, VerifyError};

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// SQLite failed.
    #[error("sqlite: {context}: {error}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The SQLite error (in the message, not chained, so it prints once).
        error: rusqlite::Error,
    },
    /// The linked SQLite is too old to be safe with concurrent checkpointers.
    #[error(
        "sqlite {found} is older than {required}, which fixes a WAL-reset corruption bug; rebuild with bundled sqlite"
    )]
    SqliteTooOld {
        /// Version linked.
        found: String,
        /// Minimum version.
        required: &'static str,
    },
    /// A file of the data directory could not be created.
    #[error("cannot create {}: {}; check the data directory exists and is writable", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// There is no store at this path.
    #[error("no confstore store at {0}; create one with `confstore init`")]
    NotInitialised(PathBuf),
    /// `create` on a path that already holds a store.
    #[error("a confstore store already exists at {path} (store id {store_id}); refusing to overwrite it")]
    AlreadyInitialised {
        /// The database path.
        path: PathBuf,
        /// Its store id.
        store_id: String,
    },
    /// The file is not a confstore database or its schema is newer than this build.
    #[error("{0}")]
    Schema(String),
    /// Events after the verified head do not verify: writes are refused.
    #[error("the log does not verify ({0}); writes are refused until this is investigated (run `confstore verify`)")]
    Tampered(VerifyError),
    /// The configured signing key is not the store's current signing key.
    #[error(
        "the configured signing key {configured} is not the store's current signing key {current}; \
         check CONFIG_SIGNATURE_PRIVATE_KEY"
    )]
    KeyMismatch {
        /// Id of the configured key.
        configured: KeyId,
        /// Id of the store's current key.
        current: KeyId,
    },
    /// Writing needs a signing key and none was given.
    #[error("this store was opened without a signing key, so it cannot append")]
    ReadOnly,
    /// The changeset was refused; nothing was appended.
    #[error(transparent)]
    Rejected(#[from] RejectError),
    /// The transaction holding the changeset failed and was rolled back; nothing of it is
    /// in the log now. After a disk error (a failed WAL write or fsync) its frames may
    /// still be in the WAL file, and a crash before the next commit can bring it back
    /// (docs/adr/0023-fault-vfs.md): a retry with `If-Match` applies at most once.
    #[error(
        "the changeset was not committed ({0}); it is not in the log, but after a disk error a crash may \
         still bring it back: retry with If-Match to apply it at most once"
    )]
    NotCommitted(String),
    /// The writer thread stopped (after a panic or shutdown).
    #[error("the log writer has stopped; restart the process")]
    WriterGone,
    /// An epoch or time that the log does not reach.
    #[error("{0}")]
    OutOfRange(String),
    /// A projection kept in the same database (the search index) could not be read or
    /// written. It holds the projection's own error (`confstore_search::SearchError`; this
    /// crate does not depend on projections), which callers may downcast.
    #[error("{0}")]
    Search(Box<dyn std::error::Error + Send + Sync>),
    /// A read ran longer than the reader-age limit and was aborted ([`crate::guard`]).
    #[error(
        "read transaction older than {} aborted (after {}); the WAL cannot be checkpointed past an \
         open reader, so reads are limited: read less at a time, or raise the limit",
        crate::guard::human(*.limit),
        crate::guard::human(*.age)
    )]
    ReaderTooOld {
        /// The limit.
        limit: std::time::Duration,
        /// How old the read was when it was aborted.
        age: std::time::Duration,
    },
}

impl LogError {
    /// Whether SQLite found the database file damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`):
    /// a page that is not what it should be, not a failure of the operation itself.
    pub fn is_damaged(&self) -> bool {
        matches!(self, Self::Sqlite { error, .. } if sqlite_damaged(error))
    }

    /// Wraps a SQLite error with what was being done.
    pub fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |error| Self::Sqlite { context, error }
    }

    /// Wraps an error of the search index ([`Self::Search`]).
    pub fn search(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Search(Box::new(error))
    }
}

/// Whether a SQLite error says the database file is damaged ([`LogError::is_damaged`]).
fn sqlite_damaged(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}
