-- 0005: API tokens in the write model (kept at the checkpoint, like state_values).
-- Only the SHA-256 of each token is stored, as in its token_issued event.

CREATE TABLE state_tokens (
    token_id    TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    service     TEXT,
    token_hash  BLOB    NOT NULL CHECK (length(token_hash) = 32),
    issued_seq  INTEGER NOT NULL,
    revoked_seq INTEGER
) STRICT, WITHOUT ROWID;
