//! The parallel verifier agrees with the sequential one on the first bad seq, whichever of a
//! bad signature and a broken chain comes first, across batch boundaries.

use confstore_core::chain::genesis_hash;
use confstore_core::state::{ChangesetDraft, decide, seal, store_created};
use confstore_core::{ChainVerifier, SigningKey, State, StoreId, StoredEvent};
use confstore_log::parallel::ParallelVerifier;
use serde_json::json;

const STORE: StoreId = StoreId([8; 16]);

fn log(events: usize) -> Vec<StoredEvent> {
    let key = SigningKey::from_seed(&[4; 32]);
    let mut out = vec![seal(1, &genesis_hash(&STORE), &store_created(STORE, &key, "t", "r", 1), &key)];
    let mut state = State::default();
    let draft = |changes| ChangesetDraft {
        actor: "t".into(),
        reason: String::new(),
        request_id: "r".into(),
        expected_epoch: None,
        changes,
    };
    let mut changes = vec![confstore_core::Change::RegisterService { service: "s".into() }];
    while out.len() < events {
        for body in decide(&state, &draft(changes), 10).unwrap() {
            let prev = out.last().unwrap().hash;
            let ev = seal(out.len() as u64 + 1, &prev, &body, &key);
            state.apply_body(ev.seq, &body);
            out.push(ev);
        }
        changes = vec![confstore_core::Change::Set { service: "s".into(), key: "k".into(), value: json!(out.len()) }];
    }
    out
}

fn sequential(events: &[StoredEvent]) -> Result<u64, u64> {
    let mut v = ChainVerifier::new(STORE, None).discard_events();
    for ev in events {
        v.push(ev).map_err(|e| e.seq())?;
    }
    v.finish().map(|h| h.seq).map_err(|e| e.seq())
}

fn parallel(events: &[StoredEvent]) -> Result<u64, u64> {
    let mut v = ParallelVerifier::new(ChainVerifier::new(STORE, None));
    for ev in events {
        if !v.push(ev) {
            break;
        }
    }
    v.finish().map(|h| h.seq).map_err(|e| e.seq())
}

#[test]
fn parallel_and_sequential_agree_on_the_first_bad_seq() {
    let clean = log(3000);
    assert_eq!(parallel(&clean), Ok(3000));
    assert_eq!(sequential(&clean), Ok(3000));
    for (bad_sig, broken_link) in [(5, 2500), (1500, 1501), (2999, 100), (1024, 1025), (2048, 3000)] {
        let mut events = clean.clone();
        events[bad_sig - 1].sig[10] ^= 1;
        events[broken_link - 1].prev_hash.0[0] ^= 1;
        let first = bad_sig.min(broken_link) as u64;
        assert_eq!(sequential(&events), Err(first), "sequential, sig {bad_sig} link {broken_link}");
        assert_eq!(parallel(&events), Err(first), "parallel, sig {bad_sig} link {broken_link}");
    }
}
