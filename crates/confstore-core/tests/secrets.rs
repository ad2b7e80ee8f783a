//! Secrets in `decide`: the plaintext is validated against the schema when set, the
//! envelope is what the state keeps, a sealed secret satisfies `required` later, and a
//! reveal is an audit event that keeps the epoch.

use confstore_core::secret::{self, Plaintext};
use confstore_core::state::{Change, ChangesetDraft, RejectError, decide};
use confstore_core::{EventKind, State, StoreId};
use serde_json::json;
use zeroize::Zeroizing;

const STORE: StoreId = StoreId([4; 16]);

fn draft(changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft { actor: "t".into(), reason: String::new(), request_id: "r".into(), expected_epoch: None, changes }
}

fn apply(state: &mut State, changes: Vec<Change>) -> Result<Vec<EventKind>, RejectError> {
    let bodies = decide(state, &draft(changes), 1)?;
    for (i, b) in bodies.iter().enumerate() {
        state.apply_body(state.seq + 1 + i as u64, b);
    }
    Ok(bodies.into_iter().map(|b| b.kind).collect())
}

fn set_secret(service: &str, key: &str, json: &str) -> Change {
    let plaintext = Plaintext(Zeroizing::new(json.to_owned()));
    let envelope = secret::seal(&[1; 32], 1, [2; 12], &STORE, service, key, &plaintext);
    Change::SetSecret { service: service.into(), key: key.into(), plaintext, envelope }
}

#[test]
fn secrets_are_validated_when_set_and_satisfy_required_afterwards() {
    let mut state = State::default();
    apply(&mut state, vec![Change::RegisterService { service: "db".into() }]).unwrap();
    let schema = json!({"properties": {"password": {"type": "string", "minLength": 8}, "host": {"type": "string"}},
                        "required": ["password"]});
    // The schema cannot be set while the required key is missing.
    assert!(matches!(
        apply(&mut state, vec![Change::SetSchema { service: "db".into(), schema: schema.clone() }]),
        Err(RejectError::SchemaViolations(_))
    ));
    let kinds = apply(&mut state, vec![set_secret("db", "password", "\"short\"")]).unwrap();
    assert!(matches!(kinds[0], EventKind::SecretSet { .. }), "no schema yet: anything goes");
    apply(&mut state, vec![set_secret("db", "password", "\"long-enough\"")]).unwrap();
    apply(&mut state, vec![Change::SetSchema { service: "db".into(), schema }]).unwrap();
    // Validated against the schema when set: the plaintext, not the envelope.
    let too_short = apply(&mut state, vec![set_secret("db", "password", "\"short\"")]).unwrap_err();
    assert!(too_short.to_string().contains("db.password (minLength)"), "{too_short}");
    // Later changes: the sealed secret counts as present.
    apply(&mut state, vec![Change::Set { service: "db".into(), key: "host".into(), value: json!("db1") }]).unwrap();
    let stored = state.value("db", "password").unwrap();
    assert!(secret::envelope_of(stored).is_some() && !stored.contains("long-enough"));
}

#[test]
fn a_reveal_is_audit_only_and_alone() {
    let mut state = State::default();
    apply(&mut state, vec![Change::RegisterService { service: "db".into() }]).unwrap();
    apply(&mut state, vec![set_secret("db", "token", "\"t0k3n\"")]).unwrap();
    apply(&mut state, vec![Change::Set { service: "db".into(), key: "host".into(), value: json!("h") }]).unwrap();
    let epoch = state.epoch;
    let reveal = |key: &str| Change::RevealSecret { service: "db".into(), key: key.into() };
    let bodies = decide(&state, &draft(vec![reveal("token")]), 5).unwrap();
    assert_eq!(bodies[0].epoch, epoch, "a reveal does not advance the epoch");
    assert!(decide(&state, &draft(vec![reveal("host")]), 5).is_err(), "host is not a secret");
    assert!(decide(&state, &draft(vec![reveal("token"), reveal("token")]), 5).is_err(), "alone");
    let reserved = Change::Set { service: "db".into(), key: "x".into(), value: json!({"$secret": 1}) };
    assert!(decide(&state, &draft(vec![reserved]), 5).is_err());
}

#[test]
fn encryptions_are_counted_per_key_version_and_capped() {
    let mut state = State::default();
    apply(&mut state, vec![Change::RegisterService { service: "db".into() }]).unwrap();
    apply(&mut state, vec![set_secret("db", "a", "1"), set_secret("db", "b", "2")]).unwrap();
    assert_eq!(state.secret_encryptions.get(&1), Some(&2));
    state.secret_encryptions.insert(1, secret::ENCRYPTIONS_PER_KEY_MAX);
    let refused = apply(&mut state, vec![set_secret("db", "c", "3")]).unwrap_err();
    assert!(refused.to_string().contains("rotate the master key"), "{refused}");
}
