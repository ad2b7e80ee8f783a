//! docs/testing.md row 16, the canary on the server side: secrets set through the API (`PUT` with
//! `"secret": true`, and `PATCH` with `"secrets"`) hold random canary plaintexts, which must
//! appear in no answer of any read route (bodies and headers, with every base64, base64url
//! and hex string inside them decoded too: JWS payloads, event bodies, export lines), not in
//! the server's JSON log, and in no file of the data directory (config.db, its WAL, the LKG
//! file) — neither while the server runs nor after it stops. Only the audited reveal shows
//! a secret: its answer holds the plaintext exactly once, and the audit trail records a
//! `secret_revealed` event for it.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use common::api::{client_with, ready_server, token_create};
use common::{Http, HttpResponse, Rng, Scratch, Server};
use serde_json::{Value, json};

/// Where each canary was found (empty: nowhere).
type Findings = Vec<String>;

/// `hex` decoded, if it is an even-length lowercase/uppercase hex string.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every way `text` (a JSON string) might carry the canary: as is, or decoded from base64,
/// base64url or hex.
fn string_carries(text: &str, canary: &str) -> Option<&'static str> {
    if text.contains(canary) {
        return Some("plain");
    }
    if text.len() < 8 {
        return None;
    }
    for (name, engine) in
        [("base64", &STANDARD), ("base64", &STANDARD_NO_PAD), ("base64url", &URL_SAFE), ("base64url", &URL_SAFE_NO_PAD)]
    {
        if let Ok(bytes) = engine.decode(text)
            && contains(&bytes, canary)
        {
            return Some(name);
        }
    }
    unhex(text).filter(|b| contains(b, canary)).map(|_| "hex")
}

/// Walks a JSON value; pushes the path of every string carrying the canary.
fn scan_json(v: &Value, path: &str, canary: &str, found: &mut Findings) {
    match v {
        Value::String(s) => {
            if let Some(how) = string_carries(s, canary) {
                found.push(format!("{path} ({how})"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                scan_json(item, &format!("{path}[{i}]"), canary, found);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                if k.contains(canary) {
                    found.push(format!("{path}.{k} (a key)"));
                }
                scan_json(item, &format!("{path}.{k}"), canary, found);
            }
        }
        _ => {}
    }
}

/// Where `bytes` (a body, a log, a file: JSON, JSON Lines or anything) carries the canary.
fn scan_bytes(what: &str, bytes: &[u8], canary: &str) -> Findings {
    let mut found = Vec::new();
    if contains(bytes, canary) {
        found.push(format!("{what}: the raw bytes"));
    }
    let text = String::from_utf8_lossy(bytes);
    let values: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(v) => vec![v],
        Err(_) => text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
    };
    for v in &values {
        scan_json(v, what, canary, &mut found);
    }
    found
}

/// Where an HTTP answer carries the canary: headers, then body.
fn scan_response(what: &str, r: &HttpResponse, canary: &str) -> Findings {
    let mut found = Vec::new();
    for (name, value) in &r.headers {
        if string_carries(value, canary).is_some() {
            found.push(format!("{what}: header {name}"));
        }
    }
    found.extend(scan_bytes(what, &r.body, canary));
    found
}

/// A fresh random canary: easy to grep, no character JSON or a URL would escape.
fn canary(rng: &mut Rng, tag: &str) -> String {
    format!("canary{tag}{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

#[track_caller]
fn answer(http: &mut Http, method: &str, target: &str, headers: &[(&str, &str)], body: Option<&Value>) -> HttpResponse {
    let r = http.request(method, target, headers, body).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    assert!(r.is_success(), "{method} {target}: {r}");
    r
}

/// The read routes, called with the admin token: every answer is checked for each canary.
/// Returns where any was found.
fn sweep(admin: &mut Http, canaries: &[String], epochs: (u64, u64)) -> Findings {
    let (before, after) = epochs;
    let json_accept = [("Accept", "application/json")];
    let mut targets: Vec<(String, &[(&str, &str)])> = vec![
        ("/api/v1/services".into(), &[]),
        ("/api/v1/services/web/snapshot".into(), &[]),
        ("/api/v1/services/web/snapshot".into(), &json_accept),
        (format!("/api/v1/services/web/snapshot?epoch={after}"), &[]),
        (format!("/api/v1/services/web/snapshot?epoch={after}"), &json_accept),
        ("/api/v1/services/web/values/api_key".into(), &[]),
        ("/api/v1/services/web/values/db_password".into(), &[]),
        ("/api/v1/services/web/schema".into(), &[]),
        ("/api/v1/state".into(), &[]),
        (format!("/api/v1/state?epoch={after}"), &[]),
        ("/api/v1/state?service=web".into(), &[]),
        ("/api/v1/history".into(), &[]),
        ("/api/v1/history?service=web&key=api_key".into(), &[]),
        ("/api/v1/events?after=0&limit=1000".into(), &[]),
        ("/api/v1/events?after=0&service=web".into(), &[]),
        (format!("/api/v1/diff?from={before}"), &[]),
        (format!("/api/v1/diff?from={before}&to={after}&service=web"), &[]),
        ("/api/v1/audit?limit=1000".into(), &[]),
        ("/api/v1/export".into(), &[]),
        ("/api/v1/head".into(), &[]),
        ("/api/v1/tokens".into(), &[]),
        ("/api/v1/openapi.json".into(), &[]),
        ("/metrics".into(), &[]),
        ("/healthz".into(), &[]),
        ("/readyz".into(), &[]),
    ];
    // Search for each canary, and for its halves (a prefix or infix match must not find it
    // either). The answer repeats the query, which is the caller's own text: that field is
    // left out of the check, and the hits must be empty.
    let mut searches = Vec::new();
    for c in canaries {
        let half = c.len() / 2;
        searches.extend([c.clone(), c[..half].to_owned(), c[half..].to_owned()]);
    }
    for q in &searches {
        targets.push((format!("/api/v1/search?q={q}"), &[]));
    }
    let mut found = Vec::new();
    for (target, headers) in &targets {
        let mut r = answer(admin, "GET", target, headers, None);
        if target.starts_with("/api/v1/search") {
            let mut v = r.json();
            assert_eq!(v["hits"], json!([]), "GET {target} found something: {v}");
            v.as_object_mut().expect("a search answer is an object").remove("query");
            r.body = v.to_string().into_bytes();
        }
        for c in canaries {
            found.extend(scan_response(&format!("GET {target}"), &r, c));
        }
    }
    found
}

/// Where the canaries are in the log and the data directory's files.
fn scan_files(server: &Server, canaries: &[String]) -> Findings {
    let mut found = Vec::new();
    let mut files = vec![server.log.clone()];
    let mut entries: Vec<_> = std::fs::read_dir(&server.store.data_dir)
        .expect("reading the data directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    files.extend(entries);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        for c in canaries {
            found.extend(scan_bytes(&f.display().to_string(), &bytes, c));
        }
    }
    found
}

#[test]
fn secret_plaintexts_appear_only_in_the_audited_reveal() {
    let dir = Scratch::new("canary");
    let mut rng = Rng::new(common::seed("CANARY_SEED"));
    let mut server = ready_server(dir.path());
    let admin_token = common::admin_token(&server.store);
    let mut admin = client_with(&server, &admin_token);
    let put_canary = canary(&mut rng, "put");
    let patch_canary = canary(&mut rng, "patch");
    let canaries = [put_canary.clone(), patch_canary.clone()];

    answer(&mut admin, "POST", "/api/v1/services", &[], Some(&json!({"name": "web"})));
    answer(&mut admin, "PUT", "/api/v1/services/web/values/port", &[], Some(&json!({"value": 8080})));
    let before = answer(&mut admin, "GET", "/api/v1/head", &[], None).json()["epoch"].as_u64().expect("epoch");
    let mut writes = Vec::new();
    let put = json!({"value": put_canary, "secret": true, "reason": "canary"});
    writes.push(answer(&mut admin, "PUT", "/api/v1/services/web/values/api_key", &[], Some(&put)));
    let patch =
        json!({"set": {"timeout_ms": 250}, "secrets": {"db_password": {"user": "app", "password": patch_canary}}});
    writes.push(answer(&mut admin, "PATCH", "/api/v1/services/web/values", &[], Some(&patch)));
    // A schema naming the secret keys: validation must see the plaintext without keeping it.
    let schema = json!({"type": "object", "properties": {"port": {"type": "integer"}, "api_key": {"type": "string"},
        "db_password": {"type": "object"}, "timeout_ms": {"type": "integer"}}});
    writes.push(answer(&mut admin, "PUT", "/api/v1/services/web/schema", &[], Some(&schema)));
    let after = answer(&mut admin, "GET", "/api/v1/head", &[], None).json()["epoch"].as_u64().expect("epoch");
    let mut found: Findings = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        for c in &canaries {
            found.extend(scan_response(&format!("write {i}"), w, c));
        }
    }
    // The secrets read back masked, as the typed marker (docs/format.md §18).
    let value = answer(&mut admin, "GET", "/api/v1/services/web/values/api_key", &[], None).json();
    assert_eq!((&value["value"], &value["secret"]), (&json!({"$secret": true}), &json!(true)), "masked: {value}");

    found.extend(sweep(&mut admin, &canaries, (before, after)));
    server.wait_lkg_current();
    found.extend(scan_files(&server, &canaries));
    assert!(found.is_empty(), "a canary plaintext leaked before any reveal:\n{}", found.join("\n"));

    // The audited reveal: the plaintext, exactly once, and a secret_revealed event.
    let revealer = token_create(&server.store, "secrets.reveal", None, "canary-revealer");
    let mut revealer = client_with(&server, &revealer.token);
    let r = answer(&mut revealer, "POST", "/api/v1/services/web/secrets/api_key/reveal", &[], None);
    assert_eq!(r.json()["value"], json!(put_canary), "the reveal answers the plaintext: {r}");
    // Controls: the scanner does see a plaintext, raw or encoded.
    assert!(!scan_response("reveal", &r, &put_canary).is_empty(), "the scanner misses a plain canary");
    let hex: String = format!("x{put_canary}").bytes().map(|b| format!("{b:02x}")).collect();
    for encoded in [STANDARD.encode(format!("x{put_canary}")), URL_SAFE_NO_PAD.encode(format!("xy{put_canary}")), hex] {
        let body = json!({"deep": [{"field": encoded}]}).to_string();
        assert!(!scan_bytes("control", body.as_bytes(), &put_canary).is_empty(), "the scanner misses {encoded}");
    }
    assert_eq!(r.text().matches(put_canary.as_str()).count(), 1, "the plaintext once: {r}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "a revealed secret is not cached: {r}");
    assert!(!r.text().contains(&patch_canary), "revealing one secret shows no other: {r}");
    let r = answer(&mut revealer, "POST", "/api/v1/services/web/secrets/db_password/reveal", &[], None);
    assert_eq!(r.json()["value"], json!({"user": "app", "password": patch_canary}), "a structured secret: {r}");
    assert_eq!(r.text().matches(patch_canary.as_str()).count(), 1, "the plaintext once: {r}");

    let auditor = token_create(&server.store, "audit.read", None, "canary-auditor");
    let audit = answer(&mut client_with(&server, &auditor.token), "GET", "/api/v1/audit?limit=1000", &[], None).json();
    let reveals: Vec<(String, String, String)> = audit["events"]
        .as_array()
        .expect("audit events")
        .iter()
        .filter(|e| e["kind"]["type"] == "secret_revealed")
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (s(&e["kind"]["service"]), s(&e["kind"]["key"]), s(&e["actor"]))
        })
        .collect();
    let actor = "token:canary-revealer".to_owned();
    assert_eq!(
        reveals,
        [("web".into(), "api_key".into(), actor.clone()), ("web".into(), "db_password".into(), actor)],
        "one secret_revealed event per reveal, naming the revealer"
    );

    // After the reveals: still nowhere else, also once the server has stopped (the final
    // checkpoint has moved the WAL into config.db).
    let mut found = sweep(&mut admin, &canaries, (before, after));
    server.wait_lkg_current();
    found.extend(scan_files(&server, &canaries));
    let status = server.terminate();
    assert!(status.success(), "the server stops cleanly on SIGTERM: {status}");
    found.extend(scan_files(&server, &canaries));
    assert!(found.is_empty(), "a canary plaintext leaked:\n{}", found.join("\n"));
}
