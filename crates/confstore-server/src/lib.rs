//! confstore's HTTP server (DESIGN.md §10): the REST API under `/api/v1` with bearer tokens
//! and roles, the read-only fallback from the LKG file, health, readiness and metrics.
//!
//! - [`app`]: configuration, keys and the mode (live or read-only fallback).
//! - [`model`]: the in-memory read model fed by the store's commit listener.
//! - [`api`]: the routes and the OpenAPI document, built together by [`api::router`].
//! - [`auth`]: bearer tokens and roles, enforced from the OpenAPI document's `security`.
//! - [`http`]: request ids, access log and request metrics.
//! - [`projector`]: the search index and the LKG file, kept up in the background.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`], [`extract`]: JSON errors and the extractors that produce them.

pub mod api;
pub mod app;
pub mod auth;
pub mod error;
pub mod extract;
pub mod http;
pub mod metrics;
pub mod model;
pub mod projector;

pub use api::router;
pub use app::{App, Config, Keys};

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish and closes the store (its final checkpoint).
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = router(app.clone());
    let projector = tokio::spawn(projector::run(app.clone()));
    let result = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
    projector.abort();
    let _ = projector.await;
    // Every request has been answered: drop the store (final checkpoint) off the async threads.
    let a = app.clone();
    let _ = tokio::task::spawn_blocking(move || a.close()).await;
    result
}
