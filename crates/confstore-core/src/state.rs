//! Configuration state, and the two pure functions of event sourcing:
//! [`decide`] turns a changeset draft into event bodies (or rejects it without effect), and
//! [`State::apply`] folds a verified event into the state.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::event::{EventBody, EventKind};
use crate::ids::{Hash32, StoreId};
use crate::keys::{SigningKey, rotation_statement};
use crate::limits;
use crate::verify::Verified;

mod decide;
mod staged;
pub use decide::decide;

/// One service's values: key -> canonical JSON text. Shared between clones of a [`State`]
/// and copied on write (`Arc::make_mut`): applying an event to a service whose map a clone
/// still holds copies that one map, once.
pub type Values = Arc<BTreeMap<String, String>>;

/// Every service's values (canonical JSON text) at one point of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Epoch after the last applied event.
    pub epoch: u64,
    /// Seq of the last applied event.
    pub seq: u64,
    /// Time of the last applied event (unix ms).
    pub time_ms: u64,
    /// Registered services and their values: service -> key -> canonical JSON. Each
    /// service's map is shared ([`Values`]): a clone of the state copies no values, so a
    /// reader can take the state at the head and render from it while the writer moves on
    /// (the projector's LKG file, the publisher's snapshots).
    pub services: BTreeMap<String, Values>,
    /// Each service's schema, if one was set.
    pub schemas: BTreeMap<String, ServiceSchema>,
    /// Secrets encrypted so far under each master-key version (AES-GCM nonce budget).
    pub secret_encryptions: BTreeMap<u32, u64>,
    /// API tokens by id, revoked ones included (crate::auth).
    pub tokens: BTreeMap<String, crate::auth::TokenRecord>,
    /// Each service's snapshot version: the last epoch that changed it and the one before.
    pub versions: BTreeMap<String, ServiceVersion>,
    /// The store's generation: 1 from event 1, then raised by each `generation_started`
    /// (0 before event 1).
    pub generation: u64,
    /// Each service's active staged rollout (crate::rollout), at most one per service.
    pub rollouts: BTreeMap<String, crate::rollout::Rollout>,
    /// Each service's last rollout that ended.
    pub rollouts_ended: BTreeMap<String, crate::rollout::Ended>,
}

/// The reserved scope whose keys every service inherits unless it sets its own.
pub const GLOBAL_SCOPE: &str = "global";

/// Where a service's snapshot stands in its own chain of versions (docs/format.md §14): a
/// changeset that touches the service — or the `global` scope, which every service
/// inherits — makes a new version. A client holding version `changed_epoch` that receives one whose
/// `prev_epoch` is newer knows it missed a version and fetches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceVersion {
    /// Epoch of the last changeset that changed the service.
    pub changed_epoch: u64,
    /// Seq of the last event of that changeset that changed it.
    pub seq: u64,
    /// The version before (`changed_epoch` of the previous one); 0 for the first.
    pub prev_epoch: u64,
}

impl ServiceVersion {
    /// Records a change at (`epoch`, `seq`).
    pub fn bump(&mut self, epoch: u64, seq: u64) {
        if self.changed_epoch != epoch {
            self.prev_epoch = self.changed_epoch;
            self.changed_epoch = epoch;
        }
        self.seq = seq;
    }
}

/// A service's schema as recorded in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSchema {
    /// Canonical JSON text.
    pub json: String,
    /// SHA-256 of `json`.
    pub hash: [u8; 32],
}

impl State {
    /// Folds one verified event in.
    pub fn apply<'e>(&mut self, ev: &'e Verified) -> Changed<'e> {
        self.apply_body(ev.seq(), ev.body())
    }

    /// Folds an event body in, unverified: for `decide` (a draft's later changes are checked
    /// against the state after its earlier ones) and for tests that build states from
    /// bodies. Everything that folds the log — the writer, readers, the server's read model
    /// and MQTT stream — goes through [`Self::apply`] with a [`Verified`] (a tidy test
    /// keeps it so).
    ///
    /// Returns which services' versions it changed: the one place that says a change to
    /// `global` changes every service (the writer's dirty set and the MQTT stream use it).
    pub fn apply_body<'e>(&mut self, seq: u64, body: &'e EventBody) -> Changed<'e> {
        self.seq = seq;
        self.epoch = body.epoch;
        self.time_ms = body.time_ms;
        let changed = match body.service() {
            Some(_) if !body.changes_config() => Changed::Nothing,
            Some(GLOBAL_SCOPE) => Changed::Every,
            Some(service) => Changed::Service(service),
            None => Changed::Nothing,
        };
        match changed {
            Changed::Nothing => {}
            Changed::Service(service) => self.versions.entry(service.to_owned()).or_default().bump(body.epoch, seq),
            Changed::Every => {
                for name in self.services.keys() {
                    self.versions.entry(name.clone()).or_default().bump(body.epoch, seq);
                }
                self.versions.entry(GLOBAL_SCOPE.to_owned()).or_default().bump(body.epoch, seq);
            }
        }
        match &body.kind {
            EventKind::ServiceRegistered { service } => {
                self.services.entry(service.clone()).or_default();
            }
            EventKind::ValueSet { service, key, value_json, .. } => {
                Arc::make_mut(self.services.entry(service.clone()).or_default())
                    .insert(key.clone(), value_json.clone());
            }
            EventKind::ValueUnset { service, key, .. } => {
                if let Some(values) = self.services.get_mut(service).filter(|v| v.contains_key(key)) {
                    Arc::make_mut(values).remove(key);
                }
            }
            EventKind::SchemaSet { service, schema_json, schema_hash } => {
                self.schemas.insert(service.clone(), ServiceSchema { json: schema_json.clone(), hash: *schema_hash });
            }
            EventKind::SecretSet { service, key, key_version, nonce, ciphertext, .. } => {
                let envelope = crate::secret::Envelope {
                    key_version: *key_version,
                    nonce: *nonce,
                    ciphertext: ciphertext.clone(),
                };
                let marker = canonical_json_text(&crate::secret::marker(&envelope));
                Arc::make_mut(self.services.entry(service.clone()).or_default()).insert(key.clone(), marker);
                *self.secret_encryptions.entry(*key_version).or_default() += 1;
            }
            EventKind::TokenIssued { token_id, name, role, service, token_hash } => {
                // Verified events carry a role decide() accepted; an unknown name (a newer
                // writer's role) grants nothing beyond reading.
                let role = crate::auth::Role::parse(role).unwrap_or(crate::auth::Role::ConfigRead);
                self.tokens.insert(
                    token_id.clone(),
                    crate::auth::TokenRecord {
                        name: name.clone(),
                        role,
                        service: service.clone(),
                        hash: *token_hash,
                        issued_seq: seq,
                        revoked_seq: None,
                    },
                );
            }
            EventKind::TokenRevoked { token_id } => {
                if let Some(t) = self.tokens.get_mut(token_id) {
                    t.revoked_seq = Some(seq);
                }
            }
            EventKind::RolloutStarted { service, cohort, bake_ms, auto, base_epoch, changes, schema_hash } => {
                for change in changes {
                    if let crate::rollout::StagedChange::Secret { key_version, .. } = change {
                        // Counted when sealed: an aborted rollout's encryption used a nonce too.
                        *self.secret_encryptions.entry(*key_version).or_default() += 1;
                    }
                }
                self.rollouts.insert(
                    service.clone(),
                    crate::rollout::Rollout {
                        seq,
                        service: service.clone(),
                        started_ms: body.time_ms,
                        actor: body.actor.clone(),
                        reason: body.reason.clone(),
                        cohort: cohort.clone(),
                        bake_ms: *bake_ms,
                        auto: *auto,
                        base_epoch: *base_epoch,
                        changes: changes.clone(),
                        schema_hash: *schema_hash,
                    },
                );
            }
            EventKind::RolloutPromoted { service, rollout_seq, .. } => {
                self.rollouts.remove(service);
                let ended = crate::rollout::Ended {
                    seq: *rollout_seq,
                    outcome: crate::rollout::Outcome::Promoted,
                    ended_seq: seq,
                    ended_ms: body.time_ms,
                    promoted_epoch: body.epoch,
                };
                self.rollouts_ended.insert(service.clone(), ended);
            }
            EventKind::RolloutAborted { service, rollout_seq, .. } => {
                self.rollouts.remove(service);
                let ended = crate::rollout::Ended {
                    seq: *rollout_seq,
                    outcome: crate::rollout::Outcome::Aborted,
                    ended_seq: seq,
                    ended_ms: body.time_ms,
                    promoted_epoch: 0,
                };
                self.rollouts_ended.insert(service.clone(), ended);
            }
            EventKind::StoreCreated { .. } => self.generation = 1,
            EventKind::GenerationStarted { generation, .. } => self.generation = *generation,
            EventKind::SecretRevealed { .. }
            | EventKind::AccessDenied { .. }
            | EventKind::AccessDeniedSummary { .. } => {}
            EventKind::SigningKeyRotated { .. } | EventKind::RolledBack { .. } => {}
        }
        changed
    }

    /// One value, as canonical JSON text.
    pub fn value(&self, service: &str, key: &str) -> Option<&str> {
        self.services.get(service)?.get(key).map(String::as_str)
    }
}

/// Which services' versions an event changed (docs/format.md §14: a config event about a
/// service changes it; one about `global` changes every registered service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed<'e> {
    /// No service's version (an audit or token event).
    Nothing,
    /// This service's.
    Service(&'e str),
    /// Every service's (a change to `global`).
    Every,
}

/// One change requested in a changeset.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Register a new service.
    RegisterService {
        /// Service name.
        service: String,
    },
    /// Set a key to a JSON value.
    Set {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
        /// The value.
        value: serde_json::Value,
    },
    /// Remove a key.
    Unset {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
    },
    /// Set a service's JSON Schema (2020-12).
    SetSchema {
        /// Service name.
        service: String,
        /// The schema.
        schema: serde_json::Value,
    },
    /// Set a key to a secret value: the envelope is stored; the plaintext is used only to
    /// validate against the schema here and is never written anywhere.
    SetSecret {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
        /// The plaintext as canonical JSON (validation only).
        plaintext: crate::secret::Plaintext,
        /// The encrypted value.
        envelope: crate::secret::Envelope,
    },
    /// Record that a secret was revealed (an audit event; must be alone in its changeset).
    RevealSecret {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
    },
    /// Issue an API token (only its hash is recorded; must be alone in its changeset).
    IssueToken {
        /// Public id (16 lowercase hex digits).
        token_id: String,
        /// Name for people.
        name: String,
        /// Role granted.
        role: crate::auth::Role,
        /// Only this service, if scoped.
        service: Option<String>,
        /// SHA-256 of the token text.
        token_hash: [u8; 32],
    },
    /// Revoke an API token (must be alone in its changeset).
    RevokeToken {
        /// Its id.
        token_id: String,
    },
    /// Record a refused request (an audit event; must be alone in its changeset).
    DenyAccess {
        /// The token that asked.
        token_id: String,
        /// HTTP method.
        method: String,
        /// Route template.
        route: String,
        /// The role the route needs.
        required_role: crate::auth::Role,
        /// The service named, if any.
        service: Option<String>,
    },
    /// Record how often a token was refused after its first refusal on each route (an
    /// audit event; must be alone in its changeset).
    SummarizeDenials {
        /// The token that asked.
        token_id: String,
        /// Time of the first refusal counted (unix ms).
        window_start_ms: u64,
        /// Time of the last refusal counted (unix ms).
        window_end_ms: u64,
        /// Refusals per (method, route); at most [`limits::DENIAL_SUMMARY_ROUTES_MAX`].
        counts: Vec<crate::event::DenialCount>,
        /// Refusals not itemised.
        dropped: u64,
    },
    /// Mark the changeset as a rollback to `to_epoch` (of one service or all). Must be the
    /// first change; the sets and unsets that follow restore the state
    /// ([`crate::timetravel::rollback_changes`] computes them).
    RollBack {
        /// The epoch whose state is restored.
        to_epoch: u64,
        /// Only this service; `None`: every service.
        service: Option<String>,
    },
    /// A staged rollout's start, promotion or abort.
    Rollout(RolloutChange),
}

/// A staged rollout's decisions, as requested (docs/format.md §21). A `StartRollout` opens its
/// changeset and the sets, secret sets and unsets of that one service after it are the
/// staged changes; `PromoteRollout` and `AbortRollout` are alone.
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutChange {
    /// Stage the changes that follow for a cohort of `service`'s instances.
    Start {
        /// Service name.
        service: String,
        /// Who gets them.
        cohort: crate::rollout::Cohort,
        /// Bake time, ms ([`limits::ROLLOUT_BAKE_MS_MIN`]..=[`limits::ROLLOUT_BAKE_MS_MAX`]).
        bake_ms: u64,
        /// Promote and abort automatically.
        auto: bool,
    },
    /// Give the active rollout `rollout_seq` of `service` to every instance.
    Promote {
        /// Service name.
        service: String,
        /// The rollout meant (so a decision cannot land on a later rollout by mistake).
        rollout_seq: u64,
        /// Decided by the server's rules.
        automatic: bool,
        /// What the cohort reported.
        cohort: Vec<crate::rollout::CohortMember>,
    },
    /// Withdraw it.
    Abort {
        /// Service name.
        service: String,
        /// The rollout meant.
        rollout_seq: u64,
        /// Decided by the server's rules.
        automatic: bool,
        /// What the cohort reported.
        cohort: Vec<crate::rollout::CohortMember>,
    },
}

/// A requested changeset: metadata plus the changes, all or none.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangesetDraft {
    /// Who asks.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Request id for correlation.
    pub request_id: String,
    /// Compare-and-set: the epoch the caller based the change on, if any.
    pub expected_epoch: Option<u64>,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
}

/// Why a changeset was refused. Nothing was appended.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RejectError {
    /// No changes.
    #[error("the changeset is empty: give at least one change")]
    Empty,
    /// Too many changes.
    #[error("the changeset has {0} changes; at most {max} are allowed", max = limits::EVENTS_PER_CHANGESET_MAX)]
    TooManyChanges(usize),
    /// A name or text field is invalid.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value given (shortened).
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The service is not registered.
    #[error("unknown service {0:?}; register it first with `confstore service add {0}`")]
    UnknownService(String),
    /// The service is registered already.
    #[error("service {0:?} is already registered")]
    ServiceExists(String),
    /// Unset of a key that has no value.
    #[error("{service}.{key} is not set, so it cannot be unset")]
    NotSet {
        /// Service.
        service: String,
        /// Key.
        key: String,
    },
    /// The schema given is not a usable JSON Schema 2020-12 for a service.
    #[error("invalid schema for {service:?}: {why}")]
    InvalidSchema {
        /// Service.
        service: String,
        /// What is wrong.
        why: String,
    },
    /// The resulting configuration breaks its schema; every violation is listed.
    #[error("{} schema violation(s): {}", .0.len(), .0.iter().map(|(s, v)| show_violation(s, v)).collect::<Vec<_>>().join("; "))]
    SchemaViolations(Vec<(String, crate::schema::Violation)>),
    /// A rollback marker anywhere but first, or twice.
    #[error("a rollback marker must be the first change of its changeset, and only one")]
    MisplacedRollback,
    /// A rollback to an epoch that is not in the past.
    #[error("cannot roll back to epoch {to}: the store is at epoch {current}; pick an earlier epoch")]
    RollbackTarget {
        /// The requested epoch.
        to: u64,
        /// The store's epoch.
        current: u64,
    },
    /// The same key twice in one changeset.
    #[error("{service}.{key} appears more than once in the changeset")]
    Duplicate {
        /// Service.
        service: String,
        /// Key.
        key: String,
    },
    /// A bound from [`limits`] would be exceeded.
    #[error("{0}")]
    Limit(String),
    /// A change to a service (or to `global`, or to every service) while a staged rollout
    /// of it is active (docs/adr/0030).
    #[error(
        "service {service:?} has an active staged rollout ({rollout_seq}); promote or abort it first (`confstore rollout promote|abort {service}`)"
    )]
    RolloutInProgress {
        /// The service under rollout.
        service: String,
        /// Its rollout.
        rollout_seq: u64,
    },
    /// A rollout request that does not fit the service's rollouts.
    #[error("{0}")]
    Rollout(String),
    /// Compare-and-set failed.
    #[error("the store is at epoch {current}, not the expected epoch {expected}; reload and retry")]
    Conflict {
        /// The epoch the caller expected.
        expected: u64,
        /// The store's epoch.
        current: u64,
    },
}

fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> RejectError {
    let shown: String = value.chars().take(80).collect();
    RejectError::Invalid { what, value: shown, why: why.into() }
}

/// Checks a service name: 1..=64 bytes of `a-z 0-9 _ -`, starting with a letter or digit.
pub fn check_service_name(name: &str) -> Result<(), RejectError> {
    check_name("service name", name, limits::SERVICE_NAME_BYTES_MAX, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
    })
}

/// Checks a key name: 1..=128 bytes of `A-Z a-z 0-9 _ - .`, starting with a letter or digit.
pub fn check_key_name(name: &str) -> Result<(), RejectError> {
    check_name("key name", name, limits::KEY_NAME_BYTES_MAX, |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
    })
}

fn check_name(what: &'static str, name: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), RejectError> {
    if name.is_empty() || name.len() > max {
        return Err(invalid(what, name, format!("must be 1 to {max} bytes")));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(allowed) {
        return Err(invalid(
            what,
            name,
            "use letters, digits, '_', '-' (and '.' in keys), starting with a letter or digit",
        ));
    }
    Ok(())
}

fn check_text(what: &'static str, text: &str, max: usize) -> Result<(), RejectError> {
    if text.len() > max {
        return Err(invalid(what, text, format!("longer than {max} bytes")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(what, text, "contains control characters"));
    }
    Ok(())
}

/// Canonical JSON text: no insignificant whitespace, object keys sorted by their UTF-8 bytes,
/// numbers and strings as serde_json writes them. Refuses values nested deeper than the limit.
pub fn canonical_json(value: &serde_json::Value) -> Result<String, RejectError> {
    let mut out = String::new();
    write_canonical(value, 0, Some(limits::VALUE_JSON_DEPTH_MAX), &mut out)?;
    if out.len() > limits::VALUE_JSON_BYTES_MAX {
        return Err(RejectError::Limit(format!(
            "value is {} bytes of JSON; at most {} are allowed",
            out.len(),
            limits::VALUE_JSON_BYTES_MAX
        )));
    }
    Ok(out)
}

/// Canonical JSON text (as [`canonical_json`]) of a document built from values that were
/// checked already, such as a service snapshot: no depth or size limit.
pub fn canonical_json_text(value: &serde_json::Value) -> String {
    let mut out = String::new();
    // Without a depth limit nothing can fail.
    let _ = write_canonical(value, 0, None, &mut out);
    out
}

fn write_canonical(
    v: &serde_json::Value,
    depth: usize,
    depth_max: Option<usize>,
    out: &mut String,
) -> Result<(), RejectError> {
    if depth_max.is_some_and(|max| depth > max) {
        return Err(RejectError::Limit(format!("value is nested deeper than {} levels", limits::VALUE_JSON_DEPTH_MAX)));
    }
    match v {
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, depth + 1, depth_max, out)?;
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(item, depth + 1, depth_max, out)?;
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
    Ok(())
}

fn check_meta(draft: &ChangesetDraft) -> Result<(), RejectError> {
    check_text("actor", &draft.actor, limits::ACTOR_BYTES_MAX)?;
    check_text("reason", &draft.reason, limits::REASON_BYTES_MAX)?;
    check_text("request id", &draft.request_id, limits::REQUEST_ID_BYTES_MAX)?;
    if draft.actor.is_empty() {
        return Err(invalid("actor", "", "must not be empty"));
    }
    Ok(())
}

fn body(epoch: u64, time_ms: u64, draft: &ChangesetDraft, kind: EventKind) -> EventBody {
    EventBody {
        epoch,
        time_ms,
        changeset_index: 0,
        changeset_len: 0,
        actor: draft.actor.clone(),
        reason: draft.reason.clone(),
        request_id: draft.request_id.clone(),
        kind,
    }
}

fn show_violation(service: &str, v: &crate::schema::Violation) -> String {
    match &v.key {
        Some(key) => format!("{service}.{key} ({}): {}", v.rule, v.message),
        None => format!("{service} ({}): {}", v.rule, v.message),
    }
}

/// The body of event 1 of a new store.
pub fn store_created(store_id: StoreId, key: &SigningKey, actor: &str, request_id: &str, now_ms: u64) -> EventBody {
    EventBody {
        epoch: 0,
        time_ms: now_ms,
        changeset_index: 0,
        changeset_len: 1,
        actor: actor.to_owned(),
        reason: "store created".to_owned(),
        request_id: request_id.to_owned(),
        kind: EventKind::StoreCreated { store_id, public_key: key.verifying_key().to_bytes() },
    }
}

/// The single-event changeset that hands signing over from `old` to `new`. It does not
/// advance the epoch: it changes no configuration.
pub fn rotate_signing_key(
    state: &State,
    store_id: &StoreId,
    old: &SigningKey,
    new: &SigningKey,
    draft: &ChangesetDraft,
    now_ms: u64,
) -> Result<EventBody, RejectError> {
    check_meta(draft)?;
    let (old_pub, new_pub) = (old.verifying_key().to_bytes(), new.verifying_key().to_bytes());
    if old_pub == new_pub {
        return Err(invalid("signing key", "", "the new signing key is the current one"));
    }
    let new_key_sig = new.sign(&rotation_statement(store_id, &old_pub, &new_pub));
    let mut b = body(
        state.epoch,
        now_ms.max(state.time_ms),
        draft,
        EventKind::SigningKeyRotated { new_public_key: new_pub, new_key_sig },
    );
    b.changeset_len = 1;
    Ok(b)
}

/// The single-event changeset that starts generation `state.generation + 1`, abandoning the
/// history whose newest known head is (`abandoned_seq`, `abandoned_hash`). It changes no
/// configuration, so it keeps the epoch. Whether the history really was rewound is for the
/// caller to establish (it compares signed heads with the log); this only shapes the event.
pub fn start_generation(
    state: &State,
    draft: &ChangesetDraft,
    abandoned_seq: u64,
    abandoned_hash: [u8; 32],
    now_ms: u64,
) -> Result<EventBody, RejectError> {
    check_meta(draft)?;
    if draft.reason.trim().is_empty() {
        return Err(invalid("reason", "", "starting a generation needs a reason"));
    }
    if !draft.changes.is_empty() {
        return Err(invalid("changeset", "", "a generation starts alone, with no changes"));
    }
    if abandoned_seq == 0 {
        return Err(invalid("abandoned head", "0", "the abandoned head must name an event (seq 1 or later)"));
    }
    let generation = state.generation.max(1) + 1;
    let mut b = body(
        state.epoch,
        now_ms.max(state.time_ms),
        draft,
        EventKind::GenerationStarted { generation, abandoned_seq, abandoned_hash },
    );
    b.changeset_len = 1;
    Ok(b)
}

/// A stored event hash and body, signed, in one step (event 1, tests). The writer seals
/// through [`crate::verify::Sealed`], which also yields the event as [`Verified`] to fold.
pub fn seal(seq: u64, prev_hash: &Hash32, body: &EventBody, key: &SigningKey) -> crate::verify::StoredEvent {
    let bytes = body.encode();
    let hash = crate::chain::event_hash(seq, prev_hash, &bytes);
    crate::verify::StoredEvent {
        seq,
        body: bytes,
        prev_hash: *prev_hash,
        hash,
        key_id: key.verifying_key().key_id(),
        sig: key.sign_hash(&hash),
    }
}
