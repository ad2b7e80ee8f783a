//! The search-index projection (docs/design.md §8): SQLite FTS5 over service, key, value text
//! and the schema's description of each key, filtered by service and by the epoch a key
//! last changed. A fold over verified events; its rows and its checkpoint (last seq +
//! hash) are written in one transaction, so an incremental fold always equals a rebuild.
//!
//! Beside the index it keeps the epoch each key last changed (secrets included, without
//! their values) for the web UI ([`key_epochs`]).
//!
//! The index has its own database file beside the log's, `config.search.db` ([`path_for`]),
//! attached to a connection of the log's database as schema `search` ([`attach`]; every
//! function here attaches it first): its write transactions take that file's write lock,
//! never the log's, so a commit never waits for the index (docs/adr/0037).
//!
//! Architecture invariant: it reads verified events and core state only, and never imports
//! another projection. Its tables come from `migrations/search/`.

mod catch_up;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use confstore_core::{EventKind, Hash32, State, Verified};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

pub use catch_up::catch_up;

/// The schema name the index's database is attached under.
pub const SCHEMA: &str = "search";

/// `PRAGMA application_id` of the index's database ("CFSI"), so `file` and tools can tell
/// it from the log's ("CFST").
pub const APPLICATION_ID: i32 = 0x4346_5349;

/// The index's migrations, in order: (version, name, SQL). Each creates its tables in the
/// attached schema (`search.`).
const MIGRATIONS: &[(u32, &str, &str)] =
    &[(1, "0001_create_search_index", include_str!("../../../migrations/search/0001_create_search_index.sql"))];

/// The index's file for the log's database at `db`: `config.db` → `config.search.db`, in
/// the same directory.
pub fn path_for(db: &Path) -> PathBuf {
    let stem = db.file_stem().map_or_else(|| "config".into(), |s| s.to_string_lossy().into_owned());
    db.with_file_name(format!("{stem}.search.db"))
}

/// Attaches the index's database ([`path_for`] the connection's main database) to `conn`
/// as schema [`SCHEMA`], creating the file (mode 0600, so its `-wal` and `-shm` are private
/// too) and its tables if missing. Does nothing if it is attached already. Outside a
/// transaction (SQLite cannot attach inside one).
pub fn attach(conn: &Connection) -> Result<(), SearchError> {
    let attached = conn.prepare_cached("SELECT 1 FROM pragma_database_list WHERE name = ?1")?.exists([SCHEMA])?;
    if attached {
        return Ok(());
    }
    let main = conn.path().filter(|p| !p.is_empty()).ok_or(SearchError::NoFile)?;
    let path = path_for(Path::new(main));
    confstore_log::files::create_private_file(&path)
        .map_err(|error| SearchError::Create { path: path.clone(), error })?;
    conn.execute("ATTACH DATABASE ?1 AS search", [path.to_string_lossy()])?;
    // WAL, as the log: readers (search requests) never block the catch-up's writes.
    let mode: String = conn.query_row("PRAGMA search.journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SearchError::Schema(format!("the search index refused WAL mode (journal_mode is {mode})")));
    }
    // NORMAL: derived data, rebuilt from the log. A power loss may roll the index back to an
    // earlier checkpoint (never corrupt it: WAL mode), and the next catch-up redoes the rest;
    // a commit does not wait for an fsync.
    conn.execute_batch("PRAGMA search.synchronous = NORMAL")?;
    // After a checkpoint, truncate a WAL that grew (a rebuild, a long reader) back to this.
    conn.pragma_update(
        Some(SCHEMA),
        "journal_size_limit",
        i64::try_from(confstore_core::limits::WAL_BYTES_KEPT_MAX).unwrap_or(i64::MAX),
    )?;
    migrate(conn)
}

/// Applies the index's pending migrations ([`MIGRATIONS`]) in one transaction.
fn migrate(conn: &Connection) -> Result<(), SearchError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let read = |c: &Connection| -> Result<(i32, u32), SearchError> {
        let app_id: i32 = c.query_row("PRAGMA search.application_id", [], |r| r.get(0))?;
        let version: u32 = c.query_row("PRAGMA search.user_version", [], |r| r.get(0))?;
        Ok((app_id, version))
    };
    let (app_id, version) = read(conn)?;
    if version == known && app_id == APPLICATION_ID {
        return Ok(());
    }
    // A deferred transaction whose first statement writes the index's file: it takes that
    // file's write lock only (BEGIN IMMEDIATE would take the log's too).
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS search.search_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL) STRICT",
    )?;
    // Read again under the lock: another connection may have migrated meanwhile.
    let (app_id, version) = read(&tx)?;
    let has_tables: bool =
        tx.query_row("SELECT count(*) > 0 FROM search.sqlite_schema WHERE name <> 'search_migrations'", [], |r| {
            r.get(0)
        })?;
    if app_id != APPLICATION_ID && (app_id != 0 || has_tables) {
        return Err(SearchError::Schema(
            "the search index's file is not a confstore search index (its application_id differs); delete it to rebuild"
                .into(),
        ));
    }
    if version > known {
        return Err(SearchError::Schema(format!(
            "the search index has schema version {version}, newer than the {known} this confstore knows; delete it to rebuild"
        )));
    }
    for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > version) {
        tx.execute_batch(sql)?;
        tx.execute("INSERT INTO search.search_migrations (version, name) VALUES (?1, ?2)", params![v, name])?;
    }
    tx.pragma_update(Some(SCHEMA), "user_version", known)?;
    tx.pragma_update(Some(SCHEMA), "application_id", APPLICATION_ID)?;
    tx.commit()?;
    Ok(())
}

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
    /// The log's connection has no file (an in-memory database): the index has no place.
    #[error("search index: the log's database has no file to put the index beside")]
    NoFile,
    /// The index's file could not be created.
    #[error("search index: cannot create {path}: {error}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The index's file is not one this build can use.
    #[error("search index: {0}")]
    Schema(String),
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
    attach(conn)?;
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
    attach(conn)?;
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
    attach(conn)?;
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
    attach(conn)?;
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
    attach(conn)?;
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
        attach(conn)?;
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
