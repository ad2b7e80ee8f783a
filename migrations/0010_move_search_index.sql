-- 0010: the search index leaves config.db for its own file, config.search.db (its schema
-- is migrations/search/, applied by projections/confstore-search; docs/adr/0037): its
-- transactions then never hold the log's write lock, which every commit needs. The index
-- is derived data, so nothing moves: the next catch-up rebuilds it there from the log.
DROP TRIGGER IF EXISTS search_keys_ai;
DROP TRIGGER IF EXISTS search_keys_ad;
DROP TRIGGER IF EXISTS search_keys_au;
DROP TABLE IF EXISTS search_fts;
DROP TABLE IF EXISTS search_keys;
DROP TABLE IF EXISTS key_changes;
DROP TABLE IF EXISTS search_checkpoint;
