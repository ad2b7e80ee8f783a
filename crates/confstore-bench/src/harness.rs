//! The closed-loop load generator every peer is measured with: N clients on one tokio
//! runtime, each with its own connection, each sending its next request as soon as the
//! previous one is answered, every request timed. Only the [`Conn`] differs between peers.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use tokio::sync::Barrier;

/// Prefix of every key in the flat key-value baselines (etcd, SQLite): the service's
/// "directory", so that one range read returns the whole service.
pub const PREFIX: &str = "bench/";

/// One client's connection to a peer. Each implementation owns its own TCP connection (or,
/// for the SQLite fallback, its own database connection).
pub trait Conn: Send + 'static {
    /// Writes `value` under `key` and returns once the peer acknowledged it as durable.
    fn put(&mut self, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
    /// The read this connection was made for (a snapshot, a key, a prefix); returns the
    /// bytes of the answer.
    fn read(&mut self) -> impl Future<Output = Result<usize>> + Send;
}

/// What every client of a run does.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Writes; client `c` cycles over keys `cCC.kKKK` of its own (disjoint between clients).
    Put {
        /// Distinct keys per client.
        keys_per_client: usize,
        /// Bytes of each value (ASCII text).
        value_bytes: usize,
    },
    /// Writes into a service preloaded with `keys` keys named by [`service_key`], so that it
    /// keeps its size: client `c` of `C` cycles over keys `c, c + C, c + 2C, ...` (disjoint
    /// between clients while `keys >= C`), the same scheme as the wrk scripts' threads.
    PutKeys {
        /// Keys of the service.
        keys: usize,
        /// Bytes of each value (ASCII text).
        value_bytes: usize,
    },
    /// The connection's read.
    Read,
}

/// Counts of one run.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// Untimed requests per client before the clock starts.
    pub warmup_per_client: usize,
    /// Timed requests per client.
    pub ops_per_client: usize,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Timed requests, all clients.
    pub ops: usize,
    /// From the first client's start (after every client's warm-up) to the last answer.
    pub elapsed_secs: f64,
    /// Bytes received per read (0 for writes).
    pub bytes_per_answer: f64,
    /// Requests sent, warm-up included.
    pub requests_total: usize,
    /// CPU time of the peer's process per request (warm-up included), microseconds; none
    /// when the peer runs in this process.
    pub peer_cpu_us_per_request: Option<f64>,
    /// CPU time of this process (the clients) per request, microseconds.
    pub client_cpu_us_per_request: f64,
    /// Every timed request's latency, microseconds.
    #[serde(skip)]
    pub latencies_us: Vec<f64>,
}

impl Run {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed_secs.max(1e-9)
    }
}

/// The key client `client` writes with its `i`-th request.
pub fn key(client: usize, i: usize, keys_per_client: usize) -> String {
    format!("c{client:02}.k{:03}", i % keys_per_client.max(1))
}

/// Name of the `i`-th key of a preloaded service (also the wrk scripts' `key()`).
pub fn service_key(i: usize) -> String {
    format!("k{i:05}")
}

/// Index of the key that client `client` of `clients` writes with its `i`-th request into a
/// service of `keys` keys (see [`Op::PutKeys`]; the wrk scripts compute the same).
pub fn service_key_index(client: usize, clients: usize, i: usize, keys: usize) -> usize {
    let (clients, keys) = (clients.max(1), keys.max(1));
    let per_client = (keys / clients).max(1);
    (client + clients * (i % per_client)) % keys
}

/// A `bytes`-long ASCII value that differs for every (tag, client, i).
pub fn value(tag: &str, client: usize, i: usize, bytes: usize) -> String {
    const FILLER: &str = "endpoint=https://billing.internal:8443;pool=4..32;retries=3;tls=on;";
    let mut v = format!("{tag}-c{client:02}-{i:07}-");
    while v.len() < bytes {
        v.push_str(FILLER);
    }
    v.truncate(bytes);
    v
}

/// Runs `conns.len()` clients in a closed loop: each does `counts.warmup_per_client`
/// untimed requests, waits for the others, then `counts.ops_per_client` timed ones. `tag`
/// makes this run's values differ from every other run's.
pub async fn closed_loop<C: Conn>(conns: Vec<C>, op: Op, counts: Counts, tag: &str) -> Result<Run> {
    let clients = conns.len();
    let start_line = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for (client, mut conn) in conns.into_iter().enumerate() {
        let start_line = Arc::clone(&start_line);
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0usize;
            let mut warmup = Ok(());
            for i in 0..counts.warmup_per_client {
                if let Err(e) = request(&mut conn, op, &tag, (client, clients), i).await {
                    warmup = Err(e);
                    break;
                }
            }
            // Every client reaches the start line, failed or not, so no one waits forever.
            start_line.wait().await;
            // Each client notes when it started: the spawning task may be scheduled later.
            let started = Instant::now();
            warmup.with_context(|| format!("client {client}, warm-up"))?;
            let mut latencies_us = Vec::with_capacity(counts.ops_per_client);
            for i in counts.warmup_per_client..counts.warmup_per_client + counts.ops_per_client {
                let sent = Instant::now();
                bytes += request(&mut conn, op, &tag, (client, clients), i)
                    .await
                    .with_context(|| format!("client {client}"))?;
                latencies_us.push(sent.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, anyhow::Error>((latencies_us, bytes, started, Instant::now()))
        }));
    }
    start_line.wait().await;
    let mut run = Run {
        ops: 0,
        elapsed_secs: 0.0,
        bytes_per_answer: 0.0,
        requests_total: clients * (counts.warmup_per_client + counts.ops_per_client),
        peer_cpu_us_per_request: None,
        client_cpu_us_per_request: 0.0,
        latencies_us: Vec::new(),
    };
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let mut bytes = 0usize;
    let mut first_error = None;
    for task in tasks {
        match task.await.map_err(|e| anyhow!("a client task panicked: {e}")).and_then(|r| r) {
            Ok((latencies_us, b, started, done)) => {
                run.ops += latencies_us.len();
                run.latencies_us.extend(latencies_us);
                bytes += b;
                first = Some(first.map_or(started, |f| f.min(started)));
                last = Some(last.map_or(done, |l| l.max(done)));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if let (Some(first), Some(last)) = (first, last) {
        run.elapsed_secs = last.duration_since(first).as_secs_f64();
    }
    if matches!(op, Op::Read) {
        run.bytes_per_answer = bytes as f64 / run.ops.max(1) as f64;
    }
    Ok(run)
}

async fn request<C: Conn>(
    conn: &mut C,
    op: Op,
    tag: &str,
    (client, clients): (usize, usize),
    i: usize,
) -> Result<usize> {
    match op {
        Op::Put { keys_per_client, value_bytes } => {
            conn.put(&key(client, i, keys_per_client), &value(tag, client, i, value_bytes)).await?;
            Ok(0)
        }
        Op::PutKeys { keys, value_bytes } => {
            let k = service_key(service_key_index(client, clients, i, keys));
            conn.put(&k, &value(tag, client, i, value_bytes)).await?;
            Ok(0)
        }
        Op::Read => conn.read().await,
    }
}

/// Latency percentiles and rates over several runs of one measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Requests per second: median, slowest and fastest run.
    pub rate: crate::timing::Samples,
    /// Median latency over every timed request of every run, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest request, milliseconds.
    pub max_ms: f64,
    /// Timed requests, all runs.
    pub requests: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes per answer (reads), 0 for writes.
    pub bytes_per_answer: f64,
    /// The peer's CPU time per request, microseconds (none: it ran in this process).
    pub peer_cpu_us_per_request: Option<f64>,
    /// The clients' CPU time per request, microseconds.
    pub client_cpu_us_per_request: f64,
}

impl Summary {
    /// Summarises the runs (at least one).
    pub fn of(runs: &[Run], clients: usize) -> Self {
        let mut all: Vec<f64> = runs.iter().flat_map(|r| r.latencies_us.iter().copied()).collect();
        all.sort_by(f64::total_cmp);
        let requests = runs.iter().map(|r| r.requests_total).sum::<usize>().max(1);
        Self {
            rate: crate::timing::Samples::new(runs.iter().map(Run::rate).collect()),
            p50_ms: percentile(&all, 0.50) / 1e3,
            p99_ms: percentile(&all, 0.99) / 1e3,
            max_ms: all.last().copied().unwrap_or(f64::NAN) / 1e3,
            requests: all.len(),
            clients,
            bytes_per_answer: runs.iter().map(|r| r.bytes_per_answer).sum::<f64>() / runs.len().max(1) as f64,
            peer_cpu_us_per_request: runs
                .iter()
                .map(|r| r.peer_cpu_us_per_request.map(|c| c * r.requests_total as f64))
                .sum::<Option<f64>>()
                .map(|c| c / requests as f64),
            client_cpu_us_per_request: runs
                .iter()
                .map(|r| r.client_cpu_us_per_request * r.requests_total as f64)
                .sum::<f64>()
                / requests as f64,
        }
    }
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0);
    // rank is in 1..=len, a small positive integer held exactly by an f64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = (rank as usize).min(sorted.len()) - 1;
    sorted[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn values_have_the_asked_size_and_differ() {
        let a = value("r0", 1, 2, 300);
        assert_eq!(a.len(), 300);
        assert_ne!(a, value("r0", 1, 3, 300));
        assert_ne!(a, value("r1", 1, 2, 300));
        assert_eq!(key(3, 17, 16), "c03.k001");
    }

    #[test]
    fn service_keys_are_disjoint_between_clients_and_stay_in_the_service() {
        assert_eq!(service_key(7), "k00007");
        // 16 clients, 20 keys: one key each.
        let mut seen = std::collections::BTreeSet::new();
        for c in 0..16 {
            let ks: std::collections::BTreeSet<usize> = (0..50).map(|i| service_key_index(c, 16, i, 20)).collect();
            assert_eq!(ks.len(), 1);
            assert!(seen.insert(*ks.first().unwrap()));
        }
        // One client cycles over every key.
        let all: std::collections::BTreeSet<usize> = (0..1000).map(|i| service_key_index(0, 1, i, 1000)).collect();
        assert_eq!(all.len(), 1000);
        // 16 clients, 1,000 keys: 62 each, all below 1,000.
        let ks: std::collections::BTreeSet<usize> = (0..500).map(|i| service_key_index(3, 16, i, 1000)).collect();
        assert_eq!(ks.len(), 62);
        assert!(ks.iter().all(|k| k % 16 == 3 && *k < 1000));
    }

    /// A peer that answers at once: the harness counts, times and splits work as it says.
    struct Instant0(usize);
    impl Conn for Instant0 {
        async fn put(&mut self, key: &str, value: &str) -> Result<()> {
            assert!(key.starts_with('c') && value.len() == 10);
            self.0 += 1;
            Ok(())
        }
        async fn read(&mut self) -> Result<usize> {
            Ok(5)
        }
    }

    #[test]
    fn closed_loop_counts_every_timed_request() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let counts = Counts { warmup_per_client: 2, ops_per_client: 10 };
        let run = rt
            .block_on(closed_loop(
                vec![Instant0(0), Instant0(0), Instant0(0)],
                Op::Put { keys_per_client: 4, value_bytes: 10 },
                counts,
                "t",
            ))
            .unwrap();
        assert_eq!((run.ops, run.latencies_us.len()), (30, 30));
        let run = rt.block_on(closed_loop(vec![Instant0(0)], Op::Read, counts, "t")).unwrap();
        assert_eq!((run.ops, run.bytes_per_answer), (10, 5.0));
    }

    /// A failing client makes the run fail instead of hanging the others at the start line.
    struct Fails;
    impl Conn for Fails {
        async fn put(&mut self, _: &str, _: &str) -> Result<()> {
            Err(anyhow!("HTTP 500"))
        }
        async fn read(&mut self) -> Result<usize> {
            Err(anyhow!("HTTP 500"))
        }
    }

    #[test]
    fn a_failing_client_fails_the_run() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let counts = Counts { warmup_per_client: 1, ops_per_client: 1 };
        let err = rt.block_on(closed_loop(vec![Fails, Fails], Op::Read, counts, "t")).unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 500"), "{err:#}");
    }
}
