//! Opening databases: the SQLite version pin, pragmas, migrations, and files that are not
//! (or not yet, or no longer) confstore stores. Each gives a clear error and writes nothing.

mod common;

use common::*;
use confstore_log::{DbOptions, LogError, LogReader, Store};

#[test]
fn bundled_sqlite_is_at_least_3_51_3() {
    assert!(rusqlite::version_number() >= 3_051_003, "linked sqlite {}", rusqlite::version());
}

#[test]
fn pragmas_are_as_documented() {
    let (t, _store) = temp_store();
    let reader = LogReader::open(&t.path).unwrap();
    let c = reader.connection();
    let get = |p: &str| -> String {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert!(get("journal_mode").contains("wal"));
    assert_eq!(get("synchronous"), "Integer(2)", "FULL by default");
    assert_eq!(get("journal_size_limit"), "Integer(67108864)");
    assert_eq!(get("user_version"), format!("Integer({})", confstore_log::db::schema_version()));
    assert_eq!(get("application_id"), format!("Integer({})", confstore_log::db::APPLICATION_ID));
}

#[test]
fn missing_store_is_not_initialised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let err = Store::open(&path, Some(key(1)), clock(), &DbOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::NotInitialised(_)), "{err}");
    assert!(err.to_string().contains("confstore init"));
    assert!(!path.exists(), "opening must not create the file");
}

#[test]
fn garbage_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let garbage = b"this is not a database, just some bytes that happen to be here".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path, Some(key(1)), clock(), &DbOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a database"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    drop(other);
    let err = Store::open(&path, Some(key(1)), clock(), &DbOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a confstore database"), "{err}");
}

#[test]
fn newer_schema_is_refused_with_advice() {
    let (t, store) = temp_store();
    drop(store);
    let c = rusqlite::Connection::open(&t.path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap_err();
    assert!(err.to_string().contains("upgrade confstore"), "{err}");
    let err = LogReader::open(&t.path).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn create_refuses_an_existing_store() {
    let (t, store) = temp_store();
    drop(store);
    let err = Store::create(&t.path, key(1), STORE, "t", clock(), &DbOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::AlreadyInitialised { .. }), "{err}");
}

#[test]
fn migrations_are_recorded() {
    let (t, _store) = temp_store();
    let c = rusqlite::Connection::open(&t.path).unwrap();
    let names: Vec<String> = c
        .prepare("SELECT name FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        names,
        [
            "0001_create_log",
            "0002_create_state_schemas",
            "0003_create_search_index",
            "0004_create_state_counters",
            "0005_create_state_tokens",
            "0006_create_state_versions",
            "0007_verified_head_generation",
            "0008_create_key_changes",
            "0009_create_merkle_hashes",
            "0010_move_search_index"
        ]
    );
}

/// A store written before migration 0006 has no snapshot versions; opening it with this
/// build verifies the log again from seq 1 and folds the versions in, so the write model
/// equals a replay — after a checkpoint, and on the next open.
#[test]
fn migration_0006_rebuilds_the_write_model_from_the_log() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("web"), register("global"), set("web", "port", serde_json::json!(80))])).unwrap();
    store.append(draft(vec![set("global", "region", serde_json::json!("eu"))])).unwrap();
    store.append(draft(vec![set("web", "port", serde_json::json!(81))])).unwrap();
    drop(store);
    let c = rusqlite::Connection::open(&t.path).unwrap();
    c.execute_batch(
        "DROP TABLE state_versions; ALTER TABLE verified_head DROP COLUMN generation; DROP TABLE merkle_hashes; DROP TABLE merkle_tree;
         DELETE FROM schema_migrations WHERE version >= 6; PRAGMA user_version = 5;",
    )
    .unwrap();
    // A store of schema version 5 still had the search index in config.db (migration 0010
    // moved it out; 0008 empties it).
    c.execute_batch(include_str!("../../../migrations/0003_create_search_index.sql")).unwrap();
    drop(c);
    for round in 0..2 {
        let store = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
        assert!(store.refusal().is_none());
        store.append(draft(vec![register(&format!("db{round}"))])).unwrap();
        drop(store);
        let reader = LogReader::open(&t.path).unwrap();
        let (_, model) = reader.write_model().unwrap();
        assert_eq!(model, reader.replay(confstore_log::Until::Head).unwrap());
        if round == 0 {
            let web = confstore_core::state::ServiceVersion { changed_epoch: 3, seq: 6, prev_epoch: 2 };
            assert_eq!(model.versions["web"], web);
        }
    }
}

/// SQLite creates `-wal` and `-shm` with the database file's mode: creating `config.db`
/// 0600 first makes all three private whatever the umask (docs/operations.md, Files).
#[test]
fn the_database_and_its_wal_and_shm_are_created_0600() {
    use std::os::unix::fs::PermissionsExt;
    let (t, store) = temp_store();
    store.append(draft(vec![register("web")])).unwrap();
    let reader = LogReader::open(&t.path).unwrap();
    assert!(reader.head().unwrap().seq >= 2);
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", t.path.display());
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path}: {e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path} is {mode:04o}");
    }
}

/// Migration 0010 moves the search index out of config.db (to its own file, ADR 0037): a
/// store of schema version 9 with an index in it opens with none of the index's tables left
/// in config.db, and its log untouched.
#[test]
fn migration_0010_takes_the_search_index_out_of_the_log_database() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("web"), set("web", "port", serde_json::json!(80))])).unwrap();
    drop(store);
    let c = rusqlite::Connection::open(&t.path).unwrap();
    c.execute_batch(include_str!("../../../migrations/0003_create_search_index.sql")).unwrap();
    c.execute_batch(
        "CREATE TABLE key_changes (service TEXT NOT NULL, key TEXT NOT NULL, epoch INTEGER NOT NULL,
                                   PRIMARY KEY (service, key)) STRICT;
         INSERT INTO search_keys VALUES ('web', 'port', '80', '', 2);
         INSERT INTO key_changes VALUES ('web', 'port', 2);
         DELETE FROM schema_migrations WHERE version >= 10; PRAGMA user_version = 9;",
    )
    .unwrap();
    drop(c);
    let store = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    assert!(store.refusal().is_none());
    let c = rusqlite::Connection::open(&t.path).unwrap();
    let left: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE name LIKE 'search%' OR name = 'key_changes'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(left.is_empty(), "left in config.db: {left:?}");
    assert_eq!(store.reader().unwrap().current_state().unwrap().value("web", "port"), Some("80"));
}
