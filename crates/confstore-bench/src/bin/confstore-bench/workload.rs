//! The workload every section shares: typical small configuration values (about 100 bytes of
//! canonical JSON), single-event changesets that set them, and the same events sealed ahead of
//! time for the raw SQLite baselines, so both sides write rows of identical sizes.

use std::sync::Arc;

use confstore_core::state::{self, Change, ChangesetDraft};
use confstore_core::{EventBody, Hash32, SigningKey, State, StoreId, StoredEvent};
use confstore_log::{Clock, SystemClock};
use serde_json::json;

/// Who the benchmark's changesets say made them.
pub const ACTOR: &str = "bench";
/// The reason every changeset gives.
pub const REASON: &str = "benchmark";

/// The signing key of every benchmark store (a fixed seed: the figures need no secrecy).
pub fn signing_key() -> SigningKey {
    SigningKey::from_seed(&[0x42; 32])
}

/// A store id for the `n`th store made in a run.
pub fn store_id(n: u8) -> StoreId {
    StoreId([n; 16])
}

/// The wall clock, as the server uses it.
pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// The name of service number `s`.
pub fn service(s: usize) -> String {
    format!("svc-{s:02}")
}

/// A typical small value: 100 to 105 bytes of canonical JSON, varying with `rev`.
pub fn value(rev: usize) -> serde_json::Value {
    json!({
        "endpoint": "https://billing.internal:8443",
        "pool": {"max": 32, "min": 4},
        "retries": 3,
        "rev": rev,
        "tls": true,
    })
}

/// Length of [`value`]'s canonical JSON.
pub fn value_len(rev: usize) -> usize {
    state::canonical_json(&value(rev)).map_or(0, |s| s.len())
}

/// A changeset that registers services `0..n`.
pub fn register_draft(n: usize) -> ChangesetDraft {
    draft(0, (0..n).map(|s| Change::RegisterService { service: service(s) }).collect())
}

/// A single-event changeset: service `s`, key `key-(i mod keys)`, value revision `i`.
pub fn set_draft(s: usize, i: usize, keys: usize) -> ChangesetDraft {
    draft(i, vec![set(s, i % keys.max(1), i)])
}

/// One `Set` change.
pub fn set(s: usize, key: usize, rev: usize) -> Change {
    Change::Set { service: service(s), key: format!("key-{key:04}"), value: value(rev) }
}

/// A draft with the benchmark's metadata and a request id derived from `i`.
pub fn draft(i: usize, changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft {
        actor: ACTOR.to_owned(),
        reason: REASON.to_owned(),
        request_id: format!("req-{i:016x}"),
        expected_epoch: None,
        changes,
    }
}

/// `n` single-event changesets on service 0 exactly as the writer would seal them (decided
/// against a state, hashed, chained and signed), from seq 1: the rows of the raw baselines.
pub fn sealed_rows(n: usize, keys: usize) -> anyhow::Result<Vec<(StoredEvent, EventBody)>> {
    let key = signing_key();
    let mut st = State::default();
    st.services.insert(service(0), Default::default());
    let mut prev = Hash32([0; 32]);
    let now = now_ms();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let bodies = state::decide(&st, &set_draft(0, i, keys), now)?;
        for body in bodies {
            let seq = st.seq + 1;
            let ev = state::seal(seq, &prev, &body, &key);
            st.apply_body(seq, &body);
            prev = ev.hash;
            out.push((ev, body));
        }
    }
    Ok(out)
}
