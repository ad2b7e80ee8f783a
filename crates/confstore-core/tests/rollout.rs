//! Staged rollouts in `decide`/`apply` (docs/format.md §21, docs/adr/0030): a start keeps
//! the epoch and the current configuration, stages checked changes with secrets sealed; a
//! promotion writes them as ordinary events; an abort writes nothing else; other writes to
//! the service (and to `global`) are refused while the rollout is active; bad requests
//! change nothing.

use confstore_core::rollout::{Cohort, CohortMember, Outcome, StagedChange};
use confstore_core::secret::{self, Plaintext};
use confstore_core::state::{Change, ChangesetDraft, RejectError, RolloutChange, decide};
use confstore_core::{EventKind, State, StoreId};
use serde_json::json;
use zeroize::Zeroizing;

fn draft(changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft {
        actor: "op".into(),
        reason: "canary".into(),
        request_id: "r".into(),
        expected_epoch: None,
        changes,
    }
}

fn apply(state: &mut State, changes: Vec<Change>) -> Result<Vec<EventKind>, RejectError> {
    let bodies = decide(state, &draft(changes), 1)?;
    for (i, b) in bodies.iter().enumerate() {
        state.apply_body(state.seq + 1 + i as u64, b);
    }
    Ok(bodies.into_iter().map(|b| b.kind).collect())
}

fn set(service: &str, key: &str, value: serde_json::Value) -> Change {
    Change::Set { service: service.into(), key: key.into(), value }
}

fn start(service: &str, cohort: Cohort) -> Change {
    Change::Rollout(RolloutChange::Start { service: service.into(), cohort, bake_ms: 60_000, auto: true })
}

fn promote(service: &str, seq: u64) -> Change {
    Change::Rollout(RolloutChange::Promote {
        service: service.into(),
        rollout_seq: seq,
        automatic: false,
        cohort: vec![],
    })
}

fn abort(service: &str, seq: u64, cohort: Vec<CohortMember>) -> Change {
    Change::Rollout(RolloutChange::Abort { service: service.into(), rollout_seq: seq, automatic: true, cohort })
}

fn store() -> State {
    let mut state = State::default();
    apply(&mut state, vec![Change::RegisterService { service: "web".into() }]).unwrap();
    apply(&mut state, vec![Change::RegisterService { service: "db".into() }]).unwrap();
    apply(&mut state, vec![set("web", "timeout", json!(5)), set("web", "old", json!(true))]).unwrap();
    state
}

#[test]
fn a_rollout_stages_then_promotes_as_ordinary_events() {
    let mut state = store();
    let (epoch, version) = (state.epoch, state.versions["web"]);
    let plaintext = Plaintext(Zeroizing::new("\"hunter22\"".into()));
    let envelope = secret::seal(&[1; 32], 1, [2; 12], &StoreId([4; 16]), "web", "password", &plaintext);
    let kinds = apply(
        &mut state,
        vec![
            start("web", Cohort::Percent { basis_points: 2_000 }),
            set("web", "timeout", json!(9)),
            Change::Unset { service: "web".into(), key: "old".into() },
            Change::SetSecret { service: "web".into(), key: "password".into(), plaintext, envelope },
        ],
    )
    .unwrap();
    assert_eq!(kinds.len(), 1, "a start is one event");
    let EventKind::RolloutStarted { changes, base_epoch, .. } = &kinds[0] else { panic!("{kinds:?}") };
    assert_eq!(*base_epoch, version.changed_epoch);
    assert_eq!(changes[0], StagedChange::Set { key: "timeout".into(), value_json: "9".into() });
    assert_eq!(changes[1], StagedChange::Unset { key: "old".into() });
    assert!(matches!(&changes[2], StagedChange::Secret { key, .. } if key == "password"));
    assert!(!format!("{kinds:?}").contains("hunter22"), "a staged secret stays sealed");
    assert_eq!((state.epoch, state.versions["web"]), (epoch, version), "the current configuration is unchanged");
    assert_eq!(state.value("web", "timeout"), Some("5"));
    let seq = state.seq;
    assert_eq!(state.rollouts["web"].seq, seq);

    let kinds = apply(&mut state, vec![promote("web", seq)]).unwrap();
    assert!(matches!(&kinds[0], EventKind::RolloutPromoted { rollout_seq, .. } if *rollout_seq == seq));
    assert!(matches!(&kinds[1], EventKind::ValueSet { key, value_json, .. } if key == "timeout" && value_json == "9"));
    assert!(matches!(&kinds[2], EventKind::ValueUnset { key, .. } if key == "old"));
    assert!(matches!(&kinds[3], EventKind::SecretSet { key, .. } if key == "password"));
    assert_eq!(state.epoch, epoch + 1);
    assert_eq!(state.versions["web"].prev_epoch, version.changed_epoch);
    assert_eq!(state.value("web", "timeout"), Some("9"));
    assert_eq!(state.value("web", "old"), None);
    assert!(state.rollouts.is_empty());
    assert_eq!(state.rollouts_ended["web"].outcome, Outcome::Promoted);
    assert_eq!(state.rollouts_ended["web"].promoted_epoch, epoch + 1);
    // Decided already: a second promotion is refused, naming what happened.
    let again = apply(&mut state, vec![promote("web", seq)]).unwrap_err();
    assert!(again.to_string().contains("promoted already"), "{again}");
}

#[test]
fn an_abort_keeps_the_configuration_and_records_the_evidence() {
    let mut state = store();
    apply(&mut state, vec![start("web", Cohort::Instances(vec!["web-1".into()])), set("web", "timeout", json!(1))])
        .unwrap();
    let (seq, epoch) = (state.seq, state.epoch);
    let evidence = vec![CohortMember { instance: "web-1".into(), applied: true, healthy: Some(false), online: true }];
    let kinds = apply(&mut state, vec![abort("web", seq, evidence.clone())]).unwrap();
    assert_eq!(
        kinds,
        vec![EventKind::RolloutAborted { service: "web".into(), rollout_seq: seq, automatic: true, cohort: evidence }]
    );
    assert_eq!(state.epoch, epoch);
    assert_eq!(state.value("web", "timeout"), Some("5"));
    assert_eq!(state.rollouts_ended["web"].outcome, Outcome::Aborted);
    // A new rollout may start now.
    apply(&mut state, vec![start("web", Cohort::Percent { basis_points: 100 }), set("web", "timeout", json!(2))])
        .unwrap();
}

#[test]
fn other_writes_wait_for_the_rollout() {
    let mut state = store();
    apply(&mut state, vec![start("web", Cohort::Percent { basis_points: 5_000 }), set("web", "timeout", json!(1))])
        .unwrap();
    let seq = state.seq;
    let refused = |state: &mut State, changes: Vec<Change>| {
        let before = state.clone();
        let e = apply(state, changes).unwrap_err();
        assert_eq!(*state, before, "nothing changed");
        e
    };
    for changes in [
        vec![set("web", "other", json!(1))],
        vec![Change::Unset { service: "web".into(), key: "old".into() }],
        vec![Change::SetSchema { service: "web".into(), schema: json!({}) }],
        vec![set("global", "region", json!("eu"))],
        vec![Change::RollBack { to_epoch: 1, service: None }],
        vec![start("web", Cohort::Percent { basis_points: 100 }), set("web", "x", json!(1))],
    ] {
        let e = refused(&mut state, changes);
        assert!(
            matches!(e, RejectError::RolloutInProgress { ref service, rollout_seq } if service == "web" && rollout_seq == seq),
            "{e}"
        );
        assert!(e.to_string().contains("promote or abort it first"), "{e}");
    }
    // Other services are free.
    apply(&mut state, vec![set("db", "pool", json!(4))]).unwrap();
}

#[test]
fn bad_rollout_requests_change_nothing() {
    let mut state = store();
    apply(
        &mut state,
        vec![Change::SetSchema { service: "db".into(), schema: json!({"properties": {"pool": {"type": "integer"}}}) }],
    )
    .unwrap();
    let before = state.clone();
    let cases: Vec<(Vec<Change>, &str)> = vec![
        (vec![start("web", Cohort::Percent { basis_points: 100 })], "at least one change"),
        (vec![start("nope", Cohort::Percent { basis_points: 100 }), set("nope", "a", json!(1))], "unknown service"),
        (vec![start("global", Cohort::Percent { basis_points: 100 }), set("global", "a", json!(1))], "global"),
        (vec![start("web", Cohort::Percent { basis_points: 0 }), set("web", "a", json!(1))], "cohort"),
        (vec![start("web", Cohort::Instances(vec![])), set("web", "a", json!(1))], "cohort"),
        (vec![start("web", Cohort::Percent { basis_points: 100 }), set("db", "pool", json!(1))], "only"),
        (vec![start("db", Cohort::Percent { basis_points: 100 }), set("db", "pool", json!("x"))], "db.pool"),
        (
            vec![
                start("web", Cohort::Percent { basis_points: 100 }),
                set("web", "a", json!(1)),
                set("web", "a", json!(2)),
            ],
            "more than once",
        ),
        (vec![set("web", "a", json!(1)), start("web", Cohort::Percent { basis_points: 100 })], "opens its changeset"),
        (vec![promote("web", 99)], "service \"web\" has no active rollout"),
        (vec![abort("web", 99, vec![])], "no active rollout"),
        (
            vec![
                Change::Rollout(RolloutChange::Start {
                    service: "web".into(),
                    cohort: Cohort::Percent { basis_points: 100 },
                    bake_ms: 10,
                    auto: true,
                }),
                set("web", "a", json!(1)),
            ],
            "bake time",
        ),
    ];
    for (changes, why) in cases {
        let e = apply(&mut state, changes).unwrap_err().to_string();
        assert!(e.contains(why), "{e:?} should say {why:?}");
        assert_eq!(state, before);
    }
    apply(&mut state, vec![start("web", Cohort::Percent { basis_points: 100 }), set("web", "a", json!(1))]).unwrap();
    let seq = state.seq;
    let e = apply(&mut state, vec![promote("web", seq), set("db", "pool", json!(1))]).unwrap_err().to_string();
    assert!(e.contains("alone"), "{e}");
    let e = apply(&mut state, vec![promote("web", seq + 1)]).unwrap_err().to_string();
    assert!(e.contains("the active rollout of \"web\" is 7, not 8"), "{e}");
}

#[test]
fn rollout_events_round_trip_and_show_no_secret() {
    let mut state = store();
    let plaintext = Plaintext(Zeroizing::new("\"s3cret-value\"".into()));
    let envelope = secret::seal(&[1; 32], 1, [7; 12], &StoreId([4; 16]), "web", "k", &plaintext);
    let bodies = decide(
        &state,
        &draft(vec![
            start("web", Cohort::Instances(vec!["a".into(), "b".into()])),
            Change::SetSecret { service: "web".into(), key: "k".into(), plaintext, envelope },
        ]),
        1,
    )
    .unwrap();
    let bytes = bodies[0].encode();
    assert_eq!(confstore_core::EventBody::decode(&bytes).unwrap(), bodies[0]);
    assert_eq!(bodies[0].kind.variant(), 14);
    let shown = bodies[0].to_json().to_string();
    assert!(shown.contains("\"type\":\"rollout_started\"") && !shown.contains("s3cret"), "{shown}");
    state.apply_body(state.seq + 1, &bodies[0]);
    assert_eq!(state.secret_encryptions[&1], 1, "the staged secret's encryption counts");
}
