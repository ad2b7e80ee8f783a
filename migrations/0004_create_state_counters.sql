-- 0004: counters folded from the log into the write model (kept at the checkpoint):
-- secret encryptions per master-key version, bounded for AES-GCM's random nonces.

CREATE TABLE state_secret_encryptions (
    key_version INTEGER PRIMARY KEY,
    count       INTEGER NOT NULL
) STRICT;
