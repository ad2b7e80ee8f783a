//! Audit flooding against the real binary (issue 14, ADR 0013): a valid but low-role,
//! service-scoped token makes `HOSTILE_DENIALS` (default 10000) forbidden requests on two
//! routes, from several connections at once. The log keeps the token's first refusal on
//! each route as an `access_denied` event and sums the rest into `access_denied_summary`
//! events (the window is shortened with `CONFSTORE_DENIAL_SUMMARY_SECS`), so the database
//! grows by less than 10 KB; every refusal is still in the JSON log and the metrics; the
//! refusals still counted at shutdown are summarised then; and `confstore verify` passes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::api::token_create;
use common::{Scratch, Server, Store, u64_of};
use serde_json::{Value, json};

/// The summary window the server is started with, in seconds.
const WINDOW_SECS: u64 = 1;
/// Connections hammering at once.
const CONNECTIONS: usize = 8;
/// The growth the database may show for all the refusals.
const GROWTH_BYTES_MAX: u64 = 10 * 1024;

/// The two forbidden routes: (method, path asked, route template, reason).
const ROUTES: [(&str, &str, &str); 2] = [
    ("GET", "/api/v1/audit", "/api/v1/audit"),
    ("GET", "/api/v1/services/db/snapshot", "/api/v1/services/{service}/snapshot"),
];

/// What the log holds after seq `after`, from `confstore export`.
struct Exported {
    /// Decoded events (`event` member) with their seq.
    events: Vec<(u64, Value)>,
    /// Bytes the new rows hold: body, prev_hash, hash, key_id, sig.
    row_bytes: u64,
}

fn export_after(store: &Store, after: u64) -> Exported {
    let run = store.run(&["export"]);
    run.assert_ok();
    let mut out = Exported { events: Vec::new(), row_bytes: 0 };
    for line in run.json_lines().into_iter().skip(1) {
        let seq = u64_of(&line, "seq");
        if seq <= after {
            continue;
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(line["body"].as_str().expect("a body"))
            .expect("base64 body");
        out.row_bytes += u64::try_from(body.len()).unwrap() + 32 + 32 + 8 + 64;
        out.events.push((seq, line["event"].clone()));
    }
    out
}

/// The database's logical size (pages in use, committed WAL frames included), read like any
/// SQLite reader: what `config.db` measures after a full checkpoint.
fn logical_size(store: &Store) -> u64 {
    let conn = rusqlite::Connection::open_with_flags(store.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opening the database read-only");
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("page_count");
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page_size");
    u64::try_from(pages * size).expect("a size")
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Sums the `access_denied_summary` counts of `token` per (method, route), with the number
/// of summary events and the dropped count.
fn summarised(events: &[(u64, Value)], token: &str) -> (BTreeMap<(String, String), u64>, usize, u64) {
    let mut counts = BTreeMap::new();
    let (mut n, mut dropped) = (0, 0);
    for (_, ev) in events {
        let kind = &ev["kind"];
        if kind["type"] != "access_denied_summary" || kind["token_id"] != token {
            continue;
        }
        n += 1;
        dropped += kind["dropped"].as_u64().expect("dropped");
        for c in kind["counts"].as_array().expect("counts") {
            let key = (c["method"].as_str().unwrap().to_owned(), c["route"].as_str().unwrap().to_owned());
            *counts.entry(key).or_default() += c["count"].as_u64().expect("a count");
        }
    }
    (counts, n, dropped)
}

/// `access_denied` events of `token`: (method, route, request id).
fn firsts(events: &[(u64, Value)], token: &str) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|(_, ev)| ev["kind"]["type"] == "access_denied" && ev["kind"]["token_id"] == token)
        .map(|(_, ev)| {
            let k = &ev["kind"];
            (k["method"].as_str().unwrap().into(), k["route"].as_str().unwrap().into(), ev["request_id"].to_string())
        })
        .collect()
}

/// `n` forbidden requests from `CONNECTIONS` connections, alternating the routes; returns
/// how many each route got. Every answer must be 403.
fn hammer(server: &Server, token: &str, n: usize) -> [usize; 2] {
    let per_route = std::sync::Mutex::new([0usize; 2]);
    std::thread::scope(|scope| {
        for c in 0..CONNECTIONS {
            let per_route = &per_route;
            let mut http = server.client().with_token(token);
            scope.spawn(move || {
                let mut mine = [0usize; 2];
                for i in (c..n).step_by(CONNECTIONS) {
                    let (method, path, _) = ROUTES[i % 2];
                    let r = http.request(method, path, &[], None).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                    assert_eq!(r.status, 403, "{method} {path}: {r}");
                    mine[i % 2] += 1;
                }
                let mut total = per_route.lock().unwrap();
                total[0] += mine[0];
                total[1] += mine[1];
            });
        }
    });
    per_route.into_inner().unwrap()
}

#[test]
fn a_token_refused_ten_thousand_times_grows_the_log_by_under_ten_kilobytes() {
    let n = common::env_count("HOSTILE_DENIALS", 10_000);
    assert!(n >= 4, "HOSTILE_DENIALS must be at least 4");
    let scratch = Scratch::new("hostile-audit");
    let store = Store::in_dir(scratch.path());
    let window = WINDOW_SECS.to_string();
    let log = scratch.path().join("serve.log");
    let mut server =
        Server::start_env(&store, &["--log-format", "json"], &[("CONFSTORE_DENIAL_SUMMARY_SECS", &window)], &log);
    server.wait_ready();
    let mut admin = server.admin();
    for s in ["web", "db"] {
        admin.ok("POST", "/api/v1/services", Some(&json!({"name": s})));
    }
    let hostile = token_create(&store, "config.read", Some("web"), "hostile");
    // The token works where it may: it is refused only for what it asks beyond that.
    assert_eq!(server.client().with_token(&hostile.token).get("/api/v1/services/web/snapshot").unwrap().status, 200);
    server.wait_lkg_current();

    let base_seq = u64_of(&admin.ok("GET", "/api/v1/head", None).json(), "seq");
    let base_size = logical_size(&store);
    let base_files = file_size(&store.db()) + file_size(&store.data_dir.join("config.db-wal"));

    let started = Instant::now();
    let per_route = hammer(&server, &hostile.token, n);
    let elapsed = started.elapsed();
    eprintln!("{n} refusals in {elapsed:?} ({per_route:?} per route)");

    // Every refusal after each route's first is summed into summaries, which appear once
    // their window has passed.
    let expected: BTreeMap<(String, String), u64> = ROUTES
        .iter()
        .zip(per_route)
        .map(|((m, _, route), k)| (((*m).to_owned(), (*route).to_owned()), u64::try_from(k).unwrap() - 1))
        .collect();
    // (Polled with a deadline rather than poll_until, so that what was measured is printed
    // before any assertion fails.)
    let deadline = Instant::now() + Duration::from_secs(60) + elapsed;
    let exported = loop {
        let e = export_after(&store, base_seq);
        if summarised(&e.events, &hostile.id).0 == expected || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (counts, summaries, dropped) = summarised(&exported.events, &hostile.id);
    let first = firsts(&exported.events, &hostile.id);
    let size = logical_size(&store);
    let files = file_size(&store.db()) + file_size(&store.data_dir.join("config.db-wal"));
    eprintln!(
        "after {n} refusals: {} new events ({} access_denied, {summaries} summaries), {} bytes of rows; database \
         {base_size} -> {size} bytes (pages in use); config.db + wal files {base_files} -> {files} bytes",
        exported.events.len(),
        first.len(),
        exported.row_bytes
    );
    assert!(exported.row_bytes < GROWTH_BYTES_MAX, "{} bytes of new rows", exported.row_bytes);
    assert!(size - base_size < GROWTH_BYTES_MAX, "the database grew by {} bytes", size - base_size);
    assert_eq!(counts, expected, "the summaries count every refusal after each route's first");
    assert_eq!(dropped, 0);
    let mut routes: Vec<(String, String)> = first.iter().map(|(m, r, _)| (m.clone(), r.clone())).collect();
    routes.sort();
    let mut expected_routes: Vec<(String, String)> = expected.keys().cloned().collect();
    expected_routes.sort();
    assert_eq!(routes, expected_routes, "exactly the first refusal on each route is an access_denied event");
    let windows = elapsed.as_secs() / WINDOW_SECS + 2;
    assert!(summaries as u64 <= windows, "{summaries} summaries for {elapsed:?} of refusals: at most one per window");
    assert_eq!(exported.events.len(), first.len() + summaries, "nothing else was appended");

    // Every refusal is in the JSON log and in the metrics.
    let logged = server
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request refused" && v["fields"]["token_id"] == hostile.id.as_str())
        .count();
    assert_eq!(logged, n, "every refusal is logged");
    let metrics = server.client().get("/metrics").unwrap().text();
    for ((method, _, route), k) in ROUTES.iter().zip(per_route) {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("confstore_access_denied_total{")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("route=\"{route}\""))
            })
            .unwrap_or_else(|| panic!("no confstore_access_denied_total for {route}:\n{metrics}"));
        assert!(line.ends_with(&format!(" {k}")), "{line}");
    }

    // Refusals still counted when the server stops are summarised at shutdown.
    let last_seq = exported.events.last().map_or(base_seq, |(s, _)| *s);
    let tail = hammer(&server, &hostile.token, 6);
    assert!(server.terminate().success());
    let after = export_after(&store, last_seq);
    let (counts, _, _) = summarised(&after.events, &hostile.id);
    assert_eq!(counts.values().sum::<u64>(), 6, "the refusals counted at shutdown: {:?}", after.events);
    assert_eq!(u64::try_from(tail[0] + tail[1]).unwrap(), 6);
    assert_eq!(after.events.len(), 1, "one summary, no new first refusal: {:?}", after.events);

    let verify = store.run(&["verify"]);
    verify.assert_ok();
}
