//! The command line, declared with clap. Every command reads `--data-dir` and `--env-file`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// confstore: an event-sourced configuration store with a signed, hash-chained log.
#[derive(Debug, Parser)]
#[command(name = "confstore", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding config.db, config.lkg.json and the other files of the store.
    #[arg(long, global = true, env = "CONFSTORE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The env file keys are read from (after the environment) and `init` writes to.
    #[arg(long, global = true, env = "CONFSTORE_ENV_FILE", default_value = "./.env")]
    pub env_file: PathBuf,
    /// Durability of writes: `full` fsyncs every commit (survives power loss); `normal` only
    /// at checkpoints, so a power cut may lose up to ~1000 pages (about 4 MB) of the newest
    /// commits. A process crash loses nothing either way.
    #[arg(long, global = true, env = "CONFSTORE_SYNCHRONOUS", value_enum, default_value_t = SyncMode::Full)]
    pub synchronous: SyncMode,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// fsync at every commit (default).
    Full,
    /// fsync at checkpoints only; see the loss window above.
    Normal,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store (store id, genesis, first signing key) and write missing keys to the env file.
    Init(InitArgs),
    /// Register services, or list them.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Set one or more keys of a service in one changeset: `set SVC KEY VALUE` or `set SVC K=V K2=V2`.
    Set(SetArgs),
    /// Remove one or more keys of a service in one changeset.
    Unset(UnsetArgs),
    /// Append changesets read as JSON Lines from a file or `-` (stdin); prints one result per line.
    Apply(ApplyArgs),
    /// Import a service's `.env` file as one changeset. Keys whose names contain KEY,
    /// SECRET, PASSWORD or TOKEN become secrets (unless named with --plain); values are typed
    /// by the service's schema when it has one, else kept as strings.
    ImportEnv(ImportEnvArgs),
    /// Show configuration now, at an epoch, or at a time (answered by replaying the log).
    Get(GetArgs),
    /// Show what a service consumes: its resolved configuration (service -> global -> schema
    /// default), with where each value comes from and the epoch it reflects.
    Snapshot(SnapshotArgs),
    /// The last-known-good cache (config.lkg.json): verify it, or write it now.
    #[command(subcommand)]
    Lkg(LkgCommand),
    /// Find keys by any part of their service, name, value or schema description (secrets
    /// are never indexed).
    Search(SearchArgs),
    /// Drop every projection (search index, LKG cache) and rebuild it from the log.
    Rebuild(JsonFlag),
    /// Show the events that changed configuration.
    History(HistoryArgs),
    /// Show what changed between two points: epochs (`3`) or RFC 3339 times.
    Diff(DiffArgs),
    /// Append one changeset that makes configuration equal to an earlier epoch again.
    Rollback(RollbackArgs),
    /// Write a new database holding the verified log up to an epoch or a time, for
    /// forensics or point-in-time recovery; the live store is only read.
    Replay(ReplayArgs),
    /// After a restore: SQLite's integrity check, the whole chain verified, and the head
    /// compared with the last signed head published (a file, or the broker's retained
    /// `system/config-head`); a database behind it is reported with the missing seq range.
    RestoreCheck(RestoreCheckArgs),
    /// Generations: `start` continues deliberately from a rewound history (a restore to a
    /// point in time) that the server and the write commands otherwise refuse.
    #[command(subcommand)]
    Generation(GenerationCommand),
    /// Manage keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Set or show a service's JSON Schema (2020-12).
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Secrets: reveal one (the reveal is recorded in the log).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Show the head of the log: seq, epoch, hash, store id.
    Head(JsonFlag),
    /// Write the whole log as JSON Lines (confstore-export/1), with the latest signed
    /// checkpoint (<data-dir>/tree.checkpoint) in the header when it matches the events.
    Export(ExportArgs),
    /// Check every link, signature, seq and epoch of the live database or of an export file.
    Verify(VerifyArgs),
    /// The log's Merkle tree (docs/format.md §19): inclusion and consistency proofs, and
    /// checking a signed checkpoint against this log.
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Which instance runs which version: the fleet view of a running `serve`
    /// (`GET /api/v1/fleet`; docs/format.md §20).
    Fleet(FleetArgs),
    /// Staged rollouts through a running `serve` (docs/format.md §21): give a change to a
    /// cohort of a service's instances first, then promote it to all or abort it.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Run the server: REST API under /api/v1 on 127.0.0.1:8080. On a fresh machine it
    /// creates the keys and the store first (as `init` does) and writes a first admin token
    /// to <data-dir>/admin.token.
    Serve(ServeArgs),
    /// API bearer tokens: create (shown once), list, revoke. Issuing and revoking are events.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Health and metrics are open: keep it on loopback unless a
    /// proxy guards them (docs/operations.md).
    #[arg(long, env = "CONFSTORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Log format on stderr: text (compact, for a person), json (one object per line, for
    /// a collector), or auto: text on a terminal, json otherwise.
    #[arg(long, env = "CONFSTORE_LOG_FORMAT", default_value = "auto", value_parser = ["auto", "json", "text"])]
    pub log_format: String,
    /// Least milliseconds between two rewrites of the LKG file under continuous writes.
    #[arg(long, default_value_t = 200)]
    pub lkg_interval_ms: u64,
    /// Seconds between attempts to reopen the database while in the read-only fallback.
    #[arg(long, default_value_t = 2)]
    pub recover_interval_s: u64,
    /// Publish the live stream to this external broker (mqtt://HOST:PORT or
    /// mqtts://HOST:PORT) instead of starting the embedded one.
    #[arg(long, env = "CONFSTORE_MQTT_URL", conflicts_with_all = ["no_mqtt", "mqtt_listen"])]
    pub mqtt_url: Option<String>,
    /// Credentials and CA for the external broker.
    #[command(flatten)]
    pub mqtt_access: MqttAccessArgs,
    /// MQTT client id of the publisher (fixed, so the broker keeps its session); default
    /// confstore-<first 16 hex digits of the store id>.
    #[arg(long, env = "CONFSTORE_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Address of the embedded broker, started when no --mqtt-url is given. Default
    /// 127.0.0.1:1883, or a free loopback port when that one is taken (logged, and told to
    /// clients by GET /api/v1/stream); an address given here must be free.
    #[arg(long, env = "CONFSTORE_MQTT_LISTEN")]
    pub mqtt_listen: Option<std::net::SocketAddr>,
    /// No live stream: neither the embedded broker nor a publisher.
    #[arg(long, env = "CONFSTORE_NO_MQTT")]
    pub no_mqtt: bool,
    /// Keep a copy of the signed head in this file (rewritten with the LKG file), e.g. on
    /// the volume of the Litestream replica, for `confstore restore-check --head FILE`.
    #[arg(long, env = "CONFSTORE_HEAD_FILE")]
    pub head_file: Option<std::path::PathBuf>,
    /// Submit every signed checkpoint to this witness (c2sp.org/tlog-witness) and publish
    /// its cosignature with the checkpoint: URL=VERIFIER_KEY, the witness's base URL and its
    /// cosignature/v1 verifier key (name+id+base64). Repeat for several.
    #[arg(long = "witness", value_name = "URL=VKEY")]
    pub witnesses: Vec<String>,
    /// Abort a database read that runs longer than this many seconds (the reader-age guard,
    /// ADR 0016): the WAL cannot be checkpointed past an open reader.
    #[arg(
        long,
        env = "CONFSTORE_MAX_READ_SECS",
        default_value_t = confstore_core::limits::READ_AGE_SECS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(1..=confstore_core::limits::READ_AGE_SECS_MAX)
    )]
    pub max_read_secs: u64,
    /// Most open HTTP connections; at the cap an idle one (a half-sent request first) is
    /// closed for the newcomer, or the newcomer gets 503 when all are busy.
    #[arg(long, env = "CONFSTORE_HTTP_MAX_CONNECTIONS", default_value_t = confstore_core::limits::HTTP_CONNECTIONS_MAX,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub http_max_connections: usize,
    /// Seconds a request head may take to arrive (from its first byte, or the connection's
    /// opening).
    #[arg(long, env = "CONFSTORE_HTTP_HEADER_TIMEOUT_S", default_value_t = confstore_core::limits::HTTP_HEADER_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub http_header_timeout_s: u64,
    /// Seconds a keep-alive HTTP connection may stay idle between requests.
    #[arg(long, env = "CONFSTORE_HTTP_IDLE_TIMEOUT_S", default_value_t = confstore_core::limits::HTTP_IDLE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_idle_timeout_s: u64,
    /// Sum each token's refused requests after its first per route into one audit event
    /// per this many seconds (ADR 0013). Shorter windows are for tests.
    #[arg(
        long,
        env = "CONFSTORE_DENIAL_SUMMARY_SECS",
        default_value_t = confstore_core::limits::DENIAL_SUMMARY_WINDOW_SECS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        hide = true
    )]
    pub denial_summary_secs: u64,
}

/// `token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it once (only its SHA-256 is stored).
    Create {
        /// One of config.read, config.write, secrets.reveal, audit.read, admin.
        #[arg(long)]
        role: String,
        /// Limit the token to one service.
        #[arg(long)]
        service: Option<String>,
        /// A name for people (recorded as the actor of the token's writes).
        #[arg(long)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (ids, names, roles; never the tokens).
    List(JsonFlag),
    /// Revoke a token by id; it stops working at once (a running server notices within a second).
    Revoke {
        /// Token id (the 16 hex digits after `cst_`).
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// One service's instances (default: every service, counted by state).
    pub service: Option<String>,
    /// The server (a token with `config.read`).
    #[command(flatten)]
    pub remote: Remote,
}

/// How to reach a running `serve` (the commands whose answer lives in its memory).
#[derive(Debug, Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "CONFSTORE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A token with the role the command needs (default: `<data-dir>/admin.token`, written
    /// by the first `serve`).
    #[arg(long, env = "CONFSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Stage changes of SERVICE for a cohort of its instances; other writes to SERVICE are
    /// refused until the rollout is promoted or aborted.
    Start(RolloutStartArgs),
    /// The active rollout of SERVICE, with what each cohort instance reports, and the last one that ended.
    Status {
        /// The service.
        service: String,
        /// The server.
        #[command(flatten)]
        remote: Remote,
    },
    /// Give the active rollout of SERVICE to every instance (its changes become the next version).
    Promote(RolloutDecideArgs),
    /// Withdraw the active rollout of SERVICE; its cohort returns to the current version.
    Abort(RolloutDecideArgs),
}

/// `rollout start`.
#[derive(Debug, Args)]
pub struct RolloutStartArgs {
    /// The service.
    pub service: String,
    /// `KEY=VALUE` to stage (VALUE is JSON, as for `set`); repeat for more.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// `KEY=VALUE` to stage as a secret (sealed by the server before it reaches the log).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    pub secrets: Vec<String>,
    /// A key to remove; repeat for more.
    #[arg(long = "unset", value_name = "KEY")]
    pub unset: Vec<String>,
    /// The cohort: these instance ids (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', conflicts_with = "percent", required_unless_present = "percent")]
    pub instances: Vec<String>,
    /// The cohort: this share of the instances, in percent (0.01 to 100), chosen by a hash
    /// of each instance id.
    #[arg(long)]
    pub percent: Option<f64>,
    /// How long the cohort runs it before an automatic promotion (`90s`, `10m`, `2h`).
    #[arg(long, default_value = "10m")]
    pub bake: String,
    /// Decide by hand only: no automatic promotion or abort.
    #[arg(long)]
    pub manual: bool,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
    /// The server.
    #[command(flatten)]
    pub remote: Remote,
}

/// `rollout promote|abort`.
#[derive(Debug, Args)]
pub struct RolloutDecideArgs {
    /// The service.
    pub service: String,
    /// The rollout meant (its id; refused if another is active). Default: the active one.
    #[arg(long)]
    pub rollout: Option<u64>,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
    /// The server.
    #[command(flatten)]
    pub remote: Remote,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Who and why, for every write.
#[derive(Debug, Args)]
pub struct WriteMeta {
    /// Why the change is made; recorded in the signed event.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who makes the change (default: $USER, else "cli").
    #[arg(long)]
    pub actor: Option<String>,
    /// Request id to record (default: a random one).
    #[arg(long)]
    pub request_id: Option<String>,
    /// Only commit if the store is still at this epoch (compare-and-set).
    #[arg(long, value_name = "EPOCH")]
    pub expect_epoch: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Register one or more services (one changeset).
    Add {
        /// Service names: lowercase letters, digits, '_' and '-'.
        #[arg(required = true)]
        names: Vec<String>,
        /// Who and why.
        #[command(flatten)]
        meta: WriteMeta,
    },
    /// List registered services.
    List(JsonFlag),
}

/// `set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The service.
    pub service: String,
    /// `KEY VALUE`, or one or more `KEY=VALUE`. VALUE is JSON (`'"text"'`, `42`, `true`, `{...}`).
    #[arg(required = true, num_args = 1..)]
    pub assignments: Vec<String>,
    /// Take every VALUE as a plain string instead of JSON.
    #[arg(long)]
    pub string: bool,
    /// Store the values as secrets: encrypted with CONFIG_MASTER_KEY_BASE64 before they
    /// reach the log; shown as <secret>; `confstore secret reveal` decrypts (audited).
    #[arg(long)]
    pub secret: bool,
    /// Register the service first if it does not exist yet (in the same changeset).
    #[arg(long)]
    pub create: bool,
    /// Who and why.
    #[command(flatten)]
    pub meta: WriteMeta,
}

/// `unset`.
#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// The service.
    pub service: String,
    /// Keys to remove.
    #[arg(required = true, num_args = 1..)]
    pub keys: Vec<String>,
    /// Who and why.
    #[command(flatten)]
    pub meta: WriteMeta,
}

/// `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// File of JSON Lines, or `-` for stdin.
    pub input: PathBuf,
    /// Default actor for lines that name none (default: $USER, else "cli").
    #[arg(long)]
    pub actor: Option<String>,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The service (all services when omitted).
    pub service: Option<String>,
    /// One key of the service.
    pub key: Option<String>,
    /// State at this epoch.
    #[arg(long, conflicts_with = "at")]
    pub epoch: Option<u64>,
    /// State at this time (RFC 3339, e.g. 2026-11-26T09:30:00Z).
    #[arg(long)]
    pub at: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only events of this service.
    pub service: Option<String>,
    /// Only events of this key (needs SERVICE).
    #[arg(long, requires = "service")]
    pub key: Option<String>,
    /// Show only the newest N matching events.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON Lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write here (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify this export file instead of the live database (needs no database).
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// The trusted Ed25519 public key (base64); default CONFIG_SIGNATURE_PUBLIC_KEY.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Check each signature on its own with strict verification (slower than the default
    /// batches, which do not refuse a small-order R; see docs/adr/0003).
    #[arg(long)]
    pub strict: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// From: an epoch (e.g. `3`) or an RFC 3339 time.
    pub from: String,
    /// To: an epoch or an RFC 3339 time (default: now).
    pub to: Option<String>,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Up to and including this epoch.
    #[arg(long, value_name = "EPOCH", conflicts_with = "at", required_unless_present = "at")]
    pub to_epoch: Option<u64>,
    /// Every changeset made at or before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Directory for the new store (its config.db); must not hold one. Use it with
    /// `--data-dir DIR` and the same keys.
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How to get into an MQTT broker (`serve --mqtt-url`, `restore-check --mqtt-url`,
/// `generation start --mqtt-url`).
#[derive(Debug, Default, Args)]
pub struct MqttAccessArgs {
    /// Username at the broker.
    #[arg(long, env = "CONFSTORE_MQTT_USERNAME", requires = "mqtt_url")]
    pub mqtt_username: Option<String>,
    /// Password at the broker; give it in the environment (CONFSTORE_MQTT_PASSWORD), not on
    /// the command line, where `ps` shows it.
    #[arg(long, env = "CONFSTORE_MQTT_PASSWORD", hide_env_values = true, requires = "mqtt_username")]
    pub mqtt_password: Option<String>,
    /// CA certificates (PEM) to trust for mqtts:// instead of the system's web PKI roots.
    #[arg(long, env = "CONFSTORE_MQTT_CA_FILE", requires = "mqtt_url")]
    pub mqtt_ca_file: Option<std::path::PathBuf>,
}

impl MqttAccessArgs {
    /// Puts the credentials and CA file into `settings`.
    pub fn apply(&self, settings: &mut confstore_server::MqttSettings) {
        if let Some(user) = &self.mqtt_username {
            let password = self.mqtt_password.clone().unwrap_or_default();
            settings.credentials = Some((user.clone(), zeroize::Zeroizing::new(password)));
        }
        settings.ca_file = self.mqtt_ca_file.clone();
    }
}

/// Signed heads to compare a database with, besides the data directory's own records
/// (`restore-check`, `generation start`).
#[derive(Debug, Default, Args)]
pub struct HeadSourceArgs {
    /// A signed head to compare with: the JWS published on `system/config-head`, saved to a
    /// file (e.g. `mosquitto_sub -C 1 -t system/config-head > head.jws`).
    #[arg(long, value_name = "FILE")]
    pub head: Vec<std::path::PathBuf>,
    /// Read the retained signed head from this broker (mqtt://HOST:PORT or mqtts://).
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Credentials and CA for the broker.
    #[command(flatten)]
    pub mqtt_access: MqttAccessArgs,
}

/// `restore-check`.
#[derive(Debug, Args)]
pub struct RestoreCheckArgs {
    /// Signed heads to compare with.
    #[command(flatten)]
    pub heads: HeadSourceArgs,
    /// The trusted Ed25519 public key (base64); default CONFIG_SIGNATURE_PUBLIC_KEY.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The epoch whose configuration is restored.
    #[arg(long, value_name = "EPOCH")]
    pub to_epoch: u64,
    /// Only this service (default: every service).
    #[arg(long)]
    pub service: Option<String>,
    /// Why; required, and recorded in the signed events.
    #[arg(long, required = true)]
    pub reason: String,
    /// Who rolls back (default: $USER, else "cli").
    #[arg(long)]
    pub actor: Option<String>,
    /// Request id to record (default: a random one).
    #[arg(long)]
    pub request_id: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `generation ...`.
#[derive(Debug, Subcommand)]
pub enum GenerationCommand {
    /// Start a new generation from this database, which is behind (or forked from) a head
    /// seen before: appends a signed `generation_started` naming the abandoned head, writes
    /// `<data-dir>/rebuild.info`, and re-bases the LKG file and its high-water mark. Clients
    /// then accept the new generation's lower epochs. Refused when the database is not
    /// behind anything.
    Start(GenerationStartArgs),
}

/// `generation start`.
#[derive(Debug, Args)]
pub struct GenerationStartArgs {
    /// Why this history is continued; required, and recorded in the signed event.
    #[arg(long)]
    pub reason: String,
    /// Who decides (default: $USER, else "cli").
    #[arg(long)]
    pub actor: Option<String>,
    /// Signed heads to compare with, besides the data directory's records.
    #[command(flatten)]
    pub heads: HeadSourceArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rotate a key: `--signing` (a new Ed25519 key in the env file, announced in the log by
    /// an event signed by the old key and countersigned by the new one) or `--lkg` (a new
    /// HMAC key for the LKG cache, which is re-signed).
    Rotate(RotateArgs),
}

/// `keys rotate`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["signing", "lkg", "master"])))]
pub struct RotateArgs {
    /// Rotate the signing key (CONFIG_SIGNATURE_PRIVATE_KEY / _PUBLIC_KEY).
    #[arg(long)]
    pub signing: bool,
    /// Rotate the LKG cache's HMAC key (LKG_HMAC_KEY_BASE64) and re-sign the cache.
    #[arg(long)]
    pub lkg: bool,
    /// Rotate the master key (CONFIG_MASTER_KEY_BASE64): a new key version, every secret
    /// rewrapped in one changeset without printing any plaintext, the old version retired.
    #[arg(long)]
    pub master: bool,
    /// Why; recorded in the signed event.
    #[arg(long, default_value = "signing key rotation")]
    pub reason: String,
    /// Who rotates (default: $USER, else "cli").
    #[arg(long)]
    pub actor: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `schema ...`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Set SERVICE's schema from FILE (JSON Schema 2020-12); refused, listing every
    /// violation, if the current values do not satisfy it.
    Set {
        /// The service.
        service: String,
        /// The schema file (`-` for stdin).
        file: std::path::PathBuf,
        /// Who and why.
        #[command(flatten)]
        meta: WriteMeta,
    },
    /// Show SERVICE's schema and its hash.
    Get {
        /// The service.
        service: String,
        /// Print JSON (schema and hash) instead of the schema alone.
        #[arg(long)]
        json: bool,
    },
}

/// `snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The service.
    pub service: String,
    /// The snapshot at this epoch (default: now).
    #[arg(long)]
    pub epoch: Option<u64>,
    /// Print JSON (the snapshot document) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the signed form services receive: a flattened JWS (EdDSA) over the snapshot,
    /// signed with CONFIG_SIGNATURE_PRIVATE_KEY.
    #[arg(long, conflicts_with = "json")]
    pub jws: bool,
}

/// `proof ...`.
#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// The proof that event SEQ is in the tree of SIZE events (default: every event now),
    /// checked against the root before it is printed.
    Inclusion {
        /// The event.
        #[arg(long)]
        seq: u64,
        /// The tree size (a checkpoint's); default the whole log.
        #[arg(long)]
        size: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The proof that the tree of FROM events is a prefix of the tree of TO (default: every
    /// event now), checked before it is printed.
    Consistency {
        /// The older size.
        #[arg(long)]
        from: u64,
        /// The newer size; default the whole log.
        #[arg(long)]
        to: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a signed checkpoint (a C2SP note; default <data-dir>/tree.checkpoint) with the
    /// public key, and whether this log contains it: its events are a prefix of this log
    /// (ok), or it covers events this log lacks (behind), or another history (forked).
    /// Exits 1 unless ok.
    Checkpoint {
        /// The checkpoint file (`-` for stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The trusted Ed25519 public key (base64); default CONFIG_SIGNATURE_PUBLIC_KEY.
        #[arg(long)]
        public_key: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `lkg ...`.
#[derive(Debug, Subcommand)]
pub enum LkgCommand {
    /// Check the LKG file's HMAC (LKG_HMAC_KEY_BASE64) and how it compares with the log.
    Verify {
        /// The file (default: <data-dir>/config.lkg.json).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the LKG file from the log now (write commands refresh it by themselves).
    Write {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for (case-insensitive; any part of a word).
    pub query: String,
    /// Only keys of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only keys changed after this epoch.
    #[arg(long, value_name = "EPOCH")]
    pub since: Option<u64>,
    /// Most hits shown.
    #[arg(long, default_value_t = confstore_core::limits::SEARCH_HITS_DEFAULT)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `secret ...`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Decrypt and print a secret; appends a secret_revealed audit event first.
    Reveal {
        /// The service.
        service: String,
        /// The key.
        key: String,
        /// Who and why (recorded).
        #[command(flatten)]
        meta: WriteMeta,
    },
}

/// `import-env`.
#[derive(Debug, Args)]
pub struct ImportEnvArgs {
    /// The service.
    pub service: String,
    /// The .env file.
    pub file: PathBuf,
    /// Keys to keep as plain values although their names look secret (repeatable).
    #[arg(long, value_name = "KEY")]
    pub plain: Vec<String>,
    /// Register the service first if it does not exist yet (in the same changeset).
    #[arg(long)]
    pub create: bool,
    /// Who and why.
    #[command(flatten)]
    pub meta: WriteMeta,
}
