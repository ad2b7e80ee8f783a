//! API tokens and audit events in `decide`/`apply`: only the hash is recorded, issuing and
//! revoking keep the epoch, bad requests change nothing, and revocation sticks.

use confstore_core::auth::{Role, new_token, token_hash};
use confstore_core::state::{Change, ChangesetDraft, RejectError, decide};
use confstore_core::{EventKind, State};

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

fn issue(id: &str, text: &str, role: Role, service: Option<&str>) -> Change {
    Change::IssueToken {
        token_id: id.into(),
        name: "ci".into(),
        role,
        service: service.map(str::to_owned),
        token_hash: token_hash(text),
    }
}

#[test]
fn issue_and_revoke_keep_the_epoch_and_record_only_the_hash() {
    let mut state = State::default();
    apply(&mut state, vec![Change::RegisterService { service: "web".into() }]).unwrap();
    let epoch = state.epoch;
    let t = new_token(&[9; 40]);
    let kinds = apply(&mut state, vec![issue(&t.id, &t.text, Role::ConfigWrite, Some("web"))]).unwrap();
    let EventKind::TokenIssued { token_hash: h, role, .. } = &kinds[0] else { panic!("{kinds:?}") };
    assert_eq!(*h, token_hash(&t.text));
    assert_eq!(role, "config.write");
    let body = format!("{kinds:?}");
    assert!(!body.contains(t.text.as_str()), "the token text must never be in an event");
    assert_eq!(state.epoch, epoch, "tokens are not configuration");
    let rec = &state.tokens[&t.id];
    assert!(rec.matches(&t.text) && rec.covers(Some("web")) && !rec.covers(Some("db")) && !rec.covers(None));
    apply(&mut state, vec![Change::RevokeToken { token_id: t.id.clone() }]).unwrap();
    assert!(state.tokens[&t.id].revoked_seq.is_some());
    assert_eq!(state.epoch, epoch);
    // Revoking twice, or an unknown id, is refused.
    assert!(apply(&mut state, vec![Change::RevokeToken { token_id: t.id.clone() }]).is_err());
    assert!(apply(&mut state, vec![Change::RevokeToken { token_id: "0011223344556677".into() }]).is_err());
}

#[test]
fn bad_token_requests_change_nothing() {
    let mut state = State::default();
    let t = new_token(&[3; 40]);
    let before = state.clone();
    for bad in [
        vec![issue("XYZ", &t.text, Role::Admin, None)],
        vec![issue(&t.id, &t.text, Role::Admin, Some("nope"))],
        vec![Change::IssueToken {
            token_id: t.id.clone(),
            name: String::new(),
            role: Role::Admin,
            service: None,
            token_hash: [0; 32],
        }],
        vec![issue(&t.id, &t.text, Role::Admin, None), Change::RevokeToken { token_id: t.id.clone() }],
    ] {
        assert!(apply(&mut state, bad).is_err());
        assert_eq!(state, before);
    }
    apply(&mut state, vec![issue(&t.id, &t.text, Role::Admin, None)]).unwrap();
    assert!(apply(&mut state, vec![issue(&t.id, &t.text, Role::Admin, None)]).is_err(), "ids are unique");
}

#[test]
fn a_denial_is_an_audit_event_alone() {
    let mut state = State::default();
    let deny = Change::DenyAccess {
        token_id: "0011223344556677".into(),
        method: "GET".into(),
        route: "/api/v1/audit".into(),
        required_role: Role::AuditRead,
        service: None,
    };
    let kinds = apply(&mut state, vec![deny.clone()]).unwrap();
    assert!(matches!(kinds[0], EventKind::AccessDenied { .. }));
    assert_eq!(state.epoch, 0);
    let bad_method = Change::DenyAccess {
        token_id: "0011223344556677".into(),
        method: "get\n".into(),
        route: "/x".into(),
        required_role: Role::AuditRead,
        service: None,
    };
    assert!(apply(&mut state, vec![bad_method]).is_err());
    assert!(apply(&mut state, vec![deny.clone(), deny]).is_err());
}

#[test]
fn a_denial_summary_is_an_audit_event_alone_with_sorted_counts() {
    use confstore_core::event::DenialCount;
    let count =
        |method: &str, route: &str, count: u64| DenialCount { method: method.into(), route: route.into(), count };
    let summary = |counts: Vec<DenialCount>, start: u64, end: u64, dropped: u64| Change::SummarizeDenials {
        token_id: "0011223344556677".into(),
        window_start_ms: start,
        window_end_ms: end,
        counts,
        dropped,
    };
    let mut state = State::default();
    let kinds =
        apply(&mut state, vec![summary(vec![count("PUT", "/b", 2), count("GET", "/a", 7)], 10, 20, 0)]).unwrap();
    let EventKind::AccessDeniedSummary { counts, .. } = &kinds[0] else { panic!("{kinds:?}") };
    assert_eq!(counts, &vec![count("GET", "/a", 7), count("PUT", "/b", 2)], "sorted by method, then route");
    assert_eq!(state.epoch, 0, "changes no configuration");
    apply(&mut state, vec![summary(Vec::new(), 1, 1, 3)]).expect("only dropped refusals");
    let before = state.clone();
    let too_many = (0..=confstore_core::limits::DENIAL_SUMMARY_ROUTES_MAX).map(|i| count("GET", &format!("/{i}"), 1));
    for bad in [
        vec![summary(vec![count("GET", "/a", 1)], 20, 10, 0)],
        vec![summary(Vec::new(), 1, 2, 0)],
        vec![summary(vec![count("GET", "/a", 0)], 1, 2, 0)],
        vec![summary(vec![count("GET", "/a", 1), count("GET", "/a", 2)], 1, 2, 0)],
        vec![summary(vec![count("get", "/a", 1)], 1, 2, 0)],
        vec![summary(too_many.collect(), 1, 2, 0)],
        vec![summary(vec![count("GET", "/a", 1)], 1, 2, 0), Change::RevokeToken { token_id: "x".into() }],
    ] {
        assert!(apply(&mut state, bad).is_err());
        assert_eq!(state, before);
    }
}
