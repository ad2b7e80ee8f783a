//! Failed commits: the changeset is refused with `NotCommitted`, nothing of it is in the
//! log, the writer's in-memory state is reloaded, and later appends continue the chain.

mod common;

use std::time::Duration;

use common::*;
use confstore_log::{DbOptions, LogError, Store, Until};
use serde_json::json;

#[test]
fn a_failing_insert_rolls_back_the_batch_and_the_writer_recovers() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("a"), set("a", "ok", json!(1))])).unwrap();
    let c = rusqlite::Connection::open(&t.path).unwrap();
    c.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.seq = 5
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    // Events 4 and 5: the second insert fails, so neither may remain.
    let err = store.append(draft(vec![set("a", "first", json!(1)), set("a", "boom", json!(2))])).unwrap_err();
    assert!(matches!(err, LogError::NotCommitted(_)), "{err}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    let reader = store.reader().unwrap();
    assert_eq!(reader.head().unwrap().seq, 3, "nothing of the failed changeset is in the log");
    assert_eq!(reader.replay(Until::Head).unwrap().value("a", "first"), None);
    c.execute_batch("DROP TRIGGER boom;").unwrap();
    let next = store.append(draft(vec![set("a", "fine", json!(3))])).unwrap();
    assert_eq!((next.first_seq, next.epoch), (4, 2));
    assert!(reader.verify(None, &mut |_| ()).unwrap().is_ok());
}

#[test]
fn a_held_write_lock_fails_the_append_cleanly_then_appends_resume() {
    let (t, store) = temp_store();
    drop(store);
    let opts = DbOptions { busy_timeout: Duration::from_millis(50), ..DbOptions::default() };
    let store = Store::open(&t.path, Some(key(1)), clock(), &opts).unwrap();
    let mut other = rusqlite::Connection::open(&t.path).unwrap();
    let held = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let err = store.append(draft(vec![register("a")])).unwrap_err();
    assert!(matches!(err, LogError::NotCommitted(_)), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    held.rollback().unwrap();
    let r = store.append(draft(vec![register("a")])).unwrap();
    assert_eq!((r.first_seq, r.epoch), (2, 1));
}
