//! The Merkle tree over the log, stored in `merkle_hashes` (migration 0009; docs/format.md §19;
//! ADR 0027).
//!
//! Rows hold Go `sumdb/tlog`'s stored hashes: appending event `seq` (leaf `seq - 1`) writes its
//! leaf hash and the roots of the subtrees it completes, about two rows, reading one earlier
//! hash on average ([`append`]). The writer does it in the event's own transaction, so the tree
//! covers exactly the committed events. Roots and proofs of any size up to the tree's read at
//! most `2·log₂ n` rows by primary key ([`root`], [`inclusion_proof`], [`consistency_proof`]).
//!
//! A database from before the tree (or one whose tree a tool truncated) gets it built from its
//! events by [`build`], which the writer runs at open and before a commit whenever the tree is
//! behind the events.

use confstore_core::Hash32;
use confstore_core::tlog::{self, HashReader, TlogError, TreeHash};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::LogError;
use crate::rows::{i, u};

/// Events read per query while [`build`] catches the tree up with the log.
const BUILD_CHUNK_EVENTS: u64 = 4096;

/// Reads stored hashes through `conn` (inside whatever transaction it is in).
pub struct SqlHashes<'c>(pub &'c Connection);

impl HashReader for SqlHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, TlogError> {
        let mut st = self
            .0
            .prepare_cached("SELECT hash FROM merkle_hashes WHERE idx = ?1")
            .map_err(|_| TlogError::IndexesNotInTree)?;
        indexes
            .iter()
            .map(|&idx| {
                let blob: Option<Vec<u8>> =
                    st.query_row([i(idx)], |r| r.get(0)).optional().map_err(|_| TlogError::IndexesNotInTree)?;
                blob.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .map(TreeHash)
                    .ok_or(TlogError::IndexesNotInTree)
            })
            .collect()
    }
}

/// The number of leaves (events) the stored tree covers.
///
/// # Errors
///
/// SQLite errors; [`LogError::Schema`] if the rows are not the stored hashes of a whole
/// number of leaves (a tree edited by hand).
pub fn size(conn: &Connection) -> Result<u64, LogError> {
    let max: Option<i64> = conn
        .query_row("SELECT MAX(idx) FROM merkle_hashes", [], |r| r.get(0))
        .map_err(LogError::sqlite("reading the Merkle tree's size"))?;
    let Some(max) = max else { return Ok(0) };
    let count = u(max) + 1;
    // stored_hash_count is strictly increasing: the size is the n whose count is `count`.
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if tlog::stored_hash_count(mid) < count {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if tlog::stored_hash_count(lo) == count {
        Ok(lo)
    } else {
        Err(LogError::Schema(format!(
            "the Merkle tree's {count} stored hashes are not those of a whole number of events; \
             delete its rows (`DELETE FROM merkle_hashes`) and open the store for writing to rebuild it"
        )))
    }
}

/// Appends the leaf of event `seq` (its hash `event_hash`) to a tree of `seq - 1` leaves.
///
/// # Errors
///
/// SQLite errors; a missing earlier hash ([`LogError::Schema`]).
pub fn append(conn: &Connection, seq: u64, event_hash: &Hash32) -> Result<(), LogError> {
    let leaf = seq - 1;
    let hashes = tlog::stored_hashes_for_leaf(leaf, tlog::leaf_hash(event_hash), &SqlHashes(conn))
        .map_err(|e| LogError::Schema(format!("the Merkle tree lacks a hash needed for event {seq}: {e}")))?;
    let mut st = conn
        .prepare_cached("INSERT INTO merkle_hashes (idx, hash) VALUES (?1, ?2)")
        .map_err(LogError::sqlite("preparing a Merkle tree insert"))?;
    let first = tlog::stored_hash_index(0, leaf);
    for (k, h) in (first..).zip(&hashes) {
        st.execute(params![i(k), h.0.as_slice()]).map_err(LogError::sqlite("inserting a Merkle tree hash"))?;
    }
    Ok(())
}

/// Extends the tree from `from` leaves to `to` with the hashes of events `from + 1..=to`
/// read from `events` (the caller's transaction). Returns `to`.
///
/// # Errors
///
/// SQLite errors; an event missing from the table ([`LogError::Schema`]).
pub fn build(conn: &Connection, from: u64, to: u64) -> Result<u64, LogError> {
    let mut next = from + 1;
    let mut st = conn
        .prepare_cached("SELECT seq, hash FROM events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq")
        .map_err(LogError::sqlite("reading event hashes for the Merkle tree"))?;
    while next <= to {
        let end = to.min(next + BUILD_CHUNK_EVENTS - 1);
        let rows: Vec<(u64, Vec<u8>)> = st
            .query_map([i(next), i(end)], |r| Ok((u(r.get(0)?), r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(LogError::sqlite("reading event hashes for the Merkle tree"))?;
        for (seq, hash) in rows {
            let hash = <[u8; 32]>::try_from(hash.as_slice())
                .map(Hash32)
                .map_err(|_| LogError::Schema(format!("event {seq}'s hash is not 32 bytes; run `confstore verify`")))?;
            if seq != next {
                return Err(LogError::Schema(format!(
                    "event {next} is missing while building the Merkle tree; run `confstore verify`"
                )));
            }
            append(conn, seq, &hash)?;
            next += 1;
        }
        if next <= end {
            return Err(LogError::Schema(format!(
                "event {next} is missing while building the Merkle tree; run `confstore verify`"
            )));
        }
    }
    Ok(to)
}

fn tree_error(what: &str) -> impl Fn(TlogError) -> LogError + '_ {
    move |e| LogError::Schema(format!("cannot compute {what} from the stored Merkle tree: {e}"))
}

/// Checks that the stored tree covers `size` leaves (`size` ≥ 1 where a proof needs it).
fn covered(conn: &Connection, size: u64) -> Result<(), LogError> {
    let have = self::size(conn)?;
    if size > have {
        return Err(LogError::OutOfRange(format!("the log's Merkle tree has {have} events, not {size}")));
    }
    Ok(())
}

/// The root of the tree of the first `size` events.
///
/// # Errors
///
/// [`LogError::OutOfRange`] past the tree; SQLite errors; damaged rows.
pub fn root(conn: &Connection, size: u64) -> Result<[u8; 32], LogError> {
    covered(conn, size)?;
    tlog::tree_root(size, &SqlHashes(conn)).map(|h| h.0).map_err(tree_error("a root"))
}

/// The audit path of event `seq` in the tree of `size` events (RFC 6962 §2.1.1).
///
/// # Errors
///
/// [`LogError::OutOfRange`] unless `1 ≤ seq ≤ size ≤` the tree's size; SQLite errors.
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
/// [`LogError::OutOfRange`] unless `old ≤ size ≤` the tree's size; SQLite errors.
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
