//! The writer: owns the read-write connection and commits a batch of changeset requests in
//! one transaction ([`crate::group`] decides who calls it and when). For each batch it
//! starts `BEGIN IMMEDIATE`, catches up with events another process appended (verifying
//! them), decides every request against the state as it stands, hashes the events in
//! order, signs them (on every core for large batches), inserts them and commits. A result
//! is returned only after COMMIT; a refused request does not affect the others.
//!
//! The write model (`state_services`, `state_values`) and the verified head are written
//! together, every [`CHECKPOINT_EVENTS`] events and when the store closes, in the same
//! transaction as events: they always describe one point of the log, the checkpoint. The
//! events after it are verified and folded in at open (see [`catch_up`]).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use confstore_core::event::{EventBody, EventKind};
use confstore_core::state::{self, ChangesetDraft};
use confstore_core::verify::ChainHead;
use confstore_core::{
    ChainVerifier, Hash32, KeyId, Sealed, SigningKey, State, StoredEvent, Verified, VerifyError, event_hash,
};
use rusqlite::{Connection, TransactionBehavior};

use crate::drain::Drain;
use crate::error::LogError;
use crate::rows;
use crate::{Clock, Receipt};

/// Events between two write-model checkpoints (limits.rs).
pub const CHECKPOINT_EVENTS: u64 = confstore_core::limits::CHECKPOINT_INTERVAL_EVENTS;
/// Up to this many new events, catch-up checks signatures one by one with the strict
/// rules; above it, in batches (limits.rs).
const STRICT_CATCH_UP_EVENTS_MAX: u64 = confstore_core::limits::STRICT_CATCH_UP_EVENTS_MAX;
/// Events from which signing is spread over every core (limits.rs).
const PARALLEL_SIGN_EVENTS_MIN: usize = confstore_core::limits::PARALLEL_SIGN_EVENTS_MIN;

/// A request to commit.
pub(crate) enum Request {
    Append { draft: ChangesetDraft },
    Rotate { new_key: Box<SigningKey>, draft: ChangesetDraft },
    StartGeneration { abandoned_seq: u64, abandoned_hash: [u8; 32], draft: ChangesetDraft },
}

impl Request {
    pub(crate) fn events(&self) -> usize {
        match self {
            Self::Append { draft } => draft.changes.len(),
            Self::Rotate { .. } | Self::StartGeneration { .. } => 1,
        }
    }
}

/// Why a store refuses every append ([`crate::Store::refusal`]). Its message is the one the
/// refused append returns ([`Self::to_error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Events after the verified head do not verify (a tampered or truncated log).
    Tampered(VerifyError),
    /// The configured signing key is not the store's current signing key.
    KeyMismatch {
        /// Id of the configured key.
        configured: KeyId,
        /// Id of the store's current key.
        current: KeyId,
    },
    /// The store was opened without a signing key.
    ReadOnly,
}

impl Refusal {
    /// The error every append gets while this refusal stands.
    pub fn to_error(&self) -> LogError {
        match self {
            Self::Tampered(e) => LogError::Tampered(e.clone()),
            Self::KeyMismatch { configured, current } => {
                LogError::KeyMismatch { configured: *configured, current: *current }
            }
            Self::ReadOnly => LogError::ReadOnly,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_error().fmt(f)
    }
}

impl std::error::Error for Refusal {}

/// What changed since the last checkpoint, to be written at the next one.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    services: BTreeMap<String, u64>,
    values: rows::ChangedValues,
    schemas: BTreeMap<String, (String, [u8; 32], u64)>,
    /// Tokens issued or revoked since the last checkpoint.
    tokens: std::collections::BTreeSet<String>,
    /// Services whose snapshot version changed since the last checkpoint.
    versions: std::collections::BTreeSet<String>,
    /// Whether `global` changed, and with it every service's version.
    all_versions: bool,
    /// Events folded in since the commit listener last heard (only kept when one is set).
    fresh: Vec<Verified>,
    /// Whether to keep `fresh`.
    collect: bool,
}

impl Dirty {
    /// Forgets what the checkpoint wrote; keeps the events the listener has not heard of.
    fn checkpointed(&mut self) {
        let fresh = std::mem::take(&mut self.fresh);
        *self = Self { fresh, collect: self.collect, ..Self::default() };
    }

    /// Forgets everything (after a rolled-back transaction).
    fn discard(&mut self) {
        *self = Self { collect: self.collect, ..Self::default() };
    }

    fn record(&mut self, ev: &Verified, changed: state::Changed<'_>) {
        if self.collect {
            self.fresh.push(ev.clone());
        }
        match changed {
            state::Changed::Nothing => {}
            state::Changed::Service(service) => {
                self.versions.insert(service.to_owned());
            }
            state::Changed::Every => self.all_versions = true,
        }
        let (seq, body) = (ev.seq(), ev.body());
        match &body.kind {
            EventKind::ServiceRegistered { service } => {
                self.services.insert(service.clone(), seq);
            }
            EventKind::ValueSet { service, key, value_json, .. } => {
                let changed = rows::ChangedValue { value_json: value_json.clone(), seq, changed_epoch: body.epoch };
                self.values.insert((service.clone(), key.clone()), Some(changed));
            }
            EventKind::ValueUnset { service, key, .. } => {
                self.values.insert((service.clone(), key.clone()), None);
            }
            EventKind::SchemaSet { service, schema_json, schema_hash } => {
                self.schemas.insert(service.clone(), (schema_json.clone(), *schema_hash, seq));
            }
            EventKind::SecretSet { service, key, key_version, nonce, ciphertext, .. } => {
                let envelope = confstore_core::secret::Envelope {
                    key_version: *key_version,
                    nonce: *nonce,
                    ciphertext: ciphertext.clone(),
                };
                let value_json = confstore_core::state::canonical_json_text(&confstore_core::secret::marker(&envelope));
                let changed = rows::ChangedValue { value_json, seq, changed_epoch: body.epoch };
                self.values.insert((service.clone(), key.clone()), Some(changed));
            }
            EventKind::TokenIssued { token_id, .. } | EventKind::TokenRevoked { token_id } => {
                self.tokens.insert(token_id.clone());
            }
            EventKind::StoreCreated { .. }
            | EventKind::SigningKeyRotated { .. }
            | EventKind::RolledBack { .. }
            | EventKind::SecretRevealed { .. }
            | EventKind::AccessDenied { .. }
            | EventKind::AccessDeniedSummary { .. }
            | EventKind::GenerationStarted { .. }
            | EventKind::RolloutStarted { .. }
            | EventKind::RolloutPromoted { .. }
            | EventKind::RolloutAborted { .. } => {}
        }
    }
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) store_id: confstore_core::StoreId,
    pub(crate) head: ChainHead,
    pub(crate) state: State,
    pub(crate) key: Option<SigningKey>,
    pub(crate) refusal: Option<Refusal>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Seq of the last checkpoint (the verified head recorded in the database).
    pub(crate) checkpoint_seq: u64,
    pub(crate) dirty: Dirty,
    pub(crate) listener: Option<Listener>,
    /// `PRAGMA data_version` when this writer last caught up with other connections.
    pub(crate) data_version: Option<i64>,
    /// Taken around every write transaction (gate.rs).
    pub(crate) gate: crate::gate::WriteGate,
    /// A reload after a failed commit failed too: `head` and `state` may hold the
    /// rolled-back batch, so they are reloaded before anything uses them.
    pub(crate) stale: bool,
}

/// Called after each commit (and each catch-up with other writers' events), with the writer
/// locked, before any appender of the batch is answered. Must be quick and must not call
/// back into the store.
pub type Listener = Box<dyn Fn(&Committed<'_>) + Send>;

/// What a [`Listener`] hears: the events folded in since it last heard, in seq order, and
/// the state after them.
#[derive(Debug)]
pub struct Committed<'a> {
    /// The new events, in seq order: signed and committed by this writer, or appended by
    /// another process and verified by it. The commit listener's consumers (the read model,
    /// the MQTT stream) fold these with `State::apply` instead of reading the log again.
    pub events: &'a [Verified],
    /// The write model after them.
    pub state: &'a State,
    /// Hash of the last event.
    pub head_hash: Hash32,
}

/// An event sealed (hashed, and folded) but not yet signed.
struct Unsigned {
    sealed: Sealed,
    /// 0: the current key; 1: the key rotated in earlier in this batch.
    key: usize,
}

type Outcome = Result<Receipt, LogError>;

impl Writer {
    /// Commits `requests` in one transaction; one outcome per request, in order.
    pub(crate) fn commit_batch(&mut self, requests: Vec<Request>) -> Vec<Outcome> {
        if let Some(refusal) = &self.refusal {
            return requests.iter().map(|_| Err(refusal.to_error())).collect();
        }
        let n = requests.len();
        let outcomes = self.commit_or_reload(requests, n);
        self.notify();
        outcomes
    }

    /// Tells the listener, if any, about the events folded in since it last heard.
    pub(crate) fn notify(&mut self) {
        if self.dirty.fresh.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.dirty.fresh);
        if let Some(listener) = &self.listener {
            listener(&Committed { events: &events, state: &self.state, head_hash: self.head.hash });
        }
    }

    /// Sets the commit listener and starts collecting events for it.
    pub(crate) fn set_listener(&mut self, listener: Listener) {
        self.dirty.collect = true;
        self.listener = Some(listener);
    }

    /// Folds in events other processes appended (a read transaction) and notifies.
    pub(crate) fn refresh(&mut self) -> Result<(), LogError> {
        if self.stale {
            self.reload()?;
        }
        // data_version changes only when another connection commits: skip the catch-up
        // (two reads and a hash) when nobody else wrote.
        let version = data_version(&self.conn)?;
        let changed = self.data_version != Some(version);
        self.data_version = Some(version);
        if changed && (self.refusal.is_none() || matches!(self.refusal, Some(Refusal::ReadOnly))) {
            let tx = self.conn.transaction().map_err(LogError::sqlite("starting a refresh"))?;
            let result = catch_up(&tx, &mut self.head, &mut self.state, &mut self.dirty);
            drop(tx);
            if let Err(LogError::Tampered(v)) = &result {
                self.refusal = Some(Refusal::Tampered(v.clone()));
            }
            result?;
        }
        self.notify();
        Ok(())
    }

    fn commit_or_reload(&mut self, requests: Vec<Request>, n: usize) -> Vec<Outcome> {
        match self.try_commit(requests) {
            Ok(outcomes) => outcomes,
            Err(err) => {
                // The transaction rolled back: forget what was folded in memory. If the
                // reload fails too (the disk fails reads as well), the writer stays `stale`
                // and reloads before its next use: once the disk answers again, appends
                // resume without a restart (docs/testing.md row 4, through serve).
                let text = match self.reload() {
                    Ok(()) => err.to_string(),
                    Err(reload) => format!("{err}; reloading the log afterwards failed too: {reload}"),
                };
                (0..n)
                    .map(|_| match &err {
                        LogError::Tampered(_) | LogError::KeyMismatch { .. } => Err(self.refusal_or(&err)),
                        _ => Err(LogError::NotCommitted(text.clone())),
                    })
                    .collect()
            }
        }
    }

    fn refusal_or(&self, err: &LogError) -> LogError {
        self.refusal.as_ref().map_or_else(|| LogError::NotCommitted(err.to_string()), Refusal::to_error)
    }

    /// One transaction. An `Err` means nothing was committed.
    fn try_commit(&mut self, requests: Vec<Request>) -> Result<Vec<Outcome>, LogError> {
        if self.stale {
            self.reload()?;
        }
        // In turn with this process's other writers of the file (the search index's
        // catch-up): at most one of their transactions ahead of this one (gate.rs).
        let gate = self.gate.clone();
        let _turn = gate.hold();
        let tx = WriteTx::begin(&self.conn).map_err(LogError::sqlite("starting a write transaction"))?;
        // Another connection (the CLI, a tool, a tamperer using SQLite) committed since this
        // writer last looked exactly when `PRAGMA data_version` moved; this writer's own
        // commits do not move it. Only then is there anything to catch up with or to check.
        let version = data_version(&tx)?;
        if self.data_version != Some(version) {
            if let Err(e) = catch_up(&tx, &mut self.head, &mut self.state, &mut self.dirty) {
                if let LogError::Tampered(v) = &e {
                    self.refusal = Some(Refusal::Tampered(v.clone()));
                }
                return Err(e);
            }
            self.data_version = Some(version);
        }
        if let Some(refusal) = key_mismatch(self.key.as_ref(), &self.head) {
            self.refusal = Some(refusal.clone());
            return Err(refusal.to_error());
        }
        let Some(current) = self.key.as_ref() else {
            self.refusal = Some(Refusal::ReadOnly);
            return Err(LogError::ReadOnly);
        };
        let mut next_key: Option<SigningKey> = None;
        let generation_before = self.state.generation;
        let batch_start = (self.head.seq, self.head.hash);
        let mut unsigned: Vec<Unsigned> = Vec::new();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(requests.len());
        for request in requests {
            let now = self.clock.now_ms();
            let signer = next_key.as_ref().unwrap_or(current);
            let bodies = match &request {
                Request::Append { draft } => state::decide(&self.state, draft, now),
                Request::Rotate { new_key, draft } => {
                    state::rotate_signing_key(&self.state, &self.store_id, signer, new_key, draft, now).map(|b| vec![b])
                }
                Request::StartGeneration { abandoned_seq, abandoned_hash, draft } => {
                    state::start_generation(&self.state, draft, *abandoned_seq, *abandoned_hash, now).map(|b| vec![b])
                }
            };
            let bodies = match bodies {
                Ok(b) => b,
                Err(e) => {
                    outcomes.push(Err(LogError::Rejected(e)));
                    continue;
                }
            };
            let first_seq = self.head.seq + 1;
            if cfg!(debug_assertions) {
                debug_check_changeset(&self.head, &bodies);
            }
            for body in bodies {
                let sealed = Sealed::new(self.head.seq + 1, &self.head.hash, body);
                let ev = sealed.verified();
                let changed = self.state.apply(ev);
                self.dirty.record(ev, changed);
                self.head.seq = ev.seq();
                self.head.hash = *ev.hash();
                self.head.epoch = ev.body().epoch;
                self.head.time_ms = ev.body().time_ms;
                self.head.generation = self.state.generation;
                unsigned.push(Unsigned { sealed, key: usize::from(next_key.is_some()) });
            }
            if let Request::Rotate { new_key, .. } = &request {
                // A rotation always ends its batch (group::take_batch), so it is the last.
                self.head.keys.push(new_key.verifying_key(), self.head.seq + 1);
                next_key = Some(SigningKey::from_seed(&new_key.seed()));
            }
            outcomes.push(Ok(Receipt {
                first_seq,
                last_seq: self.head.seq,
                epoch: self.head.epoch,
                hash: self.head.hash,
                time_ms: self.head.time_ms,
            }));
        }
        if unsigned.is_empty() {
            // Everything was refused: nothing to commit.
            return Ok(outcomes);
        }
        // Seq continuity: the batch continues the chain from the head it started at, each
        // event one seq after the one before it and linked to its hash.
        debug_assert!(
            std::iter::once((batch_start.0, &batch_start.1))
                .chain(unsigned.iter().map(|u| (u.sealed.verified().seq(), u.sealed.verified().hash())))
                .zip(&unsigned)
                .all(|((seq, hash), u)| u.sealed.verified().seq() == seq + 1 && u.sealed.prev_hash() == hash),
            "the batch continues the chain from event {}",
            batch_start.0
        );
        if self.state.generation != generation_before {
            // Readers (and the next open) see the new generation with its event.
            rows::set_generation(&tx, self.state.generation)?;
        }
        let keys: Vec<&SigningKey> = std::iter::once(current).chain(next_key.as_ref()).collect();
        let sigs = sign_all(&unsigned, &keys);
        for (u, sig) in unsigned.into_iter().zip(sigs) {
            let key_id = keys[u.key].verifying_key().key_id();
            rows::insert_event(&tx, &u.sealed.into_stored(key_id, sig))?;
        }
        let checkpoint = self.head.seq - self.checkpoint_seq >= CHECKPOINT_EVENTS;
        if checkpoint {
            write_model(&tx, &self.head, &self.dirty, &self.state)?;
            fail::fail_point!("log::mid_checkpoint", |_| std::process::abort());
        }
        fail::fail_point!("log::before_commit", |_| std::process::abort());
        tx.commit().map_err(LogError::sqlite("committing a changeset"))?;
        fail::fail_point!("log::after_commit", |_| std::process::abort());
        if checkpoint {
            self.checkpoint_seq = self.head.seq;
            self.dirty.checkpointed();
        }
        if let Some(k) = next_key {
            self.key = Some(k);
        }
        Ok(outcomes)
    }

    /// Writes a checkpoint in its own transaction if anything changed since the last one
    /// (on close). Best effort: without it, the next open verifies and replays the tail.
    pub(crate) fn checkpoint_now(&mut self) -> Result<(), LogError> {
        if self.stale {
            self.reload()?;
        }
        if self.refusal.is_some() || self.head.seq == self.checkpoint_seq {
            return Ok(());
        }
        let gate = self.gate.clone();
        let _turn = gate.hold();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(LogError::sqlite("starting a checkpoint"))?;
        catch_up(&tx, &mut self.head, &mut self.state, &mut self.dirty)?;
        write_model(&tx, &self.head, &self.dirty, &self.state)?;
        tx.commit().map_err(LogError::sqlite("committing a checkpoint"))?;
        self.checkpoint_seq = self.head.seq;
        self.dirty.checkpointed();
        Ok(())
    }

    /// Reloads head and state from the database after a rolled-back transaction.
    pub(crate) fn reload(&mut self) -> Result<(), LogError> {
        // First, before anything that can fail: the rolled-back events must never reach the
        // listener. (When the reload failed too, e.g. reads failing after a power cut, they
        // did: `commit_batch` notified the server of events that were never committed, and
        // its LKG high-water mark then stood above the database; tests/tests/serve_io_errors.rs.)
        self.dirty.discard();
        // Until the reload succeeds, head and state may still hold the rolled-back batch:
        // every later use reloads first (try_commit, refresh, checkpoint_now).
        self.stale = true;
        self.head = rows::chain_head(&self.conn, self.store_id)?;
        self.state = rows::load_state(&self.conn, &self.head)?;
        self.checkpoint_seq = self.head.seq;
        // Check again at the next commit whatever data_version says.
        self.data_version = None;
        catch_up(&self.conn, &mut self.head, &mut self.state, &mut self.dirty)?;
        self.stale = false;
        Ok(())
    }
}

/// Writes the checkpoint: what changed since the last one, at `head`.
pub(crate) fn write_model(conn: &Connection, head: &ChainHead, dirty: &Dirty, state: &State) -> Result<(), LogError> {
    rows::write_checkpoint(conn, head, &dirty.services, &dirty.values, &dirty.schemas, &state.secret_encryptions)?;
    rows::write_tokens(conn, dirty.tokens.iter().filter_map(|id| state.tokens.get_key_value(id)))?;
    if dirty.all_versions {
        rows::write_versions(conn, state.versions.iter())
    } else {
        rows::write_versions(conn, dirty.versions.iter().filter_map(|s| state.versions.get_key_value(s)))
    }
}

/// Signs every event with its key; on every core when there are many.
fn sign_all(unsigned: &[Unsigned], keys: &[&SigningKey]) -> Vec<[u8; 64]> {
    let sign = |u: &Unsigned| keys[u.key].sign_hash(u.sealed.verified().hash());
    if unsigned.len() < PARALLEL_SIGN_EVENTS_MIN {
        return unsigned.iter().map(sign).collect();
    }
    // available_parallelism reads cgroup files on Linux: ask once.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads < 2 {
        return unsigned.iter().map(sign).collect();
    }
    let mut sigs = vec![[0u8; 64]; unsigned.len()];
    let chunk = unsigned.len().div_ceil(threads);
    let sign_chunk = |items: &[Unsigned], out: &mut [[u8; 64]]| {
        for (u, slot) in items.iter().zip(out) {
            *slot = sign(u);
        }
    };
    std::thread::scope(|s| {
        let mut parts = unsigned.chunks(chunk).zip(sigs.chunks_mut(chunk));
        // This thread signs the first chunk itself; the others go to scoped threads.
        let first = parts.next();
        for (items, out) in parts {
            s.spawn(move || sign_chunk(items, out));
        }
        if let Some((items, out)) = first {
            sign_chunk(items, out);
        }
    });
    sigs
}

/// The rules of docs/format.md §10.2-10.3 that one changeset the writer is about to seal
/// must meet, checked against the head `before` it (debug builds; `decide` and the shapers
/// of `confstore_core::state` make them hold, and every reader's verifier checks them):
/// indexes 0..len and one `changeset_len`; one epoch, time, actor, reason and request id;
/// time never decreasing; the epoch `before.epoch + 1` when any event changes configuration
/// and `before.epoch` otherwise; a key rotation or a generation start alone in its
/// changeset, the generation rising by one; never a second `store_created`.
fn debug_check_changeset(before: &ChainHead, bodies: &[EventBody]) {
    let Some(first) = bodies.first() else {
        debug_assert!(false, "a decided changeset has at least one event");
        return;
    };
    let changes_config = bodies.iter().any(EventBody::changes_config);
    let epoch = if changes_config { before.epoch + 1 } else { before.epoch };
    debug_assert_eq!(first.epoch, epoch, "epoch rule (format.md §10.3) after epoch {}", before.epoch);
    debug_assert!(first.time_ms >= before.time_ms, "time never decreases");
    debug_assert_eq!(usize::try_from(first.changeset_len).ok(), Some(bodies.len()), "changeset_len");
    for (i, b) in bodies.iter().enumerate() {
        debug_assert_eq!(usize::try_from(b.changeset_index).ok(), Some(i), "changeset_index");
        debug_assert!(
            b.changeset_len == first.changeset_len
                && b.epoch == first.epoch
                && b.time_ms == first.time_ms
                && b.actor == first.actor
                && b.reason == first.reason
                && b.request_id == first.request_id,
            "every event of a changeset shares its metadata"
        );
        match &b.kind {
            EventKind::StoreCreated { .. } => debug_assert!(false, "store_created is only event 1"),
            EventKind::SigningKeyRotated { .. } => debug_assert_eq!(bodies.len(), 1, "a rotation is alone"),
            EventKind::GenerationStarted { generation, .. } => {
                debug_assert_eq!(bodies.len(), 1, "a generation start is alone");
                debug_assert_eq!(*generation, before.generation.max(1) + 1, "the generation rises by one");
            }
            EventKind::RolledBack { from_epoch, to_epoch, .. } => {
                debug_assert_eq!(i, 0, "a rollback opens its changeset");
                debug_assert!(*from_epoch == before.epoch && to_epoch < from_epoch, "rollback epochs");
            }
            EventKind::RolloutStarted { .. } | EventKind::RolloutAborted { .. } => {
                debug_assert_eq!(bodies.len(), 1, "a rollout's start or abort is alone");
            }
            EventKind::RolloutPromoted { .. } => debug_assert_eq!(i, 0, "a promotion opens its changeset"),
            _ => {}
        }
    }
}

/// The write transaction of a batch: `BEGIN IMMEDIATE` ... `COMMIT`, both run from the
/// connection's statement cache (rusqlite's `Transaction` parses them anew every time, about
/// 3,000 instructions each), rolled back when dropped without a successful commit, exactly
/// as rusqlite's `Transaction` does.
struct WriteTx<'c> {
    conn: &'c Connection,
    committed: bool,
}

impl<'c> WriteTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self { conn, committed: false })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        // As rusqlite's Transaction: nothing to do if SQLite already ended the transaction
        // (a failed COMMIT can leave it open; some errors roll it back themselves).
        if !self.committed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// `PRAGMA data_version`: it changes when another connection commits, never with this
/// connection's own commits. Read at every commit, through the statement cache: preparing
/// the pragma anew each time cost more than running it.
fn data_version(conn: &Connection) -> Result<i64, LogError> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(LogError::sqlite("reading data_version"))
}

fn still_verified(ev: Option<&StoredEvent>, head: &ChainHead) -> Result<(), LogError> {
    let intact = ev.is_some_and(|ev| ev.hash == head.hash && event_hash(ev.seq, &ev.prev_hash, &ev.body) == ev.hash);
    if intact {
        return Ok(());
    }
    Err(LogError::Tampered(VerifyError::Structure {
        seq: head.seq,
        reason: format!(
            "event {} is missing or no longer matches the hash recorded when it was verified (was the row modified?)",
            head.seq
        ),
    }))
}

/// After catching up with another writer, our key must still be the current one.
pub(crate) fn key_mismatch(key: Option<&SigningKey>, head: &ChainHead) -> Option<Refusal> {
    let (Some(key), Some(current)) = (key, head.keys.current()) else {
        return None;
    };
    let configured = key.verifying_key();
    (&configured != current)
        .then(|| Refusal::KeyMismatch { configured: configured.key_id(), current: current.key_id() })
}

/// If the database holds events beyond `head`, verifies them and folds them into `state`
/// (marking them dirty for the next checkpoint). Reads only. Also checks that the event at
/// `head` is still the one verified, and that the log does not end before it.
pub(crate) fn catch_up(
    conn: &Connection,
    head: &mut ChainHead,
    state: &mut State,
    dirty: &mut Dirty,
) -> Result<(), LogError> {
    let last = rows::last_event(conn)?;
    let last_seq = last.as_ref().map_or(0, |e| e.seq);
    if last_seq < head.seq {
        return Err(LogError::Tampered(VerifyError::Structure {
            seq: last_seq + 1,
            reason: format!("the log ends at event {last_seq} but event {} was verified before (truncated)", head.seq),
        }));
    }
    if head.seq > 0 {
        // The verified head itself must still be what was verified: same hash, same contents.
        let at_head = if last_seq == head.seq { last } else { rows::event_at(conn, head.seq)? };
        still_verified(at_head.as_ref(), head)?;
    }
    if last_seq == head.seq {
        return Ok(());
    }
    let verifier = ChainVerifier::resume(head.clone(), None);
    let verifier = if last_seq - head.seq <= STRICT_CATCH_UP_EVENTS_MAX { verifier.strict() } else { verifier };
    let mut st = conn
        .prepare_cached(&format!("SELECT {} FROM events WHERE seq > ?1 ORDER BY seq", rows::EVENT_COLUMNS))
        .map_err(LogError::sqlite("reading new events"))?;
    let mut rows_iter = st.query([rows::i(head.seq)]).map_err(LogError::sqlite("reading new events"))?;
    let mut ready = Vec::new();
    let mut drain = Drain::new(verifier, |v| {
        ready.push(v);
        ControlFlow::Continue(())
    });
    while let Some(row) = rows_iter.next().map_err(LogError::sqlite("reading new events"))? {
        let ev = rows::event_from_row(row).map_err(LogError::sqlite("reading an event"))?;
        drain.push(&ev)?;
    }
    let new_head = drain.finish()?;
    for v in &ready {
        let changed = state.apply(v);
        dirty.record(v, changed);
    }
    *head = new_head;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::WriteTx;
    use rusqlite::Connection;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().expect("an in-memory database");
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE t (x INTEGER NOT NULL,
                             p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("the schema");
        c
    }

    fn rows(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("counting")
    }

    #[test]
    fn a_committed_write_tx_keeps_its_rows_and_ends_the_transaction() {
        let c = conn();
        for n in 1..=3 {
            let tx = WriteTx::begin(&c).expect("BEGIN IMMEDIATE");
            assert!(!c.is_autocommit());
            tx.execute("INSERT INTO t (x) VALUES (?1)", [n]).expect("insert");
            tx.commit().expect("COMMIT");
            assert!(c.is_autocommit());
            assert_eq!(rows(&c), n);
        }
    }

    #[test]
    fn a_write_tx_dropped_without_commit_rolls_back() {
        let c = conn();
        {
            let tx = WriteTx::begin(&c).expect("BEGIN IMMEDIATE");
            tx.execute("INSERT INTO t (x) VALUES (1)", []).expect("insert");
        }
        assert!(c.is_autocommit(), "the transaction ended");
        assert_eq!(rows(&c), 0, "its row is gone");
    }

    #[test]
    fn a_failed_commit_rolls_back_when_dropped_and_the_next_write_tx_works() {
        let c = conn();
        let tx = WriteTx::begin(&c).expect("BEGIN IMMEDIATE");
        // A deferred foreign key violation: COMMIT fails and leaves the transaction open.
        tx.execute("INSERT INTO t (x, p) VALUES (1, 42)", []).expect("insert");
        assert!(tx.commit().is_err(), "COMMIT must fail");
        assert!(c.is_autocommit(), "the failed transaction was rolled back");
        assert_eq!(rows(&c), 0);
        let tx = WriteTx::begin(&c).expect("BEGIN IMMEDIATE again");
        tx.execute("INSERT INTO t (x) VALUES (2)", []).expect("insert");
        tx.commit().expect("COMMIT");
        assert_eq!(rows(&c), 1);
    }
}
