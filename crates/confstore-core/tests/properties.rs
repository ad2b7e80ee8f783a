//! Property tests of the core (proptest):
//!
//! - every [`EventBody`] survives encode/decode, and decoding arbitrary bytes never panics;
//! - random histories built with `decide` + `seal` verify, and replaying them with
//!   [`State::apply`] equals a plain `BTreeMap` model at every changeset boundary;
//! - tamper detection (docs/testing.md row 6): one random modification of a clean log (a flipped
//!   byte in any stored field, a deleted, swapped, duplicated or forged event) is always
//!   detected and named at the documented seq (docs/format.md §10.5);
//! - no false positives: many short clean logs all verify.
//!
//! Case counts follow `PROPTEST_CASES` when it is set; the defaults keep each test to a few
//! seconds in a debug build.

use std::collections::BTreeMap;

use confstore_core::rollout::{Cohort, CohortMember, StagedChange};
use confstore_core::state::{canonical_json, decide, rotate_signing_key, seal, store_created};
use confstore_core::{
    ChainVerifier, Change, ChangesetDraft, EventBody, EventKind, Hash32, KeyId, SigningKey, State, StoreId,
    StoredEvent, Verified, VerifyError, VerifyingKey, event_hash, genesis_hash,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig { cases: cases(default_cases), ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary bodies.

/// u64 of every magnitude, so every varint length occurs.
fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), (any::<u64>(), 0u32..64).prop_map(|(x, shift)| x >> shift), Just(u64::MAX)]
}

fn arb_u32() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (any::<u32>(), 0u32..32).prop_map(|(x, shift)| x >> shift), Just(u32::MAX)]
}

/// Any Unicode text, control characters included.
fn arb_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn arb_bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap_or([0; N]))
}

fn arb_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (arb_bytes::<16>(), arb_bytes::<32>())
            .prop_map(|(id, public_key)| EventKind::StoreCreated { store_id: StoreId(id), public_key }),
        arb_text().prop_map(|service| EventKind::ServiceRegistered { service }),
        (arb_text(), arb_text(), arb_text(), proptest::option::of(arb_bytes::<32>())).prop_map(
            |(service, key, value_json, schema_hash)| EventKind::ValueSet { service, key, value_json, schema_hash }
        ),
        (arb_text(), arb_text(), proptest::option::of(arb_bytes::<32>()))
            .prop_map(|(service, key, schema_hash)| EventKind::ValueUnset { service, key, schema_hash }),
        (arb_bytes::<32>(), arb_bytes::<64>())
            .prop_map(|(new_public_key, new_key_sig)| EventKind::SigningKeyRotated { new_public_key, new_key_sig }),
        (arb_u64(), arb_u64(), proptest::option::of(arb_text()))
            .prop_map(|(from_epoch, to_epoch, service)| EventKind::RolledBack { from_epoch, to_epoch, service }),
        (arb_text(), arb_text(), arb_bytes::<32>())
            .prop_map(|(service, schema_json, schema_hash)| EventKind::SchemaSet { service, schema_json, schema_hash }),
        (arb_text(), arb_text(), arb_u32(), arb_bytes::<12>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(service, key, key_version, nonce, ciphertext)| EventKind::SecretSet {
                service,
                key,
                key_version,
                nonce,
                ciphertext,
                schema_hash: None
            }
        ),
        (arb_text(), arb_text()).prop_map(|(service, key)| EventKind::SecretRevealed { service, key }),
        (
            arb_text(),
            arb_u64(),
            arb_u64(),
            proptest::collection::vec((arb_text(), arb_text(), arb_u64()), 0..4),
            arb_u64()
        )
            .prop_map(|(token_id, window_start_ms, window_end_ms, counts, dropped)| {
                let counts = counts
                    .into_iter()
                    .map(|(method, route, count)| confstore_core::event::DenialCount { method, route, count })
                    .collect();
                EventKind::AccessDeniedSummary { token_id, window_start_ms, window_end_ms, counts, dropped }
            }),
        (
            arb_text(),
            prop_oneof![
                proptest::collection::vec(arb_text(), 0..3).prop_map(Cohort::Instances),
                arb_u32().prop_map(|basis_points| Cohort::Percent { basis_points }),
            ],
            arb_u64(),
            any::<bool>(),
            arb_u64(),
            proptest::collection::vec(arb_staged(), 0..4),
            proptest::option::of(arb_bytes::<32>()),
        )
            .prop_map(|(service, cohort, bake_ms, auto, base_epoch, changes, schema_hash)| {
                EventKind::RolloutStarted { service, cohort, bake_ms, auto, base_epoch, changes, schema_hash }
            }),
        (arb_text(), arb_u64(), any::<bool>(), proptest::collection::vec(arb_member(), 0..3)).prop_map(
            |(service, rollout_seq, automatic, cohort)| EventKind::RolloutPromoted {
                service,
                rollout_seq,
                automatic,
                cohort
            }
        ),
        (arb_text(), arb_u64(), any::<bool>(), proptest::collection::vec(arb_member(), 0..3)).prop_map(
            |(service, rollout_seq, automatic, cohort)| EventKind::RolloutAborted {
                service,
                rollout_seq,
                automatic,
                cohort
            }
        ),
    ]
}

fn arb_staged() -> impl Strategy<Value = StagedChange> {
    prop_oneof![
        (arb_text(), arb_text()).prop_map(|(key, value_json)| StagedChange::Set { key, value_json }),
        arb_text().prop_map(|key| StagedChange::Unset { key }),
        (arb_text(), arb_u32(), arb_bytes::<12>(), proptest::collection::vec(any::<u8>(), 0..32)).prop_map(
            |(key, key_version, nonce, ciphertext)| StagedChange::Secret { key, key_version, nonce, ciphertext }
        ),
    ]
}

fn arb_member() -> impl Strategy<Value = CohortMember> {
    (arb_text(), any::<bool>(), proptest::option::of(any::<bool>()), any::<bool>())
        .prop_map(|(instance, applied, healthy, online)| CohortMember { instance, applied, healthy, online })
}

prop_compose! {
    fn arb_body()(
        epoch in arb_u64(), time_ms in arb_u64(), changeset_index in arb_u32(), changeset_len in arb_u32(),
        actor in arb_text(), reason in arb_text(), request_id in arb_text(), kind in arb_kind(),
    ) -> EventBody {
        EventBody { epoch, time_ms, changeset_index, changeset_len, actor, reason, request_id, kind }
    }
}

/// Damage done to an encoded body before decoding it.
#[derive(Clone, Debug)]
enum Damage {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Remove(Index),
}

fn arb_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, m)| Damage::Flip(i, m)),
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<Index>().prop_map(Damage::Remove),
    ]
}

fn damage(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match d {
        Damage::Flip(i, mask) => {
            let i = i.index(bytes.len());
            bytes[i] ^= mask;
        }
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Damage::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
    }
}

/// Whatever decodes, decodes to something that round-trips.
fn check_decoded(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(body) = EventBody::decode(bytes) {
        prop_assert_eq!(EventBody::decode(&body.encode()), Ok(body));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn body_round_trips(body in arb_body()) {
        let bytes = body.encode();
        prop_assert_eq!(EventBody::decode(&bytes), Ok(body.clone()));
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(EventBody::decode(&longer).is_err(), "a trailing byte is refused");
        prop_assert!(EventBody::decode(&bytes[..bytes.len() - 1]).is_err(), "a truncated body is refused");
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_decoded(&bytes)?;
    }

    #[test]
    fn decoding_damaged_bodies_never_panics(
        body in arb_body(),
        damages in proptest::collection::vec(arb_damage(), 1..4),
    ) {
        let mut bytes = body.encode();
        for d in &damages {
            damage(&mut bytes, d);
        }
        check_decoded(&bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Random histories.

/// JSON values that survive text round trips exactly (floats are multiples of 1/8).
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        "[a-z0-9 \"\\\\/\n\t\u{1}\u{e9}\u{1F600}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z\u{e9}\"]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One requested change, resolved against the model when the history is built: `service`
/// and `key` pick among the candidates at that point (modulo their number).
#[derive(Clone, Debug)]
enum Intent {
    Register,
    Set { service: u16, key: u8, value: Value },
    Unset { service: u16, key: u16 },
}

fn arb_intent() -> impl Strategy<Value = Intent> {
    prop_oneof![
        1 => Just(Intent::Register),
        5 => (any::<u16>(), 0u8..8, arb_json()).prop_map(|(service, key, value)| Intent::Set { service, key, value }),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(service, key)| Intent::Unset { service, key }),
    ]
}

/// One step of a history: a changeset, or a key rotation. `clock_step_ms` may be negative:
/// the writer's clock can go back, and `decide` must still never let time decrease.
#[derive(Clone, Debug)]
enum Step {
    Changeset { intents: Vec<Intent>, clock_step_ms: i64, actor: u8 },
    Rotate { clock_step_ms: i64 },
}

fn arb_step(max_intents: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (proptest::collection::vec(arb_intent(), 1..=max_intents), -50i64..2_000, 0u8..3)
            .prop_map(|(intents, clock_step_ms, actor)| Step::Changeset { intents, clock_step_ms, actor }),
        1 => (-50i64..2_000).prop_map(|clock_step_ms| Step::Rotate { clock_step_ms }),
    ]
}

fn arb_history(steps: std::ops::RangeInclusive<usize>, max_intents: usize) -> impl Strategy<Value = History> {
    (arb_bytes::<16>(), proptest::collection::vec(arb_step(max_intents), steps))
        .prop_map(|(store_id, steps)| History::build(StoreId(store_id), &steps))
}

type Model = BTreeMap<String, BTreeMap<String, Value>>;

/// The model's view after a changeset: the last seq of the changeset, the epoch, the values.
#[derive(Clone, Debug)]
struct Boundary {
    seq: u64,
    epoch: u64,
    model: Model,
}

/// A clean log with everything the tests need to know about it.
#[derive(Clone, Debug)]
struct History {
    store_id: StoreId,
    genesis_key: VerifyingKey,
    events: Vec<StoredEvent>,
    boundaries: Vec<Boundary>,
    /// The key id that signs the event after the last one.
    next_key_id: KeyId,
}

struct Writer {
    store_id: StoreId,
    state: State,
    events: Vec<StoredEvent>,
    key: SigningKey,
    next_seed: u8,
    now_ms: u64,
    model: Model,
    epoch: u64,
    boundaries: Vec<Boundary>,
    services_made: usize,
}

impl Writer {
    fn append(&mut self, body: &EventBody, key: &SigningKey) {
        let seq = self.state.seq + 1;
        let prev = self.events.last().map_or_else(|| genesis_hash(&self.store_id), |e| e.hash);
        self.events.push(seal(seq, &prev, body, key));
        self.state.apply_body(seq, body);
    }

    fn tick(&mut self, step_ms: i64) {
        self.now_ms = self.now_ms.saturating_add_signed(step_ms);
    }

    fn record(&mut self) {
        self.boundaries.push(Boundary { seq: self.state.seq, epoch: self.epoch, model: self.model.clone() });
    }

    /// Turns intents into changes that `decide` must accept: known services, no key twice,
    /// unset only of keys set before the changeset.
    fn resolve(&mut self, intents: &[Intent]) -> Vec<Change> {
        let before = self.model.clone();
        let mut services: Vec<String> = before.keys().cloned().collect();
        let mut touched: Vec<(String, String)> = Vec::new();
        let mut changes = Vec::new();
        for intent in intents {
            match intent {
                Intent::Register if services.len() < 6 => {
                    self.services_made += 1;
                    let service = format!("svc-{}", self.services_made);
                    services.push(service.clone());
                    changes.push(Change::RegisterService { service });
                }
                Intent::Register => {}
                Intent::Set { service, key, value } if !services.is_empty() => {
                    let service = services[usize::from(*service) % services.len()].clone();
                    let key = format!("k.{key}");
                    if !touched.contains(&(service.clone(), key.clone())) {
                        touched.push((service.clone(), key.clone()));
                        changes.push(Change::Set { service, key, value: value.clone() });
                    }
                }
                Intent::Unset { service, key } if !before.is_empty() => {
                    let names: Vec<&String> = before.keys().collect();
                    let service = names[usize::from(*service) % names.len()].clone();
                    let keys: Vec<&String> = before[&service]
                        .keys()
                        .filter(|k| !touched.contains(&(service.clone(), (*k).clone())))
                        .collect();
                    if !keys.is_empty() {
                        let key = keys[usize::from(*key) % keys.len()].clone();
                        touched.push((service.clone(), key.clone()));
                        changes.push(Change::Unset { service, key });
                    }
                }
                Intent::Set { .. } | Intent::Unset { .. } => {}
            }
        }
        changes
    }

    fn apply_to_model(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::RegisterService { service } => {
                    self.model.insert(service.clone(), BTreeMap::new());
                }
                Change::Set { service, key, value } => {
                    self.model.entry(service.clone()).or_default().insert(key.clone(), value.clone());
                }
                Change::Unset { service, key } => {
                    self.model.entry(service.clone()).or_default().remove(key);
                }
                // This generator makes no rollbacks (tests/rollback.rs does) and sets no
                // schemas (src/schema.rs, tests/schemas.rs): neither changes the model's values.
                // Nor secrets (tests/secrets.rs and the e2e canary test cover them).
                // Token and audit changes never touch values (tests/tokens.rs), nor does this
                // generator stage rollouts (tests/rollout.rs).
                Change::RollBack { .. }
                | Change::Rollout(_)
                | Change::SetSchema { .. }
                | Change::SetSecret { .. }
                | Change::RevealSecret { .. }
                | Change::IssueToken { .. }
                | Change::RevokeToken { .. }
                | Change::DenyAccess { .. }
                | Change::SummarizeDenials { .. } => {}
            }
        }
    }

    fn changeset(&mut self, intents: &[Intent], actor: u8) {
        let changes = self.resolve(intents);
        if changes.is_empty() {
            return;
        }
        let draft = ChangesetDraft {
            actor: format!("actor-{actor}"),
            reason: if actor == 0 { String::new() } else { "because — tests".into() },
            request_id: format!("req-{}", self.events.len()),
            expected_epoch: Some(self.epoch),
            changes: changes.clone(),
        };
        let bodies = decide(&self.state, &draft, self.now_ms).unwrap_or_else(|e| panic!("decide refused: {e}"));
        assert_eq!(bodies.len(), changes.len());
        let key = SigningKey::from_seed(&self.key.seed());
        for body in &bodies {
            self.append(body, &key);
        }
        self.apply_to_model(&changes);
        self.epoch += 1;
        self.record();
    }

    fn rotate(&mut self) {
        let new = SigningKey::from_seed(&[self.next_seed; 32]);
        self.next_seed += 1;
        let draft = ChangesetDraft {
            actor: "admin".into(),
            reason: "rotation".into(),
            request_id: String::new(),
            expected_epoch: None,
            changes: Vec::new(),
        };
        let body = rotate_signing_key(&self.state, &self.store_id, &self.key, &new, &draft, self.now_ms)
            .unwrap_or_else(|e| panic!("rotation refused: {e}"));
        let old = SigningKey::from_seed(&self.key.seed());
        self.append(&body, &old);
        self.key = new;
        self.record();
    }
}

impl History {
    fn build(store_id: StoreId, steps: &[Step]) -> Self {
        let key = SigningKey::from_seed(&[1; 32]);
        let genesis_key = key.verifying_key();
        let mut w = Writer {
            store_id,
            state: State::default(),
            events: Vec::new(),
            key,
            next_seed: 2,
            now_ms: 1_700_000_000_000,
            model: Model::new(),
            epoch: 0,
            boundaries: Vec::new(),
            services_made: 0,
        };
        let created = store_created(store_id, &w.key, "admin", "req-0", w.now_ms);
        let first = SigningKey::from_seed(&w.key.seed());
        w.append(&created, &first);
        w.record();
        w.changeset(&[Intent::Register], 0);
        for step in steps {
            match step {
                Step::Changeset { intents, clock_step_ms, actor } => {
                    w.tick(*clock_step_ms);
                    w.changeset(intents, *actor);
                }
                Step::Rotate { clock_step_ms } => {
                    w.tick(*clock_step_ms);
                    w.rotate();
                }
            }
        }
        let next_key_id = w.key.verifying_key().key_id();
        History { store_id, genesis_key, events: w.events, boundaries: w.boundaries, next_key_id }
    }

    /// The verifier with the genesis key as the trusted key.
    fn verify(&self, events: &[StoredEvent]) -> Result<Vec<Verified>, VerifyError> {
        verify_events(self.store_id, self.genesis_key, events)
    }
}

fn verify_events(
    store_id: StoreId,
    anchor: VerifyingKey,
    events: &[StoredEvent],
) -> Result<Vec<Verified>, VerifyError> {
    let mut v = ChainVerifier::new(store_id, Some(anchor));
    let mut out = Vec::new();
    for ev in events {
        v.push(ev)?;
        out.extend(v.take_ready());
    }
    out.extend(v.flush_ready()?);
    v.finish()?;
    Ok(out)
}

fn as_values(state: &State) -> Result<Model, TestCaseError> {
    let mut out = Model::new();
    for (service, values) in &state.services {
        let mut parsed = BTreeMap::new();
        for (key, text) in values.iter() {
            let value: Value =
                serde_json::from_str(text).map_err(|e| TestCaseError::fail(format!("{service}.{key}: {e}")))?;
            prop_assert_eq!(&canonical_json(&value).map_err(|e| TestCaseError::fail(e.to_string()))?, text);
            parsed.insert(key.clone(), value);
        }
        out.insert(service.clone(), parsed);
    }
    Ok(out)
}

proptest! {
    #![proptest_config(config(128))]

    /// Replay of the verified log equals the model after every changeset.
    #[test]
    fn replay_equals_the_model_at_every_epoch(history in arb_history(1..=30, 4)) {
        let verified = history.verify(&history.events).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(verified.len(), history.events.len());
        let mut state = State::default();
        let mut boundaries = history.boundaries.iter();
        for ev in &verified {
            state.apply(ev);
            let b = ev.body();
            if b.changeset_index + 1 == b.changeset_len {
                let boundary = boundaries.next().ok_or_else(|| TestCaseError::fail("more changesets than written"))?;
                prop_assert_eq!(state.seq, boundary.seq);
                prop_assert_eq!(state.epoch, boundary.epoch);
                prop_assert_eq!(&as_values(&state)?, &boundary.model, "state differs from the model at seq {}", state.seq);
            }
        }
        prop_assert!(boundaries.next().is_none(), "fewer changesets than written");
        // Epochs and times as the format requires (docs/format.md §10.2, §10.3).
        let mut epoch = 0;
        let mut time = 0;
        for ev in &verified {
            let b = ev.body();
            prop_assert!(b.time_ms >= time);
            prop_assert!(b.epoch == epoch || b.epoch == epoch + 1);
            epoch = b.epoch;
            time = b.time_ms;
        }
        // Any key of the chain is a valid trusted key; a foreign key is not.
        let keys: Vec<VerifyingKey> = (1..=8u8).map(|s| SigningKey::from_seed(&[s; 32]).verifying_key()).collect();
        let rotations = verified.iter().filter(|v| matches!(v.body().kind, EventKind::SigningKeyRotated { .. })).count();
        for (i, key) in keys.iter().enumerate() {
            let result = verify_events(history.store_id, *key, &history.events).map(|_| ());
            if i <= rotations {
                prop_assert_eq!(result, Ok(()));
            } else {
                prop_assert!(matches!(result, Err(VerifyError::UntrustedKey { .. })), "{:?}", result);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// No false positives: short clean logs always verify.
    #[test]
    fn clean_logs_always_verify(history in arb_history(0..=4, 2)) {
        let verified = history.verify(&history.events).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(verified.len(), history.events.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Tamper detection (docs/testing.md row 6, docs/format.md §10.5).

/// A stored field of an event.
#[derive(Clone, Copy, Debug)]
enum Field {
    Seq,
    Body,
    PrevHash,
    Hash,
    KeyId,
    Sig,
}

/// The body of a forged event.
#[derive(Clone, Copy, Debug)]
enum Forgery {
    /// A plausible next changeset: `value_set` by "mallory".
    Plausible,
    /// A copy of the original event's body with another actor.
    EditedCopy,
    /// A `store_created` naming the attacker's key (self-signed).
    SelfSignedGenesis,
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { event: Index, field: Field, byte: Index, mask: u8 },
    Delete(Index),
    Swap(Index),
    Duplicate(Index),
    Forge { at: Index, forgery: Forgery, claim_store_key: bool },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let field = prop_oneof![
        Just(Field::Seq),
        Just(Field::Body),
        Just(Field::PrevHash),
        Just(Field::Hash),
        Just(Field::KeyId),
        Just(Field::Sig)
    ];
    let forgery = prop_oneof![Just(Forgery::Plausible), Just(Forgery::EditedCopy), Just(Forgery::SelfSignedGenesis)];
    prop_oneof![
        6 => (any::<Index>(), field, any::<Index>(), 1u8..)
            .prop_map(|(event, field, byte, mask)| Mutation::Flip { event, field, byte, mask }),
        1 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Swap),
        1 => any::<Index>().prop_map(Mutation::Duplicate),
        1 => (any::<Index>(), forgery, any::<bool>())
            .prop_map(|(at, forgery, claim_store_key)| Mutation::Forge { at, forgery, claim_store_key }),
    ]
}

/// What verification of the mutated log must say.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Fails, naming this seq.
    FailsAt(u64),
    /// Verifies: the modification is invisible to a hash chain (tail truncation).
    Verifies,
}

fn flip(bytes: &mut [u8], byte: Index, mask: u8) {
    let i = byte.index(bytes.len());
    bytes[i] ^= mask;
}

/// Applies `m` to a copy of the log; returns the mutated log and the expected outcome.
fn mutate(h: &History, m: &Mutation) -> (Vec<StoredEvent>, Expect) {
    let mut events = h.events.clone();
    let n = events.len();
    match m {
        Mutation::Flip { event, field, byte, mask } => {
            let k = event.index(n);
            let ev = &mut events[k];
            match field {
                Field::Seq => {
                    let mut seq = ev.seq.to_be_bytes();
                    flip(&mut seq, *byte, *mask);
                    ev.seq = u64::from_be_bytes(seq);
                }
                Field::Body => flip(&mut ev.body, *byte, *mask),
                Field::PrevHash => flip(&mut ev.prev_hash.0, *byte, *mask),
                Field::Hash => flip(&mut ev.hash.0, *byte, *mask),
                Field::KeyId => flip(&mut ev.key_id.0, *byte, *mask),
                Field::Sig => flip(&mut ev.sig, *byte, *mask),
            }
            (events, Expect::FailsAt(k as u64 + 1))
        }
        Mutation::Delete(i) => {
            let k = i.index(n);
            let removed = events.remove(k);
            if k + 1 < n {
                return (events, Expect::FailsAt(removed.seq));
            }
            // The last event: detectable only when it leaves a changeset incomplete.
            let body = EventBody::decode(&removed.body).unwrap_or_else(|e| panic!("clean body: {e}"));
            let expect = if body.changeset_len > 1 { Expect::FailsAt(removed.seq) } else { Expect::Verifies };
            (events, expect)
        }
        Mutation::Swap(i) => {
            let k = i.index(n - 1);
            events.swap(k, k + 1);
            (events, Expect::FailsAt(k as u64 + 1))
        }
        Mutation::Duplicate(i) => {
            let k = i.index(n);
            events.insert(k + 1, events[k].clone());
            (events, Expect::FailsAt(k as u64 + 2))
        }
        Mutation::Forge { at, forgery, claim_store_key } => {
            forge(h, events, at.index(n + 1), *forgery, *claim_store_key)
        }
    }
}

/// Inserts, at position `k` (0-based), an event with seq `k + 1`, the right link and hash,
/// signed by an attacker's key. It claims either the store's key id or the attacker's.
fn forge(
    h: &History,
    mut events: Vec<StoredEvent>,
    k: usize,
    forgery: Forgery,
    claim_store_key: bool,
) -> (Vec<StoredEvent>, Expect) {
    let attacker = SigningKey::from_seed(&[0xee; 32]);
    let seq = k as u64 + 1;
    let prev_hash: Hash32 = if k == 0 { genesis_hash(&h.store_id) } else { events[k - 1].hash };
    let decode = |ev: &StoredEvent| EventBody::decode(&ev.body).unwrap_or_else(|e| panic!("clean body: {e}"));
    let near = decode(&events[k.min(events.len() - 1)]);
    let body = match forgery {
        Forgery::SelfSignedGenesis if k == 0 => store_created(h.store_id, &attacker, "mallory", "", 0),
        Forgery::EditedCopy => EventBody { actor: "mallory".into(), ..near },
        Forgery::Plausible | Forgery::SelfSignedGenesis => {
            let prev = if k == 0 { near } else { decode(&events[k - 1]) };
            EventBody {
                epoch: prev.epoch + 1,
                time_ms: prev.time_ms,
                changeset_index: 0,
                changeset_len: 1,
                actor: "mallory".into(),
                reason: String::new(),
                request_id: String::new(),
                kind: EventKind::ValueSet {
                    service: "svc-1".into(),
                    key: "k.0".into(),
                    value_json: "1".into(),
                    schema_hash: None,
                },
            }
        }
    };
    let bytes = body.encode();
    let hash = event_hash(seq, &prev_hash, &bytes);
    let store_key_id = if k < events.len() { events[k].key_id } else { h.next_key_id };
    let key_id = if claim_store_key { store_key_id } else { attacker.verifying_key().key_id() };
    let forged = StoredEvent { seq, body: bytes, prev_hash, hash, key_id, sig: attacker.sign_hash(&hash) };
    events.insert(k, forged);
    // A self-consistent forged genesis verifies on its own; the log breaks where the original
    // event 1 follows it (docs/format.md §10.5).
    let self_signed_genesis = k == 0 && matches!(forgery, Forgery::SelfSignedGenesis) && !claim_store_key;
    (events, Expect::FailsAt(if self_signed_genesis { 2 } else { seq }))
}

/// The error variant a flip of `field` must produce.
fn flip_error_matches(field: Field, err: &VerifyError) -> bool {
    match field {
        Field::Seq => matches!(err, VerifyError::SeqGap { .. }),
        Field::Body | Field::Hash => matches!(err, VerifyError::HashMismatch { .. }),
        Field::PrevHash => matches!(err, VerifyError::BrokenLink { .. } | VerifyError::BadGenesis { .. }),
        Field::KeyId => matches!(err, VerifyError::WrongKey { .. }),
        Field::Sig => matches!(err, VerifyError::BadSignature { .. }),
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn any_single_modification_is_detected_at_its_seq(
        history in arb_history(12..=20, 4),
        mutation in arb_mutation(),
    ) {
        let (events, expect) = mutate(&history, &mutation);
        let result = history.verify(&events).map(|_| ());
        match (&expect, &result) {
            (Expect::Verifies, Ok(())) => {}
            (Expect::FailsAt(seq), Err(err)) => {
                prop_assert_eq!(err.seq(), *seq, "{:?} of a {}-event log reported as: {}", mutation, history.events.len(), err);
                if let Mutation::Flip { field, .. } = &mutation {
                    prop_assert!(flip_error_matches(*field, err), "{:?} reported as: {}", mutation, err);
                }
            }
            _ => prop_assert!(false, "{:?}: expected {:?}, got {:?}", mutation, expect, result),
        }
    }
}

/// A fixed history: a 3-event changeset, then a 1-event changeset.
fn fixed_history(last_changeset_intents: usize) -> History {
    let set = |key: u8| Intent::Set { service: 0, key, value: Value::from(key) };
    let steps = [
        Step::Changeset { intents: vec![set(0), set(1), set(2)], clock_step_ms: 1, actor: 1 },
        Step::Changeset { intents: (3..).take(last_changeset_intents).map(set).collect(), clock_step_ms: 1, actor: 1 },
    ];
    History::build(StoreId([7; 16]), &steps)
}

/// Tail truncation is invisible to the chain unless it splits a changeset (§10.5).
#[test]
fn deleting_the_last_event_is_invisible_unless_it_splits_a_changeset() {
    for (intents, expect) in [(1, Expect::Verifies), (2, Expect::FailsAt(7))] {
        let h = fixed_history(intents);
        let mut events = h.events.clone();
        events.pop();
        let result = h.verify(&events).map(|_| ());
        match expect {
            Expect::Verifies => assert_eq!(result, Ok(())),
            Expect::FailsAt(seq) => assert_eq!(result, Err(VerifyError::Truncated { seq, start: 6 })),
        }
    }
}

/// A self-signed `store_created` forged in front of event 1 verifies on its own; the log is
/// reported where the original event 1 follows it, at seq 2 (§10.5).
#[test]
fn a_forged_self_signed_genesis_is_reported_at_seq_2() {
    let h = fixed_history(1);
    let (events, expect) = forge(&h, h.events.clone(), 0, Forgery::SelfSignedGenesis, false);
    assert_eq!(expect, Expect::FailsAt(2));
    assert_eq!(h.verify(&events).map(|_| ()), Err(VerifyError::SeqGap { seq: 2, found: 1 }));
    // The forged event alone is a consistent log, caught only by the trusted key.
    let alone = h.verify(&events[..1]).map(|_| ());
    assert!(matches!(alone, Err(VerifyError::UntrustedKey { .. })), "{alone:?}");
}
