//! The router in-process (no socket): error shapes, compare-and-set, limits, content
//! negotiation, scoping, and that the OpenAPI document lists exactly the routes served.

use std::sync::Arc;

use crate::app::Mode;
use crate::{App, Config, Keys};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use confstore_core::auth::{Role, token_hash};
use confstore_core::state::{Change, ChangesetDraft};
use confstore_core::{SigningKey, StoreId};
use confstore_log::{DbOptions, Store, SystemClock};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    app: App,
    router: Router,
    doc: Value,
    admin: String,
    reader: String,
    scoped: String,
}

fn keys() -> Keys {
    Keys {
        signing: SigningKey::from_seed(&[7; 32]),
        lkg: zeroize::Zeroizing::new([8; 32]),
        master: zeroize::Zeroizing::new([9; 32]),
        master_version: 1,
        previous_master: None,
    }
}

fn issue(store: &Store, role: Role, service: Option<&str>, seed: u8) -> String {
    let t = confstore_core::auth::new_token(&[seed; 40]);
    store
        .append(ChangesetDraft {
            actor: "test".into(),
            reason: String::new(),
            request_id: "r".into(),
            expected_epoch: None,
            changes: vec![Change::IssueToken {
                token_id: t.id.clone(),
                name: format!("t{seed}"),
                role,
                service: service.map(str::to_owned),
                token_hash: token_hash(&t.text),
            }],
        })
        .unwrap();
    t.text.to_string()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let store = Store::create(
        &path,
        SigningKey::from_seed(&[7; 32]),
        StoreId([1; 16]),
        "t",
        Arc::new(SystemClock),
        &DbOptions::default(),
    )
    .unwrap();
    for service in ["web", "db"] {
        store
            .append(ChangesetDraft {
                actor: "test".into(),
                reason: String::new(),
                request_id: "r".into(),
                expected_epoch: None,
                changes: vec![Change::RegisterService { service: service.into() }],
            })
            .unwrap();
    }
    let admin = issue(&store, Role::Admin, None, 1);
    let reader = issue(&store, Role::ConfigRead, None, 2);
    drop(store);
    let app = App::open(Config::new(dir.path().to_owned()), keys());
    let Mode::Live(live) = &*app.mode() else { panic!("not live") };
    let scoped = issue(&live.store, Role::ConfigWrite, Some("web"), 3);
    let (router, doc) = crate::api::router(app.clone());
    Fixture { _dir: dir, app, router, doc, admin, reader, scoped }
}

async fn call(
    f: &Fixture,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (parts.status, parts.headers, v)
}

#[tokio::test]
async fn writes_reads_and_compare_and_set() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let (s, _, _) = call(&f, Method::POST, "/api/v1/services", a, Some(json!({"name": "api"})), &[]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, e) = call(&f, Method::POST, "/api/v1/services", a, Some(json!({"name": "api"})), &[]).await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (s, h, r) = call(&f, Method::PUT, "/api/v1/services/web/values/port", a, Some(json!({"value": 80})), &[]).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let epoch = r["epoch"].as_u64().unwrap();
    assert_eq!(h["etag"], format!("\"{epoch}\"").as_str());
    // A stale If-Match: 409 with the current epoch, nothing written.
    let stale = (epoch - 1).to_string();
    let (s, _, e) = call(
        &f,
        Method::PUT,
        "/api/v1/services/web/values/port",
        a,
        Some(json!({"value": 81})),
        &[("if-match", &stale)],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!((e["error"].as_str(), e["current_epoch"].as_u64()), (Some("conflict"), Some(epoch)));
    // The right one succeeds.
    let cur = format!("\"{epoch}\"");
    let (s, _, _) =
        call(&f, Method::PUT, "/api/v1/services/web/values/port", a, Some(json!({"value": 81})), &[("if-match", &cur)])
            .await;
    assert_eq!(s, StatusCode::OK);
    // Read-your-writes: the JSON snapshot shows it at once; the default is the JWS.
    let (s, _, doc) = call(
        &f,
        Method::GET,
        "/api/v1/services/web/snapshot",
        Some(&f.reader),
        None,
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["config"]["port"], 81);
    let (_, h, jws) = call(&f, Method::GET, "/api/v1/services/web/snapshot", Some(&f.reader), None, &[]).await;
    assert_eq!(h["content-type"], "application/jose+json");
    let payload = confstore_snapshots::verify_jws(&jws, &SigningKey::from_seed(&[7; 32]).verifying_key()).unwrap();
    assert_eq!(payload, doc);
    // A reader cannot write.
    let (s, _, e) =
        call(&f, Method::PUT, "/api/v1/services/web/values/port", Some(&f.reader), Some(json!({"value": 1})), &[])
            .await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
}

/// method, uri, body, headers, expected status.
type Case<'a> = (Method, &'a str, Option<Value>, Vec<(&'a str, &'a str)>, StatusCode);

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let (_, _, head0) = call(&f, Method::GET, "/api/v1/head", a, None, &[]).await;
    let big = "x".repeat(confstore_core::limits::REQUEST_BYTES_MAX + 1);
    let cases: Vec<Case<'_>> = vec![
        (Method::PUT, "/api/v1/services/nope/values/k", Some(json!({"value": 1})), vec![], StatusCode::NOT_FOUND),
        (
            Method::PUT,
            "/api/v1/services/web/values/bad%20key",
            Some(json!({"value": 1})),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            "/api/v1/services/web/values/k",
            Some(json!({"nope": 1})),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            "/api/v1/services/web/values/k",
            Some(json!({"value": big})),
            vec![],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            "/api/v1/services/web/values/k",
            Some(json!({"value": "x".repeat(70_000)})),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            "/api/v1/services/web/values/k",
            Some(json!({"value": 1})),
            vec![("if-match", "soon")],
            StatusCode::BAD_REQUEST,
        ),
        (Method::DELETE, "/api/v1/services/web/values/absent", None, vec![], StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/api/v1/history?limit=100000", None, vec![], StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/api/v1/history?after=-1", None, vec![], StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/state?at=yesterday", None, vec![], StatusCode::BAD_REQUEST),
        // An invalid `at` beside an epoch was once ignored (found by schemathesis).
        (Method::GET, "/api/v1/state?at=&epoch=0", None, vec![], StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/state?epoch=999", None, vec![], StatusCode::NOT_FOUND),
        (Method::POST, "/api/v1/rollback", Some(json!({"to_epoch": 99})), vec![], StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "root"})),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            "/api/v1/services/web/schema",
            Some(json!({"type": 7})),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (Method::GET, "/api/v1/nothing-here", None, vec![], StatusCode::NOT_FOUND),
        // A NUL in a search query once reached FTS5 and failed as a database error (503).
        (Method::GET, "/api/v1/search?q=a%00b", None, vec![], StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/api/v1/head", None, vec![], StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, uri, body, headers, want) in cases {
        let (s, _, e) = call(&f, method.clone(), uri, a, body, &headers).await;
        assert_eq!(s, want, "{method} {uri}: {e}");
        assert!(e["error"].is_string() && e["message"].is_string(), "{method} {uri}: not a JSON error: {e}");
    }
    // Malformed JSON.
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/services/web/values/k")
        .header("authorization", format!("Bearer {}", f.admin))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = f.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (_, _, head1) = call(&f, Method::GET, "/api/v1/head", a, None, &[]).await;
    assert_eq!(head0["seq"], head1["seq"], "no bad request appended anything");
}

#[tokio::test]
async fn scoped_tokens_see_only_their_service() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let sc = Some(f.scoped.as_str());
    let (s, _, _) = call(&f, Method::PUT, "/api/v1/services/web/values/k", sc, Some(json!({"value": 1})), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&f, Method::PUT, "/api/v1/services/db/values/k", sc, Some(json!({"value": 1})), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, _, list) = call(&f, Method::GET, "/api/v1/services", sc, None, &[]).await;
    assert_eq!(list["services"], json!(["web"]));
    let (s, _, _) = call(&f, Method::GET, "/api/v1/history?service=db", sc, None, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(&f, Method::POST, "/api/v1/rollback", sc, Some(json!({"to_epoch": 1})), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a whole-store rollback is not for a scoped token");
    let (_, _, audit) = call(&f, Method::GET, "/api/v1/audit", a, None, &[]).await;
    let denials = audit["events"].as_array().unwrap().iter().filter(|e| e["kind"]["type"] == "access_denied").count();
    assert_eq!(denials, 3, "{audit}");
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let f = fixture();
    assert!(f.doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "OpenAPI 3.1: {}", f.doc["openapi"]);
    let paths = f.doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{}", paths.len());
    let mut ops = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            ops += 1;
            let uri = path.replace("{service}", "web").replace("{key}", "k").replace("{id}", "0011223344556677");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, _, body) = call(&f, m, &uri, None, None, &[]).await;
            let no_route =
                s == StatusCode::NOT_FOUND && body["message"].as_str().is_some_and(|t| t.starts_with("no such route"));
            assert!(!no_route && s != StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not served");
            let needs = item[method].pointer("/security/0/bearer/0").and_then(Value::as_str);
            if needs.is_some() {
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
            }
        }
    }
    assert!(ops >= 20, "{ops}");
}

/// `whoami`'s `can` is what the server would allow (the web UI offers exactly that and keeps
/// no role table): the role's grants, and the store-wide abilities only for an unscoped token
/// — a scoped admin is refused the audit trail, so `can.audit` says false.
#[tokio::test]
async fn whoami_says_what_the_server_allows_the_token() {
    let f = fixture();
    let scoped_admin = {
        let Mode::Live(live) = &*f.app.mode() else { panic!("not live") };
        issue(&live.store, Role::Admin, Some("web"), 9)
    };
    let can = |me: &Value| {
        ["read", "write", "reveal", "audit", "admin"].map(|k| me["can"][k].as_bool().unwrap_or_else(|| panic!("{me}")))
    };
    let cases = [
        (&f.admin, [true, true, true, true, true]),
        (&f.reader, [true, false, false, false, false]),
        (&f.scoped, [true, true, false, false, false]),
        (&scoped_admin, [true, true, true, false, false]),
    ];
    for (token, want) in cases {
        let (s, _, me) = call(&f, Method::GET, "/api/v1/whoami", Some(token), None, &[]).await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(can(&me), want, "{me}");
        // The answer agrees with what the server does.
        let audit = call(&f, Method::GET, "/api/v1/audit", Some(token), None, &[]).await.0;
        assert_eq!(audit == StatusCode::OK, want[3], "GET /api/v1/audit answered {audit} to {me}");
    }
}

/// The views the web UI is built on, and a rollback across a secret change (the secret
/// comes back as its old ciphertext, never as a plain value).
#[tokio::test]
async fn console_views_and_rolling_back_a_secret() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let schema = json!({"type": "object", "additionalProperties": true, "properties": {
        "port": {"type": "integer", "maximum": 65535, "description": "TCP port", "default": 8080},
        "password": {"type": "string", "minLength": 4}}});
    let (s, _, e) = call(&f, Method::PUT, "/api/v1/services/web/schema", a, Some(schema), &[]).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, _, e) = call(&f, Method::POST, "/api/v1/services", a, Some(json!({"name": "global"})), &[]).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let patch = json!({"set": {"region": "eu"}, "reason": "global"});
    assert_eq!(call(&f, Method::PATCH, "/api/v1/services/global/values", a, Some(patch), &[]).await.0, StatusCode::OK);
    let first = json!({"secrets": {"password": "first-pw"}, "reason": "one"});
    let (s, _, r1) = call(&f, Method::PATCH, "/api/v1/services/web/values", a, Some(first), &[]).await;
    assert_eq!(s, StatusCode::OK, "{r1}");
    let second = json!({"secrets": {"password": "second-pw"}, "set": {"port": 81}, "reason": "two"});
    let (s, _, r2) = call(&f, Method::PATCH, "/api/v1/services/web/values", a, Some(second), &[]).await;
    assert_eq!(s, StatusCode::OK, "{r2}");

    // whoami: any valid token, 401 without.
    let (s, _, me) = call(&f, Method::GET, "/api/v1/whoami", Some(&f.reader), None, &[]).await;
    assert_eq!(
        (s, me["role"].as_str(), me["can"]["write"].as_bool()),
        (StatusCode::OK, Some("config.read"), Some(false))
    );
    assert_eq!(call(&f, Method::GET, "/api/v1/whoami", None, None, &[]).await.0, StatusCode::UNAUTHORIZED);

    // keys: value, source, type, description, last-changed epoch; the secret masked.
    let (s, _, k) = call(&f, Method::GET, "/api/v1/services/web/keys", Some(&f.reader), None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{k}");
    let key = |name: &str| key_of(&k, name);
    assert_eq!(key("port")["value"], 81);
    assert_eq!(
        (key("port")["type"].as_str(), key("port")["description"].as_str()),
        (Some("integer"), Some("TCP port"))
    );
    assert_eq!(key("port")["epoch"], r2["epoch"]);
    assert_eq!((key("region")["source"].as_str(), key("region")["value"].as_str()), (Some("global"), Some("eu")));
    assert_eq!(
        (key("password")["secret"].as_bool(), &key("password")["value"]),
        (Some(true), &json!({"$secret": true}))
    );
    assert!(!k.to_string().contains("second-pw") && !k.to_string().contains("ciphertext"), "{k}");

    // changesets: newest first, secret values never shown.
    let (s, _, page) =
        call(&f, Method::GET, "/api/v1/changesets?service=web&limit=2", Some(&f.reader), None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let epochs: Vec<u64> =
        page["changesets"].as_array().unwrap().iter().map(|c| c["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [r2["epoch"].as_u64().unwrap(), r1["epoch"].as_u64().unwrap()]);
    assert_eq!(page["changesets"][0]["reason"], "two");
    assert_eq!(page["next_before"], r1["epoch"]);
    assert!(!page.to_string().contains("pw"), "{page}");

    // Rolling back to the first password restores its ciphertext as a secret.
    let to = r1["epoch"].as_u64().unwrap();
    let (s, _, e) = call(
        &f,
        Method::POST,
        "/api/v1/rollback",
        a,
        Some(json!({"to_epoch": to, "service": "web", "reason": "undo"})),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, _, v) = call(&f, Method::POST, "/api/v1/services/web/secrets/password/reveal", a, None, &[]).await;
    assert_eq!((s, v["value"].as_str()), (StatusCode::OK, Some("first-pw")), "{v}");
    let (_, _, k) = call(&f, Method::GET, "/api/v1/services/web/keys", Some(&f.reader), None, &[]).await;
    assert_eq!(key_of(&k, "password")["secret"], true);
    assert_eq!(key_of(&k, "port")["value"], 8080, "unset by the rollback: the schema default");
    assert_eq!(key_of(&k, "port")["source"], "default");

    // verify now: audit.read; the head signed.
    let (s, _, out) = call(&f, Method::POST, "/api/v1/verify", a, None, &[]).await;
    assert_eq!((s, out["ok"].as_bool()), (StatusCode::OK, Some(true)), "{out}");
    let jws = &out["signed_head"];
    let doc = confstore_core::jws::verify(
        jws,
        confstore_core::jws::TYP_HEAD,
        &[SigningKey::from_seed(&[7; 32]).verifying_key()],
    )
    .unwrap();
    assert_eq!(doc["hash"], out["head_hash"]);
    assert_eq!(call(&f, Method::POST, "/api/v1/verify", Some(&f.reader), None, &[]).await.0, StatusCode::FORBIDDEN);
}

fn key_of(keys: &Value, name: &str) -> Value {
    let found = keys["keys"].as_array().and_then(|ks| ks.iter().find(|x| x["key"] == name));
    found.cloned().unwrap_or_else(|| panic!("no key {name:?} in {keys}"))
}

/// A plain string `"<secret>"` and a real secret, side by side, are told apart everywhere
/// values are shown: the secret is the typed marker `{"$secret": true}`, the string is the
/// string (state, diff, changesets, keys, one value), and the document describes the marker.
#[tokio::test]
async fn a_plain_secret_lookalike_and_a_real_secret_are_told_apart() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let r = Some(f.reader.as_str());
    let (_, _, head) = call(&f, Method::GET, "/api/v1/head", a, None, &[]).await;
    let from = head["epoch"].as_u64().unwrap();
    let patch = json!({"set": {"lookalike": "<secret>"}, "secrets": {"real": "hunter2"}, "reason": "both"});
    let (s, _, receipt) = call(&f, Method::PATCH, "/api/v1/services/web/values", a, Some(patch), &[]).await;
    assert_eq!(s, StatusCode::OK, "{receipt}");
    let marker = json!({"$secret": true});
    let plain = json!("<secret>");

    let (s, _, state) = call(&f, Method::GET, "/api/v1/state?service=web", r, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{state}");
    assert_eq!((&state["services"]["web"]["real"], &state["services"]["web"]["lookalike"]), (&marker, &plain));

    let (s, _, diff) = call(&f, Method::GET, &format!("/api/v1/diff?from={from}"), r, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{diff}");
    let after = |key: &str| {
        let c = diff["changes"].as_array().unwrap().iter().find(|c| c["key"] == key);
        c.unwrap_or_else(|| panic!("no change of {key} in {diff}"))["after"].clone()
    };
    assert_eq!((after("real"), after("lookalike")), (marker.clone(), plain.clone()));

    let (s, _, page) = call(&f, Method::GET, "/api/v1/changesets?limit=1", r, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let changes = page["changesets"][0]["changes"].as_array().unwrap();
    let value =
        |key: &str| changes.iter().find(|c| c["key"] == key).unwrap_or_else(|| panic!("{page}"))["value"].clone();
    assert_eq!((value("real"), value("lookalike")), (marker.clone(), plain.clone()));

    let (s, _, keys) = call(&f, Method::GET, "/api/v1/services/web/keys", r, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{keys}");
    let (real, lookalike) = (key_of(&keys, "real"), key_of(&keys, "lookalike"));
    assert_eq!((&real["value"], &real["secret"]), (&marker, &json!(true)));
    assert_eq!((&lookalike["value"], &lookalike["secret"]), (&plain, &json!(false)));

    for (key, want) in [("real", &marker), ("lookalike", &plain)] {
        let (s, _, v) = call(&f, Method::GET, &format!("/api/v1/services/web/values/{key}"), r, None, &[]).await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, want), "{v}");
    }
    for body in [&state, &diff, &page, &keys] {
        assert!(!body.to_string().contains("hunter2") && !body.to_string().contains("ciphertext"), "{body}");
    }
    // A plain value cannot take the marker's shape: objects with `$secret` are reserved.
    let (s, _, e) =
        call(&f, Method::PUT, "/api/v1/services/web/values/fake", a, Some(json!({"value": marker})), &[]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // The document names the shape.
    let documented = &f.doc["components"]["schemas"]["MaskedSecret"];
    assert_eq!(documented["required"], json!(["$secret"]), "{documented}");
}

/// Every answer says `X-Content-Type-Options: nosniff`: JSON, errors, unknown routes, the
/// open routes and the UI.
#[tokio::test]
async fn every_answer_says_nosniff() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let cases: [(Method, &str, Option<&str>, StatusCode); 8] = [
        (Method::GET, "/api/v1/head", a, StatusCode::OK),
        (Method::GET, "/api/v1/head", None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/api/v1/state?at=yesterday", a, StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/nothing-here", None, StatusCode::NOT_FOUND),
        (Method::POST, "/api/v1/head", a, StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/readyz", None, StatusCode::OK),
        (Method::GET, "/api/v1/openapi.json", None, StatusCode::OK),
        (Method::GET, "/", None, StatusCode::OK),
    ];
    for (method, uri, token, want) in cases {
        let (s, h, body) = call(&f, method.clone(), uri, token, None, &[]).await;
        assert_eq!(s, want, "{method} {uri}: {body}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{method} {uri}");
    }
}

/// Appends failing in the store (here every insert into `events` is refused by a trigger,
/// as a full disk or an I/O error would refuse it) make `/readyz` answer 503 with
/// `writes.failing` (the error and when) and set `confstore_append_failing`; the next append
/// that commits clears both.
#[tokio::test]
async fn readyz_reports_failing_appends_until_one_commits() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let (s, _, ready) = call(&f, Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!((s, &ready["writes"]), (StatusCode::OK, &json!("accepted")), "{ready}");

    let db = rusqlite::Connection::open(f._dir.path().join("config.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_appends BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'test: disk full'); END;",
    )
    .unwrap();
    let put = |n: u64| Some(json!({"value": n}));
    let (s, _, e) = call(&f, Method::PUT, "/api/v1/services/web/values/k", a, put(1), &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let (s, _, ready) = call(&f, Method::GET, "/readyz", None, None, &[]).await;
    // Reads are still served: ready, saying that writes are failing.
    assert_eq!((s, ready["ready"].as_bool()), (StatusCode::OK, Some(true)), "{ready}");
    let failing = &ready["writes"]["failing"];
    assert!(failing["error"].as_str().is_some_and(|e| e.contains("test: disk full")), "{ready}");
    assert!(failing["at"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "{ready}");
    let (_, _, metrics) = call(&f, Method::GET, "/metrics", None, None, &[]).await;
    assert!(metrics.as_str().unwrap().contains("confstore_append_failing 1"), "{metrics}");
    // A refused changeset says nothing about the store: still failing.
    let (s, _, _) = call(&f, Method::PUT, "/api/v1/services/nope/values/k", a, put(2), &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, _, ready) = call(&f, Method::GET, "/readyz", None, None, &[]).await;
    assert!(ready["writes"]["failing"].is_object(), "{ready}");

    db.execute_batch("DROP TRIGGER fail_appends;").unwrap();
    let (s, _, e) = call(&f, Method::PUT, "/api/v1/services/web/values/k", a, put(3), &[]).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, _, ready) = call(&f, Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!((s, &ready["writes"]), (StatusCode::OK, &json!("accepted")), "{ready}");
    let (_, _, metrics) = call(&f, Method::GET, "/metrics", None, None, &[]).await;
    assert!(metrics.as_str().unwrap().contains("confstore_append_failing 0"), "{metrics}");
}

/// A changeset over two services (as `confstore apply` writes), read with the token scoped
/// to `web`: every route shows `web`'s part and nothing of `db`'s; `/events` leaves the audit
/// records (its own `token_issued`) to the audit trail. An unscoped reader sees both parts.
#[tokio::test]
async fn a_scoped_token_reads_only_its_part_of_a_changeset_over_several_services() {
    let f = fixture();
    let Mode::Live(live) = &*f.app.mode() else { panic!("not live") };
    let set =
        |service: &str, value: &str| Change::Set { service: service.into(), key: "k".into(), value: json!(value) };
    live.store
        .append(ChangesetDraft {
            actor: "ops".into(),
            reason: "both".into(),
            request_id: "r".into(),
            expected_epoch: None,
            changes: vec![set("web", "web-value"), set("db", "DB-CANARY")],
        })
        .unwrap();
    for uri in
        ["/api/v1/changesets", "/api/v1/history", "/api/v1/events?after=0", "/api/v1/state", "/api/v1/diff?from=1"]
    {
        let (s, _, body) = call(&f, Method::GET, uri, Some(&f.scoped), None, &[]).await;
        let text = body.to_string();
        assert_eq!(s, StatusCode::OK, "{uri}: {body}");
        assert!(text.contains("web-value"), "{uri} lacks web's change: {body}");
        assert!(!text.contains("DB-CANARY") && !text.contains("\"db\""), "{uri} names db: {body}");
        if uri.starts_with("/api/v1/events") {
            assert!(!text.contains("token_issued"), "{uri} holds audit records: {body}");
        }
        let (_, _, all) = call(&f, Method::GET, uri, Some(&f.reader), None, &[]).await;
        assert!(all.to_string().contains("DB-CANARY"), "an unscoped reader sees both parts of {uri}: {all}");
    }
}

/// A raw body with its own `Content-Type`.
async fn call_raw(f: &Fixture, uri: &str, content_type: &str, body: &'static str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header("authorization", format!("Bearer {}", f.admin))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn json_bodies_are_read_exactly_or_refused_changing_nothing() {
    let f = fixture();
    let a = Some(f.admin.as_str());
    let (_, _, head0) = call(&f, Method::GET, "/api/v1/head", a, None, &[]).await;
    let uri = "/api/v1/services/web/values/k";
    let json = "application/json";
    for (body, status, needle) in [
        (r#"{"value": 18446744073709551616}"#, StatusCode::UNPROCESSABLE_ENTITY, "18446744073709551616 at /value"),
        (r#"{"value": -0}"#, StatusCode::UNPROCESSABLE_ENTITY, "negative zero"),
        (r#"{"value": 1e400}"#, StatusCode::UNPROCESSABLE_ENTITY, "1e400 at /value"),
        (r#"{"value": {"a": 1, "a": 2}}"#, StatusCode::UNPROCESSABLE_ENTITY, "key \"a\" more than once"),
        (r#"{"value": 1, "extra": 2}"#, StatusCode::UNPROCESSABLE_ENTITY, "unknown field"),
        ("{not json", StatusCode::BAD_REQUEST, "not JSON"),
    ] {
        let (s, e) = call_raw(&f, uri, json, body).await;
        assert_eq!(s, status, "{body}: {e}");
        assert!(e["message"].as_str().unwrap_or_default().contains(needle), "{body}: {e}");
    }
    let (s, e) = call_raw(&f, uri, "application/json; charset=latin1", r#"{"value": 1}"#).await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")), "{e}");
    let (s, _) = call_raw(&f, uri, "text/plain", r#"{"value": 1}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, _, head1) = call(&f, Method::GET, "/api/v1/head", a, None, &[]).await;
    assert_eq!(head0["seq"], head1["seq"], "no refused body appended anything");
    let (s, e) = call_raw(&f, uri, "application/json; charset=\"utf-8\"", r#"{"value": 18446744073709551615}"#).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, _, v) = call(&f, Method::GET, uri, a, None, &[]).await;
    assert_eq!(v["value"], json!(u64::MAX));
}

#[tokio::test]
async fn a_token_refused_again_and_again_is_one_event_then_one_summary() {
    let f = fixture();
    let (a, r) = (Some(f.admin.as_str()), Some(f.reader.as_str()));
    for _ in 0..50 {
        let (s, _, _) = call(&f, Method::GET, "/api/v1/audit", r, None, &[]).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let kinds = |audit: &Value, kind: &str| -> Vec<Value> {
        audit["events"].as_array().unwrap().iter().filter(|e| e["kind"]["type"] == kind).cloned().collect()
    };
    let (_, _, audit) = call(&f, Method::GET, "/api/v1/audit", a, None, &[]).await;
    assert_eq!(kinds(&audit, "access_denied").len(), 1, "only the first refusal is an event: {audit}");
    assert!(kinds(&audit, "access_denied_summary").is_empty(), "the window (60 s) has not passed");
    // What the server does at shutdown: the counts still pending become a summary.
    crate::denials::flush_all(&f.app).await;
    let (_, _, audit) = call(&f, Method::GET, "/api/v1/audit", a, None, &[]).await;
    let summaries = kinds(&audit, "access_denied_summary");
    assert_eq!(summaries.len(), 1, "{audit}");
    assert_eq!(summaries[0]["kind"]["counts"], json!([{"method": "GET", "route": "/api/v1/audit", "count": 49}]));
    let (_, _, metrics) = call(&f, Method::GET, "/metrics", None, None, &[]).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(r#"confstore_access_denied_total{reason="role",method="GET",route="/api/v1/audit"} 50"#),
        "{metrics}"
    );
}

/// Schemas in `v` (the whole document, walked) that say only "an object": `type` object
/// with no properties, no `additionalProperties` (a map) and no reference or composition.
/// Pushes their JSON pointers to `found`.
fn bare_objects(v: &Value, at: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let is_object = match map.get("type") {
                Some(Value::String(t)) => t == "object",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
                _ => false,
            };
            // A map (`additionalProperties`, even of any JSON value) says what it is; an
            // object with none of these says nothing of its members.
            let says_more = ["properties", "additionalProperties", "propertyNames", "$ref", "oneOf", "anyOf", "allOf"]
                .iter()
                .any(|k| map.get(*k).is_some_and(|m| m != &json!({}) || *k == "additionalProperties"));
            if is_object && !says_more {
                found.push(at.to_owned());
            }
            for (k, child) in map {
                bare_objects(child, &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                bare_objects(child, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_json_body_of_the_document_has_a_named_schema_and_none_is_a_bare_object() {
    let f = fixture();
    // The document as served, not only as built.
    let (s, _, doc) = call(&f, Method::GET, "/api/v1/openapi.json", None, None, &[]).await;
    assert_eq!((s, &doc), (StatusCode::OK, &f.doc));
    let mut bare = Vec::new();
    bare_objects(&doc, "", &mut bare);
    assert!(bare.is_empty(), "bare {{\"type\": \"object\"}} schemas: {bare:#?}");
    let mut unnamed = Vec::new();
    let mut json_bodies = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let bodies = op["responses"].as_object().unwrap().iter().map(|(code, r)| (code.clone(), r));
            let request = op.get("requestBody").map(|r| ("request".to_owned(), r));
            for (what, r) in bodies.chain(request) {
                for (media, content) in r["content"].as_object().into_iter().flatten() {
                    // JSON documents; the export's JSON Lines is a text stream.
                    if media != "application/json" && !media.ends_with("+json") {
                        continue;
                    }
                    json_bodies += 1;
                    let named = content["schema"]["$ref"].as_str().is_some_and(|r| {
                        r.strip_prefix("#/components/schemas/")
                            .is_some_and(|n| doc["components"]["schemas"][n].is_object())
                    });
                    if !named {
                        unnamed.push(format!("{method} {path} {what} {media}: {}", content["schema"]));
                    }
                }
            }
        }
    }
    assert!(json_bodies > 60, "{json_bodies}");
    assert!(unnamed.is_empty(), "JSON bodies without a named schema: {unnamed:#?}");
}
