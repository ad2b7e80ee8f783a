//! Section 4: bytes on disk per event. After `PRAGMA wal_checkpoint(TRUNCATE)`, (database
//! file + WAL) / events, with the space per table from SQLite's `dbstat`, next to two
//! baselines: the bytes each event row carries (body + 136 bytes of hashes, key id and
//! signature) and the same rows copied into a bare SQLite table of the same columns.

use std::path::Path;

use anyhow::{Result, ensure};
use confstore_log::{DbOptions, Store, db};
use rusqlite::Connection;
use serde::Serialize;

use crate::append::{self, GROUP_KEYS_PER_SERVICE, raw_events_ddl};
use crate::workload;

/// Space one schema object (table or index) takes.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectSize {
    /// Table or index name.
    pub name: String,
    /// Bytes in pages.
    pub bytes: u64,
}

/// Section 4 for one log.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    /// Which log.
    pub label: String,
    /// Stable id for machines: `single_event_log` or `verify_log`.
    pub id: &'static str,
    /// Events in it.
    pub events: u64,
    /// Database file bytes after the checkpoint.
    pub db_bytes: u64,
    /// WAL bytes after the checkpoint (0 when truncated).
    pub wal_bytes: u64,
    /// SQLite page size.
    pub page_size: u64,
    /// Pages on the free list.
    pub freelist_pages: u64,
    /// (db + WAL) / events.
    pub bytes_per_event: f64,
    /// Average bytes of the row's fields: body + prev_hash + hash + key_id + sig.
    pub payload_per_event: f64,
    /// Average body length.
    pub body_per_event: f64,
    /// The same event rows in a bare table, file bytes / events.
    pub raw_table_bytes_per_event: f64,
    /// Pages per table and index, largest first.
    pub objects: Vec<ObjectSize>,
}

/// Builds the size log: `events` single-event changesets of small values, appended by
/// `threads` threads (one service each, 64 keys each, so later events overwrite keys as a
/// configuration history does), on synchronous=FULL.
pub fn build_single_event_log(path: &Path, events: usize, threads: usize) -> Result<()> {
    let threads = threads.clamp(1, events.max(1));
    let store = Store::create(
        path,
        workload::signing_key(),
        workload::store_id(0x5e),
        workload::ACTOR,
        workload::clock(),
        &DbOptions::default(),
    )?;
    store.append(workload::register_draft(threads))?;
    let existing = 1 + threads;
    let per_thread = events.saturating_sub(existing) / threads;
    append::append_concurrently(&store, threads, per_thread, 0)?;
    // The remainder, so the log holds exactly `events` events.
    let rest = events.saturating_sub(existing + per_thread * threads);
    for i in 0..rest {
        store.append(workload::set_draft(0, per_thread + i, GROUP_KEYS_PER_SERVICE))?;
    }
    Ok(())
}

/// Measures the log at `path`; `scratch` is where the bare-table copy is made.
pub fn measure(id: &'static str, label: &str, path: &Path, scratch: &Path) -> Result<SizeResult> {
    let conn = Connection::open(path)?;
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    ensure!(busy == 0, "the checkpoint of {} was blocked by another connection", path.display());
    let events = u(conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?);
    ensure!(events > 0, "no events in {}", path.display());
    let body: f64 = conn.query_row("SELECT avg(length(body)) FROM events", [], |r| r.get(0))?;
    let page_size = u(conn.query_row("PRAGMA page_size", [], |r| r.get(0))?);
    let freelist_pages = u(conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?);
    let mut st = conn.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC, 1")?;
    let objects = st
        .query_map([], |r| Ok(ObjectSize { name: r.get(0)?, bytes: u(r.get(1)?) }))?
        .collect::<Result<Vec<_>, _>>()?;
    drop(st);
    let (db_bytes, wal_bytes) = file_sizes(path);
    let raw_bytes = raw_copy(path, scratch)?;
    drop(conn);
    let n = events as f64;
    Ok(SizeResult {
        label: label.to_owned(),
        id,
        events,
        db_bytes,
        wal_bytes,
        page_size,
        freelist_pages,
        bytes_per_event: (db_bytes + wal_bytes) as f64 / n,
        payload_per_event: body + 32.0 + 32.0 + 8.0 + 64.0,
        body_per_event: body,
        raw_table_bytes_per_event: raw_bytes as f64 / n,
        objects,
    })
}

/// A count from SQLite (never negative).
fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn file_sizes(path: &Path) -> (u64, u64) {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (len(path), len(Path::new(&wal)))
}

/// Copies the event rows into a bare table (same pragmas) and returns its checkpointed size.
fn raw_copy(src: &Path, scratch: &Path) -> Result<u64> {
    append::remove_db(scratch);
    let conn = db::open(scratch, &DbOptions::default(), true)?;
    conn.execute_batch(raw_events_ddl())?;
    conn.execute("ATTACH DATABASE ?1 AS src", [src.to_string_lossy()])?;
    conn.execute_batch("INSERT INTO main.events SELECT seq, body, prev_hash, hash, key_id, sig FROM src.events ORDER BY seq; DETACH DATABASE src;")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    let (db, wal) = file_sizes(scratch);
    append::remove_db(scratch);
    Ok(db + wal)
}
