//! The subscribed client of the "stream on" cells: one `confstore-client` `Client` of the
//! written service, in this process but on a tokio runtime of its own, so that its CPU time
//! (the threads of that runtime, from /proc/self/task) is reported apart from the load
//! generator's, and its `on_update` tells when a version was verified and applied.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::sync::watch;

/// How long a written version may take to reach the client before the run fails.
pub const ARRIVAL_DEADLINE: Duration = Duration::from_secs(30);

/// A running client of one service.
pub struct Subscriber {
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<confstore_client::Client>,
    /// (changed epoch of the last applied version, when `on_update` saw it).
    applied: watch::Receiver<(u64, Instant)>,
    /// The ids of the runtime's threads.
    tids: Arc<Mutex<Vec<String>>>,
}

/// The store's public signing key, from the env file `confstore init` wrote.
pub fn public_key(env_file: &Path) -> Result<String> {
    let env = std::fs::read_to_string(env_file).with_context(|| format!("reading {}", env_file.display()))?;
    env.lines()
        .find_map(|l| l.strip_prefix("CONFIG_SIGNATURE_PUBLIC_KEY="))
        .map(|k| k.trim().trim_matches('"').to_owned())
        .with_context(|| format!("no CONFIG_SIGNATURE_PUBLIC_KEY in {}", env_file.display()))
}

/// CPU nanoseconds of this process's thread `tid` (/proc/self/task/TID/schedstat, whose
/// first field is the time on a CPU in ns); 0 if it has gone.
fn thread_cpu_ns(tid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

impl Subscriber {
    /// Starts a client of `service` that takes its snapshots from the broker at `mqtt_url`
    /// (logging in with `token`, as the embedded broker expects) and waits for its first
    /// configuration.
    pub async fn start(service: &str, public_key: &str, rest_url: &str, token: &str, mqtt_url: &str) -> Result<Self> {
        let tids = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&tids);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-subscriber")
            // Blocking threads stay, so their CPU time stays readable.
            .thread_keep_alive(Duration::from_secs(3600))
            .on_thread_start(move || {
                // "/proc/thread-self" -> "PID/task/TID".
                if let Ok(link) = std::fs::read_link("/proc/thread-self")
                    && let Some(tid) = link.file_name().and_then(|t| t.to_str())
                    && let Ok(mut v) = recorded.lock()
                {
                    v.push(tid.to_owned());
                }
            })
            .enable_all()
            .build()
            .context("starting the subscriber's runtime")?;
        let (tx, applied) = watch::channel((0u64, Instant::now()));
        let builder = confstore_client::Client::builder(service)
            .public_key_base64(public_key)
            .rest_url(rest_url)
            .token(token)
            .mqtt_url(mqtt_url)
            .mqtt_client_id("bench-subscriber")
            .env(Vec::new())
            .on_update(move |c| {
                tx.send_replace((c.version().changed_epoch, Instant::now()));
            });
        // Status reports are on by default, as users run it; CONFSTORE_REPORT_STATUS=0 measures
        // without them (what they cost the stream).
        let builder = match std::env::var("CONFSTORE_REPORT_STATUS").as_deref() {
            Ok("0" | "false" | "off" | "no") => builder.report_status(false),
            _ => builder,
        };
        let client = runtime
            .spawn(builder.start())
            .await
            .map_err(|e| anyhow!("the client's start panicked: {e}"))?
            .context("starting the subscribed confstore-client")?;
        Ok(Self { runtime: Some(runtime), client: Some(client), applied, tids })
    }

    /// CPU seconds used so far by the client's threads.
    pub fn cpu_secs(&self) -> f64 {
        let tids = self.tids.lock().map(|v| v.clone()).unwrap_or_default();
        tids.iter().map(|t| thread_cpu_ns(t)).sum::<u64>() as f64 / 1e9
    }

    /// Waits until a version of epoch `epoch` or later was applied; returns when it was, or
    /// `None` if it was not within [`ARRIVAL_DEADLINE`] (the stream stalled: a finding, not
    /// a failure of the benchmark).
    pub async fn applied(&mut self, epoch: u64) -> Result<Option<Instant>> {
        match tokio::time::timeout(ARRIVAL_DEADLINE, self.applied.wait_for(|(e, _)| *e >= epoch)).await {
            Ok(got) => Ok(Some(got.map_err(|_| anyhow!("the subscribed client stopped"))?.1)),
            Err(_) => Ok(None),
        }
    }

    /// The epoch of the version the client holds.
    pub fn epoch(&self) -> u64 {
        self.applied.borrow().0
    }

    /// Stops the client and its runtime.
    pub async fn stop(mut self) {
        if let (Some(rt), Some(client)) = (&self.runtime, self.client.take()) {
            let _ = rt.spawn(client.shutdown()).await;
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context forbids; `stop` is the way out,
        // this is for errors.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
