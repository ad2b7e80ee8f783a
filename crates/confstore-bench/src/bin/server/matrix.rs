//! The matrix of server configurations (issue 15): confstore with the live stream on (the
//! embedded broker and publisher, and a subscribed client in this process) or off, a
//! written service of N keys, an empty or a populated store; each cell measured with the
//! closed-loop harness (1 and 16 connections), with wrk (`-c1 -t1`, `-c16 -t2`), and, with
//! the stream on, write → client applied latency. etcd gets the same service and store in
//! the same run (one etcd per service size and store), measured the same ways.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hyper::Method;
use serde::Serialize;

use crate::preload::{self, Store};
use crate::subscriber::{self, Subscriber};
use crate::{cpu, process, progress, wrk};
use confstore_bench::confstore::{HttpConn, SERVICE, Server};
use confstore_bench::harness::{Counts, Op, Run, Summary, closed_loop, percentile, service_key, value};

/// How long a server may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// What the matrix measures, and how much.
#[derive(Clone, Debug, Serialize)]
pub struct Selection {
    /// Stream on (true) and/or off.
    pub streams: Vec<bool>,
    /// Keys of the written service.
    pub service_keys: Vec<usize>,
    /// The rest of the store.
    pub stores: Vec<Store>,
    /// Timed writes per run and load (harness).
    pub writes: usize,
    /// Harness runs per cell and load.
    pub runs: usize,
    /// Untimed writes before each harness run and before the latency measure.
    pub warmup: usize,
    /// Connections of the concurrent harness load.
    pub writers: usize,
    /// Bytes of every value.
    pub value_bytes: usize,
    /// Run the closed-loop harness.
    pub harness: bool,
    /// Seconds of each wrk run (0: no wrk).
    pub wrk_secs: u64,
    /// Timed writes of the write → applied measure (0: none).
    pub latency_writes: usize,
    /// Keep each cell's data directory.
    pub keep: bool,
}

/// The programs and the directory of a matrix run.
pub struct Env {
    /// `confstore`.
    pub confstore_bin: PathBuf,
    /// etcd, if installed and built with the `etcd` feature.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub etcd_bin: Option<PathBuf>,
    /// wrk, if installed.
    pub wrk_bin: Option<PathBuf>,
    /// Where the cells' data directories are made.
    pub dir: PathBuf,
}

/// Who served a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// `confstore serve` with its embedded broker and publisher, and a subscribed client.
    StreamOn,
    /// `confstore serve --no-mqtt`.
    StreamOff,
    /// A single-node etcd.
    Etcd,
}

/// One load of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// The harness, one connection, sequential.
    Harness1,
    /// The harness, `writers` connections.
    HarnessN,
    /// wrk -c1 -t1.
    Wrk1,
    /// wrk -c16 -t2.
    Wrk16,
    /// One write at a time, sent → applied by the subscribed client (etcd: → watch event).
    Applied,
}

/// Figures of one load on one peer.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// What ran.
    pub load: Load,
    /// Connections.
    pub connections: usize,
    /// Timed requests.
    pub requests: usize,
    /// Requests per second (median of the runs); none for latency measures.
    pub rate: Option<f64>,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// The server process's CPU time per write (warm-up included), microseconds.
    pub server_cpu_us_per_write: Option<f64>,
    /// The subscribed client's CPU time per write, microseconds (stream on only).
    pub subscriber_cpu_us_per_write: Option<f64>,
    /// What went wrong without failing the run (the stream stalled).
    pub note: Option<String>,
}

/// One cell: a peer, a service size and a store.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// Who.
    pub peer: Peer,
    /// Keys of the written service.
    pub service_keys: usize,
    /// `empty` or e.g. `100x100`.
    pub store: String,
    /// What was measured.
    pub figures: Vec<Figures>,
}

impl Cell {
    /// The figures of `load`, if measured.
    pub fn get(&self, load: Load) -> Option<&Figures> {
        self.figures.iter().find(|f| f.load == load)
    }
}

/// The whole matrix.
#[derive(Clone, Debug, Serialize)]
pub struct MatrixReport {
    /// What was asked.
    pub selection: Selection,
    /// Every cell, confstore's and etcd's.
    pub cells: Vec<Cell>,
    /// `wrk -v`'s first line, or why wrk did not run.
    pub wrk: String,
    /// Whether wrk ran.
    pub wrk_ran: bool,
    /// etcd's version, or why it did not run.
    pub etcd: String,
    /// `confstore --version`.
    pub confstore: String,
}

/// A PUT of one value; returns the epoch of its receipt.
async fn put(conn: &mut HttpConn, key: &str, value: &str) -> Result<u64> {
    let body = serde_json::json!({ "value": value }).to_string();
    let answer = conn.send(Method::PUT, &format!("/api/v1/services/{SERVICE}/values/{key}"), Some(body), None).await?;
    let v: serde_json::Value = serde_json::from_slice(&answer).context("a PUT receipt that is not JSON")?;
    v["epoch"].as_u64().with_context(|| format!("a PUT receipt without an epoch: {v}"))
}

/// Everything one confstore cell holds while it is measured.
struct Confstore<'a> {
    server: Server,
    conn: HttpConn,
    sub: Option<Subscriber>,
    sel: &'a Selection,
    keys: usize,
}

impl Confstore<'_> {
    /// CPU seconds of (the server, the subscriber) so far.
    fn cpu(&self) -> (f64, Option<f64>) {
        (cpu::process_secs(self.server.pid()), self.sub.as_ref().map(Subscriber::cpu_secs))
    }

    /// With the stream on: one more write, and waits until the client applied it, so that
    /// everything written before is delivered (and its CPU time spent). Returns a note if
    /// it did not arrive within the deadline.
    async fn drain(&mut self) -> Result<Option<String>> {
        if let Some(sub) = &mut self.sub {
            let epoch = put(&mut self.conn, &service_key(0), &value("drain", 0, 0, self.sel.value_bytes)).await?;
            if sub.applied(epoch).await?.is_none() {
                let note = format!(
                    "STREAM STALLED: epoch {epoch}, written after the load, had not reached the subscribed client {}s later (it held epoch {}); see serve.log (--keep)",
                    subscriber::ARRIVAL_DEADLINE.as_secs(),
                    sub.epoch()
                );
                progress(&note);
                return Ok(Some(note));
            }
        }
        Ok(None)
    }

    /// Per-write CPU of the server and the subscriber since `before`.
    fn cpu_per_write(&self, before: (f64, Option<f64>), writes: f64) -> (f64, Option<f64>) {
        let after = self.cpu();
        let per = |a: f64, b: f64| (a - b) * 1e6 / writes.max(1.0);
        (per(after.0, before.0), after.1.zip(before.1).map(|(a, b)| per(a, b)))
    }

    async fn harness(&mut self, clients: usize, load: Load) -> Result<Figures> {
        let op = Op::PutKeys { keys: self.keys, value_bytes: self.sel.value_bytes };
        let counts = counts(self.sel, clients);
        let (mut runs, mut sub_cpu, mut note) = (Vec::new(), Vec::new(), None);
        for r in 0..self.sel.runs {
            let before = self.cpu();
            let conns = self.server.conns(clients).await?;
            let mut run = closed_loop(conns, op, counts, &format!("m{r}")).await.context("confstore")?;
            note = note.or(self.drain().await?);
            let (server, sub) = self.cpu_per_write(before, run.requests_total as f64);
            run.peer_cpu_us_per_request = Some(server);
            sub_cpu.extend(sub);
            runs.push(run);
        }
        Ok(Figures { note, ..figures(load, &runs, clients, mean(&sub_cpu)) })
    }

    async fn wrk(&mut self, bin: &Path, dir: &Path, connections: usize, threads: usize, load: Load) -> Result<Figures> {
        let params = wrk::Params {
            api: wrk::Api::Confstore { service: SERVICE, token: self.server.token() },
            value_bytes: self.sel.value_bytes,
            keys: self.keys,
            threads,
        };
        let before = self.cpu();
        let url = format!("http://{}", self.server.addr);
        let r = tokio::task::block_in_place(|| wrk::run(bin, dir, &url, &params, connections, self.sel.wrk_secs))?;
        let note = self.drain().await?;
        let (server, sub) = self.cpu_per_write(before, r.requests as f64);
        Ok(Figures { note, ..wrk_figures(load, &r, server, sub) })
    }

    /// One write at a time: sent → the subscribed client applied its epoch.
    async fn applied(&mut self) -> Result<Figures> {
        let sel = self.sel;
        let mut lat = Vec::with_capacity(sel.latency_writes);
        let (before, mut note, mut writes) = (self.cpu(), None, 0);
        for i in 0..sel.warmup + sel.latency_writes {
            let key = service_key(i % self.keys.max(1));
            let v = value("lat", 0, i, sel.value_bytes);
            let sent = Instant::now();
            let epoch = put(&mut self.conn, &key, &v).await?;
            writes += 1;
            let sub = self.sub.as_mut().context("no subscribed client")?;
            let Some(at) = sub.applied(epoch).await? else {
                let s = format!(
                    "STREAM STALLED: write {i} (epoch {epoch}) had not reached the client {}s later; measure stopped",
                    subscriber::ARRIVAL_DEADLINE.as_secs()
                );
                progress(&s);
                note = Some(s);
                break;
            };
            if i >= sel.warmup {
                lat.push(at.saturating_duration_since(sent).as_secs_f64() * 1e6);
            }
        }
        let (server, sub) = self.cpu_per_write(before, f64::from(writes));
        if note.is_some() {
            // The CPU of a wait for a version that never came is not a cost per write.
            return Ok(Figures { note, ..latency_figures(lat, None, None) });
        }
        Ok(latency_figures(lat, Some(server), sub))
    }
}

/// Counts for `clients` clients sharing the selection's writes and warm-up.
fn counts(sel: &Selection, clients: usize) -> Counts {
    Counts { warmup_per_client: sel.warmup.div_ceil(clients), ops_per_client: sel.writes.div_ceil(clients) }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn figures(load: Load, runs: &[Run], clients: usize, subscriber: Option<f64>) -> Figures {
    let s = Summary::of(runs, clients);
    Figures {
        load,
        connections: clients,
        requests: s.requests,
        rate: Some(s.rate.median),
        p50_ms: s.p50_ms,
        p99_ms: s.p99_ms,
        server_cpu_us_per_write: s.peer_cpu_us_per_request,
        subscriber_cpu_us_per_write: subscriber,
        note: None,
    }
}

fn wrk_figures(load: Load, r: &wrk::WrkRun, server: f64, subscriber: Option<f64>) -> Figures {
    Figures {
        load,
        connections: r.connections,
        requests: usize::try_from(r.requests).unwrap_or(usize::MAX),
        rate: Some(r.rate),
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        server_cpu_us_per_write: Some(server),
        subscriber_cpu_us_per_write: subscriber,
        note: None,
    }
}

fn latency_figures(mut lat_us: Vec<f64>, server: Option<f64>, subscriber: Option<f64>) -> Figures {
    lat_us.sort_by(f64::total_cmp);
    Figures {
        load: Load::Applied,
        connections: 1,
        requests: lat_us.len(),
        rate: None,
        p50_ms: percentile(&lat_us, 0.50) / 1e3,
        p99_ms: percentile(&lat_us, 0.99) / 1e3,
        server_cpu_us_per_write: server,
        subscriber_cpu_us_per_write: subscriber,
        note: None,
    }
}

/// A fresh directory for one cell.
fn cell_dir(env: &Env, name: &str) -> Result<PathBuf> {
    let dir = env.dir.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The wrk loads: (load, connections, threads).
const WRK_LOADS: [(Load, usize, usize); 2] = [(Load::Wrk1, 1, 1), (Load::Wrk16, 16, 2)];

async fn confstore_cell(sel: &Selection, env: &Env, keys: usize, store: Store, stream: bool) -> Result<Cell> {
    let name = format!("confstore-{}-{keys}-{}", if stream { "on" } else { "off" }, store.name());
    let dir = cell_dir(env, &name)?;
    let mqtt = format!("127.0.0.1:{}", process::free_ports(1)?[0]);
    let serve_args: &[&str] = if stream { &["--mqtt-listen", &mqtt] } else { &["--no-mqtt"] };
    let mut server = Server::start_with(&env.confstore_bin, &dir, serve_args)?;
    server.wait_ready(READY_DEADLINE).await?;
    let mut conn = HttpConn::connect(server.addr, server.token()).await?;
    let preloaded = Instant::now();
    preload::confstore(&mut conn, keys, store, sel.value_bytes).await?;
    progress(&format!("{name}: preloaded in {:.1} s", preloaded.elapsed().as_secs_f64()));
    let sub = if stream {
        let key = subscriber::public_key(&dir.join("confstore.env"))?;
        let rest = format!("http://{}", server.addr);
        Some(Subscriber::start(SERVICE, &key, &rest, server.token(), &format!("mqtt://{mqtt}")).await?)
    } else {
        None
    };
    let mut c = Confstore { server, conn, sub, sel, keys };
    if let Some(note) = c.drain().await? {
        anyhow::bail!("{name}: before any load: {note}");
    }
    if let Some(sub) = &c.sub {
        progress(&format!("{name}: the subscribed client holds epoch {}", sub.epoch()));
    }
    let peer = if stream { Peer::StreamOn } else { Peer::StreamOff };
    let mut cell = Cell { peer, service_keys: keys, store: store.name(), figures: Vec::new() };
    if sel.harness {
        for (clients, load) in [(1, Load::Harness1), (sel.writers, Load::HarnessN)] {
            progress(&format!("{name}: harness, {clients} connection(s), {} writes x {} runs", sel.writes, sel.runs));
            cell.figures.push(c.harness(clients, load).await?);
        }
    }
    if let Some(bin) = env.wrk_bin.as_deref().filter(|_| sel.wrk_secs > 0) {
        for (load, connections, threads) in WRK_LOADS {
            progress(&format!("{name}: wrk -c{connections} -t{threads} -d{}s", sel.wrk_secs));
            cell.figures.push(c.wrk(bin, &dir, connections, threads, load).await?);
        }
    }
    if stream && sel.latency_writes > 0 {
        progress(&format!("{name}: write -> applied, {} writes", sel.latency_writes));
        cell.figures.push(c.applied().await?);
    }
    let Confstore { server, sub, .. } = c;
    if let Some(sub) = sub {
        sub.stop().await;
    }
    server.stop()?;
    if !sel.keep {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(cell)
}

#[cfg(feature = "etcd")]
async fn etcd_cell(sel: &Selection, env: &Env, bin: &Path, keys: usize, store: Store) -> Result<(Cell, String)> {
    use confstore_bench::etcd::{Etcd, Read};
    use confstore_bench::harness::PREFIX;

    let name = format!("etcd-{keys}-{}", store.name());
    let dir = cell_dir(env, &name)?;
    let mut e = Etcd::start(bin, &dir)?;
    e.wait_ready(READY_DEADLINE).await?;
    let mut client = e.client().await?;
    preload::etcd(&mut client, keys, store, sel.value_bytes).await?;
    let mut cell = Cell { peer: Peer::Etcd, service_keys: keys, store: store.name(), figures: Vec::new() };
    let pid = e.pid();
    let per_write = |before: f64, writes: f64| (cpu::process_secs(pid) - before) * 1e6 / writes.max(1.0);
    if sel.harness {
        let op = Op::PutKeys { keys, value_bytes: sel.value_bytes };
        for (clients, load) in [(1, Load::Harness1), (sel.writers, Load::HarnessN)] {
            progress(&format!("{name}: harness, {clients} connection(s)"));
            let mut runs = Vec::new();
            for r in 0..sel.runs {
                let before = cpu::process_secs(pid);
                let conns = e.conns(clients, &Read::Get(format!("{PREFIX}{}", service_key(0)))).await?;
                let mut run = closed_loop(conns, op, counts(sel, clients), &format!("m{r}")).await.context("etcd")?;
                run.peer_cpu_us_per_request = Some(per_write(before, run.requests_total as f64));
                runs.push(run);
            }
            cell.figures.push(figures(load, &runs, clients, None));
        }
    }
    if let Some(wrk_bin) = env.wrk_bin.as_deref().filter(|_| sel.wrk_secs > 0) {
        for (load, connections, threads) in WRK_LOADS {
            progress(&format!("{name}: wrk -c{connections} -t{threads} -d{}s (JSON gateway)", sel.wrk_secs));
            let params =
                wrk::Params { api: wrk::Api::Etcd { prefix: PREFIX }, value_bytes: sel.value_bytes, keys, threads };
            let before = cpu::process_secs(pid);
            let r = tokio::task::block_in_place(|| {
                wrk::run(wrk_bin, &dir, &e.endpoint, &params, connections, sel.wrk_secs)
            })?;
            cell.figures.push(wrk_figures(load, &r, per_write(before, r.requests as f64), None));
        }
        // The gateway's writes are real puts of the script's values.
        let got = client.get(format!("{PREFIX}{}", service_key(0)), None).await?;
        let v = got.kvs().first().map(|kv| kv.value().to_vec()).unwrap_or_default();
        ensure!(
            v.starts_with(b"wrk-t"),
            "etcd holds no wrk value under {PREFIX}k00000: {:?}",
            String::from_utf8_lossy(&v)
        );
    }
    if sel.latency_writes > 0 {
        progress(&format!("{name}: put -> watch event, {} puts", sel.latency_writes));
        let before = cpu::process_secs(pid);
        let lat = etcd_watch_latency(&e, sel, keys).await?;
        let server = per_write(before, (sel.warmup + sel.latency_writes) as f64);
        cell.figures.push(latency_figures(lat, Some(server), None));
    }
    let version = e.version.clone();
    drop(client);
    e.stop()?;
    if !sel.keep {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok((cell, version))
}

/// One put at a time: sent → a watcher of the service's prefix has the event; microseconds.
#[cfg(feature = "etcd")]
async fn etcd_watch_latency(e: &confstore_bench::etcd::Etcd, sel: &Selection, keys: usize) -> Result<Vec<f64>> {
    use confstore_bench::harness::PREFIX;
    let mut watcher = e.client().await?;
    let mut writer = e.client().await?;
    let mut stream = watcher.watch(PREFIX, Some(etcd_client::WatchOptions::new().with_prefix())).await?;
    let (tx, mut rx) = tokio::sync::watch::channel((0i64, Instant::now()));
    let forward = tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let at = Instant::now();
            if let Some(rev) = resp.events().iter().filter_map(|ev| ev.kv().map(|kv| kv.mod_revision())).max() {
                tx.send_replace((rev, at));
            }
        }
    });
    let mut lat = Vec::with_capacity(sel.latency_writes);
    for i in 0..sel.warmup + sel.latency_writes {
        let key = format!("{PREFIX}{}", service_key(i % keys.max(1)));
        let sent = Instant::now();
        let res = writer.put(key, value("lat", 0, i, sel.value_bytes), None).await?;
        let rev = res.header().map_or(0, |h| h.revision());
        let got = tokio::time::timeout(subscriber::ARRIVAL_DEADLINE, rx.wait_for(|(r, _)| *r >= rev))
            .await
            .context("an etcd watch event did not arrive")?
            .context("the etcd watch ended")?;
        if i >= sel.warmup {
            lat.push(got.1.saturating_duration_since(sent).as_secs_f64() * 1e6);
        }
    }
    forward.abort();
    Ok(lat)
}

/// Runs every selected cell: per service size and store, etcd first, then confstore with
/// each stream setting.
pub async fn run(sel: Selection, env: &Env) -> Result<MatrixReport> {
    let (wrk, wrk_ran) = match &env.wrk_bin {
        _ if sel.wrk_secs == 0 => ("not run (wrk seconds = 0)".to_owned(), false),
        Some(bin) => (wrk_version(bin), true),
        None => {
            eprintln!(
                "server-bench: wrk is not installed (apt-get install wrk, or set WRK_BIN): the wrk rows are skipped"
            );
            ("ABSENT (apt-get install wrk): wrk rows skipped".to_owned(), false)
        }
    };
    let mut report = MatrixReport {
        selection: sel.clone(),
        cells: Vec::new(),
        wrk,
        wrk_ran,
        etcd: "not run".into(),
        confstore: String::new(),
    };
    for &keys in &sel.service_keys {
        for &store in &sel.stores {
            #[cfg(feature = "etcd")]
            if let Some(bin) = &env.etcd_bin {
                let (cell, version) = etcd_cell(&sel, env, bin, keys, store).await?;
                report.cells.push(cell);
                report.etcd = version;
            }
            for &stream in &sel.streams {
                report.cells.push(confstore_cell(&sel, env, keys, store, stream).await?);
            }
        }
    }
    #[cfg(not(feature = "etcd"))]
    {
        report.etcd = "not measured: built without --features etcd".into();
    }
    #[cfg(feature = "etcd")]
    if env.etcd_bin.is_none() {
        report.etcd = "not installed (apt-get install etcd-server)".into();
    }
    report.confstore = env.confstore_bin.display().to_string();
    Ok(report)
}

/// `wrk -v`'s first line (wrk prints its version and exits 1).
fn wrk_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "wrk".into())
}

/// Parses `on,off`.
pub fn parse_streams(s: &str) -> Result<Vec<bool>> {
    s.split(',')
        .map(|w| match w.trim() {
            "on" => Ok(true),
            "off" => Ok(false),
            other => anyhow::bail!("--stream: {other:?} is neither on nor off"),
        })
        .collect()
}

/// Parses `20,1000`.
pub fn parse_sizes(s: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .map(|w| w.trim().replace('_', "").parse::<usize>().with_context(|| format!("--service-keys: {w:?}")))
        .collect::<Result<_>>()?;
    ensure!(v.iter().all(|k| (1..=10_000).contains(k)), "--service-keys: each must be 1 to 10000");
    Ok(v)
}

/// Parses `empty,100x100`.
pub fn parse_stores(s: &str) -> Result<Vec<Store>> {
    s.split(',').map(|w| Store::parse(w.trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!(parse_streams("on,off").unwrap(), vec![true, false]);
        assert!(parse_streams("on,maybe").is_err());
        assert_eq!(parse_sizes("20, 1_000").unwrap(), vec![20, 1000]);
        assert!(parse_sizes("0").is_err());
        assert_eq!(parse_stores("empty,100x100").unwrap().len(), 2);
    }

    #[test]
    fn latency_figures_are_percentiles_in_ms() {
        let f = latency_figures((1..=100).map(|x| f64::from(x) * 1000.0).collect(), None, None);
        assert_eq!((f.p50_ms, f.p99_ms, f.requests, f.rate), (50.0, 99.0, 100, None));
    }
}
