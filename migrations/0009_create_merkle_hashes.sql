-- 0009: the Merkle tree over the log (docs/format.md §19, ADR 0027). One row per stored
-- hash, `idx` in the stored-hash order of Go's sumdb/tlog: appending event `seq` writes the
-- leaf hash at stored_hash_index(0, seq - 1) and, right after it, the root of every subtree
-- that event completes. Rows are written in the event's own transaction, so the tree always
-- covers exactly the committed events; a database from before this migration has its tree
-- built from its events at the next open for writing (crates/confstore-log/src/merkle.rs).
-- Derived data: a proof from a damaged row fails verification against a signed checkpoint,
-- and `confstore verify` recomputes the root from the events.
CREATE TABLE merkle_hashes (
    idx  INTEGER PRIMARY KEY CHECK (idx >= 0),
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;
