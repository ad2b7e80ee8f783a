//! A delta applied to the version before it gives exactly the snapshot of the version
//! after it, whatever the changeset (own values, `global`, schema defaults, unsets):
//! the live stream may send deltas because this holds.

use confstore_core::State;
use confstore_core::state::{Change, ChangesetDraft, decide};
use confstore_core::stream::apply_delta;
use confstore_snapshots::{Touched, delta, project};
use proptest::prelude::*;
use serde_json::{Value, json};

const SERVICES: [&str; 3] = ["global", "web", "db"];
const KEYS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Set(usize, usize, i64),
    Unset(usize, usize),
    Schema(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..4usize, 0..5i64).prop_map(|(s, k, v)| Op::Set(s, k, v)),
        3 => (0..3usize, 0..4usize).prop_map(|(s, k)| Op::Unset(s, k)),
        1 => (0..3usize, any::<bool>()).prop_map(|(s, open)| Op::Schema(s, open)),
    ]
}

fn change(state: &State, op: &Op) -> Option<Change> {
    Some(match *op {
        Op::Set(s, k, v) => Change::Set { service: SERVICES[s].into(), key: KEYS[k].into(), value: json!(v) },
        Op::Unset(s, k) => {
            state.value(SERVICES[s], KEYS[k])?;
            Change::Unset { service: SERVICES[s].into(), key: KEYS[k].into() }
        }
        Op::Schema(s, open) => Change::SetSchema {
            service: SERVICES[s].into(),
            // Declares a and b (b with a default), so inheriting c and d from global
            // depends on `additionalProperties`.
            schema: json!({"type": "object", "additionalProperties": open,
                           "properties": {"a": {}, "b": {"default": 7}}}),
        },
    })
}

fn docs(state: &State) -> Vec<(String, Value)> {
    state.services.keys().map(|s| (s.clone(), project(state, "st", 1, s).unwrap().to_json())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn a_delta_leads_from_the_version_before_to_the_version_after(
        changesets in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..25),
    ) {
        let mut state = State::default();
        let register = ChangesetDraft {
            actor: "t".into(), reason: String::new(), request_id: "r".into(), expected_epoch: None,
            changes: SERVICES.iter().map(|s| Change::RegisterService { service: (*s).into() }).collect(),
        };
        for body in decide(&state, &register, 1).unwrap() {
            let seq = state.seq + 1;
            state.apply_body(seq, &body);
        }
        for ops in changesets {
            let mut changes: Vec<Change> = Vec::new();
            for op in &ops {
                if let Some(c) = change(&state, op) {
                    changes.push(c);
                }
            }
            let draft = ChangesetDraft {
                actor: "t".into(), reason: String::new(), request_id: "r".into(), expected_epoch: None, changes,
            };
            // Refused changesets (duplicates, schema violations, nothing to do) change nothing.
            let Ok(bodies) = decide(&state, &draft, 2) else { continue };
            let before = docs(&state);
            let mut touched = Touched::default();
            for body in &bodies {
                let seq = state.seq + 1;
                let changed = state.apply_body(seq, body);
                touched.record(&state, body, changed);
            }
            for (service, doc_before) in before {
                let after = project(&state, "st", 1, &service).unwrap().to_json();
                match touched.services.get(&service) {
                    None => prop_assert_eq!(&doc_before["changed_epoch"], &after["changed_epoch"], "{} changed unnoticed", service),
                    Some(t) if t.full => {}
                    Some(t) => {
                        let d = delta(&state, "st", 1, &service, t.keys.iter().map(String::as_str)).unwrap().to_json();
                        prop_assert_eq!(&d["prev_epoch"], &doc_before["changed_epoch"]);
                        let applied = apply_delta(&doc_before, &d).unwrap();
                        prop_assert_eq!(applied, after, "service {} delta {}", service, d);
                    }
                }
            }
        }
    }
}
