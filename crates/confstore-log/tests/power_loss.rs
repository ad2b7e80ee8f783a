//! Power loss at every I/O operation (docs/testing.md row 3): a 20-changeset workload runs
//! on the fault VFS (`confstore-faultvfs`, ADR 0023), the power is cut after operation `n`,
//! the unsynced writes are dropped, kept, torn or zeroed (5 variants), and the database is
//! reopened normally. Every database must open, pass `integrity_check`, verify, hold a
//! prefix of the attempted log, and (with `synchronous=FULL`) every acknowledged changeset.
//!
//! `POWER_LOSS_VARIANTS` (1..=5, default 5), `POWER_LOSS_POINTS_STRIDE` (default 13: every
//! 13th crash point, about 25 s in a debug build; 1 = every point, the long mode).

mod common;

use std::path::Path;

use common::*;
use confstore_faultvfs::{self as fault, Damage};
use confstore_log::{DbOptions, LogReader, Receipt, Store, Synchronous};
use serde_json::json;

const CHANGESETS: usize = 20;
/// 20 × 14 = 280 events: the write-model checkpoint (every 256 events) is crossed.
const CHANGES_PER_SET: usize = 14;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs the workload until the first failure; returns the acknowledged receipts.
fn workload(path: &Path, opts: &DbOptions) -> Vec<Receipt> {
    let mut acked = Vec::new();
    let Ok(store) = Store::open(path, Some(key(1)), clock(), opts) else { return acked };
    for i in 0..CHANGESETS {
        let mut changes = vec![register(&format!("s{i}"))];
        for k in 1..CHANGES_PER_SET {
            changes.push(set(&format!("s{i}"), &format!("k{k}"), json!(format!("value {i} {k} {}", "x".repeat(40)))));
        }
        match store.append(draft(changes)) {
            Ok(r) => acked.push(r),
            Err(_) => break,
        }
        if i == CHANGESETS / 2 {
            // A WAL checkpoint by a second connection (as Litestream or the CLI would).
            if let Ok(c) = rusqlite::Connection::open(path) {
                let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
        }
    }
    drop(store);
    acked
}

fn fresh(dir: &Path, opts: &DbOptions) -> std::path::PathBuf {
    let path = dir.join("config.db");
    Store::create(&path, key(1), STORE, "test", clock(), opts).expect("create");
    path
}

/// Reopens normally and checks the bars; returns the recovered head seq.
fn check(path: &Path, opts: &DbOptions, clean: &[Receipt], acked: &[Receipt], what: &str) -> u64 {
    let store = Store::open(path, Some(key(1)), clock(), opts).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    assert!(store.refusal().is_none(), "{what}: refused: {:?}", store.refusal());
    let reader = LogReader::open(path).unwrap_or_else(|e| panic!("{what}: reader: {e}"));
    let ok: String = reader.connection().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok", "{what}: integrity_check");
    let verified = reader.verify(None, &mut |_| ()).unwrap_or_else(|e| panic!("{what}: verify read: {e}"));
    assert!(verified.is_ok(), "{what}: the chain does not verify: {verified:?}");
    let head = reader.head().unwrap();
    // A prefix of the attempted log: the head is a changeset boundary of the clean run with
    // the same hash (the chain then fixes every earlier event).
    if head.seq > 1 {
        let r = clean
            .iter()
            .find(|r| r.last_seq == head.seq)
            .unwrap_or_else(|| panic!("{what}: head {} is not a changeset boundary of the attempted log", head.seq));
        assert_eq!(r.hash, head.hash, "{what}: head {} differs from the attempted log", head.seq);
    }
    if opts.synchronous == Synchronous::Full
        && let Some(last) = acked.last()
    {
        assert!(head.seq >= last.last_seq, "{what}: acknowledged seq {} lost (head {})", last.last_seq, head.seq);
    }
    // The store accepts new appends.
    store.append(draft(vec![register("after")])).unwrap_or_else(|e| panic!("{what}: append after: {e}"));
    head.seq
}

fn run(sync: Synchronous) {
    fault::install();
    let opts = DbOptions { synchronous: sync, ..DbOptions::default() };
    let variants = usize::try_from(env("POWER_LOSS_VARIANTS", 5)).unwrap_or(5).clamp(1, 5);
    let stride = env("POWER_LOSS_POINTS_STRIDE", 13).max(1);
    // Clean run: the receipts and the number of operations.
    let dir = tempfile::tempdir().unwrap();
    let path = fresh(dir.path(), &opts);
    fault::start_counting();
    let clean = workload(&path, &opts);
    let total = fault::ops();
    assert_eq!(clean.len(), CHANGESETS);
    assert!(clean.last().unwrap().last_seq > 256, "the write-model checkpoint is crossed");
    fault::reset();
    let (mut runs, mut lost_tail) = (0u64, 0u64);
    for n in (0..total).step_by(usize::try_from(stride).unwrap_or(1)) {
        for (v, damage) in Damage::ALL.iter().take(variants).enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let path = fresh(dir.path(), &opts);
            fault::arm_power_loss(n);
            let acked = workload(&path, &opts);
            let seed = n * 8 + v as u64;
            fault::apply_power_loss(*damage, seed).unwrap();
            fault::reset();
            let what = format!("{sync:?} crash after op {n}/{total}, {damage:?}, seed {seed}");
            let seq = check(&path, &opts, &clean, &acked, &what);
            if seq < acked.last().map_or(1, |r| r.last_seq) {
                lost_tail += 1;
            }
            runs += 1;
        }
    }
    eprintln!("{sync:?}: {total} operations, {runs} crash runs, {lost_tail} lost an acknowledged tail");
    if sync == Synchronous::Full {
        assert_eq!(lost_tail, 0);
    }
}

/// One test for both modes: the fault VFS's state is global to the process.
#[test]
fn power_loss_at_every_operation() {
    run(Synchronous::Full);
    run(Synchronous::Normal);
}
