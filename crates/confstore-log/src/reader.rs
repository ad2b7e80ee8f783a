//! Reading the log: the head, events in order, full verification and replay to an epoch
//! or a time. Every replay goes through [`ChainVerifier`], so folds only see verified
//! events; signatures up to the database's verified head are trusted (they were checked
//! when written and at open), links and hashes are always rechecked.

use std::ops::ControlFlow;
use std::path::Path;

use confstore_core::verify::ChainHead;
use confstore_core::{ChainVerifier, Hash32, State, StoreId, StoredEvent, Verified, VerifyError, VerifyingKey};
use rusqlite::Connection;

use crate::db::{self, DbOptions};
use crate::drain::Drain;
use crate::error::LogError;
use crate::guard::ReadGuard;
use crate::parallel::ParallelVerifier;
use crate::rows::{self, EVENT_COLUMNS, event_from_row, i};

/// The newest event and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Store id.
    pub store_id: StoreId,
    /// Generation (bumped by a restore that rewinds history).
    pub generation: u64,
    /// Seq of the last event.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash32,
    /// The epoch after it.
    pub epoch: u64,
    /// Its time (unix ms).
    pub time_ms: u64,
    /// The last checkpoint: the seq up to which events were verified and the write model
    /// written (every `writer::CHECKPOINT_EVENTS` events and when a store closes).
    pub verified_seq: u64,
}

/// One current value of a service, from the write model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentValue {
    /// Key name.
    pub key: String,
    /// Canonical JSON text.
    pub value_json: String,
    /// The store's epoch at the head it was read at (the same for every value of one
    /// read; not the epoch that last set the value).
    pub head_epoch: u64,
}

/// How far a replay goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// The whole log.
    Head,
    /// Up to and including epoch N.
    Epoch(u64),
    /// Every changeset made at or before this unix-ms time.
    Time(u64),
    /// Up to and including this seq (a changeset boundary, such as a checkpoint).
    Seq(u64),
}

/// Events read per read transaction by [`LogReader::for_each_event`] and
/// [`LogReader::events_chunk`]: a long read is many short ones, so it never keeps the WAL
/// from being checkpointed for longer than one chunk takes (milliseconds).
pub const EVENTS_PER_READ: usize = confstore_core::limits::LOG_READ_EVENTS_MAX;

/// Body bytes read per read transaction, at most (plus the one event that crosses it): a
/// chunk of large events stays small in memory.
pub const BODY_BYTES_PER_READ: usize = confstore_core::limits::LOG_READ_BODY_BYTES_MAX;

/// A read-only view of one database. Its reads are guarded: one that runs longer than
/// `DbOptions::max_read_age` is aborted with [`LogError::ReaderTooOld`] ([`crate::guard`]).
pub struct LogReader {
    conn: Connection,
    store_id: StoreId,
    guard: ReadGuard,
    gate: crate::gate::WriteGate,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").field("store_id", &self.store_id).finish_non_exhaustive()
    }
}

/// The events of `rows` until about [`BODY_BYTES_PER_READ`] bytes of bodies were read.
fn read_capped(rows: &mut rusqlite::Rows<'_>) -> Result<Vec<StoredEvent>, LogError> {
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    while let Some(row) = rows.next().map_err(LogError::sqlite("reading events"))? {
        let ev = event_from_row(row).map_err(LogError::sqlite("reading an event"))?;
        bytes += ev.body.len();
        out.push(ev);
        if bytes >= BODY_BYTES_PER_READ {
            break;
        }
    }
    Ok(out)
}

/// A stored Merkle tree that matches its events, and the log's root ([`LogReader::check_tree`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeCheck {
    /// Events (leaves).
    pub size: u64,
    /// The root of the whole log, from the events.
    pub root: [u8; 32],
    /// Events the stored tree covers (checked row by row); it may trail the log.
    pub stored: u64,
}

impl LogReader {
    /// Opens an existing store for reading with the default options. Does not migrate or write.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        Self::open_with(path, &DbOptions::default())
    }

    /// Opens an existing store for reading; `opts.max_read_age` limits every read.
    pub fn open_with(path: &Path, opts: &DbOptions) -> Result<Self, LogError> {
        let conn = db::open(path, opts, false)?;
        db::check_schema(&conn)?;
        let (store_id, _) = rows::store_row(&conn)?.ok_or_else(|| LogError::NotInitialised(path.to_owned()))?;
        let guard = ReadGuard::new(&conn, opts.max_read_age);
        Ok(Self { conn, store_id, guard, gate: crate::gate::WriteGate::of(path) })
    }

    /// The write gate of this reader's database: a projection that writes into the same
    /// file (the search index) takes it around each of its write transactions, in turn with
    /// the log's writer (gate.rs).
    pub fn write_gate(&self) -> &crate::gate::WriteGate {
        &self.gate
    }

    /// The reader-age limit of this reader's reads.
    pub fn max_read_age(&self) -> std::time::Duration {
        self.guard.limit()
    }

    /// Runs `f` inside one read transaction (one snapshot of the database), guarded by the
    /// reader-age limit; inside the caller's transaction if there is one. Keep it short:
    /// the WAL cannot be checkpointed past it. Reads of many events inside it are streamed
    /// from the one snapshot instead of chunked.
    pub fn snapshot<T>(&self, f: impl FnOnce(&Self) -> Result<T, LogError>) -> Result<T, LogError> {
        self.guard.run(|| {
            if !self.conn.is_autocommit() {
                return f(self);
            }
            let tx = self.conn.unchecked_transaction().map_err(LogError::sqlite("starting a read"))?;
            let out = f(self)?;
            tx.finish().map_err(LogError::sqlite("ending a read"))?;
            Ok(out)
        })
    }

    /// Seq of the last event (0 for an empty table).
    pub fn last_seq(&self) -> Result<u64, LogError> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get::<_, i64>(0))
            .map(rows::u)
            .map_err(LogError::sqlite("reading the last seq"))
    }

    /// The store id.
    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// The underlying connection, for checks such as `PRAGMA integrity_check`.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The newest event and what it says.
    pub fn head(&self) -> Result<Head, LogError> {
        let last = rows::last_event(&self.conn)?.ok_or(LogError::Tampered(VerifyError::Empty))?;
        let body = confstore_core::EventBody::decode(&last.body)
            .map_err(|e| LogError::Tampered(VerifyError::BadBody { seq: last.seq, reason: e.to_string() }))?;
        let verified_seq = rows::verified_head(&self.conn)?.map_or(0, |v| v.seq);
        // The generation now (another process may have started one since this reader opened).
        let generation = rows::store_row(&self.conn)?.map_or(1, |r| r.1);
        Ok(Head {
            store_id: self.store_id,
            generation,
            seq: last.seq,
            hash: last.hash,
            epoch: body.epoch,
            time_ms: body.time_ms,
            verified_seq,
        })
    }

    /// The head recorded as verified: (seq, hash), if any.
    pub fn verified_head(&self) -> Result<Option<(u64, Hash32)>, LogError> {
        Ok(rows::verified_head(&self.conn)?.map(|v| (v.seq, v.hash)))
    }

    /// Number of events.
    pub fn count(&self) -> Result<u64, LogError> {
        self.guard.run(|| {
            self.conn
                .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
                .map(rows::u)
                .map_err(LogError::sqlite("counting events"))
        })
    }

    /// The store's signing keys, oldest first.
    pub fn keys(&self) -> Result<confstore_core::KeyRing, LogError> {
        rows::key_ring(&self.conn, u64::MAX - 1)
    }

    /// Calls `f` with every event from `from_seq` to the last one now, in seq order, until
    /// it returns false. See [`Self::for_each_event_through`].
    pub fn for_each_event(
        &self,
        from_seq: u64,
        f: impl FnMut(StoredEvent) -> Result<bool, LogError>,
    ) -> Result<(), LogError> {
        let end_seq = if self.conn.is_autocommit() { self.last_seq()? } else { u64::MAX };
        self.for_each_event_through(from_seq, end_seq, f)
    }

    /// Calls `f` with every event from `from_seq` through `end_seq`, in seq order, until it
    /// returns false. Outside a transaction the events are read in chunks
    /// ([`Self::events_chunk`]), each in its own short read transaction, and `f` runs
    /// between them, holding none: a slow consumer (a client reading an export slowly) never
    /// keeps the WAL from being checkpointed. The log is append-only, so the chunks together
    /// are exactly the events a single snapshot would have shown up to `end_seq`. Inside a
    /// transaction ([`Self::snapshot`]) they are streamed from its snapshot, and the read is
    /// aborted once it is older than the reader-age limit.
    pub fn for_each_event_through(
        &self,
        from_seq: u64,
        end_seq: u64,
        mut f: impl FnMut(StoredEvent) -> Result<bool, LogError>,
    ) -> Result<(), LogError> {
        if !self.conn.is_autocommit() {
            return self.guard.run(|| self.stream_events(from_seq, end_seq, &mut f));
        }
        let mut next = from_seq;
        while next <= end_seq {
            let chunk = self.events_chunk(next, end_seq)?;
            let Some(last) = chunk.last().map(|ev| ev.seq) else { break };
            for ev in chunk {
                if !f(ev)? {
                    return Ok(());
                }
            }
            match last.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(())
    }

    /// The next events from `from_seq` through `end_seq`, in seq order, read in one short
    /// read transaction: at most [`EVENTS_PER_READ`] events and about
    /// [`BODY_BYTES_PER_READ`] bytes of bodies. Empty when there are none.
    pub fn events_chunk(&self, from_seq: u64, end_seq: u64) -> Result<Vec<StoredEvent>, LogError> {
        self.guard.run(|| {
            let mut st = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3"
                ))
                .map_err(LogError::sqlite("reading events"))?;
            let limit = i64::try_from(EVENTS_PER_READ).unwrap_or(i64::MAX);
            let mut rows = st
                .query(rusqlite::params![i(from_seq), i(end_seq), limit])
                .map_err(LogError::sqlite("reading events"))?;
            read_capped(&mut rows)
        })
    }

    /// The events before `before_seq` (exclusive), newest first, read in one short read
    /// transaction: at most `limit` (capped at [`EVENTS_PER_READ`]) and about
    /// [`BODY_BYTES_PER_READ`] bytes of bodies. For views that page backwards from the head
    /// (the web UI's timeline) without reading the log from the start. Not verified here:
    /// the caller shows what the verified read model already folded.
    pub fn events_before(&self, before_seq: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.guard.run(|| {
            let mut st = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
                ))
                .map_err(LogError::sqlite("reading events"))?;
            let limit = i64::try_from(limit.min(EVENTS_PER_READ)).unwrap_or(0);
            let mut rows =
                st.query(rusqlite::params![i(before_seq), limit]).map_err(LogError::sqlite("reading events"))?;
            read_capped(&mut rows)
        })
    }

    /// Streams events from the caller's snapshot, checking the read's age after each.
    fn stream_events(
        &self,
        from_seq: u64,
        end_seq: u64,
        f: &mut impl FnMut(StoredEvent) -> Result<bool, LogError>,
    ) -> Result<(), LogError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq"))
            .map_err(LogError::sqlite("reading events"))?;
        let mut rows = st.query([i(from_seq), i(end_seq)]).map_err(LogError::sqlite("reading events"))?;
        while let Some(row) = rows.next().map_err(LogError::sqlite("reading events"))? {
            let ev = event_from_row(row).map_err(LogError::sqlite("reading an event"))?;
            if !f(ev)? {
                break;
            }
            self.guard.check()?;
        }
        Ok(())
    }

    /// Events the stored Merkle tree covers (docs/format.md §19); it is extended in batches
    /// after commits ([`Self::extend_tree`]), so it may trail the log.
    pub fn tree_size(&self) -> Result<u64, LogError> {
        crate::merkle::size(&self.conn)
    }

    /// Extends the stored Merkle tree to `anchor`'s seq — checking that event's hash is
    /// `anchor`'s, the head its caller verified — or, without one, to the log's last event;
    /// in write transactions of at most `TLOG_EXTEND_EVENTS_PER_TRANSACTION` events, each in
    /// its turn at the write gate. Every event added is checked to link to the one before it.
    /// Returns the tree's size.
    pub fn extend_tree(&self, anchor: Option<(u64, Hash32)>) -> Result<u64, LogError> {
        let chunk = confstore_core::limits::TLOG_EXTEND_EVENTS_PER_TRANSACTION;
        loop {
            let _turn = self.gate.hold();
            let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(LogError::sqlite("starting to extend the Merkle tree"))?;
            let have = crate::merkle::size(&tx)?;
            let target = match anchor {
                Some((seq, _)) => seq,
                None => rows::last_event(&tx)?.map_or(0, |e| e.seq),
            };
            let to = if have >= target { target } else { target.min(have + chunk) };
            let at_target = to == target;
            let anchor_hash = anchor.filter(|_| at_target).map(|(_, h)| h);
            if have != to || anchor_hash.is_some() {
                crate::merkle::extend(&tx, &self.store_id, to, anchor_hash.as_ref())?;
            }
            tx.commit().map_err(LogError::sqlite("committing the Merkle tree"))?;
            if at_target {
                return Ok(to);
            }
        }
    }

    /// The Merkle tree's root at `size` events.
    pub fn tree_root(&self, size: u64) -> Result<[u8; 32], LogError> {
        self.snapshot(|r| crate::merkle::root(&r.conn, size))
    }

    /// The audit path of event `seq` in the tree of `size` events.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<[u8; 32]>, LogError> {
        self.snapshot(|r| crate::merkle::inclusion_proof(&r.conn, seq, size))
    }

    /// The consistency proof from the tree of `old` events to the tree of `size`.
    pub fn consistency_proof(&self, old: u64, size: u64) -> Result<Vec<[u8; 32]>, LogError> {
        self.snapshot(|r| crate::merkle::consistency_proof(&r.conn, old, size))
    }

    /// Recomputes the Merkle tree from every event's hash (RFC 6962's definition, not the
    /// stored rows): compares each stored row with the hash the events give, so a damaged row
    /// anywhere is found, not only one on the current root's path, and returns the root of the
    /// whole log. The outer error is a read failure; the inner one names the first difference
    /// and its event.
    pub fn check_tree(&self, progress: &mut dyn FnMut(u64)) -> Result<Result<TreeCheck, (u64, String)>, LogError> {
        self.snapshot(|r| {
            let stored_size = crate::merkle::size(&r.conn)?;
            let mut built = confstore_core::tlog::RootBuilder::default();
            let mut st = r
                .conn
                .prepare("SELECT idx, hash FROM merkle_hashes ORDER BY idx")
                .map_err(LogError::sqlite("reading the Merkle tree"))?;
            let mut stored = st.query([]).map_err(LogError::sqlite("reading the Merkle tree"))?;
            let mut first_bad: Option<(u64, String)> = None;
            r.for_each_event(1, |ev| {
                let leaf = ev.seq - 1;
                let first = confstore_core::tlog::stored_hash_index(0, leaf);
                let hashes = built.push(&ev.hash);
                if ev.seq <= stored_size {
                    // The leaf (index `first`) is not stored; the subtree roots after it are.
                    for (idx, want) in (first..).zip(&hashes).skip(1) {
                        let row = stored.next().map_err(LogError::sqlite("reading the Merkle tree"))?;
                        let found = match row {
                            Some(row) => {
                                let i: i64 = row.get(0).map_err(LogError::sqlite("reading the Merkle tree"))?;
                                let h: Vec<u8> = row.get(1).map_err(LogError::sqlite("reading the Merkle tree"))?;
                                rows::u(i) == idx && h.as_slice() == want.as_slice()
                            }
                            None => false,
                        };
                        if !found {
                            first_bad = Some((
                                ev.seq,
                                format!(
                                    "the stored Merkle tree differs from the events at stored hash {idx} (event {})",
                                    ev.seq
                                ),
                            ));
                            return Ok(false);
                        }
                    }
                }
                if built.size().is_multiple_of(4096) {
                    progress(built.size());
                }
                Ok(true)
            })?;
            progress(built.size());
            if let Some(bad) = first_bad {
                return Ok(Err(bad));
            }
            if stored_size > built.size() {
                let n = built.size();
                return Ok(Err((n, format!("the stored Merkle tree covers {stored_size} events, the log has {n}"))));
            }
            if stored.next().map_err(LogError::sqlite("reading the Merkle tree"))?.is_some() {
                return Ok(Err((
                    stored_size,
                    format!("the stored Merkle tree has hashes past its {stored_size} events"),
                )));
            }
            Ok(Ok(TreeCheck { size: built.size(), root: built.root(), stored: stored_size }))
        })
    }

    /// Verifies every event from 1, checking every signature in batches (no trusted prefix),
    /// against `anchor` when given. `progress` is called with the number of events checked so far.
    /// The outer error is a read failure, the inner one the first bad event.
    pub fn verify(
        &self,
        anchor: Option<VerifyingKey>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Result<ChainHead, VerifyError>, LogError> {
        self.verify_with(ChainVerifier::new(self.store_id, anchor), progress)
    }

    /// [`Self::verify`] with a verifier configured by the caller (e.g. [`ChainVerifier::strict`]).
    /// Signatures are checked on every core ([`crate::parallel`]).
    pub fn verify_with(
        &self,
        verifier: ChainVerifier,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Result<ChainHead, VerifyError>, LogError> {
        let mut verifier = ParallelVerifier::new(verifier);
        let mut done = 0u64;
        self.for_each_event(1, |ev| {
            if !verifier.push(&ev) {
                return Ok(false);
            }
            done += 1;
            if done.is_multiple_of(4096) {
                progress(done);
            }
            Ok(true)
        })?;
        progress(done);
        Ok(verifier.finish())
    }

    /// Replays the log from event 1 up to `until` and returns the state there.
    pub fn replay(&self, until: Until) -> Result<State, LogError> {
        let mut state = State::default();
        self.replay_with(until, |ev| {
            state.apply(ev);
        })?;
        Ok(state)
    }

    /// Replays the log up to `until`, handing each verified event to `f`.
    pub fn replay_with(&self, until: Until, mut f: impl FnMut(&Verified)) -> Result<(), LogError> {
        let head = self.head()?;
        self.check_bound(until, &head)?;
        let verifier = ChainVerifier::new(self.store_id, None).trust_signatures_through(head.verified_seq);
        let mut drain = Drain::new(verifier, |ev| {
            if beyond(until, &ev) {
                return ControlFlow::Break(());
            }
            f(&ev);
            ControlFlow::Continue(())
        });
        self.for_each_event(1, |ev| drain.push(&ev))?;
        drain.flush()
    }

    fn check_bound(&self, until: Until, head: &Head) -> Result<(), LogError> {
        match until {
            Until::Head => Ok(()),
            Until::Epoch(n) if n > head.epoch => {
                Err(LogError::OutOfRange(format!("epoch {n} does not exist yet; the store is at epoch {}", head.epoch)))
            }
            Until::Epoch(_) => Ok(()),
            Until::Seq(n) if n > head.seq => {
                Err(LogError::OutOfRange(format!("event {n} does not exist yet; the log ends at {}", head.seq)))
            }
            Until::Seq(_) => Ok(()),
            Until::Time(t) => {
                let created = self.first_time_ms()?;
                if t < created {
                    return Err(LogError::OutOfRange(format!(
                        "time {t} ms is before the store was created ({created} ms)"
                    )));
                }
                Ok(())
            }
        }
    }

    fn first_time_ms(&self) -> Result<u64, LogError> {
        let mut first = None;
        self.for_each_event(1, |ev| {
            first = Some(ev);
            Ok(false)
        })?;
        let ev = first.ok_or(LogError::Tampered(VerifyError::Empty))?;
        confstore_core::EventBody::decode(&ev.body)
            .map(|b| b.time_ms)
            .map_err(|e| LogError::Tampered(VerifyError::BadBody { seq: ev.seq, reason: e.to_string() }))
    }

    /// The state at the head: the write model at the last checkpoint plus the events after
    /// it, verified and folded in (at most a few hundred).
    pub fn current_state(&self) -> Result<State, LogError> {
        // One read snapshot for the checkpoint and the events after it.
        // Inside the caller's transaction if there is one (a projection catching up).
        self.snapshot(|r| {
            let (checkpoint, mut state) = r.write_model()?;
            let mut drain = Drain::new(ChainVerifier::resume(checkpoint.clone(), None), |v| {
                state.apply(&v);
                ControlFlow::Continue(())
            });
            r.for_each_event(checkpoint.seq + 1, |ev| drain.push(&ev))?;
            drain.finish()?;
            Ok(state)
        })
    }

    /// Every event after `from_seq`, verified, in order: resumed from the write-model
    /// checkpoint when `from_seq` is at or after it, else replayed from event 1 (links and
    /// hashes rechecked, signatures trusted up to the checkpoint). For projections catching
    /// up from their own checkpoint.
    pub fn verified_after(&self, from_seq: u64) -> Result<Vec<Verified>, LogError> {
        let mut out = Vec::new();
        let (checkpoint, _) = self.write_model()?;
        if from_seq < checkpoint.seq {
            self.replay_with(Until::Head, |ev| {
                if ev.seq() > from_seq {
                    out.push(ev.clone());
                }
            })?;
            return Ok(out);
        }
        let mut drain = Drain::new(ChainVerifier::resume(checkpoint.clone(), None), |v| {
            if v.seq() > from_seq {
                out.push(v);
            }
            ControlFlow::Continue(())
        });
        self.for_each_event(checkpoint.seq + 1, |ev| drain.push(&ev))?;
        drain.finish()?;
        Ok(out)
    }

    /// Every event after `from_seq`, verified, resuming from the stored event `from_seq`
    /// itself, which must still have the hash `anchor` (a projection's own checkpoint: the
    /// projection verified that event when it folded it in). Costs only the new events,
    /// however long the log; [`Self::verified_after`] instead resumes from the write-model
    /// checkpoint or replays from event 1. Signatures of events up to `trusted_through` are
    /// not checked again (links and hashes are): pass the seq up to which this process
    /// already checked them (e.g. the events its own writer signed), or 0.
    pub fn verified_after_anchor(
        &self,
        from_seq: u64,
        anchor: &Hash32,
        trusted_through: u64,
    ) -> Result<Vec<Verified>, LogError> {
        if from_seq == 0 {
            return self.verified_after(0);
        }
        let ev = rows::event_at(&self.conn, from_seq)?.ok_or_else(|| {
            LogError::Tampered(VerifyError::Structure {
                seq: from_seq,
                reason: format!("event {from_seq}, a projection's checkpoint, is missing"),
            })
        })?;
        if ev.hash != *anchor || confstore_core::event_hash(ev.seq, &ev.prev_hash, &ev.body) != ev.hash {
            return Err(LogError::Tampered(VerifyError::Structure {
                seq: from_seq,
                reason: format!("event {from_seq} no longer has the hash a projection recorded for it"),
            }));
        }
        let body = confstore_core::EventBody::decode(&ev.body)
            .map_err(|e| LogError::Tampered(VerifyError::BadBody { seq: from_seq, reason: e.to_string() }))?;
        let head = ChainHead {
            store_id: self.store_id,
            seq: from_seq,
            hash: ev.hash,
            epoch: body.epoch,
            time_ms: body.time_ms,
            keys: rows::key_ring(&self.conn, from_seq)?,
            generation: rows::generation_at(&self.conn, from_seq)?,
        };
        let mut out = Vec::new();
        let mut drain = Drain::new(ChainVerifier::resume(head, None).trust_signatures_through(trusted_through), |v| {
            out.push(v);
            ControlFlow::Continue(())
        });
        self.for_each_event(from_seq + 1, |ev| drain.push(&ev))?;
        drain.finish()?;
        Ok(out)
    }

    /// The write model as stored: the checkpoint head and the state there (no replay).
    pub fn write_model(&self) -> Result<(ChainHead, State), LogError> {
        let head = rows::chain_head(&self.conn, self.store_id)?;
        let state = rows::load_state(&self.conn, &head)?;
        Ok((head, state))
    }

    /// The current values of one service, or `None` if it is not registered.
    pub fn current(&self, service: &str) -> Result<Option<Vec<CurrentValue>>, LogError> {
        let state = self.current_state()?;
        Ok(state.services.get(service).map(|values| {
            values
                .iter()
                .map(|(k, v)| CurrentValue { key: k.clone(), value_json: v.clone(), head_epoch: state.epoch })
                .collect()
        }))
    }

    /// Registered services, sorted.
    pub fn services(&self) -> Result<Vec<String>, LogError> {
        Ok(self.current_state()?.services.into_keys().collect())
    }
}

fn beyond(until: Until, ev: &Verified) -> bool {
    match until {
        Until::Head => false,
        Until::Epoch(n) => ev.body().epoch > n,
        Until::Time(t) => ev.body().time_ms > t,
        Until::Seq(n) => ev.seq() > n,
    }
}
