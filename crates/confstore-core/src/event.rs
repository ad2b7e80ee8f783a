//! The v1 event body and its postcard encoding.
//!
//! The body is what is hashed and signed, so every field that matters (epoch, time, actor,
//! reason, request id, changeset position) lives here. `docs/format.md` specifies the bytes;
//! the order of fields and the numbering of [`EventKind`] variants are frozen: new kinds get
//! new numbers at the end, and no variant or field is ever removed or reordered.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ids::StoreId;
use crate::limits;

/// One event's body (format v1). Field order is the wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBody {
    /// The epoch this event belongs to: the changeset's epoch.
    pub epoch: u64,
    /// Wall-clock time of the changeset, unix milliseconds; never decreases along the log.
    pub time_ms: u64,
    /// Position of this event in its changeset, from 0.
    pub changeset_index: u32,
    /// Number of events in the changeset (at least 1).
    pub changeset_len: u32,
    /// Who made the change (user, token name or service).
    pub actor: String,
    /// Why, in the actor's words. May be empty.
    pub reason: String,
    /// The id of the request that made the change, for correlation with logs.
    pub request_id: String,
    /// What happened.
    pub kind: EventKind,
}

/// What an event records. Variant numbers (postcard's varint discriminant) are frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// 0: the store was created; always and only event 1. Names the store and its first key.
    StoreCreated {
        /// The store id (also bound by the genesis hash).
        store_id: StoreId,
        /// The first Ed25519 public key; event 1 is signed by it.
        public_key: [u8; 32],
    },
    /// 1: a service was registered; values can be set for it from now on.
    ServiceRegistered {
        /// Service name.
        service: String,
    },
    /// 2: a key of a service was set to a JSON value.
    ValueSet {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
        /// The value as canonical JSON text (no insignificant whitespace, object keys sorted).
        value_json: String,
        /// SHA-256 of the service's schema this change was validated against (`None`: the
        /// service had no schema).
        schema_hash: Option<[u8; 32]>,
    },
    /// 3: a key of a service was removed.
    ValueUnset {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
        /// As for `ValueSet`.
        schema_hash: Option<[u8; 32]>,
    },
    /// 4: the signing key changed. This event is signed by the old key; every later event
    /// by the new one. `new_key_sig` is the new key's signature over the rotation statement
    /// (see [`crate::keys::rotation_statement`]), proving the new key's holder agreed.
    SigningKeyRotated {
        /// The new Ed25519 public key.
        new_public_key: [u8; 32],
        /// Signature by the new key over the rotation statement.
        #[serde(with = "crate::fixed_bytes")]
        new_key_sig: [u8; 64],
    },
    /// 5: the changeset this event opens rolls configuration back: the `value_set` and
    /// `value_unset` events after it in the same changeset make the state (of `service`, or
    /// of every service) equal to the state at `to_epoch`. History is not rewritten.
    RolledBack {
        /// The epoch the store was at before this changeset.
        from_epoch: u64,
        /// The epoch whose state is restored (earlier than `from_epoch`).
        to_epoch: u64,
        /// Only this service was rolled back; `None`: every service.
        service: Option<String>,
    },
    /// 6: a service's JSON Schema (2020-12) was set; later changes of the service are
    /// validated against it and record its hash.
    SchemaSet {
        /// Service name.
        service: String,
        /// The schema as canonical JSON text.
        schema_json: String,
        /// SHA-256 of `schema_json`'s UTF-8 bytes.
        schema_hash: [u8; 32],
    },
    /// 7: a key of a service was set to a secret value, encrypted (crate::secret); the
    /// plaintext never reaches the log.
    SecretSet {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
        /// Version of the master key that encrypted it.
        key_version: u32,
        /// AES-GCM nonce.
        nonce: [u8; 12],
        /// Ciphertext with the GCM tag.
        ciphertext: Vec<u8>,
        /// As for `ValueSet`.
        schema_hash: Option<[u8; 32]>,
    },
    /// 8: a secret's plaintext was revealed to someone (audit; changes no configuration).
    SecretRevealed {
        /// Service name.
        service: String,
        /// Key name.
        key: String,
    },
    /// 9: an API bearer token was issued. Only the token's SHA-256 is recorded; the token
    /// itself is shown once to whoever issued it (crate::auth).
    TokenIssued {
        /// The token's public id (16 lowercase hex digits; also inside the token).
        token_id: String,
        /// A name for people ("ci-deployer").
        name: String,
        /// The role granted (crate::auth::Role::as_str).
        role: String,
        /// Only this service, or `None`: every service.
        service: Option<String>,
        /// SHA-256 of the whole token text.
        token_hash: [u8; 32],
    },
    /// 10: an API token was revoked; it authenticates nothing from now on.
    TokenRevoked {
        /// The token's public id.
        token_id: String,
    },
    /// 11: a request was refused for lack of a role or scope (audit; changes no
    /// configuration).
    AccessDenied {
        /// The token that asked.
        token_id: String,
        /// HTTP method.
        method: String,
        /// The route asked for (its template, e.g. `/api/v1/services/{service}`), then the
        /// service if one was named.
        route: String,
        /// The role the route needs.
        required_role: String,
        /// The service named by the request, if any.
        service: Option<String>,
    },
    /// 12: the operator deliberately continued from a rewound history (a restore to a point
    /// in time): a new generation of the store starts here. The events after the abandoned
    /// head were lost or are being disowned; clients that saw them accept this generation's
    /// lower versions instead of refusing them as replays. Alone in its changeset; changes
    /// no configuration.
    GenerationStarted {
        /// The new generation: the previous one plus one.
        generation: u64,
        /// Seq of the newest head of the abandoned history that was known (from a signed
        /// head, the LKG file or the publisher's checkpoint).
        abandoned_seq: u64,
        /// Hash of that head.
        abandoned_hash: [u8; 32],
    },
    /// 13: the refusals of one token after its first on each route, counted over a window
    /// of time (audit; changes no configuration). The first refusal of a token on a
    /// (method, route) is an `access_denied` event; the ones after it are summed here, at
    /// most one such event per token per window, so a token cannot grow the log at will
    /// by asking for what it may not have (ADR 0013).
    AccessDeniedSummary {
        /// The token that asked.
        token_id: String,
        /// Time of the first refusal counted (unix ms).
        window_start_ms: u64,
        /// Time of the last refusal counted (unix ms), at or after `window_start_ms`.
        window_end_ms: u64,
        /// Refusals per (method, route), sorted by method then route.
        counts: Vec<DenialCount>,
        /// Refusals counted but not itemised in `counts` (more distinct routes than
        /// [`limits::DENIAL_SUMMARY_ROUTES_MAX`]).
        dropped: u64,
    },
    /// 14: a staged rollout of one service started (docs/format.md §21): `changes` go to the
    /// instances of `cohort` only, until a `rollout_promoted` gives them to every instance
    /// or a `rollout_aborted` withdraws them. Alone in its changeset; changes no current
    /// configuration (keeps the epoch). The rollout's id is this event's seq.
    RolloutStarted {
        /// Service name (never `global`).
        service: String,
        /// Who gets the staged version.
        cohort: crate::rollout::Cohort,
        /// How long the cohort runs it before an automatic promotion, in ms.
        bake_ms: u64,
        /// Whether the server promotes and aborts it by itself.
        auto: bool,
        /// The service version (changed_epoch) the changes are staged on.
        base_epoch: u64,
        /// The staged changes, checked against the schema as a write would be.
        changes: Vec<crate::rollout::StagedChange>,
        /// SHA-256 of the service's schema they were checked against, if any.
        schema_hash: Option<[u8; 32]>,
    },
    /// 15: the rollout `rollout_seq` was given to every instance. The events after it in
    /// its changeset are its changes, as `value_set` / `value_unset` / `secret_set`.
    RolloutPromoted {
        /// Service name.
        service: String,
        /// The rollout (seq of its `rollout_started`).
        rollout_seq: u64,
        /// Decided by the server's rules (true) or by `actor` (false).
        automatic: bool,
        /// What each cohort instance reported when it was decided.
        cohort: Vec<crate::rollout::CohortMember>,
    },
    /// 16: the rollout `rollout_seq` was withdrawn; its cohort returns to the current
    /// version. Alone in its changeset; keeps the epoch.
    RolloutAborted {
        /// Service name.
        service: String,
        /// The rollout.
        rollout_seq: u64,
        /// Decided by the server's rules (true) or by `actor` (false).
        automatic: bool,
        /// What each cohort instance reported when it was decided.
        cohort: Vec<crate::rollout::CohortMember>,
    },
}

/// How often a token was refused one (method, route) in an `access_denied_summary`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DenialCount {
    /// HTTP method.
    pub method: String,
    /// Route template, as in `access_denied`.
    pub route: String,
    /// Refusals (at least 1).
    pub count: u64,
}

/// Why bytes are not a valid v1 body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than [`limits::EVENT_BODY_BYTES_MAX`].
    #[error("body is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// postcard could not decode it.
    #[error("body does not decode as a v1 event: {0}")]
    Malformed(String),
    /// Bytes left after a complete body: there is exactly one encoding of each body.
    #[error("body has {0} trailing bytes after a complete event")]
    Trailing(usize),
    /// The body decodes but is not in the shortest (canonical) form, e.g. an overlong varint.
    #[error("body is not canonically encoded (an overlong varint?); v1 bodies have exactly one encoding")]
    NotCanonical,
}

impl EventBody {
    /// The v1 bytes of this body.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs, strings and integers into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_else(|e| unreachable!("postcard encode: {e}"))
    }

    /// Decodes v1 bytes, refusing oversize input, trailing bytes and non-canonical encodings.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > limits::EVENT_BODY_BYTES_MAX {
            return Err(DecodeError::TooLarge { len: bytes.len(), max: limits::EVENT_BODY_BYTES_MAX });
        }
        let (body, rest) =
            postcard::take_from_bytes::<Self>(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        // postcard accepts overlong varints; re-encoding makes every accepted body canonical.
        if body.encode() != bytes {
            return Err(DecodeError::NotCanonical);
        }
        Ok(body)
    }

    /// Whether this event changes configuration (and so belongs to an epoch-advancing
    /// changeset). Store creation, key rotation, audit, token and generation events do not.
    pub fn changes_config(&self) -> bool {
        self.kind.changes_config()
    }

    /// The service this event is about, if any.
    pub fn service(&self) -> Option<&str> {
        match &self.kind {
            EventKind::ServiceRegistered { service }
            | EventKind::ValueSet { service, .. }
            | EventKind::ValueUnset { service, .. } => Some(service),
            EventKind::RolledBack { service, .. } => service.as_deref(),
            EventKind::SchemaSet { service, .. }
            | EventKind::SecretSet { service, .. }
            | EventKind::SecretRevealed { service, .. }
            | EventKind::RolloutStarted { service, .. }
            | EventKind::RolloutPromoted { service, .. }
            | EventKind::RolloutAborted { service, .. } => Some(service),
            EventKind::TokenIssued { service, .. } | EventKind::AccessDenied { service, .. } => service.as_deref(),
            EventKind::StoreCreated { .. }
            | EventKind::SigningKeyRotated { .. }
            | EventKind::TokenRevoked { .. }
            | EventKind::GenerationStarted { .. }
            | EventKind::AccessDeniedSummary { .. } => None,
        }
    }

    /// The decoded event as JSON (the `event` field of an export line). Byte fields are hex,
    /// values are embedded as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "epoch": self.epoch,
            "time_ms": self.time_ms,
            "changeset_index": self.changeset_index,
            "changeset_len": self.changeset_len,
            "actor": self.actor,
            "reason": self.reason,
            "request_id": self.request_id,
        });
        let kind = match &self.kind {
            EventKind::StoreCreated { store_id, public_key } => json!({
                "type": "store_created", "store_id": store_id.to_hex(), "public_key": hex::encode(public_key),
            }),
            EventKind::ServiceRegistered { service } => json!({"type": "service_registered", "service": service}),
            EventKind::ValueSet { service, key, value_json, schema_hash } => {
                let value: serde_json::Value =
                    serde_json::from_str(value_json).unwrap_or_else(|_| serde_json::Value::String(value_json.clone()));
                json!({"type": "value_set", "service": service, "key": key, "value": value,
                       "schema_hash": schema_hash.map(hex::encode)})
            }
            EventKind::ValueUnset { service, key, schema_hash } => json!({
                "type": "value_unset", "service": service, "key": key, "schema_hash": schema_hash.map(hex::encode),
            }),
            EventKind::SigningKeyRotated { new_public_key, new_key_sig } => json!({
                "type": "signing_key_rotated", "new_public_key": hex::encode(new_public_key),
                "new_key_sig": hex::encode(new_key_sig),
            }),
            EventKind::RolledBack { from_epoch, to_epoch, service } => json!({
                "type": "rolled_back", "from_epoch": from_epoch, "to_epoch": to_epoch, "service": service,
            }),
            EventKind::SecretSet { service, key, key_version, schema_hash, .. } => json!({
                "type": "secret_set", "service": service, "key": key, "key_version": key_version,
                "schema_hash": schema_hash.map(hex::encode),
            }),
            EventKind::SecretRevealed { service, key } => {
                json!({"type": "secret_revealed", "service": service, "key": key})
            }
            EventKind::TokenIssued { token_id, name, role, service, token_hash } => json!({
                "type": "token_issued", "token_id": token_id, "name": name, "role": role, "service": service,
                "token_hash": hex::encode(token_hash),
            }),
            EventKind::TokenRevoked { token_id } => json!({"type": "token_revoked", "token_id": token_id}),
            EventKind::AccessDenied { token_id, method, route, required_role, service } => json!({
                "type": "access_denied", "token_id": token_id, "method": method, "route": route,
                "required_role": required_role, "service": service,
            }),
            EventKind::SchemaSet { service, schema_json, schema_hash } => {
                let schema: serde_json::Value = serde_json::from_str(schema_json)
                    .unwrap_or_else(|_| serde_json::Value::String(schema_json.clone()));
                json!({"type": "schema_set", "service": service, "schema": schema, "schema_hash": hex::encode(schema_hash)})
            }
            EventKind::GenerationStarted { generation, abandoned_seq, abandoned_hash } => json!({
                "type": "generation_started", "generation": generation, "abandoned_seq": abandoned_seq,
                "abandoned_hash": hex::encode(abandoned_hash),
            }),
            EventKind::AccessDeniedSummary { token_id, window_start_ms, window_end_ms, counts, dropped } => {
                let counts: Vec<serde_json::Value> =
                    counts.iter().map(|c| json!({"method": c.method, "route": c.route, "count": c.count})).collect();
                json!({
                    "type": "access_denied_summary", "token_id": token_id, "window_start_ms": window_start_ms,
                    "window_end_ms": window_end_ms, "counts": counts, "dropped": dropped,
                })
            }
            EventKind::RolloutStarted { service, cohort, bake_ms, auto, base_epoch, changes, schema_hash } => {
                let changes: Vec<serde_json::Value> =
                    changes.iter().map(crate::rollout::StagedChange::to_json).collect();
                json!({
                    "type": "rollout_started", "service": service, "cohort": cohort.to_json(), "bake_ms": bake_ms,
                    "auto": auto, "base_epoch": base_epoch, "changes": changes,
                    "schema_hash": schema_hash.map(hex::encode),
                })
            }
            EventKind::RolloutPromoted { service, rollout_seq, automatic, cohort }
            | EventKind::RolloutAborted { service, rollout_seq, automatic, cohort } => {
                let cohort: Vec<serde_json::Value> = cohort.iter().map(crate::rollout::CohortMember::to_json).collect();
                json!({
                    "type": self.kind.name(), "service": service, "rollout_seq": rollout_seq,
                    "automatic": automatic, "cohort": cohort,
                })
            }
        };
        v["kind"] = kind;
        v
    }
}

impl EventKind {
    /// The frozen variant number (postcard's discriminant).
    pub fn variant(&self) -> u32 {
        match self {
            Self::StoreCreated { .. } => 0,
            Self::ServiceRegistered { .. } => 1,
            Self::ValueSet { .. } => 2,
            Self::ValueUnset { .. } => 3,
            Self::SigningKeyRotated { .. } => 4,
            Self::RolledBack { .. } => 5,
            Self::SchemaSet { .. } => 6,
            Self::SecretSet { .. } => 7,
            Self::SecretRevealed { .. } => 8,
            Self::TokenIssued { .. } => 9,
            Self::TokenRevoked { .. } => 10,
            Self::AccessDenied { .. } => 11,
            Self::GenerationStarted { .. } => 12,
            Self::AccessDeniedSummary { .. } => 13,
            Self::RolloutStarted { .. } => 14,
            Self::RolloutPromoted { .. } => 15,
            Self::RolloutAborted { .. } => 16,
        }
    }

    /// See [`EventBody::changes_config`].
    pub fn changes_config(&self) -> bool {
        match self {
            Self::ServiceRegistered { .. }
            | Self::ValueSet { .. }
            | Self::ValueUnset { .. }
            | Self::RolledBack { .. }
            | Self::SchemaSet { .. }
            | Self::SecretSet { .. } => true,
            Self::StoreCreated { .. }
            | Self::SigningKeyRotated { .. }
            | Self::SecretRevealed { .. }
            | Self::TokenIssued { .. }
            | Self::TokenRevoked { .. }
            | Self::AccessDenied { .. }
            | Self::GenerationStarted { .. }
            | Self::AccessDeniedSummary { .. }
            | Self::RolloutStarted { .. }
            | Self::RolloutPromoted { .. }
            | Self::RolloutAborted { .. } => false,
        }
    }

    /// A short lowercase name, as used in JSON and on the terminal.
    pub fn name(&self) -> &'static str {
        match self {
            Self::StoreCreated { .. } => "store_created",
            Self::ServiceRegistered { .. } => "service_registered",
            Self::ValueSet { .. } => "value_set",
            Self::ValueUnset { .. } => "value_unset",
            Self::SigningKeyRotated { .. } => "signing_key_rotated",
            Self::RolledBack { .. } => "rolled_back",
            Self::SchemaSet { .. } => "schema_set",
            Self::SecretSet { .. } => "secret_set",
            Self::SecretRevealed { .. } => "secret_revealed",
            Self::TokenIssued { .. } => "token_issued",
            Self::TokenRevoked { .. } => "token_revoked",
            Self::AccessDenied { .. } => "access_denied",
            Self::GenerationStarted { .. } => "generation_started",
            Self::AccessDeniedSummary { .. } => "access_denied_summary",
            Self::RolloutStarted { .. } => "rollout_started",
            Self::RolloutPromoted { .. } => "rollout_promoted",
            Self::RolloutAborted { .. } => "rollout_aborted",
        }
    }
}

// StoreId travels as its 16 raw bytes.
impl Serialize for StoreId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoreId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 16]>::deserialize(d).map(StoreId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: EventKind) -> EventBody {
        EventBody {
            epoch: 1,
            time_ms: 1_700_000_000_000,
            changeset_index: 0,
            changeset_len: 1,
            actor: "ops".into(),
            reason: String::new(),
            request_id: "r1".into(),
            kind,
        }
    }

    #[test]
    fn variant_numbers_match_postcard_discriminants() {
        let kinds = [
            EventKind::StoreCreated { store_id: StoreId([7; 16]), public_key: [1; 32] },
            EventKind::ServiceRegistered { service: "s".into() },
            EventKind::ValueSet { service: "s".into(), key: "k".into(), value_json: "1".into(), schema_hash: None },
            EventKind::ValueUnset { service: "s".into(), key: "k".into(), schema_hash: Some([1; 32]) },
            EventKind::SigningKeyRotated { new_public_key: [2; 32], new_key_sig: [3; 64] },
            EventKind::RolledBack { from_epoch: 9, to_epoch: 3, service: Some("s".into()) },
            EventKind::SchemaSet { service: "s".into(), schema_json: "{}".into(), schema_hash: [4; 32] },
            EventKind::SecretSet {
                service: "s".into(),
                key: "k".into(),
                key_version: 1,
                nonce: [5; 12],
                ciphertext: vec![1, 2, 3],
                schema_hash: None,
            },
            EventKind::SecretRevealed { service: "s".into(), key: "k".into() },
            EventKind::TokenIssued {
                token_id: "00112233aabbccdd".into(),
                name: "n".into(),
                role: "admin".into(),
                service: None,
                token_hash: [6; 32],
            },
            EventKind::TokenRevoked { token_id: "00112233aabbccdd".into() },
            EventKind::AccessDenied {
                token_id: "00112233aabbccdd".into(),
                method: "GET".into(),
                route: "/api/v1/audit".into(),
                required_role: "audit.read".into(),
                service: None,
            },
            EventKind::GenerationStarted { generation: 2, abandoned_seq: 40, abandoned_hash: [8; 32] },
            EventKind::AccessDeniedSummary {
                token_id: "00112233aabbccdd".into(),
                window_start_ms: 1,
                window_end_ms: 2,
                counts: vec![DenialCount { method: "GET".into(), route: "/api/v1/audit".into(), count: 9 }],
                dropped: 0,
            },
        ];
        for k in kinds {
            let bytes = postcard::to_stdvec(&k).unwrap();
            assert_eq!(u32::from(bytes[0]), k.variant(), "{}", k.name());
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = body(EventKind::ServiceRegistered { service: "s".into() }).encode();
        bytes.push(0);
        assert_eq!(EventBody::decode(&bytes), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn fixed_arrays_have_no_length_prefix() {
        let b = body(EventKind::SigningKeyRotated { new_public_key: [2; 32], new_key_sig: [3; 64] });
        let plain = body(EventKind::ServiceRegistered { service: String::new() });
        // variant(1) + 32 + 64 versus variant(1) + len(1)
        assert_eq!(b.encode().len() - plain.encode().len(), 96 - 1);
    }
}
