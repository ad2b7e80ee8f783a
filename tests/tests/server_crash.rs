//! docs/testing.md row 1 for the server: SIGKILL `confstore serve` at a uniform-random moment while
//! four writers append over HTTP, restart it on the same data directory, and check after
//! every restart that nothing acknowledged was lost or altered and nothing appeared that no
//! writer sent.
//!
//! Each writer has its own kept-alive connection and PUTs values to its own keys of one
//! service (`w<writer>-k<0..8>`); every value is unique (`w<writer>-i<iteration>-n<counter>`),
//! so every event names the request it came from. A 2xx answer with its receipt is an
//! acknowledgement: the write is durable at `last_seq`. After each kill the server is
//! started again and the time from its spawn to `/readyz` 200 must be at most 2 s. Then,
//! with it running: `PRAGMA integrity_check` is ok (read-only connection), the seqs are
//! 1..N, `confstore verify` passes over N events and `/readyz` is at seq N; in the events
//! read back over `GET /api/v1/events`, the event at every acknowledged `last_seq` (of this
//! and every earlier iteration) sets that key to that value, every value event after the
//! set-up was sent by a writer (acknowledged, or in flight at the kill) exactly once, no
//! write was refused, and the served snapshot holds, for every key, the value of the key's
//! last event. Events are read once each: the newest one read at the previous check must
//! still have the same hash, which (the chain having just verified) fixes all before it.
//!
//! `CRASH_SERVER_ITERS` (default 50, the CI bar; long runs 1,000) sets the number of kills;
//! `CRASH_SERVER_SEED` replays the kill moments. On failure the data directory, the
//! server's log and `ledger.jsonl` (every request sent and its outcome) are kept.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Http, Rng, Scratch, Server, Store, admin_token, env_count, seed, str_of, u64_of};
use serde_json::{Value, json};

/// Concurrent writers, each with its own connection.
const WRITERS: usize = 4;
/// Keys each writer cycles through (so keys are overwritten, and the final state matters).
const KEYS_PER_WRITER: u64 = 8;
/// The server is killed at a uniform-random moment in 0..=this after the writers start.
const KILL_WINDOW_MS: u64 = 500;
/// docs/testing.md row 1: restart to ready.
const READY_MAX: Duration = Duration::from_secs(2);
/// The one service written to.
const SERVICE: &str = "crash";

/// What became of one PUT.
#[derive(Clone, Debug)]
enum Outcome {
    /// Sent; no complete answer came back (the kill): may or may not be in the log.
    InFlight,
    /// 2xx with a receipt: must be in the log at `last_seq`.
    Acked { first_seq: u64, last_seq: u64, epoch: u64 },
    /// A complete non-2xx answer: must not be in the log.
    Refused(String),
}

/// One PUT, identified by its (unique) value.
#[derive(Clone, Debug)]
struct Attempt {
    key: String,
    iteration: usize,
    writer: usize,
    outcome: Outcome,
}

/// Every PUT ever sent, by value.
type Ledger = BTreeMap<String, Attempt>;

/// PUTs values until the connection fails (the server was killed) or `stop` is set.
fn write_until_killed(
    addr: std::net::SocketAddr,
    token: &str,
    writer: usize,
    iteration: usize,
    stop: &AtomicBool,
) -> Vec<(String, Attempt)> {
    let mut http = Http::new(addr).with_token(token).with_timeout(Duration::from_secs(30));
    let mut out = Vec::new();
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{writer}-k{}", n % KEYS_PER_WRITER);
        let value = format!("w{writer}-i{iteration}-n{n}");
        let path = format!("/api/v1/services/{SERVICE}/values/{key}");
        let answer = http.send("PUT", &path, &json!({ "value": value }));
        let outcome = match &answer {
            Err(_) => Outcome::InFlight,
            Ok(r) if r.is_success() => match serde_json::from_slice::<Value>(&r.body) {
                Ok(v) => match (v["first_seq"].as_u64(), v["last_seq"].as_u64(), v["epoch"].as_u64()) {
                    (Some(first_seq), Some(last_seq), Some(epoch)) => Outcome::Acked { first_seq, last_seq, epoch },
                    _ => Outcome::Refused(format!("a 2xx without a receipt: {r}")),
                },
                Err(_) => Outcome::Refused(format!("a 2xx without a receipt: {r}")),
            },
            Ok(r) => Outcome::Refused(r.to_string()),
        };
        out.push((value, Attempt { key, iteration, writer, outcome }));
        if answer.is_err() {
            break;
        }
    }
    out
}

/// Facts about the whole run, for the summary.
#[derive(Default)]
struct Tally {
    kills: usize,
    kills_with_writes_in_flight: usize,
    acked: usize,
    in_flight: usize,
    in_flight_committed: usize,
    ready_max: Duration,
    ready_total: Duration,
    check_time: Duration,
    timing: Timing,
}

/// Where the checks spend their time.
#[derive(Default)]
struct Timing {
    verify: Duration,
    read_events: Duration,
}

#[test]
fn sigkill_under_http_write_load_loses_no_acknowledged_write_and_restarts_ready_within_2s() {
    let iterations = env_count("CRASH_SERVER_ITERS", 50);
    let seed = seed("CRASH_SERVER_SEED");
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("server-crash");
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let started = Instant::now();

    // A fresh data dir: serve creates the store and the first admin token.
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let token = admin_token(&store);
    server.admin().ok("POST", "/api/v1/services", Some(&json!({ "name": SERVICE })));
    let base_seq = u64_of(&server.wait_ready().0, "seq");

    let mut ledger = Ledger::new();
    let mut seen = LogSeen::default();
    let mut tally = Tally::default();
    for iteration in 0..iterations {
        let kill_after = Duration::from_millis(rng.between(0, KILL_WINDOW_MS));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (addr, token, stop) = (server.addr, token.clone(), Arc::clone(&stop));
                std::thread::spawn(move || write_until_killed(addr, &token, w, iteration, &stop))
            })
            .collect();
        // Not synchronisation: the kill moment is the random input of this test.
        std::thread::sleep(kill_after);
        server.kill();
        tally.kills += 1;
        // Writers blocked on a dead server see the connection fail; `stop` ends one that
        // was between two requests.
        stop.store(true, Ordering::Relaxed);
        let mut in_flight_now = 0;
        for w in writers {
            for (value, attempt) in w.join().expect("a writer thread") {
                match attempt.outcome {
                    Outcome::Acked { .. } => tally.acked += 1,
                    Outcome::InFlight => in_flight_now += 1,
                    Outcome::Refused(_) => {}
                }
                ledger.insert(value, attempt);
            }
        }
        tally.in_flight += in_flight_now;
        if in_flight_now > 0 {
            tally.kills_with_writes_in_flight += 1;
        }

        server = Server::start(&store, &[], &log);
        let (_, ready) = server.wait_ready();
        tally.ready_max = tally.ready_max.max(ready);
        tally.ready_total += ready;

        let t = Instant::now();
        let mut result = check(&server, &token, &ledger, base_seq, &mut seen, &mut tally.timing);
        tally.check_time += t.elapsed();
        if ready > READY_MAX {
            let why = format!("restart to ready took {ready:?}, over the {READY_MAX:?} bar");
            result = Err(result.err().map_or(why.clone(), |e| format!("{why}\n{e}")));
        }
        match result {
            Ok(committed_in_flight) => tally.in_flight_committed = committed_in_flight,
            Err(why) => {
                let path = scratch.keep();
                let ledger_path = scratch.path().join("ledger.jsonl");
                write_ledger(&ledger_path, &ledger);
                panic!(
                    "iteration {iteration} of {iterations} (CRASH_SERVER_SEED={seed}, killed {kill_after:?} after the \
                     writers started): {why}\nkept {}: the data dir, serve.log and ledger.jsonl",
                    path.display()
                );
            }
        }
    }
    server.terminate();
    eprintln!(
        "server crash loop: {} kills ({} with writes in flight); {} writes acknowledged, {} in flight at a kill \
         ({} of them committed); restart to ready: max {:.0} ms, mean {:.0} ms (bar {} ms); checks took {:.1} s (verify \
         {:.1} s, reading events {:.1} s) of {:.1} s",
        tally.kills,
        tally.kills_with_writes_in_flight,
        tally.acked,
        tally.in_flight,
        tally.in_flight_committed,
        tally.ready_max.as_secs_f64() * 1e3,
        tally.ready_total.as_secs_f64() * 1e3 / tally.kills.max(1) as f64,
        READY_MAX.as_millis(),
        tally.check_time.as_secs_f64(),
        tally.timing.verify.as_secs_f64(),
        tally.timing.read_events.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(tally.acked > 0, "no write was ever acknowledged; the test tests nothing");
    assert!(tally.kills_with_writes_in_flight > 0, "no kill landed while a write was in flight");
}

/// A value event read back: (key, value).
type ValueEvent = (String, String);

/// Every check, with the restarted server running. Returns how many writes that were in
/// flight at a kill made it into the log.
fn check(
    server: &Server,
    token: &str,
    ledger: &Ledger,
    base_seq: u64,
    seen: &mut LogSeen,
    timing: &mut Timing,
) -> Result<usize, String> {
    let db = server.store.db();
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("opening {} read-only: {e}", db.display()))?;
    let seqs = common::store::integrity_ok_seqs(&conn)?;
    drop(conn);
    let n_events = seqs.len() as u64;
    if !seqs.iter().zip(1..).all(|(&s, want)| s == want) {
        return Err(format!("seqs are not gap-free 1..={n_events}: first ones {:?}", &seqs[..seqs.len().min(20)]));
    }

    let t = Instant::now();
    let run = server.store.run(&["verify", "--json"]);
    timing.verify += t.elapsed();
    if !run.status.success() || run.json()["ok"] != json!(true) {
        return Err(format!("confstore verify failed:\n{run}"));
    }
    if u64_of(&run.json(), "events") != n_events {
        return Err(format!("verify counted other than the {n_events} events the table holds:\n{run}"));
    }
    let mut http = Http::new(server.addr).with_token(token);
    let readyz = http.get("/readyz").map_err(|e| format!("/readyz: {e}"))?;
    if readyz.status != 200 || readyz.json()["seq"] != json!(n_events) {
        return Err(format!("/readyz is not at seq {n_events}: {readyz}"));
    }

    let t = Instant::now();
    read_events(&mut http, n_events, seen)?;
    timing.read_events += t.elapsed();
    let events = &seen.events;
    let mut problems = String::new();
    // value -> seqs it was written at.
    let mut written: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    // key -> its last value.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for (seq, e) in events {
        let Some((key, value)) = e else {
            if *seq > base_seq {
                let _ = writeln!(problems, "event {seq} is not a value set by a writer");
            }
            continue;
        };
        written.entry(value.as_str()).or_default().push(*seq);
        last.insert(key.as_str(), value.as_str());
        match ledger.get(value) {
            None => {
                let _ = writeln!(problems, "event {seq} sets {key}={value:?}, which no writer sent (phantom)");
            }
            Some(a) if a.key != *key => {
                let _ = writeln!(problems, "event {seq} sets {key}={value:?}, but it was sent for key {}", a.key);
            }
            Some(Attempt { outcome: Outcome::Refused(why), .. }) => {
                let _ = writeln!(problems, "event {seq} sets {key}={value:?}, whose request was refused: {why}");
            }
            Some(_) => {}
        }
    }
    for (value, seqs) in &written {
        if seqs.len() > 1 {
            let _ = writeln!(problems, "{value:?} was written {} times, at seqs {seqs:?}", seqs.len());
        }
    }
    let mut in_flight_committed = 0;
    for (value, a) in ledger {
        match &a.outcome {
            Outcome::Acked { first_seq, last_seq, epoch } => {
                let at = events.get(last_seq).cloned().flatten();
                if first_seq != last_seq || at.as_ref() != Some(&(a.key.clone(), value.clone())) {
                    let _ = writeln!(
                        problems,
                        "{}={value:?} (iteration {}, writer {}) was acknowledged at seqs {first_seq}..={last_seq} \
                         epoch {epoch}, but event {last_seq} is {at:?}{}",
                        a.key,
                        a.iteration,
                        a.writer,
                        if written.contains_key(value.as_str()) { "" } else { "; the write is missing" }
                    );
                }
            }
            Outcome::InFlight if written.contains_key(value.as_str()) => in_flight_committed += 1,
            Outcome::InFlight => {}
            Outcome::Refused(why) => {
                // Every request is valid and the server was up: a refusal is a failure.
                let _ = writeln!(problems, "{}={value:?} (writer {}) was refused: {why}", a.key, a.writer);
            }
        }
    }

    // The served state: for every key, the value of its last event; nothing else.
    let snap = http
        .get_json(&format!("/api/v1/services/{SERVICE}/snapshot"))
        .map_err(|e| format!("reading the snapshot: {e}"))?;
    if snap.status != 200 {
        return Err(format!("reading the snapshot: {snap}"));
    }
    let config = snap.json()["config"].clone();
    let served: BTreeMap<&str, &str> = config
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("<not a string>"))).collect())
        .unwrap_or_default();
    if served != last {
        let _ = writeln!(problems, "the snapshot is not the last value of each key in the log:\n{served:?}\n{last:?}");
    }
    if problems.is_empty() { Ok(in_flight_committed) } else { Err(problems) }
}

/// The events read back so far: seq -> (key, value) for value sets of the service, None
/// for anything else; and the hash of the newest one read.
#[derive(Default)]
struct LogSeen {
    events: BTreeMap<u64, Option<ValueEvent>>,
    newest_hash: Option<String>,
}

/// Brings `seen` up to event `n` over `GET /api/v1/events`, reading only what is new. What
/// was read before is checked unchanged through the hash chain: `verify` has just checked
/// every link, so if the newest event read last time still has the hash it had, so does
/// every event before it.
fn read_events(http: &mut Http, n: u64, seen: &mut LogSeen) -> Result<(), String> {
    let mut get = |after: u64, limit: usize| -> Result<Value, String> {
        let path = format!("/api/v1/events?after={after}&limit={limit}");
        let page = http.get(&path).map_err(|e| format!("GET {path}: {e}"))?;
        if page.status != 200 {
            return Err(format!("GET {path}: {page}"));
        }
        Ok(page.json())
    };
    let known = seen.events.len() as u64;
    if n < known {
        return Err(format!("the log holds {n} events, fewer than the {known} read at the previous check"));
    }
    if let Some(hash) = &seen.newest_hash {
        let page = get(known - 1, 1)?;
        let now = &page["events"][0];
        if now["seq"] != json!(known) || now["hash"] != json!(hash) {
            return Err(format!("event {known} is not what it was at the previous check (hash {hash}): {now}"));
        }
    }
    let mut after = known;
    loop {
        let page = get(after, 1000)?;
        for e in page["events"].as_array().into_iter().flatten() {
            let seq = u64_of(e, "seq");
            let kind = &e["event"]["kind"];
            let value_set = kind["type"] == "value_set" && kind["service"] == SERVICE;
            let entry = value_set.then(|| (str_of(kind, "key").to_owned(), kind["value"].as_str().map(str::to_owned)));
            let entry = match entry {
                Some((key, Some(value))) => Some((key, value)),
                Some((key, None)) => return Err(format!("event {seq} sets {key} to a non-string: {e}")),
                None => None,
            };
            if seq != seen.events.len() as u64 + 1 {
                return Err(format!("GET /api/v1/events returned seq {seq} out of order or twice"));
            }
            seen.events.insert(seq, entry);
            seen.newest_hash = Some(str_of(e, "hash").to_owned());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    if seen.events.len() as u64 != n {
        return Err(format!("GET /api/v1/events returned {} events; the table holds {n}", seen.events.len()));
    }
    Ok(())
}

fn write_ledger(path: &std::path::Path, ledger: &Ledger) {
    let mut text = String::new();
    for (value, a) in ledger {
        let outcome = match &a.outcome {
            Outcome::InFlight => json!("in_flight"),
            Outcome::Acked { first_seq, last_seq, epoch } => {
                json!({"acked": {"first_seq": first_seq, "last_seq": last_seq, "epoch": epoch}})
            }
            Outcome::Refused(why) => json!({ "refused": why }),
        };
        let line =
            json!({"key": a.key, "value": value, "iteration": a.iteration, "writer": a.writer, "outcome": outcome});
        let _ = writeln!(text, "{line}");
    }
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("could not write the ledger to {}: {e}", path.display());
    }
}
