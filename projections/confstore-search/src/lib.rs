//! The search-index projection (docs/design.md §8): SQLite FTS5 over service, key, value text
//! and the schema's description of each key, filtered by service and by the epoch a key
//! last changed. A fold over verified events; its rows and its checkpoint (last seq +
//! hash) are written in one transaction, so an incremental fold always equals a rebuild.
//!
//! Beside the index it keeps the epoch each key last changed (secrets included, without
//! their values) for the web UI ([`key_epochs`]).
//!
//! Architecture invariant: it reads verified events and core state only, and never imports
//! another projection. Its tables come from `migrations/0003_create_search_index.sql` and
//! `migrations/0008_create_key_changes.sql`.

mod catch_up;

use std::collections::BTreeSet;

use confstore_core::{EventKind, Hash32, State, Verified};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

pub use catch_up::catch_up;

/// Most hits one query returns (limits.rs).
pub const HITS_MAX: usize = confstore_core::limits::SEARCH_HITS_MAX;

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// SQLite failed.
    #[error("search index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Other catch-ups kept moving the index's checkpoint between this one's read and its
    /// write, `attempts` times in a row; nothing was written.
    #[error("the search index kept changing while it was being updated; try again")]
    Contended {
        /// How many times it read again.
        attempts: usize,
    },
}

/// One matching key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Service.
    pub service: String,
    /// Key.
    pub key: String,
    /// The value as text (strings without quotes, anything else as JSON).
    pub value_text: String,
    /// The schema's description of the key, or empty.
    pub description: String,
    /// The epoch that last changed the key.
    pub epoch: u64,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The last event folded in, if any.
pub fn checkpoint(conn: &Connection) -> Result<Option<(u64, Hash32)>, SearchError> {
    Ok(conn
        .query_row("SELECT seq, hash FROM search_checkpoint WHERE id = 1", [], |r| {
            let seq: i64 = r.get(0)?;
            let hash: Vec<u8> = r.get(1)?;
            Ok((u64::try_from(seq).unwrap_or(0), Hash32::from_slice(&hash).unwrap_or_default()))
        })
        .optional()?)
}

/// Empties the index and its checkpoint (the start of a rebuild).
pub fn clear(conn: &Connection) -> Result<(), SearchError> {
    conn.execute_batch("DELETE FROM search_keys; DELETE FROM key_changes; DELETE FROM search_checkpoint;")?;
    Ok(())
}

fn value_text(json: &str) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::String(s)) => s,
        _ => json.to_owned(),
    }
}

fn description(state: &State, service: &str, key: &str) -> String {
    state
        .schemas
        .get(service)
        .and_then(|s| serde_json::from_str::<Value>(&s.json).ok())
        .and_then(|s| {
            s.pointer(&format!("/properties/{}/description", key.replace('~', "~0").replace('/', "~1"))).cloned()
        })
        .and_then(|d| d.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Folds `events` (verified, in order, directly after the checkpoint) into the index;
/// `state` is the configuration after the last of them (for schema descriptions). Call
/// inside the transaction that should hold rows and checkpoint together.
pub fn apply(conn: &Connection, events: &[Verified], state: &State) -> Result<(), SearchError> {
    let Some(last) = events.last() else { return Ok(()) };
    let mut upsert = conn.prepare_cached(
        "INSERT INTO search_keys (service, key, value_text, description, epoch) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (service, key) DO UPDATE SET value_text = excluded.value_text,
                                                  description = excluded.description, epoch = excluded.epoch",
    )?;
    let mut delete = conn.prepare_cached("DELETE FROM search_keys WHERE service = ?1 AND key = ?2")?;
    let mut changed_at = conn.prepare_cached(
        "INSERT INTO key_changes (service, key, epoch) VALUES (?1, ?2, ?3)
         ON CONFLICT (service, key) DO UPDATE SET epoch = excluded.epoch",
    )?;
    let mut forget = conn.prepare_cached("DELETE FROM key_changes WHERE service = ?1 AND key = ?2")?;
    // Only the last change of each key in the batch reaches the index (a rebuild of a long
    // history writes each key once).
    let mut described = BTreeSet::new();
    let mut latest: std::collections::BTreeMap<(&str, &str), Option<(&str, u64)>> = std::collections::BTreeMap::new();
    // (service, key) -> the epoch of its last change, or None once unset.
    let mut epochs: std::collections::BTreeMap<(&str, &str), Option<u64>> = std::collections::BTreeMap::new();
    for ev in events {
        let epoch = ev.body().epoch;
        match &ev.body().kind {
            EventKind::ValueSet { service, key, value_json, .. } => {
                latest.insert((service, key), Some((value_json, epoch)));
                epochs.insert((service, key), Some(epoch));
            }
            EventKind::ValueUnset { service, key, .. } => {
                latest.insert((service, key), None);
                epochs.insert((service, key), None);
            }
            // A secret is never indexed; a key that becomes secret leaves the index.
            EventKind::SecretSet { service, key, .. } => {
                latest.insert((service, key), None);
                epochs.insert((service, key), Some(epoch));
            }
            EventKind::SchemaSet { service, .. } => {
                described.insert(service.clone());
            }
            _ => {}
        }
    }
    for ((service, key), change) in latest {
        match change {
            Some((value_json, epoch)) => {
                upsert.execute(params![
                    service,
                    key,
                    value_text(value_json),
                    description(state, service, key),
                    i(epoch)
                ])?;
            }
            None => {
                delete.execute(params![service, key])?;
            }
        }
    }
    for ((service, key), epoch) in epochs {
        match epoch {
            Some(epoch) => changed_at.execute(params![service, key, i(epoch)])?,
            None => forget.execute(params![service, key])?,
        };
    }
    // A new schema changes the descriptions of keys set before it.
    let mut describe =
        conn.prepare_cached("UPDATE search_keys SET description = ?3 WHERE service = ?1 AND key = ?2")?;
    for service in described {
        for key in state.services.get(&service).map(|v| v.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            describe.execute(params![service, key, description(state, &service, &key)])?;
        }
    }
    conn.execute(
        "INSERT INTO search_checkpoint (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![i(last.seq()), last.hash().0.as_slice()],
    )?;
    Ok(())
}

/// The epoch each key of `service` last changed (set, secret set), key -> epoch; keys
/// never set, or unset since, are absent.
pub fn key_epochs(conn: &Connection, service: &str) -> Result<std::collections::BTreeMap<String, u64>, SearchError> {
    let mut st = conn.prepare_cached("SELECT key, epoch FROM key_changes WHERE service = ?1")?;
    let rows = st.query_map(params![service], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let (key, epoch) = row?;
        out.insert(key, u64::try_from(epoch).unwrap_or(0));
    }
    Ok(out)
}

/// Keys matching `query` (any part of a service name, key, value or description;
/// case-insensitive), optionally only of `service` and changed after epoch `since`, best
/// matches first, at most `limit`.
pub fn search(
    conn: &Connection,
    query: &str,
    service: Option<&str>,
    since: Option<u64>,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    let limit = i64::try_from(limit.min(HITS_MAX)).unwrap_or(0);
    let query = query.trim();
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Hit> {
        Ok(Hit {
            service: r.get(0)?,
            key: r.get(1)?,
            value_text: r.get(2)?,
            description: r.get(3)?,
            epoch: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        })
    };
    let since = since.map_or(-1, i);
    // The trigram tokenizer needs three characters; shorter queries scan with LIKE.
    if query.chars().count() < 3 {
        let like = format!("%{}%", query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let mut st = conn.prepare_cached(
            "SELECT service, key, value_text, description, epoch FROM search_keys
             WHERE (service LIKE ?1 ESCAPE '\\' OR key LIKE ?1 ESCAPE '\\' OR value_text LIKE ?1 ESCAPE '\\'
                    OR description LIKE ?1 ESCAPE '\\')
               AND (?2 IS NULL OR service = ?2) AND epoch > ?3
             ORDER BY service, key LIMIT ?4",
        )?;
        return Ok(st.query_map(params![like, service, since, limit], row)?.collect::<Result<_, _>>()?);
    }
    // The whole query as one FTS5 string literal: no query syntax from the user.
    let phrase = format!("\"{}\"", query.replace('"', "\"\""));
    let mut st = conn.prepare_cached(
        "SELECT k.service, k.key, k.value_text, k.description, k.epoch
         FROM search_fts f JOIN search_keys k ON k.rowid = f.rowid
         WHERE search_fts MATCH ?1 AND (?2 IS NULL OR k.service = ?2) AND k.epoch > ?3
         ORDER BY bm25(search_fts), k.service, k.key LIMIT ?4",
    )?;
    Ok(st.query_map(params![phrase, service, since, limit], row)?.collect::<Result<_, _>>()?)
}

/// Events folded per transaction step during a rebuild (limits.rs).
const REBUILD_CHUNK_EVENTS: usize = confstore_core::limits::SEARCH_REBUILD_CHUNK_EVENTS;

/// A rebuild from scratch: [`Rebuild::start`] empties the index, [`Rebuild::push`] takes
/// every verified event of the log in order, [`Rebuild::finish`] folds the rest. Run it
/// inside one transaction.
pub struct Rebuild<'c> {
    conn: &'c Connection,
    state: State,
    chunk: Vec<Verified>,
    events: u64,
    error: Option<SearchError>,
}

impl<'c> Rebuild<'c> {
    /// Empties the index.
    pub fn start(conn: &'c Connection) -> Result<Self, SearchError> {
        clear(conn)?;
        Ok(Self { conn, state: State::default(), chunk: Vec::new(), events: 0, error: None })
    }

    /// Takes the next event (errors are kept for [`Self::finish`]).
    pub fn push(&mut self, ev: &Verified) {
        self.state.apply(ev);
        self.chunk.push(ev.clone());
        self.events += 1;
        if self.chunk.len() >= REBUILD_CHUNK_EVENTS && self.error.is_none() {
            if let Err(e) = apply(self.conn, &self.chunk, &self.state) {
                self.error = Some(e);
            }
            self.chunk.clear();
        }
    }

    /// Events taken so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Folds what is left; the number of events.
    pub fn finish(self) -> Result<u64, SearchError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        apply(self.conn, &self.chunk, &self.state)?;
        Ok(self.events)
    }
}
