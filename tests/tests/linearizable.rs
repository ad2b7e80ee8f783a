//! docs/testing.md row 21: compare-and-set over HTTP is linearizable while `confstore serve`
//! is killed (SIGKILL, then restarted on the same data directory) and frozen (SIGSTOP, then
//! SIGCONT), and no acknowledged write is lost.
//!
//! Ten clients, each with its own kept-alive connection, run for `LINEARIZABLE_SECS` against
//! five keys of one service: reads (`GET .../values/{key}`, which answers the value and the
//! store's epoch read together), unconditional writes (`PUT`), and compare-and-set writes
//! (`PUT` with `If-Match: <epoch>`, the epoch the client last saw). Every value written is
//! unique. A nemesis (this test's main thread) acts every 5–10 s, alternating: SIGKILL and a
//! restart (the clients follow the server to its new port), or SIGSTOP for 0.5–2 s and
//! SIGCONT. Each client waits a random think time between its operations (mean
//! `LINEARIZABLE_THINK_MS`; Jepsen's "stagger"), which keeps a 60 s history small enough for
//! the checker while leaving operations of different clients overlapping.
//!
//! Every invocation and every answer is recorded in one real-time-ordered history. What the
//! answers mean:
//! - 2xx: the operation happened, with the epoch it answered (a write's receipt epoch is the
//!   new epoch; a read's is the epoch it read at).
//! - 409 to a compare-and-set: it did not happen, and `current_epoch` was the store's epoch
//!   when it was refused (a read).
//! - A refused connection (the server is down): the request was never sent, no effect.
//! - Anything else (a reset connection at a kill, a timeout, a 5xx): unknown. A read with an
//!   unknown outcome has no effect and is left out. A write with an unknown outcome is
//!   looked up in the log after the run (values are unique): if it is there it happened, at
//!   the epoch of its event, at some moment after its invocation (its answer goes at the end
//!   of the history); if not, it never happened and is left out.
//!
//! The history is then checked against a sequential model of the store (its epoch and the
//! five values: If-Match compares the store-wide epoch, so the keys are one object, not five)
//! with `todc-utils`' implementation of the Wing–Gong–Lowe linearizability checker (ADR 0022).
//! After the run every acknowledged write must be in the log at its epoch with its value, and
//! no value may be in the log twice or without having been written.
//!
//! `LINEARIZABLE_RUNS` (default 2, the CI count; the bar is 20), `LINEARIZABLE_SECS` (default
//! 20 in CI; the bar's runs are 60 s), `LINEARIZABLE_THINK_MS` (default 50),
//! `LINEARIZABLE_SEED` (replays the nemesis and the clients' choices, not the timing). A failing
//! run keeps its data directory, the server's log and `history.txt` (the checked history).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{COMMAND_DEADLINE, Http, Rng, Scratch, Server, Store, admin_token, env_count, run_with_deadline, seed};
use serde_json::json;
use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::specifications::Specification;

/// Concurrent clients.
const CLIENTS: usize = 10;
/// Keys of the one service (`k0`..`k4`).
const KEYS: usize = 5;
/// The service.
const SERVICE: &str = "lin";
/// Longer than the longest SIGSTOP, so a frozen server only delays answers; a request
/// unanswered this long is an unknown outcome.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The checker explores interleavings; a history it cannot decide in this time fails the run.
const CHECK_DEADLINE: Duration = Duration::from_secs(300);

// ---- the sequential model --------------------------------------------------------------

/// The store as the clients see it: its epoch and the five values (value ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Model {
    epoch: u64,
    values: [u64; KEYS],
}

/// One operation with its outcome (what the checker replays against the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// The whole service at an epoch (`GET /api/v1/state`): the first operation of a history
    /// sets the model's initial state, later ones must match it.
    ReadAll(Model),
    /// `GET` of a key: its value at `epoch`.
    Get { key: usize, value: u64, epoch: u64 },
    /// An unconditional `PUT` that happened, making `epoch`.
    Put { key: usize, value: u64, epoch: u64 },
    /// `PUT` with `If-Match: expected` that happened, making `epoch`.
    CasApplied { key: usize, value: u64, expected: u64, epoch: u64 },
    /// `PUT` with `If-Match: expected` refused with 409 at `current`.
    CasConflict { key: usize, value: u64, expected: u64, current: u64 },
}

/// The sequential specification: each operation is legal in a state, and moves it.
struct StoreSpec;

impl Specification for StoreSpec {
    type State = Option<Model>;
    type Operation = Op;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &Op, state: &Option<Model>) -> (bool, Option<Model>) {
        let Some(s) = *state else {
            return match *op {
                Op::ReadAll(m) => (true, Some(m)),
                _ => (false, None),
            };
        };
        let set = |key: usize, value: u64, epoch: u64| {
            let mut next = s;
            next.values[key] = value;
            next.epoch = epoch;
            Some(next)
        };
        match *op {
            Op::ReadAll(m) => (m == s, *state),
            Op::Get { key, value, epoch } => (s.epoch == epoch && s.values[key] == value, *state),
            Op::Put { key, value, epoch } => {
                if s.epoch + 1 == epoch {
                    (true, set(key, value, epoch))
                } else {
                    (false, *state)
                }
            }
            Op::CasApplied { key, value, expected, epoch } => {
                if s.epoch == expected && epoch == expected + 1 {
                    (true, set(key, value, epoch))
                } else {
                    (false, *state)
                }
            }
            Op::CasConflict { expected, current, .. } => (s.epoch == current && current != expected, *state),
        }
    }
}

// ---- recording -------------------------------------------------------------------------

/// A write whose outcome the client could not learn.
#[derive(Clone, Copy, Debug)]
struct Unknown {
    key: usize,
    value: u64,
    expected: Option<u64>,
}

/// What became of one invocation.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Not answered yet.
    Pending,
    /// A definite answer.
    Known(Op),
    /// Had no effect (never sent, or a read without an answer).
    NoEffect,
    /// A write that may or may not have happened: looked up in the log.
    Unknown(Unknown),
}

/// The history: every invocation's outcome, and the real-time order of invocations and
/// answers (an index into `ops`, and whether it is the answer). Both are appended under one
/// lock: an answer recorded before an invocation was recorded really came before it.
#[derive(Default)]
struct Recorder {
    ops: Vec<Outcome>,
    order: Vec<(usize, bool)>,
}

impl Recorder {
    fn invoke(&mut self) -> usize {
        let id = self.ops.len();
        self.ops.push(Outcome::Pending);
        self.order.push((id, false));
        id
    }

    fn answer(&mut self, id: usize, outcome: Outcome) {
        self.ops[id] = outcome;
        self.order.push((id, true));
    }
}

/// Where the server listens now; `generation` grows with every restart.
struct Target {
    addr: SocketAddr,
    generation: u64,
}

/// What the clients and the nemesis share.
struct Shared {
    token: String,
    target: Mutex<Target>,
    moved: Condvar,
    stop: AtomicBool,
    history: Mutex<Recorder>,
    next_value: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a request failed before it was sent (the connection was refused).
fn never_sent(e: &std::io::Error) -> bool {
    e.get_ref().and_then(|inner| inner.downcast_ref::<reqwest::Error>()).is_some_and(reqwest::Error::is_connect)
}

/// One request a client sends.
#[derive(Clone, Copy, Debug)]
enum Request {
    /// `GET` of a key.
    Read { key: usize },
    /// `PUT` of a unique value, with `If-Match: expected` if given.
    Write(Unknown),
}

/// What an answer (or the lack of one) says about `request`.
fn outcome(request: Request, answer: &std::io::Result<common::HttpResponse>) -> Outcome {
    let r = match answer {
        Ok(r) => r,
        Err(e) if never_sent(e) => return Outcome::NoEffect,
        // No answer: a read had no effect; a write may have happened.
        Err(_) => {
            return match request {
                Request::Read { .. } => Outcome::NoEffect,
                Request::Write(w) => Outcome::Unknown(w),
            };
        }
    };
    match request {
        Request::Read { key } => {
            assert_eq!(r.status, 200, "a read of a set key answered other than 200: {r}");
            let v = r.json();
            match (v["value"].as_u64(), v["epoch"].as_u64()) {
                (Some(value), Some(epoch)) => Outcome::Known(Op::Get { key, value, epoch }),
                _ => panic!("a read answered without a value and an epoch: {r}"),
            }
        }
        Request::Write(w @ Unknown { key, value, expected }) => match (r.status, expected) {
            (200, _) => {
                let epoch = r.json()["epoch"].as_u64().unwrap_or_else(|| panic!("a receipt without an epoch: {r}"));
                Outcome::Known(match expected {
                    None => Op::Put { key, value, epoch },
                    Some(expected) => Op::CasApplied { key, value, expected, epoch },
                })
            }
            (409, Some(expected)) => {
                let current =
                    r.json()["current_epoch"].as_u64().unwrap_or_else(|| panic!("a 409 without current_epoch: {r}"));
                Outcome::Known(Op::CasConflict { key, value, expected, current })
            }
            // A failed append is answered 5xx and may or may not be in the log.
            (s, _) if (500..600).contains(&s) => Outcome::Unknown(w),
            _ => panic!("a write answered neither 200, 409 nor 5xx: {r}"),
        },
    }
}

/// One client: operations until `stop`.
fn client(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    let think_ms = u64::try_from(env_count("LINEARIZABLE_THINK_MS", 50)).unwrap_or(50);
    let connect = |t: &Target| Http::new(t.addr).with_token(&shared.token).with_timeout(REQUEST_TIMEOUT);
    let (mut http, mut generation) = {
        let t = lock(&shared.target);
        (connect(&t), t.generation)
    };
    // The epoch this client last saw: what its compare-and-sets expect.
    let mut seen_epoch = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let key = rng.index(KEYS);
        let path = format!("/api/v1/services/{SERVICE}/values/k{key}");
        // 40 % reads, 30 % unconditional writes, 30 % compare-and-sets.
        let kind = rng.below(10);
        let request = if kind < 4 {
            Request::Read { key }
        } else {
            let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
            Request::Write(Unknown { key, value, expected: (kind >= 7).then_some(seen_epoch) })
        };
        let id = lock(&shared.history).invoke();
        let answer = match request {
            Request::Read { .. } => http.get(&path),
            Request::Write(w) => {
                let if_match = w.expected.map(|e| e.to_string());
                let headers: Vec<(&str, &str)> = if_match.iter().map(|e| ("If-Match", e.as_str())).collect();
                http.request("PUT", &path, &headers, Some(&json!({ "value": w.value })))
            }
        };
        let outcome = outcome(request, &answer);
        lock(&shared.history).answer(id, outcome);
        if let Outcome::Known(op) = outcome {
            seen_epoch = match op {
                Op::Get { epoch, .. } | Op::Put { epoch, .. } | Op::CasApplied { epoch, .. } => epoch,
                Op::CasConflict { current, .. } => current,
                Op::ReadAll(m) => m.epoch,
            };
        }
        let down = matches!(&answer, Err(e) if never_sent(e));
        // The server is down: wait for the nemesis to start it again (or the run to end).
        let t = shared
            .moved
            .wait_while(lock(&shared.target), |t| {
                down && t.generation == generation && !shared.stop.load(Ordering::Relaxed)
            })
            .unwrap_or_else(PoisonError::into_inner);
        if t.generation != generation {
            http = connect(&t);
            generation = t.generation;
        }
        drop(t);
        // Not synchronisation: the think time is the workload's pacing.
        std::thread::sleep(Duration::from_millis(rng.below(2 * think_ms + 1)));
    }
}

/// The service's values and the epoch (`GET /api/v1/state?service=`), read alone.
fn read_all(http: &mut Http) -> Model {
    let v = http.ok("GET", &format!("/api/v1/state?service={SERVICE}"), None).json();
    let mut values = [0; KEYS];
    for (i, slot) in values.iter_mut().enumerate() {
        *slot = v["services"][SERVICE][format!("k{i}")]
            .as_u64()
            .unwrap_or_else(|| panic!("k{i} is not a number in the state: {v}"));
    }
    Model { epoch: v["epoch"].as_u64().unwrap_or_else(|| panic!("a state without an epoch: {v}")), values }
}

/// Every value set on the service, from the log: value → epochs of its events.
fn values_in_log(http: &mut Http) -> BTreeMap<u64, Vec<u64>> {
    let mut out: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = http.ok("GET", &format!("/api/v1/events?after={after}&limit=1000"), None).json();
        for e in page["events"].as_array().into_iter().flatten() {
            let kind = &e["event"]["kind"];
            if kind["type"] == "value_set" && kind["service"] == SERVICE {
                let value = kind["value"].as_u64().unwrap_or_else(|| panic!("a non-numeric value in the log: {e}"));
                let epoch = e["epoch"].as_u64().unwrap_or_else(|| panic!("a value event without an epoch: {e}"));
                out.entry(value).or_default().push(epoch);
            }
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// Sends a signal to the server with kill(1).
fn signal(server: &Server, sig: &str) {
    let mut cmd = Command::new("kill");
    cmd.args([&format!("-{sig}"), &server.pid().to_string()]);
    run_with_deadline(cmd, None, COMMAND_DEADLINE).assert_ok();
}

/// What one run did, for the summary.
#[derive(Default, Debug)]
struct Tally {
    ops: usize,
    reads: usize,
    writes_acked: usize,
    cas_applied: usize,
    cas_conflicts: usize,
    unknown_happened: usize,
    unknown_never: usize,
    no_effect: usize,
    kills: usize,
    pauses: usize,
    check_time: Duration,
}

/// The checked history as text (for a failing run's artifacts).
fn history_text(actions: &[(usize, Action<Op>)]) -> String {
    let mut text = String::new();
    for (pid, a) in actions {
        let _ = match a {
            Action::Call(op) => writeln!(text, "{pid:>6} call   {op:?}"),
            Action::Response(op) => writeln!(text, "{pid:>6} answer {op:?}"),
        };
    }
    text
}

/// Checks `actions` within [`CHECK_DEADLINE`]; `None` if undecided.
fn linearizable(actions: Vec<(usize, Action<Op>)>) -> Option<bool> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(WGLChecker::<StoreSpec>::is_linearizable(History::from_actions(actions)));
    });
    rx.recv_timeout(CHECK_DEADLINE).ok()
}

/// One run on a new store; `Err` with why and the history's text if it fails.
fn run(seed: u64, secs: u64, scratch: &Scratch, tally: &mut Tally) -> Result<(), (String, String)> {
    let mut rng = Rng::new(seed);
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let mut admin = server.admin();
    admin.ok("POST", "/api/v1/services", Some(&json!({ "name": SERVICE })));
    for k in 0..KEYS {
        admin.ok("PUT", &format!("/api/v1/services/{SERVICE}/values/k{k}"), Some(&json!({ "value": 0 })));
    }
    let shared = Arc::new(Shared {
        token: admin_token(&store),
        target: Mutex::new(Target { addr: server.addr, generation: 0 }),
        moved: Condvar::new(),
        stop: AtomicBool::new(false),
        history: Mutex::new(Recorder::default()),
        next_value: std::sync::atomic::AtomicU64::new(1),
    });
    // The initial state, read alone before the clients start: the history's first operation.
    let initial = read_all(&mut admin);
    {
        let mut h = lock(&shared.history);
        let id = h.invoke();
        h.answer(id, Outcome::Known(Op::ReadAll(initial)));
    }

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (shared, seed) = (Arc::clone(&shared), rng.next_u64() ^ c as u64);
            std::thread::spawn(move || client(&shared, seed))
        })
        .collect();

    // The nemesis: every 5-10 s, alternately a kill and restart or a pause.
    let end = Instant::now() + Duration::from_secs(secs);
    let mut kill_next = rng.chance(1, 2);
    loop {
        let at = Instant::now() + Duration::from_millis(rng.between(5_000, 10_000));
        if at >= end {
            break;
        }
        // Not synchronisation: the fault schedule is this test's random input.
        std::thread::sleep(at - Instant::now());
        if kill_next {
            server.kill();
            tally.kills += 1;
            server = Server::start(&store, &[], &log);
            server.wait_ready();
            let mut t = lock(&shared.target);
            t.addr = server.addr;
            t.generation += 1;
            shared.moved.notify_all();
        } else {
            signal(&server, "STOP");
            std::thread::sleep(Duration::from_millis(rng.between(500, 2_000)));
            signal(&server, "CONT");
            tally.pauses += 1;
        }
        kill_next = !kill_next;
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    shared.stop.store(true, Ordering::Relaxed);
    shared.moved.notify_all();
    for c in clients {
        c.join().map_err(|_| ("a client thread panicked".to_owned(), String::new()))?;
    }

    // Read back, alone: the final state (the history's last operation) and the log.
    let mut admin = server.admin();
    let last = read_all(&mut admin);
    let in_log = values_in_log(&mut admin);
    let recorder = std::mem::take(&mut *lock(&shared.history));
    let mut recorder = recorder;
    {
        let id = recorder.invoke();
        recorder.answer(id, Outcome::Known(Op::ReadAll(last)));
    }
    server.terminate();

    // Resolve unknown writes against the log; check acknowledged writes are there.
    let mut problems = Vec::new();
    let mut resolved: Vec<Option<Op>> = Vec::with_capacity(recorder.ops.len());
    let mut late = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for (id, outcome) in recorder.ops.iter().enumerate() {
        tally.ops += 1;
        resolved.push(match *outcome {
            Outcome::Pending => {
                problems.push(format!("operation {id} was never answered"));
                None
            }
            Outcome::NoEffect => {
                tally.no_effect += 1;
                None
            }
            Outcome::Known(op) => {
                match op {
                    Op::Get { .. } | Op::ReadAll(_) => tally.reads += 1,
                    Op::Put { key: _, value, epoch } | Op::CasApplied { value, epoch, .. } => {
                        tally.writes_acked += 1;
                        tally.cas_applied += usize::from(matches!(op, Op::CasApplied { .. }));
                        written.insert(value);
                        if in_log.get(&value).map(Vec::as_slice) != Some(&[epoch][..]) {
                            problems.push(format!(
                                "acknowledged write {op:?} is not in the log once at epoch {epoch}: {:?}",
                                in_log.get(&value)
                            ));
                        }
                    }
                    Op::CasConflict { value, .. } => {
                        tally.cas_conflicts += 1;
                        written.insert(value);
                        if in_log.contains_key(&value) {
                            problems.push(format!("refused compare-and-set {op:?} is in the log"));
                        }
                    }
                }
                Some(op)
            }
            Outcome::Unknown(u) => {
                written.insert(u.value);
                match in_log.get(&u.value).map(Vec::as_slice) {
                    None => {
                        tally.unknown_never += 1;
                        None
                    }
                    Some(&[epoch]) => {
                        tally.unknown_happened += 1;
                        late.push(id);
                        Some(match u.expected {
                            None => Op::Put { key: u.key, value: u.value, epoch },
                            Some(expected) => Op::CasApplied { key: u.key, value: u.value, expected, epoch },
                        })
                    }
                    Some(epochs) => {
                        problems.push(format!("write {u:?} is in the log {} times", epochs.len()));
                        None
                    }
                }
            }
        });
    }
    for value in in_log.keys() {
        if *value != 0 && !written.contains(value) {
            problems.push(format!("value {value} is in the log but no client wrote it"));
        }
    }

    // The history for the checker: every operation that had an effect or an answer, each its
    // own "process"; an unknown write's answer at the very end.
    let late_set: std::collections::BTreeSet<usize> = late.iter().copied().collect();
    let mut actions = Vec::with_capacity(recorder.order.len());
    for &(id, is_answer) in &recorder.order {
        let Some(op) = resolved[id] else { continue };
        if is_answer && late_set.contains(&id) {
            continue;
        }
        actions.push((id, if is_answer { Action::Response(op) } else { Action::Call(op) }));
    }
    for &id in &late {
        if let Some(op) = resolved[id] {
            actions.push((id, Action::Response(op)));
        }
    }
    let text = history_text(&actions);
    let started = Instant::now();
    let verdict = linearizable(actions);
    tally.check_time += started.elapsed();
    match verdict {
        Some(true) => {}
        Some(false) => problems.push("the history is not linearizable".to_owned()),
        None => problems.push(format!("the checker did not decide within {CHECK_DEADLINE:?}")),
    }
    if problems.is_empty() { Ok(()) } else { Err((problems.join("\n"), text)) }
}

#[test]
fn compare_and_set_is_linearizable_under_sigkill_and_sigstop() {
    let runs = env_count("LINEARIZABLE_RUNS", 2);
    let secs = u64::try_from(env_count("LINEARIZABLE_SECS", 20)).unwrap_or(20);
    let seed = seed("LINEARIZABLE_SEED");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut total = Tally::default();
    for r in 0..runs {
        let run_seed = rng.next_u64();
        let mut scratch = Scratch::new("linearizable");
        let mut tally = Tally::default();
        if let Err((why, history)) = run(run_seed, secs, &scratch, &mut tally) {
            let path = scratch.keep();
            let _ = std::fs::write(path.join("history.txt"), history);
            panic!(
                "run {r} of {runs} (LINEARIZABLE_SEED={seed}): {why}\n{tally:?}\nkept {}: the data dir, serve.log and \
                 history.txt",
                path.display()
            );
        }
        eprintln!("run {r}: {tally:?}");
        total.ops += tally.ops;
        total.reads += tally.reads;
        total.writes_acked += tally.writes_acked;
        total.cas_applied += tally.cas_applied;
        total.cas_conflicts += tally.cas_conflicts;
        total.unknown_happened += tally.unknown_happened;
        total.unknown_never += tally.unknown_never;
        total.no_effect += tally.no_effect;
        total.kills += tally.kills;
        total.pauses += tally.pauses;
        total.check_time += tally.check_time;
    }
    eprintln!(
        "linearizable: {runs} runs of {secs} s, 0 non-linearizable histories; {} operations ({} reads, {} writes \
         acknowledged of which {} compare-and-sets, {} compare-and-sets refused with 409, {} unknown writes that \
         happened, {} that did not, {} without effect); {} kills, {} pauses; checking took {:.1} s; {:.1} s in all",
        total.ops,
        total.reads,
        total.writes_acked,
        total.cas_applied,
        total.cas_conflicts,
        total.unknown_happened,
        total.unknown_never,
        total.no_effect,
        total.kills,
        total.pauses,
        total.check_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(total.kills > 0 || secs < 15, "no kill happened: the nemesis did nothing");
    assert!(total.cas_applied > 0 && total.cas_conflicts > 0, "the workload never exercised both sides of If-Match");
}

/// The checker with this model rejects what it must: without these, a passing run could mean
/// a checker that accepts everything.
#[test]
fn the_checker_rejects_stale_reads_and_lost_compare_and_sets() {
    let m = Model { epoch: 5, values: [0; KEYS] };
    let call_answer = |pid: usize, op: Op| [(pid, Action::Call(op)), (pid, Action::Response(op))];
    // Sequential: a write at epoch 6, then a read of the old value at 5.
    let stale: Vec<_> = [
        call_answer(0, Op::ReadAll(m)),
        call_answer(1, Op::Put { key: 0, value: 7, epoch: 6 }),
        call_answer(2, Op::Get { key: 0, value: 0, epoch: 5 }),
    ]
    .concat();
    assert_eq!(linearizable(stale), Some(false));
    // Two compare-and-sets on the same expected epoch both applied.
    let both = vec![
        (0, Action::Call(Op::ReadAll(m))),
        (0, Action::Response(Op::ReadAll(m))),
        (1, Action::Call(Op::CasApplied { key: 0, value: 1, expected: 5, epoch: 6 })),
        (2, Action::Call(Op::CasApplied { key: 1, value: 2, expected: 5, epoch: 7 })),
        (1, Action::Response(Op::CasApplied { key: 0, value: 1, expected: 5, epoch: 6 })),
        (2, Action::Response(Op::CasApplied { key: 1, value: 2, expected: 5, epoch: 7 })),
    ];
    assert_eq!(linearizable(both), Some(false));
    // A 409 that names an epoch the store was never at while it was in flight.
    let conflict: Vec<_> =
        [call_answer(0, Op::ReadAll(m)), call_answer(1, Op::CasConflict { key: 0, value: 1, expected: 4, current: 9 })]
            .concat();
    assert_eq!(linearizable(conflict), Some(false));
    // And accepts overlapping operations in either order: a read that overlaps a write may
    // see it or not.
    let overlap = vec![
        (0, Action::Call(Op::ReadAll(m))),
        (0, Action::Response(Op::ReadAll(m))),
        (1, Action::Call(Op::Put { key: 0, value: 3, epoch: 6 })),
        (2, Action::Call(Op::Get { key: 0, value: 3, epoch: 6 })),
        (2, Action::Response(Op::Get { key: 0, value: 3, epoch: 6 })),
        (3, Action::Call(Op::Get { key: 0, value: 0, epoch: 5 })),
        (1, Action::Response(Op::Put { key: 0, value: 3, epoch: 6 })),
        (3, Action::Response(Op::Get { key: 0, value: 0, epoch: 5 })),
    ];
    // Process 3's read of the old value started before the write answered and after
    // process 2 had already read the new one: not linearizable.
    assert_eq!(linearizable(overlap), Some(false));
    assert_eq!(
        linearizable(vec![
            (0, Action::Call(Op::ReadAll(m))),
            (0, Action::Response(Op::ReadAll(m))),
            (1, Action::Call(Op::Put { key: 0, value: 3, epoch: 6 })),
            (3, Action::Call(Op::Get { key: 0, value: 0, epoch: 5 })),
            (3, Action::Response(Op::Get { key: 0, value: 0, epoch: 5 })),
            (2, Action::Call(Op::Get { key: 0, value: 3, epoch: 6 })),
            (1, Action::Response(Op::Put { key: 0, value: 3, epoch: 6 })),
            (2, Action::Response(Op::Get { key: 0, value: 3, epoch: 6 })),
        ]),
        Some(true)
    );
}
