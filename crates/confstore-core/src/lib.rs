//! confstore's core: the v1 event model and everything that can be computed about it
//! without touching a file, a socket or a clock.
//!
//! - [`event`]: the event body and its postcard encoding (the v1 wire format).
//! - [`chain`]: genesis and event hashes (the hash chain).
//! - [`json`]: strict JSON for values: numbers kept exactly, no repeated keys.
//! - [`jws`]: flattened EdDSA JWS, how snapshots, stream events and heads are signed.
//! - [`stream`]: the MQTT stream's topics and payloads, and the rule a client applies them by.
//! - [`keys`]: Ed25519 signing keys, key ids and the key chain (rotation statements).
//! - [`verify`]: streaming verification of stored events, and sealing of the events this
//!   process appends: the only makers of [`verify::Verified`].
//! - [`state`]: the configuration state, `decide` (command -> events) and `apply` (event -> state).
//! - [`export`]: the JSON Lines export format (`confstore-export/1`).
//! - [`timetravel`]: diffs between two states, and the changes that roll one back.
//! - [`schema`]: service schemas (JSON Schema 2020-12) and their validation.
//! - [`secret`]: AES-256-GCM envelopes for secret values (plaintext never in the log).
//! - [`auth`]: API bearer tokens (format, hash, constant-time check) and roles.
//! - [`tlog`]: the Merkle tree over the log, its proofs and signed checkpoints (C2SP notes).
//! - [`limits`]: every bound in one place.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and knows nothing of
//! SQLite, tokio, HTTP or MQTT. Callers pass bytes, keys and time in.

pub mod auth;
pub mod chain;
pub mod event;
pub mod export;
pub mod fixed_bytes;
pub mod fleet;
pub mod ids;
pub mod json;
pub mod jws;
pub mod keys;
pub mod limits;
pub mod rollout;
pub mod schema;
pub mod secret;
pub mod state;
pub mod stream;
pub mod timetravel;
pub mod tlog;
pub mod verify;

pub use chain::{event_hash, genesis_hash};
pub use event::{EventBody, EventKind};
pub use ids::{Hash32, KeyId, StoreId};
pub use keys::{KeyRing, SigningKey, VerifyingKey};
pub use state::{Change, ChangesetDraft, RejectError, State};
pub use verify::{ChainVerifier, Sealed, SignatureBatch, StoredEvent, Verified, VerifyError};
