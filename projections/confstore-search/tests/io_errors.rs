//! I/O errors while the search index is rebuilt (docs/testing.md row 4): the fault VFS
//! (`confstore-faultvfs`, ADR 0023) fails operation `n` of a rebuild of a 400-event log (in
//! several bounded transactions) with `SQLITE_IOERR_WRITE`, `SQLITE_IOERR_FSYNC` or
//! `SQLITE_FULL`, once or from then on. Bars: 0 panics; the catch-up returns its answer or
//! an error; once the fault clears, a catch-up succeeds and the index answers every query
//! exactly as an index rebuilt without faults; the log itself is untouched (it verifies).
//!
//! `SEARCH_IO_ERRORS_POINTS_STRIDE` (default 17, about 60 runs; 1 = every operation, the long mode).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use confstore_core::state::{Change, ChangesetDraft};
use confstore_core::{SigningKey, StoreId};
use confstore_faultvfs::{self as fault, Fault};
use confstore_log::{DbOptions, LogReader, Store, SystemClock};
use serde_json::json;

const QUERIES: [&str; 5] = ["alpha", "svc1", "key7", "bravo-3", "zz"];

/// What the index answers to every query.
fn answers(path: &Path) -> Vec<Vec<(String, String, String, u64)>> {
    let reader = LogReader::open(path).unwrap();
    QUERIES
        .iter()
        .map(|q| {
            confstore_search::search(reader.connection(), q, None, None, 1000)
                .unwrap()
                .into_iter()
                .map(|h| (h.service, h.key, h.value_text, h.epoch))
                .collect()
        })
        .collect()
}

/// Makes the index's checkpoint name an event this log does not have, so the next catch-up
/// rebuilds it (as after a restore).
fn force_rebuild(path: &Path) {
    rusqlite::Connection::open(confstore_search::path_for(path))
        .unwrap()
        .execute("UPDATE search_checkpoint SET hash = zeroblob(32)", [])
        .unwrap();
}

/// Copies the log's database and the index's (its own file beside it, ADR 0037).
fn copy_db(from: &Path, to: &Path) {
    for (from, to) in
        [(from.to_owned(), to.to_owned()), (confstore_search::path_for(from), confstore_search::path_for(to))]
    {
        rusqlite::Connection::open(&from).unwrap().execute("VACUUM INTO ?1", [to.to_str().unwrap()]).unwrap();
    }
}

#[test]
fn io_errors_during_a_rebuild_of_the_index() {
    fault::install();
    fault::reset();
    let stride = std::env::var("SEARCH_IO_ERRORS_POINTS_STRIDE").ok().and_then(|v| v.parse().ok()).unwrap_or(17u64);
    let origin = tempfile::tempdir().unwrap();
    let image = origin.path().join("config.db");
    let store = Store::create(
        &image,
        SigningKey::from_seed(&[5; 32]),
        StoreId([4; 16]),
        "test",
        Arc::new(SystemClock),
        &DbOptions::default(),
    )
    .unwrap();
    let draft = |changes| ChangesetDraft {
        actor: "test".into(),
        reason: "io errors".into(),
        request_id: "r".into(),
        expected_epoch: None,
        changes,
    };
    store.append(draft((0..3).map(|s| Change::RegisterService { service: format!("svc{s}") }).collect())).unwrap();
    let words = ["alpha", "bravo", "charlie"];
    for i in 0..400usize {
        let change = Change::Set {
            service: format!("svc{}", i % 3),
            key: format!("key{}", i % 40),
            value: json!(format!("{}-{i}", words[i % 3])),
        };
        store.append(draft(vec![change])).unwrap();
    }
    drop(store);
    {
        let reader = LogReader::open(&image).unwrap();
        confstore_search::catch_up(&reader, 0).unwrap();
    }
    force_rebuild(&image);
    // The reference: rebuilt without faults; and the operations a rebuild takes.
    let clean = origin.path().join("clean.db");
    copy_db(&image, &clean);
    fault::start_counting();
    let last = confstore_search::catch_up(&LogReader::open(&clean).unwrap(), 0).unwrap();
    let total = fault::ops();
    fault::reset();
    let want = answers(&clean);
    assert!(!want[0].is_empty() && want[4].is_empty(), "the queries find something and not everything");
    assert!(total > 4, "a rebuild writes ({total} operations)");

    let (mut runs, mut errors, mut panics) = (0u64, 0u64, Vec::new());
    for persistent in [false, true] {
        for f in Fault::ALL {
            for n in (1..=total).step_by(usize::try_from(stride.max(1)).unwrap_or(1)) {
                let what = format!("{f:?} at op {n}/{total}, persistent {persistent}");
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("config.db");
                copy_db(&image, &path);
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let reader = LogReader::open(&path).unwrap();
                    fault::arm_error(n, f, persistent);
                    let r = confstore_search::catch_up(&reader, 0);
                    fault::reset();
                    r
                }));
                fault::reset();
                match result {
                    Err(_) => {
                        panics.push(what);
                        continue;
                    }
                    Ok(Err(_)) => errors += 1,
                    Ok(Ok(seq)) => assert_eq!(seq, last, "{what}: caught up to another seq"),
                }
                let reader = LogReader::open(&path).unwrap();
                assert_eq!(
                    confstore_search::catch_up(&reader, 0).unwrap_or_else(|e| panic!("{what}: after the fault: {e}")),
                    last,
                    "{what}"
                );
                let verified = reader.verify(None, &mut |_| ()).unwrap();
                assert!(verified.is_ok(), "{what}: the log does not verify: {verified:?}");
                drop(reader);
                assert_eq!(answers(&path), want, "{what}: the index answers otherwise than a clean rebuild");
                runs += 1;
            }
        }
    }
    eprintln!("{total} operations per rebuild; {runs} runs, {errors} catch-ups that failed, {} panics", panics.len());
    assert!(panics.is_empty(), "panics: {panics:?}");
    assert!(errors > 0, "the faults reached the rebuild");
}
