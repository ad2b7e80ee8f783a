//! The role matrix at the data level, through the real `confstore serve`: a token limited to
//! one service (`stt`) must read nothing of any other service, whatever the route. The
//! store holds changesets that touch several services at once — one written by
//! `confstore apply` (stt, billing, ledger and the `global` scope in one changeset) and a
//! whole-store rollback — which are exactly where a filter by "changesets that touch stt"
//! would hand out the rest of the changeset too.
//!
//! For every role scoped to `stt` and every `GET` operation of the live OpenAPI document (so
//! a new route is covered without editing this file; `{service}` is `stt`, `{key}` one of
//! its keys, required query parameters get fixtures, and each operation is called with and
//! without `service=stt` where it takes one), the answer — success or error — must not name
//! another service, one of their keys, or one of their values. The same holds for the live
//! event stream (`GET /api/v1/live`), read up to its first event within a deadline. Global
//! settings are allowed only where `stt` consumes them (its snapshot and keys view resolve
//! `region` from `global`); a global key `stt`'s schema does not declare is forbidden.
//!
//! So that the filter cannot pass by showing nothing, the paged timelines are read to their
//! end one small page at a time, and `stt`'s own changes in the multi-service changeset and
//! in the rollback must be there.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::api::{client_with, ready_server, token_create};
use common::{Http, HttpResponse, Scratch, u64_of};
use serde_json::{Value, json};

/// The service the tokens are limited to.
const OWN: &str = "stt";

/// The roles, as the document and the tokens spell them.
const ROLES: [&str; 5] = ["config.read", "config.write", "secrets.reveal", "audit.read", "admin"];

/// Text that must appear in no answer to a token scoped to `stt`: the other services'
/// names (their keys carry the names too), their values, a secret's plaintext, and a global
/// setting `stt` does not consume.
const FORBIDDEN: [&str; 8] = [
    "billing",
    "ledger",
    "BILLING-CANARY-7Q2",
    "LEDGER-CANARY-K9X",
    "BILLING-SECRET-CANARY-3MF",
    "LEDGER-MULTI-CANARY-W4T",
    "GLOBAL-UNCONSUMED-CANARY-Z8P",
    "fx_table",
];

/// stt's value in the multi-service changeset (must be visible to stt's readers).
const OWN_MULTI_VALUE: &str = "stt-multi-value";

/// stt's own value that the search fixture (`q=CANARY`) finds beside the other services'.
const OWN_SEARCHABLE: &str = "stt-CANARY-base";

/// Longest wait for the live stream's first event.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// One `GET` operation of the document.
#[derive(Debug)]
struct Operation {
    path: String,
    /// (name, in the path, required).
    params: Vec<(String, bool, bool)>,
    /// Whether its 200 answer is a `text/event-stream`.
    event_stream: bool,
}

fn get_operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        let Some(op) = item.get("get") else { continue };
        let params = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let name = p["name"].as_str().expect("a parameter has a name").to_owned();
                let in_path = path.contains(&format!("{{{name}}}"));
                let required = in_path || p["required"] == true;
                (name, in_path, required)
            })
            .collect();
        let event_stream = op.pointer("/responses/200/content/text~1event-stream").is_some();
        ops.push(Operation { path: path.clone(), params, event_stream });
    }
    ops
}

/// The targets to call for `op`: its path with `stt`'s parameters, and its required query
/// parameters; once more with `service=stt` if it takes an optional `service`.
fn targets(op: &Operation) -> Vec<String> {
    let mut path = op.path.clone();
    let mut query = Vec::new();
    let mut optional_service = false;
    for (name, in_path, required) in &op.params {
        let value = match (name.as_str(), *in_path) {
            ("service", true) => OWN,
            ("key", true) => "timeout_ms",
            ("service", false) => {
                optional_service = true;
                continue;
            }
            ("after", false) => "0",
            ("from", false) => "1",
            // The Merkle-tree proofs (hashes only, no values): event 1 in the tree of 1.
            ("to" | "seq" | "size", false) => "1",
            // Matches a value of every service: the search must still keep to stt.
            ("q", false) => "CANARY",
            (other, _) => {
                assert!(!required, "no fixture for the required parameter {other:?} of GET {}", op.path);
                continue;
            }
        };
        if *in_path {
            path = path.replace(&format!("{{{name}}}"), value);
        } else {
            query.push(format!("{name}={value}"));
        }
    }
    let with = |extra: Option<&str>| {
        let q: Vec<String> = query.iter().cloned().chain(extra.map(str::to_owned)).collect();
        if q.is_empty() { path.clone() } else { format!("{path}?{}", q.join("&")) }
    };
    let mut out = vec![with(None)];
    if optional_service {
        out.push(with(Some(&format!("service={OWN}"))));
    }
    out
}

/// Which forbidden strings `text` contains.
fn leaks(text: &str) -> Vec<&'static str> {
    FORBIDDEN.iter().copied().filter(|f| text.contains(f)).collect()
}

/// The status line, headers and body read until the first `head` event (or the end of an
/// answer that is not a stream) within the deadline.
fn first_live_event(addr: std::net::SocketAddr, token: &str) -> String {
    let mut conn = TcpStream::connect(addr).expect("connecting to the server");
    conn.set_read_timeout(Some(EVENT_DEADLINE)).expect("a read timeout");
    write!(
        conn,
        "GET /api/v1/live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut reader = BufReader::new(conn);
    let started = Instant::now();
    let mut text = String::new();
    let mut streaming = false;
    loop {
        assert!(started.elapsed() < EVENT_DEADLINE, "no live event within {EVENT_DEADLINE:?}: {text}");
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return text,
            Ok(_) => {}
            Err(e) => panic!("reading the live stream: {e}; so far: {text}"),
        }
        text.push_str(&line);
        if line.to_ascii_lowercase().starts_with("content-type: text/event-stream") {
            streaming = true;
        }
        // The first event's data line: enough (later events are heads too).
        if streaming && line.starts_with("data:") {
            return text;
        }
    }
}

/// Everything a token scoped to `stt` with `role` reads.
struct Reader {
    role: &'static str,
    http: Http,
    token: String,
}

#[test]
fn a_token_scoped_to_one_service_reads_nothing_of_the_others() {
    let dir = Scratch::new("hostile-scope");
    let server = ready_server(dir.path());
    let mut admin = client_with(&server, &common::admin_token(&server.store));
    for name in [OWN, "billing", "ledger", "global"] {
        admin.ok("POST", "/api/v1/services", Some(&json!({"name": name})));
    }
    // stt declares the keys it takes; of the global settings it consumes `region` only.
    let schema = json!({"type": "object", "additionalProperties": false, "properties": {
        "timeout_ms": {"type": "integer"}, "model": {"type": "string"}, "region": {"type": "string"},
        "api_key": {"type": "string"}}});
    admin.ok("PUT", "/api/v1/services/stt/schema", Some(&schema));
    let seed = |admin: &mut Http, service: &str, body: Value| {
        admin.ok("PATCH", &format!("/api/v1/services/{service}/values"), Some(&body));
    };
    seed(
        &mut admin,
        OWN,
        json!({"set": {"timeout_ms": 500, "model": OWN_SEARCHABLE}, "secrets": {"api_key": "stt-key"}}),
    );
    seed(
        &mut admin,
        "billing",
        json!({"set": {"billing_rate": "BILLING-CANARY-7Q2"}, "secrets": {"billing_secret": "BILLING-SECRET-CANARY-3MF"}}),
    );
    seed(&mut admin, "ledger", json!({"set": {"ledger_url": "LEDGER-CANARY-K9X"}}));
    seed(&mut admin, "global", json!({"set": {"region": "eu-west", "fx_table": "GLOBAL-UNCONSUMED-CANARY-Z8P"}}));
    let before_multi = u64_of(&admin.ok("GET", "/api/v1/head", None).json(), "epoch");

    // One changeset over three services and the global scope, written by another process.
    let line = json!({"actor": "ops", "reason": "quarterly change", "changes": [
        {"op": "set", "service": OWN, "key": "model", "value": OWN_MULTI_VALUE},
        {"op": "set", "service": "billing", "key": "billing_rate", "value": "BILLING-CANARY-7Q2-v2"},
        {"op": "set", "service": "ledger", "key": "ledger_url", "value": "LEDGER-MULTI-CANARY-W4T"},
        {"op": "set", "service": "global", "key": "fx_table", "value": "GLOBAL-UNCONSUMED-CANARY-Z8P-v2"}]});
    let results = server.store.apply(&[line]);
    assert_eq!(results[0]["ok"], true, "the multi-service changeset: {}", results[0]);
    let multi_epoch = u64_of(&results[0], "epoch");
    // An API write after it: the server has folded the CLI's changeset in before answering.
    admin.ok("PUT", "/api/v1/services/stt/values/timeout_ms", Some(&json!({"value": 750})));
    // A whole-store rollback: one changeset over every service again.
    let rollback = json!({"to_epoch": before_multi, "reason": "undo the quarterly change"});
    let rolled = admin.ok("POST", "/api/v1/rollback", Some(&rollback)).json();
    let rollback_epoch = u64_of(&rolled, "epoch");

    let readers: Vec<Reader> = ROLES
        .iter()
        .map(|role| {
            let t = token_create(&server.store, role, Some(OWN), &format!("hostile-{}", role.replace('.', "-")));
            Reader { role, http: client_with(&server, &t.token), token: t.token }
        })
        .collect();

    let doc = server.client().get("/api/v1/openapi.json").expect("GET /api/v1/openapi.json").json();
    let ops = get_operations(&doc);
    assert!(ops.len() >= 15, "the document lists only {} GET operations; is it complete?", ops.len());
    assert!(ops.iter().any(|o| o.event_stream), "no GET operation answers an event stream (the live stream)");

    let mut problems = Vec::new();
    let mut answered = BTreeSet::new();
    for reader in &readers {
        for op in &ops {
            if op.event_stream {
                let text = first_live_event(server.addr, &reader.token);
                let found = leaks(&text);
                if !found.is_empty() {
                    problems.push(format!("{}@{OWN} GET {} (stream) names {found:?}: {text}", reader.role, op.path));
                }
                continue;
            }
            for target in targets(op) {
                let mut http = client_with(&server, &reader.token);
                let r: HttpResponse = http
                    .request("GET", &target, &[("Accept", "application/json")], None)
                    .unwrap_or_else(|e| panic!("GET {target}: {e}"));
                if r.is_success() {
                    answered.insert((reader.role, op.path.clone()));
                }
                let found = leaks(&r.text());
                if !found.is_empty() {
                    problems.push(format!(
                        "{}@{OWN} GET {target} -> {} names {found:?}: {}",
                        reader.role,
                        r.status,
                        r.text()
                    ));
                }
            }
        }
    }
    for p in &problems {
        eprintln!("LEAK {p}");
    }
    assert!(
        problems.is_empty(),
        "{} answers to tokens scoped to {OWN} name other services (LEAK lines above)",
        problems.len()
    );

    // Not vacuous: a scoped reader gets answers, and its own part of the multi-service
    // changesets is in them, on pages small enough that most are cut by the filter.
    for route in ["/api/v1/changesets", "/api/v1/history", "/api/v1/events", "/api/v1/state", "/api/v1/diff"] {
        assert!(answered.contains(&("config.read", route.to_owned())), "config.read@{OWN} got no 2xx from GET {route}");
    }
    let reader = &mut readers.into_iter().find(|r| r.role == "config.read").expect("a config.read reader").http;
    let hits = reader.ok("GET", "/api/v1/search?q=CANARY", None).json();
    assert_eq!(hits["hits"].as_array().map(Vec::len), Some(1), "the search finds stt's own value only: {hits}");
    assert_eq!(hits["hits"][0]["value"], OWN_SEARCHABLE, "{hits}");
    let changesets = all_changesets(reader);
    let epochs: BTreeSet<u64> = changesets.iter().map(|c| u64_of(c, "epoch")).collect();
    assert!(
        epochs.contains(&multi_epoch) && epochs.contains(&rollback_epoch),
        "the multi-service changeset (epoch {multi_epoch}) and the rollback (epoch {rollback_epoch}) are stt's \
         history too; seen epochs {epochs:?}"
    );
    let multi = changesets.iter().find(|c| c["epoch"] == multi_epoch).expect("the multi-service changeset");
    let changes = multi["changes"].as_array().expect("a changeset has changes");
    assert_eq!(changes.len(), 1, "stt's change alone: {multi}");
    assert_eq!(
        (&changes[0]["service"], &changes[0]["key"], &changes[0]["value"]),
        (&json!(OWN), &json!("model"), &json!(OWN_MULTI_VALUE))
    );
    let all_text = Value::Array(changesets).to_string();
    assert!(leaks(&all_text).is_empty(), "the changeset pages name {:?}", leaks(&all_text));
    for route in ["/api/v1/history", "/api/v1/events"] {
        let events = all_events(reader, route);
        let text = Value::Array(events.clone()).to_string();
        assert!(leaks(&text).is_empty(), "GET {route} pages name {:?}", leaks(&text));
        assert!(text.contains(OWN_MULTI_VALUE), "GET {route} lacks stt's change of epoch {multi_epoch}: {text}");
        assert!(
            events.iter().any(|e| e["epoch"] == rollback_epoch),
            "GET {route} lacks stt's part of the rollback (epoch {rollback_epoch})"
        );
    }
}

/// Every changeset, one per page, following `next_before`.
fn all_changesets(http: &mut Http) -> Vec<Value> {
    let mut out = Vec::new();
    let mut target = "/api/v1/changesets?limit=1".to_owned();
    for _ in 0..1000 {
        let page = http.ok("GET", &target, None).json();
        out.extend(page["changesets"].as_array().expect("a page has changesets").iter().cloned());
        match page["next_before"].as_u64() {
            Some(before) => target = format!("/api/v1/changesets?limit=1&before={before}"),
            None => return out,
        }
    }
    panic!("more than 1000 pages of changesets");
}

/// Every event of `route`, two per page, following `next_after`.
fn all_events(http: &mut Http, route: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let page = http.ok("GET", &format!("{route}?after={after}&limit=2"), None).json();
        out.extend(page["events"].as_array().expect("a page has events").iter().cloned());
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
    panic!("more than 1000 pages of {route}");
}
