//! The store against a real SQLite file: appends, replay, refusals, triggers, reopen checks.

mod common;

use common::*;
use confstore_core::VerifyError;
use confstore_log::{DbOptions, LogError, LogReader, Refusal, Store, Until};
use serde_json::json;

#[test]
fn append_replay_and_time_travel() {
    let (_t, store) = temp_store();
    let r1 = store.append(draft(vec![register("stt"), set("stt", "timeout_ms", json!(500))])).unwrap();
    assert_eq!((r1.first_seq, r1.last_seq, r1.epoch), (2, 3, 1));
    let r2 = store.append(draft(vec![set("stt", "timeout_ms", json!(750))])).unwrap();
    assert_eq!((r2.first_seq, r2.epoch), (4, 2));
    let r3 = store.append(draft(vec![unset("stt", "timeout_ms")])).unwrap();
    assert_eq!(r3.epoch, 3);
    let reader = store.reader().unwrap();
    assert_eq!(reader.replay(Until::Epoch(1)).unwrap().value("stt", "timeout_ms"), Some("500"));
    assert_eq!(reader.replay(Until::Epoch(2)).unwrap().value("stt", "timeout_ms"), Some("750"));
    assert_eq!(reader.replay(Until::Head).unwrap().value("stt", "timeout_ms"), None);
    assert_eq!(reader.replay(Until::Time(r2.time_ms)).unwrap().value("stt", "timeout_ms"), Some("750"));
    assert!(matches!(reader.replay(Until::Epoch(9)), Err(LogError::OutOfRange(_))));
    assert!(matches!(reader.replay(Until::Time(5)), Err(LogError::OutOfRange(_))));
    let head = reader.head().unwrap();
    // While the store is open the checkpoint lags (it is written every CHECKPOINT_EVENTS
    // events and at close).
    assert_eq!((head.seq, head.epoch, head.verified_seq), (5, 3, 1));
    assert!(reader.verify(None, &mut |_| {}).unwrap().is_ok());
}

#[test]
fn rejected_changesets_append_nothing() {
    let (_t, store) = temp_store();
    let err = store.append(draft(vec![set("nope", "k", json!(1))])).unwrap_err();
    assert!(err.to_string().contains("unknown service"), "{err}");
    store.append(draft(vec![register("a")])).unwrap();
    let mut d = draft(vec![set("a", "k", json!(1))]);
    d.expected_epoch = Some(7);
    assert!(matches!(store.append(d), Err(LogError::Rejected(_))));
    assert_eq!(store.reader().unwrap().head().unwrap().seq, 2);
}

#[test]
fn triggers_refuse_update_and_delete() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("a")])).unwrap();
    let conn = rusqlite::Connection::open(&t.path).unwrap();
    let up = conn.execute("UPDATE events SET body = x'00' WHERE seq = 2", []).unwrap_err();
    assert!(up.to_string().contains("append-only"), "{up}");
    let del = conn.execute("DELETE FROM events WHERE seq = 2", []).unwrap_err();
    assert!(del.to_string().contains("append-only"), "{del}");
}

#[test]
fn reopen_refuses_writes_after_a_forged_tail() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("a"), set("a", "k", json!("v"))])).unwrap();
    drop(store);
    {
        // Someone appends a row by hand, with a key that is not the store's.
        let conn = rusqlite::Connection::open(&t.path).unwrap();
        let forged = confstore_core::state::seal(
            4,
            &confstore_core::Hash32([1; 32]),
            &confstore_core::state::store_created(STORE, &key(9), "x", "y", 0),
            &key(9),
        );
        conn.execute(
            "INSERT INTO events (seq, body, prev_hash, hash, key_id, sig) VALUES (4, ?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![forged.body, forged.prev_hash.0, forged.hash.0, forged.key_id.0, forged.sig.as_slice()],
        )
        .unwrap();
    }
    let store = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    assert!(
        matches!(store.refusal(), Some(Refusal::Tampered(VerifyError::BrokenLink { seq: 4 }))),
        "{:?}",
        store.refusal()
    );
    assert!(store.refusal().unwrap().to_string().contains("event 4"), "{:?}", store.refusal());
    let err = store.append(draft(vec![set("a", "k", json!(2))])).unwrap_err();
    assert!(matches!(err, LogError::Tampered(VerifyError::BrokenLink { seq: 4 })), "{err}");
}

#[test]
fn wrong_signing_key_is_refused_by_name() {
    let (t, store) = temp_store();
    drop(store);
    let store = Store::open(&t.path, Some(key(2)), clock(), &DbOptions::default()).unwrap();
    let err = store.append(draft(vec![register("a")])).unwrap_err();
    assert!(matches!(err, LogError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("CONFIG_SIGNATURE_PRIVATE_KEY"));
    let want =
        Refusal::KeyMismatch { configured: key(2).verifying_key().key_id(), current: key(1).verifying_key().key_id() };
    assert_eq!(store.refusal(), Some(&want), "the open already knows, by variant");
    assert_eq!(want.to_string(), err.to_string(), "a refusal reads as the error of the refused append");
}

#[test]
fn a_store_opened_without_a_key_is_refused_as_read_only() {
    let (t, store) = temp_store();
    drop(store);
    let store = Store::open(&t.path, None, clock(), &DbOptions::default()).unwrap();
    assert_eq!(store.refusal(), Some(&Refusal::ReadOnly));
    assert!(matches!(store.append(draft(vec![register("a")])), Err(LogError::ReadOnly)));
    let reopened = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    assert_eq!(reopened.refusal(), None);
}

#[test]
fn two_stores_on_one_file_interleave_like_two_processes() {
    let (t, a) = temp_store();
    let b = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    a.append(draft(vec![register("x")])).unwrap();
    let rb = b.append(draft(vec![set("x", "k", json!(1))])).unwrap();
    assert_eq!((rb.first_seq, rb.epoch), (3, 2));
    let ra = a.append(draft(vec![set("x", "k", json!(2))])).unwrap();
    assert_eq!((ra.first_seq, ra.epoch), (4, 3));
    let reader = LogReader::open(&t.path).unwrap();
    assert!(reader.verify(None, &mut |_| {}).unwrap().is_ok());
    assert_eq!(reader.replay(Until::Head).unwrap().value("x", "k"), Some("2"));
}

#[test]
fn signing_key_rotation_is_followed_by_verify_and_by_reopen() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("a")])).unwrap();
    let r = store.rotate_signing_key(key(2), draft(vec![])).unwrap();
    assert_eq!((r.last_seq, r.epoch), (3, 1), "rotation does not advance the epoch");
    store.append(draft(vec![set("a", "k", json!(true))])).unwrap();
    drop(store);
    let reader = LogReader::open(&t.path).unwrap();
    let anchor_new = key(2).verifying_key();
    let head = reader.verify(Some(anchor_new), &mut |_| {}).unwrap().unwrap();
    assert_eq!(head.keys.entries().len(), 2);
    let stranger = key(3).verifying_key();
    assert!(matches!(reader.verify(Some(stranger), &mut |_| {}).unwrap(), Err(VerifyError::UntrustedKey { .. })));
    let old = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    assert!(matches!(old.append(draft(vec![register("b")])), Err(LogError::KeyMismatch { .. })));
    drop(old);
    let new = Store::open(&t.path, Some(key(2)), clock(), &DbOptions::default()).unwrap();
    assert_eq!(new.append(draft(vec![register("b")])).unwrap().first_seq, 5);
}

#[test]
fn the_write_model_is_checkpointed_and_a_crash_leaves_a_tail_replayed_at_open() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("a")])).unwrap();
    let n = confstore_log::writer::CHECKPOINT_EVENTS + 10;
    for i in 0..n {
        store.append(draft(vec![set("a", &format!("k{}", i % 7), json!(i))])).unwrap();
    }
    let reader = store.reader().unwrap();
    let (checkpoint, stored) = reader.write_model().unwrap();
    assert!(checkpoint.seq > 2 && checkpoint.seq < 2 + n, "a checkpoint was written mid-run: {}", checkpoint.seq);
    assert_eq!(stored.services, reader.replay(Until::Seq(checkpoint.seq)).unwrap().services);
    let expected = reader.replay(Until::Head).unwrap();
    assert_eq!(reader.current_state().unwrap().services, expected.services);
    // A crash: no Drop, so no checkpoint at close.
    std::mem::forget(store);
    let reopened = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    assert!(reopened.refusal().is_none());
    let r = reopened.append(draft(vec![set("a", "after", json!(true))])).unwrap();
    assert_eq!(r.first_seq, 2 + n + 1);
    drop(reopened);
    let reader = LogReader::open(&t.path).unwrap();
    let (checkpoint, stored) = reader.write_model().unwrap();
    assert_eq!(checkpoint.seq, 2 + n + 1, "closing writes a checkpoint at the head");
    assert_eq!(stored.value("a", "after"), Some("true"));
    assert_eq!(stored.services, reader.replay(Until::Head).unwrap().services);
    assert!(reader.verify(None, &mut |_| ()).unwrap().is_ok());
}

#[test]
fn verified_after_an_anchor_reads_only_newer_events_and_checks_the_anchor() {
    let (_t, store) = temp_store();
    store.append(draft(vec![register("a")])).unwrap();
    let r = store.append(draft(vec![set("a", "k", json!(1))])).unwrap();
    store.append(draft(vec![set("a", "k", json!(2)), set("a", "j", json!(3))])).unwrap();
    let reader = store.reader().unwrap();
    let after = reader.verified_after_anchor(r.last_seq, &r.hash, 0).unwrap();
    assert_eq!(after.iter().map(|v| v.seq()).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(
        after.iter().map(|v| v.seq()).collect::<Vec<_>>(),
        reader.verified_after(3).unwrap().iter().map(|v| v.seq()).collect::<Vec<_>>()
    );
    // An anchor that is not the stored event's hash (a restored or copied file) is refused.
    assert!(matches!(
        reader.verified_after_anchor(r.last_seq, &confstore_core::Hash32([9; 32]), 0),
        Err(LogError::Tampered(_))
    ));
    assert!(matches!(reader.verified_after_anchor(99, &r.hash, 0), Err(LogError::Tampered(_))));
}
