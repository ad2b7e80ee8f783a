-- 0009: the Merkle tree over the log (docs/format.md §19, ADR 0027). `merkle_hashes` has one
-- row per interior node the tree stores, `idx` in the stored-hash order of Go's sumdb/tlog
-- (the root of every complete subtree, written when its last leaf is added); the leaves
-- themselves are not stored: leaf(seq) = SHA-256(0x00 || events.hash of seq) is computed from
-- `events` when a proof needs it. `merkle_tree.size` is how many events the stored nodes cover.
--
-- The tree is extended in batches after commits, not inside each append (an extra table
-- written per commit doubled the WAL pages per single-event append; ADR 0027): `serve`
-- brings it to the head before each checkpoint and in the background, and every reader of a
-- root or proof beyond it first extends it (crates/confstore-log/src/merkle.rs). Derived
-- data: `confstore verify` recomputes every row from the events.
CREATE TABLE merkle_hashes (
    idx  INTEGER PRIMARY KEY CHECK (idx >= 0),
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TABLE merkle_tree (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL CHECK (size >= 0)
) STRICT;
