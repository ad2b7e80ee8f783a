//! I/O errors at every operation (docs/testing.md row 4): the fault VFS
//! (`confstore-faultvfs`, ADR 0023) fails operation `n` of a 20-changeset workload with
//! `SQLITE_IOERR_WRITE`, `SQLITE_IOERR_FSYNC` or `SQLITE_FULL`, once or from then on. Bars:
//! 0 panics; an append that returned `Ok` is durable (present after the fault clears and the
//! store is reopened, with the same hash); the chain verifies; the store, the same one and a
//! reopened one, accepts appends once the fault clears.
//!
//! `IO_ERRORS_POINTS_STRIDE` (default 17: every 17th operation; 1 = every one, the long mode).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::*;
use confstore_faultvfs::{self as fault, Fault};
use confstore_log::{DbOptions, Receipt, Store};
use serde_json::json;

const CHANGESETS: usize = 20;
const CHANGES_PER_SET: usize = 14;

fn changeset(i: usize) -> Vec<confstore_core::state::Change> {
    let mut changes = vec![register(&format!("s{i}"))];
    for k in 1..CHANGES_PER_SET {
        changes.push(set(&format!("s{i}"), &format!("k{k}"), json!(format!("value {i} {k} {}", "x".repeat(40)))));
    }
    changes
}

/// Appends every changeset (continuing after failures); returns the acknowledged receipts
/// and the number of failed appends.
fn workload(store: &Store, path: &Path) -> (Vec<Receipt>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    for i in 0..CHANGESETS {
        match store.append(draft(changeset(i))) {
            Ok(r) => acked.push(r),
            Err(_) => failed += 1,
        }
        if i == CHANGESETS / 2
            && let Ok(c) = rusqlite::Connection::open(path)
        {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
    (acked, failed)
}

#[test]
fn io_errors_at_every_operation_once_and_persistent() {
    fault::install();
    let opts = DbOptions::default();
    let stride = std::env::var("IO_ERRORS_POINTS_STRIDE").ok().and_then(|v| v.parse().ok()).unwrap_or(17usize).max(1);
    // Clean run: count the operations.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    drop(Store::create(&path, key(1), STORE, "test", clock(), &opts).unwrap());
    fault::start_counting();
    let store = Store::open(&path, Some(key(1)), clock(), &opts).unwrap();
    let (clean, _) = workload(&store, &path);
    drop(store);
    let total = fault::ops();
    assert_eq!(clean.len(), CHANGESETS);
    fault::reset();
    let (mut runs, mut failed_appends, mut panics) = (0u64, 0usize, Vec::new());
    for persistent in [false, true] {
        for f in Fault::ALL {
            for n in (1..=total).step_by(stride) {
                let what = format!("{f:?} at op {n}/{total}, persistent {persistent}");
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("config.db");
                drop(Store::create(&path, key(1), STORE, "test", clock(), &opts).unwrap());
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let store = Store::open(&path, Some(key(1)), clock(), &opts).ok();
                    fault::arm_error(n, f, persistent);
                    let out = store.as_ref().map(|s| workload(s, &path));
                    fault::reset();
                    // The fault cleared: the same store accepts an append again.
                    let again = store.as_ref().map(|s| s.append(draft(vec![register("again")])));
                    (out, again)
                }));
                fault::reset();
                let Ok((out, again)) = result else {
                    panics.push(what);
                    continue;
                };
                let (mut acked, failed) = out.unwrap_or_default();
                failed_appends += failed;
                match again {
                    Some(Ok(r)) => acked.push(r),
                    Some(Err(e)) => panic!("{what}: the store refuses appends after the fault cleared: {e}"),
                    None => {}
                }
                check_acked(&path, &acked, &what);
                let store =
                    Store::open(&path, Some(key(1)), clock(), &opts).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                assert!(store.refusal().is_none(), "{what}: refused: {:?}", store.refusal());
                store
                    .append(draft(vec![register("after")]))
                    .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
                runs += 1;
            }
        }
    }
    eprintln!("{total} operations, {runs} runs, {failed_appends} appends failed, {} panics", panics.len());
    assert!(panics.is_empty(), "panics: {panics:?}");
    assert!(failed_appends > 0, "the faults reached the appends");
}
