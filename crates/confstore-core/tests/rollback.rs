//! docs/testing.md row 10: rollback to an epoch is append-only. For random histories, rolling back
//! to a random epoch adds exactly one changeset, every older event still verifies
//! unchanged, the effective configuration equals the one at that epoch, later writes
//! continue normally, and a rollback can itself be rolled back.

use confstore_core::chain::genesis_hash;
use confstore_core::state::{Change, ChangesetDraft, decide, seal, store_created};
use confstore_core::timetravel::rollback_changes;
use confstore_core::{ChainVerifier, SigningKey, State, StoreId, StoredEvent, Verified};
use proptest::prelude::*;
use serde_json::json;

const STORE: StoreId = StoreId([0x42; 16]);

struct Log {
    key: SigningKey,
    events: Vec<StoredEvent>,
    state: State,
    /// State after each epoch (index = epoch).
    at_epoch: Vec<State>,
}

impl Log {
    fn new() -> Self {
        let key = SigningKey::from_seed(&[6; 32]);
        let first = seal(1, &genesis_hash(&STORE), &store_created(STORE, &key, "t", "r", 1), &key);
        Self { key, events: vec![first], state: State::default(), at_epoch: vec![State::default()] }
    }

    fn append(&mut self, changes: Vec<Change>) -> bool {
        let draft = ChangesetDraft {
            actor: "t".into(),
            reason: "r".into(),
            request_id: "q".into(),
            expected_epoch: None,
            changes,
        };
        let Ok(bodies) = decide(&self.state, &draft, 10) else { return false };
        for body in bodies {
            let prev = self.events.last().map(|e| e.hash).unwrap_or_default();
            let ev = seal(self.events.len() as u64 + 1, &prev, &body, &self.key);
            self.state.apply_body(ev.seq, &body);
            self.events.push(ev);
        }
        self.at_epoch.push(self.state.clone());
        true
    }

    fn verified(&self) -> Vec<Verified> {
        let mut v = ChainVerifier::new(STORE, Some(self.key.verifying_key()));
        let mut out = Vec::new();
        for ev in &self.events {
            v.push(ev).expect("verifies");
            out.extend(v.take_ready());
        }
        out.extend(v.flush_ready().expect("verifies"));
        v.finish().expect("verifies");
        out
    }
}

fn op() -> impl Strategy<Value = (u8, u8, Option<i32>)> {
    (0u8..3, 0u8..4, prop::option::weighted(0.8, -5i32..50))
}

fn changes_for(state: &State, ops: &[(u8, u8, Option<i32>)]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (s, k, v) in ops {
        let (service, key) = (format!("s{s}"), format!("k{k}"));
        if seen.contains(&(s, k)) {
            continue;
        }
        seen.push((s, k));
        match v {
            Some(v) => out.push(Change::Set { service, key, value: json!(v) }),
            None if state.value(&service, &key).is_some() => out.push(Change::Unset { service, key }),
            None => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn rollback_is_append_only_and_restores_the_epoch(
        history in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..15),
        target_pick in any::<prop::sample::Index>(),
        service_only in any::<bool>(),
        later in prop::collection::vec(op(), 1..4),
    ) {
        let mut log = Log::new();
        let registered = log.append((0..3).map(|s| Change::RegisterService { service: format!("s{s}") }).collect());
        prop_assert!(registered);
        for ops in &history {
            let changes = changes_for(&log.state, ops);
            if !changes.is_empty() {
                prop_assert!(log.append(changes));
            }
        }
        let epoch_before = log.state.epoch;
        // at_epoch holds epochs 0..=epoch_before; pick one strictly before the current one.
        let target_index = target_pick.index(log.at_epoch.len() - 1);
        let target_epoch = target_index as u64;
        let service = service_only.then(|| "s1".to_owned());
        let target = log.at_epoch[target_index].clone();
        let before_rows = log.events.clone();
        let changes = rollback_changes(&log.state, &target, target_epoch, service.as_deref());
        if changes.is_empty() {
            // Nothing differs: the operator is told and nothing is appended.
            return Ok(());
        }
        prop_assert!(log.append(changes));
        // Exactly one changeset more, one epoch more; every older event untouched.
        prop_assert_eq!(log.state.epoch, epoch_before + 1);
        prop_assert_eq!(&log.events[..before_rows.len()], &before_rows[..]);
        let verified = log.verified();
        let rollback_events: Vec<_> = verified.iter().filter(|v| v.body().epoch == epoch_before + 1).collect();
        let marker_first = matches!(rollback_events[0].body().kind, confstore_core::EventKind::RolledBack { .. });
        prop_assert!(marker_first, "the rollback changeset opens with its marker");
        // The effective configuration is the one at the target epoch (for the service, or all).
        let now = log.state.clone();
        match &service {
            Some(s) => {
                let want = target.services.get(s).cloned().unwrap_or_default();
                prop_assert_eq!(now.services.get(s), Some(&want));
            }
            None => {
                for (name, values) in &now.services {
                    let want = target.services.get(name).cloned().unwrap_or_default();
                    prop_assert_eq!(values, &want, "service {}", name);
                }
            }
        }
        // Writes continue, and the rollback itself can be rolled back.
        let more = changes_for(&log.state, &later);
        if !more.is_empty() {
            prop_assert!(log.append(more));
        }
        let undo = rollback_changes(&log.state, &now, epoch_before + 1, None);
        if !undo.is_empty() {
            prop_assert!(log.append(undo));
            prop_assert_eq!(&log.state.services, &now.services);
        }
        log.verified();
    }
}

/// A signed but mis-stated marker (wrong from-epoch, a target not in the past, or not first
/// in its changeset) is refused by verification at its seq.
#[test]
fn verification_checks_the_marker() {
    use confstore_core::event::{EventBody, EventKind};
    let mut base = Log::new();
    assert!(base.append(vec![Change::RegisterService { service: "s".into() }]));
    assert!(base.append(vec![Change::Set { service: "s".into(), key: "k".into(), value: json!(1) }]));
    let body = |index, len, kind| EventBody {
        epoch: 3,
        time_ms: 10,
        changeset_index: index,
        changeset_len: len,
        actor: "t".into(),
        reason: "r".into(),
        request_id: "q".into(),
        kind,
    };
    let unset = EventKind::ValueUnset { service: "s".into(), key: "k".into(), schema_hash: None };
    let marker = |from_epoch, to_epoch| EventKind::RolledBack { from_epoch, to_epoch, service: None };
    for (bodies, bad_seq) in [
        (vec![body(0, 2, marker(1, 1)), body(1, 2, unset.clone())], 4),
        (vec![body(0, 2, marker(2, 2)), body(1, 2, unset.clone())], 4),
        (vec![body(0, 2, unset.clone()), body(1, 2, marker(2, 1))], 5),
    ] {
        let mut log = Log::new();
        log.events = base.events.clone();
        for b in bodies {
            let prev = log.events.last().map(|e| e.hash).unwrap_or_default();
            log.events.push(seal(log.events.len() as u64 + 1, &prev, &b, &log.key));
        }
        let mut v = ChainVerifier::new(STORE, None);
        let err = log.events.iter().try_for_each(|ev| v.push(ev)).expect_err("refused");
        assert_eq!(err.seq(), bad_seq, "{err}");
    }
}
