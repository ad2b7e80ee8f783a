-- search 0001: the search-index projection (projections/confstore-search) in its own
-- database, `<data-dir>/config.search.db`, attached to the log's connections as schema
-- `search` (docs/adr/0037). Derived data: the file can be deleted at any time; the next
-- catch-up rebuilds it from the log. Until config.db's migration 0010 these tables lived in
-- config.db (migrations 0003 and 0008).

-- One row per (service, key) with a value now; secrets are never indexed.
CREATE TABLE search.search_keys (
    service     TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value_text  TEXT    NOT NULL,
    description TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    PRIMARY KEY (service, key)
) STRICT;

-- Full-text index over those rows; the trigram tokenizer matches any part of a word
-- (case-insensitive), so "ingres" finds "billing-ingress".
CREATE VIRTUAL TABLE search.search_fts USING fts5(
    service, key, value_text, description,
    content = 'search_keys', content_rowid = 'rowid', tokenize = 'trigram'
);

-- Keep the index in step with its content table.
CREATE TRIGGER search.search_keys_ai AFTER INSERT ON search_keys BEGIN
    INSERT INTO search_fts (rowid, service, key, value_text, description)
    VALUES (new.rowid, new.service, new.key, new.value_text, new.description);
END;
CREATE TRIGGER search.search_keys_ad AFTER DELETE ON search_keys BEGIN
    INSERT INTO search_fts (search_fts, rowid, service, key, value_text, description)
    VALUES ('delete', old.rowid, old.service, old.key, old.value_text, old.description);
END;
CREATE TRIGGER search.search_keys_au AFTER UPDATE ON search_keys BEGIN
    INSERT INTO search_fts (search_fts, rowid, service, key, value_text, description)
    VALUES ('delete', old.rowid, old.service, old.key, old.value_text, old.description);
    INSERT INTO search_fts (rowid, service, key, value_text, description)
    VALUES (new.rowid, new.service, new.key, new.value_text, new.description);
END;

-- The epoch each key last changed. Unlike the index it has a row for secrets too (no
-- value, only the epoch), so the web UI can say when every key changed.
CREATE TABLE search.key_changes (
    service TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    epoch   INTEGER NOT NULL,
    PRIMARY KEY (service, key)
) STRICT;

-- The projection's checkpoint: the last event folded in, written in the same transaction
-- as the rows above.
CREATE TABLE search.search_checkpoint (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;
