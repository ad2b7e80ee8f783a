//! A new database holding a verified prefix of a log (`confstore replay --out`): forensics
//! and point-in-time recovery without touching production. The events are copied byte for
//! byte (same store id, hashes and signatures), so the copy verifies with the same public
//! key, and its write model is folded from them as a fresh replica's would be.

use std::path::Path;

use confstore_core::verify::ChainHead;
use confstore_core::{Hash32, State};
use rusqlite::TransactionBehavior;

use crate::error::LogError;
use crate::reader::{LogReader, Until};
use crate::writer::{Dirty, catch_up, write_model};
use crate::{DbOptions, db, rows};

/// Where the copy ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixHead {
    /// Seq of its last event.
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Hash of its last event.
    pub hash: Hash32,
    /// Time of its last event (unix ms).
    pub time_ms: u64,
}

/// Writes a new database at `out` (which must not exist) holding the events of `reader`'s
/// log that a replay to `until` folds — each verified first — and the write model at its
/// end. Nothing is written at `out` if verification fails; a partly written file is
/// removed.
pub fn write_prefix(
    reader: &LogReader,
    until: Until,
    out: &Path,
    opts: &DbOptions,
    now_ms: u64,
) -> Result<PrefixHead, LogError> {
    if out.exists() {
        return Err(LogError::Schema(format!("{} exists; give a path that does not", out.display())));
    }
    let mut last: Option<PrefixHead> = None;
    reader.replay_with(until, |ev| {
        last = Some(PrefixHead { seq: ev.seq(), epoch: ev.body().epoch, hash: *ev.hash(), time_ms: ev.body().time_ms });
    })?;
    let last = last.ok_or_else(|| LogError::Schema("the log is empty".into()))?;
    let (store_id, _) =
        rows::store_row(reader.connection())?.ok_or_else(|| LogError::Schema("the source has no store row".into()))?;
    let result = copy(reader, out, opts, now_ms, store_id, &last);
    if result.is_err() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", out.display()));
        }
    }
    result.map(|()| last)
}

fn copy(
    reader: &LogReader,
    out: &Path,
    opts: &DbOptions,
    now_ms: u64,
    store_id: confstore_core::StoreId,
    last: &PrefixHead,
) -> Result<(), LogError> {
    let mut conn = db::open(out, opts, true)?;
    db::migrate(&mut conn, now_ms)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(LogError::sqlite("starting to write the copy"))?;
    tx.execute(
        "INSERT INTO store (id, store_id, generation, created_ms) VALUES (1, ?1, 1, ?2)",
        rusqlite::params![store_id.0.as_slice(), rows::i(now_ms)],
    )
    .map_err(LogError::sqlite("writing the store row"))?;
    reader.for_each_event(1, |ev| {
        if ev.seq > last.seq {
            return Ok(false);
        }
        rows::insert_event(&tx, &ev)?;
        Ok(true)
    })?;
    // Fold the copied events as a fresh replica would: verified from event 1.
    let (mut head, mut state, mut dirty) = (ChainHead::genesis(store_id), State::default(), Dirty::default());
    catch_up(&tx, &mut head, &mut state, &mut dirty)?;
    if head.seq != last.seq || head.hash != last.hash {
        return Err(LogError::Schema(format!(
            "the copy ends at event {} but the replay ended at {}: the source changed underneath",
            head.seq, last.seq
        )));
    }
    write_model(&tx, &head, &dirty, &state)?;
    // The generation at the end of the prefix, not the source's current one.
    rows::set_generation(&tx, head.generation)?;
    tx.commit().map_err(LogError::sqlite("committing the copy"))
}
