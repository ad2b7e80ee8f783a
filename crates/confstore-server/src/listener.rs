//! The HTTP listener: the accept loop in front of the router, with the bounds a server on a
//! shared machine needs (docs/operations.md, "Threat model").
//!
//! - **A cap on connections** ([`HttpLimits::max_connections`]). At the cap a new
//!   connection evicts the least useful idle one — first one whose request head is still
//!   arriving (a slow or half-sent request), then one that never sent a request, then the
//!   longest-idle keep-alive connection — so a flood of half-open connections never locks
//!   out a real client. When every connection is busy with a request, the newcomer gets an
//!   immediate `503 overloaded` with `Retry-After` and is closed.
//! - **A header-read timeout**: a request head must arrive in full within
//!   [`HttpLimits::header_timeout`] of its first byte (or of the connection's opening).
//! - **An idle keep-alive timeout**: a connection idle between requests is closed after
//!   [`HttpLimits::idle_timeout`].
//! - Request bodies have their own timeout (the router's body-timeout layer, [`crate::api`]).
//!
//! Invariant: a connection with a request in flight (its response body included, so the
//! head-events stream counts) is never evicted or timed out here; the graceful shutdown lets
//! it finish.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// The bounds of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most open connections; beyond it idle ones are evicted, or the newcomer refused.
    pub max_connections: usize,
    /// Time a request head may take to arrive, from its first byte (or the connection's
    /// opening).
    pub header_timeout: Duration,
    /// Time a keep-alive connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Time the graceful shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: confstore_core::limits::HTTP_CONNECTIONS_MAX,
            header_timeout: Duration::from_secs(confstore_core::limits::HTTP_HEADER_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(confstore_core::limits::HTTP_IDLE_TIMEOUT_SECS),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How often each connection checks its timeouts.
const TICK: Duration = Duration::from_millis(250);
/// How long the overload answer may take to write before the socket is dropped.
const OVERLOAD_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Milliseconds since the listener started (0 = "not set" in the atomics below).
fn now_ms(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What one connection is doing, shared by its I/O wrapper, its requests and the table.
#[derive(Debug)]
struct Activity {
    /// Requests in flight, response bodies included.
    busy: AtomicUsize,
    /// Requests completed on this connection.
    served: AtomicU64,
    /// When the connection last became idle (opened, or finished its last response).
    idle_since_ms: AtomicU64,
    /// When the first byte of the next request head arrived while idle (0: none yet).
    head_started_ms: AtomicU64,
}

/// Why a connection was closed by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    HeaderTimeout,
    IdleTimeout,
}

impl Activity {
    fn new(now: u64) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now),
            head_started_ms: AtomicU64::new(0),
        }
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    /// Eviction order at the cap: lower goes first. (class, since): a head still arriving,
    /// then a connection that never completed a request, then an idle keep-alive one;
    /// oldest first within a class. `None` while busy.
    fn eviction_rank(&self) -> Option<(u8, u64)> {
        if self.is_busy() {
            return None;
        }
        let head = self.head_started_ms.load(Ordering::Acquire);
        let idle = self.idle_since_ms.load(Ordering::Acquire);
        Some(if head != 0 {
            (0, head)
        } else if self.served.load(Ordering::Acquire) == 0 {
            (1, idle)
        } else {
            (2, idle)
        })
    }

    fn expired(&self, now: u64, limits: &HttpLimits) -> Option<Expiry> {
        if self.is_busy() {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let head = self.head_started_ms.load(Ordering::Acquire);
        let idle = self.idle_since_ms.load(Ordering::Acquire);
        let fresh = self.served.load(Ordering::Acquire) == 0;
        if head != 0 && now.saturating_sub(head) > ms(limits.header_timeout) {
            return Some(Expiry::HeaderTimeout);
        }
        // A connection that never sent a full request is held to the header timeout from
        // its opening; one that did, to the idle timeout between requests.
        if fresh && now.saturating_sub(idle) > ms(limits.header_timeout) {
            return Some(Expiry::HeaderTimeout);
        }
        if !fresh && head == 0 && now.saturating_sub(idle) > ms(limits.idle_timeout) {
            return Some(Expiry::IdleTimeout);
        }
        None
    }
}

/// One open connection in the table.
struct Slot {
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

/// The open connections.
#[derive(Default)]
struct Table {
    slots: Mutex<HashMap<u64, Slot>>,
    /// Completes when the table becomes empty (for the graceful shutdown).
    emptied: Notify,
}

impl Table {
    fn len(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }

    /// At the cap: takes the least useful idle connection out of the table and tells it to
    /// close. False if all are busy.
    fn evict_one(&self) -> bool {
        let Ok(mut slots) = self.slots.lock() else { return false };
        let victim = slots
            .iter()
            .filter_map(|(id, s)| s.activity.eviction_rank().map(|r| (r, *id)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, id)| id);
        match victim.and_then(|id| slots.remove(&id)) {
            Some(slot) => {
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&id);
            if slots.is_empty() {
                self.emptied.notify_waiters();
            }
        }
    }
}

/// Serves `router` on `listener` within `limits` until `stop` turns true; then lets
/// requests in flight finish (at most [`HttpLimits::shutdown_grace`]) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let base = Instant::now();
    let table = Arc::new(Table::default());
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or the like: say so, back off briefly, go on.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                metrics.connection_closed("http", "accept_error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if table.len() >= limits.max_connections {
            if table.evict_one() {
                metrics.connection_closed("http", "evicted_idle");
            } else {
                metrics.connection_closed("http", "overloaded");
                tokio::spawn(overloaded(stream));
                continue;
            }
        }
        next_id += 1;
        let id = next_id;
        let activity = Arc::new(Activity::new(now_ms(base)));
        let close = Arc::new(Notify::new());
        if let Ok(mut slots) = table.slots.lock() {
            slots.insert(id, Slot { activity: Arc::clone(&activity), close: Arc::clone(&close) });
        }
        metrics.open_connections("http", table.len());
        let conn = Connection { base, activity, close, limits, router: router.clone(), stop: stop.clone() };
        let (table, metrics) = (Arc::clone(&table), metrics.clone());
        tokio::spawn(async move {
            if let Some(why) = conn.run(stream).await {
                metrics.connection_closed(
                    "http",
                    match why {
                        Expiry::HeaderTimeout => "header_timeout",
                        Expiry::IdleTimeout => "idle_timeout",
                    },
                );
            }
            table.remove(id);
            metrics.open_connections("http", table.len());
        });
    }
    drop(listener);
    // Every connection task saw `stop` too: idle ones close, busy ones finish.
    let emptied = table.emptied.notified();
    if table.len() > 0 && tokio::time::timeout(limits.shutdown_grace, emptied).await.is_err() {
        tracing::warn!(open = table.len(), "requests still running after the shutdown grace period; closing them");
        if let Ok(slots) = table.slots.lock() {
            for s in slots.values() {
                s.close.notify_one();
            }
        }
    }
    Ok(())
}

/// Answers 503 to a connection beyond the cap, then closes it.
async fn overloaded(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":"overloaded","message":"the server is at its connection limit; retry in a second"}"#;
    let text = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(OVERLOAD_WRITE_TIMEOUT, async {
        let _ = stream.write_all(text.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One accepted connection.
struct Connection {
    base: Instant,
    activity: Arc<Activity>,
    close: Arc<Notify>,
    limits: HttpLimits,
    router: Router,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection until it ends, expires or is evicted; returns why the listener
    /// closed it, if it did.
    async fn run(mut self, stream: TcpStream) -> Option<Expiry> {
        let io = TokioIo::new(Watched { inner: stream, activity: Arc::clone(&self.activity), base: self.base });
        let (activity, base, router) = (Arc::clone(&self.activity), self.base, self.router.clone());
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let guard = BusyGuard::start(Arc::clone(&activity), base);
            let router = router.clone();
            async move {
                let resp = router.oneshot(req.map(Body::new)).await.unwrap_or_else(|e| match e {});
                // The request stays busy until its response body is done (or dropped).
                Ok::<_, std::convert::Infallible>(resp.map(|b| Body::new(Guarded { inner: b, _guard: guard })))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Timeouts are this module's (header vs idle differ); hyper's own header timer is off.
        builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = *self.stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    return None;
                }
                () = self.close.notified() => return None,
                _ = tick.tick() => {
                    if let Some(why) = self.activity.expired(now_ms(self.base), &self.limits) {
                        tracing::debug!(?why, "closing an HTTP connection");
                        return Some(why);
                    }
                }
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Marks a request in flight for as long as it lives.
struct BusyGuard {
    activity: Arc<Activity>,
    base: Instant,
}

impl BusyGuard {
    fn start(activity: Arc<Activity>, base: Instant) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        activity.head_started_ms.store(0, Ordering::Release);
        Self { activity, base }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.activity.served.fetch_add(1, Ordering::AcqRel);
        self.activity.idle_since_ms.store(now_ms(self.base), Ordering::Release);
        self.activity.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request marked busy until it ends.
struct Guarded {
    inner: Body,
    _guard: BusyGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when the first byte of a request head arrives on an idle connection.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    base: Instant,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before && !this.activity.is_busy() {
            let _ = this.activity.head_started_ms.compare_exchange(
                0,
                now_ms(this.base),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_connections: 4,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn fresh_connections_are_held_to_the_header_timeout() {
        let a = Activity::new(1);
        assert_eq!(a.expired(50, &limits()), None);
        assert_eq!(a.expired(102, &limits()), Some(Expiry::HeaderTimeout));
    }

    #[test]
    fn keep_alive_connections_get_the_idle_timeout_then_the_header_timeout() {
        let a = Activity::new(1);
        a.served.store(1, Ordering::Release);
        a.idle_since_ms.store(10, Ordering::Release);
        assert_eq!(a.expired(500, &limits()), None, "idle, within the idle timeout");
        assert_eq!(a.expired(1011, &limits()), Some(Expiry::IdleTimeout));
        a.head_started_ms.store(600, Ordering::Release);
        assert_eq!(a.expired(650, &limits()), None, "head arriving, within the header timeout");
        assert_eq!(a.expired(701, &limits()), Some(Expiry::HeaderTimeout));
    }

    #[test]
    fn busy_connections_never_expire_nor_rank_for_eviction() {
        let a = Activity::new(1);
        a.busy.store(1, Ordering::Release);
        assert_eq!(a.expired(1_000_000, &limits()), None);
        assert_eq!(a.eviction_rank(), None);
    }

    #[test]
    fn half_sent_requests_are_evicted_before_silent_then_keep_alive_connections() {
        let half = Activity::new(5);
        half.head_started_ms.store(9, Ordering::Release);
        let silent = Activity::new(1);
        let kept = Activity::new(1);
        kept.served.store(3, Ordering::Release);
        let mut ranks = [kept.eviction_rank(), silent.eviction_rank(), half.eviction_rank()];
        ranks.sort();
        assert_eq!(ranks, [half.eviction_rank(), silent.eviction_rank(), kept.eviction_rank()]);
    }
}
