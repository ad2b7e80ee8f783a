//! The Merkle tree over the log (migration 0009; docs/format.md §19; ADR 0027).
//!
//! `merkle_hashes` holds Go `sumdb/tlog`'s stored hashes except the leaves: the root of every
//! complete subtree, at its stored-hash index. A leaf is `SHA-256(0x00 || events.hash)`,
//! computed from the `events` row when a root or proof needs it, so the tree adds about one
//! row per event. `merkle_tree.size` is the number of events the stored nodes cover.
//!
//! The tree is extended in batches ([`extend`]), not inside each append: a second table
//! written by every single-event commit doubled its WAL pages and cost ~30 µs per append
//! (ADR 0027). [`crate::LogReader::extend_tree`] brings it to the log's end in bounded write
//! transactions under the write gate; `serve` runs it after commits and before each signed
//! checkpoint, and the proof readers run it first when asked beyond the stored size. Roots
//! and proofs of any size up to the stored one read at most `2·log₂ n` rows by primary key.

use confstore_core::Hash32;
use confstore_core::tlog::{self, HashReader, TlogError, TreeHash};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::LogError;
use crate::rows::{i, u};

/// Reads stored hashes through `conn` (inside whatever transaction it is in): interior nodes
/// from `merkle_hashes`, leaves from `events`.
pub struct SqlHashes<'c>(pub &'c Connection);

impl SqlHashes<'_> {
    fn one(&self, idx: u64) -> rusqlite::Result<Option<[u8; 32]>> {
        let (level, n) = tlog::split_stored_hash_index(idx);
        let blob: Option<Vec<u8>> = if level == 0 {
            self.0
                .prepare_cached("SELECT hash FROM events WHERE seq = ?1")?
                .query_row([i(n + 1)], |r| r.get(0))
                .optional()?
        } else {
            self.0
                .prepare_cached("SELECT hash FROM merkle_hashes WHERE idx = ?1")?
                .query_row([i(idx)], |r| r.get(0))
                .optional()?
        };
        let Some(b) = blob.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()) else { return Ok(None) };
        Ok(Some(if level == 0 { tlog::leaf_hash(&Hash32(b)).0 } else { b }))
    }
}

impl HashReader for SqlHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, TlogError> {
        indexes
            .iter()
            .map(|&idx| match self.one(idx) {
                Ok(Some(h)) => Ok(TreeHash(h)),
                _ => Err(TlogError::IndexesNotInTree),
            })
            .collect()
    }
}

/// The number of events the stored tree covers.
///
/// # Errors
///
/// SQLite errors.
pub fn size(conn: &Connection) -> Result<u64, LogError> {
    let size: Option<i64> = conn
        .query_row("SELECT size FROM merkle_tree WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map_err(LogError::sqlite("reading the Merkle tree's size"))?;
    Ok(size.map_or(0, u))
}

/// Extends the stored tree to `to` events, in the caller's write transaction. Each event added
/// is checked to be a link of the chain first (its hash recomputed from its seq, previous hash
/// and body, and its previous hash equal to the hash of the event before it), so a row edited
/// since it was verified cannot slip into a root; with `anchor` = the hash of event `to` as
/// the caller verified it (the writer's head), the whole range is tied to it. A tree recorded
/// past `to` (only a hand edit leaves one: the tree lives in the same file as the events) is
/// cut back first. Returns `to`.
///
/// # Errors
///
/// SQLite errors; [`LogError::Tampered`] for an event missing, not linked, or not the
/// anchor's; nothing is written then (the caller's transaction rolls back).
pub fn extend(
    conn: &Connection,
    store_id: &confstore_core::StoreId,
    to: u64,
    anchor: Option<&Hash32>,
) -> Result<u64, LogError> {
    use confstore_core::VerifyError;
    let bad = |seq: u64, reason: &str| {
        LogError::Tampered(VerifyError::BadBody { seq, reason: format!("{reason} (while extending the Merkle tree)") })
    };
    let mut from = size(conn)?;
    if from > to {
        conn.execute("DELETE FROM merkle_hashes WHERE idx >= ?1", [i(tlog::stored_hash_count(to))])
            .map_err(LogError::sqlite("cutting the Merkle tree back to the log"))?;
        from = to;
    }
    let reader = SqlHashes(conn);
    let mut insert = conn
        .prepare_cached("INSERT OR REPLACE INTO merkle_hashes (idx, hash) VALUES (?1, ?2)")
        .map_err(LogError::sqlite("preparing a Merkle tree insert"))?;
    let mut rows = conn
        .prepare_cached("SELECT seq, prev_hash, hash, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")
        .map_err(LogError::sqlite("reading events for the Merkle tree"))?;
    let mut prev = if from == 0 {
        confstore_core::genesis_hash(store_id)
    } else {
        let h: Option<Vec<u8>> = conn
            .prepare_cached("SELECT hash FROM events WHERE seq = ?1")
            .and_then(|mut st| st.query_row([i(from)], |r| r.get(0)).optional())
            .map_err(LogError::sqlite("reading an event hash"))?;
        Hash32(
            h.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()).ok_or_else(|| bad(from, "the event is missing"))?,
        )
    };
    let mut next = from + 1;
    let mut q = rows.query([i(from), i(to)]).map_err(LogError::sqlite("reading events for the Merkle tree"))?;
    while let Some(row) = q.next().map_err(LogError::sqlite("reading events for the Merkle tree"))? {
        let seq = u(row.get(0).map_err(LogError::sqlite("reading an event"))?);
        let blob = |k: usize| -> Result<Hash32, LogError> {
            let v: Vec<u8> = row.get(k).map_err(LogError::sqlite("reading an event"))?;
            <[u8; 32]>::try_from(v.as_slice()).map(Hash32).map_err(|_| bad(seq, "a hash is not 32 bytes"))
        };
        let (prev_hash, hash) = (blob(1)?, blob(2)?);
        let body: Vec<u8> = row.get(3).map_err(LogError::sqlite("reading an event"))?;
        if seq != next {
            return Err(bad(next, "the event is missing"));
        }
        if prev_hash != prev || confstore_core::event_hash(seq, &prev_hash, &body) != hash {
            return Err(bad(seq, "the event is not a link of the chain"));
        }
        let leaf = seq - 1;
        let hashes = tlog::stored_hashes_for_leaf(leaf, tlog::leaf_hash(&hash), &reader)
            .map_err(|e| LogError::Schema(format!("the Merkle tree lacks a hash needed for event {seq}: {e}")))?;
        // The first is the leaf itself, which is read from `events`, not stored.
        let first = tlog::stored_hash_index(0, leaf);
        for (k, h) in (first..).zip(&hashes).skip(1) {
            insert.execute(params![i(k), h.0.as_slice()]).map_err(LogError::sqlite("inserting a Merkle tree hash"))?;
        }
        prev = hash;
        next += 1;
    }
    if next <= to {
        return Err(bad(next, "the event is missing"));
    }
    if let Some(anchor) = anchor
        && to > 0
        && *anchor != prev
    {
        return Err(bad(to, "the event is not the one the writer verified"));
    }
    conn.execute("INSERT OR REPLACE INTO merkle_tree (id, size) VALUES (1, ?1)", [i(to)])
        .map_err(LogError::sqlite("recording the Merkle tree's size"))?;
    Ok(to)
}

fn tree_error(what: &str) -> impl Fn(TlogError) -> LogError + '_ {
    move |e| LogError::Schema(format!("cannot compute {what} from the stored Merkle tree: {e}"))
}

/// Checks that the stored tree covers `size` events.
fn covered(conn: &Connection, size: u64) -> Result<(), LogError> {
    let have = self::size(conn)?;
    if size > have {
        return Err(LogError::OutOfRange(format!("the log's Merkle tree covers {have} events, not {size}")));
    }
    Ok(())
}

/// The root of the tree of the first `size` events.
///
/// # Errors
///
/// [`LogError::OutOfRange`] past the stored tree; SQLite errors; damaged rows.
pub fn root(conn: &Connection, size: u64) -> Result<[u8; 32], LogError> {
    covered(conn, size)?;
    tlog::tree_root(size, &SqlHashes(conn)).map(|h| h.0).map_err(tree_error("a root"))
}

/// The audit path of event `seq` in the tree of `size` events (RFC 6962 §2.1.1).
///
/// # Errors
///
/// [`LogError::OutOfRange`] unless `1 ≤ seq ≤ size ≤` the stored size; SQLite errors.
pub fn inclusion_proof(conn: &Connection, seq: u64, size: u64) -> Result<Vec<[u8; 32]>, LogError> {
    if seq == 0 || seq > size {
        return Err(LogError::OutOfRange(format!("event {seq} is not in a tree of {size} events")));
    }
    covered(conn, size)?;
    tlog::prove_inclusion(size, seq - 1, &SqlHashes(conn))
        .map(|p| p.into_iter().map(|h| h.0).collect())
        .map_err(tree_error("an inclusion proof"))
}

/// The consistency proof from the tree of `old` events to the tree of `size` (RFC 6962
/// §2.1.2); empty when `old` is 0 or equals `size`.
///
/// # Errors
///
/// [`LogError::OutOfRange`] unless `old ≤ size ≤` the stored size; SQLite errors.
pub fn consistency_proof(conn: &Connection, old: u64, size: u64) -> Result<Vec<[u8; 32]>, LogError> {
    if old > size {
        return Err(LogError::OutOfRange(format!("a tree of {old} events is not a prefix of one of {size}")));
    }
    covered(conn, size)?;
    if old == 0 {
        return Ok(Vec::new());
    }
    tlog::prove_consistency(size, old, &SqlHashes(conn))
        .map(|p| p.into_iter().map(|h| h.0).collect())
        .map_err(tree_error("a consistency proof"))
}
