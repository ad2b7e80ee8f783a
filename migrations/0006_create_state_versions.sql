-- 0006: each service's snapshot version in the write model (kept at the checkpoint, like
-- state_values): the last epoch that changed it, that change's seq, and the version before.
-- The live stream and its clients use the chain to detect missed versions (format.md §14).
--
-- A store made before this migration has no versions recorded. Instead of guessing them,
-- the migration empties the write model and forgets the verified head: the next open
-- verifies the whole log again from seq 1 and folds every event back in, versions included
-- (the same path a fresh replica takes). The log itself is untouched.

CREATE TABLE state_versions (
    service    TEXT    PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    prev_epoch INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

DELETE FROM state_services;
DELETE FROM state_values;
DELETE FROM state_schemas;
DELETE FROM state_secret_encryptions;
DELETE FROM state_tokens;
DELETE FROM verified_head;
