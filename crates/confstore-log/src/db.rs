//! Opening `config.db`: the SQLite version pin, every pragma (each with its reason), and
//! the forward-only migrations from `migrations/`, embedded in the binary.

use std::path::Path;
use std::time::Duration;

use confstore_core::limits;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::LogError;

/// Oldest SQLite accepted: 3.51.3 fixes a WAL-reset bug that can corrupt a database when
/// two processes write or checkpoint at once (confstore + Litestream).
pub const SQLITE_VERSION_MIN: &str = "3.51.3";
const SQLITE_VERSION_NUMBER_MIN: i32 = 3_051_003;

/// `PRAGMA application_id` of a confstore database ("CFST"), so `file` and tools can tell.
pub const APPLICATION_ID: i32 = 0x4346_5354;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "0001_create_log", include_str!("../../../migrations/0001_create_log.sql")),
    (2, "0002_create_state_schemas", include_str!("../../../migrations/0002_create_state_schemas.sql")),
    (3, "0003_create_search_index", include_str!("../../../migrations/0003_create_search_index.sql")),
    (4, "0004_create_state_counters", include_str!("../../../migrations/0004_create_state_counters.sql")),
    (5, "0005_create_state_tokens", include_str!("../../../migrations/0005_create_state_tokens.sql")),
    (6, "0006_create_state_versions", include_str!("../../../migrations/0006_create_state_versions.sql")),
    (7, "0007_verified_head_generation", include_str!("../../../migrations/0007_verified_head_generation.sql")),
    (8, "0008_create_key_changes", include_str!("../../../migrations/0008_create_key_changes.sql")),
    (9, "0009_create_merkle_hashes", include_str!("../../../migrations/0009_create_merkle_hashes.sql")),
    (10, "0010_move_search_index", include_str!("../../../migrations/0010_move_search_index.sql")),
];

/// The schema version this build writes.
pub fn schema_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// How durable a commit is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL at every commit: an acknowledged changeset survives power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, but a power loss may roll back
    /// the commits since the last checkpoint (up to `wal_autocheckpoint` pages).
    Normal,
}

/// Options for opening the database.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
    /// The reader-age guard's limit: a read of a [`crate::LogReader`] opened with these
    /// options that runs longer is aborted ([`crate::guard`], ADR 0016), because SQLite
    /// cannot checkpoint the WAL past an open reader.
    pub max_read_age: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(limits::WRITE_LOCK_WAIT_SECS_DEFAULT),
            max_read_age: crate::guard::MAX_READ_AGE_DEFAULT,
        }
    }
}

/// Opens (creating if `create`) the database and sets every pragma.
pub fn open(path: &Path, opts: &DbOptions, create: bool) -> Result<Connection, LogError> {
    check_sqlite_version()?;
    if !create && !path.exists() {
        return Err(LogError::NotInitialised(path.to_owned()));
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        // SQLite would create the file 0644 (less the umask), and its -wal and -shm with the
        // same mode: create it 0600 first and all three are private.
        crate::files::create_private_file(path).map_err(|e| LogError::Io(path.to_owned(), e))?;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(LogError::sqlite("opening the database"))?;
    set_pragmas(&conn, opts)?;
    Ok(conn)
}

fn check_sqlite_version() -> Result<(), LogError> {
    if rusqlite::version_number() < SQLITE_VERSION_NUMBER_MIN {
        return Err(LogError::SqliteTooOld { found: rusqlite::version().to_owned(), required: SQLITE_VERSION_MIN });
    }
    Ok(())
}

fn set_pragmas(conn: &Connection, opts: &DbOptions) -> Result<(), LogError> {
    let ctx = LogError::sqlite("setting pragmas");
    // Wait for another process's lock (a second confstore, Litestream's checkpoint) instead
    // of failing at once with SQLITE_BUSY.
    conn.busy_timeout(opts.busy_timeout).map_err(LogError::sqlite("setting busy_timeout"))?;
    // The schema never needs SQL functions from the database file; refuse them, so a
    // hostile file cannot make us run anything.
    conn.pragma_update(None, "trusted_schema", "OFF").map_err(LogError::sqlite("setting trusted_schema"))?;
    // WAL: readers never block the writer, and Litestream replicates from the WAL.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(LogError::sqlite("setting journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LogError::Schema(format!("the database refused WAL mode (journal_mode is {mode})")));
    }
    // FULL fsyncs the WAL at every commit, so an acknowledged write survives power loss.
    // NORMAL only on request (see Synchronous::Normal for the loss window).
    let sync = match opts.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(LogError::sqlite("setting synchronous"))?;
    // Checkpoint the WAL into the database every 1000 pages (SQLite's default, made explicit
    // because Litestream's own checkpoints rely on it staying passive).
    conn.pragma_update(None, "wal_autocheckpoint", limits::WAL_AUTOCHECKPOINT_PAGES)
        .map_err(LogError::sqlite("setting wal_autocheckpoint"))?;
    // After a checkpoint, truncate a WAL that a long reader made grow back to 64 MiB. It
    // bounds the file only once the reader is gone: the reader-age guard (ADR 0016) makes
    // sure every reader of ours is gone within `max_read_age`.
    conn.pragma_update(None, "journal_size_limit", i64::try_from(limits::WAL_BYTES_KEPT_MAX).unwrap_or(i64::MAX))
        .map_err(LogError::sqlite("setting journal_size_limit"))?;
    // Enforce foreign keys should a later migration declare any.
    conn.pragma_update(None, "foreign_keys", "ON").map_err(ctx)?;
    // Temporary tables and indices (sorting) stay in memory, never in stray files.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(LogError::sqlite("setting temp_store"))?;
    Ok(())
}

/// Applies pending migrations inside one transaction and records them.
pub fn migrate(conn: &mut Connection, now_ms: u64) -> Result<(), LogError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(LogError::sqlite("starting the migration transaction"))?;
    let app_id: i32 =
        tx.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(LogError::sqlite("reading application_id"))?;
    let version: u32 =
        tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(LogError::sqlite("reading user_version"))?;
    let has_tables: bool = tx
        .query_row("SELECT count(*) > 0 FROM sqlite_schema", [], |r| r.get(0))
        .map_err(LogError::sqlite("reading the schema"))?;
    if app_id != APPLICATION_ID && (app_id != 0 || has_tables) {
        return Err(LogError::Schema("this file is not a confstore database (its application_id differs)".into()));
    }
    if version > schema_version() {
        return Err(LogError::Schema(format!(
            "the database has schema version {version}, newer than the {} this confstore knows; upgrade confstore",
            schema_version()
        )));
    }
    if version < schema_version() {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL) STRICT;",
        )
        .map_err(LogError::sqlite("creating schema_migrations"))?;
        for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > version) {
            tx.execute_batch(sql).map_err(LogError::sqlite("applying a migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![v, name, i64::try_from(now_ms).unwrap_or(i64::MAX)],
            )
            .map_err(LogError::sqlite("recording a migration"))?;
        }
        tx.pragma_update(None, "user_version", schema_version()).map_err(LogError::sqlite("setting user_version"))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(LogError::sqlite("setting application_id"))?;
    }
    tx.commit().map_err(LogError::sqlite("committing migrations"))
}

/// Checks, without writing, that a database has the schema this build knows.
pub fn check_schema(conn: &Connection) -> Result<(), LogError> {
    let version: u32 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(LogError::sqlite("reading user_version"))?;
    if version != schema_version() {
        return Err(LogError::Schema(format!(
            "the database has schema version {version}, this confstore expects {}; open it for writing once to migrate",
            schema_version()
        )));
    }
    Ok(())
}
