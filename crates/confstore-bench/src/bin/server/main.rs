//! `server`: confstore's HTTP server against etcd, side by side, in one run on one disk
//! (docs/design.md §11):
//!
//! 1. sequential durable writes, one client: `PUT /api/v1/services/bench/values/{key}`
//!    through `confstore serve` against etcd `put` over its native gRPC client (target:
//!    confstore at least 2x etcd's rate);
//! 2. the same with 16 concurrent writers, each on its own connection, keys disjoint
//!    (target: at least 1.5x);
//! 3. reading one service, one client: `GET .../snapshot` (a JWS of the whole service)
//!    against etcd's `get` of one key (target: confstore's p99 at most etcd's); etcd's
//!    serializable get and its range get of the service's prefix are printed too.
//!
//! And the matrix of issue 15 ("writes at the speed of the disk with the live stream on";
//! `matrix.rs`): confstore with the live stream on (embedded broker, publisher, a subscribed
//! `confstore-client` in this process) or off, a written service of 20 or 1,000 keys, an
//! empty or a populated store (100 services x 100 keys), each cell measured with the
//! harness (1 and 16 connections), with wrk (an independent load generator, Lua scripts in
//! `crates/confstore-bench/wrk/`), and as write -> client applied latency, beside etcd
//! with the same keys in the same run. `--chart PATH` (cargo feature `chart`) draws server
//! CPU per write against the service's size.
//!
//! Both peers are driven by the same closed-loop harness (`harness::closed_loop`) with
//! values of the same size. The benchmark starts both itself: a fresh confstore store
//! (`init`, `service add`, `token create`) served by `confstore serve`, and a single-node
//! etcd with default, durable settings, both with their data under one temporary directory.
//! Without /usr/bin/etcd it says so and compares with raw SQLite only.
//!
//! `cargo build --release -p confstore && cargo run --release -p confstore-bench --features etcd --bin
//! server -- [--check] [--json]` (without `--features etcd`, which needs protoc, raw SQLite only); counts by flag or env (SERVER_BENCH_WRITES, SERVER_BENCH_READS,
//! ...). See docs/benchmarks.md, "Server vs etcd".

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

// This benchmark's own modules; what it shares with the others is in the library
// (confstore_bench: machine, timing, process, harness, confstore, etcd).
#[cfg(feature = "chart")]
mod chart;
mod cpu;
mod matrix;
mod matrix_report;
mod preload;
mod report;
mod sqlite;
mod subscriber;
mod wrk;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde::Serialize;

use crate::report::{Compare, Peer, Report, Row, Target};
#[cfg(feature = "etcd")]
use confstore_bench::etcd;
use confstore_bench::harness::{Conn, Counts, Op, Run, Summary, closed_loop};
use confstore_bench::{confstore, harness, machine, process};

/// How long a server may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// confstore's HTTP server against etcd on this machine and disk.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "server", version)]
struct Args {
    /// Timed writes per run and peer, for each of measures 1 and 2 (split between the
    /// writers in 2).
    #[arg(long, env = "SERVER_BENCH_WRITES", default_value_t = 2000)]
    writes: usize,
    /// Timed reads per run, peer and kind of read (measure 3).
    #[arg(long, env = "SERVER_BENCH_READS", default_value_t = 5000)]
    reads: usize,
    /// Concurrent writers in measure 2.
    #[arg(long, env = "SERVER_BENCH_WRITERS", default_value_t = 16)]
    writers: usize,
    /// Runs of each measure; the peers take turns going first.
    #[arg(long, env = "SERVER_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// Untimed requests per run and peer before the clock starts (split between clients).
    #[arg(long, env = "SERVER_BENCH_WARMUP", default_value_t = 100)]
    warmup: usize,
    /// Untimed writes to each peer before the write measures (by --writers clients). They
    /// bring the stores to the steady state of a long-running server: SQLite's WAL past its
    /// first checkpoint (a fresh, growing WAL makes every fsync dearer), etcd's WAL and
    /// backend past their first segment and commits.
    #[arg(long, env = "SERVER_BENCH_PRIME", default_value_t = 1000)]
    prime: usize,
    /// Keys of the service read in measure 3.
    #[arg(long, env = "SERVER_BENCH_READ_KEYS", default_value_t = 20)]
    read_keys: usize,
    /// Distinct keys each writer cycles over in measures 1 and 2.
    #[arg(long, env = "SERVER_BENCH_KEYS_PER_WRITER", default_value_t = 16)]
    keys_per_writer: usize,
    /// Bytes of every value (ASCII text; a JSON string for confstore, raw bytes for etcd).
    #[arg(long, env = "SERVER_BENCH_VALUE_BYTES", default_value_t = 300)]
    value_bytes: usize,
    /// Directory under which the temporary directory holding both data directories is made
    /// [default: the system temp dir]. Put it on the disk you want measured.
    #[arg(long, env = "SERVER_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// The confstore binary [default: target/release/confstore next to this one].
    #[arg(long, env = "CONFSTORE_BIN")]
    confstore_bin: Option<PathBuf>,
    /// The etcd binary [default: /usr/bin/etcd, from Debian's etcd-server].
    #[arg(long, env = "ETCD_BIN")]
    etcd_bin: Option<PathBuf>,
    /// What to run, comma-separated: `classic` (measures 1-3 above), and the matrix's
    /// `harness` (closed loop, 1 and --writers connections), `wrk` (wrk -c1 -t1 and -c16 -t2)
    /// and `latency` (write -> applied, stream on; etcd: put -> watch event).
    #[arg(long, env = "SERVER_BENCH_MEASURES", default_value = "classic,harness,wrk,latency")]
    measures: String,
    /// Matrix: the live stream `on` (embedded broker + publisher + one subscribed client)
    /// and/or `off` (`serve --no-mqtt`).
    #[arg(long, env = "SERVER_BENCH_STREAM", default_value = "on,off")]
    stream: String,
    /// Matrix: keys of the written service before the timed writes.
    #[arg(long, env = "SERVER_BENCH_SERVICE_KEYS", default_value = "20,1000")]
    service_keys: String,
    /// Matrix: the rest of the store, `empty` or SERVICESxKEYS (e.g. `100x100`).
    #[arg(long, env = "SERVER_BENCH_STORE", default_value = "empty,100x100")]
    store: String,
    /// Matrix: timed harness writes per run, cell and load.
    #[arg(long, env = "SERVER_BENCH_MATRIX_WRITES", default_value_t = 1000)]
    matrix_writes: usize,
    /// Matrix: harness runs per cell and load.
    #[arg(long, env = "SERVER_BENCH_MATRIX_RUNS", default_value_t = 1)]
    matrix_runs: usize,
    /// Matrix: seconds of each wrk run.
    #[arg(long, env = "SERVER_BENCH_WRK_SECS", default_value_t = 5)]
    wrk_secs: u64,
    /// Matrix: timed writes of the write -> applied measure (one in flight).
    #[arg(long, env = "SERVER_BENCH_LATENCY_WRITES", default_value_t = 500)]
    latency_writes: usize,
    /// The wrk binary [default: wrk on PATH; Debian's package `wrk`].
    #[arg(long, env = "WRK_BIN")]
    wrk_bin: Option<PathBuf>,
    /// Draw server CPU per write against the service's size (20, 200 and 1,000 keys at
    /// least, added to --service-keys if missing) to this PNG. Needs the `chart` feature.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Exit with status 1 if a target is missed (or cannot be checked: no etcd).
    #[arg(long)]
    check: bool,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the temporary directory (its path is printed).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok((report, matrix)) => {
            let mut out = std::io::stdout().lock();
            let written = if args.json {
                serde_json::to_writer_pretty(&mut out, &Output { report: &report, matrix: matrix.as_ref() })
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            } else {
                write_tables(&report, matrix.as_ref(), &mut out)
            };
            if let Err(e) = written.and_then(|()| out.flush()) {
                eprintln!("server-bench: writing the report: {e}");
                return ExitCode::from(2);
            }
            if args.check && !report.all_pass { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("server-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The JSON output: the classic report with the matrix beside it.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a Report,
    matrix: Option<&'a matrix::MatrixReport>,
}

/// The classic table (if those measures ran), then the matrix (if it ran).
fn write_tables(report: &Report, matrix: Option<&matrix::MatrixReport>, out: &mut impl Write) -> std::io::Result<()> {
    if !report.rows.is_empty() {
        report::write_table(report, out)?;
    }
    if let Some(m) = matrix {
        if !report.rows.is_empty() {
            writeln!(out)?;
        } else {
            let mc = &report.machine;
            writeln!(out, "confstore-bench server matrix, {}", mc.date_utc)?;
            writeln!(out, "machine: {} cores, {}, Linux {}, {} build", mc.nproc, mc.cpu_model, mc.kernel, mc.build)?;
            let d = &report.disk;
            writeln!(
                out,
                "disk (all data directories): {} on {} ({}, mounted at {})",
                d.path, d.device, d.fs_type, d.mount_point
            )?;
            let l = &report.load;
            writeln!(
                out,
                "load during the run, share of all CPU time: bench {:.0}%, servers {:.0}%, other processes {:.0}%, iowait {:.0}%",
                l.client_pct, l.servers_pct, l.others_pct, l.iowait_pct
            )?;
        }
        matrix_report::write(m, out)?;
        writeln!(out, "({:.0} s in all)", report.total_secs)?;
    }
    Ok(())
}

fn progress(step: &str) {
    eprintln!("server-bench: {step}");
}

fn check_args(a: &Args) -> Result<()> {
    ensure!(a.runs >= 1, "--runs must be at least 1");
    ensure!(a.writers >= 1, "--writers must be at least 1");
    ensure!(a.writes >= a.writers, "--writes must be at least --writers");
    ensure!(a.reads >= 1, "--reads must be at least 1");
    ensure!((1..=1000).contains(&a.read_keys), "--read-keys must be 1 to 1000");
    ensure!((1..=1000).contains(&a.keys_per_writer), "--keys-per-writer must be 1 to 1000");
    ensure!((1..=60_000).contains(&a.value_bytes), "--value-bytes must be 1 to 60000");
    if a.chart.is_some() && !cfg!(feature = "chart") {
        anyhow::bail!(
            "--chart needs the benchmark built with the `chart` feature: \
             cargo run --release -p confstore-bench --features etcd,chart --bin server -- --chart PATH"
        );
    }
    Ok(())
}

/// The measures asked for by --measures.
struct Measures {
    classic: bool,
    harness: bool,
    wrk: bool,
    latency: bool,
}

impl Measures {
    fn parse(s: &str) -> Result<Self> {
        let mut m = Self { classic: false, harness: false, wrk: false, latency: false };
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "classic" => m.classic = true,
                "harness" => m.harness = true,
                "wrk" => m.wrk = true,
                "latency" => m.latency = true,
                "matrix" => (m.harness, m.wrk, m.latency) = (true, true, true),
                other => anyhow::bail!("--measures: unknown {other:?} (classic, harness, wrk, latency, matrix)"),
            }
        }
        Ok(m)
    }

    fn matrix(&self) -> bool {
        self.harness || self.wrk || self.latency
    }
}

/// The matrix's selection from the arguments; with --chart the sizes 20, 200 and 1,000.
fn selection(a: &Args, m: &Measures) -> Result<matrix::Selection> {
    let mut service_keys = matrix::parse_sizes(&a.service_keys)?;
    if a.chart.is_some() {
        for k in [20, 200, 1000] {
            if !service_keys.contains(&k) {
                progress(&format!("--chart: adding a service of {k} keys to --service-keys"));
                service_keys.push(k);
            }
        }
        service_keys.sort_unstable();
    }
    let sel = matrix::Selection {
        streams: matrix::parse_streams(&a.stream)?,
        service_keys,
        stores: matrix::parse_stores(&a.store)?,
        writes: a.matrix_writes,
        runs: a.matrix_runs,
        warmup: a.warmup,
        writers: a.writers,
        value_bytes: a.value_bytes,
        harness: m.harness,
        wrk_secs: if m.wrk { a.wrk_secs } else { 0 },
        latency_writes: if m.latency { a.latency_writes } else { 0 },
        keep: a.keep,
    };
    ensure!(sel.runs >= 1 && sel.writes >= sel.writers, "--matrix-runs must be >= 1 and --matrix-writes >= --writers");
    ensure!(!m.wrk || sel.wrk_secs >= 1, "--wrk-secs must be at least 1");
    Ok(sel)
}

/// The baseline: etcd, or raw SQLite when etcd is not installed.
enum Baseline {
    #[cfg(feature = "etcd")]
    Etcd(etcd::Etcd),
    Sqlite(PathBuf),
}

/// Which read the baseline does in a row of measure 3.
#[derive(Clone, Copy)]
enum BaseRead {
    Key,
    KeySerializable,
    Prefix,
}

/// Both peers, running.
struct Peers {
    server: confstore::Server,
    baseline: Baseline,
    read_keys: usize,
}

/// Runs `conns` through the harness and adds the CPU time per request of the peer's process
/// (`peer`: none for the in-process SQLite fallback) and of this one (the clients).
async fn timed<C: Conn>(conns: Vec<C>, op: Op, counts: Counts, tag: &str, peer: Option<u32>) -> Result<Run> {
    let (peer_before, own_before) = (peer.map(cpu::process_secs), cpu::own_secs());
    let mut run = closed_loop(conns, op, counts, tag).await?;
    let requests = run.requests_total.max(1) as f64;
    run.peer_cpu_us_per_request = peer.zip(peer_before).map(|(p, b)| (cpu::process_secs(p) - b) * 1e6 / requests);
    run.client_cpu_us_per_request = (cpu::own_secs() - own_before) * 1e6 / requests;
    Ok(run)
}

impl Peers {
    async fn confstore(&self, clients: usize, op: Op, counts: Counts, tag: &str) -> Result<Run> {
        let pid = Some(self.server.pid());
        timed(self.server.conns(clients).await?, op, counts, tag, pid).await.context("confstore")
    }

    async fn baseline(&self, clients: usize, op: Op, read: BaseRead, counts: Counts, tag: &str) -> Result<Run> {
        // Client 0 wrote the read keys (see `populate`).
        let key = format!("{}{}", harness::PREFIX, harness::key(0, 0, self.read_keys));
        let prefix = harness::PREFIX.to_owned();
        let expect = self.read_keys;
        match &self.baseline {
            #[cfg(feature = "etcd")]
            Baseline::Etcd(e) => {
                let read = match read {
                    BaseRead::Key => etcd::Read::Get(key),
                    BaseRead::KeySerializable => etcd::Read::GetSerializable(key),
                    BaseRead::Prefix => etcd::Read::Prefix { prefix, expect },
                };
                timed(e.conns(clients, &read).await?, op, counts, tag, Some(e.pid())).await.context("etcd")
            }
            Baseline::Sqlite(path) => {
                let read = match read {
                    BaseRead::Key | BaseRead::KeySerializable => sqlite::Read::Key(key),
                    BaseRead::Prefix => sqlite::Read::Prefix { prefix, expect },
                };
                timed(sqlite::conns(path, clients, &read)?, op, counts, tag, None).await.context("raw SQLite")
            }
        }
    }
}

/// Counts for `clients` clients sharing `total` timed and `warmup` untimed requests.
fn counts(total: usize, warmup: usize, clients: usize) -> Counts {
    Counts { warmup_per_client: warmup.div_ceil(clients), ops_per_client: total.div_ceil(clients) }
}

/// Runs one measure `runs` times on both peers, alternating which goes first.
async fn both(
    peers: &Peers,
    args: &Args,
    clients: usize,
    op: Op,
    reads: &[BaseRead],
    total: usize,
) -> Result<(Summary, Vec<Summary>)> {
    let c = counts(total, args.warmup, clients);
    let mut mine = Vec::new();
    let mut theirs: Vec<Vec<Run>> = vec![Vec::new(); reads.len()];
    for run in 0..args.runs {
        let tag = format!("r{run}");
        if run % 2 == 1 {
            for (i, read) in reads.iter().enumerate() {
                theirs[i].push(peers.baseline(clients, op, *read, c, &tag).await?);
            }
        }
        mine.push(peers.confstore(clients, op, c, &tag).await?);
        if run % 2 == 0 {
            for (i, read) in reads.iter().enumerate() {
                theirs[i].push(peers.baseline(clients, op, *read, c, &tag).await?);
            }
        }
    }
    Ok((Summary::of(&mine, clients), theirs.iter().map(|r| Summary::of(r, clients)).collect()))
}

/// Writes the service that measure 3 reads: `read_keys` keys, the same on both peers.
async fn populate(peers: &Peers, args: &Args) -> Result<()> {
    let op = Op::Put { keys_per_client: args.read_keys, value_bytes: args.value_bytes };
    let c = Counts { warmup_per_client: 0, ops_per_client: args.read_keys };
    peers.confstore(1, op, c, "read").await?;
    peers.baseline(1, op, BaseRead::Key, c, "read").await?;
    let mut conn = peers.server.conns(1).await?.pop().context("a connection")?;
    let text = confstore::snapshot_text(&mut conn).await?;
    for i in 0..args.read_keys {
        let key = harness::key(0, i, args.read_keys);
        ensure!(text.contains(&key), "the confstore snapshot lacks {key} after writing it: {text}");
    }
    // The JWS read must be the service of `read_keys` keys, not an empty one.
    ensure!(conn.read().await? > args.read_keys * args.value_bytes, "the JWS snapshot is smaller than its values");
    Ok(())
}

async fn measure(peers: &Peers, args: &Args) -> Result<Vec<Row>> {
    let base = match peers.baseline {
        #[cfg(feature = "etcd")]
        Baseline::Etcd(_) => "etcd",
        Baseline::Sqlite(_) => "raw SQLite",
    };
    let etcd = base == "etcd";
    let mut rows = Vec::new();

    // Reads first, while the service holds only its `read_keys` keys.
    progress(&format!("3/3 reads: writing the {}-key service to both", args.read_keys));
    populate(peers, args).await?;
    progress(&format!("3/3 reads, 1 client, {} per run and kind", args.reads));
    let reads: &[BaseRead] = if etcd {
        &[BaseRead::Key, BaseRead::KeySerializable, BaseRead::Prefix]
    } else {
        &[BaseRead::Key, BaseRead::Prefix]
    };
    let (snap, theirs) = both(peers, args, 1, Op::Read, reads, args.reads).await?;
    let snapshot_op = "GET snapshot (JWS)".to_owned();
    let read_what = format!("read one service\n({} keys), 1 client", args.read_keys);
    for (read, theirs) in reads.iter().zip(theirs) {
        let (id, what, op, target) = match read {
            BaseRead::Key => (
                "3",
                read_what.clone(),
                if etcd { "get 1 key (linearizable,\netcd's default)" } else { "SELECT 1 key" },
                Some(Target { id: "snapshot_read_p99_ratio".into(), bound: report::READ_P99_RATIO_MAX }),
            ),
            BaseRead::KeySerializable => ("3b", "same".to_owned(), "get 1 key (serializable)", None),
            BaseRead::Prefix => (
                if etcd { "3c" } else { "3b" },
                "same".to_owned(),
                if etcd { "range get of the service's\nprefix (linearizable)" } else { "SELECT the prefix" },
                None,
            ),
        };
        rows.push(Row {
            id: id.into(),
            what,
            confstore_op: snapshot_op.clone(),
            confstore: snap.clone(),
            baseline_op: op.into(),
            baseline: theirs,
            compare: Compare::P99,
            target,
            ratio: f64::NAN,
            pass: None,
        });
    }

    let op = Op::Put { keys_per_client: args.keys_per_writer, value_bytes: args.value_bytes };
    if args.prime > 0 {
        progress(&format!("priming: {} untimed writes to each, {} writers", args.prime, args.writers));
        let c = counts(args.prime, 0, args.writers);
        peers.confstore(args.writers, op, c, "prime").await?;
        peers.baseline(args.writers, op, BaseRead::Key, c, "prime").await?;
    }
    progress(&format!("1/3 sequential durable writes, 1 client, {} per run", args.writes));
    let (mine, theirs) = both(peers, args, 1, op, &[BaseRead::Key], args.writes).await?;
    let what = format!("durable writes, 1 client,\nsequential, {}-byte values", args.value_bytes);
    rows.insert(0, write_row("1", what, base, mine, theirs, "seq_write_ratio", report::SEQ_WRITE_RATIO_MIN));

    progress(&format!("2/3 durable writes, {} concurrent writers, {} per run", args.writers, args.writes));
    let (mine, theirs) = both(peers, args, args.writers, op, &[BaseRead::Key], args.writes).await?;
    let what = format!("durable writes, {} writers,\nown connections, disjoint keys", args.writers);
    let row = write_row("2", what, base, mine, theirs, "concurrent_write_ratio", report::CONCURRENT_WRITE_RATIO_MIN);
    rows.insert(1, row);
    Ok(rows)
}

fn write_row(
    id: &str,
    what: String,
    base: &str,
    mine: Summary,
    mut theirs: Vec<Summary>,
    target: &str,
    min: f64,
) -> Row {
    Row {
        id: id.into(),
        what,
        confstore_op: "PUT value".into(),
        confstore: mine,
        baseline_op: if base == "etcd" { "put".into() } else { "1-row commit, sync=FULL".into() },
        baseline: theirs.remove(0),
        compare: Compare::Rate,
        target: Some(Target { id: target.into(), bound: min }),
        ratio: f64::NAN,
        pass: None,
    }
}

fn run(args: &Args) -> Result<(Report, Option<matrix::MatrixReport>)> {
    check_args(args)?;
    let started = Instant::now();
    let (cpu_start, loadavg_start) = (cpu::Snapshot::now(), machine::loadavg());
    let base_dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base_dir).with_context(|| format!("creating {}", base_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("confstore-bench-server-")
        .tempdir_in(&base_dir)
        .with_context(|| format!("making a temporary directory under {}", base_dir.display()))?;
    let dir = tmp.path().to_owned();
    let machine = machine::Machine::detect();
    let disk = machine::Disk::detect(&dir);
    progress(&format!(
        "{} build; data in {} ({} on {}, mounted at {})",
        machine.build, disk.path, disk.fs_type, disk.device, disk.mount_point
    ));

    let bin = confstore::find_bin(args.confstore_bin.as_deref())?;
    if bin.components().any(|c| c.as_os_str() == "debug") {
        progress(&format!("WARNING: {} is a debug build; its figures mean little", bin.display()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let etcd_bin = etcd_bin(args.etcd_bin.as_deref());
    let against_etcd = etcd_bin.is_some();

    let measures = Measures::parse(&args.measures)?;
    let sel = measures.matrix().then(|| selection(args, &measures)).transpose()?;
    let not_run =
        |name: &str| Peer { name: name.into(), version: String::new(), how: "classic measures not run".into() };
    let classic = measures
        .classic
        .then(|| {
            runtime.block_on(async {
                progress(&format!("starting {} serve", bin.display()));
                let mut server = confstore::Server::start(&bin, &dir)?;
                let ready = server.wait_ready(READY_DEADLINE).await?;
                progress(&format!("confstore serve ready on {} after {ready:?}", server.addr));
                let confstore_peer = Peer {
                    name: "confstore serve".into(),
                    version: server.version.clone(),
                    how: format!("{}, data in {}/data, synchronous=FULL (default)", bin.display(), dir.display()),
                };
                let (baseline, baseline_peer) = match &etcd_bin {
                    #[cfg(feature = "etcd")]
                    Some(etcd_bin) => etcd_baseline(etcd_bin, &dir).await?,
                    _ => {
                        let path = sqlite::create(&dir.join("raw.db"))?;
                        let peer = Peer {
                            name: "raw SQLite".into(),
                            version: format!("SQLite {}", rusqlite::version()),
                            how: format!("{}, WAL, synchronous=FULL, in process", path.display()),
                        };
                        (Baseline::Sqlite(path), peer)
                    }
                };
                let peers = Peers { server, baseline, read_keys: args.read_keys };
                let rows = measure(&peers, args).await?;
                let Peers { server, baseline, .. } = peers;
                server.stop()?;
                #[cfg(feature = "etcd")]
                if let Baseline::Etcd(e) = baseline {
                    e.stop()?;
                }
                #[cfg(not(feature = "etcd"))]
                drop(baseline);
                Ok::<_, anyhow::Error>((rows, confstore_peer, baseline_peer))
            })
        })
        .transpose()?;
    let (rows, confstore_peer, baseline_peer) =
        classic.unwrap_or_else(|| (Vec::new(), not_run("confstore serve"), not_run("etcd")));
    let matrix = match sel {
        Some(sel) => {
            let env = matrix::Env {
                confstore_bin: bin.clone(),
                etcd_bin: etcd_bin.clone(),
                wrk_bin: wrk::find_bin(args.wrk_bin.as_deref()),
                dir: dir.join("matrix"),
            };
            Some(runtime.block_on(matrix::run(sel, &env))?)
        }
        None => None,
    };
    #[cfg(feature = "chart")]
    if let (Some(path), Some(m)) = (&args.chart, &matrix) {
        let store = m.selection.stores.first().map(preload::Store::name).unwrap_or_default();
        chart::draw(m, &store, path)?;
        progress(&format!("chart written to {}", path.display()));
    }
    drop(runtime);

    let load = cpu::Load::between(cpu_start, cpu::Snapshot::now(), loadavg_start, machine::loadavg());
    let rows: Vec<Row> = rows.into_iter().map(|r| r.judged(against_etcd)).collect();
    let all_pass = !measures.classic || (against_etcd && rows.iter().all(|r| r.pass != Some(false)));
    let report = Report {
        format: "confstore-bench-server/2",
        machine,
        disk,
        load,
        params: serde_json::to_value(args)?,
        confstore: confstore_peer,
        baseline: baseline_peer,
        against_etcd,
        rows,
        all_pass,
        total_secs: started.elapsed().as_secs_f64(),
    };
    if args.keep {
        let kept = tmp.keep();
        progress(&format!("kept {}", kept.display()));
    }
    Ok((report, matrix))
}

/// The etcd binary to compare with, if it is installed (else the comparison is with raw
/// SQLite, and says so).
#[cfg(feature = "etcd")]
fn etcd_bin(explicit: Option<&Path>) -> Option<PathBuf> {
    let found = etcd::Etcd::find_bin(explicit);
    if found.is_none() {
        eprintln!(
            "server-bench: etcd is not installed ({} is missing; install with: apt-get install etcd-server). \
             Comparing with raw SQLite only; the targets are against etcd and will not be checked.",
            explicit.unwrap_or(Path::new(etcd::DEFAULT_BIN)).display()
        );
    }
    found
}

/// Built without the `etcd` feature: the comparison is with raw SQLite, and says so.
#[cfg(not(feature = "etcd"))]
fn etcd_bin(_explicit: Option<&Path>) -> Option<PathBuf> {
    eprintln!(
        "server-bench: built without etcd's client (cargo build --release -p confstore-bench --features etcd; \
         it needs protoc). Comparing with raw SQLite only; the targets are against etcd and will not be checked."
    );
    None
}

/// Starts etcd in `dir` as the baseline.
#[cfg(feature = "etcd")]
async fn etcd_baseline(etcd_bin: &Path, dir: &Path) -> Result<(Baseline, Peer)> {
    let mut e = etcd::Etcd::start(etcd_bin, dir)?;
    let ready = e.wait_ready(READY_DEADLINE).await?;
    progress(&format!("{} ready on {} after {ready:?}", e.version, e.endpoint));
    let peer = Peer {
        name: "etcd".into(),
        version: e.version.clone(),
        how: format!(
            "{}, single node, data in {}/etcd, default settings (fsync on)",
            etcd_bin.display(),
            dir.display()
        ),
    };
    Ok((Baseline::Etcd(e), peer))
}
