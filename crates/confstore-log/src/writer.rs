//! The single writer. One thread owns the read-write connection; appenders queue changeset
//! requests, and the writer takes every request waiting (up to the group-commit limits),
//! decides and signs each against the state as it stands, commits them in ONE transaction,
//! and only then acknowledges each. One fsync is shared by the whole batch.
//!
//! Another process may append between our transactions (a second confstore command while
//! the server runs). Each batch starts with `BEGIN IMMEDIATE` and compares the database's
//! last event with our head; if it moved, the new events are verified and folded in first.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use confstore_core::state::{self, ChangesetDraft};
use confstore_core::verify::ChainHead;
use confstore_core::{ChainVerifier, KeyId, SigningKey, State, VerifyError, limits};
use rusqlite::{Connection, TransactionBehavior};

use crate::error::LogError;
use crate::rows;
use crate::{Clock, Receipt};

/// A queued request with its reply channel.
pub(crate) enum Request {
    Append { draft: ChangesetDraft, reply: SyncSender<Result<Receipt, LogError>> },
    Rotate { new_key: Box<SigningKey>, draft: ChangesetDraft, reply: SyncSender<Result<Receipt, LogError>> },
}

impl Request {
    fn events(&self) -> usize {
        match self {
            Self::Append { draft, .. } => draft.changes.len(),
            Self::Rotate { .. } => 1,
        }
    }

    fn reply(self, result: Result<Receipt, LogError>) {
        let reply = match self {
            Self::Append { reply, .. } | Self::Rotate { reply, .. } => reply,
        };
        // The appender may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }
}

/// Why this writer refuses every write.
#[derive(Clone, Debug)]
pub(crate) enum Refusal {
    Tampered(VerifyError),
    KeyMismatch { configured: KeyId, current: KeyId },
    ReadOnly,
}

impl Refusal {
    pub(crate) fn to_error(&self) -> LogError {
        match self {
            Self::Tampered(e) => LogError::Tampered(e.clone()),
            Self::KeyMismatch { configured, current } => {
                LogError::KeyMismatch { configured: *configured, current: *current }
            }
            Self::ReadOnly => LogError::ReadOnly,
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
}

/// A changeset sealed in the current batch, waiting for the commit.
struct Sealed {
    request: Request,
    receipt: Receipt,
}

impl Writer {
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut events = batch[0].events();
            while batch.len() < limits::GROUP_COMMIT_CHANGESETS_MAX && events < limits::GROUP_COMMIT_EVENTS_MAX {
                match rx.try_recv() {
                    Ok(r) => {
                        events += r.events();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        if let Some(refusal) = &self.refusal {
            for r in batch {
                r.reply(Err(refusal.to_error()));
            }
            return;
        }
        match self.try_commit(batch) {
            Ok(sealed) => {
                for s in sealed {
                    s.request.reply(Ok(s.receipt));
                }
            }
            Err((err, sealed)) => {
                // The transaction rolled back: forget what we folded in memory.
                let text = err.to_string();
                if let Err(reload) = self.reload() {
                    self.refusal = Some(Refusal::Tampered(VerifyError::Structure {
                        seq: self.head.seq + 1,
                        reason: format!("could not reload the log after a failed commit: {reload}"),
                    }));
                }
                for s in sealed {
                    s.request.reply(Err(LogError::NotCommitted(text.clone())));
                }
            }
        }
    }

    /// Runs one transaction. On error, returns the sealed requests so they can be failed.
    fn try_commit(&mut self, batch: Vec<Request>) -> Result<Vec<Sealed>, (LogError, Vec<Sealed>)> {
        let mut sealed: Vec<Sealed> = Vec::with_capacity(batch.len());
        let tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let err = LogError::sqlite("starting a write transaction")(e).to_string();
                for r in batch {
                    r.reply(Err(LogError::NotCommitted(err.clone())));
                }
                return Ok(Vec::new());
            }
        };
        if let Err(e) = catch_up(&tx, &mut self.head, &mut self.state) {
            drop(tx);
            if let LogError::Tampered(v) = &e {
                self.refusal = Some(Refusal::Tampered(v.clone()));
            }
            for r in batch {
                r.reply(Err(self.refusal.as_ref().map_or_else(|| LogError::Schema(e.to_string()), Refusal::to_error)));
            }
            return Ok(Vec::new());
        }
        if let Some(refusal) = key_mismatch(self.key.as_ref(), &self.head) {
            drop(tx);
            self.refusal = Some(refusal.clone());
            for r in batch {
                r.reply(Err(refusal.to_error()));
            }
            return Ok(Vec::new());
        }
        let mut next_key: Option<SigningKey> = None;
        let mut requests = batch.into_iter();
        while let Some(request) = requests.next() {
            let now = self.clock.now_ms();
            let key = next_key.as_ref().or(self.key.as_ref());
            let Some(key) = key else {
                request.reply(Err(LogError::ReadOnly));
                continue;
            };
            let bodies = match &request {
                Request::Append { draft, .. } => state::decide(&self.state, draft, now),
                Request::Rotate { new_key, draft, .. } => {
                    state::rotate_signing_key(&self.state, &self.store_id, key, new_key, draft, now).map(|b| vec![b])
                }
            };
            let bodies = match bodies {
                Ok(b) => b,
                Err(e) => {
                    request.reply(Err(LogError::Rejected(e)));
                    continue;
                }
            };
            let first_seq = self.head.seq + 1;
            for body in &bodies {
                let ev = state::seal(self.head.seq + 1, &self.head.hash, body, key);
                if let Err(e) = rows::insert_event(&tx, &ev).and_then(|()| rows::apply_to_tables(&tx, ev.seq, body)) {
                    // This request and every one after it in the batch fail with the batch.
                    sealed.push(Sealed { request, receipt: Receipt::default() });
                    sealed.extend(requests.map(|request| Sealed { request, receipt: Receipt::default() }));
                    return Err((e, sealed));
                }
                self.state.apply_body(ev.seq, body);
                self.head.seq = ev.seq;
                self.head.hash = ev.hash;
                self.head.epoch = body.epoch;
                self.head.time_ms = body.time_ms;
            }
            let receipt = Receipt {
                first_seq,
                last_seq: self.head.seq,
                epoch: self.head.epoch,
                hash: self.head.hash,
                time_ms: self.head.time_ms,
            };
            if let Request::Rotate { new_key, .. } = &request {
                let copy = SigningKey::from_seed(&new_key.seed());
                self.head.keys.push(copy.verifying_key(), self.head.seq + 1);
                next_key = Some(copy);
            }
            sealed.push(Sealed { request, receipt });
        }
        if sealed.is_empty() {
            // Everything was rejected: nothing to commit.
            return Ok(sealed);
        }
        let h = &self.head;
        if let Err(e) = rows::set_verified_head(&tx, h.seq, &h.hash, h.epoch, h.time_ms) {
            return Err((e, sealed));
        }
        if let Err(e) = tx.commit() {
            return Err((LogError::sqlite("committing a changeset")(e), sealed));
        }
        if let Some(k) = next_key {
            self.key = Some(k);
        }
        Ok(sealed)
    }

    /// Reloads head and state from the database after a rolled-back transaction.
    fn reload(&mut self) -> Result<(), LogError> {
        self.head = rows::chain_head(&self.conn, self.store_id)?;
        self.state = rows::load_state(&self.conn, &self.head)?;
        catch_up(&self.conn, &mut self.head, &mut self.state)
    }
}

fn still_verified(ev: Option<&confstore_core::StoredEvent>, head: &ChainHead) -> Result<(), LogError> {
    let intact = ev.is_some_and(|ev| {
        ev.hash == head.hash && confstore_core::event_hash(ev.seq, &ev.prev_hash, &ev.body) == ev.hash
    });
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
/// (and into the tables and the verified head, when the writer that added them did not).
pub(crate) fn catch_up(conn: &Connection, head: &mut ChainHead, state: &mut State) -> Result<(), LogError> {
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
    // Few events, checked one by one with the strict rules.
    let mut verifier = ChainVerifier::resume(head.clone(), None).strict();
    let mut st = conn
        .prepare_cached(&format!("SELECT {} FROM events WHERE seq > ?1 ORDER BY seq", rows::EVENT_COLUMNS))
        .map_err(LogError::sqlite("reading new events"))?;
    let mut rows_iter = st.query([rows::i(head.seq)]).map_err(LogError::sqlite("reading new events"))?;
    let mut ready = Vec::new();
    while let Some(row) = rows_iter.next().map_err(LogError::sqlite("reading new events"))? {
        let ev = rows::event_from_row(row).map_err(LogError::sqlite("reading an event"))?;
        verifier.push(&ev).map_err(LogError::Tampered)?;
        ready.extend(verifier.take_ready());
    }
    drop(rows_iter);
    drop(st);
    ready.extend(verifier.flush_ready().map_err(LogError::Tampered)?);
    let new_head = verifier.finish().map_err(LogError::Tampered)?;
    // A confstore writer updates the tables and the verified head in the same transaction
    // as its events; anything else that appended (validly signed) did not.
    let recorded = rows::verified_head(conn)?.map_or(0, |v| v.0);
    let tables_behind = recorded < new_head.seq;
    for v in &ready {
        if tables_behind && v.seq() > recorded {
            rows::apply_to_tables(conn, v.seq(), v.body())?;
        }
        state.apply(v);
    }
    if tables_behind {
        rows::set_verified_head(conn, new_head.seq, &new_head.hash, new_head.epoch, new_head.time_ms)?;
    }
    *head = new_head;
    Ok(())
}
