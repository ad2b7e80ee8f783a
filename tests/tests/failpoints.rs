//! docs/testing.md row 2: crash `confstore serve` (and the CLI's multi-step commands) at named
//! write-path boundaries with the `fail` crate, then check what a restart finds.
//!
//! The test build has the crash points compiled in (`--features confstore/failpoints`, as
//! `ops/test.sh` builds); `FAILPOINTS=<name>=<k>*off->return` aborts the process the
//! (k+1)-th time it passes `<name>` (`std::process::abort`: no destructor, no final
//! checkpoint, like a crash). The boundaries:
//!
//! | name | where |
//! |---|---|
//! | `log::before_commit` | the batch's events and checkpoint written, COMMIT not issued |
//! | `log::after_commit` | COMMIT returned, no appender answered yet |
//! | `log::mid_checkpoint` | the write model written into the batch's transaction, before COMMIT |
//! | `stream::mid_publish` | a stream message handed to the MQTT client, the publisher's checkpoint not advanced |
//! | `lkg::mid_write` | the new LKG file written and synced as `*.tmp`, not renamed over the old one |
//! | `search::mid_update` | a chunk of the search index written, its transaction not committed |
//! | `keys::mid_rotation_before_event`, `keys::mid_rotation_after_event` | `confstore keys rotate --signing`: new key in the env file / rotation event appended, clean-up not done |
//! | `generation::mid_start` | `confstore generation start`: the event appended, `rebuild.info` and the high-water mark not written |
//!
//! For each server boundary, `FAILPOINT_RUNS` runs (CI 5; the test plan's bar is 20) on one
//! store: serve with the embedded broker on (the default users run), one writer PATCHes
//! changesets of 40 keys (so write-model checkpoints, every 256 events, happen) until the
//! process dies; then serve starts again without failpoints and: `PRAGMA integrity_check`
//! is ok, seqs are gap-free, `confstore verify` passes (every link and signature, and the
//! write model equal to a replay); every acknowledged changeset is in the log whole, at its
//! receipt's seqs; an unacknowledged one is there whole once or not at all; nothing is there
//! that no request sent; the served snapshot is the last value of each key in the log; the
//! search index and the LKG file catch up to the head, and a search finds each key's last
//! value. Every boundary must fire in at least one run.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{Http, Rng, Scratch, Server, Store, admin_token, env_count, free_port, seed, str_of, u64_of};
use serde_json::{Value, json};

/// The service written to.
const SERVICE: &str = "fp";
/// Keys per changeset: 7 changesets cross a write-model checkpoint (256 events).
const KEYS: usize = 40;
/// Changesets a writer sends per run at most (the boundary normally fires well before).
const CHANGESETS_MAX: usize = 24;
/// How long a run waits for a boundary the writes do not reach directly (the search index
/// and LKG file are caught up in the background) before calling it not fired.
const FIRE_WAIT: Duration = Duration::from_secs(5);

/// What became of one changeset.
#[derive(Clone, Debug)]
enum Outcome {
    /// No complete answer (the crash): in the log whole, once, or not at all.
    InFlight,
    /// 2xx with a receipt: in the log at exactly these seqs.
    Acked { first_seq: u64, last_seq: u64 },
    /// A complete non-2xx answer: not in the log.
    Refused(String),
}

/// Every changeset ever sent: its tag (each value is `<tag>-<key>`) and outcome.
type Ledger = BTreeMap<String, Outcome>;

fn changeset(tag: &str) -> Value {
    let set: serde_json::Map<String, Value> =
        (0..KEYS).map(|k| (format!("k{k}"), json!(format!("{tag}-k{k}")))).collect();
    json!({"set": set, "reason": tag})
}

/// PATCHes changesets until the connection fails or `CHANGESETS_MAX` were sent.
fn write_until_crash(addr: std::net::SocketAddr, token: &str, run: usize, ledger: &mut Ledger) {
    let mut http = Http::new(addr).with_token(token).with_timeout(Duration::from_secs(30));
    for n in 0..CHANGESETS_MAX {
        let tag = format!("r{run}n{n}");
        let answer = http.send("PATCH", &format!("/api/v1/services/{SERVICE}/values"), &changeset(&tag));
        let outcome = match &answer {
            Err(_) => Outcome::InFlight,
            Ok(r) if r.is_success() => {
                let v = r.json();
                Outcome::Acked { first_seq: u64_of(&v, "first_seq"), last_seq: u64_of(&v, "last_seq") }
            }
            Ok(r) => Outcome::Refused(r.to_string()),
        };
        ledger.insert(tag, outcome);
        if answer.is_err() {
            return;
        }
    }
}

fn serve_args(port: u16) -> Vec<String> {
    vec!["--mqtt-listen".into(), format!("127.0.0.1:{port}"), "--log-format".into(), "json".into()]
}

/// Runs `FAILPOINT_RUNS` crash-and-restart rounds at `boundary`, which fires after up to
/// `skip_max` passes.
fn crash_at(boundary: &str, skip_max: u64) {
    let runs = env_count("FAILPOINT_RUNS", 5);
    let seed = seed(&format!("FAILPOINT_SEED_{}", boundary.replace("::", "_").to_uppercase()));
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("failpoints");
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let mqtt_port = free_port();
    let args = serve_args(mqtt_port);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut server = Server::start(&store, &arg_refs, &log);
    server.wait_ready();
    let token = admin_token(&store);
    let r = server.admin().send("POST", "/api/v1/services", &json!({"name": SERVICE})).expect("registering");
    assert!(r.is_success(), "registering {SERVICE}: {r}");
    server.terminate();

    let mut ledger = Ledger::new();
    let mut fired = 0;
    for run in 0..runs {
        let skip = rng.between(0, skip_max);
        let spec = format!("{boundary}={skip}*off->return");
        let mut server = Server::start_env(&store, &arg_refs, &[("FAILPOINTS", &spec)], &log);
        // The boundary may fire during start-up (the LKG file and search index catch up first).
        let until = Instant::now() + common::SERVER_DEADLINE;
        while server.exited().is_none() && server.client().get("/healthz").is_err() {
            assert!(Instant::now() < until, "serve neither answered nor died:\n{}", server.log_tail());
            std::thread::sleep(Duration::from_millis(5));
        }
        if server.exited().is_none() {
            write_until_crash(server.addr, &token, run, &mut ledger);
        }
        let until = Instant::now() + FIRE_WAIT;
        while server.exited().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        match server.exited() {
            Some(status) => {
                assert!(!status.success(), "serve exited cleanly at {spec}:\n{}", server.log_tail());
                fired += 1;
            }
            None => {
                server.kill();
            }
        }
        drop(server);

        let mut server = Server::start(&store, &arg_refs, &log);
        server.wait_ready();
        if let Err(why) = check(&mut server, &token, &ledger) {
            let kept = scratch.keep();
            panic!("{spec} (run {run} of {runs}, FAILPOINT_SEED={seed}): {why}\nkept {}", kept.display());
        }
        server.terminate();
    }
    let acked = ledger.values().filter(|o| matches!(o, Outcome::Acked { .. })).count();
    let in_flight = ledger.values().filter(|o| matches!(o, Outcome::InFlight)).count();
    eprintln!(
        "{boundary}: fired in {fired} of {runs} runs; {acked} changesets acknowledged, {in_flight} in flight at a crash; all checks passed"
    );
    assert!(fired > 0, "{boundary} never fired in {runs} runs: the boundary is not on the path this test drives");
}

/// Every check of the module doc, with the restarted server running.
fn check(server: &mut Server, token: &str, ledger: &Ledger) -> Result<(), String> {
    let db = server.store.db();
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("opening {} read-only: {e}", db.display()))?;
    let integrity: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| format!("integrity_check: {e}"))?;
    if integrity != "ok" {
        return Err(format!("PRAGMA integrity_check: {integrity}"));
    }
    let (n, max): (i64, Option<i64>) = conn
        .query_row("SELECT count(*), max(seq) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| format!("counting events: {e}"))?;
    drop(conn);
    let n = u64::try_from(n).unwrap_or(0);
    if max.and_then(|m| u64::try_from(m).ok()).unwrap_or(0) != n {
        return Err(format!("seqs are not gap-free: {n} events, the highest seq {max:?}"));
    }
    let run = server.store.run(&["verify", "--json"]);
    if !run.status.success() || run.json()["ok"] != json!(true) {
        return Err(format!("confstore verify failed:\n{run}"));
    }

    // tag -> the seqs its values are at; key -> its last value.
    let mut http = Http::new(server.addr).with_token(token);
    let mut at: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = String::new();
    let mut after = 0;
    loop {
        let page = http.get_json(&format!("/api/v1/events?after={after}&limit=1000")).map_err(|e| e.to_string())?;
        if page.status != 200 {
            return Err(format!("GET /api/v1/events: {page}"));
        }
        let page = page.json();
        for e in page["events"].as_array().into_iter().flatten() {
            let kind = &e["event"]["kind"];
            if kind["type"] != "value_set" || kind["service"] != SERVICE {
                continue;
            }
            let (key, value) = (str_of(kind, "key"), str_of(kind, "value"));
            let Some((tag, k)) = value.split_once('-') else {
                let _ = writeln!(problems, "event {} sets {key}={value:?}, which no request sent", e["seq"]);
                continue;
            };
            if k != key || !ledger.contains_key(tag) {
                let _ = writeln!(problems, "event {} sets {key}={value:?}, which no request sent", e["seq"]);
            }
            at.entry(tag.to_owned()).or_default().push(u64_of(e, "seq"));
            last.insert(key.to_owned(), value.to_owned());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    for (tag, outcome) in ledger {
        let seqs = at.get(tag).map_or(&[][..], Vec::as_slice);
        let whole = seqs.len() == KEYS && seqs.windows(2).all(|w| w[1] == w[0] + 1);
        match outcome {
            Outcome::Acked { first_seq, last_seq } => {
                if !whole || seqs.first() != Some(first_seq) || seqs.last() != Some(last_seq) {
                    let _ = writeln!(problems, "{tag} was acknowledged at {first_seq}..={last_seq} but is at {seqs:?}");
                }
            }
            Outcome::InFlight if seqs.is_empty() || whole => {}
            Outcome::InFlight => {
                let _ = writeln!(problems, "{tag} (in flight at the crash) is in the log partly or twice: {seqs:?}");
            }
            Outcome::Refused(why) if !seqs.is_empty() => {
                let _ = writeln!(problems, "{tag} was refused ({why}) but is in the log at {seqs:?}");
            }
            Outcome::Refused(_) => {}
        }
    }

    let snap = http.get_json(&format!("/api/v1/services/{SERVICE}/snapshot")).map_err(|e| e.to_string())?;
    let served: BTreeMap<String, String> = snap.json()["config"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("<not a string>").to_owned())).collect())
        .unwrap_or_default();
    if served != last {
        let _ = writeln!(problems, "the snapshot is not the last value of each key in the log");
    }
    // The projections the crash may have interrupted catch up to the head.
    let ready = server.wait_for("the search index and LKG file at the head", "/readyz", common::SERVER_DEADLINE, |r| {
        r.status == 200
            && serde_json::from_slice::<Value>(&r.body)
                .is_ok_and(|v| v["projections"]["lkg"]["lag"] == 0 && v["projections"]["search"]["lag"] == 0)
    });
    if u64_of(&ready.json()["projections"]["lkg"], "seq") != n {
        let _ = writeln!(problems, "the LKG file is not at the head {n}: {}", ready.json());
    }
    for (key, value) in last.iter().take(3) {
        let hits = http.get_json(&format!("/api/v1/search?q={value}&service={SERVICE}")).map_err(|e| e.to_string())?;
        let found = hits.json()["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["key"] == json!(key) && h["value"] == json!(value));
        if !found {
            let _ = writeln!(problems, "searching {value:?} does not find {key}: {hits}");
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

#[test]
fn crash_before_commit() {
    crash_at("log::before_commit", 6);
}

#[test]
fn crash_after_commit_before_the_answer() {
    crash_at("log::after_commit", 6);
}

#[test]
fn crash_mid_write_model_checkpoint() {
    crash_at("log::mid_checkpoint", 1);
}

#[test]
fn crash_mid_publish() {
    crash_at("stream::mid_publish", 20);
}

#[test]
fn crash_mid_lkg_write() {
    crash_at("lkg::mid_write", 1);
}

#[test]
fn crash_mid_search_update() {
    crash_at("search::mid_update", 1);
}

/// `keys rotate --signing` crashed after writing the new key to the env file, or after
/// appending the rotation event: running it again finishes, the chain verifies with the
/// first key as the anchor, the env file's key is the store's current one (a write
/// succeeds) and no previous key is left behind.
#[test]
fn an_interrupted_signing_key_rotation_finishes_when_run_again() {
    let runs = env_count("FAILPOINT_RUNS", 5);
    let scratch = Scratch::new("failpoints-rotate");
    let store = Store::in_dir(scratch.path());
    store.init();
    store.ok(&["service", "add", SERVICE]);
    let first_public = store.env_vars()[common::PUBLIC_KEY].clone();
    for run in 0..runs {
        for boundary in ["keys::mid_rotation_before_event", "keys::mid_rotation_after_event"] {
            let crashed =
                store.run_env(&["keys", "rotate", "--signing"], &[("FAILPOINTS", &format!("{boundary}=return"))]);
            assert!(!crashed.status.success(), "{boundary} did not fire: {crashed}");
            let done = store.run(&["keys", "rotate", "--signing", "--json"]);
            assert!(done.status.success(), "run {run}: rotating again after a crash at {boundary}: {done}");
            let vars = store.env_vars();
            assert!(
                !vars.contains_key("CONFIG_SIGNATURE_PREVIOUS_PRIVATE_KEY"),
                "run {run}, {boundary}: clean-up not done: {vars:?}"
            );
            let v = store.json(&["verify", "--json", "--public-key", &first_public]);
            assert_eq!(v["ok"], json!(true), "run {run}, {boundary}: {v}");
            store.ok(&["set", SERVICE, "k", &format!("\"r{run}\""), "--reason", boundary]);
        }
    }
}

/// `generation start` crashed after appending its event, before writing `rebuild.info` and
/// resetting the LKG high-water mark: the store still opens, verifies and takes writes, and
/// the data directory does not claim that the new generation is behind the old one.
#[test]
fn an_interrupted_generation_start_leaves_a_usable_store() {
    let scratch = Scratch::new("failpoints-generation");
    let store = Store::in_dir(scratch.path());
    store.init();
    store.ok(&["service", "add", SERVICE]);
    store.ok(&["set", SERVICE, "k", "1"]);
    let epoch = u64_of(&store.head(), "epoch");
    let copy = scratch.path().join("copy");
    store.ok(&["replay", "--to-epoch", &epoch.to_string(), "--out", copy.to_str().unwrap()]);
    for v in 2..=4 {
        store.ok(&["set", SERVICE, "k", &v.to_string()]);
    }
    for name in ["config.db-wal", "config.db-shm"] {
        let _ = std::fs::remove_file(store.data_dir.join(name));
    }
    std::fs::copy(copy.join("config.db"), store.db()).unwrap();
    let refused = store.run(&["set", SERVICE, "k", "5"]);
    assert!(!refused.status.success(), "the older copy is refused before the new generation: {refused}");

    let crashed = store
        .run_env(&["generation", "start", "--reason", "restored"], &[("FAILPOINTS", "generation::mid_start=return")]);
    assert!(!crashed.status.success(), "generation::mid_start did not fire: {crashed}");
    let head = store.head();
    assert_eq!(head["generation"], json!(2), "the event was appended before the crash: {head}");
    let v = store.json(&["verify", "--json"]);
    assert_eq!(v["ok"], json!(true), "{v}");
    let write = store.run(&["set", SERVICE, "k", "5"]);
    assert!(write.status.success(), "the new generation takes writes after the crash: {write}");
    let check = store.run(&["restore-check", "--json"]);
    assert!(check.status.success(), "restore-check after the crash: {check}");
}
