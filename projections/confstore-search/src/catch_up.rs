//! Bringing the index up to the log's head: read what is new in one read snapshot, write it
//! in bounded transactions, each with its checkpoint (`confstore search`, the server's
//! search requests and its background projector all catch up through [`catch_up`]).

use std::collections::HashSet;

use confstore_core::{EventKind, State, Verified};
use confstore_log::{LogError, LogReader};

/// Most events one search-index transaction takes in (limits.rs).
const SEARCH_EVENTS_PER_TRANSACTION: usize = confstore_core::limits::SEARCH_EVENTS_PER_TRANSACTION_MAX;

/// Most index rows (keys written, descriptions rewritten) one search-index transaction
/// writes (limits.rs): what a transaction costs, and so how much of the index's WAL it
/// writes at once.
const SEARCH_ROWS_PER_TRANSACTION: usize = confstore_core::limits::SEARCH_ROWS_PER_TRANSACTION_MAX;

/// Reads a catch-up makes before giving up when other catch-ups keep moving the index's
/// checkpoint between its read and its write (limits.rs).
const SEARCH_CATCH_UP_ATTEMPTS: usize = confstore_core::limits::SEARCH_CATCH_UP_ATTEMPTS_MAX;

/// Brings the search index up to the log's head. If its checkpoint is not an event of this
/// log (a restore, a copied file), the index is rebuilt instead. Signatures up to
/// `trusted_through` were checked by this process already (the server passes its read
/// model's head: events its writer signed or verified when folding them in); links and
/// hashes are checked anyway, and `confstore verify` checks every signature.
pub fn catch_up(reader: &LogReader, trusted_through: u64) -> Result<u64, LogError> {
    catch_up_in(
        reader,
        trusted_through,
        Bounds { rows: SEARCH_ROWS_PER_TRANSACTION, events: SEARCH_EVENTS_PER_TRANSACTION },
    )
}

/// What one transaction of a catch-up takes at most ([`chunks`]).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    rows: usize,
    events: usize,
}

fn catch_up_in(reader: &LogReader, trusted_through: u64, bounds: Bounds) -> Result<u64, LogError> {
    let conn = reader.connection();
    // (Before the read transaction below: SQLite cannot attach inside one.)
    crate::attach(conn).map_err(LogError::search)?;
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
        // Then write it, in transactions of a bounded number of rows ([`chunks`]), each with
        // its checkpoint, so the index never claims more than it holds. They take the write
        // lock of the index's own file, not the log's: a commit of the log never waits for
        // them (docs/adr/0037; in config.db, a backlog's transactions held the log's commits
        // back, ~4 ms each, behind the write gate of ADR 0025).
        let mut expected = seen;
        let mut moved = false;
        // (A rebuild of an empty log still clears the index: one empty chunk.)
        let chunks: Vec<&[Verified]> =
            if events.is_empty() { vec![&events[..]] } else { chunks(&events, &state, bounds.rows, bounds.events) };
        for (i, chunk) in chunks.into_iter().enumerate() {
            // A deferred transaction whose first statement takes the index's write lock (it
            // waits its turn under the busy timeout): BEGIN IMMEDIATE would take the log's
            // write lock as well, as it locks every attached database. A transaction that
            // read first would fail with SQLITE_BUSY whenever another catch-up committed in
            // between.
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)
                .map_err(LogError::sqlite("starting to update the search index"))?;
            tx.execute("UPDATE search.search_checkpoint SET seq = seq", [])
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

/// Splits `events` into the transactions of a catch-up: each as long as it writes at most
/// `rows_max` index rows and takes in at most `events_max` events (at least one event each).
///
/// A transaction's cost is the rows it writes, not the events it reads: [`crate::apply`]
/// writes each key once however often the transaction's events changed it, so a burst of
/// writes to a few hot keys goes in long transactions at little cost, while writes to many
/// distinct keys (an import, a rebuild) go in several. A schema rewrites the description
/// of each of its service's keys: it counts as that many rows.
fn chunks<'e>(events: &'e [Verified], state: &State, rows_max: usize, events_max: usize) -> Vec<&'e [Verified]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut keys: HashSet<(&str, &str)> = HashSet::new();
    let mut rows = 0;
    for (i, ev) in events.iter().enumerate() {
        let (key, schema_rows) = match &ev.body().kind {
            EventKind::ValueSet { service, key, .. }
            | EventKind::ValueUnset { service, key, .. }
            | EventKind::SecretSet { service, key, .. } => (Some((service.as_str(), key.as_str())), 0),
            EventKind::SchemaSet { service, .. } => (None, state.services.get(service).map_or(0, |v| v.len())),
            _ => (None, 0),
        };
        let mut adds = schema_rows + key.map_or(0, |k| usize::from(!keys.contains(&k)));
        if i > start && (rows + adds > rows_max || i - start >= events_max) {
            out.push(&events[start..i]);
            start = i;
            keys.clear();
            rows = 0;
            adds = schema_rows + usize::from(key.is_some());
        }
        if let Some(k) = key {
            keys.insert(k);
        }
        rows += adds;
    }
    out.push(&events[start..]);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confstore_core::{Change, ChangesetDraft, SigningKey, StoreId};
    use confstore_log::{DbOptions, LogError, LogReader, Store, SystemClock};

    use super::{Bounds, catch_up, catch_up_in};

    fn draft(changes: Vec<Change>) -> ChangesetDraft {
        ChangesetDraft {
            actor: "test".into(),
            reason: "backlog".into(),
            request_id: "r".into(),
            expected_epoch: None,
            changes,
        }
    }

    fn set(key: &str, value: serde_json::Value) -> Change {
        Change::Set { service: "web".into(), key: key.into(), value }
    }

    fn new_store(dir: &tempfile::TempDir) -> (std::path::PathBuf, Store) {
        let path = dir.path().join("config.db");
        let key = SigningKey::from_seed(&[5; 32]);
        let store =
            Store::create(&path, key, StoreId([4; 16]), "test", Arc::new(SystemClock), &DbOptions::default()).unwrap();
        (path, store)
    }

    #[test]
    fn a_failing_search_index_is_a_search_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = new_store(&dir);
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        assert_eq!(catch_up(&reader, 0).unwrap(), 1, "the index catches up with event 1");
        // The index's checkpoint table is gone (a damaged file): the failure is the index's.
        rusqlite::Connection::open(crate::path_for(&path))
            .unwrap()
            .execute_batch("DROP TABLE search_checkpoint")
            .unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = new_store(&dir);
        store.append(draft(vec![Change::RegisterService { service: "web".into() }])).unwrap();
        // 100 keys, each set several times: more rows than two transactions of 32 take.
        let events = 263;
        let mut last = 0;
        for i in 0..events {
            last = store.append(draft(vec![set(&format!("k{}", i % 100), serde_json::json!(i))])).unwrap().last_seq;
        }
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        let conn = reader.connection();
        crate::attach(conn).unwrap();
        // Every checkpoint the catch-up writes (one per transaction) is noted.
        conn.execute_batch(
            "CREATE TABLE search.noted (seq INTEGER);
             CREATE TRIGGER search.note_insert AFTER INSERT ON search_checkpoint BEGIN INSERT INTO noted VALUES (new.seq); END;
             CREATE TRIGGER search.note_update AFTER UPDATE ON search_checkpoint WHEN new.seq <> old.seq
                 BEGIN INSERT INTO noted VALUES (new.seq); END;",
        )
        .unwrap();
        let bounds = Bounds { rows: 32, events: 40 };
        assert_eq!(catch_up_in(&reader, 0, bounds).unwrap(), last, "caught up with the last event");
        let noted: Vec<u64> = conn
            .prepare("SELECT seq FROM search.noted")
            .unwrap()
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|s| u64::try_from(s.unwrap()).unwrap())
            .collect();
        assert!(noted.len() >= 7, "in seven transactions or more (40 events each at most): {noted:?}");
        let mut at = 0;
        for seq in &noted {
            assert!(*seq > at && *seq - at <= 40, "{noted:?}");
            at = *seq;
        }
        assert_eq!(crate::checkpoint(conn).unwrap().map(|c| c.0), Some(last));
        // Every key holds its last value, as one transaction would have left it.
        let hits = crate::search(conn, "k7", Some("web"), None, 10).unwrap();
        let k7 = hits.iter().find(|h| h.key == "k7").expect("k7 is indexed");
        let want = (0..events).filter(|i| i % 100 == 7).max().unwrap();
        assert_eq!(k7.value_text, want.to_string(), "{k7:?}");
    }

    /// Transactions are cut by the rows they write, not by the events they read: writes to
    /// a few hot keys go in one long transaction, writes to distinct keys in short ones, and
    /// a schema counts as its service's keys.
    #[test]
    fn transactions_are_bounded_by_the_rows_they_write() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = new_store(&dir);
        store.append(draft(vec![Change::RegisterService { service: "web".into() }])).unwrap();
        for i in 0..60 {
            store.append(draft(vec![set(&format!("hot{}", i % 3), serde_json::json!(i))])).unwrap();
        }
        for i in 0..10 {
            store.append(draft(vec![set(&format!("cold{i}"), serde_json::json!(i))])).unwrap();
        }
        let schema = serde_json::json!({"type": "object", "additionalProperties": true,
                                        "properties": {"hot0": {"description": "the first hot key"}}});
        store.append(draft(vec![Change::SetSchema { service: "web".into(), schema }])).unwrap();
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        let events = reader.verified_after(0).unwrap();
        let state = reader.current_state().unwrap();
        let lens = |rows, events_max| -> Vec<usize> {
            super::chunks(&events, &state, rows, events_max).iter().map(|c| c.len()).collect()
        };
        // Events: the store's first ones, `web` registered, 60 to three hot keys, 10 cold keys,
        // the schema (13 keys: 13 rows).
        let before = events.len() - 72;
        let chunks = lens(4, 1000);
        assert_eq!(chunks.iter().sum::<usize>(), events.len(), "every event once: {chunks:?}");
        // `web` registered, the hot keys and the first cold key share one transaction (4
        // rows)...
        assert_eq!(chunks[0], before + 62, "{chunks:?}");
        // ...the other cold keys go 4 to a transaction, and the schema (13 rows) alone.
        assert_eq!(&chunks[1..], &[4, 4, 1, 1], "{chunks:?}");
        // The events bound cuts too.
        assert!(lens(1000, 10).iter().all(|&n| n <= 10));
        // One transaction when nothing bounds it.
        assert_eq!(lens(1000, 1000), vec![events.len()]);
    }

    /// The index is in its own file: a catch-up writes while another connection holds the
    /// log's write lock and this process's write gate (a commit in progress), so the log's
    /// commits never wait for it (docs/adr/0037).
    #[test]
    fn the_catch_up_takes_neither_the_logs_write_lock_nor_its_write_gate() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = new_store(&dir);
        store.append(draft(vec![Change::RegisterService { service: "web".into() }])).unwrap();
        let last = store.append(draft(vec![set("port", serde_json::json!(80))])).unwrap().last_seq;
        let reader = LogReader::open(&path).unwrap();
        let turn = reader.write_gate().hold();
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(catch_up(&reader, 0).unwrap(), last);
        assert_eq!(crate::search(reader.connection(), "port", None, None, 10).unwrap().len(), 1);
        writer.execute_batch("ROLLBACK").unwrap();
        drop(turn);
        drop(store);
    }

    #[test]
    fn the_index_file_is_private_and_beside_the_log() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = new_store(&dir);
        drop(store);
        let reader = LogReader::open(&path).unwrap();
        catch_up(&reader, 0).unwrap();
        let file = dir.path().join("config.search.db");
        assert_eq!(crate::path_for(&path), file);
        for f in [file.clone(), dir.path().join("config.search.db-wal"), dir.path().join("config.search.db-shm")] {
            let mode = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", f.display());
        }
        // Not a search index: refused with a clear error, nothing written to it.
        let other = tempfile::tempdir().unwrap();
        let (other_path, other_store) = new_store(&other);
        drop(other_store);
        rusqlite::Connection::open(crate::path_for(&other_path)).unwrap().execute_batch("CREATE TABLE x (y)").unwrap();
        let reader = LogReader::open(&other_path).unwrap();
        let e = catch_up(&reader, 0).unwrap_err().to_string();
        assert!(e.contains("not a confstore search index"), "{e}");
    }
}
