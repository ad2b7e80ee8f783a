//! Property (docs/testing.md row 9, log part): random changesets appended through the real store,
//! including ones that must be refused, leave a log whose replay to every epoch equals a
//! plain in-memory model recorded at that epoch, and whose write model equals the replay.

mod common;

use std::collections::BTreeMap;

use common::*;
use confstore_core::state::Change;
use confstore_log::{DbOptions, Store, Synchronous, Until};
use proptest::prelude::*;
use serde_json::json;

type Model = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Clone, Debug)]
enum Op {
    Register(u8),
    Set(u8, u8, i64),
    Unset(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..4).prop_map(Op::Register),
        4 => (0u8..4, 0u8..5, -3i64..1000).prop_map(|(s, k, v)| Op::Set(s, k, v)),
        2 => (0u8..4, 0u8..5).prop_map(|(s, k)| Op::Unset(s, k)),
    ]
}

fn change(op: &Op) -> Change {
    match op {
        Op::Register(s) => register(&format!("s{s}")),
        Op::Set(s, k, v) => set(&format!("s{s}"), &format!("k{k}"), json!(v)),
        Op::Unset(s, k) => unset(&format!("s{s}"), &format!("k{k}")),
    }
}

/// Applies a changeset to the model if the store must accept it; `None` if it must refuse.
fn model_apply(model: &Model, ops: &[Op]) -> Option<Model> {
    let mut next = model.clone();
    let mut touched = Vec::new();
    for op in ops {
        match op {
            Op::Register(s) => {
                let name = format!("s{s}");
                if next.contains_key(&name) {
                    return None;
                }
                next.insert(name, BTreeMap::new());
            }
            Op::Set(s, k, v) => {
                if touched.contains(&(s, k)) {
                    return None;
                }
                touched.push((s, k));
                next.get_mut(&format!("s{s}"))?.insert(format!("k{k}"), v.to_string());
            }
            Op::Unset(s, k) => {
                if touched.contains(&(s, k)) {
                    return None;
                }
                touched.push((s, k));
                next.get_mut(&format!("s{s}"))?.remove(&format!("k{k}"))?;
            }
        }
    }
    Some(next)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    #[test]
    fn replay_at_every_epoch_equals_the_model(changesets in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        // Durability is not under test here; NORMAL keeps the property fast.
        let opts = DbOptions { synchronous: Synchronous::Normal, ..DbOptions::default() };
        let store = Store::create(&path, key(1), STORE, "t", clock(), &opts).unwrap();
        let mut model = Model::new();
        let mut at_epoch = vec![Model::new()];
        for ops in &changesets {
            let result = store.append(draft(ops.iter().map(change).collect()));
            match model_apply(&model, ops) {
                Some(next) => {
                    let receipt = result.unwrap();
                    prop_assert_eq!(receipt.epoch, at_epoch.len() as u64);
                    model = next;
                    at_epoch.push(model.clone());
                }
                None => prop_assert!(result.is_err(), "store accepted {:?}", ops),
            }
        }
        let reader = store.reader().unwrap();
        for (epoch, expected) in at_epoch.iter().enumerate() {
            let state = reader.replay(Until::Epoch(epoch as u64)).unwrap();
            let services: Model = state.services.into_iter().map(|(s, v)| (s, (*v).clone())).collect();
            prop_assert_eq!(&services, expected, "epoch {}", epoch);
        }
        for (service, values) in &model {
            let current = reader.current(service).unwrap().unwrap();
            let current: BTreeMap<_, _> = current.into_iter().map(|v| (v.key, v.value_json)).collect();
            prop_assert_eq!(&current, values);
        }
        let verified = reader.verify(None, &mut |_| ()).unwrap();
        prop_assert!(verified.is_ok(), "{:?}", verified);
    }
}
