//! confstore's HTTP server (docs/design.md §10): the REST API under `/api/v1` with bearer tokens
//! and roles, the web UI at `/`, the read-only fallback from the LKG file, health,
//! readiness and metrics.
//!
//! - [`app`]: configuration, keys and the mode (live or read-only fallback).
//! - [`model`]: the in-memory read model fed by the store's commit listener.
//! - [`api`]: the routes and the OpenAPI document, built together by [`api::router`].
//! - [`auth`]: bearer tokens and roles, enforced from the OpenAPI document's `security`.
//! - [`denials`]: refused requests, each token's first per route as an event, the rest
//!   summed into one summary event per token per window.
//! - [`http`]: request ids, access log and request metrics.
//! - [`listener`]: the HTTP accept loop: connection cap, header and idle timeouts.
//! - [`projector`]: the search index and the LKG file, kept up in the background.
//! - [`stream`]: the MQTT publisher (the log is the outbox) and the embedded broker.
//! - [`web`]: the web UI's page, ES modules and stylesheet, embedded (its data comes from the
//!   API; [`api::console`] has the views it needs: whoami, keys, changesets, verify, head events).
//! - [`metrics`]: Prometheus metrics.
//! - [`error`], [`extract`]: JSON errors and the extractors that produce them.

// Private: the binary needs only what is re-exported below (a tidy test keeps it so;
// docs/ARCHITECTURE.md). What the CLI shares with the server lives in the crates below it:
// LKG content and known heads in confstore-lkg, the search catch-up in confstore-search,
// token drawing and sealing in confstore-core.
mod api;
mod app;
mod appender;
mod auth;
mod checkpoints;
mod denials;
mod error;
mod extract;
mod fleet;
mod http;
mod listener;
mod metrics;
mod model;
mod projector;
mod rollouts;
mod stream;
mod web;
mod witnesses;

pub use app::{App, Config, Keys, StreamAdvert};
pub use listener::HttpLimits;
pub use stream::MqttSettings;
pub use stream::broker::{BrokerError, Embedded};

/// Serves `app` on `listener` within `limits` — and publishes the MQTT stream to `mqtt`, if
/// given, through the embedded broker's gate `broker`, if given — until `shutdown`
/// completes, then lets in-flight requests finish and closes the store (its final
/// checkpoint).
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    mqtt: Option<MqttSettings>,
    broker: Option<Embedded>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = api::router(app.clone());
    let projector = tokio::spawn(projector::run(app.clone()));
    let checkpointer = tokio::spawn(checkpoints::run(app.clone()));
    let witnessing = tokio::spawn(witnesses::run(app.clone()));
    let denials = tokio::spawn(denials::run(app.clone()));
    let rollouts = tokio::spawn(rollouts::run(app.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gate = broker.map(|b| tokio::spawn(b.run(app.clone(), stop_rx.clone())));
    // The fleet view reads the instances' status reports on a connection of its own.
    let fleet = mqtt.clone().map(|mqtt| tokio::spawn(stream::fleet::run(app.clone(), mqtt, stop_rx.clone())));
    let publisher = mqtt.map(|mqtt| tokio::spawn(stream::run(app.clone(), mqtt, stop_rx.clone())));
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let stopping = app.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Ends the head-events streams (`GET /api/v1/live`), which would otherwise keep the shutdown waiting.
        stopping.stopping.send_replace(true);
        let _ = http_stop_tx.send(true);
    });
    let result = listener::serve(listener, router, limits, app.metrics.clone(), http_stop_rx).await;
    projector.abort();
    let _ = projector.await;
    checkpointer.abort();
    let _ = checkpointer.await;
    witnessing.abort();
    let _ = witnessing.await;
    rollouts.abort();
    let _ = rollouts.await;
    // Every request has been answered: the refusals still counted go into the log now.
    denials.abort();
    let _ = denials.await;
    denials::flush_all(&app).await;
    // The publisher says `offline` and writes its checkpoint; a dead broker cannot hold us.
    let _ = stop_tx.send(true);
    if let Some(p) = publisher {
        let abort = p.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(3), p).await.is_err() {
            abort.abort();
        }
    }
    if let Some(f) = fleet {
        f.abort();
    }
    if let Some(g) = gate {
        g.abort();
    }
    // Every request has been answered: drop the store (final checkpoint) off the async threads.
    let a = app.clone();
    let _ = tokio::task::spawn_blocking(move || a.close()).await;
    result
}
