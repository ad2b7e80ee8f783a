//! docs/testing.md row 22: the read-only fallback of `confstore serve` serves only genuine,
//! recent-enough data from the LKG file (`config.lkg.json`, HMAC-signed), refuses every
//! write, refuses a tampered file, flags an older one, and returns to read-write by itself.
//!
//! Every test starts from the same fixture, built through the API of a live server: five
//! services (one of them `global`, whose values others inherit; a schema with defaults; a
//! secret), recorded as served live (each service's snapshot document and JWS, every value,
//! the service list, the head) once `/readyz` says the LKG file holds the head; then the
//! server is stopped with SIGTERM. The database is then made unavailable in three ways:
//! renamed away (with its `-wal`/`-shm`), its first 100 bytes overwritten with garbage,
//! and locked by another connection (`locking_mode=EXCLUSIVE`, `BEGIN EXCLUSIVE`; the server
//! gives up after its 5 s busy timeout). `chmod 000` is not used: these tests run as root
//! on the build machine, and root opens a file whatever its mode, so it would test nothing.
//!
//! In the fallback: `/healthz` and `/readyz` say `read_only_fallback` with a usable LKG;
//! every recorded read answers exactly as live (100% of services and values) with
//! `confstore-mode: read_only_fallback`; every other read route and every write route of the
//! OpenAPI document answers 503 `read_only`; the server creates, changes or repairs nothing
//! (no new `config.db`, the corrupt file and the LKG file byte-identical). A tampered LKG
//! file (a payload or signature character changed, the file cut short, an LKG file of
//! another store and key) is refused: health says `usable: false`, `/readyz` is 503, every
//! read is 503 and serves nothing. An older LKG file put back (its seq below the high-water
//! mark `config.lkg.hwm`) is served flagged: `confstore-stale` on every read, `lkg.stale` in
//! `/readyz`. When the renamed database comes back (or the lock is released), the same
//! process switches to read-write and accepts a write.
//!
//! Last, SIGKILL while the server rewrites a large (1.4 MB) LKG file after every commit
//! under write load, `LKG_KILL_ITERS` times (default 100, the test plan's (docs/testing.md) count; ~30 s): half
//! at a uniform-random moment, half aimed at the first sight of the temporary file (inside
//! a rewrite). After every kill `confstore lkg verify` passes (0 partial LKG files) and its
//! seq is at most the high-water mark; at the end a server started without the database
//! serves the file. `LKG_SEED` replays the random choices. On failure the data is kept.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Http, HttpResponse, Rng, Scratch, Server, Store, admin_token, env_count, poll_until, seed, str_of, u64_of,
};
use serde_json::{Value, json};

/// Services of the fixture; `global`'s values are inherited by the others.
const SERVICES: [&str; 5] = ["global", "web", "billing", "search", "worker"];
/// Seconds between the fallback's attempts to open the database again.
const RECOVER_ARGS: [&str; 2] = ["--recover-interval-s", "1"];
/// `CONFSTORE_LOG` that logs each failed attempt to reopen the database ...
const DEBUG_LOG: &str = "info,confstore_server=debug";
/// ... with this message (crates/confstore-server/src/app.rs, `try_recover`).
const STILL_UNAVAILABLE: &str = "the database is still unavailable";

/// What the live server answered to one read.
#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    accept_json: bool,
    status: u16,
    body: Vec<u8>,
}

/// A stopped store with its data recorded as served live.
struct Fixture {
    scratch: Scratch,
    store: Store,
    reads: Vec<Recorded>,
    head: Value,
    lkg_seq: u64,
}

/// The values of the fixture, as `PATCH .../values` bodies.
fn fixture_values() -> Vec<(&'static str, Value)> {
    vec![
        ("global", json!({"set": {"region": "eu-west", "log_level": "info", "timeout_ms": 500}})),
        ("web", json!({"set": {"log_level": "debug", "hosts": ["a.example", "b.example"]}})),
        ("billing", json!({"set": {"currency": "EUR", "limits": {"max": 1000, "burst": [1, 2, 3]}, "enabled": true}})),
        ("search", json!({"set": {"greeting": "Grüße ✓", "ratio": 0.25, "shards": 12}})),
        ("worker", json!({"set": {"threads": 4}})),
    ]
}

/// The reads recorded live and compared in the fallback: the service list, the head, each
/// snapshot (document and JWS), each value set on a service, one inherited value (404 both
/// ways) and an unknown service (404 both ways).
fn read_paths(store_values: &[(String, String)]) -> Vec<(String, bool)> {
    let mut paths = vec![("/api/v1/services".to_owned(), true)];
    for s in SERVICES {
        paths.push((format!("/api/v1/services/{s}/snapshot"), true));
        paths.push((format!("/api/v1/services/{s}/snapshot"), false));
    }
    for (s, k) in store_values {
        paths.push((format!("/api/v1/services/{s}/values/{k}"), true));
    }
    paths.push(("/api/v1/services/web/values/region".to_owned(), true));
    paths.push(("/api/v1/services/nosuch/snapshot".to_owned(), true));
    paths
}

fn accept(json: bool) -> &'static [(&'static str, &'static str)] {
    if json { &[("Accept", "application/json")] } else { &[] }
}

/// Records every read of `read_paths`, and the head.
fn record(server: &Server, keys: &[(String, String)]) -> (Vec<Recorded>, Value) {
    let mut http = server.admin();
    let reads = read_paths(keys)
        .into_iter()
        .map(|(path, accept_json)| {
            let r = http.request("GET", &path, accept(accept_json), None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
            assert!(r.status == 200 || r.status == 404, "GET {path} live: {r}");
            Recorded { path, accept_json, status: r.status, body: r.body }
        })
        .collect();
    let head = http.ok("GET", "/api/v1/head", None).json();
    (reads, head)
}

/// Builds the fixture through the API of a live server on a new store, waits until the
/// LKG file holds the head, records the reads, and stops the server (SIGTERM).
fn fixture(label: &str) -> Fixture {
    let scratch = Scratch::new(label);
    let store = Store::in_dir(scratch.path());
    let mut server = Server::start(&store, &[], &scratch.path().join("serve.log"));
    server.wait_ready();
    let mut http = server.admin();
    for s in SERVICES {
        http.ok("POST", "/api/v1/services", Some(&json!({ "name": s })));
    }
    let mut keys = Vec::new();
    for (s, body) in fixture_values() {
        http.ok("PATCH", &format!("/api/v1/services/{s}/values"), Some(&body));
        for k in body["set"].as_object().expect("a set").keys() {
            keys.push((s.to_owned(), k.clone()));
        }
    }
    let schema = json!({"type": "object", "additionalProperties": true, "properties": {
        "port": {"type": "integer", "default": 8080}, "tls": {"type": "boolean", "default": true},
        "log_level": {"enum": ["debug", "info", "warn"]}, "region": {"type": "string"}}});
    http.ok("PUT", "/api/v1/services/web/schema", Some(&schema));
    http.ok("PUT", "/api/v1/services/web/values/port", Some(&json!({"value": 9090})));
    http.ok("PUT", "/api/v1/services/web/values/api_key", Some(&json!({"value": "s3cret", "secret": true})));
    keys.extend([("web".to_owned(), "port".to_owned()), ("web".to_owned(), "api_key".to_owned())]);
    let lkg_seq = server.wait_lkg_current();
    let (reads, head) = record(&server, &keys);
    assert_eq!(u64_of(&head, "seq"), lkg_seq, "the LKG file holds the head");
    let status = server.terminate();
    assert!(status.success(), "serve stops cleanly on SIGTERM: {status}\n{}", server.log_tail());
    Fixture { scratch, store, reads, head, lkg_seq }
}

/// Copies every file of the fixture's data directory into `<scratch>/<name>/data`; the
/// copy uses the fixture's keys.
fn copy_store(fx: &Fixture, name: &str) -> Store {
    let store = fx.store.with_data_dir(&fx.scratch.path().join(name).join("data"));
    std::fs::create_dir_all(&store.data_dir).expect("creating the copy's data directory");
    for entry in std::fs::read_dir(&fx.store.data_dir).expect("listing the data directory").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), store.data_dir.join(entry.file_name())).expect("copying a data file");
        }
    }
    store
}

/// The database files of a data directory.
fn db_files(data_dir: &Path) -> Vec<PathBuf> {
    ["config.db", "config.db-wal", "config.db-shm"].iter().map(|n| data_dir.join(n)).collect()
}

/// Moves the database files into `<data-dir>/../away`.
fn rename_db_away(store: &Store) -> PathBuf {
    let away = store.data_dir.with_file_name("away");
    std::fs::create_dir_all(&away).expect("creating the away directory");
    for f in db_files(&store.data_dir) {
        if f.exists() {
            std::fs::rename(&f, away.join(f.file_name().expect("a file name"))).expect("renaming the database away");
        }
    }
    away
}

/// Moves them back.
fn rename_db_back(store: &Store, away: &Path) {
    for f in db_files(&store.data_dir) {
        let from = away.join(f.file_name().expect("a file name"));
        if from.exists() {
            std::fs::rename(&from, &f).expect("renaming the database back");
        }
    }
}

/// Overwrites the first 100 bytes (the SQLite header) of `config.db` with random bytes.
fn corrupt_header(store: &Store, rng: &mut Rng) -> Vec<u8> {
    use std::io::{Seek, Write};
    let mut garbage = rng.bytes(100);
    garbage[0] = 0xff; // never "SQLite format 3"
    let mut f = std::fs::OpenOptions::new().write(true).open(store.db()).expect("opening config.db");
    f.seek(std::io::SeekFrom::Start(0)).expect("seeking");
    f.write_all(&garbage).expect("writing garbage");
    f.sync_all().expect("syncing");
    drop(f);
    std::fs::read(store.db()).expect("reading the corrupt database")
}

/// Another connection holding an exclusive lock on `config.db` until dropped.
fn lock_db(store: &Store) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.db()).expect("opening config.db to lock it");
    let mode: String = conn.query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get(0)).expect("setting locking_mode");
    assert_eq!(mode, "exclusive");
    conn.execute_batch("BEGIN EXCLUSIVE").expect("taking the exclusive lock");
    let n: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).expect("reading under the lock");
    assert!(n > 0, "the locked database holds the fixture");
    conn
}

/// The write operations of the OpenAPI document (every non-GET operation), each with a
/// body that would succeed on a live server. Panics if the document has one not listed
/// here, so a new write route cannot be missed.
fn write_requests(doc: &Value) -> Vec<(String, String, Option<Value>)> {
    let bodies: BTreeMap<(&str, &str), (&str, Option<Value>)> = [
        (
            ("PUT", "/api/v1/services/{service}/values/{key}"),
            ("/api/v1/services/web/values/port", Some(json!({"value": 1}))),
        ),
        (("DELETE", "/api/v1/services/{service}/values/{key}"), ("/api/v1/services/web/values/port", None)),
        (
            ("PATCH", "/api/v1/services/{service}/values"),
            ("/api/v1/services/web/values", Some(json!({"set": {"a": 1}}))),
        ),
        (("POST", "/api/v1/services"), ("/api/v1/services", Some(json!({"name": "newcomer"})))),
        (
            ("PUT", "/api/v1/services/{service}/schema"),
            ("/api/v1/services/worker/schema", Some(json!({"type": "object"}))),
        ),
        (
            ("POST", "/api/v1/services/{service}/secrets/{key}/reveal"),
            ("/api/v1/services/web/secrets/api_key/reveal", None),
        ),
        (("POST", "/api/v1/rollback"), ("/api/v1/rollback", Some(json!({"to_epoch": 1})))),
        // Not a write, but it reads the whole log, which the fallback does not have.
        (("POST", "/api/v1/verify"), ("/api/v1/verify", None)),
        (("POST", "/api/v1/tokens"), ("/api/v1/tokens", Some(json!({"name": "late", "role": "config.read"})))),
        (("DELETE", "/api/v1/tokens/{id}"), ("/api/v1/tokens/0123456789abcdef", None)),
        // Not a write to the log, but the fleet view judges instances against the current
        // versions, which the fallback does not have.
        (
            ("PUT", "/api/v1/fleet/{service}/{instance}"),
            (
                "/api/v1/fleet/web/pod-1",
                Some(json!({"format": "confstore-status/1", "service": "web", "instance": "pod-1",
                    "state": "offline", "time_ms": 1})),
            ),
        ),
        (
            ("POST", "/api/v1/services/{service}/rollout"),
            (
                "/api/v1/services/web/rollout",
                Some(json!({"set": {"a": 2}, "cohort": {"percent": 10}, "bake_seconds": 60})),
            ),
        ),
        (
            ("POST", "/api/v1/services/{service}/rollout/promote"),
            ("/api/v1/services/web/rollout/promote", Some(json!({}))),
        ),
        (("POST", "/api/v1/services/{service}/rollout/abort"), ("/api/v1/services/web/rollout/abort", Some(json!({})))),
    ]
    .into_iter()
    .collect();
    let mut out = Vec::new();
    for (op_path, method) in operations(doc).into_iter().filter(|(_, m)| m != "GET") {
        let Some((path, body)) = bodies.get(&(method.as_str(), op_path.as_str())) else {
            panic!("{method} {op_path} is a write route this test does not try; add it to write_requests")
        };
        let (path, body) = ((*path).to_owned(), body.clone());
        out.push((method, path, body));
    }
    assert!(out.len() >= 6, "the document lists the write routes: {out:?}");
    out
}

/// The read routes of the document that the fallback does not serve (they need the log),
/// with a query that would succeed live.
fn unserved_reads(doc: &Value) -> Vec<String> {
    let served = [
        "/api/v1/services",
        "/api/v1/services/{service}/snapshot",
        "/api/v1/services/{service}/values/{key}",
        "/api/v1/services/{service}/keys",
        "/api/v1/whoami",
        "/api/v1/stream",
        "/api/v1/head",
        "/api/v1/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ];
    let concrete: BTreeMap<&str, &str> = [
        ("/api/v1/history", "/api/v1/history"),
        ("/api/v1/events", "/api/v1/events?after=0"),
        ("/api/v1/state", "/api/v1/state"),
        ("/api/v1/diff", "/api/v1/diff?from=1"),
        ("/api/v1/search", "/api/v1/search?q=eu"),
        ("/api/v1/audit", "/api/v1/audit"),
        ("/api/v1/export", "/api/v1/export"),
        ("/api/v1/tokens", "/api/v1/tokens"),
        ("/api/v1/services/{service}/schema", "/api/v1/services/web/schema"),
        ("/api/v1/changesets", "/api/v1/changesets"),
        ("/api/v1/live", "/api/v1/live"),
        // The Merkle tree's checkpoint and proofs come from the log.
        ("/api/v1/checkpoint", "/api/v1/checkpoint"),
        ("/api/v1/proof/inclusion", "/api/v1/proof/inclusion?seq=1&size=1"),
        ("/api/v1/proof/consistency", "/api/v1/proof/consistency?from=1&to=1"),
        // The fleet view is judged against the current versions.
        ("/api/v1/fleet", "/api/v1/fleet"),
        ("/api/v1/fleet/{service}", "/api/v1/fleet/web"),
        // A rollout's cohort is judged from the fleet view and the log's rollouts.
        ("/api/v1/services/{service}/rollout", "/api/v1/services/web/rollout"),
    ]
    .into_iter()
    .collect();
    let mut out: Vec<String> = operations(doc)
        .into_iter()
        .filter(|(p, m)| m == "GET" && !served.contains(&p.as_str()))
        .map(|(p, _)| {
            (*concrete.get(p.as_str()).unwrap_or_else(|| panic!("GET {p} is not known to this test; add it")))
                .to_owned()
        })
        .collect();
    // A past epoch needs the log too.
    out.push("/api/v1/services/web/snapshot?epoch=1".to_owned());
    out
}

/// (path, METHOD) of every operation of the OpenAPI document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for method in item.as_object().expect("a path item").keys() {
            out.push((path.clone(), method.to_uppercase()));
        }
    }
    out
}

/// Collects what is wrong, so one run reports every failed check.
#[derive(Default)]
struct Problems(Vec<String>);

/// Answers by status: how many, and the first one.
type Answers = BTreeMap<u16, (usize, String)>;

impl Problems {
    fn push(&mut self, what: String) {
        self.0.push(what);
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    #[track_caller]
    fn assert_none(&self, context: &str) {
        assert!(self.0.is_empty(), "{context}: {} problem(s):\n- {}", self.0.len(), self.0.join("\n- "));
    }
}

/// Requests `r`'s path as it was recorded.
fn replay(http: &mut Http, r: &Recorded) -> HttpResponse {
    http.request("GET", &r.path, accept(r.accept_json), None).unwrap_or_else(|e| panic!("GET {}: {e}", r.path))
}

/// Whether a fallback answer equals the live one (JSON compared as values, JWS as text).
fn same_answer(live: &Recorded, now: &HttpResponse) -> bool {
    if live.status != now.status {
        return false;
    }
    match (serde_json::from_slice::<Value>(&live.body), serde_json::from_slice::<Value>(&now.body)) {
        (Ok(a), Ok(b)) if live.accept_json => a == b,
        _ => live.body == now.body,
    }
}

/// Every check of a server in the fallback with a usable LKG file holding `reads` (as
/// recorded live) and `head`; `stale` says whether the file is older than the high-water mark.
fn check_fallback(server: &mut Server, reads: &[Recorded], head: &Value, stale: bool, problems: &mut Problems) {
    let health = server.wait_answering();
    problems.check(health["mode"] == "read_only_fallback", || format!("/healthz mode: {health}"));
    problems.check(health["lkg"]["usable"] == true, || format!("/healthz lkg.usable: {health}"));
    problems.check(health["reason"].as_str().is_some_and(|r| !r.is_empty()), || format!("/healthz reason: {health}"));
    problems
        .check(health["lkg"]["stale"].is_null() != stale, || format!("/healthz lkg.stale (stale={stale}): {health}"));
    let mut open = server.client();
    let ready = open.get("/readyz").expect("GET /readyz");
    let ready_body = ready.json();
    problems.check(ready.status == 200, || format!("/readyz with a usable LKG: {ready}"));
    problems.check(ready_body["mode"] == "read_only_fallback", || format!("/readyz mode: {ready}"));
    problems
        .check(ready_body["lkg"]["seq"] == head["seq"], || format!("/readyz lkg.seq is not {}: {ready}", head["seq"]));
    problems
        .check(ready_body["lkg"]["stale"].is_null() != stale, || format!("/readyz lkg.stale (stale={stale}): {ready}"));

    let mut http = server.admin();
    let mut served = 0;
    for r in reads {
        let now = replay(&mut http, r);
        let same = same_answer(r, &now);
        problems.check(same, || {
            format!(
                "GET {} (json={}) differs from live:\n  live: {} {}\n  now:  {now}",
                r.path,
                r.accept_json,
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        });
        if now.status == 200 {
            served += usize::from(same);
            problems.check(now.header("confstore-mode") == Some("read_only_fallback"), || {
                format!("GET {} has no `confstore-mode: read_only_fallback` header: {now}", r.path)
            });
            problems.check(now.header("confstore-stale").is_some() == stale, || {
                format!(
                    "GET {}: confstore-stale header present={} (stale={stale}): {now}",
                    r.path,
                    now.header("confstore-stale").is_some()
                )
            });
        }
    }
    problems.check(served == reads.iter().filter(|r| r.status == 200).count(), || {
        format!("{served} of {} recorded reads served identically", reads.iter().filter(|r| r.status == 200).count())
    });
    let now = http.get("/api/v1/head").expect("GET /api/v1/head");
    let fields = ["store_id", "generation", "seq", "epoch", "hash"];
    problems.check(now.status == 200 && fields.iter().all(|f| now.json()[f] == head[f]), || {
        format!("GET /api/v1/head in the fallback: {now}\n  live: {head}")
    });
    problems.check(now.header("confstore-mode") == Some("read_only_fallback"), || {
        format!("GET /api/v1/head header: {now}")
    });

    // The web UI's keys view: the values of the LKG's snapshot, flagged, no epochs.
    let keys = http.get("/api/v1/services/web/keys").expect("GET /api/v1/services/web/keys");
    let snapshot = http.get_json("/api/v1/services/web/snapshot").expect("GET the snapshot");
    let shown: BTreeMap<String, Value> = keys.json()["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["secret"] == false)
        .map(|k| (k["key"].as_str().unwrap_or_default().to_owned(), k["value"].clone()))
        .collect();
    let config = snapshot.json()["config"].clone();
    problems.check(
        keys.status == 200
            && keys.header("confstore-mode") == Some("read_only_fallback")
            && !shown.is_empty()
            && shown.iter().all(|(k, v)| &config[k] == v),
        || format!("GET /api/v1/services/web/keys in the fallback: {keys}\n  snapshot: {snapshot}"),
    );

    let doc = open.get("/api/v1/openapi.json").expect("the OpenAPI document").json();
    for (method, path, body) in write_requests(&doc) {
        let r = http.request(&method, &path, &[], body.as_ref()).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let read_only =
            r.status == 503 && serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["error"] == "read_only");
        problems.check(read_only, || format!("{method} {path} in the fallback: expected 503 read_only, got {r}"));
    }
    for path in unserved_reads(&doc) {
        let r = http.get(&path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let read_only =
            r.status == 503 && serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["error"] == "read_only");
        problems.check(read_only, || {
            format!("GET {path} (needs the log) in the fallback: expected 503 read_only, got {r}")
        });
    }
}

/// One way of making the database unavailable, checked end to end on a copy of the fixture.
#[derive(Clone, Copy, Debug)]
enum Unavailable {
    Renamed,
    CorruptHeader,
    Locked,
}

fn fallback_when(how: Unavailable) {
    let fx = fixture(&format!("fallback-{how:?}").to_lowercase());
    let store = copy_store(&fx, "copy");
    let mut rng = Rng::new(seed("LKG_SEED"));
    let lkg_before = std::fs::read(store.data_dir.join("config.lkg.json")).expect("the LKG file");
    let mut away = None;
    let mut corrupt = None;
    let mut lock = None;
    match how {
        Unavailable::Renamed => away = Some(rename_db_away(&store)),
        Unavailable::CorruptHeader => corrupt = Some(corrupt_header(&store, &mut rng)),
        Unavailable::Locked => lock = Some(lock_db(&store)),
    }
    let log = fx.scratch.path().join("copy").join("serve.log");
    // Debug logging of the server crate: each failed attempt to reopen the database is logged.
    let mut server = Server::start_env(&store, &RECOVER_ARGS, &[("CONFSTORE_LOG", DEBUG_LOG)], &log);
    let mut problems = Problems::default();
    check_fallback(&mut server, &fx.reads, &fx.head, false, &mut problems);
    if !matches!(how, Unavailable::Locked) {
        // The files are compared after the server has tried to reopen the database twice
        // (a locked one takes the 5 s busy timeout per attempt; its files are not checked).
        poll_until("two attempts to reopen the database", common::SERVER_DEADLINE, Duration::from_millis(50), || {
            (server.log_text().matches(STILL_UNAVAILABLE).count() >= 2).then_some(())
        });
    }
    let health = server.client().get("/healthz").expect("GET /healthz").json();
    problems.check(health["lkg"]["seq"] == json!(fx.lkg_seq), || {
        format!("/healthz lkg.seq is not {}: {health}", fx.lkg_seq)
    });
    problems.check(std::fs::read(store.data_dir.join("config.lkg.json")).ok().as_ref() == Some(&lkg_before), || {
        "the LKG file changed while the server was in the fallback".to_owned()
    });
    if let Some(bytes) = &corrupt {
        problems.check(std::fs::read(store.db()).ok().as_ref() == Some(bytes), || {
            "the corrupt config.db was modified by the server (it must never write to a database it cannot read)"
                .to_owned()
        });
        problems.check(server.client().get("/readyz").is_ok_and(|r| r.json()["mode"] == "read_only_fallback"), || {
            "the server left the fallback on a corrupt database".to_owned()
        });
    }
    if away.is_some() {
        problems.check(!store.db().exists(), || {
            "the server created a new config.db while the database was away".to_owned()
        });
    }
    problems.assert_none(&format!("fallback with the database {how:?}"));

    // Back to read-write, in the same process, once the database is back.
    match how {
        Unavailable::Renamed => rename_db_back(&store, away.as_deref().expect("renamed")),
        Unavailable::Locked => drop(lock.take()),
        Unavailable::CorruptHeader => {
            server.terminate();
            return;
        }
    }
    let pid = server.pid();
    let t = Instant::now();
    server.wait_for("the server to switch back to read_write", "/readyz", common::SERVER_DEADLINE, |r| {
        r.status == 200 && r.json()["mode"] == "read_write"
    });
    let recovered_in = t.elapsed();
    assert_eq!(server.pid(), pid, "the same process recovered");
    let mut http = server.admin();
    let receipt = http.ok("PUT", "/api/v1/services/worker/values/threads", Some(&json!({"value": 8}))).json();
    assert_eq!(u64_of(&receipt, "last_seq"), u64_of(&fx.head, "seq") + 1, "the write follows the fixture: {receipt}");
    let value = http.ok("GET", "/api/v1/services/worker/values/threads", None);
    assert_eq!(value.json()["value"], 8, "the write is read back: {value}");
    assert!(value.header("confstore-mode").is_none(), "no fallback header once live: {value}");
    assert_eq!(server.wait_lkg_current(), u64_of(&fx.head, "seq") + 1, "the LKG file follows the write");
    server.terminate();
    let verify = store.json(&["verify", "--json"]);
    assert_eq!(verify["ok"], true, "the store verifies after the recovery: {verify}");
    eprintln!("{how:?}: back to read_write {recovered_in:?} after the database returned (recover interval 1 s)");
}

#[test]
fn fallback_serves_the_lkg_and_refuses_writes_when_the_database_is_renamed_away_then_recovers() {
    fallback_when(Unavailable::Renamed);
}

#[test]
fn fallback_serves_the_lkg_and_refuses_writes_when_the_database_header_is_corrupt() {
    fallback_when(Unavailable::CorruptHeader);
}

#[test]
fn fallback_serves_the_lkg_and_refuses_writes_when_the_database_is_locked_then_recovers() {
    fallback_when(Unavailable::Locked);
}

/// Replaces the character at `i` of `text` with another base64url character.
fn change_b64_char(text: &mut [u8], i: usize, rng: &mut Rng) {
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    loop {
        let c = *rng.pick(B64URL);
        if c != text[i] {
            text[i] = c;
            return;
        }
    }
}

/// The byte range of the string value of `"member":"..."` in a flattened JWS.
fn member_range(jws: &[u8], member: &str) -> std::ops::Range<usize> {
    let text = std::str::from_utf8(jws).expect("the LKG file is UTF-8");
    let tag = format!("\"{member}\":\"");
    let start = text.find(&tag).unwrap_or_else(|| panic!("no {member} in the LKG file")) + tag.len();
    let len = text[start..].find('"').expect("a closing quote");
    start..start + len
}

#[test]
fn a_tampered_or_foreign_lkg_file_is_refused_and_nothing_is_served() {
    let fx = fixture("lkg-tampered");
    let seed = seed("LKG_SEED");
    let mut rng = Rng::new(seed);
    let store = copy_store(&fx, "copy");
    rename_db_away(&store);
    let lkg = store.data_dir.join("config.lkg.json");
    let good = std::fs::read(&lkg).expect("the LKG file");

    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for member in ["payload", "signature"] {
        let range = member_range(&good, member);
        for _ in 0..3 {
            // Not the last character: its low bits may be padding the decoder ignores.
            let i = range.start + rng.index(range.len() - 1);
            let mut bad = good.clone();
            change_b64_char(&mut bad, i, &mut rng);
            variants.push((format!("{member} character {} changed", i - range.start), bad));
        }
    }
    for _ in 0..3 {
        let n = rng.index(good.len());
        variants.push((format!("cut to {n} of {} bytes", good.len()), good[..n].to_vec()));
    }
    variants.push(("alg none, no signature".into(), {
        let doc: Value = serde_json::from_slice(&good).expect("a JWS");
        let none = json!({"alg": "none", "typ": "confstore-lkg+json"}).to_string();
        let protected = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, none);
        json!({"protected": protected, "payload": doc["payload"], "signature": ""}).to_string().into_bytes()
    }));
    // A genuine LKG file of another store, signed with that store's key.
    let other = Store::in_dir(&fx.scratch.path().join("other"));
    other.init();
    variants.push((
        "another store's LKG file (another key)".into(),
        std::fs::read(other.data_dir.join("config.lkg.json")).expect("its LKG file"),
    ));

    let log = fx.scratch.path().join("copy").join("serve.log");
    // Values of the fixture, which no refusal may show.
    let markers = ["eu-west", "a.example", "Grüße ✓", "\"EUR\""];
    let mut problems = Problems::default();
    for (what, bytes) in &variants {
        std::fs::write(&lkg, bytes).expect("writing the tampered LKG file");
        let cli = store.run(&["lkg", "verify", "--json"]);
        problems.check(!cli.status.success(), || format!("{what}: `confstore lkg verify` accepted it:\n{cli}"));
        let mut server = Server::start(&store, &RECOVER_ARGS, &log);
        let health = server.wait_answering();
        problems.check(health["mode"] == "read_only_fallback" && health["lkg"]["usable"] == false, || {
            format!("{what}: /healthz should say lkg.usable false: {health}")
        });
        let ready = server.client().get("/readyz").expect("GET /readyz");
        problems.check(ready.status == 503 && ready.json()["ready"] == false, || format!("{what}: /readyz: {ready}"));
        let mut http = server.admin();
        let mut paths: Vec<&str> = fx.reads.iter().map(|r| r.path.as_str()).collect();
        paths.push("/api/v1/head");
        // status -> (how many, the first answer), reads and writes apart.
        let (mut reads, mut writes): (Answers, Answers) = Default::default();
        for path in paths {
            let r = http.request("GET", path, accept(true), None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
            let text = r.text();
            problems
                .check(!markers.iter().any(|m| text.contains(m)), || format!("{what}: GET {path} served data: {r}"));
            reads.entry(r.status).or_insert((0, format!("GET {path}: {r}"))).0 += 1;
        }
        let doc = server.client().get("/api/v1/openapi.json").expect("the OpenAPI document").json();
        for (method, path, body) in write_requests(&doc) {
            let r = http.request(&method, &path, &[], body.as_ref()).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            writes.entry(r.status).or_insert((0, format!("{method} {path}: {r}"))).0 += 1;
        }
        for (kind, answers) in [("reads", &reads), ("writes", &writes)] {
            for (status, (n, first)) in answers.iter().filter(|(s, _)| **s != 503) {
                problems.push(format!("{what}: {n} {kind} answered {status}, not 503; the first: {first}"));
            }
        }
        server.terminate();
        problems.check(std::fs::read(&lkg).ok().as_ref() == Some(bytes), || {
            format!("{what}: the server rewrote the refused file")
        });
    }
    problems.assert_none(&format!("tampered LKG files (LKG_SEED={seed})"));
    eprintln!("{} tampered or foreign LKG files refused", variants.len());
}

#[test]
fn an_older_lkg_file_put_back_is_served_flagged_stale() {
    let fx = fixture("lkg-older");
    let old = std::fs::read(fx.store.data_dir.join("config.lkg.json")).expect("the LKG file");
    // More writes: the high-water mark moves past the saved file.
    let log = fx.scratch.path().join("serve.log");
    let mut server = Server::start(&fx.store, &[], &log);
    server.wait_ready();
    let mut http = server.admin();
    http.ok("PUT", "/api/v1/services/web/values/log_level", Some(&json!({"value": "warn"})));
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "latecomer"})));
    let newer = server.wait_lkg_current();
    server.terminate();
    let hwm: u64 = std::fs::read_to_string(fx.store.data_dir.join("config.lkg.hwm"))
        .expect("the high-water mark file")
        .trim()
        .parse()
        .expect("a seq");
    assert!(hwm >= newer && newer > fx.lkg_seq, "hwm {hwm}, newest LKG {newer}, saved LKG {}", fx.lkg_seq);

    std::fs::write(fx.store.data_dir.join("config.lkg.json"), &old).expect("putting the older file back");
    rename_db_away(&fx.store);
    let mut server = Server::start(&fx.store, &RECOVER_ARGS, &log);
    let mut problems = Problems::default();
    check_fallback(&mut server, &fx.reads, &fx.head, true, &mut problems);
    let ready = server.client().get("/readyz").expect("GET /readyz").json();
    let stale = ready["lkg"]["stale"].as_str().unwrap_or("");
    problems.check(stale.contains(&fx.lkg_seq.to_string()) && stale.contains(&hwm.to_string()), || {
        format!("/readyz lkg.stale names the file's seq {} and the high-water mark {hwm}: {ready}", fx.lkg_seq)
    });
    server.terminate();
    problems.assert_none("an older LKG file");
}

#[test]
fn sigkill_during_lkg_writes_never_leaves_a_partial_lkg_file() {
    let iterations = env_count("LKG_KILL_ITERS", 100);
    let seed = seed("LKG_SEED");
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("lkg-kill");
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let lkg = store.data_dir.join("config.lkg.json");
    let tmp = store.data_dir.join("config.lkg.json.tmp");
    let started = Instant::now();

    // A large LKG file (40 services x 25 keys of ~1 KB), rewritten after every commit.
    const KILL_SERVICES: usize = 40;
    let args = ["--lkg-interval-ms", "0"];
    let mut server = Server::start(&store, &args, &log);
    server.wait_ready();
    let token = admin_token(&store);
    let mut http = server.admin();
    let filler = "x".repeat(1000);
    for s in 0..KILL_SERVICES {
        http.ok("POST", "/api/v1/services", Some(&json!({ "name": format!("svc{s}") })));
        let set: serde_json::Map<String, Value> =
            (0..25).map(|k| (format!("key{k}"), json!(format!("{k}{filler}")))).collect();
        http.ok("PATCH", &format!("/api/v1/services/svc{s}/values"), Some(&json!({ "set": set })));
    }
    server.wait_lkg_current();
    let lkg_bytes = std::fs::metadata(&lkg).expect("the LKG file").len();

    let mut kills_mid_write = 0;
    let mut aimed = 0;
    let mut partial_tmp = 0;
    let mut writes = 0;
    for iteration in 0..iterations {
        if iteration > 0 {
            server = Server::start(&store, &args, &log);
            server.wait_ready();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (addr, token, stop) = (server.addr, token.clone(), Arc::clone(&stop));
                let mut wrng = Rng::new(rng.next_u64());
                std::thread::spawn(move || {
                    let mut http = Http::new(addr).with_token(&token);
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path =
                            format!("/api/v1/services/svc{}/values/key{}", wrng.index(KILL_SERVICES), wrng.below(25));
                        match http.send("PUT", &path, &json!({ "value": format!("{iteration}-{w}-{n}") })) {
                            Ok(r) if r.is_success() => n += 1,
                            _ => break,
                        }
                    }
                    n
                })
            })
            .collect();
        // Not synchronisation: the kill moment is the random input of this test. Every
        // other kill is aimed: at the first sight of the temporary file after the random
        // moment, i.e. inside a rewrite (a rewrite is a few ms of a ~60 ms cycle, so
        // uniform kills alone rarely land in one).
        std::thread::sleep(Duration::from_millis(rng.between(0, 300)));
        if iteration % 2 == 1 {
            let until = Instant::now() + Duration::from_secs(5);
            while !tmp.exists() && Instant::now() < until {
                std::hint::spin_loop();
            }
            aimed += 1;
        }
        server.kill();
        stop.store(true, Ordering::Relaxed);
        writes += writers.into_iter().map(|w| w.join().expect("a writer thread")).sum::<usize>();

        let fail = |why: String, scratch: &mut Scratch| -> ! {
            let kept = scratch.keep();
            panic!("iteration {iteration} (LKG_SEED={seed}): {why}\nkept {}", kept.display())
        };
        if tmp.exists() {
            kills_mid_write += 1;
            let run = store.run(&["lkg", "verify", "--file", tmp.to_str().expect("a UTF-8 path"), "--json"]);
            partial_tmp += usize::from(!run.status.success());
            // Seen; removed so the next iteration counts only its own.
            std::fs::remove_file(&tmp).expect("removing the temporary file");
        }
        // The file always exists: `serve` wrote the first one when it created the store.
        let run = store.run(&["lkg", "verify", "--json"]);
        if !run.status.success() || run.json()["ok"] != true {
            fail(format!("the LKG file does not verify after a SIGKILL:\n{run}"), &mut scratch);
        }
        let hwm: u64 = std::fs::read_to_string(store.data_dir.join("config.lkg.hwm"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| fail("no readable high-water mark".into(), &mut scratch));
        if u64_of(&run.json(), "seq") > hwm {
            fail(
                format!("the LKG file holds seq {} above the high-water mark {hwm}", u64_of(&run.json(), "seq")),
                &mut scratch,
            );
        }
    }

    // And the server, without its database, serves what the last kill left.
    let away = rename_db_away(&store);
    let mut server = Server::start(&store, &RECOVER_ARGS, &log);
    let health = server.wait_answering();
    assert_eq!(health["lkg"]["usable"], true, "the LKG file left by the kills is served: {health}");
    let snap = server.admin().ok("GET", "/api/v1/services/svc0/snapshot", None);
    assert_eq!(snap.header("confstore-mode"), Some("read_only_fallback"), "{snap}");
    assert_eq!(str_of(&snap.json(), "service"), "svc0");
    server.terminate();
    rename_db_back(&store, &away);
    eprintln!(
        "{iterations} SIGKILLs ({aimed} aimed at a rewrite) during LKG rewrites ({lkg_bytes} bytes each) under \
         {writes} acknowledged writes: {kills_mid_write} landed inside a rewrite (a temporary file was left, \
         {partial_tmp} of them partial); 0 partial LKG files; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(kills_mid_write > 0, "no kill landed inside an LKG rewrite; the test tests nothing");
}
