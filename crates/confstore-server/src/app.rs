//! The application state: configuration, keys, metrics and the current mode — live (the
//! database is open) or the read-only fallback (serving a verified LKG file) — and the
//! switch from the second to the first when the database comes back.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use confstore_core::auth::{Role, TokenRecord};
use confstore_core::{SigningKey, VerifyingKey};
use confstore_lkg::LkgContent;
use confstore_log::{DbOptions, LogError, LogReader, Store, SystemClock};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::metrics::Metrics;
use crate::model::ReadModel;

/// The keys the server needs (docs/design.md §7), loaded by the binary.
pub struct Keys {
    /// Ed25519 key signing events and snapshots.
    pub signing: SigningKey,
    /// HMAC key of the LKG file.
    pub lkg: Zeroizing<[u8; 32]>,
    /// AES-256 master key for secrets, and its version.
    pub master: Zeroizing<[u8; 32]>,
    /// Version of `master`.
    pub master_version: u32,
    /// The previous master key during a rotation (secrets not yet rewrapped).
    pub previous_master: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("signing_key_id", &self.signing.verifying_key().key_id().to_hex())
            .field("master_version", &self.master_version)
            .finish_non_exhaustive()
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where `config.db` and `config.lkg.json` are.
    pub data_dir: PathBuf,
    /// Database options (synchronous, busy timeout, the reader-age limit of the read pool).
    pub db: DbOptions,
    /// Least time between two rewrites of the LKG file under continuous writes.
    pub lkg_interval: Duration,
    /// How often the fallback retries opening the database.
    pub recover_interval: Duration,
    /// Where to keep a copy of the signed head (rewritten with the LKG file), e.g. beside a
    /// Litestream replica, for `confstore restore-check --head`.
    pub head_file: Option<PathBuf>,
    /// Over how long one token's repeated refusals are summed into one
    /// `access_denied_summary` event (ADR 0013).
    pub denial_window: Duration,
    /// Witnesses each published checkpoint is submitted to (crate::witnesses).
    pub witnesses: Vec<confstore_core::tlog::WitnessEndpoint>,
}

impl Config {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            db: DbOptions::default(),
            lkg_interval: Duration::from_millis(200),
            recover_interval: Duration::from_secs(2),
            head_file: None,
            denial_window: Duration::from_secs(confstore_core::limits::DENIAL_SUMMARY_WINDOW_SECS_DEFAULT),
            witnesses: Vec::new(),
        }
    }

    /// `config.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("config.db")
    }

    /// `config.lkg.json`.
    pub fn lkg_path(&self) -> PathBuf {
        self.data_dir.join(confstore_lkg::FILE_NAME)
    }

    /// The LKG high-water mark: the highest seq ever written to the LKG file, written
    /// before the file itself, so an older copy put back is noticed.
    pub fn hwm_path(&self) -> PathBuf {
        self.data_dir.join(confstore_lkg::HWM_FILE_NAME)
    }
}

/// Read connections, reused across requests (a connection serves one request at a time).
#[derive(Debug)]
pub struct ReaderPool {
    path: PathBuf,
    opts: DbOptions,
    idle: Mutex<Vec<LogReader>>,
}

impl ReaderPool {
    fn new(path: PathBuf, opts: DbOptions) -> Self {
        Self { path, opts, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `f` with a reader (blocking: call from `spawn_blocking`).
    pub fn with<T>(&self, f: impl FnOnce(&LogReader) -> Result<T, LogError>) -> Result<T, LogError> {
        let pooled = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let reader = match pooled {
            Some(r) => r,
            None => {
                let r = LogReader::open_with(&self.path, &self.opts)?;
                // These connections write only projections rebuilt from the log whenever
                // their checkpoint is lost (the Merkle tree here; the search index in its own
                // file, attached with NORMAL too: confstore_search::attach): their commits
                // need not wait for an fsync. In WAL mode NORMAL still keeps every commit
                // atomic and ordered, and the writer's own FULL commits (on another
                // connection) stay durable.
                r.connection()
                    .pragma_update(None, "synchronous", "NORMAL")
                    .map_err(LogError::sqlite("setting synchronous on a read connection"))?;
                r
            }
        };
        let out = f(&reader);
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < confstore_core::limits::READER_POOL_IDLE_MAX {
            idle.push(reader);
        }
        out
    }
}

/// The database is open.
#[derive(Debug)]
pub struct LiveMode {
    /// The store (appends).
    pub store: Arc<Store>,
    /// The thread the API's writes are committed on (docs/adr/0036).
    pub appender: crate::appender::Appender,
    /// The read model at the head.
    pub model: Arc<ReadModel>,
    /// Read connections for history, replays and search.
    pub readers: ReaderPool,
    /// Serialises search-index catch-ups within this process.
    pub search_lock: Mutex<()>,
}

/// The database could not be opened: reads come from the LKG file.
#[derive(Debug)]
pub struct FallbackMode {
    /// Why the database is not used (shown in health and in 503 answers).
    pub why: String,
    /// The verified LKG content, or why the file was refused.
    pub lkg: Result<LkgContent, String>,
    /// Set when the LKG is older than the high-water mark (served, flagged).
    pub stale: Option<String>,
    /// Tokens from the LKG file.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Snapshots from the LKG, signed at load time: service -> (json, jws).
    pub snapshots: HashMap<String, (Value, String)>,
}

/// Live or fallback.
#[derive(Debug)]
pub enum Mode {
    /// Database open.
    Live(LiveMode),
    /// Read-only from the LKG.
    Fallback(FallbackMode),
}

impl Mode {
    /// `read_write` or `read_only_fallback` (as in health and metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Live(_) => "read_write",
            Mode::Fallback(_) => "read_only_fallback",
        }
    }
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct App(Arc<AppInner>);

/// See [`App`].
#[derive(Debug)]
pub struct AppInner {
    /// Settings.
    pub config: Config,
    /// Keys.
    pub keys: Keys,
    /// Metrics.
    pub metrics: Metrics,
    /// Refusals counted for their summary events.
    pub denials: crate::denials::Denials,
    mode: RwLock<Arc<Mode>>,
    /// When the server started.
    pub started: Instant,
    /// How far the on-disk projections are.
    pub projections: Projections,
    /// Set to true when the server begins to shut down: long-lived responses (the
    /// head-events stream) end on it, so the graceful shutdown is not held open by them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The last append that failed in the store, until one commits again (readiness).
    pub appends: AppendHealth,
    /// Where services find the MQTT stream (`GET /api/v1/stream`), once `serve` knows.
    pub stream: std::sync::OnceLock<StreamAdvert>,
    /// The latest signed Merkle-tree checkpoint (checkpoints.rs).
    pub checkpoints: crate::checkpoints::Checkpoints,
    /// What each client instance reports it applied (fleet.rs).
    pub fleet: crate::fleet::Fleet,
}

/// What `GET /api/v1/stream` tells clients about the MQTT stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StreamAdvert {
    /// The broker URL services subscribe at (`mqtt://HOST:PORT` or `mqtts://…`), or null
    /// when the MQTT stream is off.
    pub mqtt_url: Option<String>,
    /// Whether it is `serve`'s embedded broker.
    pub embedded: bool,
    /// How a client logs in: `token` (its confstore token as the MQTT password, the embedded
    /// broker) or `broker` (credentials the broker's operator gave it).
    pub login: String,
}

/// An append that failed in the store (not a changeset the store refused as invalid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendFailure {
    /// When (RFC 3339).
    pub at: String,
    /// The store's error.
    pub error: String,
}

/// Whether appends are failing now. A database can open and serve reads while every append
/// fails (a full disk, an I/O error on the WAL), so readiness cannot tell from the mode
/// alone: the appends themselves say so, and the next one that commits clears it.
#[derive(Debug, Default)]
pub struct AppendHealth(Mutex<Option<AppendFailure>>);

impl AppendHealth {
    /// The last failure, while no append has committed since.
    pub fn failing(&self) -> Option<AppendFailure> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, failure: Option<AppendFailure>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }
}

/// The last seq each on-disk projection holds (set by the projector).
#[derive(Debug, Default)]
pub struct Projections {
    /// The search index.
    pub search_seq: std::sync::atomic::AtomicU64,
    /// The LKG file.
    pub lkg_seq: std::sync::atomic::AtomicU64,
    /// Whether the MQTT publisher runs.
    pub mqtt_enabled: std::sync::atomic::AtomicBool,
    /// Whether it is connected to its broker.
    pub mqtt_connected: std::sync::atomic::AtomicBool,
    /// Seq through which the broker acknowledged everything (the publisher's checkpoint).
    pub mqtt_seq: std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    /// Opens the database, or falls back to the LKG file if it cannot be opened or read.
    /// Blocking (opening verifies the events after the last checkpoint).
    pub fn open(config: Config, keys: Keys) -> App {
        let metrics = Metrics::new();
        let mode = match open_live(&config, &keys, &metrics) {
            Ok(live) => Mode::Live(live),
            Err(why) => {
                metrics.fallback(true);
                if matches!(why, OpenError::Rewound { .. }) {
                    // Once, at start: the recovery attempts that follow log at debug level.
                    tracing::error!(alert = "rewound_database", why = %why, "the database is behind a head seen before");
                }
                let fb = open_fallback(&config, &keys, why.to_string(), &metrics);
                tracing::warn!(why = %fb.why, lkg = ?fb.lkg.as_ref().map(|c| c.seq), "serving read-only from the LKG file");
                Mode::Fallback(fb)
            }
        };
        let denials = crate::denials::Denials::new(config.denial_window);
        App(Arc::new(AppInner {
            config,
            keys,
            metrics,
            denials,
            mode: RwLock::new(Arc::new(mode)),
            started: Instant::now(),
            projections: Projections::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            appends: AppendHealth::default(),
            stream: std::sync::OnceLock::new(),
            checkpoints: crate::checkpoints::Checkpoints::default(),
            fleet: crate::fleet::Fleet::new(crate::fleet::now_ms()),
        }))
    }

    /// Records how an append ended, for readiness and `confstore_append_failing`: a failure
    /// of the store is kept until an append commits; a changeset the store refused (invalid,
    /// a conflict) says nothing about the store and changes nothing here.
    pub fn note_append<T>(&self, result: &Result<T, LogError>) {
        match result {
            Ok(_) => {
                self.appends.set(None);
                self.metrics.append_failing(false);
            }
            Err(LogError::Rejected(_)) => {}
            Err(e) => {
                let at = jiff::Timestamp::now().to_string();
                tracing::error!(error = %e, "an append failed; readiness reports writes failing until one commits");
                self.appends.set(Some(AppendFailure { at, error: e.to_string() }));
                self.metrics.append_failing(true);
            }
        }
    }

    /// The mode's name for logs: `live` or `fallback`.
    pub fn mode_name(&self) -> &'static str {
        self.mode().name()
    }

    /// The store's id (hex): the database's, or in the fallback the LKG file's; `None` when
    /// neither is known (no usable LKG file).
    pub fn store_id_hex(&self) -> Option<String> {
        match &*self.mode() {
            Mode::Live(l) => Some(l.model.read(|m| m.store_id.to_hex())),
            Mode::Fallback(f) => f.lkg.as_ref().ok().map(|c| c.store_id.clone()),
        }
    }

    /// Tells clients where the live stream is (`GET /api/v1/stream`); set once, before
    /// serving. Returns `false` if it was set already.
    pub fn advertise_stream(&self, advert: StreamAdvert) -> bool {
        self.stream.set(advert).is_ok()
    }

    /// The store, when the server is live and no token was ever issued in it and it takes
    /// writes: `serve` issues the first admin token into it (nobody could call the API
    /// otherwise).
    pub fn store_without_tokens(&self) -> Option<Arc<Store>> {
        let Mode::Live(live) = &*self.mode() else { return None };
        let empty = live.model.read(|m| m.state.tokens.is_empty()) && live.store.refusal().is_none();
        empty.then(|| Arc::clone(&live.store))
    }

    /// The current mode.
    pub fn mode(&self) -> Arc<Mode> {
        Arc::clone(&self.0.mode.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// In the fallback: tries the database again; on success switches to live. Returns
    /// whether the server is live afterwards. Blocking.
    pub fn try_recover(&self) -> bool {
        if matches!(*self.mode(), Mode::Live(_)) {
            return true;
        }
        match open_live(&self.config, &self.keys, &self.metrics) {
            Ok(live) => {
                *self.0.mode.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Mode::Live(live));
                self.metrics.fallback(false);
                tracing::info!("the database is readable again: serving reads and writes from it");
                true
            }
            Err(why) => {
                tracing::debug!(%why, "the database is still unavailable");
                false
            }
        }
    }

    /// Drops the store (final checkpoint) by leaving live mode; for shutdown.
    pub fn close(&self) {
        let mut mode = self.0.mode.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *mode = Arc::new(Mode::Fallback(FallbackMode {
            why: "the server is shutting down".into(),
            lkg: Err("the server is shutting down".into()),
            stale: None,
            tokens: BTreeMap::new(),
            snapshots: HashMap::new(),
        }));
    }
}

/// Why the database cannot be served live; [`App::open`] then serves the LKG file read-only
/// and [`App::try_recover`] tries again. Each message names the database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store did not open (a missing or foreign file, SQLite, the schema).
    #[error("cannot open the database {}: {error}", path.display())]
    Open {
        /// The database path.
        path: PathBuf,
        /// The store's error (in the message, not chained, so it prints once).
        error: LogError,
    },
    /// It opened, but a read connection could not read its head.
    #[error("cannot read the database {}: {error}", path.display())]
    Read {
        /// The database path.
        path: PathBuf,
        /// The reader's error.
        error: LogError,
    },
    /// The thread that commits the API's writes could not be started.
    #[error("cannot start the append thread: {0}")]
    Thread(std::io::Error),
    /// Comparing its head with the heads recorded outside it failed to read it.
    #[error("cannot read the database head: {0}")]
    Head(LogError),
    /// It is behind, forked from, of another store than, or of an older generation than a
    /// head this data directory recorded before (ADR 0017): a rewound database, never
    /// opened read-write. `confstore generation start` is the deliberate way forward.
    #[error(
        "refusing to write to {}: {}. If this copy is what you mean to continue from (a restore to a point in \
         time), start a new generation: confstore generation start --reason TEXT (docs/operations.md, Generations)",
        path.display(),
        problems.join("; ")
    )]
    Rewound {
        /// The database path.
        path: PathBuf,
        /// Each recorded head it falls short of, described for people (source, seq, what is
        /// missing).
        problems: Vec<String>,
    },
}

fn open_live(config: &Config, keys: &Keys, metrics: &Metrics) -> Result<LiveMode, OpenError> {
    let path = config.db_path();
    let key = SigningKey::from_seed(&keys.signing.seed());
    let store = Store::open(&path, Some(key), Arc::new(SystemClock), &config.db)
        .map_err(|error| OpenError::Open { path: path.clone(), error })?;
    // Open verified the tail; also make sure the read side works (a reader, the head).
    let readers = ReaderPool::new(path.clone(), config.db.clone());
    readers.with(LogReader::head).map_err(|error| OpenError::Read { path: path.clone(), error })?;
    check_known_heads(config, keys, &readers)?;
    if let Some(why) = store.refusal() {
        metrics.signature_failure("log");
        tracing::error!(%why, "the store refuses writes; reads are served from the last verified state");
    }
    let model = ReadModel::new(store.store_id(), store.generation(), metrics.clone());
    store.set_commit_listener(model.listener());
    let appender = crate::appender::Appender::start().map_err(OpenError::Thread)?;
    Ok(LiveMode { store: Arc::new(store), appender, model, readers, search_lock: Mutex::new(()) })
}

/// Refuses to open read-write a database that is behind (or forked from, or older in
/// generation than) a head this data directory recorded before: the LKG file and its
/// high-water mark, the publisher's checkpoint, the signed head file (ADR 0017). Serving it
/// would hand out a rewound history as if it were current. The caller falls back to the
/// LKG file read-only; `confstore generation start` is the deliberate way forward.
fn check_known_heads(config: &Config, keys: &Keys, readers: &ReaderPool) -> Result<(), OpenError> {
    let (db, store_keys) = readers
        .with(|r| {
            let head = r.head()?;
            // Plus this server's own key: the head file may be signed by a key rotated in
            // after the point an older copy ends.
            let store_keys: Vec<VerifyingKey> =
                r.keys()?.entries().iter().map(|e| e.key).chain([keys.signing.verifying_key()]).collect();
            let db =
                confstore_lkg::heads::DbHead { store_id: head.store_id, generation: head.generation, seq: head.seq };
            Ok((db, store_keys))
        })
        .map_err(OpenError::Head)?;
    let files = confstore_lkg::heads::LocalFiles {
        data_dir: &config.data_dir,
        head_file: config.head_file.as_deref(),
        lkg_key: &keys.lkg,
        store_keys: &store_keys,
    };
    let (known, warnings) = confstore_lkg::heads::local(&files);
    for w in &warnings {
        tracing::warn!(warning = %w, "a record of the head is not usable");
    }
    let mut problems = Vec::new();
    for k in &known {
        let verdict = readers
            .with(|r| {
                confstore_lkg::heads::standing(&db, k, |seq| {
                    Ok(confstore_log::rows::event_at(r.connection(), seq)?.map(|e| e.hash.to_hex()))
                })
            })
            .map_err(OpenError::Head)?;
        if let Some(text) = verdict.describe(k, &db) {
            problems.push(text);
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(OpenError::Rewound { path: config.db_path(), problems })
}

fn open_fallback(config: &Config, keys: &Keys, why: String, metrics: &Metrics) -> FallbackMode {
    let mut fb =
        FallbackMode { why, lkg: Err(String::new()), stale: None, tokens: BTreeMap::new(), snapshots: HashMap::new() };
    let content = match confstore_lkg::load(&config.lkg_path(), &keys.lkg, None) {
        Ok(c) => c,
        Err(e) => {
            if matches!(e, confstore_lkg::LkgError::BadSignature | confstore_lkg::LkgError::Malformed(_)) {
                metrics.signature_failure("lkg");
            }
            tracing::error!(error = %e, "the LKG file is not usable either: refusing to serve configuration");
            fb.lkg = Err(format!("{e}; it is not served"));
            return fb;
        }
    };
    if let Some(hwm) = confstore_lkg::read_high_water_mark(&config.hwm_path())
        && content.seq < hwm
    {
        let text = format!(
            "the LKG file holds seq {} but seq {hwm} was written to it before: this is an older copy; {} newer \
             event(s) are missing from what is served",
            content.seq,
            hwm - content.seq
        );
        tracing::warn!(stale = %text, "LKG file is older than its high-water mark");
        fb.stale = Some(text);
    }
    for (id, t) in &content.tokens {
        let (Some(role), Some(hash)) = (
            t.get("role").and_then(Value::as_str).and_then(Role::parse),
            t.get("hash")
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok()),
        ) else {
            continue;
        };
        fb.tokens.insert(
            id.clone(),
            TokenRecord {
                name: t.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
                role,
                service: t.get("service").and_then(Value::as_str).map(str::to_owned),
                hash,
                issued_seq: 0,
                revoked_seq: None,
            },
        );
    }
    for (service, doc) in &content.services {
        let jws = confstore_snapshots::document_to_jws(doc, &keys.signing).to_string();
        fb.snapshots.insert(service.clone(), (doc.clone(), jws));
    }
    fb.lkg = Ok(content);
    fb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            signing: SigningKey::from_seed(&[7; 32]),
            lkg: Zeroizing::new([8; 32]),
            master: Zeroizing::new([9; 32]),
            master_version: 1,
            previous_master: None,
        }
    }

    /// A data directory holding a new store (event 1 only).
    fn data_dir() -> (tempfile::TempDir, Config, String) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path().to_owned());
        let store = Store::create(
            &config.db_path(),
            SigningKey::from_seed(&[7; 32]),
            confstore_core::StoreId([3; 16]),
            "test",
            Arc::new(SystemClock),
            &config.db,
        )
        .unwrap();
        let store_id = store.store_id().to_hex();
        drop(store);
        (dir, config, store_id)
    }

    #[test]
    fn a_database_behind_a_recorded_head_opens_to_rewound() {
        let (_dir, config, store_id) = data_dir();
        assert!(open_live(&config, &keys(), &Metrics::new()).is_ok(), "nothing recorded yet");
        // The publisher once had the broker acknowledge event 9 of this store.
        let checkpoint =
            confstore_lkg::publisher_checkpoint::Checkpoint { store_id, generation: 1, seq: 9, hash: "ab".repeat(32) };
        confstore_lkg::publisher_checkpoint::write(
            &config.data_dir.join(confstore_lkg::publisher_checkpoint::FILE_NAME),
            &checkpoint,
        )
        .unwrap();
        match open_live(&config, &keys(), &Metrics::new()) {
            Err(OpenError::Rewound { path, problems }) => {
                assert_eq!(path, config.db_path());
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(problems[0].contains("events 2..=9 are missing"), "{problems:?}");
            }
            other => panic!("expected Rewound, got {:?}", other.map(|_| "live")),
        }
        let text = open_live(&config, &keys(), &Metrics::new()).map(|_| ()).unwrap_err().to_string();
        assert!(text.starts_with("refusing to write to "), "the message is unchanged: {text}");
        assert!(text.contains("confstore generation start --reason TEXT"), "{text}");
    }

    #[test]
    fn a_missing_database_opens_to_open_with_the_store_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path().join("absent"));
        match open_live(&config, &keys(), &Metrics::new()) {
            Err(e @ OpenError::Open { .. }) => {
                assert!(e.to_string().starts_with("cannot open the database "), "{e}");
            }
            other => panic!("expected Open, got {:?}", other.map(|_| "live")),
        }
    }
}
