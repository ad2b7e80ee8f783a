//! Generations (ADR 0017): `Store::start_generation` appends one signed event that raises the
//! generation by one; the generation survives reopening (before and after a checkpoint),
//! readers see it at once, verification checks the numbering, and the write model equals a
//! replay.

mod common;

use common::*;
use confstore_core::state::ChangesetDraft;
use confstore_core::{Hash32, VerifyError};
use confstore_log::{DbOptions, LogError, LogReader, Refusal, Store, Until};
use serde_json::json;

fn generation_draft(reason: &str) -> ChangesetDraft {
    ChangesetDraft { reason: reason.into(), ..draft(Vec::new()) }
}

#[test]
fn a_new_generation_keeps_the_epoch_and_survives_reopening() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("web"), set("web", "port", json!(80))])).unwrap();
    assert_eq!(store.generation(), 1);
    let before = LogReader::open(&t.path).unwrap().head().unwrap();
    let r = store.start_generation(40, Hash32([7; 32]), generation_draft("restored from backup")).unwrap();
    assert_eq!((r.first_seq, r.last_seq, r.epoch), (4, 4, before.epoch), "one event, same epoch");
    assert_eq!(store.generation(), 2);
    // A reader sees the new generation at once (the store row is updated with the event).
    let reader = LogReader::open(&t.path).unwrap();
    assert_eq!(reader.head().unwrap().generation, 2);
    let verified = reader.verify(None, &mut |_| {}).unwrap().expect("the log verifies");
    assert_eq!((verified.seq, verified.generation), (4, 2));
    // Writes go on in the new generation.
    store.append(draft(vec![set("web", "port", json!(81))])).unwrap();
    drop(store);
    for _ in 0..2 {
        let store = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
        assert!(store.refusal().is_none(), "{:?}", store.refusal());
        assert_eq!(store.generation(), 2);
        drop(store);
        let reader = LogReader::open(&t.path).unwrap();
        let (head, model) = reader.write_model().unwrap();
        assert_eq!(head.generation, 2);
        assert_eq!(model, reader.replay(Until::Head).unwrap(), "write model equals a replay");
        assert_eq!(model.generation, 2);
    }
}

#[test]
fn the_replay_before_the_event_is_still_generation_one() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("web")])).unwrap();
    store.start_generation(9, Hash32([1; 32]), generation_draft("rewound")).unwrap();
    store.start_generation(12, Hash32([2; 32]), generation_draft("rewound again")).unwrap();
    assert_eq!(store.generation(), 3);
    drop(store);
    let reader = LogReader::open(&t.path).unwrap();
    assert_eq!(reader.replay(Until::Seq(2)).unwrap().generation, 1);
    assert_eq!(reader.replay(Until::Seq(3)).unwrap().generation, 2);
    assert_eq!(reader.replay(Until::Head).unwrap().generation, 3);
    // A prefix copy (`confstore replay`) is of the generation at its end.
    for (until, want) in [(2, 1), (3, 2), (4, 3)] {
        let out = t.dir.path().join(format!("prefix-{until}.db"));
        confstore_log::write_prefix(&reader, Until::Seq(until), &out, &DbOptions::default(), 1).unwrap();
        assert_eq!(LogReader::open(&out).unwrap().head().unwrap().generation, want, "prefix to seq {until}");
    }
    // Verifying from a projection's anchor in the middle knows the generation there.
    let anchor = reader.verified_after(0).unwrap()[1].hash().to_owned();
    let after = reader.verified_after_anchor(2, &anchor, 0).unwrap();
    assert_eq!(after.len(), 2);
}

#[test]
fn a_generation_needs_a_reason_and_an_abandoned_event() {
    let (_t, store) = temp_store();
    for (seq, reason) in [(0, "why"), (5, ""), (5, "   ")] {
        let err = store.start_generation(seq, Hash32([1; 32]), generation_draft(reason)).unwrap_err();
        assert!(matches!(err, LogError::Rejected(_)), "{err}");
    }
    assert_eq!(store.generation(), 1, "nothing was appended");
    let bad = ChangesetDraft { changes: vec![register("x")], ..generation_draft("with changes") };
    assert!(store.start_generation(5, Hash32([1; 32]), bad).is_err());
}

#[test]
fn a_forged_generation_number_is_caught_by_verification() {
    use confstore_core::state::seal;
    use confstore_core::{EventBody, EventKind};
    let (t, store) = temp_store();
    store.append(draft(vec![register("web")])).unwrap();
    drop(store);
    // Append, with the real key, a generation_started that skips generation 2.
    let c = rusqlite::Connection::open(&t.path).unwrap();
    let prev: Vec<u8> = c.query_row("SELECT hash FROM events ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).unwrap();
    let body = EventBody {
        epoch: 1,
        time_ms: 1_800_000_000_000,
        changeset_index: 0,
        changeset_len: 1,
        actor: "mallory".into(),
        reason: "skip".into(),
        request_id: "r".into(),
        kind: EventKind::GenerationStarted { generation: 5, abandoned_seq: 9, abandoned_hash: [0; 32] },
    };
    let ev = seal(3, &Hash32(prev.try_into().unwrap()), &body, &key(1));
    c.execute(
        "INSERT INTO events (seq, body, prev_hash, hash, key_id, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![
            3,
            ev.body,
            ev.prev_hash.0.as_slice(),
            ev.hash.0.as_slice(),
            ev.key_id.0.as_slice(),
            ev.sig.as_slice()
        ],
    )
    .unwrap();
    drop(c);
    let reader = LogReader::open(&t.path).unwrap();
    match reader.verify(None, &mut |_| {}).unwrap() {
        Err(VerifyError::Structure { seq: 3, reason }) => assert!(reason.contains("generation 5"), "{reason}"),
        other => panic!("expected a structure error at seq 3, got {other:?}"),
    }
    let store = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    assert!(
        matches!(store.refusal(), Some(Refusal::Tampered(VerifyError::Structure { seq: 3, reason })) if reason.contains("generation")),
        "{:?}",
        store.refusal()
    );
}
