//! The service-snapshot projection (docs/design.md §8): what a service consumes. A pure function
//! of the configuration state: for each key, the service's own value, else the value in
//! the reserved `global` scope, else the schema's default — with where it came from — plus
//! the store id, generation, epoch and schema hash it reflects.
//!
//! Architecture invariant: no I/O, no other projection; it reads only [`State`].

use std::collections::BTreeMap;

use confstore_core::State;
use serde_json::{Map, Value, json};

pub use confstore_core::jws::JwsError;
pub use confstore_core::state::GLOBAL_SCOPE;

/// Where a snapshot value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Set on the service itself.
    Service,
    /// Inherited from the `global` scope.
    Global,
    /// The service schema's default.
    Default,
}

impl Source {
    /// Lowercase name, as in the JSON form.
    pub fn name(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Global => "global",
            Self::Default => "default",
        }
    }
}

/// One resolved key.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The value.
    pub value: Value,
    /// Where it came from.
    pub source: Source,
}

/// A service's resolved configuration at one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSnapshot {
    /// The service.
    pub service: String,
    /// Store id (hex).
    pub store_id: String,
    /// Generation of the store.
    pub generation: u64,
    /// The epoch this snapshot reflects.
    pub epoch: u64,
    /// The service's version at that epoch: the changeset that last changed it, and the one
    /// before (the live stream's gap detection, docs/format.md §14).
    pub version: confstore_core::state::ServiceVersion,
    /// Hash (hex) of the service's schema, if it has one.
    pub schema_hash: Option<String>,
    /// Every key, resolved.
    pub values: BTreeMap<String, Resolved>,
}

/// Why no snapshot can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The service is not registered at this point.
    #[error("unknown service {0:?}")]
    UnknownService(String),
}

/// How one service's keys resolve: its own values, then `global`'s where its schema allows,
/// then its schema's defaults. Shared by [`project`] (every key) and [`delta`] (some keys),
/// so the two cannot disagree.
struct Resolver<'s> {
    own: &'s BTreeMap<String, String>,
    global: Option<&'s BTreeMap<String, String>>,
    schema: Option<Value>,
    allows_any: bool,
}

impl<'s> Resolver<'s> {
    fn new(state: &'s State, service: &str) -> Result<Self, SnapshotError> {
        let own = state.services.get(service).ok_or_else(|| SnapshotError::UnknownService(service.to_owned()))?;
        let schema: Option<Value> = state.schemas.get(service).and_then(|s| serde_json::from_str(&s.json).ok());
        let allows_any = schema.as_ref().is_none_or(|s| {
            s.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false))
                || s.get("unevaluatedProperties").is_some_and(|a| a != &Value::Bool(false))
        });
        let global = if service == GLOBAL_SCOPE { None } else { state.services.get(GLOBAL_SCOPE) };
        Ok(Self { own, global: global.map(|g| &**g), schema, allows_any })
    }

    fn properties(&self) -> Option<&Map<String, Value>> {
        self.schema.as_ref().and_then(|s| s.get("properties")).and_then(Value::as_object)
    }

    fn inherits(&self, key: &str) -> bool {
        self.allows_any || self.properties().is_some_and(|p| p.contains_key(key))
    }

    /// One key, or `None` when nothing gives it a value.
    fn resolve(&self, key: &str) -> Option<Resolved> {
        if let Some(v) = self.own.get(key) {
            return Some(Resolved { value: parse(v), source: Source::Service });
        }
        if let Some(v) = self.global.and_then(|g| g.get(key)).filter(|_| self.inherits(key)) {
            return Some(Resolved { value: parse(v), source: Source::Global });
        }
        let default = self.properties().and_then(|p| p.get(key)).and_then(|p| p.get("default"))?;
        Some(Resolved { value: default.clone(), source: Source::Default })
    }

    /// Every key.
    fn all(&self) -> BTreeMap<String, Resolved> {
        let mut values: BTreeMap<String, Resolved> = BTreeMap::new();
        for (k, v) in self.own {
            values.insert(k.clone(), Resolved { value: parse(v), source: Source::Service });
        }
        for (k, v) in self.global.into_iter().flatten() {
            if !values.contains_key(k) && self.inherits(k) {
                values.insert(k.clone(), Resolved { value: parse(v), source: Source::Global });
            }
        }
        if let Some(props) = self.properties() {
            for (k, p) in props {
                if let (false, Some(d)) = (values.contains_key(k), p.get("default")) {
                    values.insert(k.clone(), Resolved { value: d.clone(), source: Source::Default });
                }
            }
        }
        values
    }
}

/// Every service's snapshot document at the state's head, by service name (what the LKG
/// file holds). A service whose snapshot cannot be projected is left out.
pub fn project_all(state: &State, store_id: &str, generation: u64) -> std::collections::BTreeMap<String, Value> {
    state
        .services
        .keys()
        .filter_map(|s| project(state, store_id, generation, s).ok().map(|p| (s.clone(), p.to_json())))
        .collect()
}

/// Projects `service` from `state`.
pub fn project(
    state: &State,
    store_id: &str,
    generation: u64,
    service: &str,
) -> Result<ServiceSnapshot, SnapshotError> {
    let values = Resolver::new(state, service)?.all();
    Ok(at_head(state, store_id, generation, service, values))
}

/// The part of `state` that `service`'s snapshot reads ([`project`]): its own values,
/// `global`'s, its schema and version, the epoch and the generation, so that the snapshot
/// can be rendered on another thread while `state` moves on (the publisher's retained
/// snapshots of large services: docs/adr/0033). The two maps are shared, not copied
/// ([`confstore_core::state::Values`]).
pub fn service_view(state: &State, service: &str) -> State {
    let mut view = State {
        epoch: state.epoch,
        seq: state.seq,
        time_ms: state.time_ms,
        generation: state.generation,
        ..State::default()
    };
    for scope in [service, GLOBAL_SCOPE] {
        if let Some(values) = state.services.get(scope) {
            view.services.insert(scope.to_owned(), values.clone());
        }
    }
    if let Some(schema) = state.schemas.get(service) {
        view.schemas.insert(service.to_owned(), schema.clone());
    }
    if let Some(version) = state.versions.get(service) {
        view.versions.insert(service.to_owned(), *version);
    }
    view
}

/// The staged snapshot of an active rollout (docs/format.md §21.2): `rollout.service`
/// resolved as [`project`] would after its staged changes, with the version fields of the
/// version it was staged on (it is not a version of the log). Costs the service's size,
/// once per rollout.
pub fn project_staged(
    state: &State,
    store_id: &str,
    generation: u64,
    rollout: &confstore_core::rollout::Rollout,
) -> Result<ServiceSnapshot, SnapshotError> {
    let service = rollout.service.as_str();
    let mut own: BTreeMap<String, String> = state
        .services
        .get(service)
        .map(|v| (**v).clone())
        .ok_or_else(|| SnapshotError::UnknownService(service.to_owned()))?;
    for change in &rollout.changes {
        match change.stored_value() {
            Some(v) => own.insert(change.key().to_owned(), v),
            None => own.remove(change.key()),
        };
    }
    let resolver = Resolver { own: &own, ..Resolver::new(state, service)? };
    Ok(at_head(state, store_id, generation, service, resolver.all()))
}

/// `service`'s snapshot fields at `state`'s head, holding `values`.
fn at_head(
    state: &State,
    store_id: &str,
    generation: u64,
    service: &str,
    values: BTreeMap<String, Resolved>,
) -> ServiceSnapshot {
    ServiceSnapshot {
        service: service.to_owned(),
        store_id: store_id.to_owned(),
        generation,
        epoch: state.epoch,
        version: state.versions.get(service).copied().unwrap_or_default(),
        schema_hash: state.schemas.get(service).map(|s| hex::encode(s.hash)),
        values,
    }
}

/// One version of a service as the keys it changed: what the live stream sends per
/// changeset instead of the whole service (docs/format.md §17.2). Its cost is that of the
/// keys, not of the service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDelta {
    /// The version's snapshot fields, with `values` holding only the touched keys that
    /// still have a value.
    pub set: ServiceSnapshot,
    /// Touched keys with no value now, sorted.
    pub removed: Vec<String>,
}

/// The delta of `service` in `state` over `keys` (the keys a changeset touched in it or in
/// `global`): each resolved as [`project`] would.
pub fn delta<'k>(
    state: &State,
    store_id: &str,
    generation: u64,
    service: &str,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<ServiceDelta, SnapshotError> {
    let resolver = Resolver::new(state, service)?;
    let mut set = BTreeMap::new();
    let mut removed = Vec::new();
    for key in keys {
        match resolver.resolve(key) {
            Some(r) => {
                set.insert(key.to_owned(), r);
            }
            None => removed.push(key.to_owned()),
        }
    }
    removed.sort();
    removed.dedup();
    Ok(ServiceDelta { set: at_head(state, store_id, generation, service, set), removed })
}

impl ServiceDelta {
    /// The JSON form (docs/format.md §17.2): a snapshot document's fields, with `config`
    /// and `sources` holding only the keys set, and `removed` the keys gone.
    pub fn to_json(&self) -> Value {
        let mut doc = self.set.to_json();
        doc["removed"] = json!(self.removed);
        doc
    }

    /// The delta as a flattened JWS (`typ` `confstore-delta+json`), signed like a snapshot.
    pub fn to_jws(&self, key: &confstore_core::SigningKey) -> Value {
        confstore_core::jws::sign(&self.to_json(), confstore_core::jws::TYP_DELTA, key)
    }

    /// [`Self::to_jws`] as JSON text (`confstore_core::jws::sign_text`): what the live
    /// stream sends.
    pub fn to_jws_text(&self, key: &confstore_core::SigningKey) -> String {
        confstore_core::jws::sign_text(&self.to_json(), confstore_core::jws::TYP_DELTA, key)
    }
}

/// What one changeset did to each service it changed: the keys to send in its delta, or
/// `full` when only a whole snapshot says it (the service was registered, or its schema
/// set: defaults and inherited keys may all change). Fed event by event, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Per changed service.
    pub services: BTreeMap<String, Touch>,
}

/// See [`Touched`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touch {
    /// Send a whole snapshot.
    pub full: bool,
    /// Keys whose resolved value may have changed.
    pub keys: std::collections::BTreeSet<String>,
}

impl Touched {
    /// Notes one event, folded into `state` already, that changed `changed`
    /// ([`State::apply_body`]'s answer).
    pub fn record(
        &mut self,
        state: &State,
        body: &confstore_core::event::EventBody,
        changed: confstore_core::state::Changed<'_>,
    ) {
        use confstore_core::event::EventKind as K;
        use confstore_core::state::Changed;
        let (key, full) = match &body.kind {
            K::ValueSet { key, .. } | K::ValueUnset { key, .. } | K::SecretSet { key, .. } => (Some(key), false),
            K::ServiceRegistered { .. } | K::SchemaSet { .. } => (None, true),
            _ => (None, false),
        };
        let mut note = |service: &str, full: bool| {
            let t = self.services.entry(service.to_owned()).or_default();
            t.full |= full;
            if let Some(k) = key {
                t.keys.insert(k.clone());
            }
        };
        match changed {
            Changed::Nothing => {}
            Changed::Service(s) => note(s, full),
            Changed::Every => {
                // A change to `global` may change that key in every service; only `global`'s
                // own registration or schema needs its whole snapshot.
                for name in state.services.keys() {
                    note(name, full && name == GLOBAL_SCOPE);
                }
            }
        }
    }

    /// Every service needs a whole snapshot (a new generation).
    pub fn all_full(&mut self, state: &State) {
        for name in state.services.keys() {
            self.services.entry(name.clone()).or_default().full = true;
        }
    }
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()))
}

impl ServiceSnapshot {
    /// The JSON form services consume: `config` is the plain key -> value object,
    /// `sources` says where each key came from.
    pub fn to_json(&self) -> Value {
        let config: Map<String, Value> = self.values.iter().map(|(k, r)| (k.clone(), r.value.clone())).collect();
        let sources: Map<String, Value> =
            self.values.iter().map(|(k, r)| (k.clone(), Value::String(r.source.name().to_owned()))).collect();
        json!({
            "service": self.service,
            "store_id": self.store_id,
            "generation": self.generation,
            "epoch": self.epoch,
            "changed_epoch": self.version.changed_epoch,
            "changed_seq": self.version.seq,
            "prev_epoch": self.version.prev_epoch,
            "schema_hash": self.schema_hash,
            "config": config,
            "sources": sources,
        })
    }

    /// Canonical JSON text of [`Self::to_json`] (sorted keys, no whitespace): the bytes a
    /// signature or golden file covers.
    pub fn to_canonical_json(&self) -> String {
        confstore_core::state::canonical_json_text(&self.to_json())
    }
}

/// The `typ` of a snapshot JWS's protected header.
pub const JWS_TYP: &str = confstore_core::jws::TYP_SNAPSHOT;

impl ServiceSnapshot {
    /// The snapshot as a JWS in flattened JSON serialization (RFC 7515 §7.2.2) with
    /// `alg: EdDSA` (RFC 8037), `kid` = the signing key's id, over the canonical JSON: what
    /// services receive, verifiable by any JOSE library with the public key.
    pub fn to_jws(&self, key: &confstore_core::SigningKey) -> Value {
        document_to_jws(&self.to_json(), key)
    }

    /// [`Self::to_jws`] as JSON text (`confstore_core::jws::sign_text`): what the live
    /// stream sends.
    pub fn to_jws_text(&self, key: &confstore_core::SigningKey) -> String {
        confstore_core::jws::sign_text(&self.to_json(), JWS_TYP, key)
    }
}

/// Signs a snapshot document (the [`ServiceSnapshot::to_json`] form, e.g. as kept in the
/// LKG file) as [`ServiceSnapshot::to_jws`] does.
pub fn document_to_jws(doc: &Value, key: &confstore_core::SigningKey) -> Value {
    confstore_core::jws::sign(doc, JWS_TYP, key)
}

/// Verifies a snapshot JWS with `key` (strict Ed25519) and returns its payload document.
pub fn verify_jws(jws: &Value, key: &confstore_core::VerifyingKey) -> Result<Value, JwsError> {
    confstore_core::jws::verify(jws, JWS_TYP, std::slice::from_ref(key))
}

#[cfg(test)]
mod jws_tests {
    use super::*;

    fn snapshot() -> ServiceSnapshot {
        let mut state = State::default();
        state.services.insert("web".into(), std::sync::Arc::new([("port".to_owned(), "80".to_owned())].into()));
        project(&state, "00", 1, "web").unwrap()
    }

    #[test]
    fn round_trip_and_tampering() {
        let key = confstore_core::SigningKey::from_seed(&[1; 32]);
        let jws = snapshot().to_jws(&key);
        let payload = verify_jws(&jws, &key.verifying_key()).unwrap();
        assert_eq!(payload, snapshot().to_json());
        let other = confstore_core::SigningKey::from_seed(&[2; 32]).verifying_key();
        assert!(matches!(verify_jws(&jws, &other), Err(JwsError::WrongKey { .. })));
        let mut bad = jws.clone();
        let p = bad["payload"].as_str().unwrap().replace('A', "B");
        bad["payload"] = json!(p);
        assert_eq!(verify_jws(&bad, &key.verifying_key()), Err(JwsError::BadSignature));
    }

    #[test]
    fn a_service_view_projects_the_same_snapshot_as_the_whole_state() {
        let mut state = State { epoch: 9, seq: 12, generation: 2, ..State::default() };
        state.services.insert("web".into(), std::sync::Arc::new([("port".to_owned(), "80".to_owned())].into()));
        state.services.insert("db".into(), std::sync::Arc::new([("port".to_owned(), "5432".to_owned())].into()));
        state
            .services
            .insert(GLOBAL_SCOPE.into(), std::sync::Arc::new([("region".to_owned(), "\"eu\"".to_owned())].into()));
        let schema = r#"{"type":"object","properties":{"port":{},"region":{},"tls":{"default":true}}}"#;
        state.schemas.insert("web".into(), confstore_core::state::ServiceSchema { json: schema.into(), hash: [7; 32] });
        state
            .versions
            .insert("web".into(), confstore_core::state::ServiceVersion { changed_epoch: 8, seq: 11, prev_epoch: 3 });
        let view = service_view(&state, "web");
        assert_eq!(project(&view, "00", 2, "web").unwrap(), project(&state, "00", 2, "web").unwrap());
        assert_eq!(view.services.len(), 2, "only the service and global are copied");
        assert!(project(&view, "00", 2, "web").unwrap().values.contains_key("tls"));
    }
}
