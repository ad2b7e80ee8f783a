//! Streaming verification of stored events: links, hashes, signatures, seq continuity,
//! changeset structure, epoch and time monotonicity, and the key chain.
//!
//! [`ChainVerifier`] makes [`Verified`] of events read back, and [`Sealed`] of the events
//! this process appends (it hashes them itself, and they are signed before they are
//! stored); nothing else can, so a fold that takes `&Verified` never sees unchecked bytes. Signatures are checked in batches of
//! [`limits::VERIFY_BATCH_EVENTS`]; when a batch fails, each signature of it is checked with
//! `verify_strict` to name the first bad seq. Errors always name the first bad seq: a
//! structural error is reported only after the signatures queued before it are checked.

use crate::chain::{event_hash, genesis_hash};
use crate::event::{EventBody, EventKind};
use crate::ids::{Hash32, KeyId, StoreId};
use crate::keys::{KeyRing, VerifyingKey, key_id_of, rotation_statement};
use crate::limits;

/// One row of the `events` table (or one export line), as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// postcard bytes of the [`EventBody`].
    pub body: Vec<u8>,
    /// Hash of the previous event (the genesis hash for seq 1).
    pub prev_hash: Hash32,
    /// This event's hash.
    pub hash: Hash32,
    /// Id of the key that signed it.
    pub key_id: KeyId,
    /// Ed25519 signature of `hash`.
    pub sig: [u8; 64],
}

/// An event that passed verification, with its decoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    seq: u64,
    hash: Hash32,
    body: EventBody,
}

impl Verified {
    /// Position in the log.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The event hash.
    pub fn hash(&self) -> &Hash32 {
        &self.hash
    }
    /// The decoded body.
    pub fn body(&self) -> &EventBody {
        &self.body
    }
}

/// An event this process is appending: its body encoded and hashed at its place in the
/// chain (after `prev_hash`), to be signed with the store's current key and stored in the
/// transaction that folds it. Its [`Self::verified`] is what the writer folds, so the fold
/// of the writer's own events takes the same `&Verified` as the fold of events read back.
/// Sealing owns the body: what is folded is exactly what was hashed.
#[derive(Clone, Debug)]
pub struct Sealed {
    verified: Verified,
    prev_hash: Hash32,
    bytes: Vec<u8>,
}

impl Sealed {
    /// Encodes `body` and hashes it as event `seq` after `prev_hash`.
    pub fn new(seq: u64, prev_hash: &Hash32, body: EventBody) -> Self {
        let bytes = body.encode();
        let hash = event_hash(seq, prev_hash, &bytes);
        Self { verified: Verified { seq, hash, body }, prev_hash: *prev_hash, bytes }
    }

    /// The event to fold.
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// The hash it follows: the previous event's (the genesis hash for event 1).
    pub fn prev_hash(&self) -> &Hash32 {
        &self.prev_hash
    }

    /// The stored row, signed by `key_id` with `sig` (a signature of [`Verified::hash`],
    /// made on any thread: the writer signs a batch on every core).
    pub fn into_stored(self, key_id: KeyId, sig: [u8; 64]) -> StoredEvent {
        StoredEvent {
            seq: self.verified.seq,
            body: self.bytes,
            prev_hash: self.prev_hash,
            hash: self.verified.hash,
            key_id,
            sig,
        }
    }
}

/// Why a log does not verify. Every variant names the first bad seq.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The log holds no event at all.
    #[error("the log is empty: event 1 (store created) is missing")]
    Empty,
    /// An event is missing, duplicated or out of order.
    #[error("event {seq}: expected seq {seq}, found seq {found} (missing, duplicated or reordered event)")]
    SeqGap {
        /// The seq that was expected here.
        seq: u64,
        /// The seq found instead.
        found: u64,
    },
    /// `prev_hash` is not the previous event's hash.
    #[error("event {seq}: prev_hash does not match the hash of event {prev} (broken link)", prev = seq - 1)]
    BrokenLink {
        /// The bad seq.
        seq: u64,
    },
    /// `prev_hash` of event 1 is not the genesis hash of this store id.
    #[error("event 1: prev_hash is not the genesis hash of store {store_id}")]
    BadGenesis {
        /// The store id the genesis was computed for.
        store_id: StoreId,
    },
    /// The stored hash is not the hash of (seq, prev_hash, body).
    #[error("event {seq}: stored hash does not match its contents (was the row modified?)")]
    HashMismatch {
        /// The bad seq.
        seq: u64,
    },
    /// The body is larger than the limit, malformed or has trailing bytes.
    #[error("event {seq}: {reason}")]
    BadBody {
        /// The bad seq.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Signed by a key other than the one active at this seq.
    #[error("event {seq}: signed by key {found}, but key {expected} signs events at this point")]
    WrongKey {
        /// The bad seq.
        seq: u64,
        /// The active key's id.
        expected: KeyId,
        /// The key id stored with the event.
        found: KeyId,
    },
    /// The signature does not verify.
    #[error("event {seq}: signature does not verify with key {key_id} (was the log modified?)")]
    BadSignature {
        /// The bad seq.
        seq: u64,
        /// The key it was checked against.
        key_id: KeyId,
    },
    /// The event breaks a structural rule of the log (changesets, epochs, time, key chain).
    #[error("event {seq}: {reason}")]
    Structure {
        /// The bad seq.
        seq: u64,
        /// Which rule.
        reason: String,
    },
    /// The log ends inside a changeset: its last events are missing.
    #[error("event {seq}: missing; the log ends inside the changeset that starts at event {start} (truncated)")]
    Truncated {
        /// The first missing seq.
        seq: u64,
        /// First seq of the incomplete changeset.
        start: u64,
    },
    /// The trusted public key is none of this store's keys.
    #[error("event 1: the trusted public key {key_id} is not a signing key of this store")]
    UntrustedKey {
        /// The trusted key's id.
        key_id: KeyId,
    },
}

impl VerifyError {
    /// The first bad seq this error names (0 for an empty log).
    pub fn seq(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::BadGenesis { .. } | Self::UntrustedKey { .. } => 1,
            Self::SeqGap { seq, .. }
            | Self::BrokenLink { seq }
            | Self::HashMismatch { seq }
            | Self::BadBody { seq, .. }
            | Self::WrongKey { seq, .. }
            | Self::BadSignature { seq, .. }
            | Self::Structure { seq, .. }
            | Self::Truncated { seq, .. } => *seq,
        }
    }
}

/// Where the chain stands after a changeset boundary: enough to verify what follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Store id (genesis).
    pub store_id: StoreId,
    /// Seq of the last event (0 before event 1).
    pub seq: u64,
    /// Hash of the last event (the genesis hash before event 1).
    pub hash: Hash32,
    /// Epoch after the last event.
    pub epoch: u64,
    /// Time of the last event.
    pub time_ms: u64,
    /// Every key so far; the last one signs the next event.
    pub keys: KeyRing,
    /// The store's generation after the last event (1 from event 1; raised by
    /// `generation_started`).
    pub generation: u64,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis(store_id: StoreId) -> Self {
        Self {
            store_id,
            seq: 0,
            hash: genesis_hash(&store_id),
            epoch: 0,
            time_ms: 0,
            keys: KeyRing::new(),
            generation: 0,
        }
    }
}

struct OpenChangeset {
    start: u64,
    first: EventBody,
    changes_config: bool,
    prev_epoch: u64,
}

/// One signature to check.
#[derive(Clone, Debug)]
struct SigItem {
    seq: u64,
    hash: Hash32,
    sig: [u8; 64],
    key: VerifyingKey,
}

/// Signatures of consecutive events, checked together. Owns its data, so it can be checked
/// on any thread ([`ChainVerifier::defer_signatures`]).
#[derive(Clone, Debug)]
pub struct SignatureBatch {
    items: Vec<SigItem>,
    strict: bool,
}

impl SignatureBatch {
    /// Seq of the first event in the batch.
    pub fn first_seq(&self) -> u64 {
        self.items.first().map_or(0, |i| i.seq)
    }

    /// Number of signatures.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Checks every signature: in one batch equation, or one by one with `verify_strict` in
    /// strict mode or when the batch fails, to name the first bad seq.
    pub fn check(&self) -> Result<(), VerifyError> {
        if self.items.is_empty() {
            return Ok(());
        }
        if !self.strict {
            let msgs: Vec<&[u8]> = self.items.iter().map(|p| p.hash.0.as_slice()).collect();
            let sigs: Vec<ed25519_dalek::Signature> =
                self.items.iter().map(|p| ed25519_dalek::Signature::from_bytes(&p.sig)).collect();
            let keys: Vec<ed25519_dalek::VerifyingKey> = self.items.iter().map(|p| *p.key.inner()).collect();
            if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
                return Ok(());
            }
        }
        match self.items.iter().find(|p| !p.key.verify_strict(&p.hash.0, &p.sig)) {
            Some(p) => Err(VerifyError::BadSignature { seq: p.seq, key_id: p.key.key_id() }),
            None => Ok(()),
        }
    }
}

/// Verifies events pushed one by one, in order.
pub struct ChainVerifier {
    head: ChainHead,
    anchor: Option<VerifyingKey>,
    trusted_through: u64,
    keep: bool,
    strict: bool,
    deferred: bool,
    open: Option<OpenChangeset>,
    /// Signatures not checked yet.
    pending: Vec<SigItem>,
    /// Events held back until the signatures queued before or with them are checked.
    held: Vec<Verified>,
    ready: Vec<Verified>,
    /// Batches handed out instead of checked ([`Self::defer_signatures`]).
    outbox: Vec<SignatureBatch>,
}

impl ChainVerifier {
    /// Verifies a log from event 1. `anchor` is the public key the caller trusts; it must be
    /// one of the store's keys (the genesis key, or one rotated in with its own signature).
    pub fn new(store_id: StoreId, anchor: Option<VerifyingKey>) -> Self {
        Self::resume(ChainHead::genesis(store_id), anchor)
    }

    /// Continues after `head` (a changeset boundary that was verified before).
    pub fn resume(head: ChainHead, anchor: Option<VerifyingKey>) -> Self {
        Self {
            head,
            anchor,
            trusted_through: 0,
            keep: true,
            strict: false,
            deferred: false,
            open: None,
            pending: Vec::new(),
            held: Vec::new(),
            ready: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Skips signature checks for events up to `seq`, whose signatures were checked before
    /// (the database's verified head). Links, hashes and structure are still checked.
    pub fn trust_signatures_through(mut self, seq: u64) -> Self {
        self.trusted_through = seq;
        self
    }

    /// Checks every signature on its own with `verify_strict` instead of in batches: slower,
    /// and exactly the strict rules (a batch does not refuse a small-order `R`; ADR 0003).
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// Hands signature batches out ([`Self::take_signature_batches`]) instead of checking
    /// them, so a caller can check them on other threads. Every other rule is still checked
    /// here. The caller owns the outcome: the log verifies only if every batch checks, and
    /// the first bad seq is the smallest one among failed batches and this verifier's own
    /// error. Implies [`Self::discard_events`] (nothing is released unchecked).
    pub fn defer_signatures(mut self) -> Self {
        self.deferred = true;
        self.keep = false;
        self
    }

    /// The signature batches handed out so far (deferred mode).
    pub fn take_signature_batches(&mut self) -> Vec<SignatureBatch> {
        std::mem::take(&mut self.outbox)
    }

    /// Drops verified events instead of keeping them for [`Self::take_ready`].
    pub fn discard_events(mut self) -> Self {
        self.keep = false;
        self
    }

    /// The head after the last event pushed.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// Whether the last event pushed ended a changeset.
    pub fn at_changeset_boundary(&self) -> bool {
        self.open.is_none()
    }

    /// Events whose verification is complete, in order.
    pub fn take_ready(&mut self) -> Vec<Verified> {
        std::mem::take(&mut self.ready)
    }

    /// Checks one event. On error the verifier must not be used further.
    pub fn push(&mut self, ev: &StoredEvent) -> Result<(), VerifyError> {
        match self.check(ev) {
            Ok(()) => {
                if self.pending.len() >= limits::VERIFY_BATCH_EVENTS {
                    self.flush()?;
                } else if self.pending.is_empty() {
                    // Nothing unchecked is queued before these events: release them.
                    self.ready.append(&mut self.held);
                }
                Ok(())
            }
            Err(e) => {
                // A bad signature earlier in the batch is the first bad seq.
                self.flush()?;
                Err(e)
            }
        }
    }

    /// Checks the remaining signatures and the end of the log; returns the final head.
    /// In deferred mode the last batch is handed out instead, and `Ok` means only that
    /// everything but the signatures verified.
    pub fn finish(mut self) -> Result<ChainHead, VerifyError> {
        self.flush()?;
        self.finish_checks()
    }

    /// [`Self::finish`] for deferred mode: the end-of-log result and the remaining batches.
    pub fn finish_deferred(mut self) -> (Result<ChainHead, VerifyError>, Vec<SignatureBatch>) {
        let flushed = self.flush();
        let batches = self.take_signature_batches();
        (flushed.and_then(|()| self.finish_checks()), batches)
    }

    fn finish_checks(self) -> Result<ChainHead, VerifyError> {
        if let Some(open) = &self.open {
            return Err(VerifyError::Truncated { seq: self.head.seq + 1, start: open.start });
        }
        if self.head.seq == 0 {
            return Err(VerifyError::Empty);
        }
        if let Some(anchor) = &self.anchor
            && !self.head.keys.contains(anchor)
        {
            return Err(VerifyError::UntrustedKey { key_id: anchor.key_id() });
        }
        Ok(self.head)
    }

    /// Like [`Self::finish`] but keeps the verifier: checks queued signatures and returns
    /// the events made ready. Used by readers that stream a long log.
    pub fn flush_ready(&mut self) -> Result<Vec<Verified>, VerifyError> {
        self.flush()?;
        Ok(self.take_ready())
    }

    fn flush(&mut self) -> Result<(), VerifyError> {
        if !self.pending.is_empty() {
            let batch = SignatureBatch { items: std::mem::take(&mut self.pending), strict: self.strict };
            if self.deferred {
                self.outbox.push(batch);
            } else if let Err(e) = batch.check() {
                self.held.clear();
                return Err(e);
            }
        }
        self.ready.append(&mut self.held);
        Ok(())
    }

    fn check(&mut self, ev: &StoredEvent) -> Result<(), VerifyError> {
        let seq = self.head.seq + 1;
        if ev.seq != seq {
            return Err(VerifyError::SeqGap { seq, found: ev.seq });
        }
        if ev.prev_hash != self.head.hash {
            return Err(if seq == 1 {
                VerifyError::BadGenesis { store_id: self.head.store_id }
            } else {
                VerifyError::BrokenLink { seq }
            });
        }
        if ev.body.len() > limits::EVENT_BODY_BYTES_MAX {
            return Err(VerifyError::BadBody {
                seq,
                reason: format!(
                    "body is {} bytes, over the {}-byte limit",
                    ev.body.len(),
                    limits::EVENT_BODY_BYTES_MAX
                ),
            });
        }
        if event_hash(seq, &ev.prev_hash, &ev.body) != ev.hash {
            return Err(VerifyError::HashMismatch { seq });
        }
        let body = EventBody::decode(&ev.body).map_err(|e| VerifyError::BadBody { seq, reason: e.to_string() })?;
        let signer = self.signer_for(seq, &body)?;
        if ev.key_id != signer.key_id() {
            return Err(VerifyError::WrongKey { seq, expected: signer.key_id(), found: ev.key_id });
        }
        self.check_structure(seq, &body)?;
        if let EventKind::SigningKeyRotated { new_public_key, new_key_sig } = &body.kind {
            self.rotate(seq, &signer, new_public_key, new_key_sig)?;
        }
        if let EventKind::SchemaSet { schema_json, schema_hash, .. } = &body.kind
            && crate::schema::schema_hash(schema_json) != *schema_hash
        {
            return Err(VerifyError::Structure {
                seq,
                reason: "schema_set's schema_hash is not the SHA-256 of its schema".into(),
            });
        }
        self.head.seq = seq;
        self.head.hash = ev.hash;
        self.head.time_ms = body.time_ms;
        if seq > self.trusted_through {
            self.pending.push(SigItem { seq, hash: ev.hash, sig: ev.sig, key: signer });
        }
        if self.keep {
            self.held.push(Verified { seq, hash: ev.hash, body });
        }
        Ok(())
    }

    /// The key that must have signed event `seq`; for event 1, the key it declares.
    fn signer_for(&self, seq: u64, body: &EventBody) -> Result<VerifyingKey, VerifyError> {
        if seq == 1 {
            let EventKind::StoreCreated { store_id, public_key } = &body.kind else {
                return Err(VerifyError::Structure { seq, reason: "event 1 must be store_created".into() });
            };
            if *store_id != self.head.store_id {
                return Err(VerifyError::Structure {
                    seq,
                    reason: format!("store_created names store {store_id}, expected {}", self.head.store_id),
                });
            }
            return VerifyingKey::from_bytes(public_key)
                .map_err(|e| VerifyError::Structure { seq, reason: format!("genesis key: {e}") });
        }
        self.head
            .keys
            .current()
            .copied()
            .ok_or_else(|| VerifyError::Structure { seq, reason: "no signing key is known at this point".into() })
    }

    fn rotate(
        &mut self,
        seq: u64,
        old: &VerifyingKey,
        new_public_key: &[u8; 32],
        new_key_sig: &[u8; 64],
    ) -> Result<(), VerifyError> {
        let new = VerifyingKey::from_bytes(new_public_key)
            .map_err(|e| VerifyError::Structure { seq, reason: format!("rotated-in key: {e}") })?;
        if self.head.keys.contains(&new) {
            return Err(VerifyError::Structure { seq, reason: format!("key {} was already used", new.key_id()) });
        }
        let statement = rotation_statement(&self.head.store_id, &old.to_bytes(), new_public_key);
        if !new.verify_strict(&statement, new_key_sig) {
            return Err(VerifyError::Structure {
                seq,
                reason: format!("the new key {} did not sign its rotation statement", key_id_of(new_public_key)),
            });
        }
        self.head.keys.push(new, seq + 1);
        Ok(())
    }

    fn check_structure(&mut self, seq: u64, body: &EventBody) -> Result<(), VerifyError> {
        let structure = |reason: String| VerifyError::Structure { seq, reason };
        if body.time_ms < self.head.time_ms {
            return Err(structure(format!(
                "time {} ms is before the previous event's {} ms",
                body.time_ms, self.head.time_ms
            )));
        }
        match (&body.kind, seq) {
            (EventKind::StoreCreated { .. }, 1) => {
                if body.epoch != 0 || body.changeset_index != 0 || body.changeset_len != 1 {
                    return Err(structure("store_created must be alone in epoch 0".into()));
                }
                let key = self.signer_for(1, body)?;
                self.head.keys.push(key, 1);
                self.head.generation = 1;
                return Ok(());
            }
            (EventKind::StoreCreated { .. }, _) => return Err(structure("store_created after event 1".into())),
            (EventKind::SigningKeyRotated { .. }, _) if body.changeset_len != 1 => {
                return Err(structure("signing_key_rotated must be alone in its changeset".into()));
            }
            (EventKind::GenerationStarted { .. }, _) if body.changeset_len != 1 => {
                return Err(structure("generation_started must be alone in its changeset".into()));
            }
            (EventKind::GenerationStarted { generation, abandoned_seq, .. }, _) => {
                if *generation != self.head.generation + 1 {
                    return Err(structure(format!(
                        "generation_started names generation {generation}, but the store was at generation {}",
                        self.head.generation
                    )));
                }
                if *abandoned_seq == 0 {
                    return Err(structure("generation_started abandons no event (abandoned_seq 0)".into()));
                }
                self.head.generation = *generation;
            }
            _ => {}
        }
        match self.open.take() {
            None => {
                if body.changeset_index != 0 || body.changeset_len == 0 {
                    return Err(structure(format!(
                        "a changeset must start at index 0 of at least 1 event, found {}/{}",
                        body.changeset_index, body.changeset_len
                    )));
                }
                if body.changeset_len as usize > limits::EVENTS_PER_CHANGESET_MAX {
                    return Err(structure(format!("changeset of {} events is over the limit", body.changeset_len)));
                }
                let prev_epoch = self.head.epoch;
                if body.epoch != prev_epoch && body.epoch != prev_epoch + 1 {
                    return Err(structure(format!("epoch {} after epoch {prev_epoch}", body.epoch)));
                }
                if let EventKind::RolledBack { from_epoch, to_epoch, .. } = &body.kind
                    && (*from_epoch != prev_epoch || to_epoch >= from_epoch)
                {
                    return Err(structure(format!(
                        "rolled_back from epoch {from_epoch} to {to_epoch}, but the store was at epoch {prev_epoch}"
                    )));
                }
                if matches!(body.kind, EventKind::RolloutStarted { .. } | EventKind::RolloutAborted { .. })
                    && body.changeset_len != 1
                {
                    return Err(structure(format!("{} must be alone in its changeset", body.kind.name())));
                }
                self.open = Some(OpenChangeset {
                    start: seq,
                    first: body.clone(),
                    changes_config: body.changes_config(),
                    prev_epoch,
                });
            }
            Some(_)
                if matches!(
                    body.kind,
                    EventKind::RolledBack { .. }
                        | EventKind::RolloutStarted { .. }
                        | EventKind::RolloutPromoted { .. }
                        | EventKind::RolloutAborted { .. }
                ) =>
            {
                return Err(structure(format!("{} must be the first event of its changeset", body.kind.name())));
            }
            Some(mut open) => {
                let f = &open.first;
                let offset = u32::try_from(seq - open.start).unwrap_or(u32::MAX);
                let expected_index = f.changeset_index.saturating_add(offset);
                if body.changeset_index != expected_index || body.changeset_len != f.changeset_len {
                    return Err(structure(format!(
                        "changeset position {}/{} where {expected_index}/{} was expected",
                        body.changeset_index, body.changeset_len, f.changeset_len
                    )));
                }
                if body.epoch != f.epoch
                    || body.time_ms != f.time_ms
                    || body.actor != f.actor
                    || body.reason != f.reason
                    || body.request_id != f.request_id
                {
                    return Err(structure(format!(
                        "epoch, time, actor, reason or request id differ from the changeset's first event {}",
                        open.start
                    )));
                }
                open.changes_config |= body.changes_config();
                self.open = Some(open);
            }
        }
        self.head.epoch = body.epoch;
        if body.changeset_index + 1 == body.changeset_len {
            let open = self.open.take().unwrap_or_else(|| unreachable!("a changeset is open here"));
            let want = open.prev_epoch + u64::from(open.changes_config);
            if body.epoch != want {
                return Err(VerifyError::Structure {
                    seq: open.start,
                    reason: format!(
                        "changeset has epoch {} but must have epoch {want} ({})",
                        body.epoch,
                        if open.changes_config { "it changes configuration" } else { "it changes no configuration" }
                    ),
                });
            }
        }
        Ok(())
    }
}
