//! docs/testing.md row 9 for the search index: after random histories (sets, unsets, schema
//! changes), the index folded incrementally equals one rebuilt from scratch, and every
//! query returns exactly what a naive scan of the configuration finds.

use std::collections::BTreeSet;
use std::sync::Arc;

use confstore_core::state::{Change, ChangesetDraft};
use confstore_core::{SigningKey, State, StoreId};
use confstore_log::{DbOptions, LogReader, Store, Synchronous, SystemClock, Until};
use proptest::prelude::*;
use serde_json::json;

const WORDS: [&str; 6] = ["alpha", "bravo", "charlie-delta", "Echo", "foxtrot", "golf"];

#[derive(Clone, Debug)]
enum Op {
    Set(u8, u8, u8, u16),
    Unset(u8, u8),
    Schema(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..3, 0u8..5, 0u8..6, any::<u16>()).prop_map(|(s, k, w, n)| Op::Set(s, k, w, n)),
        2 => (0u8..3, 0u8..5).prop_map(|(s, k)| Op::Unset(s, k)),
        1 => (0u8..3, 0u8..6).prop_map(|(s, w)| Op::Schema(s, w)),
    ]
}

fn change(op: &Op, state: &State) -> Option<Change> {
    match op {
        Op::Set(s, k, w, n) => Some(Change::Set {
            service: format!("svc{s}"),
            key: format!("key{k}"),
            value: json!(format!("{}-{n}", WORDS[*w as usize])),
        }),
        Op::Unset(s, k) => state
            .value(&format!("svc{s}"), &format!("key{k}"))
            .map(|_| Change::Unset { service: format!("svc{s}"), key: format!("key{k}") }),
        Op::Schema(s, w) => Some(Change::SetSchema {
            service: format!("svc{s}"),
            schema: json!({"additionalProperties": true, "properties": {
                "key0": {"description": format!("the {} setting", WORDS[*w as usize])},
                "key1": {"description": "rate limit"}}}),
        }),
    }
}

fn rows(reader: &LogReader) -> Vec<(String, String, String, String, i64)> {
    let mut st = reader
        .connection()
        .prepare("SELECT service, key, value_text, description, epoch FROM search_keys ORDER BY service, key")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn key_changes(reader: &LogReader) -> Vec<(String, String, i64)> {
    let mut st =
        reader.connection().prepare("SELECT service, key, epoch FROM key_changes ORDER BY service, key").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

fn catch_up(reader: &LogReader) {
    confstore_search::attach(reader.connection()).unwrap();
    let tx = reader.connection().unchecked_transaction().unwrap();
    let from = confstore_search::checkpoint(&tx).unwrap().map_or(0, |c| c.0);
    let events = reader.verified_after(from).unwrap();
    confstore_search::apply(&tx, &events, &reader.current_state().unwrap()).unwrap();
    tx.commit().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    #[test]
    fn incremental_equals_rebuild_and_queries_equal_a_scan(
        history in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..25),
        catch_up_every in 1usize..5,
        terms in prop::collection::vec((0usize..6, 0usize..8, 1usize..6), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let opts = DbOptions { synchronous: Synchronous::Normal, ..DbOptions::default() };
        let store = Store::create(&path, SigningKey::from_seed(&[1; 32]), StoreId([2; 16]), "t", Arc::new(SystemClock), &opts).unwrap();
        let draft = |changes| ChangesetDraft { actor: "t".into(), reason: String::new(), request_id: "r".into(), expected_epoch: None, changes };
        store.append(draft((0..3).map(|s| Change::RegisterService { service: format!("svc{s}") }).collect())).unwrap();
        let reader = store.reader().unwrap();
        for (n, ops) in history.iter().enumerate() {
            let state = reader.current_state().unwrap();
            let mut seen = BTreeSet::new();
            let changes: Vec<Change> = ops
                .iter()
                .filter(|o| match o { Op::Set(s, k, ..) | Op::Unset(s, k) => seen.insert((*s, *k)), Op::Schema(s, _) => seen.insert((*s, 99)) })
                .filter_map(|o| change(o, &state))
                .collect();
            if !changes.is_empty() {
                store.append(draft(changes)).unwrap();
            }
            if n % catch_up_every == 0 {
                catch_up(&reader);
            }
        }
        catch_up(&reader);
        let incremental = rows(&reader);
        let incremental_epochs = key_changes(&reader);

        // A rebuild from scratch gives the same rows.
        confstore_search::attach(reader.connection()).unwrap();
        let tx = reader.connection().unchecked_transaction().unwrap();
        confstore_search::clear(&tx).unwrap();
        let mut state = State::default();
        let mut all = Vec::new();
        reader.replay_with(Until::Head, |ev| { state.apply(ev); all.push(ev.clone()); }).unwrap();
        confstore_search::apply(&tx, &all, &state).unwrap();
        tx.commit().unwrap();
        prop_assert_eq!(&rows(&reader), &incremental);
        prop_assert_eq!(&key_changes(&reader), &incremental_epochs);
        // ...and the key epochs equal a naive fold: the last set of each key still set.
        let mut naive = std::collections::BTreeMap::new();
        for ev in &all {
            match &ev.body().kind {
                confstore_core::EventKind::ValueSet { service, key, .. }
                | confstore_core::EventKind::SecretSet { service, key, .. } => {
                    naive.insert((service.clone(), key.clone()), i64::try_from(ev.body().epoch).unwrap());
                }
                confstore_core::EventKind::ValueUnset { service, key, .. } => {
                    naive.remove(&(service.clone(), key.clone()));
                }
                _ => {}
            }
        }
        let naive: Vec<(String, String, i64)> = naive.into_iter().map(|((s, k), e)| (s, k, e)).collect();
        prop_assert_eq!(&incremental_epochs, &naive);

        // Every query equals a naive scan (case-insensitive substring of any column).
        for (w, start, len) in terms {
            let word = WORDS[w];
            let term: String = word.chars().skip(start % word.len()).take(len).collect();
            let needle = term.to_lowercase();
            let expected: BTreeSet<(String, String)> = incremental
                .iter()
                .filter(|(s, k, v, d, _)| [s, k, v, d].iter().any(|c| c.to_lowercase().contains(&needle)))
                .map(|(s, k, ..)| (s.clone(), k.clone()))
                .collect();
            let got: BTreeSet<(String, String)> = confstore_search::search(reader.connection(), &term, None, None, 1000)
                .unwrap()
                .into_iter()
                .map(|h| (h.service, h.key))
                .collect();
            prop_assert_eq!(got, expected, "query {:?}", term);
        }
    }
}
