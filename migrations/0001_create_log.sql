-- 0001: the event log and the tables kept beside it in the same transactions.
-- Forward-only. Applied by confstore-log at open, inside one transaction, and recorded in
-- schema_migrations and PRAGMA user_version.

-- The log: one row per event, append-only (format v1, docs/format.md).
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    body      BLOB    NOT NULL,
    prev_hash BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32),
    key_id    BLOB    NOT NULL CHECK (length(key_id) = 8),
    sig       BLOB    NOT NULL CHECK (length(sig) = 64)
) STRICT;

-- History is never rewritten: refuse UPDATE and DELETE outright.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE is refused');
END;

-- Which store this file is: the store id of the genesis hash, and the generation
-- (a restore that rewinds history gets a new one).
CREATE TABLE store (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    store_id   BLOB    NOT NULL CHECK (length(store_id) = 16),
    generation INTEGER NOT NULL CHECK (generation >= 1),
    created_ms INTEGER NOT NULL
) STRICT;

-- The last head whose events were all verified (written with every commit by confstore,
-- and after the start-up check of the events beyond it).
CREATE TABLE verified_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    hash    BLOB    NOT NULL CHECK (length(hash) = 32),
    epoch   INTEGER NOT NULL,
    time_ms INTEGER NOT NULL
) STRICT;

-- The signing key chain: the genesis key, then each key rotated in.
CREATE TABLE signing_keys (
    from_seq   INTEGER PRIMARY KEY,
    key_id     BLOB    NOT NULL UNIQUE CHECK (length(key_id) = 8),
    public_key BLOB    NOT NULL CHECK (length(public_key) = 32)
) STRICT;

-- The write model: registered services and current values at the head, so the writer
-- validates changes without replaying the log at start. Derived; `verify --full` checks
-- it equals a replay.
CREATE TABLE state_services (
    service       TEXT    PRIMARY KEY,
    registered_seq INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE state_values (
    service    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value_json TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    epoch      INTEGER NOT NULL,
    PRIMARY KEY (service, key)
) STRICT, WITHOUT ROWID;
