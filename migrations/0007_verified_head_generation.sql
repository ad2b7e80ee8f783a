-- 0007: the store generation at the verified head (ADR 0017). A verifier resumed from the
-- checkpoint must know the generation there to check that the next `generation_started`
-- raises it by exactly one. Every store made before this migration is at generation 1: no
-- earlier build could append `generation_started`.
--
-- `store.generation` is the generation now (updated in the transaction that appends a
-- `generation_started`); this column is the generation at the checkpoint, which can lag.

ALTER TABLE verified_head ADD COLUMN generation INTEGER NOT NULL DEFAULT 1 CHECK (generation >= 1);
