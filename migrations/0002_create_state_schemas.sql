-- 0002: service schemas in the write model (kept at the checkpoint, like state_values).

CREATE TABLE state_schemas (
    service     TEXT    PRIMARY KEY,
    schema_json TEXT    NOT NULL,
    schema_hash BLOB    NOT NULL CHECK (length(schema_hash) = 32),
    seq         INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
