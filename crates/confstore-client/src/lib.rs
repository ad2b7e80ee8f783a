//! The library every service links to consume its confstore configuration.
//!
//! # What it guarantees
//!
//! - **Only verified configuration.** Every snapshot — from REST, MQTT or the LKG file — is
//!   a flattened EdDSA JWS checked against the trusted public keys (strict Ed25519), and
//!   must name this service and this store. Replays, copies from other services' topics,
//!   flipped bits and unknown keys are rejected and counted, never applied.
//! - **Never backwards, never twice, in order.** Each snapshot carries its version chain
//!   (`generation`, `changed_epoch`, `prev_epoch`); the client applies a version only if it
//!   is the next one after what it holds (the rule is `confstore_core::stream::judge`,
//!   shared with the server). QoS 1 redeliveries and stale retained messages are dropped.
//! - **No gaps.** If a message skips versions (a lost message, a broker restart), the
//!   missing ones are fetched over REST (`?epoch=N`, walking the chain back, at most 64)
//!   and applied oldest first. If that is impossible the newest version is applied anyway
//!   and a `resync` is counted, so the client always converges.
//! - **Nothing lost with the broker.** Whenever the broker has no session for the client
//!   (first connection, or a broker restarted without persistence, which forgets queued
//!   and retained messages alike), the client asks REST for the latest snapshot (a
//!   `catch_up`, retried with backoff until REST answers), so it converges even if no
//!   further message ever comes. It does the same after a start from the LKG file alone.
//! - **Never silently empty.** `start` fails with [`ClientError::NoVerifiedConfig`], listing
//!   why each source failed, unless some verified configuration is available.
//! - **Cheap reads.** [`Client::config`] is a lock-free `ArcSwap` load and
//!   [`Client::get`] a lookup in a per-version cache: memory only, no allocation (after
//!   the first `get` of a type per version), well under a microsecond.
//!
//! # Start-up order
//!
//! 1. the REST snapshot (`rest_url`), else
//! 2. the retained MQTT message on `system/config/<service>` (`mqtt_url`), waiting up to
//!    `startup_timeout` (default 3 s), else
//! 3. the client's LKG file (`lkg_path`), verified again.
//!
//! The LKG file is read first anyway: if it holds a newer version than REST or MQTT give,
//! the client keeps it and logs a warning. A corrupt or tampered LKG file is an error
//! naming the file when it is the only source, and ignored (warned and counted) when
//! another source succeeded. Live updates then arrive over MQTT: a persistent session
//! (`clean_session = false`, resubscribed on every connection), manual acks sent after
//! each message is judged and persisted, reconnects with backoff (100 ms doubling to 5 s).
//!
//! # Precedence and environment naming
//!
//! env → store → schema defaults. The variable `<SERVICE>__<KEY>` overrides the store's
//! value of `KEY`: service and key uppercased, every character outside `[A-Za-z0-9]`
//! replaced by `_`, joined by a double underscore (service `web-api`, key `max.conns` →
//! `WEB_API__MAX_CONNS`, see [`env_var_name`]). The value is JSON if it parses as JSON
//! (`8080`, `true`, `["a"]`), else a string. A variable for a key the store does not have
//! adds the key (its lowercased suffix). The environment is read once at start and applied
//! to every version; [`Config::source`] tells `Env`, `Service`, `Global` or `Default`.
//!
//! # The LKG file
//!
//! After every applied version the client writes its LKG file (its persisted high-water
//! mark) atomically — temporary file in the same directory, fsync, rename, fsync of the
//! directory — with mode 0600. Format `confstore-client-lkg/1`, one JSON object:
//!
//! ```json
//! {"format":"confstore-client-lkg/1","service":"web","store_id":"…","jws":{"protected":"…","payload":"…","signature":"…"}}
//! ```
//!
//! `jws` is the snapshot exactly as received. There is no HMAC: the store's Ed25519
//! signature covers the content, and the file is verified with the trusted keys on load.
//! Without [`ClientBuilder::store_id`], the store of the first verified snapshot is pinned
//! and kept here; from then on snapshots of any other store are rejected (after a store
//! is re-initialised, delete the file or set the new store id).
//!
//! # Transparency-log checks
//!
//! With a REST URL (unless [`ClientBuilder::tlog_checks`]`(false)` or
//! `CONFSTORE_TLOG_CHECKS=0`), a background task checks the store's signed Merkle-tree
//! checkpoints (docs/format.md §17.6, §19): the checkpoints it sees (retained on
//! `system/config-checkpoint`, or `GET /api/v1/checkpoint`) must only grow — each new one
//! consistent with the one held, shown by `GET /api/v1/proof/consistency` — and the event of
//! every applied version (`changed_seq`) must be in the accepted one
//! (`GET /api/v1/proof/inclusion`). It never delays or undoes applying a verified snapshot;
//! what it refuses is counted and logged (a fork at error level), and the accepted
//! checkpoint is [`Client::checkpoint`] and is kept in the LKG file.
//!
//! # Counters
//!
//! [`Client::stats`]: `applied` versions, `rejected` per kind (`signature`, `malformed`,
//! `wrong_store`, `wrong_service`, `wrong_topic`, `stale`, `duplicate`, `old_generation`,
//! `forked`), `gaps_filled`, `resyncs`, `reconnects`, `catch_ups`, `lkg_rejected`,
//! `lkg_write_errors`; the transparency-log checks' `checkpoints_accepted`,
//! `checkpoints_refused` per kind (`signature`, `stale`, `forked`, `unproven`),
//! `inclusions_verified`, `inclusions_failed`, `tlog_fetch_errors`.
//! Duplicates and stale messages are normal with QoS 1 and logged at debug only.
//!
//! # Environment of [`ClientBuilder::from_env`]
//!
//! `CONFSTORE_SERVICE` (required), `CONFIG_SIGNATURE_PUBLIC_KEY` (required; base64, several
//! separated by commas during a key rotation), `CONFSTORE_URL` (REST base URL),
//! `CONFSTORE_TOKEN` (bearer token), `CONFSTORE_MQTT_URL` (without it the client asks the
//! server, `GET /api/v1/stream`), `CONFSTORE_LKG_PATH`; optional `CONFSTORE_STORE_ID`,
//! `CONFSTORE_MQTT_CLIENT_ID`, `CONFSTORE_MQTT_USERNAME`, `CONFSTORE_MQTT_PASSWORD` (without
//! them the client logs in with the service name and its token, as the embedded broker
//! expects), `CONFSTORE_MQTT_CA_FILE`, `CONFSTORE_TLOG_CHECKS` (see [`vars`]).
//!
//! # Example
//!
//! ```no_run
//! use confstore_client::Client;
//!
//! #[derive(serde::Deserialize)]
//! struct Web {
//!     port: u16,
//!     region: String,
//! }
//!
//! # async fn run() -> Result<(), confstore_client::ClientError> {
//! let client = Client::builder("web")
//!     .public_key_base64("…base64 of the store's public key…")
//!     .rest_url("http://127.0.0.1:8080")
//!     .token("…")
//!     .mqtt_url("mqtt://127.0.0.1:1883")
//!     .mqtt_client_id("web-1") // stable: the broker keeps the session across restarts
//!     .lkg_path("/var/lib/web/config.lkg.json")
//!     .on_update(|c| tracing::info!(epoch = c.version().changed_epoch, "new configuration"))
//!     .start()
//!     .await?;
//!
//! let web = client.get::<Web>()?; // deserialized once per version
//! println!("{} in {}", web.port, web.region);
//! let timeout_ms: u64 = client.config().get_key("timeout_ms")?;
//! # let _ = timeout_ms;
//! client.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod builder;
mod config;
mod env;
mod error;
mod lkg;
mod mqtt;
mod rest;
mod startup;
mod stats;
mod status;
mod tlog;
mod updater;

#[cfg(test)]
mod testutil;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use builder::{ClientBuilder, STARTUP_TIMEOUT_DEFAULT, vars};
pub use config::{Config, Source};
pub use confstore_core::stream::SnapshotVersion;
pub use env::env_var_name;
pub use error::ClientError;
pub use lkg::FORMAT as LKG_FORMAT;
pub use stats::Stats;
pub use tlog::AcceptedCheckpoint;

use stats::Counters;
use updater::Outlet;

/// Largest snapshot accepted from any source (REST body, MQTT payload, LKG file).
pub const SNAPSHOT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How long `shutdown` waits for each task before it aborts it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// A running client: the current configuration, live updates, counters.
pub struct Client {
    service: String,
    outlet: Arc<Outlet>,
    counters: Arc<Counters>,
    mqtt: Option<MqttRuntime>,
    /// For what a client asks on demand ([`Client::stored_schema`]).
    rest: Option<rest::Rest>,
    /// Its status reports, if it makes them ([`ClientBuilder::report_status`]).
    reporter: Option<Arc<status::Reporter>>,
    /// The task that reports over REST, for a client without MQTT.
    rest_reports: Option<JoinHandle<()>>,
    audit: Option<AuditRuntime>,
    /// The transparency-log checks' accepted checkpoint, if they are on.
    tlog: Option<Arc<tlog::Shared>>,
    /// Dropping it (with the `Client`) also stops every task.
    stop: watch::Sender<bool>,
}

/// The tasks behind live updates.
struct MqttRuntime {
    client: rumqttc::AsyncClient,
    connection: JoinHandle<()>,
    processor: JoinHandle<()>,
}

/// The transparency-log checks' task (crate::tlog).
struct AuditRuntime {
    task: JoinHandle<()>,
}

impl Client {
    /// A builder for `service`.
    pub fn builder(service: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(service)
    }

    /// A builder from the process environment (see [`ClientBuilder::from_vars`]).
    pub fn from_env() -> Result<ClientBuilder, ClientError> {
        ClientBuilder::from_env()
    }

    /// The service this client is for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The current configuration (lock-free; keep the `Arc` for a consistent view).
    pub fn config(&self) -> Arc<Config> {
        self.outlet.config.load_full()
    }

    /// The current configuration deserialized into `T`, cached per version and type.
    pub fn get<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<T>, ClientError> {
        self.outlet.config.load().get::<T>()
    }

    /// A receiver that sees every applied version (it may skip versions if it reads
    /// slower than they arrive; use `on_update` for every single one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.outlet.watch.subscribe()
    }

    /// The service's stored JSON Schema, as the server holds it for the version this client
    /// holds: `None` when that version has no schema. Fetched over REST
    /// (`GET /api/v1/services/{service}/schema`) and taken only if its SHA-256 over canonical
    /// JSON (docs/format.md §8) is the `schema_hash` of the verified snapshot held, so a
    /// schema changed since, or altered on the way, is an error, never a wrong answer.
    /// For comparing a service's own model of its configuration with the store's (the
    /// Python package's `schema_drift`).
    pub async fn stored_schema(&self) -> Result<Option<serde_json::Value>, ClientError> {
        let config = self.config();
        let fail = |reason: String| ClientError::Schema { service: self.service.clone(), reason };
        let want = match config.document().get("schema_hash") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(h)) if !h.is_empty() => h.clone(),
            Some(other) => return Err(fail(format!("the snapshot's schema_hash {other} is not a hash"))),
        };
        let rest = self.rest.as_ref().ok_or_else(|| fail("no rest_url to fetch it from".into()))?;
        let schema = rest.schema().await.map_err(|e| fail(e.to_string()))?;
        let got =
            hex::encode(confstore_core::schema::schema_hash(&confstore_core::state::canonical_json_text(&schema)));
        if got != want {
            return Err(fail(format!(
                "the server's schema (sha-256 {got}) is not the one of version {} (schema_hash {want}): \
                 it changed since, or was altered on the way; ask again once the new version is applied",
                config.version().changed_epoch
            )));
        }
        Ok(Some(schema))
    }

    /// The instance id status reports name, when the client makes them
    /// ([`ClientBuilder::report_status`]).
    pub fn instance_id(&self) -> Option<&str> {
        self.reporter.as_deref().map(status::Reporter::instance)
    }

    /// Sets the health this instance reports (docs/format.md §20): `Some(false)` marks it
    /// unhealthy in the fleet view, `None` withdraws the word. Published at once (retained);
    /// nothing happens when the client makes no status reports.
    pub fn set_healthy(&self, healthy: Option<bool>) {
        let Some(r) = &self.reporter else { return };
        r.set_healthy(healthy);
        // Over MQTT at once; the REST task (a client without MQTT) was woken by it.
        if let Some(mqtt) = &self.mqtt {
            r.publish_if_changed(&mqtt.client);
        }
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The signed checkpoint of the log's Merkle tree this client accepted last (see
    /// [`Stats::checkpoints_accepted`] and the transparency-log checks in the crate docs);
    /// `None` before the first, or when the checks are off.
    pub fn checkpoint(&self) -> Option<AcceptedCheckpoint> {
        self.tlog.as_ref().and_then(|t| t.accepted())
    }

    /// Disconnects from the broker cleanly and stops live updates. (Dropping the client
    /// also stops them, without the MQTT DISCONNECT.)
    pub async fn shutdown(self) {
        let Self { mqtt, audit, stop, reporter, rest_reports, .. } = self;
        if let Some(MqttRuntime { client, mut connection, mut processor }) = mqtt {
            // A clean DISCONNECT suppresses the last will: say `offline` first.
            if let Some(r) = &reporter {
                r.publish_offline(&client).await;
            }
            // DISCONNECT first: the connection task ends once it has sent it. While the
            // broker is unreachable it never will: give up after a while.
            let sent = tokio::time::timeout(SHUTDOWN_WAIT, client.disconnect()).await;
            if !matches!(sent, Ok(Ok(()))) || tokio::time::timeout(SHUTDOWN_WAIT, &mut connection).await.is_err() {
                connection.abort();
            }
            // Then the update task, after the message it is handling (unacked ones come
            // again).
            let _ = stop.send(true);
            if tokio::time::timeout(SHUTDOWN_WAIT, &mut processor).await.is_err() {
                processor.abort();
            }
        }
        let _ = stop.send(true);
        // The REST reporter says `offline` before it ends.
        if let Some(mut task) = rest_reports
            && tokio::time::timeout(SHUTDOWN_WAIT, &mut task).await.is_err()
        {
            task.abort();
        }
        if let Some(AuditRuntime { mut task }) = audit
            && tokio::time::timeout(SHUTDOWN_WAIT, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service)
            .field("version", self.outlet.config.load().version())
            .field("live", &self.mqtt.is_some())
            .finish()
    }
}
