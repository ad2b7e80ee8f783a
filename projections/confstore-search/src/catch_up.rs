//! Bringing the index up to the log's head: read what is new in one read snapshot, write it
//! in bounded transactions, each with its checkpoint (`confstore search`, the server's
//! search requests and its background projector all catch up through [`catch_up`]).

use confstore_log::{LogError, LogReader};

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
pub fn catch_up(reader: &LogReader, trusted_through: u64) -> Result<u64, LogError> {
    let conn = reader.connection();
    let mut attempts = 0;
    loop {
        // Read (and verify) what is new in one read snapshot, holding no write lock: the
        // log's writers go on meanwhile.
        let (seen, rebuild, from, events, state) = reader.snapshot(|r| {
            let seen = crate::checkpoint(conn).map_err(LogError::search)?;
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
        // carries its checkpoint, so the index never claims more than it holds. Chunks alone
        // were not enough: the writer waited in SQLite's busy handler, which sleeps up to
        // 100 ms between tries, and the next chunk took the lock at once
        // (docs/benchmarks.md); the write gate below queues them.
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
            //
            // In turn with the log's writer in this process (confstore_log::gate): the gate
            // is FIFO, so a commit waiting for it goes before this catch-up's next chunk, and
            // a write waits for at most one chunk instead of the whole backlog.
            let _turn = reader.write_gate().hold();
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(LogError::sqlite("starting to update the search index"))?;
            // Another catch-up (a search request, the CLI) may have moved the checkpoint
            // since the read: then read again from where it is now.
            if crate::checkpoint(&tx).map_err(LogError::search)? != expected {
                moved = true;
                break;
            }
            if rebuild && i == 0 {
                crate::clear(&tx).map_err(LogError::search)?;
            }
            // Descriptions come from the state after the last event read: the index reads
            // the same once every chunk is in as if it had been written at once.
            crate::apply(&tx, chunk, &state).map_err(LogError::search)?;
            fail::fail_point!("search::mid_update", |_| std::process::abort());
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
            return Err(LogError::search(crate::SearchError::Contended { attempts }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confstore_core::{SigningKey, StoreId};
    use confstore_log::{DbOptions, LogError, LogReader, Store, SystemClock};

    use super::catch_up;

    #[test]
    fn a_failing_search_index_is_a_search_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let key = SigningKey::from_seed(&[5; 32]);
        let store =
            Store::create(&path, key, StoreId([4; 16]), "test", Arc::new(SystemClock), &DbOptions::default()).unwrap();
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        assert_eq!(catch_up(&reader, 0).unwrap(), 1, "the index catches up with event 1");
        // The index's checkpoint table is gone (a damaged file): the failure is the index's.
        rusqlite::Connection::open(&path).unwrap().execute_batch("DROP TABLE search_checkpoint").unwrap();
        match catch_up(&reader, 0) {
            Err(LogError::Search(e)) => {
                assert!(e.downcast_ref::<crate::SearchError>().is_some(), "{e:?}");
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
        let first = crate::checkpoint(conn).unwrap().map_or(0, |c| c.0);
        assert_eq!(catch_up(&reader, 0).unwrap(), last, "caught up with the last event");
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
        assert_eq!(crate::checkpoint(conn).unwrap().map(|c| c.0), Some(last));
        // Every key holds its last value, as one transaction would have left it.
        let hits = crate::search(conn, "k7", Some("web"), None, 10).unwrap();
        let k7 = hits.iter().find(|h| h.key == "k7").expect("k7 is indexed");
        let want = (0..events).filter(|i| i % 100 == 7).max().unwrap();
        assert_eq!(k7.value_text, want.to_string(), "{k7:?}");
    }

    /// Each catch-up transaction takes the database's write gate (confstore_log::gate), the
    /// one the log's writer takes: while it is held elsewhere the catch-up writes nothing,
    /// and it finishes once the gate is free.
    #[test]
    fn the_catch_up_writes_only_in_its_turn_at_the_write_gate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let key = SigningKey::from_seed(&[5; 32]);
        let store =
            Store::create(&path, key, StoreId([4; 16]), "test", Arc::new(SystemClock), &DbOptions::default()).unwrap();
        let held = LogReader::open(&path).unwrap().write_gate().clone();
        let turn = held.hold();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let path = path.clone();
            std::thread::spawn(move || {
                let reader = LogReader::open(&path).unwrap();
                let _ = tx.send(catch_up(&reader, 0).map_err(|e| e.to_string()));
            })
        };
        // A negative observation: nothing may arrive while the gate is held.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "caught up while the gate was held");
        let reader = LogReader::open(&path).unwrap();
        assert_eq!(crate::checkpoint(reader.connection()).unwrap(), None, "nothing written while the gate was held");
        drop(turn);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the catch-up's answer"), Ok(1));
        worker.join().unwrap();
        drop(store);
    }
}
