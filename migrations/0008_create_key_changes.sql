-- 0008: the epoch each key last changed, kept beside the search index by its projection
-- (projections/confstore-search) and rebuilt with it. Unlike the index it has a row for
-- secrets too (no value, only the epoch), so the web UI can say when every key changed.
CREATE TABLE key_changes (
    service TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    epoch   INTEGER NOT NULL,
    PRIMARY KEY (service, key)
) STRICT;

-- The index was built without this table: empty it and its checkpoint so the next
-- catch-up rebuilds both from the log.
DELETE FROM search_keys;
DELETE FROM search_checkpoint;
