//! docs/testing.md row 18, the authorization matrix, through the real `confstore serve`: the route
//! table is the live server's OpenAPI document (`GET /api/v1/openapi.json`), never a list
//! kept here. Every operation (and, where it takes an optional `service`, each of "named" and
//! "not named") is called with every kind of credential — none, malformed in several shapes,
//! well-formed but unknown, the right id with a wrong secret, revoked (by the CLI and by the
//! API), each of the five roles, and each role limited to service `web` or `db` — and the
//! answer must be 401 for the first group, 403 exactly when the role does not grant the one
//! the operation names in `security` (or the token's service scope excludes the request),
//! and otherwise a normal answer (2xx, or 404/409/422). Open operations (no `security`)
//! answer 2xx whatever the credential. Every 403 must appear in the audit trail (ADR 0013):
//! a token's first on each (method, route) as an `access_denied` event with the request's
//! id, the others counted in the token's `access_denied_summary` events (the summary window
//! is shortened to a second with `CONFSTORE_DENIAL_SUMMARY_SECS`).
//!
//! Timing is not tested here: the token compare is constant-time by construction
//! (`TokenRecord::matches` in crates/confstore-core/src/auth.rs hashes the presented token
//! and compares the SHA-256 digests with `subtle::ConstantTimeEq`).
//!
//! Fixtures: services `web` (keys `port`, `doomed`, `rollme`, secret `api_key`, a permissive
//! schema) and `db`. Destructive operations run on fixtures made again before each cell:
//! `DELETE .../values/{key}` deletes `web.doomed` (set just before), `DELETE /tokens/{id}`
//! revokes a token issued just before, `POST /rollback` undoes a `web.rollme` write made
//! just before, `POST /services` registers a new name, `PUT .../schema` sets the same
//! permissive schema again.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use common::api::{client_with, ready_server, ready_server_env, token_create};
use common::{Http, HttpResponse, Scratch, Server, poll_until};
use serde_json::{Value, json};

/// The roles, as the document and the tokens spell them.
const ROLES: [&str; 5] = ["config.read", "config.write", "secrets.reveal", "audit.read", "admin"];

/// The secret key of `web`.
const SECRET_KEY: &str = "api_key";

/// The documented grants (docs/design.md §10): admin grants everything, config.write also grants
/// config.read, every other role only itself. Written out here rather than taken from the
/// server's code, so the matrix tests the rule, not the implementation.
fn grants(has: &str, needs: &str) -> bool {
    has == needs || has == "admin" || (has == "config.write" && needs == "config.read")
}

/// Routes that cover the whole store, which a service-scoped token may not use. Not in the
/// OpenAPI document, so listed here: audit, export and verify-now (as specified: the whole
/// signed log, which cannot be cut to one service and still verify), rollback when it
/// names no service (as specified), and token management — a service-scoped admin token
/// that could list, issue or revoke tokens could mint itself an unscoped admin token.
fn store_wide(method: &str, path: &str, names_service: bool) -> bool {
    matches!((method, path), ("GET", "/api/v1/audit") | ("GET", "/api/v1/export") | ("POST", "/api/v1/verify"))
        || (method == "POST" && path == "/api/v1/rollback" && !names_service)
        || path.starts_with("/api/v1/tokens")
}

/// One operation of the document.
#[derive(Debug)]
struct Operation {
    method: String,
    path: String,
    /// `security[0].bearer[0]`; `None`: open (or any valid token, see `any_token`).
    role: Option<String>,
    /// `security: [{bearer: []}]`: any valid token, whatever its role (`/api/v1/whoami`).
    any_token: bool,
    /// (name, where the route reads it, required): `path` if the path template has `{name}`,
    /// `header` as documented, else `query`.
    params: Vec<(String, &'static str, bool)>,
    /// Name of the request body's schema (`object` for an inline one), if it has a body.
    body: Option<String>,
    /// Whether the operation takes an optional `service` (query or body) besides the path.
    optional_service: bool,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for (method, op) in item.as_object().expect("a path item is an object") {
            let role = op.pointer("/security/0/bearer/0").and_then(Value::as_str).map(str::to_owned);
            let any_token = op.pointer("/security/0/bearer").and_then(Value::as_array).is_some_and(Vec::is_empty);
            let params: Vec<(String, &'static str, bool)> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let name = p["name"].as_str().expect("a parameter has a name").to_owned();
                    let at = if path.contains(&format!("{{{name}}}")) {
                        "path"
                    } else if p["in"] == "header" {
                        "header"
                    } else {
                        "query"
                    };
                    // A query parameter documented `in: path` is marked required whatever it
                    // is (path parameters always are): only trust `required` where `in` is right
                    // (the_documented_parameters_are_where_the_routes_read_them checks `in`).
                    (name, at, p["required"] == true && p["in"] == at)
                })
                .collect();
            let schema = op.pointer("/requestBody/content/application~1json/schema");
            let body =
                schema.map(|s| s["$ref"].as_str().map_or("object", |r| r.rsplit('/').next().unwrap_or(r)).to_owned());
            let body_has_service = body
                .as_deref()
                .and_then(|name| doc.pointer(&format!("/components/schemas/{name}/properties/service")))
                .is_some();
            let query_service = params.iter().any(|(n, at, _)| n == "service" && *at == "query");
            ops.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                role,
                any_token,
                params,
                body,
                optional_service: body_has_service || query_service,
            });
        }
    }
    ops
}

/// Who is asking.
#[derive(Clone, Debug)]
struct Credential {
    label: String,
    /// The `Authorization` header, if any.
    authorization: Option<String>,
    /// For a valid token: (token id, role, service scope).
    valid: Option<(String, &'static str, Option<&'static str>)>,
}

impl Credential {
    fn invalid(label: &str, authorization: Option<String>) -> Self {
        Self { label: label.to_owned(), authorization, valid: None }
    }
}

/// What a cell must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// An open operation: 2xx whatever the credential.
    Open,
    Unauthorized,
    Forbidden,
    Allowed,
}

fn expect(op: &Operation, named: Option<&str>, cred: &Credential) -> Expect {
    if op.any_token {
        return if cred.valid.is_some() { Expect::Allowed } else { Expect::Unauthorized };
    }
    let Some(needed) = op.role.as_deref() else { return Expect::Open };
    let Some((_, role, scope)) = &cred.valid else { return Expect::Unauthorized };
    if !grants(role, needed) {
        return Expect::Forbidden;
    }
    if let Some(scope) = scope
        && (store_wide(&op.method, &op.path, named.is_some()) || named.is_some_and(|s| s != *scope))
    {
        return Expect::Forbidden;
    }
    Expect::Allowed
}

fn fits(expected: Expect, r: &HttpResponse) -> bool {
    let error = || serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["error"].as_str().map(str::to_owned));
    match expected {
        Expect::Unauthorized => {
            r.status == 401 && error().as_deref() == Some("unauthorized") && r.header("www-authenticate").is_some()
        }
        Expect::Forbidden => r.status == 403 && error().as_deref() == Some("forbidden"),
        Expect::Open => r.is_success(),
        Expect::Allowed => r.is_success() || [404, 409, 422].contains(&r.status),
    }
}

/// One request: method, path and query, headers, JSON body.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Call {
    fn new(method: &str, target: &str) -> Self {
        Self { method: method.to_owned(), target: target.to_owned(), headers: Vec::new(), body: None }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn send(&self, http: &mut Http) -> HttpResponse {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        http.request(&self.method, &self.target, &headers, self.body.as_ref())
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.target))
    }
}

/// The server and the clients the fixtures use.
struct Fixture {
    server: Server,
    admin_token: String,
    /// The bootstrap admin: sets fixtures up.
    admin: Http,
    /// An audit.read token: reads the audit trail.
    audit_reader: Option<Http>,
    /// No token of its own: sends each cell's `Authorization` header as given.
    anonymous: Http,
    /// A rollout of `web` may be active (it would turn later writes to `web` into 409s).
    rollout_maybe_active: bool,
}

impl Fixture {
    /// `method target` as the bootstrap admin; panics unless 2xx.
    #[track_caller]
    fn admin_ok(&mut self, method: &str, target: &str, body: Option<Value>) -> Value {
        let r =
            self.admin.request(method, target, &[], body.as_ref()).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        assert!(r.is_success(), "{method} {target} as admin: {r}");
        r.json()
    }

    fn head(&mut self) -> Value {
        self.admin_ok("GET", "/api/v1/head", None)
    }

    /// Ends any rollout of `web` (an abort when none is active answers 409: fine).
    fn end_rollout(&mut self) {
        let body = json!({"reason": "matrix"});
        let target = "/api/v1/services/web/rollout/abort";
        let r = self.admin.request("POST", target, &[], Some(&body)).unwrap_or_else(|e| panic!("POST {target}: {e}"));
        assert!(r.is_success() || r.status == 409, "POST {target} as admin: {r}");
        self.rollout_maybe_active = false;
    }
}

/// One request of the matrix, with the service it names (path, query or body), if any.
struct Built {
    call: Call,
    named: Option<String>,
}

/// Builds the request of `op` (variant: name `service` or not) for cell `n`, first making
/// any fixture it destroys. Parameters and bodies are filled by name from the fixtures; an
/// operation needing one not known here fails the test, asking for a fixture.
fn build(fx: &mut Fixture, op: &Operation, name_service: bool, n: usize) -> Built {
    let mut path = op.path.clone();
    let mut query = Vec::new();
    let mut named = None;
    let mut instance = None;
    let deleting_value = op.method == "DELETE" && op.path.contains("{key}");
    if !op.path.contains("/rollout") && fx.rollout_maybe_active {
        fx.end_rollout();
    }
    for (name, at, required) in &op.params {
        let value = match (name.as_str(), *at) {
            ("service", "path") => {
                named = Some("web".to_owned());
                "web".to_owned()
            }
            ("service", "query") if name_service => {
                named = Some("web".to_owned());
                "web".to_owned()
            }
            ("key", "path") if op.path.ends_with("/reveal") => SECRET_KEY.to_owned(),
            ("key", "path") if deleting_value => {
                fx.admin_ok("PUT", "/api/v1/services/web/values/doomed", Some(json!({"value": n})));
                "doomed".to_owned()
            }
            ("key", "path") => "port".to_owned(),
            ("id", "path") => {
                let body = json!({"name": format!("doomed-{n}"), "role": "config.read"});
                let created = fx.admin_ok("POST", "/api/v1/tokens", Some(body));
                created["id"].as_str().expect("a created token has an id").to_owned()
            }
            // The fleet: one instance per cell, so no report is older than one held.
            ("instance", "path") => instance.insert(format!("pod-{n}")).clone(),
            ("after", "query") => "0".to_owned(),
            ("from", "query") => "1".to_owned(),
            // The Merkle-tree proofs: event 1 in the tree of 1.
            ("to" | "seq" | "size", "query") => "1".to_owned(),
            ("q", "query") => "port".to_owned(),
            (other, at) => {
                assert!(!required, "no fixture for the required {at} parameter {other:?} of {} {}", op.method, op.path);
                continue;
            }
        };
        if *at == "path" {
            path = path.replace(&format!("{{{name}}}"), &value);
        } else {
            query.push(format!("{name}={value}"));
        }
    }
    let body = op.body.as_deref().map(|schema| match schema {
        "RegisterRequest" => {
            let name = format!("matrix-{n}");
            named = Some(name.clone());
            json!({"name": name})
        }
        "PutValue" => json!({"value": n}),
        "PatchValues" => json!({"set": {"patched": n}}),
        "JsonSchemaDoc" => json!({"type": "object", "additionalProperties": true}),
        "RollbackRequest" => {
            let before = fx.head()["epoch"].as_u64().expect("head has an epoch");
            fx.admin_ok("PUT", "/api/v1/services/web/values/rollme", Some(json!({"value": n})));
            let mut b = json!({"to_epoch": before, "reason": "matrix"});
            if name_service {
                b["service"] = json!("web");
                named = Some("web".to_owned());
            }
            b
        }
        "CreateToken" => {
            let mut b = json!({"name": format!("matrix-{n}"), "role": "config.read"});
            if name_service {
                b["service"] = json!("web");
                named = Some("web".to_owned());
            }
            b
        }
        "StartRollout" => {
            fx.end_rollout();
            fx.rollout_maybe_active = true;
            json!({"set": {"staged": n}, "cohort": {"percent": 10}, "bake_seconds": 3600, "auto": false})
        }
        "DecideRollout" => {
            fx.end_rollout();
            let start =
                json!({"set": {"staged": n}, "cohort": {"instances": ["pod-1"]}, "bake_seconds": 3600, "auto": false});
            fx.admin_ok("POST", "/api/v1/services/web/rollout", Some(start));
            fx.rollout_maybe_active = true;
            json!({"reason": "matrix"})
        }
        "StatusReportBody" => json!({
            "format": "confstore-status/1", "service": "web", "instance": instance.clone().unwrap_or_default(),
            "state": "offline", "time_ms": n,
        }),
        other => panic!("no fixture for the request body {other:?} of {} {}", op.method, op.path),
    });
    let target = if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) };
    let mut call = Call::new(&op.method, &target).header("X-Request-Id", &format!("matrix-{n}"));
    if let Some(b) = body {
        call = call.json(b);
    }
    Built { call, named }
}

/// Malformed `Authorization` headers, each made from the admin token so that accepting one
/// would be as bad as it gets.
fn malformed(admin: &str) -> Vec<(&'static str, String)> {
    let (prefix_and_id, secret) = admin.rsplit_once('_').expect("a token is cst_<id>_<secret>");
    let id = &prefix_and_id["cst_".len()..];
    let cut = &admin[..admin.len() - 1];
    // An id of digits only reads the same uppercased (seen: 2540063172960917); then one
    // letter stands in, so the credential is always malformed.
    let upper_id = match id.to_uppercase() {
        u if u != id => u,
        _ => format!("A{}", &id[1..]),
    };
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{admin}"));
    vec![
        ("malformed:basic-scheme", format!("Basic {basic}")),
        ("malformed:no-scheme", admin.to_owned()),
        ("malformed:no-space", format!("Bearer{admin}")),
        ("malformed:empty", "Bearer ".to_owned()),
        ("malformed:truncated", format!("Bearer {cut}")),
        ("malformed:too-long", format!("Bearer {admin}A")),
        ("malformed:uppercase-id", format!("Bearer cst_{upper_id}_{secret}")),
        ("malformed:bad-secret-char", format!("Bearer {cut}!")),
        ("malformed:other-prefix", format!("Bearer tok_{id}_{secret}")),
        ("malformed:non-ascii", format!("Bearer {cut}\u{e9}")),
        ("malformed:two-tokens", format!("Bearer {admin} {admin}")),
    ]
}

/// The same token with another secret of the right shape.
fn wrong_secret(token: &str) -> String {
    let (head, secret) = token.rsplit_once('_').expect("a token is cst_<id>_<secret>");
    let first = if secret.starts_with('A') { 'B' } else { 'A' };
    format!("{head}_{first}{}", &secret[1..])
}

fn start(dir: &Scratch) -> Fixture {
    let server = ready_server_env(dir.path(), &[("CONFSTORE_DENIAL_SUMMARY_SECS", "1")]);
    let admin_token = common::admin_token(&server.store);
    let mut fx = Fixture {
        admin: client_with(&server, &admin_token),
        anonymous: server.client(),
        audit_reader: None,
        rollout_maybe_active: false,
        admin_token,
        server,
    };
    for name in ["web", "db"] {
        fx.admin_ok("POST", "/api/v1/services", Some(json!({"name": name})));
    }
    fx.admin_ok("PUT", "/api/v1/services/web/values/port", Some(json!({"value": 8080})));
    let secret = json!({"value": "s3cr3t", "secret": true});
    fx.admin_ok("PUT", &format!("/api/v1/services/web/values/{SECRET_KEY}"), Some(secret));
    fx.admin_ok("PUT", "/api/v1/services/db/values/host", Some(json!({"value": "db.internal"})));
    let schema = json!({"type": "object", "additionalProperties": true});
    fx.admin_ok("PUT", "/api/v1/services/web/schema", Some(schema));
    fx
}

/// `GET /api/v1/head` with `token`: its status.
fn head_status(fx: &Fixture, token: &str) -> u16 {
    let mut http = client_with(&fx.server, token);
    http.get("/api/v1/head").unwrap_or_else(|e| panic!("GET /api/v1/head: {e}")).status
}

/// Every credential of the matrix (tokens issued through the CLI while the server runs, so
/// their first use also checks the server picks CLI-issued tokens up at once).
fn credentials(fx: &mut Fixture) -> Vec<Credential> {
    let store = fx.server.store.clone();
    let mut creds = vec![Credential::invalid("none", None)];
    for (label, header) in malformed(&fx.admin_token) {
        creds.push(Credential::invalid(label, Some(header)));
    }
    let unknown = format!("Bearer cst_0123456789abcdef_{}", "A".repeat(43));
    creds.push(Credential::invalid("unknown", Some(unknown)));
    creds.push(Credential::invalid("wrong-secret", Some(format!("Bearer {}", wrong_secret(&fx.admin_token)))));

    // Revoked by the CLI: the running server notices within about a second.
    let by_cli = token_create(&store, "admin", None, "matrix-revoked-cli");
    assert_eq!(head_status(fx, &by_cli.token), 200, "a CLI-issued token works at once");
    store.ok(&["token", "revoke", &by_cli.id]);
    let revoked_at = Instant::now();
    poll_until(
        "the server refusing a token the CLI revoked",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || (head_status(fx, &by_cli.token) == 401).then_some(()),
    );
    let lag = revoked_at.elapsed();
    eprintln!("a CLI revocation took effect after {lag:?}");
    assert!(lag < Duration::from_secs(5), "a CLI revocation took {lag:?} to reach the server (about 1 s expected)");
    creds.push(Credential::invalid("revoked-cli", Some(format!("Bearer {}", by_cli.token))));

    // Revoked through the API: at once.
    let body = json!({"name": "matrix-revoked-api", "role": "admin"});
    let created = fx.admin_ok("POST", "/api/v1/tokens", Some(body));
    let (id, token) = (created["id"].as_str().expect("id"), created["token"].as_str().expect("token"));
    assert_eq!(head_status(fx, token), 200, "an API-issued token works at once");
    fx.admin_ok("DELETE", &format!("/api/v1/tokens/{id}"), None);
    assert_eq!(head_status(fx, token), 401, "an API revocation takes effect at once");
    creds.push(Credential::invalid("revoked-api", Some(format!("Bearer {token}"))));

    for scope in [None, Some("web"), Some("db")] {
        for role in ROLES {
            let label = scope.map_or_else(|| role.to_owned(), |s| format!("{role}@{s}"));
            let t = token_create(&store, role, scope, &format!("matrix-{}", label.replace('@', "-at-")));
            if role == "audit.read" && scope.is_none() {
                fx.audit_reader = Some(client_with(&fx.server, &t.token));
            }
            let authorization = Some(format!("Bearer {}", t.token));
            creds.push(Credential { label, authorization, valid: Some((t.id, role, scope)) });
        }
    }
    creds
}

/// One answered cell.
struct Cell {
    op: usize,
    named_variant: bool,
    cred: usize,
    expected: Expect,
    target: String,
    response: HttpResponse,
    request_id: String,
}

#[test]
fn every_operation_answers_every_credential_as_its_role_and_scope_allow() {
    let dir = Scratch::new("auth-matrix");
    let mut fx = start(&dir);
    let doc = fx.anonymous.get("/api/v1/openapi.json").expect("GET /api/v1/openapi.json").json();
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "the OpenAPI document lists only {} operations; is it complete?", ops.len());
    let secured = ops.iter().filter(|o| o.role.is_some()).count();
    assert!(secured >= 16, "only {secured} operations need a token");
    for op in &ops {
        if let Some(r) = &op.role {
            assert!(ROLES.contains(&r.as_str()), "{} {} needs unknown role {r:?}", op.method, op.path);
        }
    }
    let creds = credentials(&mut fx);
    let start_seq = fx.head()["seq"].as_u64().expect("head has a seq");

    let started = Instant::now();
    let mut cells = Vec::new();
    for (oi, op) in ops.iter().enumerate() {
        let variants: &[bool] = if op.optional_service { &[false, true] } else { &[false] };
        for &named_variant in variants {
            for (ci, cred) in creds.iter().enumerate() {
                let n = cells.len();
                let built = build(&mut fx, op, named_variant, n);
                let expected = expect(op, built.named.as_deref(), cred);
                let mut call = built.call;
                if let Some(a) = &cred.authorization {
                    call = call.header("Authorization", a);
                }
                let response = call.send(&mut fx.anonymous);
                let (target, request_id) = (call.target, format!("matrix-{n}"));
                cells.push(Cell { op: oi, named_variant, cred: ci, expected, target, response, request_id });
            }
        }
    }
    eprintln!("{} cells in {:?}", cells.len(), started.elapsed());

    summarize(&ops, &creds, &cells);
    let mismatches: Vec<String> = cells
        .iter()
        .filter(|c| !fits(c.expected, &c.response))
        .map(|c| {
            let (op, r) = (&ops[c.op], &c.response);
            let label = &creds[c.cred].label;
            format!(
                "{label:<22} {} {} -> expected {:?}, got {} {}",
                op.method,
                c.target,
                c.expected,
                r.status,
                r.text()
            )
        })
        .collect();
    for m in &mismatches {
        eprintln!("MISMATCH {m}");
    }

    // Every 403 is in the audit trail: the first of a token on a (method, route) as an
    // access_denied event with the request's id, the rest counted in the token's
    // summaries; nothing else is recorded as a denial.
    type Group = (String, String, String);
    let mut refused: BTreeMap<Group, Vec<&str>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.response.status == 403) {
        let token = creds[c.cred].valid.as_ref().map_or_else(String::new, |v| v.0.clone());
        let key = (token, ops[c.op].method.clone(), ops[c.op].path.clone());
        refused.entry(key).or_default().push(c.request_id.as_str());
    }
    let expected_summaries: BTreeMap<Group, u64> = refused
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(k, ids)| (k.clone(), u64::try_from(ids.len() - 1).unwrap()))
        .collect();
    let (denied, summarised) =
        poll_until("the summaries of the repeated 403s", Duration::from_secs(30), Duration::from_millis(100), || {
            let (denied, summarised) = audit_denials(&mut fx, start_seq);
            (summarised == expected_summaries).then_some((denied, summarised))
        });
    let mut unrecorded = Vec::new();
    for (key, ids) in &refused {
        let events: Vec<&String> = denied.iter().filter(|(k, _)| k == key).map(|(_, rid)| rid).collect();
        if events.len() != 1 || !ids.contains(&events[0].as_str()) {
            unrecorded.push(format!("{key:?}: {} 403s, access_denied events with request ids {events:?}", ids.len()));
        }
    }
    let extra: Vec<&(Group, String)> = denied.iter().filter(|(k, _)| !refused.contains_key(k)).collect();
    eprintln!(
        "audit: {} access_denied events and {} summarised for {} answers 403",
        denied.len(),
        summarised.values().sum::<u64>(),
        refused.values().map(Vec::len).sum::<usize>()
    );
    for u in &unrecorded {
        eprintln!("UNRECORDED 403 {u}");
    }

    // The fixtures are real: every operation succeeded for the (unscoped) admin token.
    let admin_col = creds.iter().position(|c| c.label == "admin").expect("an admin column");
    let never_2xx: Vec<String> = ops
        .iter()
        .enumerate()
        .filter(|(oi, _)| !cells.iter().any(|c| c.op == *oi && c.cred == admin_col && c.response.is_success()))
        .map(|(_, o)| format!("{} {}", o.method, o.path))
        .collect();

    assert!(mismatches.is_empty(), "{} of {} cells do not match (MISMATCH lines above)", mismatches.len(), cells.len());
    assert!(
        unrecorded.is_empty(),
        "{} (token, method, route) refused have not exactly one access_denied event (UNRECORDED lines above)",
        unrecorded.len()
    );
    assert!(extra.is_empty(), "access_denied events for requests that were not refused: {extra:?}");
    assert_eq!(summarised, expected_summaries);
    assert!(never_2xx.is_empty(), "operations the admin token never got a 2xx from (bad fixtures?): {never_2xx:?}");
}

/// The `access_denied` events after seq `after` ((token, method, route), request id), and
/// the refusals the `access_denied_summary` events count per (token, method, route), read
/// through the API.
#[allow(clippy::type_complexity)]
fn audit_denials(
    fx: &mut Fixture,
    mut after: u64,
) -> (Vec<((String, String, String), String)>, BTreeMap<(String, String, String), u64>) {
    let reader = fx.audit_reader.as_mut().expect("an audit.read token");
    let (mut denied, mut summarised) = (Vec::new(), BTreeMap::new());
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    loop {
        let target = format!("/api/v1/audit?after={after}&limit=1000");
        let page = reader.get(&target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(page.status, 200, "GET {target}: {page}");
        let page = page.json();
        for ev in page["events"].as_array().expect("an audit page has events") {
            let kind = &ev["kind"];
            if kind["type"] == "access_denied" {
                let key = (text(&kind["token_id"]), text(&kind["method"]), text(&kind["route"]));
                denied.push((key, text(&ev["request_id"])));
            } else if kind["type"] == "access_denied_summary" {
                for c in kind["counts"].as_array().expect("a summary has counts") {
                    let key = (text(&kind["token_id"]), text(&c["method"]), text(&c["route"]));
                    *summarised.entry(key).or_default() += c["count"].as_u64().expect("a count");
                }
            }
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return (denied, summarised),
        }
    }
}

/// Prints the matrix: per operation, the statuses per credential group; then totals.
fn summarize(ops: &[Operation], creds: &[Credential], cells: &[Cell]) {
    let group = |c: &Credential| -> String {
        match &c.valid {
            None => "invalid".to_owned(),
            Some((_, _, None)) => "roles".to_owned(),
            Some((_, _, Some(s))) => format!("scoped@{s}"),
        }
    };
    let mut rows: BTreeMap<(usize, bool), BTreeMap<String, BTreeMap<u16, usize>>> = BTreeMap::new();
    for c in cells {
        let row = rows.entry((c.op, c.named_variant)).or_default();
        *row.entry(group(&creds[c.cred])).or_default().entry(c.response.status).or_default() += 1;
    }
    eprintln!("{:<7} {:<52} {:<15} {:<7} statuses by credential group", "method", "path", "role", "service");
    for ((oi, named), groups) in &rows {
        let op = &ops[*oi];
        let text: Vec<String> = groups
            .iter()
            .map(|(g, st)| {
                let counts: Vec<String> = st.iter().map(|(s, n)| format!("{s}x{n}")).collect();
                format!("{g}: {}", counts.join(" "))
            })
            .collect();
        let role = op.role.as_deref().unwrap_or("(open)");
        let variant = if *named { "named" } else { "-" };
        eprintln!("{:<7} {:<52} {role:<15} {variant:<7} {}", op.method, op.path, text.join(" | "));
    }
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_expect: BTreeMap<Expect, usize> = BTreeMap::new();
    for c in cells {
        *by_status.entry(c.response.status).or_default() += 1;
        *by_expect.entry(c.expected).or_default() += 1;
    }
    let matched = cells.iter().filter(|c| fits(c.expected, &c.response)).count();
    eprintln!(
        "matrix: {} cells ({} operations, {} credentials, service variants); {matched} match; expected {by_expect:?}; \
         statuses {by_status:?}",
        cells.len(),
        ops.len(),
        creds.len()
    );
}

#[test]
fn the_documented_parameters_are_where_the_routes_read_them() {
    // A parameter documented `in: path` must appear in the path template; otherwise clients
    // generated from the document (and fuzzers) send it where the server never reads it.
    let dir = Scratch::new("auth-doc");
    let server = ready_server(dir.path());
    let doc = server.client().get("/api/v1/openapi.json").expect("GET /api/v1/openapi.json").json();
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                if p["in"] == "path" && !path.contains(&format!("{{{name}}}")) {
                    wrong.push(format!("{} {path}: {name}", method.to_uppercase()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "parameters documented `in: path` that are not in the path (query parameters?): {wrong:#?}"
    );
}
