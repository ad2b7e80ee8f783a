//! `stream`: how fast a committed write reaches a service, through a real Mosquitto on
//! loopback, side by side with the baselines measured in the same run (issue 5):
//!
//! 1. confstore: `PUT /api/v1/services/bench/values/k` acknowledged → the client library
//!    (`confstore-client`) has verified and applied the new snapshot (its `on_update` ran).
//!    Target: p50 < 1 ms, p99 < 2 ms.
//! 2. raw Mosquitto: a QoS 1 publish of a message of the snapshot's size → received by a
//!    subscriber (what any MQTT stream costs at least).
//! 3. etcd, where installed (`/usr/bin/etcd`): `put` acknowledged → a watcher has the event.
//! 4. in-process reads from the client: `config().value("k")` and the typed `get::<T>()`.
//!    Target: p99 < 1 µs.
//! 5. the Python package (crates/confstore-py, the same Rust client underneath) against the
//!    same server and broker: PUT → a `subscribe` callback in Python, and `client.get(key)`
//!    (crates/confstore-py/bench/stream_latency.py, run with `--python`, the module built by
//!    `cargo build --release -p confstore-py`). Targets: ack → callback p99 < 3 ms, get p99
//!    < 2 µs.
//!
//! One update in flight at a time (closed loop), so each sample is a latency, not a
//! queueing delay. Latencies "from the acknowledgement" can be below zero when the update
//! is applied before the HTTP answer arrives; those count as 0 and are reported.
//!
//! `cargo build --release -p confstore -p confstore-py && cargo run --release -p confstore-bench --features etcd --bin
//! stream -- [--check] [--json]` (without `--features etcd`, which needs protoc, no etcd baseline); counts by flag or env (STREAM_BENCH_UPDATES, STREAM_BENCH_GETS).
//! See docs/benchmarks.md, "Live stream".

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;

#[cfg(feature = "etcd")]
use confstore_bench::etcd;
use confstore_bench::harness::percentile;
use confstore_bench::{confstore, machine, process};

/// Target: write acknowledged → applied, median.
const APPLY_P50_MAX_MS: f64 = 1.0;
/// Target: write acknowledged → applied, 99th percentile.
const APPLY_P99_MAX_MS: f64 = 2.0;
/// Target: in-process get, 99th percentile.
const GET_P99_MAX_NS: f64 = 1000.0;
/// Target: write acknowledged → Python callback, 99th percentile.
const PY_CALLBACK_P99_MAX_MS: f64 = 3.0;
/// Target: Python `client.get(key)`, 99th percentile.
const PY_GET_P99_MAX_NS: f64 = 2000.0;
/// How long one update may take to arrive before the run fails.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(10);

/// The live stream against raw Mosquitto and etcd's watch on this machine.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "stream", version)]
struct Args {
    /// Timed updates per peer (after WARMUP untimed ones).
    #[arg(long, env = "STREAM_BENCH_UPDATES", default_value_t = 2000)]
    updates: usize,
    /// Untimed updates first.
    #[arg(long, env = "STREAM_BENCH_WARMUP", default_value_t = 200)]
    warmup: usize,
    /// Timed in-process gets.
    #[arg(long, env = "STREAM_BENCH_GETS", default_value_t = 1_000_000)]
    gets: usize,
    /// Exit 1 if a target is missed.
    #[arg(long)]
    check: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The confstore binary (default target/release/confstore, then target/debug).
    #[arg(long, env = "CONFSTORE_BIN")]
    confstore_bin: Option<PathBuf>,
    /// The etcd binary (default /usr/bin/etcd; skipped if absent).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// The Python interpreter for the Python client's part (CPython ≥ 3.9).
    #[arg(long, env = "STREAM_BENCH_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// The Python package's compiled module (default target/release/libconfstore_py.so; the
    /// Python part is skipped, and says so, if it is not there).
    #[arg(long, env = "STREAM_BENCH_PYTHON_MODULE")]
    python_module: Option<PathBuf>,
    /// Skip the Python client's part.
    #[arg(long)]
    no_python: bool,
}

/// Percentiles of one latency series, in milliseconds (or ns for gets).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
struct Lat {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    samples: usize,
}

impl Lat {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self {
            p50: percentile(&v, 0.5),
            p90: percentile(&v, 0.9),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
            samples: v.len(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: machine::Machine,
    mosquitto: String,
    confstore_ack_to_applied_ms: Lat,
    confstore_put_to_applied_ms: Lat,
    confstore_applied_before_ack: usize,
    mosquitto_publish_to_receive_ms: Lat,
    etcd: Option<EtcdFigures>,
    get_value_ns: Lat,
    get_typed_ns: Lat,
    python: Option<PythonFigures>,
    snapshot_bytes: usize,
    pass: bool,
}

/// What crates/confstore-py/bench/stream_latency.py prints.
#[derive(Debug, Serialize, serde::Deserialize)]
struct PythonFigures {
    python: String,
    ack_to_callback_ms: Lat,
    put_to_callback_ms: Lat,
    callback_before_ack: usize,
    get_ns: Lat,
}

#[derive(Debug, Serialize)]
struct EtcdFigures {
    version: String,
    ack_to_event_ms: Lat,
    put_to_event_ms: Lat,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    match rt.block_on(run(&args)) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print_table(&report);
            }
            if args.check && !report.pass { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("stream benchmark failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &Args) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let (_mosquitto, port, mosquitto_version) = process::start_mosquitto(dir.path(), "message_size_limit 16777216\n")?;
    let url = format!("mqtt://127.0.0.1:{port}");

    // 1. confstore: serve + the client library.
    let bin = confstore::find_bin(args.confstore_bin.as_deref())?;
    let cdir = dir.path().join("confstore");
    std::fs::create_dir_all(&cdir)?;
    let mut server = confstore::Server::start_with(&bin, &cdir, &["--mqtt-url", &url])?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let env = std::fs::read_to_string(cdir.join("confstore.env"))?;
    let public_key = env
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_SIGNATURE_PUBLIC_KEY="))
        .context("no public key in the store's env file")?
        .trim()
        .trim_matches('"')
        .to_owned();
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let client = confstore_client::Client::builder(confstore::SERVICE)
        .public_key_base64(&public_key)
        .rest_url(&format!("http://{}", server.addr))
        .token(server.token())
        .mqtt_url(&url)
        .mqtt_client_id("bench-client")
        .env(Vec::new())
        .on_update(move |c| {
            let _ = tx.send((c.version().changed_epoch, Instant::now()));
        })
        .start()
        .await
        .context("starting the client")?;
    let mut conn = confstore::HttpConn::connect(server.addr, server.token()).await?;
    let (mut ack_to_apply, mut put_to_apply, mut before_ack) = (Vec::new(), Vec::new(), 0);
    for i in 0..args.warmup + args.updates {
        let body = serde_json::json!({ "value": i }).to_string();
        let t0 = Instant::now();
        let answer = conn
            .send(hyper::Method::PUT, &format!("/api/v1/services/{}/values/k", confstore::SERVICE), Some(body), None)
            .await?;
        let acked = Instant::now();
        let epoch = serde_json::from_slice::<serde_json::Value>(&answer)?["epoch"].as_u64().context("no epoch")?;
        let applied = loop {
            let (e, at) =
                rx.recv_timeout(ARRIVAL_DEADLINE).with_context(|| format!("epoch {epoch} never reached the client"))?;
            if e >= epoch {
                break at;
            }
        };
        if i >= args.warmup {
            if applied < acked {
                before_ack += 1;
            }
            ack_to_apply.push(ms(applied.saturating_duration_since(acked)));
            put_to_apply.push(ms(applied - t0));
        }
    }
    let snapshot_bytes = confstore::snapshot_text(&mut conn).await?.len();

    // 4. In-process reads from the client.
    #[derive(serde::Deserialize)]
    struct BenchConfig {
        #[allow(dead_code)]
        k: u64,
    }
    let mut get_value = Vec::with_capacity(args.gets);
    let mut get_typed = Vec::with_capacity(args.gets);
    let mut sink = 0usize;
    for _ in 0..args.gets {
        let t = Instant::now();
        let v = client.config().value("k").is_some();
        get_value.push(t.elapsed().as_nanos() as f64);
        sink += usize::from(v);
        let t = Instant::now();
        let typed = client.get::<BenchConfig>().is_ok();
        get_typed.push(t.elapsed().as_nanos() as f64);
        sink += usize::from(typed);
    }
    std::hint::black_box(sink);
    client.shutdown().await;

    // 5. The Python client, alone, against the same server and broker.
    let python = if args.no_python { None } else { python_client(args, &server, &url, &public_key, dir.path())? };
    server.stop()?;

    // 2. Raw Mosquitto, QoS 1, a payload of the snapshot's size.
    let raw = raw_mosquitto(port, snapshot_bytes, args).await?;

    // 3. etcd put → watch.
    #[cfg(feature = "etcd")]
    let etcd = match etcd::Etcd::find_bin(args.etcd_bin.as_deref()) {
        Some(bin) => Some(etcd_watch(&bin, dir.path(), args).await?),
        None => None,
    };
    #[cfg(not(feature = "etcd"))]
    let etcd: Option<EtcdFigures> = {
        eprintln!(
            "stream-bench: built without etcd's client (--features etcd; it needs protoc): no etcd watch baseline"
        );
        None
    };

    let confstore_ack = Lat::of(ack_to_apply);
    let get_value = Lat::of(get_value);
    let get_typed = Lat::of(get_typed);
    let python_pass = python
        .as_ref()
        .is_none_or(|p| p.ack_to_callback_ms.p99 < PY_CALLBACK_P99_MAX_MS && p.get_ns.p99 < PY_GET_P99_MAX_NS);
    let pass = confstore_ack.p50 < APPLY_P50_MAX_MS
        && confstore_ack.p99 < APPLY_P99_MAX_MS
        && get_value.p99 < GET_P99_MAX_NS
        && get_typed.p99 < GET_P99_MAX_NS
        && python_pass;
    Ok(Report {
        machine: machine::Machine::detect(),
        mosquitto: mosquitto_version,
        confstore_ack_to_applied_ms: confstore_ack,
        confstore_put_to_applied_ms: Lat::of(put_to_apply),
        confstore_applied_before_ack: before_ack,
        mosquitto_publish_to_receive_ms: raw,
        etcd,
        get_value_ns: get_value,
        get_typed_ns: get_typed,
        python,
        snapshot_bytes,
        pass,
    })
}

/// Runs crates/confstore-py/bench/stream_latency.py against the running server: the package's
/// Python sources and the release module put together in a directory of their own on
/// PYTHONPATH (nothing installed). None, said on stderr, if the module is not built.
fn python_client(
    args: &Args,
    server: &confstore::Server,
    mqtt_url: &str,
    public_key: &str,
    dir: &Path,
) -> Result<Option<PythonFigures>> {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../confstore-py");
    let module = args
        .python_module
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/libconfstore_py.so"));
    if !module.is_file() {
        eprintln!(
            "stream-bench: no Python client part: {} is not built (cargo build --release -p confstore-py)",
            module.display()
        );
        return Ok(None);
    }
    let site = dir.join("python");
    let pkg = site.join("confstore");
    std::fs::create_dir_all(&pkg)?;
    for entry in std::fs::read_dir(package.join("python/confstore"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, pkg.join(path.file_name().context("a file name")?))?;
        }
    }
    std::fs::copy(&module, pkg.join("_native.abi3.so")).with_context(|| format!("copying {}", module.display()))?;
    let out = Command::new(&args.python)
        .arg(package.join("bench/stream_latency.py"))
        .args(["--url", &format!("http://{}", server.addr), "--token", server.token(), "--mqtt-url", mqtt_url])
        .args(["--public-key", public_key, "--service", confstore::SERVICE, "--key", "k"])
        .args(["--updates", &args.updates.to_string(), "--warmup", &args.warmup.to_string()])
        .args(["--gets", &args.gets.to_string()])
        .env("PYTHONPATH", &site)
        .output()
        .with_context(|| format!("running {}", args.python.display()))?;
    if !out.status.success() {
        bail!("the Python client's part failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the Python part printed no report: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn raw_mosquitto(port: u16, bytes: usize, args: &Args) -> Result<Lat> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let mut o = MqttOptions::new("bench-sub", "127.0.0.1", port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (sub, mut sub_loop) = AsyncClient::new(o, 100);
    sub.subscribe("bench/raw", QoS::AtLeastOnce).await?;
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        while let Ok(ev) = sub_loop.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let n = p.payload.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
                    let _ = tx.send((n, Instant::now()));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await.context("no SUBACK")??;
    let mut o = MqttOptions::new("bench-pub", "127.0.0.1", port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (publisher, mut pub_loop) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let mut lat = Vec::new();
    for i in 0..(args.warmup + args.updates) as u64 {
        let mut payload = vec![b'x'; bytes.max(8)];
        payload[..8].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        publisher.publish("bench/raw", QoS::AtLeastOnce, false, payload).await?;
        let at = loop {
            let (n, at) = rx.recv_timeout(ARRIVAL_DEADLINE).context("a raw message never arrived")?;
            if n == i {
                break at;
            }
        };
        if i >= args.warmup as u64 {
            lat.push(ms(at - t0));
        }
    }
    Ok(Lat::of(lat))
}

#[cfg(feature = "etcd")]
async fn etcd_watch(bin: &Path, dir: &Path, args: &Args) -> Result<EtcdFigures> {
    let mut etcd = etcd::Etcd::start(bin, dir)?;
    etcd.wait_ready(Duration::from_secs(60)).await?;
    let mut watcher = etcd.client().await?;
    let mut writer = etcd.client().await?;
    let mut stream = watcher.watch("bench/k", None).await?;
    let (tx, rx) = mpsc::channel::<(i64, Instant)>();
    tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let at = Instant::now();
            for ev in resp.events() {
                if let Some(kv) = ev.kv() {
                    let _ = tx.send((kv.mod_revision(), at));
                }
            }
        }
    });
    let (mut ack, mut put) = (Vec::new(), Vec::new());
    for i in 0..args.warmup + args.updates {
        let t0 = Instant::now();
        let res = writer.put("bench/k", i.to_string(), None).await?;
        let acked = Instant::now();
        let rev = res.header().map_or(0, |h| h.revision());
        let at = loop {
            let (r, at) = rx.recv_timeout(ARRIVAL_DEADLINE).context("an etcd watch event never arrived")?;
            if r >= rev {
                break at;
            }
        };
        if i >= args.warmup {
            ack.push(ms(at.saturating_duration_since(acked)));
            put.push(ms(at - t0));
        }
    }
    let version = etcd.version.clone();
    etcd.stop()?;
    Ok(EtcdFigures { version, ack_to_event_ms: Lat::of(ack), put_to_event_ms: Lat::of(put) })
}

fn row(name: &str, l: &Lat, unit: &str) {
    println!(
        "  {name:<52} p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3}  max {:>8.3} {unit}  (n={})",
        l.p50, l.p90, l.p99, l.max, l.samples
    );
}

fn print_table(r: &Report) {
    let m = &r.machine;
    println!("stream benchmark: {} x {}, kernel {}, {} build, {}", m.nproc, m.cpu_model, m.kernel, m.build, m.date_utc);
    println!("broker: {} on loopback; snapshot {} bytes", r.mosquitto, r.snapshot_bytes);
    println!("write acknowledged -> update applied by a subscriber:");
    row("confstore: PUT acked -> client verified+applied", &r.confstore_ack_to_applied_ms, "ms");
    row("confstore: PUT sent -> client verified+applied", &r.confstore_put_to_applied_ms, "ms");
    println!(
        "    ({} of the updates were applied before the HTTP answer arrived; counted as 0)",
        r.confstore_applied_before_ack
    );
    row("raw Mosquitto: QoS 1 publish -> receive", &r.mosquitto_publish_to_receive_ms, "ms");
    match &r.etcd {
        Some(e) => {
            row(&format!("etcd ({}): put acked -> watch event", e.version), &e.ack_to_event_ms, "ms");
            row("etcd: put sent -> watch event", &e.put_to_event_ms, "ms");
        }
        None => println!("  etcd: not installed (/usr/bin/etcd); no etcd baseline in this run"),
    }
    println!("in-process reads from the client:");
    row("client.config().value(\"k\")", &r.get_value_ns, "ns");
    row("client.get::<T>() (typed, cached per version)", &r.get_typed_ns, "ns");
    match &r.python {
        Some(p) => {
            println!("the Python package (Python {}), same server and broker, beside the Rust client above:", p.python);
            row("python: PUT acked -> subscribe callback", &p.ack_to_callback_ms, "ms");
            row("python: PUT sent -> subscribe callback", &p.put_to_callback_ms, "ms");
            row("python: client.get(\"k\") (with perf_counter_ns)", &p.get_ns, "ns");
        }
        None => println!("python client: not measured in this run (see stderr)"),
    }
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let c = &r.confstore_ack_to_applied_ms;
    println!(
        "target: ack -> applied p50 < {APPLY_P50_MAX_MS} ms: {:.3} {}; p99 < {APPLY_P99_MAX_MS} ms: {:.3} {}",
        c.p50,
        verdict(c.p50 < APPLY_P50_MAX_MS),
        c.p99,
        verdict(c.p99 < APPLY_P99_MAX_MS)
    );
    println!(
        "target: get p99 < {GET_P99_MAX_NS} ns: value {:.0} {}, typed {:.0} {}",
        r.get_value_ns.p99,
        verdict(r.get_value_ns.p99 < GET_P99_MAX_NS),
        r.get_typed_ns.p99,
        verdict(r.get_typed_ns.p99 < GET_P99_MAX_NS)
    );
    if let Some(p) = &r.python {
        println!(
            "target: python ack -> callback p99 < {PY_CALLBACK_P99_MAX_MS} ms: {:.3} {}; get p99 < {PY_GET_P99_MAX_NS} ns: {:.0} {}",
            p.ack_to_callback_ms.p99,
            verdict(p.ack_to_callback_ms.p99 < PY_CALLBACK_P99_MAX_MS),
            p.get_ns.p99,
            verdict(p.get_ns.p99 < PY_GET_P99_MAX_NS)
        );
    }
}
