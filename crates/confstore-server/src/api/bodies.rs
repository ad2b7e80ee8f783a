//! Named OpenAPI schemas of the bodies whose JSON is made outside this crate's handler
//! structs — by confstore-core (events, signed documents), the snapshot projection, or the
//! health and readiness reports — so that no answer of the document is a bare
//! `{"type": "object"}`. Each type describes exactly the JSON the server sends (checked
//! against real answers by `tests/tests/server_openapi_client.rs`, a client generated from
//! the document by a stock generator).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::masked::MaskedSecret;

/// A JSON Schema (2020-12) object, as a service's schema is set and served.
#[derive(Debug, Serialize, ToSchema)]
pub struct JsonSchemaDoc(pub BTreeMap<String, Value>);

/// A document signed as a flattened JWS (RFC 7515 §7.2.2) with EdDSA: a snapshot, or the
/// signed head of `POST /api/v1/verify`. Each member is base64url without padding.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlattenedJws {
    /// The protected header: `{"alg": "EdDSA", "kid", "typ"}`.
    pub protected: String,
    /// The signed document (canonical JSON).
    pub payload: String,
    /// The Ed25519 signature over `protected.payload`.
    pub signature: String,
}

/// A service's configuration at one epoch (the payload of its snapshot JWS; docs/format.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotDoc {
    /// Service.
    pub service: String,
    /// Store id (hex).
    pub store_id: String,
    /// Generation.
    pub generation: u64,
    /// The store's epoch.
    pub epoch: u64,
    /// The epoch of the service's last change.
    pub changed_epoch: u64,
    /// Seq of that change.
    pub changed_seq: u64,
    /// The epoch of the service's version before it.
    pub prev_epoch: u64,
    /// Hash of the service's schema (hex), if it has one.
    pub schema_hash: Option<String>,
    /// key -> resolved value; a secret's is its envelope `{"$secret": {...}}`.
    pub config: BTreeMap<String, Value>,
    /// key -> where the value comes from: `service`, `global` or `default`.
    pub sources: BTreeMap<String, String>,
}

/// An event's fields as decoded from its body (confstore-core `EventBody::to_json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBodyOut {
    /// The configuration epoch of its changeset.
    pub epoch: u64,
    /// When it was written (Unix milliseconds).
    pub time_ms: u64,
    /// Its place in its changeset (0-based).
    pub changeset_index: u32,
    /// How many events its changeset has.
    pub changeset_len: u32,
    /// Who wrote it (`token:<name>`, `cli:<user>`, ...).
    pub actor: String,
    /// Why (may be empty).
    pub reason: String,
    /// The request id of the write.
    pub request_id: String,
    /// What happened.
    pub kind: EventKindOut,
}

/// One event of `GET /api/v1/history` and `GET /api/v1/audit`: its decoded fields with its
/// seq and time.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    /// Seq.
    pub seq: u64,
    /// When it was written (RFC 3339).
    pub time: String,
    /// The decoded body's fields.
    #[serde(flatten)]
    pub body: EventBodyOut,
}

/// One stored event of `GET /api/v1/events`: the export line (docs/format.md), with `time`
/// as RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredEventOut {
    /// Seq.
    pub seq: u64,
    /// The configuration epoch of its changeset.
    pub epoch: Option<u64>,
    /// When it was written (RFC 3339).
    pub time: String,
    /// Hash of the previous event (hex).
    pub prev_hash: String,
    /// Its hash (hex).
    pub hash: String,
    /// Id of the key that signed it (hex).
    pub key_id: String,
    /// Ed25519 signature (hex).
    pub sig: String,
    /// The signed body (base64).
    pub body: String,
    /// The body decoded.
    pub event: Option<EventBodyOut>,
}

/// An event of a page: [`EventOut`] on history and audit pages, [`StoredEventOut`] on
/// `/api/v1/events`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[expect(
    dead_code,
    reason = "the schema of the JSON history.rs builds from stored events; real answers are checked against it by tests/tests/server_openapi_client.rs"
)]
pub enum PageEvent {
    /// History and audit.
    Decoded(EventOut),
    /// Events with hashes and signatures.
    Stored(StoredEventOut),
}

/// One changeset of `GET /api/v1/changesets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangesetOut {
    /// Its epoch.
    pub epoch: u64,
    /// When (RFC 3339).
    pub time: String,
    /// Who.
    pub actor: String,
    /// Why (may be empty).
    pub reason: String,
    /// The request id of the write.
    pub request_id: String,
    /// Its changes in order; a `secret_set` change carries `value`, the marker
    /// `{"$secret": true}`.
    pub changes: Vec<EventKindOut>,
}

/// One (method, route) of an `access_denied_summary`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DenialCount {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Refusals in the window.
    pub count: u64,
}

/// What an event did (confstore-core `EventKind`), tagged by `type`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[expect(
    dead_code,
    reason = "the schema of the JSON history.rs builds from stored events; real answers are checked against it by tests/tests/server_openapi_client.rs"
)]
pub enum EventKindOut {
    /// The store's first event.
    StoreCreated {
        /// Store id (hex).
        store_id: String,
        /// The first signing key (hex).
        public_key: String,
    },
    /// A service was registered.
    ServiceRegistered {
        /// Service.
        service: String,
    },
    /// A plain value was set.
    ValueSet {
        /// Service.
        service: String,
        /// Key.
        key: String,
        /// The value.
        value: Value,
        /// The schema it was checked against (hex).
        schema_hash: Option<String>,
    },
    /// A value was removed.
    ValueUnset {
        /// Service.
        service: String,
        /// Key.
        key: String,
        /// The schema it was checked against (hex).
        schema_hash: Option<String>,
    },
    /// The signing key was rotated.
    SigningKeyRotated {
        /// The new key (hex).
        new_public_key: String,
        /// The old key's signature over it (hex).
        new_key_sig: String,
    },
    /// The configuration of an earlier epoch was restored.
    RolledBack {
        /// The epoch rolled back from.
        from_epoch: u64,
        /// The epoch restored.
        to_epoch: u64,
        /// The one service rolled back; absent or null: every service.
        service: Option<String>,
    },
    /// A secret was set (its ciphertext is never shown).
    SecretSet {
        /// Service.
        service: String,
        /// Key.
        key: String,
        /// The master key version it is encrypted with.
        key_version: u32,
        /// The schema it was checked against (hex).
        schema_hash: Option<String>,
        /// In changesets only: the marker `{"$secret": true}`.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<MaskedSecret>,
    },
    /// A secret was revealed.
    SecretRevealed {
        /// Service.
        service: String,
        /// Key.
        key: String,
    },
    /// A token was issued.
    TokenIssued {
        /// Token id.
        token_id: String,
        /// Its name.
        name: String,
        /// Its role.
        role: String,
        /// Its service scope.
        service: Option<String>,
        /// SHA-256 of the token (hex).
        token_hash: String,
    },
    /// A token was revoked.
    TokenRevoked {
        /// Token id.
        token_id: String,
    },
    /// A request was refused (403).
    AccessDenied {
        /// Token id.
        token_id: String,
        /// HTTP method.
        method: String,
        /// Route template.
        route: String,
        /// The role it needed.
        required_role: String,
        /// The service it named.
        service: Option<String>,
    },
    /// A service's schema was set.
    SchemaSet {
        /// Service.
        service: String,
        /// The schema.
        schema: JsonSchemaDoc,
        /// Its hash (hex).
        schema_hash: String,
    },
    /// A new generation continues from a rewound database.
    GenerationStarted {
        /// The new generation.
        generation: u64,
        /// The last seq of the abandoned history.
        abandoned_seq: u64,
        /// Its hash (hex).
        abandoned_hash: String,
    },
    /// A token's later refusals in one window.
    AccessDeniedSummary {
        /// Token id.
        token_id: String,
        /// Window start (Unix milliseconds).
        window_start_ms: u64,
        /// Window end (Unix milliseconds).
        window_end_ms: u64,
        /// Refusals per (method, route).
        counts: Vec<DenialCount>,
        /// Refusals not counted (over the per-window bound).
        dropped: u64,
    },
    /// A staged rollout started (docs/format.md §21).
    RolloutStarted {
        /// Service.
        service: String,
        /// Who gets the staged version.
        #[schema(value_type = CohortDoc)]
        cohort: serde_json::Value,
        /// Bake time (ms).
        bake_ms: u64,
        /// Decided automatically.
        auto: bool,
        /// The service version it is staged on.
        base_epoch: u64,
        /// The staged changes (`op` set, unset or secret; a secret shows only its key and key version).
        #[schema(value_type = Vec<StagedChangeDoc>)]
        changes: Vec<serde_json::Value>,
        /// The schema they were checked against (hex).
        schema_hash: Option<String>,
    },
    /// A rollout was given to every instance (its changes follow in the changeset).
    RolloutPromoted {
        /// Service.
        service: String,
        /// The rollout.
        rollout_seq: u64,
        /// Decided by the server's rules.
        automatic: bool,
        /// What each cohort instance reported.
        cohort: Vec<CohortMemberOut>,
    },
    /// A rollout was withdrawn.
    RolloutAborted {
        /// Service.
        service: String,
        /// The rollout.
        rollout_seq: u64,
        /// Decided by the server's rules.
        automatic: bool,
        /// What each cohort instance reported.
        cohort: Vec<CohortMemberOut>,
    },
}

/// A staged rollout's cohort (docs/format.md §21.1): one of the two members.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortDoc {
    /// The listed instance ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<Vec<String>>,
    /// The share of the instances, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    percent: Option<f64>,
}

/// One staged change of a rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct StagedChangeDoc {
    /// `set`, `unset` or `secret`.
    op: String,
    /// The key.
    key: String,
    /// `set` only: the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    /// `secret` only: the master-key version that sealed it (the value is never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_version: Option<u32>,
}

/// One cohort instance in a rollout decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortMemberOut {
    /// Instance id.
    pub instance: String,
    /// Ran the staged version.
    pub applied: bool,
    /// Its health report, if any.
    pub healthy: Option<bool>,
    /// Online.
    pub online: bool,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// Always `ok`: the process answers.
    pub status: String,
    /// `read_write` or `read_only_fallback`.
    pub mode: String,
    /// In the fallback: why the database is not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// In the fallback: the LKG file served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lkg: Option<HealthLkg>,
}

/// The LKG file as `/healthz` reports it in the fallback.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HealthLkg {
    /// Verified and served.
    Usable {
        /// `true`.
        usable: bool,
        /// Its seq.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// Why it is older than its high-water mark, or null.
        stale: Option<String>,
    },
    /// Refused.
    Refused {
        /// `false`.
        usable: bool,
        /// Why.
        error: String,
    },
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyOut {
    /// Whether requests can be served.
    pub ready: bool,
    /// `read_write` or `read_only_fallback`.
    pub mode: String,
    /// Whether writes are accepted now.
    pub writes: Writes,
    /// Live: seq of the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Live: epoch of the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The database schema version this server writes.
    pub schema_version: u32,
    /// The signing key's id.
    pub signing_key_id: String,
    /// Live: how far each projection is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projections: Option<Projections>,
    /// Live: the MQTT publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_stream: Option<LiveStream>,
    /// Fallback: the LKG file served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lkg: Option<ReadyLkg>,
}

/// Whether writes are accepted: `"accepted"`, `{"refused": why}` or
/// `{"failing": {"error", "at"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Writes {
    /// `"accepted"`.
    Accepted(WritesAccepted),
    /// The store refuses writes.
    Refused {
        /// Why.
        refused: String,
    },
    /// The last append failed.
    Failing {
        /// The failure.
        failing: AppendFailing,
    },
}

/// The one word `accepted`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WritesAccepted {
    /// Writes are accepted.
    Accepted,
}

/// The last failed append.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppendFailing {
    /// The store's error.
    pub error: String,
    /// When (RFC 3339).
    pub at: String,
}

/// Seq and lag of one projection.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// The last seq it holds.
    pub seq: u64,
    /// Events behind the head.
    pub lag: u64,
}

/// The projections `/readyz` reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct Projections {
    /// The in-memory read model.
    pub read_model: Progress,
    /// The search index.
    pub search: Progress,
    /// The LKG file.
    pub lkg: Progress,
}

/// The live stream: `"off"`, or the publisher's progress (advice only).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LiveStream {
    /// `"off"` (`--no-mqtt`).
    Off(LiveStreamOff),
    /// The publisher.
    On {
        /// Whether it is connected to the broker.
        connected: bool,
        /// The last seq published.
        seq: u64,
        /// Events behind the head.
        lag: u64,
    },
}

/// The one word `off`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveStreamOff {
    /// No live stream.
    Off,
}

/// The LKG file as `/readyz` reports it in the fallback.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReadyLkg {
    /// Verified and served.
    Served {
        /// Its seq.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// Why it is older than its high-water mark, or null.
        stale: Option<String>,
    },
    /// Refused.
    Refused {
        /// Why.
        error: String,
    },
}

/// This API's OpenAPI 3.1 document.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenApiDoc {
    /// The OpenAPI version (3.1.x).
    pub openapi: String,
    /// Title, description, license, version.
    pub info: BTreeMap<String, Value>,
    /// Every route: path -> method -> operation.
    pub paths: BTreeMap<String, BTreeMap<String, Value>>,
    /// Schemas and security schemes.
    pub components: BTreeMap<String, Value>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Value>>,
}

/// An instance's status report (`confstore-status/1`, docs/format.md §20): what a client
/// instance applied. The handler reads it with `confstore_core::fleet::Status::parse`
/// (unknown members refused); this type only names its schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusReportBody {
    /// `"confstore-status/1"`.
    pub format: String,
    /// The service (the path's).
    pub service: String,
    /// The instance id (the path's).
    pub instance: String,
    /// `"online"` or `"offline"`.
    pub state: String,
    /// The store's id (hex); required when online.
    pub store_id: Option<String>,
    /// Generation of the version held; required when online.
    pub generation: Option<u64>,
    /// The store epoch the version held reflects; required when online.
    pub epoch: Option<u64>,
    /// The version held (its `changed_epoch`); required when online.
    pub version: Option<u64>,
    /// Where it came from: `live`, `rest` or `lkg`.
    pub source: Option<String>,
    /// Names of the keys the instance's environment overrides.
    pub env_overrides: Option<Vec<String>>,
    /// When it applied the version (unix ms).
    pub applied_ms: Option<u64>,
    /// Its own word on its health.
    pub healthy: Option<bool>,
    /// When the report was made (unix ms).
    pub time_ms: u64,
    /// Which run of the client made it (its start, unix ms).
    pub session: Option<u64>,
}
