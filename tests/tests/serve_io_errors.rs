//! docs/testing.md rows 4 and 3 through the server: I/O errors, then power cuts, inside a
//! running `confstore serve`. The library tests (crates/confstore-log/tests/io_errors.rs,
//! power_loss.rs) prove the store; this proves what a client of the server sees.
//!
//! The test build of the binary (`--features confstore/failpoints`) registers the fault VFS
//! (`confstore-faultvfs`, ADR 0023) when `CONFSTORE_FAULT_VFS` names a control file, and a
//! thread in it applies the commands the test writes there (`error <at> <write|fsync|full>
//! <once|persistent>`, `off`), acknowledging each in `<file>.ack`; the test waits for the
//! acknowledgement, never for time. The operation counter covers every SQLite file of the
//! process (the log and the search index), so
//! operation `n` is the n-th write, truncate or sync of any of them after the arm.
//!
//! One server, one data directory, one writer PUTting unique values
//! (`<fault>-<once|persistent>-<n>-n<counter>`) to 8 keys of one service over a kept-alive
//! connection. For each fault (`write`, `fsync`, `full`) × (`once`, `persistent`) and each
//! chosen operation number `n`:
//!
//! - arm the fault and keep writing (until a write failed and, when persistent, two more
//!   did too); every answer is a 2xx with a receipt or a 503 (the server maps an append
//!   that did not commit to 503 "the changeset was not committed"); nothing else, no dropped
//!   connection;
//! - while a persistent fault is armed and a write failed: `/readyz` answers 200 (reads are
//!   served) with `"ready": true` and `writes: {"failing": {"error", "at"}}`, and `/metrics`
//!   has `confstore_append_failing 1`;
//! - `off`: the next write is acknowledged (the same process, without a restart: the writer
//!   rolls back and reloads after a failed commit), and `/readyz` says `"writes":
//!   "accepted"` and `/metrics` `confstore_append_failing 0`;
//! - the process is still running.
//!
//! At the end the server is stopped (SIGTERM, exit 0) and started again without the fault
//! VFS, and: `PRAGMA integrity_check` is ok, the seqs are 1..N, `confstore verify` passes
//! over N events, `/readyz` is at seq N; in `GET /api/v1/events`, every acknowledged write
//! is at its receipt's seq with its value, no value appears twice, no value appears that no
//! request sent, and no refused write appears (a 503 says "it is not in the log"). The
//! server's log has no panic.
//!
//! For a once-fault, the write after the failed one is acknowledged with the fault still
//! armed (spent): the server recovers from a transient error by itself.
//!
//! The operation numbers: a clean run of 3 writes counts the operations they take (3 each
//! in a debug build); the window is `SERVE_IO_ERRORS_WRITES` writes' worth (default 8:
//! operations 1..=24). `SERVE_IO_ERRORS_POINTS` (default 12) operation numbers per fault ×
//! once or persistent, drawn from the window with `SERVE_IO_ERRORS_SEED`; every one when
//! the window is no larger (CI: 72 points, about 5 s; long: `SERVE_IO_ERRORS_WRITES=40
//! SERVE_IO_ERRORS_POINTS=100000`, all 720 points, about 70 s; a debug build on 2 shared
//! cores). Before the server is stopped, the search index and the LKG file (which the
//! faults hit too) must catch up in the same process. On failure the scratch directory
//! (data dir, serve.log, the control file) is kept.
//!
//! **Power loss through serve** (row 3; the second test). The hook's `powerloss <at>
//! <damage> <seed>` arms a power cut after operation `at`; once it happened (operation
//! `at + 1` and every later one of the process fail), the hook rewrites the unsynced bytes
//! of every SQLite file as the damage variant leaves them, keeping the power cut so no other
//! thread can write meanwhile, and aborts the process. Every operation of the fault VFS holds
//! its lock until the real file has done it, so the operations before the cut are complete
//! when the damage is applied. The disk a restart finds is then the one a power cut after
//! operation `at` would leave (the files outside SQLite aside: the LKG file, the head file,
//! which are written by tmp + fsync + rename; ADR 0023). What differs from a real cut: for
//! the few milliseconds between the cut and the abort the process still answers, every I/O
//! failing, so a write may get a 503 after the cut; such a 503, like a request with no
//! answer, is *in doubt* (a real cut would leave no answer): the test allows it in the log
//! once or not at all, and counts it. `SERVE_POWER_LOSS_RUNS` cuts (default 25, 5 per damage
//! variant; long e.g. 1000), each at an operation number drawn from the same window with
//! `SERVE_POWER_LOSS_SEED`, on one data directory, one writer PUTting until the connection
//! fails; after each cut serve must have aborted (no panic), start again, and pass every
//! check above with every acknowledged write (`synchronous=FULL`) present.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Http, HttpResponse, Rng, SERVER_DEADLINE, Scratch, Server, Store, env_count, poll_until, seed, str_of, u64_of,
};
use serde_json::{Value, json};

/// The one service written to.
const SERVICE: &str = "io";
/// Keys the writer cycles through.
const KEYS: u64 = 8;
/// Writes after `off` until one is acknowledged, at most.
const RECOVERY_WRITES_MAX: usize = 50;
/// How long the hook may take to acknowledge a command (it polls every 5 ms).
const ACK_DEADLINE: Duration = Duration::from_secs(20);

/// What became of one PUT.
#[derive(Clone, Debug)]
enum Outcome {
    /// 2xx with a receipt: in the log at `last_seq`.
    Acked { first_seq: u64, last_seq: u64 },
    /// 503: the server says it was not committed.
    Refused(String),
    /// A 503 or no answer after a power cut was armed: in the log once or not at all (a
    /// real power cut would have left no answer; the process lives a few milliseconds
    /// after the cut, with every I/O failing, before it aborts).
    InDoubt(String),
}

/// One PUT, by its (unique) value.
#[derive(Clone, Debug)]
struct Attempt {
    key: String,
    outcome: Outcome,
}

/// The control file of the fault VFS hook in the server.
struct Control {
    path: PathBuf,
    ack: PathBuf,
    next_id: u64,
}

impl Control {
    fn new(dir: &Path) -> Self {
        let path = dir.join("faultvfs.ctl");
        let ack = dir.join("faultvfs.ctl.ack");
        Self { path, ack, next_id: 1 }
    }

    /// Removes the control file and its acknowledgement, before a server starts (its hook
    /// would apply the last command again).
    fn clear(&self) {
        for f in [&self.path, &self.ack] {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("removing {}: {e}", f.display()),
                _ => {}
            }
        }
    }

    /// Sends `command` and waits for its acknowledgement; the operations the hook counted
    /// since the previous arm or reset.
    #[track_caller]
    fn send(&mut self, server: &mut Server, command: &str) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{id} {command}\n")).expect("writing the control file");
        std::fs::rename(&tmp, &self.path).expect("renaming the control file");
        let ack = poll_until(
            &format!("the fault VFS hook to apply {command:?}"),
            ACK_DEADLINE,
            Duration::from_millis(2),
            || {
                let text = std::fs::read_to_string(&self.ack).ok()?;
                let (got, rest) = text.trim().split_once(' ')?;
                (got == id.to_string()).then(|| rest.to_owned())
            },
        );
        assert!(server.exited().is_none(), "the server exited:\n{}", server.log_tail());
        let ops = ack.strip_prefix("ok ops=").unwrap_or_else(|| panic!("the hook refused {command:?}: {ack}"));
        ops.parse().unwrap_or_else(|e| panic!("the hook's acknowledgement {ack:?}: {e}"))
    }
}

/// The writer: one kept-alive connection, unique values, every outcome in the ledger.
struct Writer {
    http: Http,
    ledger: BTreeMap<String, Attempt>,
    sent: u64,
}

impl Writer {
    /// One PUT; whether it was acknowledged. Anything but a 2xx with a receipt or a 503 fails
    /// the test.
    #[track_caller]
    fn put(&mut self, server: &mut Server, point: &str) -> bool {
        self.attempt(server, point, false) == Some(true)
    }

    /// One PUT; whether it was acknowledged, `None` if no answer came. Without `cut` (a power
    /// cut armed) a missing answer fails the test; with it, it and a 503 are in doubt.
    #[track_caller]
    fn attempt(&mut self, server: &mut Server, point: &str, cut: bool) -> Option<bool> {
        let n = self.sent;
        self.sent += 1;
        let key = format!("k{}", n % KEYS);
        let value = format!("{point}-n{n}");
        let path = format!("/api/v1/services/{SERVICE}/values/{key}");
        let answer = match self.http.send("PUT", &path, &json!({ "value": value })) {
            Ok(answer) => answer,
            Err(e) if cut => {
                self.ledger.insert(value, Attempt { key, outcome: Outcome::InDoubt(format!("no answer: {e}")) });
                return None;
            }
            Err(e) => {
                panic!(
                    "{point}: PUT {key}={value}: no answer ({e}); exited: {:?}\n{}",
                    server.exited(),
                    server.log_tail()
                )
            }
        };
        let outcome = if answer.is_success() {
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            match (v["first_seq"].as_u64(), v["last_seq"].as_u64()) {
                (Some(first_seq), Some(last_seq)) => Outcome::Acked { first_seq, last_seq },
                _ => panic!("{point}: a 2xx without a receipt: {answer}"),
            }
        } else if answer.status == 503 && cut {
            Outcome::InDoubt(answer.text())
        } else if answer.status == 503 {
            Outcome::Refused(answer.text())
        } else {
            panic!("{point}: PUT {key}={value}: neither 2xx nor 503: {answer}\n{}", server.log_tail())
        };
        let acked = matches!(outcome, Outcome::Acked { .. });
        self.ledger.insert(value, Attempt { key, outcome });
        Some(acked)
    }
}

/// Counts over the run, for the summary.
#[derive(Default)]
struct Tally {
    points: usize,
    acked: usize,
    refused: usize,
    /// Points at which no armed write failed (the operation was the projector's, or a
    /// once-fault whose failed operation SQLite retried or did not need).
    no_write_failed: usize,
    /// Writes refused after `off`, before the first acknowledged one.
    refused_after_off: usize,
    /// `/readyz`'s `writes` under a persistent fault, the first time.
    failing_example: Option<String>,
    /// A 503's body, the first for each fault.
    refused_examples: BTreeMap<String, String>,
}

fn metrics_text(server: &Server) -> String {
    let resp = server.client().get("/metrics").expect("GET /metrics");
    assert_eq!(resp.status, 200, "GET /metrics: {resp}");
    resp.text()
}

fn readyz(server: &Server) -> HttpResponse {
    server.client().get("/readyz").expect("GET /readyz")
}

#[test]
fn io_errors_inside_serve_answer_503_stay_up_recover_and_lose_no_acknowledged_write() {
    let started = Instant::now();
    let window = env_count("SERVE_IO_ERRORS_WRITES", 8).max(1) as u64;
    let points_per = env_count("SERVE_IO_ERRORS_POINTS", 12).max(1);
    let seed = seed("SERVE_IO_ERRORS_SEED");
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("serve-io-errors");
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let mut control = Control::new(scratch.path());

    let Started { mut server, mut writer, token, base_seq, ops_per_write } =
        start_writing(&store, &mut control, &log, &[]);
    let span = ops_per_write * window;
    let numbers: Vec<u64> = (1..=span).collect();
    // A write takes at least two operations (a WAL write and its sync).
    let armed_writes_max = usize::try_from(span / 2 + 4).unwrap_or(usize::MAX);

    let mut tally = Tally::default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for persistent in [false, true] {
            for fault in ["write", "fsync", "full"] {
                let chosen: Vec<u64> = if points_per >= numbers.len() {
                    numbers.clone()
                } else {
                    let mut pool = numbers.clone();
                    (0..points_per).map(|_| pool.swap_remove(rng.index(pool.len()))).collect()
                };
                for at in chosen {
                    let persistence = if persistent { "persistent" } else { "once" };
                    let point = Point { fault, persistence, at, armed_writes_max };
                    run_point(&mut server, &mut control, &mut writer, &mut tally, &point);
                }
            }
        }
    }));
    if let Err(panic) = result {
        let kept = scratch.keep();
        eprintln!("SERVE_IO_ERRORS_SEED={seed}; kept {}: the data dir, serve.log, the control file", kept.display());
        std::panic::resume_unwind(panic);
    }

    // The projections (the search index, the LKG file), which the faults hit too, catch up
    // in the same process.
    let caught_up = server.wait_for("the search index and the LKG file to catch up", "/readyz", SERVER_DEADLINE, |r| {
        serde_json::from_slice::<Value>(&r.body)
            .is_ok_and(|v| v["projections"]["search"]["lag"] == 0 && v["projections"]["lkg"]["lag"] == 0)
    });
    let head = u64_of(&caught_up.json(), "seq");
    for (value, a) in &writer.ledger {
        if let (Outcome::Refused(body), Some((fault, _))) = (&a.outcome, value.split_once('-')) {
            tally.refused_examples.entry(fault.to_owned()).or_insert_with(|| body.clone());
        }
    }

    // Stop, restart without the fault VFS, and check the log against the ledger.
    let status = server.terminate();
    assert!(status.success(), "serve did not stop cleanly on SIGTERM ({status}):\n{}", server.log_tail());
    let serve_log = std::fs::read_to_string(&log).unwrap_or_default();
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let checked = check(&server, &token, &writer.ledger, base_seq);
    let panicked = serve_log.contains("panicked");
    match (checked, panicked) {
        (Ok(_), false) => {
            server.terminate();
            eprintln!(
                "serve I/O errors: {} points (operation numbers 1..={span}; a clean write took {ops_per_write} operations), \
                 {} writes acknowledged, {} refused with 503 ({} of them after the fault was cleared), {} points where \
                 no write failed; head seq {head}; {:.1} s\n\
                 503s said: {:?}\n/readyz under a persistent fault: \"writes\": {}",
                tally.points,
                tally.acked,
                tally.refused,
                tally.refused_after_off,
                tally.no_write_failed,
                started.elapsed().as_secs_f64(),
                tally.refused_examples,
                tally.failing_example.as_deref().unwrap_or("-"),
            );
            assert!(tally.refused > 0, "no write ever failed: the faults did not reach the appends");
        }
        (result, panicked) => {
            let kept = scratch.keep();
            panic!(
                "SERVE_IO_ERRORS_SEED={seed}: {}{}\nkept {}",
                if panicked { "the server's log shows a panic\n" } else { "" },
                result.err().unwrap_or_default(),
                kept.display()
            );
        }
    }
}

/// The damage variants of the fault VFS, as the hook names them.
const DAMAGES: [&str; 5] = ["drop-all", "keep-all", "tear-last", "random-sectors", "drop-all-zero-last"];

/// `serve` with the fault VFS hook on `control` (cleared first), ready.
fn start_faulty(store: &Store, control: &Control, log: &Path) -> Server {
    start_faulty_env(store, control, log, &[])
}

/// [`start_faulty`] with more environment variables.
fn start_faulty_env(store: &Store, control: &Control, log: &Path, env: &[(&str, &str)]) -> Server {
    control.clear();
    let ctl = control.path.to_string_lossy().into_owned();
    let mut all = vec![("CONFSTORE_FAULT_VFS", ctl.as_str())];
    all.extend_from_slice(env);
    let mut server = Server::start_env(store, &[], &all, log);
    server.wait_ready();
    server
}

/// A server with the fault VFS, its service, a writer, and what a clean write costs.
struct Started {
    server: Server,
    writer: Writer,
    token: String,
    /// `/readyz`'s seq once the service is registered.
    base_seq: u64,
    /// Operations one write takes with no fault armed (projector included, as far as it ran;
    /// measured over three writes).
    ops_per_write: u64,
}

/// Starts `serve` on a new store with the fault VFS (and `env`), registers the service and
/// measures three clean writes.
fn start_writing(store: &Store, control: &mut Control, log: &Path, env: &[(&str, &str)]) -> Started {
    let mut server = start_faulty_env(store, control, log, env);
    server.admin().ok("POST", "/api/v1/services", Some(&json!({ "name": SERVICE })));
    let base_seq = u64_of(&server.wait_ready().0, "seq");
    let token = common::admin_token(store);
    let mut writer = Writer { http: Http::new(server.addr).with_token(&token), ledger: BTreeMap::new(), sent: 0 };
    control.send(&mut server, "off");
    for _ in 0..3 {
        assert!(writer.put(&mut server, "clean"), "a write failed with no fault armed");
    }
    let ops_per_write = (control.send(&mut server, "off") / 3).max(1);
    Started { server, writer, token, base_seq, ops_per_write }
}

#[test]
fn a_power_cut_inside_serve_loses_no_acknowledged_write() {
    let started = Instant::now();
    let runs = env_count("SERVE_POWER_LOSS_RUNS", 25);
    let window = env_count("SERVE_IO_ERRORS_WRITES", 8).max(1) as u64;
    let seed = seed("SERVE_POWER_LOSS_SEED");
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("serve-power-loss");
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let mut control = Control::new(scratch.path());

    let Started { mut server, mut writer, token, base_seq, ops_per_write } =
        start_writing(&store, &mut control, &log, &[]);
    let span = ops_per_write * window;
    let (mut acked, mut in_doubt, mut in_doubt_present) = (0, 0, (0, 0));
    for run in 0..runs {
        let damage = DAMAGES[run % DAMAGES.len()];
        let at = rng.between(1, span);
        let point = format!("cut{run}-{damage}-{at}");
        control.send(&mut server, &format!("powerloss {at} {damage} {}", rng.next_u64()));
        let mut answered = 0;
        while let Some(ok) = writer.attempt(&mut server, &point, true) {
            answered += 1;
            acked += usize::from(ok);
            assert!(answered <= span + 50, "{point}: the power was never cut:\n{}", server.log_tail());
        }
        let status = poll_until(
            &format!("{point}: serve to abort after the cut"),
            SERVER_DEADLINE,
            Duration::from_millis(5),
            || server.exited(),
        );
        let text = server.log_text();
        assert!(
            !status.success()
                && text.contains("fault VFS: the power was cut")
                && text.contains("(Ok(())); aborting")
                && !text.contains("panicked"),
            "{point}: serve ended otherwise ({status}):\n{}",
            server.log_tail()
        );
        in_doubt = writer.ledger.values().filter(|a| matches!(a.outcome, Outcome::InDoubt(_))).count();
        server = start_faulty(&store, &control, &log);
        writer.http = Http::new(server.addr).with_token(&token);
        match check(&server, &token, &writer.ledger, base_seq) {
            Ok(present) => in_doubt_present = present,
            Err(why) => {
                let kept = scratch.keep();
                let examples: Vec<&String> = writer
                    .ledger
                    .values()
                    .filter_map(|a| match &a.outcome {
                        Outcome::InDoubt(why) => Some(why),
                        _ => None,
                    })
                    .take(3)
                    .collect();
                panic!(
                    "SERVE_POWER_LOSS_SEED={seed}: {point}: {why}\nwrites in doubt, e.g. {examples:?}\nkept {}",
                    kept.display()
                );
            }
        }
    }
    let status = server.terminate();
    assert!(status.success(), "serve did not stop cleanly on SIGTERM ({status}):\n{}", server.log_tail());
    eprintln!(
        "serve power loss: {runs} cuts (operation numbers 1..={span}, 5 damage variants), {acked} writes acknowledged \
         under an armed cut, {in_doubt} in doubt (a 503 after the cut or no answer; in the log: {} answered 503, \
         {} not answered); {:.1} s",
        in_doubt_present.0,
        in_doubt_present.1,
        started.elapsed().as_secs_f64()
    );
    assert!(acked > 0, "no write was acknowledged before a cut: the test tests nothing");
}

/// One fault at one operation number.
struct Point<'a> {
    fault: &'a str,
    persistence: &'a str,
    at: u64,
    /// Writes sent after arming, at most, waiting for one to fail.
    armed_writes_max: usize,
}

/// One fault at one operation number, then its clearing.
fn run_point(server: &mut Server, control: &mut Control, writer: &mut Writer, tally: &mut Tally, p: &Point<'_>) {
    let point = format!("{}-{}-{}", p.fault, p.persistence, p.at);
    let persistent = p.persistence == "persistent";
    tally.points += 1;
    control.send(server, &format!("error {} {} {}", p.at, p.fault, p.persistence));
    let mut failed = 0;
    for _ in 0..p.armed_writes_max {
        if writer.put(server, &point) {
            tally.acked += 1;
            // A persistent fault, once hit, fails every later append.
            assert!(!(persistent && failed > 0), "{point}: a write was acknowledged after a persistent fault hit");
        } else {
            failed += 1;
            tally.refused += 1;
        }
        if failed >= if persistent { 3 } else { 1 } {
            break;
        }
    }
    if persistent {
        assert!(failed > 0, "{point}: no write failed in {} under a persistent fault", p.armed_writes_max);
        let ready = readyz(server);
        let body = ready.json();
        assert!(ready.status == 200 && body["ready"] == json!(true), "{point}: /readyz while writes fail: {ready}");
        let error = body["writes"]["failing"]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty() && body["writes"]["failing"]["at"].is_string(), "{point}: /readyz: {ready}");
        tally.failing_example.get_or_insert_with(|| body["writes"].to_string());
        let metrics = metrics_text(server);
        assert!(metrics.lines().any(|l| l == "confstore_append_failing 1"), "{point}: /metrics:\n{metrics}");
    }
    if failed == 0 {
        tally.no_write_failed += 1;
    } else if !persistent {
        // One failed operation: the next write commits, with the fault still armed (spent).
        let next = writer.put(server, &format!("{point}-next"));
        assert!(next, "{point}: the write after a once-fault failed too");
        tally.acked += 1;
        let ready = readyz(server);
        assert!(ready.json()["writes"] == json!("accepted"), "{point}: /readyz after a write committed again: {ready}");
    }

    control.send(server, "off");
    let mut recovered = false;
    for _ in 0..RECOVERY_WRITES_MAX {
        if writer.put(server, &format!("{point}-off")) {
            tally.acked += 1;
            recovered = true;
            break;
        }
        tally.refused += 1;
        tally.refused_after_off += 1;
    }
    assert!(recovered, "{point}: no write acknowledged in {RECOVERY_WRITES_MAX} after the fault cleared");
    let ready = readyz(server);
    assert!(
        ready.status == 200 && ready.json()["writes"] == json!("accepted"),
        "{point}: /readyz after a write committed again: {ready}"
    );
    let metrics = metrics_text(server);
    assert!(metrics.lines().any(|l| l == "confstore_append_failing 0"), "{point}: /metrics:\n{metrics}");
    assert!(server.exited().is_none(), "{point}: the server exited:\n{}", server.log_tail());
}

/// Every check, with the restarted server running. Returns how many writes in doubt are in
/// the log (each once): those answered 503, those not answered.
fn check(
    server: &Server,
    token: &str,
    ledger: &BTreeMap<String, Attempt>,
    base_seq: u64,
) -> Result<(usize, usize), String> {
    let db = server.store.db();
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("opening {} read-only: {e}", db.display()))?;
    let seqs = common::store::integrity_ok_seqs(&conn)?;
    drop(conn);
    let n_events = seqs.len() as u64;
    if !seqs.iter().zip(1..).all(|(&s, want)| s == want) {
        return Err(format!("seqs are not gap-free 1..={n_events}"));
    }
    let run = server.store.run(&["verify", "--json"]);
    if !run.status.success() || run.json()["ok"] != json!(true) || u64_of(&run.json(), "events") != n_events {
        return Err(format!("confstore verify failed or counted other than {n_events} events:\n{run}"));
    }
    let mut http = Http::new(server.addr).with_token(token);
    let ready = http.get("/readyz").map_err(|e| format!("/readyz: {e}"))?;
    if ready.status != 200 || ready.json()["seq"] != json!(n_events) {
        return Err(format!("/readyz is not at seq {n_events}: {ready}"));
    }

    // seq -> (key, value) of the service's value events.
    let mut events: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut after = 0;
    loop {
        let path = format!("/api/v1/events?after={after}&limit=1000");
        let page = http.get(&path).map_err(|e| format!("GET {path}: {e}"))?;
        if page.status != 200 {
            return Err(format!("GET {path}: {page}"));
        }
        let page = page.json();
        for e in page["events"].as_array().into_iter().flatten() {
            let kind = &e["event"]["kind"];
            if kind["type"] == "value_set" && kind["service"] == SERVICE {
                let value = kind["value"].as_str().unwrap_or("<not a string>").to_owned();
                events.insert(u64_of(e, "seq"), (str_of(kind, "key").to_owned(), value));
            }
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }

    let mut problems = String::new();
    let mut in_doubt_present = (0, 0);
    let mut written: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seq, (key, value)) in &events {
        written.entry(value.as_str()).or_default().push(*seq);
        match ledger.get(value) {
            None if *seq > base_seq => {
                let _ = writeln!(problems, "event {seq} sets {key}={value:?}, which no request sent");
            }
            Some(a) if a.key != *key => {
                let _ = writeln!(problems, "event {seq} sets {key}={value:?}, sent for key {}", a.key);
            }
            _ => {}
        }
    }
    for (value, seqs) in &written {
        if seqs.len() > 1 {
            let _ = writeln!(problems, "{value:?} is in the log {} times, at seqs {seqs:?}", seqs.len());
        }
    }
    for (value, a) in ledger {
        match &a.outcome {
            Outcome::Acked { first_seq, last_seq } => {
                let at = events.get(last_seq);
                if first_seq != last_seq || at != Some(&(a.key.clone(), value.clone())) {
                    let _ = writeln!(
                        problems,
                        "{}={value:?} was acknowledged at seqs {first_seq}..={last_seq}, but event {last_seq} is {at:?}",
                        a.key
                    );
                }
            }
            Outcome::Refused(why) if written.contains_key(value.as_str()) => {
                let _ = writeln!(problems, "{}={value:?} was refused ({why}) but is in the log", a.key);
            }
            Outcome::InDoubt(why) if written.contains_key(value.as_str()) => {
                if why.starts_with("no answer") {
                    in_doubt_present.1 += 1;
                } else {
                    in_doubt_present.0 += 1;
                }
            }
            Outcome::Refused(_) | Outcome::InDoubt(_) => {}
        }
    }
    if problems.is_empty() { Ok(in_doubt_present) } else { Err(problems) }
}

/// Every value set on the service in the database, by seq, read straight from the file
/// (the server may be in its read-only fallback, which serves no events); and the head.
fn values_in_db(store: &Store) -> (u64, BTreeMap<u64, String>) {
    let reader = confstore_log::LogReader::open(&store.db()).expect("opening the database to read it");
    let head = reader.head().expect("the database's head").seq;
    let verified = reader.verify(None, &mut |_| ()).expect("reading the log to verify it");
    assert!(verified.is_ok(), "the log does not verify after the power cut: {verified:?}");
    let mut values = BTreeMap::new();
    let mut from = 1;
    while from <= head {
        let chunk = reader.events_chunk(from, head).expect("reading events");
        let Some(last) = chunk.last() else { break };
        from = last.seq + 1;
        for ev in &chunk {
            let body = confstore_core::EventBody::decode(&ev.body).expect("a stored body decodes");
            if let confstore_core::EventKind::ValueSet { service, value_json, .. } = body.kind
                && service == SERVICE
            {
                values.insert(ev.seq, serde_json::from_str::<String>(&value_json).unwrap_or(value_json));
            }
        }
    }
    (head, values)
}

/// docs/testing.md row 3, `synchronous=NORMAL` through serve: SQLite then syncs the WAL only
/// at checkpoints, so a power cut may lose the newest acknowledged commits. Bar: only a
/// tail is lost (the database verifies, and holds every acknowledged write up to its head,
/// each at its seq), and whenever a record of the head kept outside the database (the LKG
/// file's high-water mark, the publisher checkpoint) names a later seq, `serve` does not
/// come up live on the shorter log: it serves read-only from the LKG file and `/readyz`
/// says which events are missing. Each run on a new data directory: a few writes, the LKG
/// file caught up with them, then the cut (`SERVE_POWER_LOSS_NORMAL_RUNS`, default 10, 2
/// per damage variant).
#[test]
fn a_power_cut_with_synchronous_normal_loses_only_a_tail_and_says_so() {
    let started = Instant::now();
    let runs = env_count("SERVE_POWER_LOSS_NORMAL_RUNS", 10);
    let seed = seed("SERVE_POWER_LOSS_NORMAL_SEED");
    let mut rng = Rng::new(seed);
    let (mut acked, mut lost_runs, mut lost_writes, mut reported) = (0, 0, 0, 0);
    for run in 0..runs {
        let mut scratch = Scratch::new("serve-power-loss-normal");
        let store = Store::in_dir(scratch.path());
        let log = scratch.path().join("serve.log");
        let mut control = Control::new(scratch.path());
        let normal = ("CONFSTORE_SYNCHRONOUS", "normal");
        let Started { mut server, mut writer, ops_per_write, .. } =
            start_writing(&store, &mut control, &log, &[normal]);
        let span = ops_per_write * 8;
        // Writes the LKG file then records (its high-water mark is fsynced), which NORMAL
        // has not synced in the database: a cut may take them from the database only.
        for _ in 0..rng.between(1, 5) {
            assert!(writer.put(&mut server, "recorded"), "a write failed with no fault armed");
        }
        server.wait_lkg_current();
        let damage = DAMAGES[run % DAMAGES.len()];
        let at = rng.between(1, span);
        let point = format!("normal{run}-{damage}-{at}");
        control.send(&mut server, &format!("powerloss {at} {damage} {}", rng.next_u64()));
        let mut answered = 0;
        while writer.attempt(&mut server, &point, true).is_some() {
            answered += 1;
            assert!(answered <= span + 50, "{point}: the power was never cut:\n{}", server.log_tail());
        }
        poll_until(&format!("{point}: serve to abort"), SERVER_DEADLINE, Duration::from_millis(5), || server.exited());
        control.clear();
        let hwm: u64 = std::fs::read_to_string(store.data_dir.join("config.lkg.hwm"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);

        let (head, in_db) = values_in_db(&store);
        let mut lost = Vec::new();
        for (value, a) in &writer.ledger {
            if let Outcome::Acked { last_seq, .. } = a.outcome {
                acked += 1;
                if last_seq > head {
                    lost.push(last_seq);
                } else if in_db.get(&last_seq) != Some(value) {
                    let kept = scratch.keep();
                    panic!(
                        "SERVE_POWER_LOSS_NORMAL_SEED={seed}: {point}: acknowledged {value} at seq {last_seq} is not there \
                         (head {head}): the loss is not a tail\nkept {}",
                        kept.display()
                    );
                }
            }
        }
        let mut server = Server::start_env(&store, &[], &[normal], &log);
        server.wait_answering();
        let ready: Value = server.client().get("/readyz").expect("GET /readyz").json();
        let fallback = ready["mode"] == "read_only_fallback";
        if hwm > head {
            // A record outside the database names a later seq: never live on the shorter log.
            assert!(
                fallback && ready["writes"]["refused"].as_str().is_some_and(|t| t.contains("are missing")),
                "{point}: the database (head {head}) is behind the high-water mark {hwm}, yet /readyz says {ready}"
            );
            reported += 1;
        } else if !fallback {
            server.wait_ready();
        }
        if !lost.is_empty() {
            lost_runs += 1;
            lost_writes += lost.len();
        }
        server.terminate();
    }
    eprintln!(
        "serve power loss with synchronous=NORMAL: {runs} cuts, {acked} writes acknowledged, {lost_writes} of them lost \
         in {lost_runs} cuts (always a tail); {reported} cuts left the database behind the LKG high-water mark and \
         serve said so; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(acked > 0, "no write was acknowledged: the test tests nothing");
}
