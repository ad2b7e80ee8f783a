//! Every bound confstore enforces, in one place, with the reason for each.
//!
//! A limit is part of the contract: raising one is safe for readers of older logs,
//! lowering one may make an existing log unreadable, so only ever raise them.

/// Longest service name in bytes. Names appear in MQTT topics and file names.
pub const SERVICE_NAME_BYTES_MAX: usize = 64;
/// Longest key name in bytes.
pub const KEY_NAME_BYTES_MAX: usize = 128;
/// Largest value, as canonical JSON text, in bytes. Configuration, not blobs.
pub const VALUE_JSON_BYTES_MAX: usize = 64 * 1024;
/// Deepest JSON nesting accepted in a value (guards recursive decoders downstream).
pub const VALUE_JSON_DEPTH_MAX: usize = 32;
/// Longest actor name in bytes.
pub const ACTOR_BYTES_MAX: usize = 128;
/// Longest reason text in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// Longest request id in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 64;
/// Most events in one changeset. A changeset is one SQLite transaction; keep it bounded.
pub const EVENTS_PER_CHANGESET_MAX: usize = 1000;
/// Largest encoded event body in bytes: one maximal value plus names and metadata.
/// Verification rejects anything larger before decoding it.
pub const EVENT_BODY_BYTES_MAX: usize = VALUE_JSON_BYTES_MAX + 4 * 1024;
/// Most keys one service may hold.
pub const KEYS_PER_SERVICE_MAX: usize = 10_000;
/// Most registered services in one store.
pub const SERVICES_MAX: usize = 1_000;
/// Most API tokens ever issued in one store (revoked ones count: they stay in the state).
pub const TOKENS_MAX: usize = 10_000;
/// Longest token name in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 64;
/// Longest route text recorded in an `access_denied` event, in bytes.
pub const ROUTE_BYTES_MAX: usize = 256;
/// Most (method, route) pairs itemised in one `access_denied_summary` event; refusals on
/// further routes are counted in its `dropped` field. Routes are the API's templates (about
/// 50), so only a newer server's larger route table could reach it. 128 items of the
/// longest route still fit an event body.
pub const DENIAL_SUMMARY_ROUTES_MAX: usize = 128;
/// Most tokens whose refusals the server tracks in memory at once (the routes each was
/// refused on, and the counts not yet summarised). When full, a token with nothing pending
/// is forgotten to make room; if every tracked token has refusals pending, a refusal of
/// another token is only logged and counted in metrics, except that token's very first
/// refusal, which is always appended (ADR 0013).
pub const DENIAL_TOKENS_TRACKED_MAX: usize = 1024;
/// Default length of the window over which one token's repeated refusals are summed into
/// one `access_denied_summary` event, in seconds.
pub const DENIAL_SUMMARY_WINDOW_SECS_DEFAULT: u64 = 60;
/// Largest request body the API accepts, in bytes (413 above): room for a changeset of
/// many values; one value is still bounded by VALUE_JSON_BYTES_MAX.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most open HTTP connections. At the cap the least useful idle connection is closed for
/// a newcomer (a half-sent request first); when all are busy the newcomer gets 503. With
/// the MQTT cap below (two descriptors per proxied client) this stays well inside a
/// 20,000 file-descriptor limit.
pub const HTTP_CONNECTIONS_MAX: usize = 4096;
/// Seconds a request head may take to arrive, from its first byte or the connection's
/// opening (a slow or half-sent request is closed after it).
pub const HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
/// Seconds a keep-alive HTTP connection may stay idle between requests.
pub const HTTP_IDLE_TIMEOUT_SECS: u64 = 60;
/// Seconds a request body may take to arrive in full (408 after it).
pub const HTTP_BODY_TIMEOUT_SECS: u64 = 15;
/// Most open connections to the embedded MQTT broker; a client beyond it gets CONNACK
/// "server unavailable".
pub const MQTT_CONNECTIONS_MAX: usize = 1024;
/// Seconds a client of the embedded broker has to send its CONNECT.
pub const MQTT_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Largest MQTT packet a client (not the publisher) may send the embedded broker: clients
/// only subscribe and acknowledge.
pub const MQTT_CLIENT_PACKET_BYTES_MAX: usize = 64 * 1024;
/// Most QoS 1 messages the embedded broker has sent one client and not had acknowledged;
/// further ones wait in its queue. rumqttc's own default is 100: a client acknowledges far
/// sooner than this fills.
pub const MQTT_INFLIGHT_MAX: usize = 1024;
/// Most messages the embedded broker holds for one client: waiting to be sent on its
/// connection, or kept by its persistent session while it is away. A client this far behind
/// has stopped reading; it is disconnected, and past this its session drops the oldest.
/// Equal to the publisher's window (`MQTT_PUBLISH_WINDOW_MESSAGES`): a client is cut off
/// only once it is a whole window behind.
pub const MQTT_SESSION_QUEUE_MAX: usize = 4096;
/// Most sessions the embedded broker keeps, connected or not: twice the connection cap, so
/// every connected client can have one and as many may be briefly away.
pub const MQTT_SESSIONS_MAX: usize = 2 * MQTT_CONNECTIONS_MAX;
/// Most retained topics the embedded broker keeps. The store's own (a snapshot, staged
/// message and events topic per service, the head, health, checkpoint) are always kept;
/// clients' status reports (one per instance, `FLEET_INSTANCES_MAX` of them) past this are
/// forwarded but not kept.
pub const MQTT_RETAINED_TOPICS_MAX: usize = 100_000;
/// Most reports waiting for the fleet view's in-process subscription to the embedded
/// broker; past it a report is dropped and counted (`confstore_mqtt_dropped`). Reports are
/// rate-limited per client (`STATUS_REPORT_INTERVAL_MIN_MS`), so this is seconds of the
/// largest fleet's reports.
pub const MQTT_LOCAL_QUEUE_MAX: usize = 65_536;
/// Longest instance id (docs/format.md §20), in bytes.
pub const INSTANCE_ID_BYTES_MAX: usize = 64;
/// Largest instance status report accepted (MQTT payload or REST body), in bytes.
pub const STATUS_BYTES_MAX: usize = 8 * 1024;
/// Least time between two status reports of one client (ms): a burst of versions makes one
/// report, so reporting costs the broker and the fleet view at most 10 messages a second
/// per instance.
pub const STATUS_REPORT_INTERVAL_MIN_MS: u64 = 100;
/// Most env override names one status report lists.
pub const STATUS_ENV_OVERRIDES_MAX: usize = 256;
/// Most instances the server's fleet view holds, all services together. When full, the
/// instance offline the longest is forgotten for a newcomer; if none is offline, the
/// newcomer's report is refused (counted in metrics, logged once a minute).
pub const FLEET_INSTANCES_MAX: usize = 10_000;
/// Seconds an offline instance stays in the fleet view before it is forgotten.
pub const FLEET_OFFLINE_RETENTION_SECS: u64 = 24 * 3600;
/// Most instance ids a rollout's cohort lists (docs/format.md §21).
pub const ROLLOUT_INSTANCES_MAX: usize = 1_000;
/// Shortest bake time of a rollout, in milliseconds: long enough for a cohort to apply the
/// staged version and report it.
pub const ROLLOUT_BAKE_MS_MIN: u64 = 1_000;
/// Longest bake time (7 days).
pub const ROLLOUT_BAKE_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Most cohort members a promotion or abort records as its evidence (the deciding ones —
/// unhealthy, not applied, offline — first).
pub const ROLLOUT_EVIDENCE_MAX: usize = 200;
/// How often the server judges active rollouts for automatic promotion or abort.
pub const ROLLOUT_TICK_MS: u64 = 200;
/// After the server starts, how long it waits for the retained status reports to fill the
/// fleet view before it judges a rollout automatically (a restart must not abort a rollout
/// because the view is still empty).
pub const ROLLOUT_SETTLE_MS: u64 = 3_000;
/// Items per page of history, events, audit and search answers when none is asked for.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Most items per page (a larger `limit` is refused with 422).
pub const PAGE_SIZE_MAX: usize = 1000;
/// Signatures checked together in one batch during verification. Larger batches amortise
/// the multiscalar multiplication (1024 measured 5-30% faster than 256 per signature).
pub const VERIFY_BATCH_EVENTS: usize = 1024;
/// Most changesets the writer commits in one SQLite transaction (group commit).
pub const GROUP_COMMIT_CHANGESETS_MAX: usize = 256;
/// Most events the writer commits in one SQLite transaction.
pub const GROUP_COMMIT_EVENTS_MAX: usize = 4096;
/// Most changesets per page of `GET /api/v1/changesets`.
pub const CHANGESETS_PAGE_MAX: usize = 200;
/// Most events one `GET /api/v1/changesets` request reads: a scope or filter that rarely
/// matches stops here and says where to continue, so one request stays short.
pub const CHANGESETS_SCAN_EVENTS_MAX: usize = 50_000;
/// Attempts a rollback makes (API and CLI) before giving up when other writers keep changing
/// the store between its read and its compare-and-set append.
pub const ROLLBACK_ATTEMPTS_MAX: usize = 5;
/// Reads a search-index catch-up makes before giving up when other catch-ups (a search
/// request, the web UI's keys view, the background projector, the CLI) keep moving the
/// index's checkpoint between its read and its write. Each retry means another catch-up
/// just did the work, so a few suffice; the caller is told to try again.
pub const SEARCH_CATCH_UP_ATTEMPTS_MAX: usize = 5;
/// Most index rows (keys written, descriptions rewritten) one transaction of the search
/// index's catch-up writes. The index has its own file (ADR 0037), so its transactions hold
/// no lock the log's commits need; the bound keeps what one transaction adds to the index's
/// WAL, and the memory FTS5 holds before it flushes, small (~2,048 × 300-byte values), and
/// the checkpoint moving through a long backlog. Fewer, larger transactions cost less: each
/// one flushes a new FTS5 segment that later merges rewrite. A transaction writes each key
/// once however often its events changed it, so bursts to a few hot keys go in long, cheap
/// transactions.
pub const SEARCH_ROWS_PER_TRANSACTION_MAX: usize = 2048;
/// Most events one transaction of the search index's catch-up takes in, however few rows
/// they write (hot keys): keeps the index's checkpoint moving through a long backlog.
pub const SEARCH_EVENTS_PER_TRANSACTION_MAX: usize = 16_384;
/// Hits `confstore search` shows when no `--limit` is given: a screenful.
pub const SEARCH_HITS_DEFAULT: usize = 50;
/// Most idle read connections the server keeps for reuse. Reads run on the blocking pool
/// and each holds one connection (a few MiB of page cache) only while it runs; more than
/// this many at once open extra connections that are closed after use.
pub const READER_POOL_IDLE_MAX: usize = 8;
/// Events between two checkpoints of the write model (the verified head and the state
/// tables). Bounds the work at open (the events after the checkpoint are verified and
/// replayed) against the cost of rewriting dirty rows.
pub const CHECKPOINT_INTERVAL_EVENTS: u64 = 256;
/// Most new events a writer's catch-up checks one signature at a time with the strict
/// rules; above it, in batches (docs/adr/0003): a batch pays off from about this size.
pub const STRICT_CATCH_UP_EVENTS_MAX: u64 = 64;
/// Fewest events of one batch whose signing the writer spreads over every core: a
/// signature costs ~20 µs, a scoped thread ~10 µs, so from three on it pays.
pub const PARALLEL_SIGN_EVENTS_MIN: usize = 3;
/// Default seconds a writer waits for another process's write lock (SQLite busy timeout)
/// before the append fails and is reported as not committed. Longer than any one batch
/// commit of this writer, short enough that a stuck lock surfaces as an error.
pub const WRITE_LOCK_WAIT_SECS_DEFAULT: u64 = 5;
/// Default seconds a database read may run before the reader-age guard aborts it
/// (ADR 0016): the WAL cannot be checkpointed past an open reader. Well past any read
/// confstore makes (each chunk of a long read takes milliseconds), and short enough that a
/// stuck reader costs at most 30 s of WAL growth.
pub const READ_AGE_SECS_DEFAULT: u64 = 30;
/// Largest reader-age limit `serve --max-read-secs` accepts: an hour of WAL growth is
/// already more than a small disk may hold under continuous writes.
pub const READ_AGE_SECS_MAX: u64 = 3600;
/// WAL pages after which a commit checkpoints the WAL into the database (SQLite's default,
/// made explicit because Litestream's own checkpoints rely on it staying passive).
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 1000;
/// Bytes a WAL that a long reader made grow is truncated back to after a checkpoint
/// (`journal_size_limit`): it bounds the file once the reader is gone.
pub const WAL_BYTES_KEPT_MAX: u64 = 64 * 1024 * 1024;
/// Longest search query in bytes (422 above).
pub const SEARCH_QUERY_BYTES_MAX: usize = 256;
/// Most hits one search returns.
pub const SEARCH_HITS_MAX: usize = 1000;
/// Events folded per transaction step of a search-index rebuild.
pub const SEARCH_REBUILD_CHUNK_EVENTS: usize = 10_000;
/// Events per read transaction of a long read (export, replay, catch-up): a long read is
/// many short ones, so none keeps the WAL from being checkpointed for longer than a chunk.
pub const LOG_READ_EVENTS_MAX: usize = 1000;
/// Body bytes per read transaction, at most (plus the one event that crosses it): a chunk
/// of large events stays small in memory.
pub const LOG_READ_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest MQTT packet the publisher sends or accepts: snapshots of 1 MiB and more must
/// flow (rumqttc's default is 10 KiB).
pub const MQTT_PACKET_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most stream messages handed to the MQTT client and not yet acknowledged; while the
/// broker is away the backlog stays in the log, not in memory.
pub const MQTT_PUBLISH_WINDOW_MESSAGES: usize = 4096;
/// Most compiled service schemas kept in memory (keyed by schema hash): one per schema-checked
/// service written to lately; a miss costs a compile (meta-schema check and validator build).
pub const COMPILED_SCHEMAS_CACHED_MAX: usize = 64;
/// Most recent events the server keeps in memory for the MQTT stream (the publisher takes
/// them from there instead of reading the log again; one further behind reads the log).
pub const RECENT_EVENTS_MAX: usize = 4096;
/// Most bytes of values, schemas, ciphertexts and texts those events may hold.
pub const RECENT_EVENT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest a service's retained snapshot may trail the log under continuous writes: the
/// coalescing window of the largest services, in milliseconds (docs/adr/0020).
pub const STREAM_SNAPSHOT_WINDOW_MAX_MS: u64 = 50;
/// Coalescing window per key of the service, in microseconds: rendering and signing a
/// snapshot costs about 3 µs per key, so its retained snapshots take at most ~6 % of a core.
pub const STREAM_SNAPSHOT_WINDOW_PER_KEY_US: u64 = 50;
/// Shortest coalescing window, in milliseconds, whatever the service's size: each retained
/// snapshot is also a signature and a message through the broker (~100 µs together), so a
/// small service written continuously gets at most 100 of them a second (~1 % of a core).
pub const STREAM_SNAPSHOT_WINDOW_MIN_MS: u64 = 10;
/// Fewest keys of a service whose retained snapshots the publisher renders and signs on a
/// blocking thread instead of its own task (docs/adr/0033): at ~3 µs per key, 200 keys take
/// ~0.6 ms, which the deltas behind them would wait; a thread hand-off (~30 µs) costs more
/// than rendering a smaller service.
pub const STREAM_RENDER_ELSEWHERE_KEYS_MIN: usize = 200;
/// How often, under continuous writes, a large service's retained snapshot is really rendered
/// and sent when the broker can defer it (the embedded one; docs/adr/0034), in
/// milliseconds: between two, the broker keeps the service's state and signs a snapshot
/// only for a new subscriber. These renders are what compact the clients' LKG files: at a
/// thousand writes a second a file holds at most ~1,000 deltas, a quarter of the 4,096 a
/// client keeps.
pub const STREAM_DEFERRED_RENDER_INTERVAL_MS: u64 = 1000;
/// Most stream messages a client applies before it writes its LKG file once and
/// acknowledges them all: enough to catch up after a burst in a few file writes, few enough
/// that a crash replays little (the broker sends unacknowledged messages again).
pub const CLIENT_UPDATE_BATCH_MAX: usize = 256;
/// Least time between two signed heads under continuous writes, in milliseconds.
pub const STREAM_HEAD_WINDOW_MS: u64 = 50;
/// Most versions one signed deltas message carries (docs/adr/0035): the versions of a
/// service the publisher takes in together, signed once. A client refuses a message with
/// more.
pub const STREAM_DELTAS_PER_MESSAGE_MAX: usize = 64;
/// Most bytes of delta documents the publisher puts in one deltas message (a version whose
/// delta alone is larger goes in a message of its own): a group commit's versions of a
/// service in a message well under any broker's packet limit.
pub const STREAM_DELTAS_MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// A new signed Merkle-tree checkpoint once this many events were appended since the last
/// one (docs/format.md §19, ADR 0027)...
pub const TLOG_CHECKPOINT_EVENTS: u64 = 100;
/// ...or once this many seconds passed since it with any event appended.
pub const TLOG_CHECKPOINT_SECS: u64 = 10;
/// Least time between two checkpoints, in milliseconds: each is a signature, a file written
/// with two fsyncs and a retained message, so at most ten a second, whatever the write rate
/// (above 1,000 events a second they come every 100 ms rather than every 100 events).
pub const TLOG_CHECKPOINT_GAP_MS: u64 = 100;
/// Events added to the Merkle tree per write transaction when it catches up with the log
/// (about 2 µs each: a transaction holds the write lock for a few milliseconds at most).
pub const TLOG_EXTEND_EVENTS_PER_TRANSACTION: u64 = 1024;
/// Most hashes a Merkle-tree proof may have: an inclusion proof of a tree of up to 2^64
/// leaves has at most 64, a consistency proof at most 2 per level; a longer one is refused
/// before it is run (a hostile server's proof costs the verifier nothing).
pub const TLOG_PROOF_HASHES_MAX: usize = 128;
/// Largest checkpoint note or proof answer a client reads over REST: a note is a few hundred
/// bytes and a proof at most `TLOG_PROOF_HASHES_MAX` base64 hashes (~6 KiB); ten times that
/// leaves room for cosignature lines without letting a server make the client buffer more.
pub const TLOG_ANSWER_BYTES_MAX: usize = 64 * 1024;
/// Applied versions a client keeps waiting for a checkpoint that covers them: checkpoints
/// come every 100 events or 10 s, so more than this many versions in between is a server
/// that stopped signing, and the oldest are dropped rather than grow without bound.
pub const CLIENT_TLOG_PENDING_MAX: usize = 1024;
/// Largest answer `serve` reads from a witness: a few cosignature lines of ~120 bytes.
pub const WITNESS_ANSWER_BYTES_MAX: usize = 16 * 1024;
