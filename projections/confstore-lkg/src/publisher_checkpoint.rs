//! The publisher's checkpoint, `mqtt.checkpoint` beside the database: the seq (and its
//! hash) through which the broker has acknowledged every message. On start the publisher
//! resumes after it, so the log is the outbox: nothing committed is skipped, and at worst
//! a few messages are published twice (clients drop duplicates by version).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name in the data directory.
pub const FILE_NAME: &str = "mqtt.checkpoint";

/// What the file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Store id (hex): a checkpoint of another store is ignored.
    pub store_id: String,
    /// Store generation.
    pub generation: u64,
    /// Every message for the events up to this seq is acknowledged by the broker.
    pub seq: u64,
    /// Hash (hex) of event `seq`: if the log no longer has it there (a restore), the
    /// checkpoint is not used.
    pub hash: String,
}

/// Reads the checkpoint; `None` if absent or unreadable (then the publisher starts with a
/// full sync, which is always safe).
pub fn read(path: &Path) -> Option<Checkpoint> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Writes the checkpoint atomically (temporary file, fsync, rename, directory fsync).
pub fn write(path: &Path, c: &Checkpoint) -> std::io::Result<()> {
    let text = serde_json::to_string(c).map_err(std::io::Error::other)?;
    crate::replace::replace(path, &path.with_extension("checkpoint.tmp"), text.as_bytes(), || ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(read(&path), None);
        let c = Checkpoint { store_id: "ab".into(), generation: 1, seq: 7, hash: "00".into() };
        write(&path, &c).unwrap();
        assert_eq!(read(&path), Some(c));
        fs::write(&path, b"{not json").unwrap();
        assert_eq!(read(&path), None);
    }
}
