//! `fleet`: many client instances reporting their status (issue 19, item 4; docs/format.md
//! §20), against the same load on a plain Mosquitto in the same run.
//!
//! 1. Reports: `--instances` MQTT connections (default 1,000) to `serve`'s embedded broker,
//!    each logged in with a token, publish `--rounds` status reports each (retained, QoS 1,
//!    every connection's round in flight together). Timed from the first publish until the
//!    fleet view (`GET /api/v1/fleet/bench`) shows every instance at the last round's
//!    version: the status rate the server sustains end to end (gate, hub, the fleet's
//!    in-process subscriber, the view). Baseline: the same connections and reports to a Mosquitto on a
//!    free port, timed until one subscriber of `system/config-status/+/+` has them all.
//! 2. Queries: `GET /api/v1/fleet/bench` (every instance, judged against the current
//!    version) and `GET /api/v1/fleet` (the per-service counts), `--queries` each on one
//!    keep-alive connection, beside `GET /api/v1/services/bench/snapshot`, the store's
//!    hot read, on the same connection.
//!
//! `cargo build --release -p confstore -p confstore-bench --bin confstore --bin fleet && target/release/fleet`
//! (counts: FLEET_BENCH_INSTANCES, FLEET_BENCH_ROUNDS, FLEET_BENCH_QUERIES). docs/benchmarks.md "Fleet".

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use confstore_bench::confstore::{self, HttpConn};
use confstore_bench::harness::percentile;
use confstore_bench::process;
use confstore_core::fleet::Status;
use hyper::Method;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

/// How long one round of reports may take before the run fails.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "fleet", version)]
struct Args {
    /// Client instances (MQTT connections).
    #[arg(long, env = "FLEET_BENCH_INSTANCES", default_value_t = 1000)]
    instances: usize,
    /// Reports per instance.
    #[arg(long, env = "FLEET_BENCH_ROUNDS", default_value_t = 10)]
    rounds: u64,
    /// Timed requests per query.
    #[arg(long, env = "FLEET_BENCH_QUERIES", default_value_t = 500)]
    queries: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The confstore binary (default target/release/confstore, then target/debug).
    #[arg(long, env = "CONFSTORE_BIN")]
    confstore_bin: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Lat {
    p50_ms: f64,
    p99_ms: f64,
    samples: usize,
}

impl Lat {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self { p50_ms: percentile(&v, 0.5), p99_ms: percentile(&v, 0.99), samples: v.len() }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    instances: usize,
    rounds: u64,
    confstore_reports_per_s: f64,
    mosquitto_reports_per_s: f64,
    fleet_service_query: Lat,
    fleet_summary_query: Lat,
    snapshot_query: Lat,
    fleet_answer_bytes: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    match rt.block_on(run(&args)) {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print_table(&r);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet benchmark failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `n` connected MQTT clients to 127.0.0.1:`port` (logged in with `login`), each with its
/// event loop on a task that counts PUBACKs into `acked`.
async fn clients(
    port: u16,
    n: usize,
    login: Option<(&str, &str)>,
    acked: &Arc<AtomicUsize>,
) -> Result<Vec<AsyncClient>> {
    let connected = Arc::new(AtomicUsize::new(0));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = MqttOptions::new(format!("fleet-bench-{i}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (acked, connected) = (Arc::clone(acked), Arc::clone(&connected));
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        out.push(client);
    }
    wait("every client connected", || connected.load(Ordering::Relaxed) >= n).await?;
    Ok(out)
}

async fn wait(what: &str, done: impl Fn() -> bool) -> Result<()> {
    let until = Instant::now() + ROUND_DEADLINE;
    while !done() {
        if Instant::now() > until {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Every client publishes `rounds` reports (each round together, retained, QoS 1) and
/// waits for the PUBACKs of a round before the next.
async fn publish_rounds(clients: &[AsyncClient], store_id: &str, rounds: u64, acked: &Arc<AtomicUsize>) -> Result<()> {
    let base = acked.load(Ordering::Relaxed);
    for round in 1..=rounds {
        for (i, c) in clients.iter().enumerate() {
            let instance = format!("pod-{i}");
            let report = Status {
                store_id: Some(store_id.to_owned()),
                generation: Some(1),
                epoch: Some(round),
                version: Some(round),
                session: Some(1),
                ..Status::online(confstore::SERVICE, &instance, round)
            };
            c.publish(
                confstore_core::fleet::status_topic(confstore::SERVICE, &instance),
                QoS::AtLeastOnce,
                true,
                report.to_json(),
            )
            .await?;
        }
        let want = base + usize::try_from(round).unwrap_or(usize::MAX) * clients.len();
        wait("the round's PUBACKs", || acked.load(Ordering::Relaxed) >= want).await?;
    }
    Ok(())
}

async fn run(args: &Args) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let bin = confstore::find_bin(args.confstore_bin.as_deref())?;
    let mqtt_port = process::free_ports(1)?[0];
    let listen = format!("127.0.0.1:{mqtt_port}");
    let mut server = confstore::Server::start_with(&bin, dir.path(), &["--mqtt-listen", &listen])?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let mut http = HttpConn::connect(server.addr, server.token()).await?;
    let head: serde_json::Value = serde_json::from_slice(&http.send(Method::GET, "/api/v1/head", None, None).await?)?;
    let store_id = head["store_id"].as_str().context("no store id in the head")?.to_owned();

    // 1. confstore: reports through the embedded broker into the fleet view.
    let acked = Arc::new(AtomicUsize::new(0));
    let token = server.token().to_owned();
    let cs = clients(mqtt_port, args.instances, Some((confstore::SERVICE, &token)), &acked).await?;
    let started = Instant::now();
    publish_rounds(&cs, &store_id, args.rounds, &acked).await?;
    let path = format!("/api/v1/fleet/{}", confstore::SERVICE);
    let until = Instant::now() + ROUND_DEADLINE;
    loop {
        let view: serde_json::Value = serde_json::from_slice(&http.send(Method::GET, &path, None, None).await?)?;
        let list = view["instances"].as_array().cloned().unwrap_or_default();
        if list.len() == args.instances && list.iter().all(|i| i["version"].as_u64() == Some(args.rounds)) {
            break;
        }
        if Instant::now() > until {
            bail!("the fleet view never showed every instance's last report");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let confstore_secs = started.elapsed().as_secs_f64();
    for c in &cs {
        let _ = c.try_disconnect();
    }

    // 2. Queries.
    let n = args.queries;
    let (mut fleet_q, mut summary_q, mut snap_q) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut bytes = 0;
    for _ in 0..args.queries {
        let t = Instant::now();
        bytes = http.send(Method::GET, &path, None, None).await?.len();
        fleet_q.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        http.send(Method::GET, "/api/v1/fleet", None, None).await?;
        summary_q.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        http.send(Method::GET, &format!("/api/v1/services/{}/snapshot", confstore::SERVICE), None, None).await?;
        snap_q.push(t.elapsed().as_secs_f64() * 1e3);
    }
    server.stop()?;

    // 3. Baseline: the same reports to a plain Mosquitto, until a subscriber has them all.
    let mosquitto_secs = mosquitto(dir.path(), args, &store_id).await?;
    let total = args.instances as f64 * args.rounds as f64;
    Ok(Report {
        instances: args.instances,
        rounds: args.rounds,
        confstore_reports_per_s: total / confstore_secs,
        mosquitto_reports_per_s: total / mosquitto_secs,
        fleet_service_query: Lat::of(fleet_q),
        fleet_summary_query: Lat::of(summary_q),
        snapshot_query: Lat::of(snap_q),
        fleet_answer_bytes: bytes,
    })
}

async fn mosquitto(dir: &Path, args: &Args, store_id: &str) -> Result<f64> {
    let (_guard, port, _) = process::start_mosquitto(dir, "max_queued_messages 100000\n")?;
    // The subscriber: counts every report it receives.
    let received = Arc::new(AtomicUsize::new(0));
    let mut o = MqttOptions::new("fleet-bench-sub", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_inflight(1000);
    let (sub, mut sub_loop) = AsyncClient::new(o, 1000);
    sub.subscribe("system/config-status/+/+", QoS::AtLeastOnce).await?;
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (r, s) = (Arc::clone(&received), Arc::clone(&subscribed));
    tokio::spawn(async move {
        loop {
            match sub_loop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    s.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    wait("the subscriber's SUBACK", || subscribed.load(Ordering::Relaxed) >= 1).await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let cs = clients(port, args.instances, None, &acked).await?;
    let started = Instant::now();
    publish_rounds(&cs, store_id, args.rounds, &acked).await?;
    let want = args.instances * usize::try_from(args.rounds).unwrap_or(usize::MAX);
    wait("the subscriber to have every report", || received.load(Ordering::Relaxed) >= want).await?;
    Ok(started.elapsed().as_secs_f64())
}

fn print_table(r: &Report) {
    println!("fleet benchmark: {} instances × {} reports each, 2 worker threads", r.instances, r.rounds);
    println!(
        "  status reports, sent -> in the fleet view:   confstore {:>9.0}/s   (Mosquitto alone, sent -> one subscriber: {:>9.0}/s)",
        r.confstore_reports_per_s, r.mosquitto_reports_per_s
    );
    let row = |name: &str, l: &Lat| {
        println!("  {name:<44} p50 {:>7.3} ms  p99 {:>7.3} ms  (n={})", l.p50_ms, l.p99_ms, l.samples)
    };
    row(&format!("GET /api/v1/fleet/bench ({} bytes)", r.fleet_answer_bytes), &r.fleet_service_query);
    row("GET /api/v1/fleet (counts per service)", &r.fleet_summary_query);
    row("GET /api/v1/services/bench/snapshot (baseline)", &r.snapshot_query);
}
