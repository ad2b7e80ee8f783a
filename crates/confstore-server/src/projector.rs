//! The projections the server keeps on disk, caught up in the background after commits:
//! the search index (in `config.db`, its checkpoint in the same transaction) and the LKG
//! file (rewritten at most every `lkg_interval`, its high-water mark first). It also folds
//! in events other processes appended (the CLI), every second when idle.

use std::sync::Arc;
use std::time::Duration;

use confstore_log::{LogError, LogReader};

use crate::app::{App, LiveMode, Mode};
use crate::model::lkg_content;

/// How often the projector looks for other processes' events when nothing happens here.
const IDLE_REFRESH: Duration = Duration::from_secs(1);

/// A pass may take at most one part in this many of the time (one core's 5 %): the
/// interval between passes is at least this many times the last pass's duration.
const PASS_SHARE_INVERSE: u32 = 20;

/// Least time between two background catch-ups of the search index. Each one is a write
/// transaction that rewrites index pages (FTS5 adds a segment per transaction), so under
/// continuous writes a catch-up every `lkg_interval` doubled the WAL written per commit
/// (docs/testing.md row 12: the WAL a long reader lets grow). Readers never wait for it: a search
/// request, and the web UI's keys view, catch the index up themselves first.
const SEARCH_INTERVAL: Duration = Duration::from_secs(2);

/// Most events one search-index transaction takes in (limits.rs).
const SEARCH_EVENTS_PER_TRANSACTION: usize = confstore_core::limits::SEARCH_EVENTS_PER_TRANSACTION_MAX;

/// Reads a catch-up makes before giving up when other catch-ups keep moving the index's
/// checkpoint between its read and its write (limits.rs).
const SEARCH_CATCH_UP_ATTEMPTS: usize = confstore_core::limits::SEARCH_CATCH_UP_ATTEMPTS_MAX;

/// Brings the search index up to the log's head. If its checkpoint is not an event of this
/// log (a restore, a copied file), the index is rebuilt instead. Signatures up to
/// `trusted_through` were checked by this process already (the server passes its read
/// model's head: events its writer signed or verified when folding them in); links and
/// hashes are checked anyway, and `confstore verify` checks every signature.
pub fn search_catch_up(reader: &LogReader, trusted_through: u64) -> Result<u64, LogError> {
    let conn = reader.connection();
    let mut attempts = 0;
    loop {
        // Read (and verify) what is new in one read snapshot, holding no write lock: the
        // log's writers go on meanwhile.
        let (seen, rebuild, from, events, state) = reader.snapshot(|r| {
            let seen = confstore_search::checkpoint(conn).map_err(LogError::search)?;
            let (rebuild, from, events) = match &seen {
                None => (false, 0, r.verified_after(0)?),
                Some((seq, hash)) => match r.verified_after_anchor(*seq, hash, trusted_through) {
                    Ok(events) => (false, *seq, events),
                    // Not an event of this log (a restore, a copied file): rebuild the index.
                    Err(LogError::Tampered(_)) => (true, 0, r.verified_after(0)?),
                    Err(e) => return Err(e),
                },
            };
            let state = if events.is_empty() && !rebuild { None } else { Some(r.current_state()?) };
            Ok((seen, rebuild, from, events, state))
        })?;
        let last = events.last().map_or(from, confstore_core::Verified::seq);
        let Some(state) = state else { return Ok(last) };
        // Then write it, a bounded number of events per transaction: each holds the
        // database's write lock, which the log's writer needs for every commit, so a long
        // backlog (an import, a restart after many CLI writes) must not hold it for its
        // whole length (15,000 events in one transaction held it ~480 ms). Every chunk
        // carries its checkpoint, so the index never claims more than it holds. Not enough
        // alone: the writer waits in SQLite's busy handler, which sleeps up to 100 ms
        // between tries, and the next chunk takes the lock at once (docs/benchmarks.md).
        let mut expected = seen;
        let mut moved = false;
        // (A rebuild of an empty log still clears the index: one empty chunk.)
        let chunks: Vec<&[confstore_core::Verified]> =
            if events.is_empty() { vec![&events[..]] } else { events.chunks(SEARCH_EVENTS_PER_TRANSACTION).collect() };
        for (i, chunk) in chunks.into_iter().enumerate() {
            // A transaction that takes the write lock at BEGIN (IMMEDIATE, so it waits its
            // turn under the busy timeout). A deferred transaction that read first would fail
            // with SQLITE_BUSY whenever a writer committed in between, and under constant
            // writes it kept failing, delaying the WAL restart (docs/testing.md row 12).
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(LogError::sqlite("starting to update the search index"))?;
            // Another catch-up (a search request, the CLI) may have moved the checkpoint
            // since the read: then read again from where it is now.
            if confstore_search::checkpoint(&tx).map_err(LogError::search)? != expected {
                moved = true;
                break;
            }
            if rebuild && i == 0 {
                confstore_search::clear(&tx).map_err(LogError::search)?;
            }
            // Descriptions come from the state after the last event read: the index reads
            // the same once every chunk is in as if it had been written at once.
            confstore_search::apply(&tx, chunk, &state).map_err(LogError::search)?;
            tx.commit().map_err(LogError::sqlite("updating the search index"))?;
            if let Some(v) = chunk.last() {
                expected = Some((v.seq(), *v.hash()));
            }
        }
        if !moved {
            return Ok(last);
        }
        attempts += 1;
        if attempts >= SEARCH_CATCH_UP_ATTEMPTS {
            return Err(LogError::search(confstore_search::SearchError::Contended { attempts }));
        }
    }
}

/// Writes the high-water mark, then the LKG file, for the read model's head; and the signed
/// head file, if one is configured.
fn write_lkg(app: &App, live: &LiveMode) -> Result<u64, String> {
    let content = live.model.read(|m| lkg_content(&m.state, m.store_id, m.generation, &m.head_hash));
    let seq = content.seq;
    if let Some(path) = &app.config.head_file {
        let doc = live.model.read(|m| {
            let (store_id, hash) = (m.store_id.to_hex(), m.head_hash.to_hex());
            let at = confstore_core::stream::Position {
                store_id: &store_id,
                generation: m.generation,
                seq: m.state.seq,
                hash: &hash,
            };
            confstore_core::stream::head_document(&at, m.state.epoch, m.state.time_ms)
        });
        let jws = confstore_core::jws::sign(&doc, confstore_core::jws::TYP_HEAD, &app.keys.signing);
        confstore_lkg::write_atomically(path, &jws.to_string())
            .map_err(|e| format!("cannot write the signed head file: {e}"))?;
    }
    confstore_lkg::raise_high_water_mark(&app.config.hwm_path(), seq)
        .map_err(|e| format!("cannot write the LKG high-water mark: {e}"))?;
    let jws = content.to_jws(&app.keys.lkg, confstore_core::state::canonical_json_text);
    confstore_lkg::write_atomically(&app.config.lkg_path(), &jws).map_err(|e| e.to_string())?;
    Ok(seq)
}

/// Runs until the server stops. One pass — fold in other writers' events, catch the search
/// index up, rewrite the LKG file — when a commit happened (or every second, for other
/// processes' events), but at most once per `lkg_interval` (or 20× the last pass's time, if
/// longer: a pass's cost grows with the store): under continuous writes the
/// projections cost a fixed amount per interval, not per commit. Search requests catch the
/// index up themselves, so they never wait for a pass.
pub async fn run(app: App) {
    let mut done = Pass { search_seq: None, search_at: None, lkg_seq: None };
    let mut last_pass: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let mode = app.mode();
        let Mode::Live(live) = &*mode else {
            // The fallback: try the database again every recover_interval.
            tokio::time::sleep(app.config.recover_interval).await;
            let a = app.clone();
            let _ = tokio::task::spawn_blocking(move || a.try_recover()).await;
            continue;
        };
        let head = live.model.read(|m| m.state.seq);
        if done.lkg_seq == Some(head) && done.search_seq == Some(head) {
            // Up to date: wait for a commit, or look for other processes' events after a while.
            let _ = tokio::time::timeout(IDLE_REFRESH, live.model.changed.notified()).await;
        }
        // Rate limit: a fixed cost per interval however many commits land meanwhile, and at
        // most 1/PASS_SHARE_INVERSE of a core however large the store (a pass rewrites the
        // whole LKG file: its cost grows with the store, the interval with it).
        if let Some((t, cost)) = last_pass {
            let interval = app.config.lkg_interval.max(cost * PASS_SHARE_INVERSE);
            let rest = interval.saturating_sub(t.elapsed());
            if !rest.is_zero() {
                tokio::time::sleep(rest).await;
            }
        }
        let started = tokio::time::Instant::now();
        let (a, m) = (app.clone(), Arc::clone(&mode));
        let before = done;
        let result = tokio::task::spawn_blocking(move || pass(&a, &m, before)).await;
        if let Ok(next) = result {
            done = next;
        }
        last_pass = Some((started, started.elapsed()));
    }
}

/// What the last pass brought each projection to.
#[derive(Clone, Copy, Debug)]
struct Pass {
    search_seq: Option<u64>,
    /// When the search index was last caught up.
    search_at: Option<std::time::Instant>,
    lkg_seq: Option<u64>,
}

fn pass(app: &App, mode: &Mode, mut done: Pass) -> Pass {
    let Mode::Live(live) = mode else { return done };
    if let Err(e) = live.store.refresh() {
        tracing::error!(error = %e, "cannot fold in other writers' events");
    }
    let head = live.model.read(|m| m.state.seq);
    if done.search_seq != Some(head) && done.search_at.is_none_or(|t| t.elapsed() >= SEARCH_INTERVAL) {
        done.search_at = Some(std::time::Instant::now());
        let search = {
            let _one = live.search_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            live.readers.with(|r| search_catch_up(r, head))
        };
        match search {
            Ok(seq) => {
                done.search_seq = Some(seq);
                app.projections.search_seq.store(seq, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "the search index is behind; retrying"),
        }
    }
    app.metrics.projection_lag("search", head.saturating_sub(done.search_seq.unwrap_or(0)));
    // Only when the head moved since the last rewrite (an idle server writes nothing).
    if done.lkg_seq != Some(head) {
        match write_lkg(app, live) {
            Ok(seq) => {
                done.lkg_seq = Some(seq);
                app.projections.lkg_seq.store(seq, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "the LKG file was not refreshed; retrying"),
        }
    }
    app.metrics.projection_lag("lkg", head.saturating_sub(done.lkg_seq.unwrap_or(0)));
    done
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confstore_core::{SigningKey, StoreId};
    use confstore_log::{DbOptions, LogError, LogReader, Store, SystemClock};

    use super::search_catch_up;

    #[test]
    fn a_failing_search_index_is_a_search_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let key = SigningKey::from_seed(&[5; 32]);
        let store =
            Store::create(&path, key, StoreId([4; 16]), "test", Arc::new(SystemClock), &DbOptions::default()).unwrap();
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        assert_eq!(search_catch_up(&reader, 0).unwrap(), 1, "the index catches up with event 1");
        // The index's checkpoint table is gone (a damaged file): the failure is the index's.
        rusqlite::Connection::open(&path).unwrap().execute_batch("DROP TABLE search_checkpoint").unwrap();
        match search_catch_up(&reader, 0) {
            Err(LogError::Search(e)) => {
                assert!(e.downcast_ref::<confstore_search::SearchError>().is_some(), "{e:?}");
                assert!(e.to_string().starts_with("search index: "), "the message is unchanged: {e}");
            }
            other => panic!("expected LogError::Search, got {other:?}"),
        }
    }

    #[test]
    fn a_long_backlog_goes_in_in_bounded_transactions_and_ends_as_one_would() {
        use confstore_core::{Change, ChangesetDraft};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let key = SigningKey::from_seed(&[5; 32]);
        let store =
            Store::create(&path, key, StoreId([4; 16]), "test", Arc::new(SystemClock), &DbOptions::default()).unwrap();
        let draft = |changes| ChangesetDraft {
            actor: "test".into(),
            reason: "backlog".into(),
            request_id: "r".into(),
            expected_epoch: None,
            changes,
        };
        store.append(draft(vec![Change::RegisterService { service: "web".into() }])).unwrap();
        // More events than two transactions take, each key set several times.
        let events = 2 * super::SEARCH_EVENTS_PER_TRANSACTION + 7;
        let mut last = 0;
        for i in 0..events {
            let change =
                Change::Set { service: "web".into(), key: format!("k{}", i % 100), value: serde_json::json!(i) };
            last = store.append(draft(vec![change])).unwrap().last_seq;
        }
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        let conn = reader.connection();
        // Every checkpoint the catch-up writes (one per transaction) is noted.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE noted (seq INTEGER);
                 CREATE TRIGGER note_insert AFTER INSERT ON search_checkpoint BEGIN INSERT INTO noted VALUES (new.seq); END;
                 CREATE TRIGGER note_update AFTER UPDATE ON search_checkpoint BEGIN INSERT INTO noted VALUES (new.seq); END;",
            )
            .unwrap();
        let first = confstore_search::checkpoint(conn).unwrap().map_or(0, |c| c.0);
        assert_eq!(search_catch_up(&reader, 0).unwrap(), last, "caught up with the last event");
        let noted: Vec<u64> = conn
            .prepare("SELECT seq FROM noted")
            .unwrap()
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|s| u64::try_from(s.unwrap()).unwrap())
            .collect();
        assert!(noted.len() >= 3, "in three transactions or more: {noted:?}");
        let mut at = first;
        for seq in &noted {
            assert!(*seq > at && *seq - at <= super::SEARCH_EVENTS_PER_TRANSACTION as u64, "{noted:?}");
            at = *seq;
        }
        assert_eq!(confstore_search::checkpoint(conn).unwrap().map(|c| c.0), Some(last));
        // Every key holds its last value, as one transaction would have left it.
        let hits = confstore_search::search(conn, "k7", Some("web"), None, 10).unwrap();
        let k7 = hits.iter().find(|h| h.key == "k7").expect("k7 is indexed");
        let want = (0..events).filter(|i| i % 100 == 7).max().unwrap();
        assert_eq!(k7.value_text, want.to_string(), "{k7:?}");
    }
}
