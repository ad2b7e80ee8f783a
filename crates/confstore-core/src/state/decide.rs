//! [`decide`]: a changeset draft becomes the event bodies of one changeset, or is refused
//! whole. The entry point checks what holds for every changeset (metadata, size,
//! compare-and-set), then hands each change to the function of its kind; what one change
//! tells the next (services registered, keys touched, schemas set, each checked service's
//! resulting configuration) is a [`Decision`].

use std::collections::BTreeMap;

use super::{
    Change, ChangesetDraft, RejectError, ServiceSchema, State, body, canonical_json, check_key_name, check_meta,
    check_service_name, invalid,
};
use crate::event::{EventBody, EventKind};
use crate::limits;
use crate::schema::CompiledSchema;

/// Turns a draft into the event bodies of one changeset, or refuses it. `now_ms` is the
/// caller's clock; the changeset's time is never earlier than the previous event's.
pub fn decide(state: &State, draft: &ChangesetDraft, now_ms: u64) -> Result<Vec<EventBody>, RejectError> {
    check_meta(draft)?;
    if draft.changes.is_empty() {
        return Err(RejectError::Empty);
    }
    if draft.changes.len() > limits::EVENTS_PER_CHANGESET_MAX {
        return Err(RejectError::TooManyChanges(draft.changes.len()));
    }
    if let Some(expected) = draft.expected_epoch
        && expected != state.epoch
    {
        return Err(RejectError::Conflict { expected, current: state.epoch });
    }
    let time_ms = now_ms.max(state.time_ms);
    super::staged::check_no_rollout_in_the_way(state, draft)?;
    if let Some(Change::Rollout(r)) = draft.changes.first() {
        return super::staged::decide_rollout(state, draft, r, time_ms);
    }
    let mut d = Decision::new(state, draft)?;
    let mut kinds = Vec::with_capacity(draft.changes.len());
    for (i, change) in draft.changes.iter().enumerate() {
        let kind = match change {
            Change::RevealSecret { service, key } => reveal_secret(state, draft, service, key)?,
            Change::IssueToken { token_id, name, role, service, token_hash } => {
                alone(draft)?;
                issue_token(state, token_id, name, *role, service.as_deref(), token_hash)?
            }
            Change::RevokeToken { token_id } => {
                alone(draft)?;
                revoke_token(state, token_id)?
            }
            Change::DenyAccess { token_id, method, route, required_role, service } => {
                alone(draft)?;
                deny_access(token_id, method, route, *required_role, service.as_deref())?
            }
            Change::SummarizeDenials { token_id, window_start_ms, window_end_ms, counts, dropped } => {
                alone(draft)?;
                summarize_denials(token_id, *window_start_ms, *window_end_ms, counts, *dropped)?
            }
            Change::SetSecret { service, key, plaintext, envelope } => {
                d.set_secret(service, key, plaintext, envelope)?
            }
            Change::RollBack { to_epoch, service } => roll_back(state, i, *to_epoch, service.as_deref())?,
            Change::RegisterService { service } => d.register_service(service)?,
            Change::SetSchema { service, .. } => d.set_schema(service)?,
            Change::Set { service, key, value } => d.set_value(service, key, value)?,
            Change::Unset { service, key } => d.unset_value(service, key)?,
            Change::Rollout(_) => {
                return Err(RejectError::Rollout(
                    "a rollout's start, promotion or abort opens its changeset, and only one".into(),
                ));
            }
        };
        kinds.push(kind);
    }
    d.check_schemas()?;
    // Audit-only changesets (a reveal) keep the epoch; everything else advances it by one.
    let epoch = state.epoch + u64::from(kinds.iter().any(EventKind::changes_config));
    let mut out: Vec<EventBody> = kinds.into_iter().map(|kind| body(epoch, time_ms, draft, kind)).collect();
    number(&mut out);
    Ok(out)
}

/// What deciding one changeset has gathered so far, for the configuration changes that
/// depend on each other: a service registered earlier in the changeset, a key changed twice,
/// a schema set anywhere in it.
pub(super) struct Decision<'d> {
    state: &'d State,
    /// Schemas set by this changeset. They apply to all of it: values record the final
    /// schema's hash and the final configuration is checked against it.
    new_schemas: BTreeMap<&'d str, (ServiceSchema, CompiledSchema)>,
    /// Services registered by this changeset so far.
    new_services: Vec<&'d str>,
    /// (service, key) pairs changed so far: each at most once per changeset.
    touched: Vec<(&'d str, &'d str)>,
    /// Keys each service gains, for the per-service bound.
    added_per_service: BTreeMap<&'d str, usize>,
    /// The configuration each changed service with a schema will have, for the schema check.
    /// Only services with a schema (set before or by this changeset) get one: copying a
    /// service's values costs in proportion to its size, and a write costs what it changes.
    working: BTreeMap<&'d str, BTreeMap<String, String>>,
}

impl<'d> Decision<'d> {
    /// Compiles every schema the draft sets (a bad one refuses the changeset).
    pub(super) fn new(state: &'d State, draft: &'d ChangesetDraft) -> Result<Self, RejectError> {
        let mut new_schemas = BTreeMap::new();
        for change in &draft.changes {
            if let Change::SetSchema { service, schema } = change {
                let invalid_schema = |why: String| RejectError::InvalidSchema { service: service.clone(), why };
                let compiled = crate::schema::compile(schema).map_err(invalid_schema)?;
                let json = canonical_json(schema).map_err(|e| invalid_schema(e.to_string()))?;
                let hash = crate::schema::schema_hash(&json);
                new_schemas.insert(service.as_str(), (ServiceSchema { json, hash }, compiled));
            }
        }
        Ok(Self {
            state,
            new_schemas,
            new_services: Vec::new(),
            touched: Vec::new(),
            added_per_service: BTreeMap::new(),
            working: BTreeMap::new(),
        })
    }

    /// The hash of the schema `service` will have after this changeset, if any.
    fn schema_hash_of(&self, service: &str) -> Option<[u8; 32]> {
        self.new_schemas.get(service).map(|s| s.0.hash).or_else(|| self.state.schemas.get(service).map(|s| s.hash))
    }

    /// Whether `service` will have a schema, so its resulting configuration is checked.
    fn checked(&self, service: &str) -> bool {
        self.new_schemas.contains_key(service) || self.state.schemas.contains_key(service)
    }

    /// The working copy of `service`'s configuration, made from its current `values`.
    fn working(
        &mut self,
        service: &'d str,
        values: Option<&BTreeMap<String, String>>,
    ) -> &mut BTreeMap<String, String> {
        self.working.entry(service).or_insert_with(|| values.cloned().unwrap_or_default())
    }

    /// The current values of `service` (`None`: registered by this changeset), or a refusal.
    fn known(&self, service: &str) -> Result<Option<&'d BTreeMap<String, String>>, RejectError> {
        known_service(self.state, &self.new_services, service)
    }

    /// `RegisterService`: a valid name, not taken, within the bound on services.
    fn register_service(&mut self, service: &'d str) -> Result<EventKind, RejectError> {
        check_service_name(service)?;
        if self.state.services.contains_key(service) || self.new_services.contains(&service) {
            return Err(RejectError::ServiceExists(service.to_owned()));
        }
        if self.state.services.len() + self.new_services.len() >= limits::SERVICES_MAX {
            return Err(RejectError::Limit(format!("the store already has {} services", limits::SERVICES_MAX)));
        }
        self.new_services.push(service);
        Ok(EventKind::ServiceRegistered { service: service.to_owned() })
    }

    /// `Set`: a known service, a valid key changed once, a value that is not a secret's
    /// shape and is exact JSON, within the bound on keys per service.
    pub(super) fn set_value(
        &mut self,
        service: &'d str,
        key: &'d str,
        value: &serde_json::Value,
    ) -> Result<EventKind, RejectError> {
        let values = self.known(service)?;
        check_key_name(key)?;
        mark_touched(&mut self.touched, service, key)?;
        if value.as_object().is_some_and(|o| o.contains_key("$secret")) {
            return Err(invalid(
                "value",
                key,
                "objects with a \"$secret\" member are reserved for secrets; use --secret",
            ));
        }
        let value_json = canonical_json(value)?;
        if values.is_none_or(|v| !v.contains_key(key)) {
            let added = self.added_per_service.entry(service).or_default();
            *added += 1;
            if values.map_or(0, BTreeMap::len) + *added > limits::KEYS_PER_SERVICE_MAX {
                return Err(RejectError::Limit(format!(
                    "service {service:?} would have more than {} keys",
                    limits::KEYS_PER_SERVICE_MAX
                )));
            }
        }
        if self.checked(service) {
            self.working(service, values).insert(key.to_owned(), value_json.clone());
        }
        Ok(EventKind::ValueSet {
            service: service.to_owned(),
            key: key.to_owned(),
            value_json,
            schema_hash: self.schema_hash_of(service),
        })
    }

    /// `Unset`: a known service, a valid key changed once, which is set.
    pub(super) fn unset_value(&mut self, service: &'d str, key: &'d str) -> Result<EventKind, RejectError> {
        let values = self.known(service)?;
        check_key_name(key)?;
        mark_touched(&mut self.touched, service, key)?;
        if values.is_none_or(|v| !v.contains_key(key)) {
            return Err(RejectError::NotSet { service: service.to_owned(), key: key.to_owned() });
        }
        if self.checked(service) {
            self.working(service, values).remove(key);
        }
        Ok(EventKind::ValueUnset {
            service: service.to_owned(),
            key: key.to_owned(),
            schema_hash: self.schema_hash_of(service),
        })
    }

    /// `SetSecret`: the master key version has encryptions left, then as [`Self::set_value`]
    /// (no key bound); the plaintext is validated, only the envelope is recorded.
    pub(super) fn set_secret(
        &mut self,
        service: &'d str,
        key: &'d str,
        plaintext: &crate::secret::Plaintext,
        envelope: &crate::secret::Envelope,
    ) -> Result<EventKind, RejectError> {
        let used = self.state.secret_encryptions.get(&envelope.key_version).copied().unwrap_or(0);
        if used + 1 > crate::secret::ENCRYPTIONS_PER_KEY_MAX {
            return Err(RejectError::Limit(format!(
                "master key version {} has encrypted {used} secrets, the safe limit for random nonces; \
                 rotate the master key",
                envelope.key_version
            )));
        }
        let values = self.known(service)?;
        check_key_name(key)?;
        mark_touched(&mut self.touched, service, key)?;
        let parsed: serde_json::Value =
            serde_json::from_str(&plaintext.0).map_err(|_| invalid("secret value", "", "is not JSON"))?;
        canonical_json(&parsed)?;
        if self.checked(service) {
            self.working(service, values).insert(key.to_owned(), plaintext.0.to_string());
        }
        Ok(EventKind::SecretSet {
            service: service.to_owned(),
            key: key.to_owned(),
            key_version: envelope.key_version,
            nonce: envelope.nonce,
            ciphertext: envelope.ciphertext.clone(),
            schema_hash: self.schema_hash_of(service),
        })
    }

    /// `SetSchema`: a known service; the schema was compiled by [`Self::new`], and the
    /// service's resulting configuration is checked against it at the end.
    fn set_schema(&mut self, service: &'d str) -> Result<EventKind, RejectError> {
        let values = self.known(service)?;
        self.working(service, values);
        let (schema, _) = &self.new_schemas[service];
        Ok(EventKind::SchemaSet {
            service: service.to_owned(),
            schema_json: schema.json.clone(),
            schema_hash: schema.hash,
        })
    }

    /// Validates every changed service's resulting configuration against its schema.
    pub(super) fn check_schemas(&self) -> Result<(), RejectError> {
        check_schemas(self.state, &self.new_schemas, &self.working)
    }
}

/// `RollBack`: the first change, to an epoch before the current one, of a known service or
/// of all. The sets and unsets that follow it are decided as any others.
fn roll_back(state: &State, index: usize, to_epoch: u64, service: Option<&str>) -> Result<EventKind, RejectError> {
    if index != 0 {
        return Err(RejectError::MisplacedRollback);
    }
    if to_epoch >= state.epoch {
        return Err(RejectError::RollbackTarget { to: to_epoch, current: state.epoch });
    }
    if let Some(s) = service {
        known_service(state, &[], s)?;
    }
    Ok(EventKind::RolledBack { from_epoch: state.epoch, to_epoch, service: service.map(str::to_owned) })
}

/// `RevealSecret`: alone in its changeset, of a key that holds a secret (an audit event).
fn reveal_secret(state: &State, draft: &ChangesetDraft, service: &str, key: &str) -> Result<EventKind, RejectError> {
    if draft.changes.len() != 1 {
        return Err(invalid("changeset", "", "a secret reveal is recorded alone"));
    }
    let is_secret = known_service(state, &[], service)?
        .and_then(|v| v.get(key))
        .is_some_and(|v| crate::secret::envelope_of(v).is_some());
    if !is_secret {
        return Err(RejectError::NotSet { service: service.to_owned(), key: format!("{key} (as a secret)") });
    }
    Ok(EventKind::SecretRevealed { service: service.to_owned(), key: key.to_owned() })
}

/// `IssueToken`: a well-formed, unused id, a printable name, within the bound on tokens,
/// scoped to a known service if scoped. Only the token's hash is recorded.
fn issue_token(
    state: &State,
    token_id: &str,
    name: &str,
    role: crate::auth::Role,
    service: Option<&str>,
    token_hash: &[u8; 32],
) -> Result<EventKind, RejectError> {
    if !crate::auth::is_token_id(token_id) {
        return Err(invalid("token id", token_id, "must be 16 lowercase hex digits"));
    }
    if name.is_empty() || name.len() > limits::TOKEN_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(invalid(
            "token name",
            name,
            format!("must be 1..={} bytes without control characters", limits::TOKEN_NAME_BYTES_MAX),
        ));
    }
    if state.tokens.contains_key(token_id) {
        return Err(invalid("token id", token_id, "is taken; draw a new token"));
    }
    if state.tokens.len() >= limits::TOKENS_MAX {
        return Err(RejectError::Limit(format!("the store already has {} tokens", limits::TOKENS_MAX)));
    }
    if let Some(s) = service {
        known_service(state, &[], s)?;
    }
    Ok(EventKind::TokenIssued {
        token_id: token_id.to_owned(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        service: service.map(str::to_owned),
        token_hash: *token_hash,
    })
}

/// `RevokeToken`: a token that exists and is not revoked yet.
fn revoke_token(state: &State, token_id: &str) -> Result<EventKind, RejectError> {
    match state.tokens.get(token_id) {
        None => Err(invalid("token id", token_id, "no such token; `confstore token list` shows them")),
        Some(t) if t.revoked_seq.is_some() => Err(invalid("token id", token_id, "is revoked already")),
        Some(_) => Ok(EventKind::TokenRevoked { token_id: token_id.to_owned() }),
    }
}

/// `DenyAccess`: a refused request, with a method and route of the right shape.
fn deny_access(
    token_id: &str,
    method: &str,
    route: &str,
    required_role: crate::auth::Role,
    service: Option<&str>,
) -> Result<EventKind, RejectError> {
    check_method_route(method, route)?;
    Ok(EventKind::AccessDenied {
        token_id: token_id.to_owned(),
        method: method.to_owned(),
        route: route.to_owned(),
        required_role: required_role.as_str().to_owned(),
        service: service.map(str::to_owned),
    })
}

/// `SummarizeDenials`: a well-formed summary ([`check_denial_summary`]), its counts sorted.
fn summarize_denials(
    token_id: &str,
    window_start_ms: u64,
    window_end_ms: u64,
    counts: &[crate::event::DenialCount],
    dropped: u64,
) -> Result<EventKind, RejectError> {
    check_denial_summary(token_id, window_start_ms, window_end_ms, counts, dropped)?;
    let mut counts = counts.to_vec();
    counts.sort();
    Ok(EventKind::AccessDeniedSummary {
        token_id: token_id.to_owned(),
        window_start_ms,
        window_end_ms,
        counts,
        dropped,
    })
}

/// The method and route of a recorded refusal.
fn check_method_route(method: &str, route: &str) -> Result<(), RejectError> {
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid("method", method, "must be an HTTP method name"));
    }
    if route.len() > limits::ROUTE_BYTES_MAX || route.chars().any(char::is_control) {
        return Err(invalid("route", route, "too long or has control characters"));
    }
    Ok(())
}

/// An `access_denied_summary`: a token id, an ordered window, and at least one refusal,
/// each (method, route) once with a count of at least 1.
fn check_denial_summary(
    token_id: &str,
    start_ms: u64,
    end_ms: u64,
    counts: &[crate::event::DenialCount],
    dropped: u64,
) -> Result<(), RejectError> {
    if !crate::auth::is_token_id(token_id) {
        return Err(invalid("token id", token_id, "must be 16 lowercase hex digits"));
    }
    if start_ms > end_ms {
        return Err(invalid("denial window", &format!("{start_ms}..{end_ms}"), "must not end before it starts"));
    }
    if counts.len() > limits::DENIAL_SUMMARY_ROUTES_MAX {
        return Err(RejectError::Limit(format!(
            "a denial summary itemises at most {} routes, not {}; count the rest as dropped",
            limits::DENIAL_SUMMARY_ROUTES_MAX,
            counts.len()
        )));
    }
    if counts.is_empty() && dropped == 0 {
        return Err(invalid("denial summary", token_id, "counts no refusal"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in counts {
        check_method_route(&c.method, &c.route)?;
        if c.count == 0 {
            return Err(invalid("denial count", &c.route, "must be at least 1"));
        }
        if !seen.insert((c.method.as_str(), c.route.as_str())) {
            return Err(invalid("denial summary", &c.route, "names a (method, route) twice"));
        }
    }
    Ok(())
}

/// Audit and token changes are recorded one per changeset.
pub(super) fn alone(draft: &ChangesetDraft) -> Result<(), RejectError> {
    if draft.changes.len() == 1 {
        Ok(())
    } else {
        Err(invalid("changeset", "", "token and audit changes are recorded alone, one per changeset"))
    }
}

/// Validates every changed service's resulting configuration against its schema.
fn check_schemas(
    state: &State,
    new_schemas: &BTreeMap<&str, (ServiceSchema, CompiledSchema)>,
    working: &BTreeMap<&str, BTreeMap<String, String>>,
) -> Result<(), RejectError> {
    let mut violations = Vec::new();
    for (service, values) in working {
        let found = match new_schemas.get(service) {
            Some((_, compiled)) => compiled.check(values),
            None => match state.schemas.get(*service) {
                Some(schema) => crate::schema::compiled(&schema.json, schema.hash)
                    .map_err(|why| RejectError::InvalidSchema { service: (*service).to_owned(), why })?
                    .check(values),
                None => Vec::new(),
            },
        };
        violations.extend(found.into_iter().map(|v| ((*service).to_owned(), v)));
    }
    if violations.is_empty() { Ok(()) } else { Err(RejectError::SchemaViolations(violations)) }
}

pub(super) fn known_service<'s>(
    state: &'s State,
    new_services: &[&str],
    service: &str,
) -> Result<Option<&'s BTreeMap<String, String>>, RejectError> {
    match state.services.get(service) {
        Some(values) => Ok(Some(values)),
        None if new_services.contains(&service) => Ok(None),
        None => Err(RejectError::UnknownService(service.to_owned())),
    }
}

fn mark_touched<'d>(touched: &mut Vec<(&'d str, &'d str)>, service: &'d str, key: &'d str) -> Result<(), RejectError> {
    if touched.contains(&(service, key)) {
        return Err(RejectError::Duplicate { service: service.to_owned(), key: key.to_owned() });
    }
    touched.push((service, key));
    Ok(())
}

pub(super) fn number(bodies: &mut [EventBody]) {
    let len = u32::try_from(bodies.len()).unwrap_or_else(|_| unreachable!("changeset length is bounded by limits"));
    for (i, b) in (0u32..).zip(bodies.iter_mut()) {
        b.changeset_index = i;
        b.changeset_len = len;
    }
}

#[cfg(test)]
mod tests {
    //! One test per change kind decided here; secrets, tokens and denials are tested in
    //! `tests/secrets.rs` and `tests/tokens.rs`.

    use serde_json::json;

    use super::*;

    fn draft(changes: Vec<Change>) -> ChangesetDraft {
        ChangesetDraft {
            actor: "t".into(),
            reason: String::new(),
            request_id: "r".into(),
            expected_epoch: None,
            changes,
        }
    }

    /// Decides `changes` and folds the bodies in; returns their kinds.
    fn apply(state: &mut State, changes: Vec<Change>) -> Result<Vec<EventKind>, RejectError> {
        let bodies = decide(state, &draft(changes), 1)?;
        for (i, b) in bodies.iter().enumerate() {
            state.apply_body(state.seq + 1 + i as u64, b);
        }
        Ok(bodies.into_iter().map(|b| b.kind).collect())
    }

    fn register(service: &str) -> Change {
        Change::RegisterService { service: service.into() }
    }

    fn set(service: &str, key: &str, value: serde_json::Value) -> Change {
        Change::Set { service: service.into(), key: key.into(), value }
    }

    fn unset(service: &str, key: &str) -> Change {
        Change::Unset { service: service.into(), key: key.into() }
    }

    #[test]
    fn register_service_once_with_a_valid_name() {
        let mut state = State::default();
        let kinds = apply(&mut state, vec![register("a"), register("b")]).unwrap();
        assert_eq!(
            kinds,
            [
                EventKind::ServiceRegistered { service: "a".into() },
                EventKind::ServiceRegistered { service: "b".into() }
            ]
        );
        assert_eq!(state.epoch, 1, "one changeset, one epoch");
        assert!(matches!(apply(&mut state, vec![register("a")]), Err(RejectError::ServiceExists(s)) if s == "a"));
        assert!(matches!(apply(&mut state, vec![register("c"), register("c")]), Err(RejectError::ServiceExists(_))));
        assert!(matches!(apply(&mut state, vec![register("Bad Name")]), Err(RejectError::Invalid { .. })));
        assert_eq!(state.epoch, 1, "a refusal changes nothing");
    }

    #[test]
    fn set_value_in_a_known_service_records_canonical_json() {
        let mut state = State::default();
        // A service registered earlier in the same changeset is known.
        let kinds = apply(&mut state, vec![register("s"), set("s", "k", json!({"b": 1, "a": [true]}))]).unwrap();
        assert_eq!(
            kinds[1],
            EventKind::ValueSet {
                service: "s".into(),
                key: "k".into(),
                value_json: r#"{"a":[true],"b":1}"#.into(),
                schema_hash: None
            }
        );
        assert_eq!(state.value("s", "k"), Some(r#"{"a":[true],"b":1}"#));
        assert!(matches!(apply(&mut state, vec![set("nope", "k", json!(1))]), Err(RejectError::UnknownService(_))));
        assert!(matches!(
            apply(&mut state, vec![set("s", "k", json!(1)), set("s", "k", json!(2))]),
            Err(RejectError::Duplicate { .. })
        ));
        assert!(matches!(
            apply(&mut state, vec![set("s", "k", json!({"$secret": true}))]),
            Err(RejectError::Invalid { .. })
        ));
        assert_eq!(state.value("s", "k"), Some(r#"{"a":[true],"b":1}"#));
    }

    #[test]
    fn unset_value_only_of_a_key_that_is_set() {
        let mut state = State::default();
        apply(&mut state, vec![register("s"), set("s", "k", json!(1))]).unwrap();
        assert!(matches!(apply(&mut state, vec![unset("s", "other")]), Err(RejectError::NotSet { .. })));
        let kinds = apply(&mut state, vec![unset("s", "k")]).unwrap();
        assert_eq!(kinds, [EventKind::ValueUnset { service: "s".into(), key: "k".into(), schema_hash: None }]);
        assert_eq!(state.value("s", "k"), None);
        assert!(matches!(apply(&mut state, vec![unset("s", "k")]), Err(RejectError::NotSet { .. })));
    }

    #[test]
    fn set_schema_applies_to_the_whole_changeset_and_later_writes() {
        let mut state = State::default();
        apply(&mut state, vec![register("s")]).unwrap();
        let schema = json!({"properties": {"port": {"type": "integer"}}});
        // The value set before the schema in the same changeset is checked against it and
        // records its hash.
        let kinds = apply(
            &mut state,
            vec![set("s", "port", json!(80)), Change::SetSchema { service: "s".into(), schema: schema.clone() }],
        )
        .unwrap();
        let EventKind::SchemaSet { schema_hash, .. } = &kinds[1] else { panic!("{kinds:?}") };
        assert!(matches!(&kinds[0], EventKind::ValueSet { schema_hash: Some(h), .. } if h == schema_hash));
        assert!(matches!(apply(&mut state, vec![set("s", "port", json!("x"))]), Err(RejectError::SchemaViolations(_))));
        assert!(matches!(
            apply(&mut state, vec![Change::SetSchema { service: "s".into(), schema: json!({"type": 5}) }]),
            Err(RejectError::InvalidSchema { .. })
        ));
        assert!(matches!(
            apply(&mut state, vec![Change::SetSchema { service: "nope".into(), schema }]),
            Err(RejectError::UnknownService(_))
        ));
    }

    #[test]
    fn roll_back_comes_first_and_goes_back() {
        let mut state = State::default();
        apply(&mut state, vec![register("s"), set("s", "k", json!(1))]).unwrap();
        apply(&mut state, vec![set("s", "k", json!(2))]).unwrap();
        let back = |to_epoch, service: Option<&str>| Change::RollBack { to_epoch, service: service.map(Into::into) };
        let kinds = apply(&mut state, vec![back(1, Some("s")), set("s", "k", json!(1))]).unwrap();
        assert_eq!(kinds[0], EventKind::RolledBack { from_epoch: 2, to_epoch: 1, service: Some("s".into()) });
        assert_eq!(state.epoch, 3);
        assert!(matches!(
            apply(&mut state, vec![set("s", "k", json!(5)), back(1, None)]),
            Err(RejectError::MisplacedRollback)
        ));
        assert!(matches!(
            apply(&mut state, vec![back(3, None)]),
            Err(RejectError::RollbackTarget { to: 3, current: 3 })
        ));
        assert!(matches!(apply(&mut state, vec![back(1, Some("nope"))]), Err(RejectError::UnknownService(_))));
    }
}
