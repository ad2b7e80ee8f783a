//! [`Store`]: create or open `config.db`, check the events after the last checkpoint, and
//! append through group commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use confstore_core::state::{self, ChangesetDraft};
use confstore_core::{Hash32, SigningKey, StoreId};

use crate::Clock;
use crate::db::{self, DbOptions};
use crate::error::LogError;
use crate::group::Group;
use crate::reader::LogReader;
use crate::rows;
use crate::writer::{Dirty, Listener, Refusal, Request, Writer, catch_up, key_mismatch};

/// What an acknowledged changeset got: durable once this is returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Seq of its first event.
    pub first_seq: u64,
    /// Seq of its last event.
    pub last_seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Hash of its last event: the new head.
    pub hash: Hash32,
    /// Its time (unix ms).
    pub time_ms: u64,
}

/// An open store: the database plus its writer thread.
pub struct Store {
    path: PathBuf,
    store_id: StoreId,
    generation: u64,
    refusal: Option<Refusal>,
    group: Group,
}

impl Store {
    /// Creates a new store at `path` (which must not hold one): runs the migrations and
    /// appends event 1 (store created, naming `key`'s public half), in one transaction.
    pub fn create(
        path: &Path,
        key: SigningKey,
        store_id: StoreId,
        actor: &str,
        clock: Arc<dyn Clock>,
        opts: &DbOptions,
    ) -> Result<Self, LogError> {
        let mut conn = db::open(path, opts, true)?;
        db::migrate(&mut conn, clock.now_ms())?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(LogError::sqlite("starting the create transaction"))?;
        if let Some((existing, _)) = rows::store_row(&tx)? {
            return Err(LogError::AlreadyInitialised { path: path.to_owned(), store_id: existing.to_hex() });
        }
        let now = clock.now_ms();
        tx.execute(
            "INSERT INTO store (id, store_id, generation, created_ms) VALUES (1, ?1, 1, ?2)",
            rusqlite::params![store_id.0.as_slice(), rows::i(now)],
        )
        .map_err(LogError::sqlite("writing the store row"))?;
        let body = state::store_created(store_id, &key, actor, "init", now);
        let genesis = confstore_core::genesis_hash(&store_id);
        let ev = state::seal(1, &genesis, &body, &key);
        rows::insert_event(&tx, &ev)?;
        rows::insert_key(&tx, 1, &key.verifying_key().to_bytes())
            .map_err(LogError::sqlite("recording the first key"))?;
        let mut head = confstore_core::verify::ChainHead::genesis(store_id);
        (head.seq, head.hash, head.time_ms, head.generation) = (1, ev.hash, now, 1);
        rows::set_verified_head(&tx, &head)?;
        tx.commit().map_err(LogError::sqlite("committing the new store"))?;
        drop(conn);
        Self::open(path, Some(key), clock, opts)
    }

    /// Opens an existing store. Events written after the last verified head are verified
    /// now; if they fail, or `key` is not the store's current signing key, the store still
    /// opens for reading but every append is refused with the reason ([`Self::refusal`]).
    /// Without `key`, the store is read-only.
    pub fn open(
        path: &Path,
        key: Option<SigningKey>,
        clock: Arc<dyn Clock>,
        opts: &DbOptions,
    ) -> Result<Self, LogError> {
        let mut conn = db::open(path, opts, false)?;
        db::migrate(&mut conn, clock.now_ms())?;
        let (store_id, generation) =
            rows::store_row(&conn)?.ok_or_else(|| LogError::NotInitialised(path.to_owned()))?;
        let mut head = rows::chain_head(&conn, store_id)?;
        let checkpoint_seq = head.seq;
        let mut state = rows::load_state(&conn, &head)?;
        let mut dirty = Dirty::default();
        let mut refusal = None;
        {
            // One read snapshot for the checkpoint and the events after it.
            let tx = conn.transaction().map_err(LogError::sqlite("starting the open check"))?;
            match catch_up(&tx, &mut head, &mut state, &mut dirty) {
                Ok(()) => {}
                Err(LogError::Tampered(e)) => refusal = Some(Refusal::Tampered(e)),
                Err(other) => return Err(other),
            }
        }
        if refusal.is_none() {
            refusal = if key.is_none() { Some(Refusal::ReadOnly) } else { key_mismatch(key.as_ref(), &head) };
        }
        let refusal_at_open = refusal.clone();
        let writer = Writer {
            conn,
            store_id,
            head,
            state,
            key,
            refusal,
            clock,
            checkpoint_seq,
            dirty,
            listener: None,
            data_version: None,
            gate: crate::gate::WriteGate::of(path),
            stale: false,
        };
        Ok(Self { path: path.to_owned(), store_id, generation, refusal: refusal_at_open, group: Group::new(writer) })
    }

    /// The store id.
    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// The generation now (it rises when a `generation_started` is appended, here or by
    /// another process and folded in).
    pub fn generation(&self) -> u64 {
        self.group.with_writer(|w| w.state.generation).unwrap_or(self.generation)
    }

    /// Why appends were refused when the store opened, if they were (tampered tail, wrong
    /// key, no key). Match on it; its `Display` is the message a refused append returns.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    /// A new read connection to the same database.
    pub fn reader(&self) -> Result<LogReader, LogError> {
        LogReader::open(&self.path)
    }

    /// Appends one changeset; returns once it is durably committed. Safe to call from many
    /// threads: concurrent appends are group-committed.
    pub fn append(&self, draft: ChangesetDraft) -> Result<Receipt, LogError> {
        self.group.submit(Request::Append { draft })
    }

    /// Appends changesets gathered from several callers; returns once every one is durably
    /// committed (or refused), one result per draft, in order. They commit in that order,
    /// in as few transactions as the group-commit limits allow (each its own changeset: a
    /// refused one does not affect the others).
    pub fn append_all(&self, drafts: Vec<ChangesetDraft>) -> Vec<Result<Receipt, LogError>> {
        self.group.submit_all(drafts.into_iter().map(|draft| Request::Append { draft }).collect())
    }

    /// Why appends are refused now (a refusal can also arise after open, e.g. when another
    /// process appended a tampered tail), as the message `/readyz` shows.
    pub fn current_refusal(&self) -> Option<String> {
        self.group.with_writer(|w| w.refusal.as_ref().map(ToString::to_string)).flatten()
    }

    /// Calls `listener` after every commit and every [`Self::refresh`] that folded in new
    /// events, before the appenders of the batch are answered: a reader model kept by the
    /// listener therefore shows every acknowledged write. It runs with the writer locked:
    /// keep it short, and never call the store from it. It first hears the whole current
    /// state (with no events) so it can start from it.
    pub fn set_commit_listener(&self, listener: Listener) {
        self.group.with_writer(|w| {
            listener(&crate::writer::Committed { events: &[], state: &w.state, head_hash: w.head.hash });
            w.set_listener(listener);
        });
    }

    /// Folds in events that other processes appended since the last append or refresh
    /// (verifying them) and tells the commit listener. Cheap when nothing changed.
    pub fn refresh(&self) -> Result<(), LogError> {
        self.group
            .with_writer(Writer::refresh)
            .unwrap_or(Err(LogError::NotCommitted("the writer lock is poisoned".into())))
    }

    /// Starts a new generation (ADR 0017): one event, abandoning the history whose newest
    /// known head is (`abandoned_seq`, `abandoned_hash`). The caller establishes that the
    /// log really was rewound (it compares signed heads with it) and writes the data
    /// directory's `rebuild.info`.
    pub fn start_generation(
        &self,
        abandoned_seq: u64,
        abandoned_hash: Hash32,
        draft: ChangesetDraft,
    ) -> Result<Receipt, LogError> {
        self.group.submit(Request::StartGeneration { abandoned_seq, abandoned_hash: abandoned_hash.0, draft })
    }

    /// Hands signing over to `new_key` (one event, signed by the current key, carrying the
    /// new key's countersignature). The caller must keep `new_key` safe before calling.
    pub fn rotate_signing_key(&self, new_key: SigningKey, draft: ChangesetDraft) -> Result<Receipt, LogError> {
        self.group.submit(Request::Rotate { new_key: Box::new(new_key), draft })
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("store_id", &self.store_id)
            .field("generation", &self.generation)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Best effort: a store closed without a checkpoint verifies and replays its tail at
        // the next open instead.
        let _ = self.group.with_writer(Writer::checkpoint_now);
    }
}
