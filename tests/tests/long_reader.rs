//! docs/testing.md row 12, checkpoint starvation and long readers, against the real `confstore
//! serve`, plain and under `litestream replicate -exec` with `ops/litestream.yml`.
//!
//! While writers append ~1 KB values over HTTP, three long readers run for
//! `LONG_READER_SECS`: a client of `GET /api/v1/export` that reads the first line and then
//! stops reading, a `confstore export` whose stdout pipe nobody drains, and a confstore
//! reader (`LogReader::snapshot`, the guarded read every confstore process uses) holding one
//! snapshot with a slow consumer. The server runs with `CONFSTORE_MAX_READ_SECS` at half of
//! `LONG_READER_SECS`. The test checks that:
//!
//! - the guard aborts the snapshot reader at the limit (`ReaderTooOld`, within 2 s after it);
//! - the stalled exports hold no read transaction: once the snapshot reader is gone the WAL
//!   is checkpointed and restarted from its start (its header's salts change) while both
//!   exports are still stalled, and no server read was ever aborted
//!   (`confstore_readers_aborted_total` is 0);
//! - `config.db-wal` stays at or under 64 MiB (`journal_size_limit`) throughout and after;
//! - write p99 ≤ 250 ms, and every write is answered 2xx;
//! - both exports, read to the end afterwards, are the complete log up to the head when they
//!   started, and pass `confstore verify --export`.
//!
//! Sizes: `LONG_READER_SECS` (CI 16; docs/testing.md row 60) and `LONG_READER_WRITES` (CI 2,000;
//! docs/testing.md row 10,000); the guard's limit is half the reader time (docs/testing.md: 30 s).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use confstore_log::{DbOptions, LogError, LogReader};
use serde_json::{Value, json};

/// `journal_size_limit` (crates/confstore-log/src/db.rs) and docs/testing.md row 12's bar.
const WAL_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// docs/testing.md row 12's bar for write latency.
const WRITE_P99_MAX: Duration = Duration::from_millis(250);
/// How late after its limit the guard may abort a reader.
const GUARD_SLACK: Duration = Duration::from_secs(2);
/// Events in the log before the readers start: an export of them (~2.7 KB a line, ~13 MB)
/// is far larger than everything that can buffer it — the client's unread receive window
/// (128 KiB here), the server's send buffer (at most 4 MiB), the export channel (64 lines)
/// and one chunk (1,000 events) — so a client that stops reading stops the server's sends.
/// They rewrite [`SEED_KEYS`] keys of their own service over and over: a long history, a
/// small state (the projections' work per write stays what it is in production).
const SEED_EVENTS: usize = 5_000;
const EXPORT_BYTES_MIN: usize = 12 * 1024 * 1024;
const SEED_KEYS: usize = 50;
const WRITERS: usize = 4;

/// The two runs share the machine's two cores: one at a time, or each distorts the
/// other's latencies.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn long_readers_cannot_starve_checkpoints() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    run(false);
}

#[test]
fn long_readers_cannot_starve_checkpoints_under_litestream() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    run(true);
}

fn run(with_litestream: bool) {
    let mode = if with_litestream { "litestream" } else { "plain" };
    let hold = Duration::from_secs(u64::try_from(env_count("LONG_READER_SECS", 16)).unwrap());
    let writes = env_count("LONG_READER_WRITES", 2_000);
    let guard = (hold / 2).max(Duration::from_secs(1));
    assert!(hold > guard, "LONG_READER_SECS must exceed the guard's limit");
    let scratch = Scratch::new(&format!("long-reader-{mode}"));
    let store = Store::in_dir(scratch.path());
    store.init();
    store.ok(&["service", "add", "web", "archive"]);
    let guard_secs = guard.as_secs().to_string();
    let server = Serving::start(&store, scratch.path(), with_litestream, &guard_secs);
    let token = admin_token(&store);
    let mut http = Http::new(server.addr).with_token(&token);
    seed(&mut http);
    let seeded_head = http.ok("GET", "/api/v1/head", None).json()["seq"].as_u64().unwrap();

    let wal = WalSampler::start(&store.db());
    let started = Instant::now();
    let api_export = StalledExport::start(server.addr, &token);
    let mut cli_export = StalledCliExport::start(&store);
    let snapshot_reader = spawn_snapshot_reader(&store.db(), guard, hold);
    let writers = Writers::start(server.addr, &token, writes, hold.mul_f64(0.9));

    // The guard aborts the snapshot reader at its limit.
    let (outcome, held) = snapshot_reader.join().unwrap();
    let age = match outcome {
        Err(LogError::ReaderTooOld { limit, age }) => {
            assert_eq!(limit, guard);
            age
        }
        other => panic!("[{mode}] the snapshot reader was not aborted by the guard: {other:?} after {held:?}"),
    };
    assert!(
        age >= guard && held <= guard + GUARD_SLACK,
        "[{mode}] aborted after {held:?} (age {age:?}), limit {guard:?}"
    );
    let wal_at_abort = wal.latest();

    // With that reader gone and both exports still stalled, the WAL is checkpointed and
    // restarted: nothing else holds it. (Under Litestream its own checkpoints do it, once one
    // catches up with the writes; the test's writes end after 0.9 × LONG_READER_SECS.)
    let mut nudged = Instant::now();
    let restarted = wait_for(hold + Duration::from_secs(30), || {
        if writers.done() && nudged.elapsed() > Duration::from_millis(500) {
            // A restart happens at the start of a write (serve's own, or Litestream's).
            let _ = http.send("PUT", "/api/v1/services/web/values/nudge", &json!({"value": value(0)}));
            nudged = Instant::now();
        }
        (wal.latest().salts != wal_at_abort.salts).then(Instant::now)
    });
    assert!(cli_export.still_running(), "[{mode}] `confstore export` finished although its pipe was not read");
    let restart_after_abort =
        restarted.map_or_else(|| "never".to_owned(), |t| format!("{:.2?}", t.duration_since(started + held)));

    // The stall lasts LONG_READER_SECS (or until the restart); then both exports are read to
    // the end.
    let stall_end = started + hold;
    poll_until("the stall to last LONG_READER_SECS", hold + Duration::from_secs(5), Duration::from_millis(50), || {
        (Instant::now() >= stall_end).then_some(())
    });
    let api_lines = api_export.finish();
    let cli_lines = cli_export.finish();
    let latencies = writers.join();
    // The WAL comes back under the limit (or never left it).
    let back_under = wait_for(Duration::from_secs(30), || (wal.latest().bytes <= WAL_BYTES_MAX).then_some(()));
    let final_wal = wal.latest();
    let samples = wal.stop();
    let max_wal = samples.iter().map(|s| s.bytes).max().unwrap_or(0);

    let metrics = http.get("/metrics").unwrap().text();
    let aborted = metric(&metrics, "confstore_readers_aborted_total");
    let failures = latencies.failures.clone();
    drop(server);

    for (name, lines) in [("GET /api/v1/export", &api_lines), ("confstore export", &cli_lines)] {
        check_export(&store, scratch.path(), name, lines, seeded_head);
    }
    let (p50, p99) = (percentile(&latencies.ok, 50), percentile(&latencies.ok, 99));
    eprintln!(
        "long_reader[{mode}]: reader {hold:?}, guard {guard:?} fired after {held:.2?}; \
         {} writes ({} acked, {} failed) p50 {p50:.1?} p99 {p99:.1?} max {:.1?}; \
         WAL max {:.1} MiB (at abort {:.1} MiB), restarted {restart_after_abort} after the reader ended, \
         final {:.1} MiB, {} samples, restarts at [{}]; \
         exports {} + {} lines; server readers aborted {aborted}",
        writes,
        latencies.ok.len(),
        failures.len(),
        latencies.ok.iter().max().copied().unwrap_or_default(),
        mib(max_wal),
        mib(wal_at_abort.bytes),
        mib(final_wal.bytes),
        samples.len(),
        restarts(&samples),
        api_lines.len(),
        cli_lines.len(),
    );
    assert!(
        restarted.is_some(),
        "[{mode}] the WAL was not restarted within LONG_READER_SECS + 30 s of the reader's end"
    );
    assert!(back_under.is_some(), "[{mode}] the WAL stayed above 64 MiB: {:.1} MiB", mib(final_wal.bytes));
    assert!(
        failures.is_empty(),
        "[{mode}] {} writes failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(latencies.ok.len(), writes, "[{mode}] every write is answered");
    assert!(max_wal <= WAL_BYTES_MAX, "[{mode}] the WAL reached {:.1} MiB", mib(max_wal));
    assert!(p99 <= WRITE_P99_MAX, "[{mode}] write p99 {p99:?} > {WRITE_P99_MAX:?}");
    assert_eq!(aborted, 0.0, "[{mode}] a server read ran past the guard's limit: the stalled export held one");
}

/// `confstore serve` with the guard at `guard_secs`, plain or under Litestream.
struct Serving {
    addr: SocketAddr,
    /// Killed when dropped.
    _server: Option<Server>,
    /// Stopped with SIGTERM when dropped (it stops serve).
    litestream: Option<Child>,
}

impl Serving {
    fn start(store: &Store, dir: &Path, with_litestream: bool, guard_secs: &str) -> Self {
        let env = [("CONFSTORE_MAX_READ_SECS", guard_secs)];
        if !with_litestream {
            let mut server = Server::start_env(store, &["--log-format", "json"], &env, &dir.join("serve.log"));
            server.wait_ready();
            return Serving { addr: server.addr, _server: Some(server), litestream: None };
        }
        let replica = dir.join("replica");
        std::fs::create_dir_all(&replica).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let serve = format!(
            "{} --data-dir {} --env-file {} serve --listen {addr} --no-mqtt --log-format json",
            bin().display(),
            store.data_dir.display(),
            store.env_file.display(),
        );
        let mut cmd = Command::new(common::litestream::bin());
        clean_env(&mut cmd);
        cmd.args(["replicate", "-config"])
            .arg(common::litestream::config())
            .arg("-exec")
            .arg(&serve)
            .envs(env)
            .env("CONFSTORE_DATA_DIR", &store.data_dir)
            .env("LITESTREAM_REPLICA_DIR", &replica)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.join("litestream.log")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.join("litestream.err")).unwrap()));
        let serving = Serving { addr, _server: None, litestream: Some(cmd.spawn().unwrap()) };
        let mut probe = Http::new(addr).with_timeout(Duration::from_secs(10));
        poll_until("serve under litestream to answer /readyz", SERVER_DEADLINE, Duration::from_millis(20), || {
            probe.get("/readyz").ok().filter(|r| r.status == 200)
        });
        serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(child) = &mut self.litestream {
            // SIGTERM: Litestream stops serve, syncs, and exits; SIGKILL only if it hangs.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let until = Instant::now() + SERVER_DEADLINE;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > until {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A ~1 KB JSON string value, different for each `n`.
fn value(n: usize) -> Value {
    let mut text = format!("{n:08}-");
    while text.len() < 1000 {
        text.push_str("long reader value ");
    }
    Value::String(text)
}

/// [`SEED_EVENTS`] events of ~1 KB in service `archive`, in changesets of [`SEED_KEYS`].
fn seed(http: &mut Http) {
    for batch in 0..SEED_EVENTS / SEED_KEYS {
        let set: serde_json::Map<String, Value> =
            (0..SEED_KEYS).map(|k| (format!("seed-{k}"), value(batch * SEED_KEYS + k))).collect();
        http.ok("PATCH", "/api/v1/services/archive/values", Some(&json!({"set": set, "reason": "seed"})));
    }
}

/// One reading of `config.db-wal`.
#[derive(Clone, Copy, Debug, Default)]
struct WalSample {
    /// Since the sampler started.
    at: Duration,
    bytes: u64,
    /// The WAL header's salts: they change each time the WAL is restarted from its start,
    /// i.e. after a checkpoint copied all of it into the database. (Its checkpoint sequence
    /// number is a per-connection counter: it may not rise when another process, such as
    /// Litestream, restarts the WAL.)
    salts: u64,
}

/// Reads the WAL's size and header every 20 ms on a thread, until stopped.
struct WalSampler {
    latest: Arc<Mutex<WalSample>>,
    all: Arc<Mutex<Vec<WalSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalSampler {
    fn start(db: &Path) -> Self {
        let path = PathBuf::from(format!("{}-wal", db.display()));
        let start = Instant::now();
        let latest = Arc::new(Mutex::new(read_wal(&path, WalSample::default(), start)));
        let all = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, a, s) = (Arc::clone(&latest), Arc::clone(&all), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let before = *l.lock().unwrap();
                let now = read_wal(&path, before, start);
                *l.lock().unwrap() = now;
                a.lock().unwrap().push(now);
                // Sampling pace, not synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { latest, all, stop, thread: Some(thread) }
    }

    fn latest(&self) -> WalSample {
        *self.latest.lock().unwrap()
    }

    fn stop(mut self) -> Vec<WalSample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.all.lock().unwrap())
    }
}

/// The WAL's size and salts (format: sqlite.org/fileformat.html#wal_file_format: two
/// big-endian u32 at offsets 16 and 20). A WAL truncated to nothing keeps the last salts seen.
fn read_wal(path: &Path, before: WalSample, start: Instant) -> WalSample {
    let at = start.elapsed();
    let Ok(mut f) = std::fs::File::open(path) else { return WalSample { at, bytes: 0, ..before } };
    let bytes = f.metadata().map_or(0, |m| m.len());
    let mut header = [0u8; 24];
    let salts = match f.read_exact(&mut header) {
        Ok(()) => u64::from_be_bytes([
            header[16], header[17], header[18], header[19], header[20], header[21], header[22], header[23],
        ]),
        Err(_) => before.salts,
    };
    WalSample { at, bytes, salts }
}

/// When the WAL restarted (its salts changed), as "12.3s".
fn restarts(samples: &[WalSample]) -> String {
    let times: Vec<String> = samples
        .windows(2)
        .filter(|w| w[1].salts != w[0].salts)
        .map(|w| format!("{:.1}s", w[1].at.as_secs_f64()))
        .collect();
    times.join(" ")
}

fn mib(bytes: u64) -> f64 {
    // Sizes far below 2^52: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / (1024.0 * 1024.0)
}

/// A confstore reader holding one snapshot (`LogReader::snapshot`) and consuming the log
/// slowly, so that it would take about twice `hold`; returns how the read ended and when.
fn spawn_snapshot_reader(
    db: &Path,
    limit: Duration,
    hold: Duration,
) -> std::thread::JoinHandle<(Result<u64, LogError>, Duration)> {
    let db = db.to_owned();
    std::thread::spawn(move || {
        let opts = DbOptions { max_read_age: limit, ..DbOptions::default() };
        let reader = LogReader::open_with(&db, &opts).unwrap();
        let pace = (hold * 2) / u32::try_from(SEED_EVENTS).unwrap();
        let start = Instant::now();
        let outcome = reader.snapshot(|r| {
            let mut n = 0;
            r.for_each_event(1, |_| {
                n += 1;
                // A slow consumer: pacing, not synchronisation.
                std::thread::sleep(pace);
                Ok(true)
            })?;
            Ok(n)
        });
        (outcome, start.elapsed())
    })
}

/// A client of `GET /api/v1/export` that read the response head and the first line, then
/// stopped reading.
struct StalledExport {
    stream: TcpStream,
    received: Vec<u8>,
}

impl StalledExport {
    fn start(addr: SocketAddr, token: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            stream,
            "GET /api/v1/export HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 512];
        while !head_and_first_line(&received) {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the export ended at once: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        }
        assert!(received.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&received));
        Self { stream, received }
    }

    /// Reads the rest; the body's lines.
    fn finish(mut self) -> Vec<String> {
        self.stream.read_to_end(&mut self.received).unwrap();
        let text = self.received;
        let split = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&text[..split]).to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let body = dechunk(&text[split..]);
        // More than every buffer between the export and this client could hold (see
        // SEED_EVENTS): the server really waited for the client.
        assert!(body.len() > EXPORT_BYTES_MIN, "the export is only {} bytes", body.len());
        String::from_utf8(body).unwrap().lines().map(str::to_owned).collect()
    }
}

fn head_and_first_line(received: &[u8]) -> bool {
    received.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|at| {
        let body = &received[at + 4..];
        // The chunk size line, then the header line of the export.
        body.iter().filter(|&&b| b == b'\n').count() >= 2
    })
}

/// Removes HTTP/1.1 chunked framing; panics unless the terminating chunk is there.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size_text = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size_text:?}: {e}"));
        rest = &rest[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `confstore export` writing to a pipe that is not read after the first line.
struct StalledCliExport {
    child: Child,
    stdout: BufReader<ChildStdout>,
    first: String,
}

impl StalledCliExport {
    fn start(store: &Store) -> Self {
        let mut cmd = store.command(&["export"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.contains("confstore-export/1"), "{first}");
        Self { child, stdout, first }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn finish(mut self) -> Vec<String> {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "confstore export: {status}");
        std::iter::once(self.first.trim_end().to_owned()).chain(rest.lines().map(str::to_owned)).collect()
    }
}

impl Drop for StalledCliExport {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An export is the whole log up to a head at or after `seeded_head`, in order, and verifies.
fn check_export(store: &Store, dir: &Path, name: &str, lines: &[String], seeded_head: u64) {
    let header: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(header["format"], "confstore-export/1", "{name}");
    let seqs: Vec<u64> =
        lines[1..].iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "{name}: the seqs are not 1..=n");
    assert!(seqs.len() as u64 >= seeded_head, "{name}: {} events, the log had {seeded_head} before", seqs.len());
    let file = dir.join(format!("{}.jsonl", name.replace(['/', ' '], "_")));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    store.ok(&[std::ffi::OsStr::new("verify"), std::ffi::OsStr::new("--export"), file.as_os_str()]);
}

/// What the writers measured.
struct Latencies {
    ok: Vec<Duration>,
    failures: Vec<String>,
}

/// [`WRITERS`] threads PUTting ~1 KB values, paced to spread `writes` over `over`.
struct Writers {
    threads: Vec<std::thread::JoinHandle<Latencies>>,
    done: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writers {
    fn start(addr: SocketAddr, token: &str, writes: usize, over: Duration) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let per_writer = writes / WRITERS;
        assert_eq!(per_writer * WRITERS, writes, "LONG_READER_WRITES must be a multiple of {WRITERS}");
        let interval = over / u32::try_from(per_writer.max(1)).unwrap();
        let threads = (0..WRITERS)
            .map(|w| {
                let (token, done) = (token.to_owned(), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut http = Http::new(addr).with_token(&token).with_timeout(Duration::from_secs(30));
                    let mut out = Latencies { ok: Vec::new(), failures: Vec::new() };
                    let start = Instant::now();
                    for i in 0..per_writer {
                        // Pacing the load: the i-th write is due at start + i * interval.
                        let due = start + interval * u32::try_from(i).unwrap();
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let path = format!("/api/v1/services/web/values/w{w}-{}", i % 16);
                        let sent = Instant::now();
                        match http.send("PUT", &path, &json!({"value": value(i)})) {
                            Ok(r) if r.is_success() => out.ok.push(sent.elapsed()),
                            Ok(r) => out.failures.push(format!("{} {}", r.status, r.text())),
                            Err(e) => out.failures.push(e.to_string()),
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    out
                })
            })
            .collect();
        Self { threads, done }
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed) == WRITERS
    }

    fn join(self) -> Latencies {
        let mut all = Latencies { ok: Vec::new(), failures: Vec::new() };
        for t in self.threads {
            let l = t.join().unwrap();
            all.ok.extend(l.ok);
            all.failures.extend(l.failures);
        }
        all.ok.sort();
        all
    }
}

/// Polls `attempt` every 20 ms until it gives a value or `deadline` passes (then `None`, so
/// the figures can still be printed before the test fails).
fn wait_for<T>(deadline: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = attempt() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() * p).div_ceil(100)).saturating_sub(1).min(sorted.len() - 1)]
}

/// The value of an unlabelled metric in a text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}
