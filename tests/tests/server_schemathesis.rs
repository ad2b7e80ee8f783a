//! docs/testing.md row 18, the schema fuzz: schemathesis (PyPI) generates requests from the live
//! server's OpenAPI document and runs every one of its checks on the answers — no 5xx,
//! status codes, content types, headers and bodies as documented, schema-valid requests
//! accepted and invalid ones refused, auth not ignored — once per role, each against its own
//! new server with the same fixtures, with at most 1 s per answer. Zero failures pass.
//!
//! Examples per operation: `SCHEMATHESIS_EXAMPLES` (CI default below; the test plan's (docs/testing.md) long runs
//! use 1000). Seed: `SCHEMATHESIS_SEED` (printed). Without schemathesis on the PATH the test
//! says so and passes, unless `CONFSTORE_REQUIRE_SCHEMATHESIS` is set (ops/test.sh sets it
//! after installing schemathesis), in which case it fails.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::{client_with, ready_server, token_create};
use common::{Scratch, Server, env_count, run_with_deadline};
use serde_json::json;

/// Examples per operation in CI (see the module doc).
const EXAMPLES_DEFAULT: usize = 50;

/// The roles; each gets its own schemathesis run.
const ROLES: [&str; 5] = ["config.read", "config.write", "secrets.reveal", "audit.read", "admin"];

/// How long one role's run may take before the test calls it hung.
const RUN_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The schemathesis command (`schemathesis`, else its short name `st`) and its version, if
/// one runs.
fn schemathesis() -> Option<(String, String)> {
    ["schemathesis", "st"].into_iter().find_map(|name| {
        let out = Command::new(name).arg("--version").output().ok()?;
        out.status.success().then(|| (name.to_owned(), String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    })
}

/// Services `web` (a value, a secret, a schema) and `db`, so that generated requests naming
/// them reach the handlers' real work, not only their 404s.
fn fixtures(server: &Server) {
    let mut admin = client_with(server, &common::admin_token(&server.store));
    let writes = [
        ("POST", "/api/v1/services", json!({"name": "web"})),
        ("POST", "/api/v1/services", json!({"name": "db"})),
        ("PUT", "/api/v1/services/web/values/port", json!({"value": 8080})),
        ("PUT", "/api/v1/services/web/values/api_key", json!({"value": "s3cr3t", "secret": true})),
        ("PUT", "/api/v1/services/db/values/host", json!({"value": "db.internal"})),
        ("PUT", "/api/v1/services/web/schema", json!({"type": "object", "additionalProperties": true})),
    ];
    for (method, target, body) in writes {
        let r = admin.request(method, target, &[], Some(&body)).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        assert!(r.is_success(), "{method} {target}: {r}");
    }
}

/// schemathesis settings beyond the command line. One narrowing, for one check:
/// `positive_data_acceptance` sends requests the OpenAPI document allows and by default
/// wants 2xx, 3xx, 401, 403, 404, 409 or 429. confstore answers 422 (documented on every
/// operation that can give it) when a well-formed request breaks a rule that depends on the
/// store's state at that moment, which no static document can express: the value breaks
/// the service's JSON Schema (set at run time, by this very run's `PUT .../schema` calls
/// too), there is nothing to roll back, the changeset is empty, the key is not a secret.
/// 422 is added to that check's accepted answers; 400 for a schema-valid request, and
/// everything every other check looks at, still fail.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"#;

/// What every run shares.
struct Settings {
    examples: usize,
    seed: u64,
}

/// The runs of one role: (label, extra arguments). An admin token may revoke itself — a
/// schemathesis run reuses ids it saw in answers (`GET /api/v1/tokens` lists the token's
/// own id) as `DELETE /api/v1/tokens/{id}` parameters, after which every request of the run
/// is a 401 — so for admin that operation runs on its own, last, without the stateful phase
/// (which is what chains one answer's ids into the next request). The one route left out is
/// `GET /api/v1/live`: a server-sent event stream that ends only when the server stops, which
/// a fuzzer waiting for a whole response cannot read; tests/tests/server_live.rs tests it.
fn runs(role: &str) -> Vec<(&'static str, Vec<&'static str>)> {
    const REVOKE: &str = "/api/v1/tokens/{id}";
    const LIVE: &str = "/api/v1/live";
    if role == "admin" {
        vec![
            ("all but token revocation", vec!["--exclude-path", REVOKE, "--exclude-path", LIVE]),
            ("token revocation", vec!["--include-path", REVOKE, "--phases", "examples,coverage,fuzzing"]),
        ]
    } else {
        vec![("all", vec!["--exclude-path", LIVE])]
    }
}

/// One schemathesis run with `token`'s role against `server`; its whole output goes to
/// `log`. Returns (passed, the summary, or everything when it failed).
fn run(st: &str, server: &Server, token: &str, settings: &Settings, extra: &[&str], log: &Path) -> (bool, String) {
    let url = format!("http://{}/api/v1/openapi.json", server.addr);
    let dir = log.parent().expect("the log is in a directory");
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
    let mut cmd = Command::new(st);
    cmd.current_dir(dir)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &url, "--checks", "all", "--max-response-time", "1", "--no-color"])
        .args(["--max-examples", &settings.examples.to_string(), "--seed", &settings.seed.to_string()])
        // Nothing remembered between runs (no .hypothesis directory): each run stands alone.
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(extra);
    let run = run_with_deadline(cmd, None, RUN_DEADLINE);
    let out = format!("{}\n{}", run.stdout, run.stderr);
    let summary = out.find("= SUMMARY =").map_or_else(|| out.clone(), |i| out[i..].to_owned());
    std::fs::write(log, &out).unwrap_or_else(|e| panic!("writing {}: {e}", log.display()));
    (run.status.success(), if run.status.success() { summary } else { out })
}

#[test]
fn schemathesis_finds_nothing_for_any_role() {
    let Some((st, version)) = schemathesis() else {
        let required = std::env::var_os("CONFSTORE_REQUIRE_SCHEMATHESIS").is_some();
        assert!(!required, "CONFSTORE_REQUIRE_SCHEMATHESIS is set but neither `schemathesis` nor `st` runs");
        // Written to the stderr handle, not with eprintln!, which the test harness captures
        // for passing tests: a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED schemathesis_finds_nothing_for_any_role: schemathesis is not installed \
             (python3 -m pip install schemathesis; ops/test.sh does, and sets CONFSTORE_REQUIRE_SCHEMATHESIS)"
        );
        return;
    };
    let settings = Settings {
        examples: env_count("SCHEMATHESIS_EXAMPLES", EXAMPLES_DEFAULT),
        seed: common::seed("SCHEMATHESIS_SEED"),
    };
    eprintln!(
        "{version}: {} examples per operation, every check, for each of {} roles",
        settings.examples,
        ROLES.len()
    );
    let dir = Scratch::new("schemathesis");
    let mut failed = Vec::new();
    let all_started = Instant::now();
    for role in ROLES {
        let role_dir = dir.path().join(role);
        let server = ready_server(&role_dir);
        fixtures(&server);
        let token = token_create(&server.store, role, None, &format!("schemathesis-{role}"));
        for (i, (label, extra)) in runs(role).iter().enumerate() {
            let log = role_dir.join(format!("schemathesis-{i}.log"));
            let started = Instant::now();
            let (passed, report) = run(&st, &server, &token.token, &settings, extra, &log);
            let verdict = if passed { "passed" } else { "FAILED" };
            eprintln!("--- {role} ({label}): {verdict} in {:.1?}\n{report}", started.elapsed());
            if !passed {
                failed.push(format!("{role} ({label}): full output in {}", log.display()));
            }
        }
    }
    eprintln!("schemathesis: {} roles in {:.1?}", ROLES.len(), all_started.elapsed());
    assert!(failed.is_empty(), "schemathesis found failures with the tokens of: {failed:#?}");
}

/// A schemathesis finding kept as a plain regression test (runs with or without
/// schemathesis): `after` at the top of its range made the page scan's `after + 1` overflow,
/// a panic answered 500 in debug builds (and a wrap to the start of the log in release).
#[test]
fn paging_after_the_largest_seq_answers_an_empty_page() {
    let dir = Scratch::new("schemathesis-regressions");
    let server = ready_server(dir.path());
    let mut admin = client_with(&server, &common::admin_token(&server.store));
    for route in ["/api/v1/events", "/api/v1/history", "/api/v1/audit"] {
        let target = format!("{route}?after={}", u64::MAX);
        let r = admin.get(&target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(r.status, 200, "GET {target}: {r}");
        assert_eq!(r.json()["events"], json!([]), "GET {target}: {r}");
    }
}
