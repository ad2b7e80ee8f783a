//! Concurrency of the append path (docs/testing.md row 20, integration part): 8 writer threads ×
//! 1,000 appends through one group-committing writer give a gap-free log with one epoch per
//! changeset that verifies, and every acknowledged receipt matches its row.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use confstore_log::Until;
use serde_json::json;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn eight_writers_thousand_appends_each() {
    let writers = 8;
    let per_writer = count("GROUP_COMMIT_APPENDS", 1000);
    let (t, store) = temp_store();
    let services: Vec<_> = (0..writers).map(|w| register(&format!("svc{w}"))).collect();
    store.append(draft(services)).unwrap();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..per_writer)
                    .map(|i| store.append(draft(vec![set(&format!("svc{w}"), "n", json!(i))])).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let receipts: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let total = writers * per_writer;
    assert_eq!(receipts.len(), total);
    // Seq 1 is store_created, seq 2..=9 the registrations (epoch 1); then one event and one
    // epoch per append, no gap, no duplicate.
    let seqs: BTreeSet<u64> = receipts.iter().map(|r| r.first_seq).collect();
    let epochs: BTreeSet<u64> = receipts.iter().map(|r| r.epoch).collect();
    let first = 2 + writers as u64;
    assert_eq!(seqs, (first..first + total as u64).collect());
    assert_eq!(epochs, (2..2 + total as u64).collect());
    assert!(receipts.iter().all(|r| r.first_seq == r.last_seq && r.epoch == r.first_seq - writers as u64));
    let reader = confstore_log::LogReader::open(&t.path).unwrap();
    let head = reader.verify(None, &mut |_| {}).unwrap().unwrap();
    assert_eq!(head.seq, first + total as u64 - 1);
    let state = reader.replay(Until::Head).unwrap();
    for w in 0..writers {
        assert_eq!(state.value(&format!("svc{w}"), "n"), Some(per_writer.saturating_sub(1).to_string().as_str()));
    }
    // Each receipt's hash is the stored hash of its event.
    let mut stored = std::collections::BTreeMap::new();
    reader
        .for_each_event(1, |ev| {
            stored.insert(ev.seq, ev.hash);
            Ok(true)
        })
        .unwrap();
    assert!(receipts.iter().all(|r| stored.get(&r.last_seq) == Some(&r.hash)));
}

/// The writer takes the database's write gate (src/gate.rs) around its transaction: while
/// another holder of the gate (the search index's catch-up, in the server) has it, an
/// append waits, and it commits once the gate is free.
#[test]
fn an_append_waits_for_the_write_gate_and_commits_once_it_is_free() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("svc")])).unwrap();
    let store = Arc::new(store);
    let reader = confstore_log::LogReader::open(&t.path).unwrap();
    let held = reader.write_gate().hold();
    let (tx, rx) = std::sync::mpsc::channel();
    let appender = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let _ = tx.send(store.append(draft(vec![set("svc", "k", json!(1))])));
        })
    };
    // A negative observation (nothing may arrive while the gate is held), not a wait for
    // something to happen: a slow machine can only make it pass for the wrong reason, and
    // the wiring is also exercised by the search catch-up's test.
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
        "the append committed while the gate was held"
    );
    drop(held);
    let receipt = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the append's answer").unwrap();
    appender.join().unwrap();
    assert_eq!(reader.head().unwrap().seq, receipt.last_seq);
}

/// `Store::append_all` (what the server's append thread submits for its callers): one
/// result per draft, in order; a refused changeset (a stale expected epoch) refuses only
/// itself; the others commit in the order given, alongside appends from other threads.
#[test]
fn appends_gathered_for_several_callers_commit_in_order_and_a_refusal_is_their_own() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("svc")])).unwrap();
    let mut stale = draft(vec![set("svc", "k", json!("refused"))]);
    stale.expected_epoch = Some(0);
    let drafts = vec![draft(vec![set("svc", "k", json!(1))]), stale, draft(vec![set("svc", "k", json!(2))])];
    let results = store.append_all(drafts);
    assert_eq!(results.len(), 3);
    let (first, second) = (results[0].as_ref().unwrap(), results[2].as_ref().unwrap());
    assert!(matches!(results[1], Err(confstore_log::LogError::Rejected(_))), "{:?}", results[1]);
    assert_eq!((first.epoch, second.epoch), (2, 3), "committed in the order given");
    // Many at once, beside a thread appending alone: every one committed, once.
    let store = Arc::new(store);
    let alone = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            (0..50).map(|i| store.append(draft(vec![set("svc", "a", json!(i))])).unwrap().epoch).collect::<Vec<_>>()
        })
    };
    let gathered: Vec<u64> = store
        .append_all((0..300).map(|i| draft(vec![set("svc", "g", json!(i))])).collect())
        .into_iter()
        .map(|r| r.unwrap().epoch)
        .collect();
    let alone = alone.join().unwrap();
    assert!(gathered.windows(2).all(|w| w[0] < w[1]) && alone.windows(2).all(|w| w[0] < w[1]));
    let all: BTreeSet<u64> = gathered.iter().chain(&alone).copied().collect();
    assert_eq!(all, (4..4 + 350).collect(), "no epoch twice, none missing");
    let state = confstore_log::LogReader::open(&t.path).unwrap().replay(Until::Head).unwrap();
    assert_eq!((state.value("svc", "g"), state.value("svc", "k")), (Some("299"), Some("2")));
}
