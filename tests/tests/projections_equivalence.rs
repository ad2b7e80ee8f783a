//! docs/testing.md row 9 across everything the log can hold: random histories of sets, unsets,
//! schema changes, secrets, signing-key rotations and rollbacks, appended through the real
//! store. Then (a) the search index folded incrementally after every changeset equals one
//! rebuilt from scratch, and (b) replaying the log to every epoch and projecting each
//! service gives exactly the snapshot recorded when that epoch was current.

use std::collections::BTreeMap;
use std::sync::Arc;

use confstore_core::secret::{self, Plaintext};
use confstore_core::state::{Change, ChangesetDraft};
use confstore_core::timetravel::rollback_changes;
use confstore_core::{SigningKey, State, StoreId};
use confstore_log::{DbOptions, LogReader, Store, Synchronous, SystemClock, Until};
use proptest::prelude::*;
use serde_json::{Value, json};
use zeroize::Zeroizing;

const STORE: StoreId = StoreId([6; 16]);
const SERVICES: [&str; 3] = ["global", "api", "worker"];

#[derive(Clone, Debug)]
enum Op {
    Set(usize, u8, i32),
    Unset(usize, u8),
    Secret(usize, u8, u16),
    Schema(usize, bool),
    Rollback(u8),
    Rotate,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0u8..4, -50i32..50).prop_map(|(s, k, v)| Op::Set(s, k, v)),
        2 => (0..3usize, 0u8..4).prop_map(|(s, k)| Op::Unset(s, k)),
        2 => (0..3usize, 0u8..4, any::<u16>()).prop_map(|(s, k, v)| Op::Secret(s, k, v)),
        1 => (1..3usize, any::<bool>()).prop_map(|(s, d)| Op::Schema(s, d)),
        1 => any::<u8>().prop_map(Op::Rollback),
        1 => Just(Op::Rotate),
    ]
}

fn draft(changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft { actor: "p".into(), reason: String::new(), request_id: "r".into(), expected_epoch: None, changes }
}

fn search_rows(reader: &LogReader) -> Vec<(String, String, String, String, i64)> {
    confstore_search::attach(reader.connection()).expect("attach");
    let mut st = reader
        .connection()
        .prepare("SELECT service, key, value_text, description, epoch FROM search_keys ORDER BY service, key")
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

fn snapshots(state: &State) -> BTreeMap<String, Value> {
    state
        .services
        .keys()
        .map(|s| (s.clone(), confstore_snapshots::project(state, &STORE.to_hex(), 1, s).expect("registered").to_json()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
    ))]

    #[test]
    fn incremental_projections_equal_a_rebuild_and_replays_equal_recorded_snapshots(
        history in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        let opts = DbOptions { synchronous: Synchronous::Normal, ..DbOptions::default() };
        let mut key = SigningKey::from_seed(&[1; 32]);
        let mut store = Store::create(&path, SigningKey::from_seed(&key.seed()), STORE, "p", Arc::new(SystemClock), &opts).expect("create");
        store.append(draft(SERVICES.iter().map(|s| Change::RegisterService { service: (*s).into() }).collect())).expect("register");
        let master = [7u8; 32];
        let mut recorded: BTreeMap<u64, BTreeMap<String, Value>> = BTreeMap::new();
        let mut at_epoch: BTreeMap<u64, State> = BTreeMap::new();
        for (n, o) in history.iter().enumerate() {
            let reader = store.reader().expect("reader");
            let state = reader.current_state().expect("state");
            let change = match o {
                Op::Set(s, k, v) => Some(vec![Change::Set { service: SERVICES[*s].into(), key: format!("k{k}"), value: json!(v) }]),
                Op::Unset(s, k) => state.value(SERVICES[*s], &format!("k{k}"))
                    .map(|_| vec![Change::Unset { service: SERVICES[*s].into(), key: format!("k{k}") }]),
                Op::Secret(s, k, v) => {
                    let plaintext = Plaintext(Zeroizing::new(format!("\"secret-{v}\"")));
                    let nonce = [u8::try_from(n % 256).unwrap_or(0); 12];
                    let envelope = secret::seal(&master, 1, nonce, &STORE, SERVICES[*s], &format!("k{k}"), &plaintext);
                    Some(vec![Change::SetSecret { service: SERVICES[*s].into(), key: format!("k{k}"), plaintext, envelope }])
                }
                Op::Schema(s, described) => Some(vec![Change::SetSchema {
                    service: SERVICES[*s].into(),
                    schema: json!({"additionalProperties": true, "properties": {
                        "k0": {"description": if *described { "the zeroth" } else { "zero" }},
                        "k9": {"default": 9}}}),
                }]),
                Op::Rollback(pick) => {
                    let epochs: Vec<u64> = at_epoch.keys().copied().filter(|e| *e < state.epoch).collect();
                    epochs.get(usize::from(*pick) % epochs.len().max(1)).and_then(|e| {
                        let changes = rollback_changes(&state, &at_epoch[e], *e, None);
                        (!changes.is_empty()).then_some(changes)
                    })
                }
                Op::Rotate => {
                    let next = SigningKey::from_seed(&[u8::try_from(n % 250 + 2).unwrap_or(2); 32]);
                    if next.verifying_key() != key.verifying_key()
                        && store.rotate_signing_key(SigningKey::from_seed(&next.seed()), draft(vec![])).is_ok()
                    {
                        drop(store);
                        key = next;
                        store = Store::open(&path, Some(SigningKey::from_seed(&key.seed())), Arc::new(SystemClock), &opts).expect("reopen");
                    }
                    None
                }
            };
            if let Some(changes) = change {
                // Schema-breaking changes may be refused; that is part of the history.
                let _ = store.append(draft(changes));
            }
            // Fold the search index incrementally, then record what was current.
            let reader = store.reader().expect("reader");
            confstore_search::attach(reader.connection()).expect("attach");
            let tx = reader.connection().unchecked_transaction().expect("tx");
            let from = confstore_search::checkpoint(&tx).expect("checkpoint").map_or(0, |c| c.0);
            let events = reader.verified_after(from).expect("events");
            let state = reader.current_state().expect("state");
            confstore_search::apply(&tx, &events, &state).expect("fold");
            tx.commit().expect("commit");
            recorded.insert(state.epoch, snapshots(&state));
            at_epoch.insert(state.epoch, state);
        }
        let reader = store.reader().expect("reader");
        let incremental = search_rows(&reader);
        confstore_search::attach(reader.connection()).expect("attach");
        let tx = reader.connection().unchecked_transaction().expect("tx");
        confstore_search::clear(&tx).expect("clear");
        let mut all = Vec::new();
        let mut state = State::default();
        reader.replay_with(Until::Head, |ev| { state.apply(ev); all.push(ev.clone()); }).expect("replay");
        confstore_search::apply(&tx, &all, &state).expect("rebuild");
        tx.commit().expect("commit");
        prop_assert_eq!(&search_rows(&reader), &incremental, "incremental index != rebuilt index");
        for (epoch, snaps) in &recorded {
            let replayed = reader.replay(Until::Epoch(*epoch)).expect("replay to epoch");
            prop_assert_eq!(&snapshots(&replayed), snaps, "snapshots at epoch {}", epoch);
        }
        // No secret plaintext reached the index.
        prop_assert!(incremental.iter().all(|(_, _, v, _, _)| !v.contains("secret-")));
        prop_assert!(reader.verify(None, &mut |_| ()).expect("verify").is_ok());
    }
}
