//! docs/testing.md row 1 for the CLI and the log: SIGKILL `confstore apply -` at a uniform-random
//! moment while it appends, over and over, with two appenders writing at once, and check
//! after every iteration that nothing acknowledged was lost and nothing half-written remains.
//!
//! Each changeset sets the key `c` of 2 or 3 services to one unique number `n`, so every
//! event in the log names the changeset it came from. A result line with `"ok": true` is
//! an acknowledgement (apply prints it only once the changeset is durable). After each
//! iteration, on a copy of the files exactly as the kills left them (database and WAL, no
//! shared-memory file, so SQLite must recover): `PRAGMA integrity_check` is ok, seqs are
//! 1..N, `confstore verify` passes, and in `confstore history`: every acknowledged changeset
//! is present exactly once with the seqs and epoch it was acknowledged with, every changeset
//! present is complete, and nothing is present that was never sent (or was refused).
//!
//! `CRASH_ITERS` (default 50, two kills each) sets the length. Every `CRASH_ITERS_PER_STORE`
//! (default 10) iterations the test starts over with a new store, so each check costs the
//! same; the last state of each store is always checked, the original files as well as a
//! copy. `CRASH_CHECK_EVERY` (default 1) thins the checks in between; `CRASH_SEED` replays.
//! On failure the data directory is kept and its path printed, with the ledger of what was
//! sent and acknowledged (`ledger.jsonl`).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Rng, Scratch, Store, copy_db, env_count, kill, seed, str_of, u64_of};
use serde_json::{Value, json};

const SERVICES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Each appender is killed at a uniform-random moment in 0..=this after it was started.
const KILL_WINDOW_MS: u64 = 300;
/// Appender processes per iteration, writing at the same time.
const APPENDERS: usize = 2;

/// What happened to one changeset (identified by its number `n`).
#[derive(Clone, Debug)]
enum Outcome {
    /// Written to the appender's stdin; no result line came back.
    Sent,
    /// `"ok": true`: it must be in the log, at these seqs and this epoch.
    Acked { first_seq: u64, last_seq: u64, epoch: u64 },
    /// `"ok": false`: it must not be in the log.
    Refused(String),
}

#[derive(Clone, Debug)]
struct Changeset {
    services: Vec<&'static str>,
    iteration: usize,
    appender: usize,
    outcome: Outcome,
}

/// Every changeset ever sent, by `n`.
type Ledger = BTreeMap<u64, Changeset>;

/// What one input line carried: `(n, services)`.
type Line = (u64, Vec<&'static str>);

/// One running `confstore apply -`.
struct Appender {
    child: Child,
    started: Instant,
    kill_after: Duration,
    feeder: JoinHandle<()>,
    reader: JoinHandle<Vec<(Instant, Value)>>,
    /// `(n, services)` of input line i+1.
    sent: Arc<Mutex<Vec<Line>>>,
}

fn start_appender(store: &Store, stderr: &std::path::Path, counter: &Arc<AtomicU64>, rng: &mut Rng) -> Appender {
    let mut cmd = store.command(&["apply", "-", "--actor", "crash-test"]);
    let stderr = std::fs::File::create(stderr).expect("creating the appender's stderr file");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(stderr));
    let kill_after = Duration::from_millis(rng.between(0, KILL_WINDOW_MS));
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting confstore apply");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let sent = Arc::new(Mutex::new(Vec::new()));

    let (counter, log, mut feed_rng) = (Arc::clone(counter), Arc::clone(&sent), Rng::new(rng.next_u64()));
    // Feeds changesets until the pipe breaks (the process died). The pipe buffer bounds
    // how far it runs ahead of the process.
    let feeder = std::thread::spawn(move || {
        loop {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let mut services = SERVICES.to_vec();
            let len = usize::try_from(feed_rng.between(2, 3)).expect("small");
            while services.len() > len {
                services.remove(feed_rng.index(services.len()));
            }
            let changes: Vec<Value> =
                services.iter().map(|s| json!({"op": "set", "service": s, "key": "c", "value": n})).collect();
            let line = format!("{}\n", json!({"changes": changes, "reason": format!("n={n}")}));
            log.lock().expect("ledger lock").push((n, services));
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    // Collects result lines until end of file. A line cut short by the kill is not JSON
    // and so is no acknowledgement.
    let reader = std::thread::spawn(move || {
        let mut results = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                results.push((Instant::now(), v));
            }
        }
        results
    });
    Appender { child, started, kill_after, feeder, reader, sent }
}

/// Facts about the whole run, for the summary.
#[derive(Default)]
struct Tally {
    kills: usize,
    kills_after_an_ack: usize,
    exited_before_kill: usize,
    acked: usize,
    refused: usize,
    first_ack_ms_max: u128,
    checks: usize,
    check_time: Duration,
}

/// A fresh store with the services registered; returns it and the events it starts with.
fn new_store(dir: &std::path::Path) -> (Store, u64) {
    let store = Store::in_dir(dir);
    store.init();
    let mut add = vec!["service", "add"];
    add.extend(SERVICES);
    store.ok(&add);
    (store, 1 + SERVICES.len() as u64)
}

#[test]
fn sigkill_during_apply_loses_no_acknowledged_changeset_and_leaves_no_partial_one() {
    let iterations = env_count("CRASH_ITERS", 50);
    let per_store = env_count("CRASH_ITERS_PER_STORE", 10).max(1);
    let check_every = env_count("CRASH_CHECK_EVERY", 1).max(1);
    let seed = seed("CRASH_SEED");
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("crash");
    let counter = Arc::new(AtomicU64::new(1));
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut store_no = 0;
    let (mut store, mut base_events) = new_store(&scratch.path().join("store-0"));
    let mut ledger = Ledger::new();
    for iteration in 0..iterations {
        let mut appenders: Vec<Appender> = (0..APPENDERS)
            .map(|a| {
                let stderr = scratch.path().join(format!("appender-{a}.stderr"));
                start_appender(&store, &stderr, &counter, &mut rng)
            })
            .collect();
        let mut order: Vec<usize> = (0..APPENDERS).collect();
        order.sort_by_key(|&a| appenders[a].started + appenders[a].kill_after);
        let mut statuses: Vec<Option<(bool, ExitStatus)>> = vec![None; APPENDERS];
        for a in order {
            let app = &mut appenders[a];
            // Not synchronisation: the kill moment is the random input of this test.
            std::thread::sleep((app.started + app.kill_after).saturating_duration_since(Instant::now()));
            let exited = app.child.try_wait().expect("polling the appender");
            statuses[a] = Some(match exited {
                Some(status) => (false, status),
                None => (true, kill(&mut app.child)),
            });
        }
        let mut failures = Vec::new();
        for (a, app) in appenders.into_iter().enumerate() {
            app.feeder.join().expect("the feeder thread");
            let results = app.reader.join().expect("the reader thread");
            let sent = std::mem::take(&mut *app.sent.lock().expect("ledger lock"));
            let (killed, status) = statuses[a].expect("every appender was stopped");
            if killed {
                tally.kills += 1;
                if results.iter().any(|(_, r)| r["ok"] == json!(true)) {
                    tally.kills_after_an_ack += 1;
                }
            } else {
                tally.exited_before_kill += 1;
                let stderr =
                    std::fs::read_to_string(scratch.path().join(format!("appender-{a}.stderr"))).unwrap_or_default();
                failures.push(format!(
                    "iteration {iteration}: appender {a} exited by itself ({status}) before its kill: {stderr}"
                ));
            }
            if let Some((at, _)) = results.first() {
                tally.first_ack_ms_max = tally.first_ack_ms_max.max(at.duration_since(app.started).as_millis());
            }
            for (n, services) in &sent {
                ledger.insert(
                    *n,
                    Changeset { services: services.clone(), iteration, appender: a, outcome: Outcome::Sent },
                );
            }
            for (_, r) in results {
                let line = usize::try_from(u64_of(&r, "line")).expect("a line number fits in usize");
                let n = sent.get(line - 1).map(|(n, _)| *n).expect("a result for a line that was sent");
                let entry = ledger.get_mut(&n).expect("just inserted");
                entry.outcome = if r["ok"] == json!(true) {
                    tally.acked += 1;
                    Outcome::Acked {
                        first_seq: u64_of(&r, "first_seq"),
                        last_seq: u64_of(&r, "last_seq"),
                        epoch: u64_of(&r, "epoch"),
                    }
                } else {
                    // Every changeset sent is valid: a refusal means the store did not recover.
                    tally.refused += 1;
                    failures.push(format!("iteration {iteration}: appender {a} had n={n} refused: {r}"));
                    Outcome::Refused(r["error"].to_string())
                };
            }
        }
        let last_of_store = (iteration + 1) % per_store == 0 || iteration + 1 == iterations;
        let check_dir = scratch.path().join("check");
        let result = if !failures.is_empty() {
            Err(failures.join("\n"))
        } else if (iteration + 1) % check_every == 0 || last_of_store {
            let t = Instant::now();
            let mut r = check(&store, &check_dir, &ledger, base_events);
            if last_of_store && r.is_ok() {
                // The original files too, now that every process is gone.
                let run = store.run(&["verify", "--json"]);
                if !run.status.success() {
                    r = Err(format!("verify on the original files failed:\n{run}"));
                }
            }
            tally.checks += 1;
            tally.check_time += t.elapsed();
            r
        } else {
            Ok(())
        };
        if let Err(why) = result {
            let path = scratch.keep();
            let ledger_path = store.data_dir.with_file_name("ledger.jsonl");
            write_ledger(&ledger_path, &ledger);
            panic!(
                "iteration {iteration} of {iterations} (CRASH_SEED={seed}): {why}\n\
                 kept {}: the data dir {}, the copy that failed the checks {}, and {} (what was sent and \
                 acknowledged)",
                path.display(),
                store.data_dir.display(),
                check_dir.display(),
                ledger_path.display()
            );
        }
        if last_of_store && iteration + 1 < iterations {
            // Start over so the log, and so the cost of each check, stays bounded.
            store_no += 1;
            (store, base_events) = new_store(&scratch.path().join(format!("store-{store_no}")));
            ledger = Ledger::new();
        }
    }
    eprintln!(
        "crash loop: {iterations} iterations over {} stores, {} kills ({} after at least one acknowledgement), {} \
         exits before the kill; {} changesets acknowledged, {} refused; slowest start to first acknowledgement {} ms; \
         {} checks took {:.1} s of {:.1} s",
        store_no + 1,
        tally.kills,
        tally.kills_after_an_ack,
        tally.exited_before_kill,
        tally.acked,
        tally.refused,
        tally.first_ack_ms_max,
        tally.checks,
        tally.check_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(tally.kills >= iterations * APPENDERS, "every appender was killed");
    assert!(tally.kills_after_an_ack > 0, "no kill landed while an appender was writing; the test tests nothing");
}

/// All the checks, on a copy of the data directory exactly as the kills left it.
fn check(store: &Store, check_dir: &std::path::Path, ledger: &Ledger, base_events: u64) -> Result<(), String> {
    if check_dir.exists() {
        std::fs::remove_dir_all(check_dir).map_err(|e| format!("cleaning {}: {e}", check_dir.display()))?;
    }
    copy_db(&store.data_dir, &check_dir.join("data"));
    let copy = store.with_data_dir(&check_dir.join("data"));

    let conn = rusqlite::Connection::open(copy.db()).map_err(|e| format!("opening the database: {e}"))?;
    let seqs = common::store::integrity_ok_seqs(&conn)?;
    drop(conn);
    let n_events = seqs.len() as u64;
    if seqs != (1..=n_events).collect::<Vec<_>>() {
        return Err(format!("seqs are not 1..={n_events}: {}", describe_gaps(&seqs)));
    }

    // The two slow commands at once: they only read.
    let (run, history_run) = std::thread::scope(|s| {
        let verify = s.spawn(|| copy.run(&["verify", "--json"]));
        let history = copy.run(&["history", "--json"]);
        (verify.join().expect("the verify thread"), history)
    });
    if !run.status.success() || run.json()["ok"] != json!(true) {
        return Err(format!("confstore verify failed:\n{run}"));
    }
    if u64_of(&run.json(), "events") != n_events {
        return Err(format!("verify counted a different number of events than the table holds ({n_events}):\n{run}"));
    }

    let run = history_run;
    if !run.status.success() {
        return Err(format!("confstore history failed:\n{run}"));
    }
    // n -> the events carrying it: (service, seq, epoch, changeset_len)
    let mut present: BTreeMap<u64, Vec<(String, u64, u64, u64)>> = BTreeMap::new();
    let history = run.json_lines();
    if history.len() as u64 != n_events {
        return Err(format!("history lists {} events, the table holds {n_events}", history.len()));
    }
    for e in &history {
        let kind = &e["kind"];
        let seq = u64_of(e, "seq");
        match str_of(kind, "type") {
            "value_set" if str_of(kind, "key") == "c" => {
                let n = kind["value"].as_u64().ok_or_else(|| format!("event {seq} holds no counter: {e}"))?;
                let entry = (str_of(kind, "service").to_owned(), seq, u64_of(e, "epoch"), u64_of(e, "changeset_len"));
                present.entry(n).or_default().push(entry);
            }
            "store_created" | "service_registered" if seq <= base_events => {}
            _ => return Err(format!("event {seq} was never written by this test: {e}")),
        }
    }
    let mut problems = String::new();
    for (n, events) in &present {
        let Some(cs) = ledger.get(n) else {
            let _ = writeln!(problems, "n={n} is in the log but was never sent: {events:?}");
            continue;
        };
        let mut services: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        services.sort_unstable();
        let mut want = cs.services.clone();
        want.sort_unstable();
        let seqs: Vec<u64> = events.iter().map(|e| e.1).collect();
        let contiguous = seqs.windows(2).all(|w| w[1] == w[0] + 1);
        let one_epoch = events.iter().all(|e| e.2 == events[0].2);
        let whole = events.iter().all(|e| e.3 == want.len() as u64);
        if services != want || !contiguous || !one_epoch || !whole {
            let _ = writeln!(
                problems,
                "n={n} (iteration {}, appender {}) is present partly or more than once: {events:?}, sent {:?}",
                cs.iteration, cs.appender, cs.services
            );
        }
        match &cs.outcome {
            Outcome::Refused(why) => {
                let _ = writeln!(problems, "n={n} was refused ({why}) but is in the log at seqs {seqs:?}");
            }
            Outcome::Acked { first_seq, last_seq, epoch } => {
                if seqs != (*first_seq..=*last_seq).collect::<Vec<_>>() || events[0].2 != *epoch {
                    let _ = writeln!(
                        problems,
                        "n={n} was acknowledged at seqs {first_seq}..={last_seq} epoch {epoch}, \
                         but the log has it at seqs {seqs:?} epoch {}",
                        events[0].2
                    );
                }
            }
            Outcome::Sent => {}
        }
    }
    for (n, cs) in ledger {
        if let Outcome::Acked { first_seq, last_seq, epoch } = cs.outcome
            && !present.contains_key(n)
        {
            let _ = writeln!(
                problems,
                "n={n} (iteration {}, appender {}) was acknowledged (seqs {first_seq}..={last_seq}, epoch {epoch}) \
                 but is missing from the log",
                cs.iteration, cs.appender
            );
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn describe_gaps(seqs: &[u64]) -> String {
    let mut out = String::new();
    let mut expected = 1;
    for &s in seqs {
        if s != expected {
            let _ = write!(out, "expected {expected}, found {s}; ");
        }
        expected = s + 1;
    }
    out
}

fn write_ledger(path: &std::path::Path, ledger: &Ledger) {
    let mut text = String::new();
    for (n, cs) in ledger {
        let outcome = match &cs.outcome {
            Outcome::Sent => json!("sent"),
            Outcome::Acked { first_seq, last_seq, epoch } => {
                json!({"acked": {"first_seq": first_seq, "last_seq": last_seq, "epoch": epoch}})
            }
            Outcome::Refused(why) => json!({"refused": why}),
        };
        let line = json!({"n": n, "services": cs.services, "iteration": cs.iteration, "appender": cs.appender,
                          "outcome": outcome});
        let _ = writeln!(text, "{line}");
    }
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("could not write the ledger to {}: {e}", path.display());
    }
}
