//! confstore's SQLite event log (`<data-dir>/config.db`).
//!
//! - [`db`]: opening a database: the SQLite version pin, every pragma, migrations.
//! - [`files`]: the data directory 0700 and its files 0600, and warnings when they are not.
//! - `drain`: the one loop that pushes stored events into a verifier and hands out the
//!   verified ones (replays, the current state, projections catching up, the writer's catch-up).
//! - [`rows`]: mapping between table rows and core types.
//! - [`parallel`]: signature batches checked on every core during full verification.
//! - [`merkle`]: the Merkle tree over the log (`merkle_hashes`): appends, roots, proofs.
//! - [`reader`]: reads: head, event ranges, full verification, replay to an epoch or time.
//! - [`guard`]: the reader-age guard: a read older than `DbOptions::max_read_age` is aborted.
//! - `group`: group commit by leader/follower: whoever finds no commit running commits for all.
//! - [`writer`]: the writer: one transaction per batch of changesets, checkpoints.
//! - [`prefix`]: a new database holding a verified prefix of a log (`confstore replay --out`).
//! - [`store`]: [`Store`], which ties them together: create, open (checking the events
//!   after the last verified head), append.
//!
//! Architecture invariant: this crate knows SQLite and the core types, and nothing of
//! HTTP, MQTT, the CLI or the environment. It reads the clock only through [`Clock`].

pub mod db;
mod drain;
pub mod error;
pub mod files;
pub mod gate;
mod group;
pub mod guard;
pub mod merkle;
pub mod parallel;
pub mod prefix;
pub mod reader;
pub mod rows;
pub mod store;
mod sync;
pub mod writer;

pub use db::{DbOptions, Synchronous};
pub use error::LogError;
pub use gate::{WriteGate, WriteGuard};
pub use prefix::{PrefixHead, write_prefix};
pub use reader::{CurrentValue, Head, LogReader, TreeCheck, Until};
pub use store::{Receipt, Store};
pub use writer::{Committed, Listener, Refusal};

/// Where the writer gets the time of a changeset.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}
