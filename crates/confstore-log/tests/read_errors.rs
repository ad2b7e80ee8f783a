//! Read errors during open and recovery, and a writer whose reads fail after a failed
//! commit (docs/testing.md row 4): the fault VFS (`confstore-faultvfs`, ADR 0023) fails the
//! `n`-th `xRead`, once or from then on.
//!
//! 1. **Opening a crashed store.** The image is the files of a store that was never closed
//!    (`config.db` and a `-wal` holding the newer half of 20 changesets, copied while the
//!    store was open, as a crash leaves them). For each read `n` of a clean open + append:
//!    `Store::open` and an append either succeed or fail with an error, never a panic; then,
//!    with the fault cleared, the store opens, `integrity_check` is ok, the chain verifies,
//!    every changeset of the image is there with its hash, an append that returned `Ok` is
//!    there too, and the store accepts appends.
//! 2. **A writer whose reload fails.** The power is cut before an append's first write, so
//!    the commit fails and so does every read of the reload after it. Once the disk answers
//!    again (the cut "repaired" with nothing lost), the same `Store` accepts appends: the
//!    writer reloads before its next commit instead of refusing every append as if the log
//!    were tampered with.
//!
//! `READ_ERRORS_POINTS_STRIDE` (default 1: every read; the whole file takes about a second).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::*;
use confstore_faultvfs::{self as fault, Damage};
use confstore_log::{DbOptions, Store};
use serde_json::json;

const CHANGESETS: usize = 20;

fn changeset(i: usize) -> Vec<confstore_core::state::Change> {
    let mut changes = vec![register(&format!("s{i}"))];
    for k in 1..8 {
        changes.push(set(&format!("s{i}"), &format!("k{k}"), json!(format!("value {i} {k} {}", "x".repeat(40)))));
    }
    changes
}

/// Copies the store's files (as a crash leaves them) into `to`.
fn copy_image(from: &Path, to: &Path) {
    for suffix in ["", "-wal"] {
        let src = from.with_file_name(format!("config.db{suffix}"));
        if src.exists() {
            std::fs::copy(&src, to.join(format!("config.db{suffix}"))).unwrap();
        }
    }
}

#[test]
fn read_errors_at_open_and_recovery_and_a_writer_whose_reload_fails() {
    fault::install();
    fault::reset();
    let opts = DbOptions::default();
    let stride = std::env::var("READ_ERRORS_POINTS_STRIDE").ok().and_then(|v| v.parse().ok()).unwrap_or(1u64).max(1);

    // The crash image: half the changesets checkpointed into config.db, half only in the WAL.
    let origin = tempfile::tempdir().unwrap();
    let origin_path = origin.path().join("config.db");
    let store = Store::create(&origin_path, key(1), STORE, "test", clock(), &opts).unwrap();
    let mut image_acked = Vec::new();
    for i in 0..CHANGESETS {
        image_acked.push(store.append(draft(changeset(i))).unwrap());
        if i == CHANGESETS / 2 {
            let c = rusqlite::Connection::open(&origin_path).unwrap();
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        }
    }
    let image = tempfile::tempdir().unwrap();
    copy_image(&origin_path, image.path());
    assert!(image.path().join("config.db-wal").exists(), "the image has a WAL to recover");
    drop(store);

    // Reads of a clean open + append of the image.
    let clean = tempfile::tempdir().unwrap();
    copy_image(&image.path().join("config.db"), clean.path());
    fault::arm_read_error(u64::MAX, false);
    let store = Store::open(&clean.path().join("config.db"), Some(key(1)), clock(), &opts).unwrap();
    store.append(draft(vec![register("after")])).unwrap();
    drop(store);
    let total = fault::reads();
    fault::reset();
    assert!(total > 10, "opening and appending read the files ({total} reads)");

    let (mut runs, mut failed, mut panics) = (0u64, 0u64, Vec::new());
    for persistent in [false, true] {
        for n in (1..=total).step_by(usize::try_from(stride).unwrap_or(1)) {
            let what = format!("read {n}/{total} fails, persistent {persistent}");
            let dir = tempfile::tempdir().unwrap();
            copy_image(&image.path().join("config.db"), dir.path());
            let path = dir.path().join("config.db");
            let result = catch_unwind(AssertUnwindSafe(|| {
                fault::arm_read_error(n, persistent);
                let store = Store::open(&path, Some(key(1)), clock(), &opts);
                let appended = store.as_ref().ok().map(|s| s.append(draft(vec![register("during")])));
                drop(store);
                fault::reset();
                appended
            }));
            fault::reset();
            let Ok(appended) = result else {
                panics.push(what);
                continue;
            };
            let mut acked = image_acked.clone();
            match appended {
                Some(Ok(r)) => acked.push(r),
                _ => failed += 1,
            }
            check_acked(&path, &acked, &what);
            let store =
                Store::open(&path, Some(key(1)), clock(), &opts).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert!(store.refusal().is_none(), "{what}: refused: {:?}", store.refusal());
            store.append(draft(vec![register("again")])).unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
            runs += 1;
        }
    }
    eprintln!("{total} reads; {runs} runs, {failed} with an open or append that failed, {} panics", panics.len());
    assert!(panics.is_empty(), "panics: {panics:?}");
    assert!(failed > 0, "the read errors reached the open or the append");

    // A writer whose commit and reload both fail, then the disk answers again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let store = Store::create(&path, key(1), STORE, "test", clock(), &opts).unwrap();
    let mut acked = vec![store.append(draft(changeset(0))).unwrap()];
    // Another connection commits, so the writer's page cache is stale and its reload must
    // read the file.
    let other = Store::open(&path, Some(key(1)), clock(), &opts).unwrap();
    acked.push(other.append(draft(changeset(1))).unwrap());
    drop(other);
    fault::arm_power_loss(0);
    let refused = store.append(draft(changeset(2)));
    assert!(refused.is_err(), "an append with the power cut was acknowledged: {refused:?}");
    assert!(fault::crashed(), "the cut happened");
    // The disk answers again, with everything it was given (nothing synced is lost, and the
    // unsynced writes of the failed commit are kept as they were written).
    fault::apply_power_loss(Damage::KeepAll, 1).unwrap();
    fault::reset();
    let r = store
        .append(draft(changeset(3)))
        .unwrap_or_else(|e| panic!("the same store refuses appends once the disk answers again: {e}"));
    assert_eq!(store.current_refusal(), None);
    acked.push(r);
    drop(store);
    check_acked(&path, &acked, "after the failed reload");
}
