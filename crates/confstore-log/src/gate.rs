//! The write gate: a fair (FIFO) lock that every write transaction of this process on one
//! database takes before `BEGIN IMMEDIATE` and holds until it commits or rolls back.
//!
//! SQLite gives the database's write lock to whoever asks when it is free; a connection
//! that finds it taken waits in its busy handler, which sleeps (up to 100 ms between tries
//! with the default handler) and so loses to a second writer that takes the lock again at
//! once. Inside one process that is the log's writer against the search index's catch-up,
//! which writes a long backlog in bounded transactions back to back: the log's writer could
//! wait for the whole backlog, hundreds of milliseconds (docs/benchmarks.md). Taking this
//! gate first turns the contention into a queue: the writer waits for at most the one
//! transaction in progress. Other processes (the CLI, Litestream) still meet at SQLite's
//! lock and its busy timeout.
//!
//! One gate per database file in the process (by canonical path), shared by the [`Store`]'s
//! writer and every [`LogReader`] opened on the same file.
//!
//! [`Store`]: crate::Store
//! [`LogReader`]: crate::LogReader

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Held while a write transaction of this process is open on the database.
pub type WriteGuard<'a> = parking_lot::FairMutexGuard<'a, ()>;

/// The gate of one database file (clones share it).
#[derive(Clone, Debug)]
pub struct WriteGate(Arc<parking_lot::FairMutex<()>>);

/// The gates of the files open in this process. Weak: a gate lives as long as something
/// holds it.
static GATES: Mutex<Option<HashMap<PathBuf, Weak<parking_lot::FairMutex<()>>>>> = Mutex::new(None);

impl WriteGate {
    /// The gate of the database at `path` (the same one for every path naming the file).
    pub fn of(path: &Path) -> Self {
        // A file that cannot be canonicalised yet (about to be created) is named as given.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
        let gates = gates.get_or_insert_with(HashMap::new);
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return Self(gate);
        }
        gates.retain(|_, g| g.strong_count() > 0);
        let gate = Arc::new(parking_lot::FairMutex::new(()));
        gates.insert(key, Arc::downgrade(&gate));
        Self(gate)
    }

    /// Waits for the gate (in arrival order) and holds it until the guard is dropped. Take
    /// it before `BEGIN IMMEDIATE`, drop it after `COMMIT` or the rollback.
    pub fn hold(&self) -> WriteGuard<'_> {
        self.0.lock()
    }

    /// Whether both handles are the same gate.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_naming_one_file_share_one_gate_and_others_do_not() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = dir.path().join("a.db");
        std::fs::write(&a, b"").expect("writing a file");
        let b = dir.path().join("b.db");
        std::fs::write(&b, b"").expect("writing a file");
        let via_dot = dir.path().join(".").join("a.db");
        let gate = WriteGate::of(&a);
        assert!(gate.same_as(&WriteGate::of(&via_dot)));
        assert!(!gate.same_as(&WriteGate::of(&b)));
        // Held by one, the other handle waits.
        let held = gate.hold();
        assert!(WriteGate::of(&a).0.try_lock().is_none());
        drop(held);
        assert!(WriteGate::of(&a).0.try_lock().is_some());
    }
}
