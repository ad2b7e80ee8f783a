//! Staged rollouts (issue 19, item 2; docs/format.md §21, ADR 0030), end to end.
//!
//! Real parts: `confstore serve` with its embedded broker on a free port and `ROLLOUT_CLIENTS`
//! (default 50) real `confstore-client`s in three services reporting their status. Checked:
//!
//! - a 20 % rollout reaches exactly its cohort (computed here from the spec's hash, not by
//!   the code under test) and the fleet view shows which instances run it; other writes to
//!   the service (and to `global`) are refused with 409 `rollout_in_progress`;
//! - a manual promotion (`confstore rollout promote`) reaches every instance;
//! - an unhealthy canary aborts an automatic rollout within its bake time and every instance
//!   ends on the previous version; an automatic rollout whose cohort stays healthy is
//!   promoted after its bake time;
//! - secrets in a staged change stay sealed in the log, the REST answers and the stream;
//! - a forged staged message or status report from a client without the right credential is
//!   refused by the broker's gate;
//! - the log alone tells every decision: who was meant to get what, when, and why.
//!
//! A second test restarts `serve` (SIGKILL) mid-rollout: the rollout continues and is
//! promoted automatically afterwards.

mod common;

use std::time::{Duration, Instant};

use common::api::token_create;
use common::mqtt::{RawClient, put_value, serve_with_stream, store_public_key};
use common::*;
use confstore_client::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DEADLINE: Duration = Duration::from_secs(30);
const SERVICES: [&str; 3] = ["web", "db", "stt"];

/// docs/format.md §21.1, written from the spec: SHA-256("confstore-cohort/1\n" service "\n"
/// instance), the first 8 bytes big-endian, modulo 10,000, below the basis points.
fn in_share(service: &str, instance: &str, basis_points: u64) -> bool {
    let digest = Sha256::digest(format!("confstore-cohort/1\n{service}\n{instance}").as_bytes());
    let first: [u8; 8] = digest[..8].try_into().unwrap();
    u64::from_be_bytes(first) % 10_000 < basis_points
}

struct Fleet {
    rt: tokio::runtime::Runtime,
    clients: Vec<(String, String, Client)>,
}

impl Fleet {
    fn start(store: &Store, server: &Server, listen: &str, tokens: &[String], n: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut clients = Vec::new();
        for i in 0..n {
            let service = SERVICES[i % SERVICES.len()];
            let id = format!("{service}-{i}");
            let builder = Client::builder(service)
                .public_key_base64(&store_public_key(store))
                .rest_url(&format!("http://{}", server.addr))
                .token(&tokens[i % SERVICES.len()])
                .mqtt_url(&format!("mqtt://{listen}"))
                .mqtt_client_id(&format!("rollout-{i}"))
                .report_status(true)
                .instance_id(&id);
            clients.push((service.to_owned(), id, rt.block_on(builder.start()).unwrap()));
        }
        Self { rt, clients }
    }

    /// (instance, port value, rollout) of every client of `service`.
    fn seen(&self, service: &str) -> Vec<(String, Value, Option<u64>)> {
        self.clients
            .iter()
            .filter(|(s, _, _)| s == service)
            .map(|(_, id, c)| {
                let config = c.config();
                (id.clone(), config.value("port").cloned().unwrap_or(Value::Null), config.rollout())
            })
            .collect()
    }

    fn client(&self, id: &str) -> &Client {
        &self.clients.iter().find(|(_, i, _)| i == id).unwrap().2
    }

    fn ids(&self, service: &str) -> Vec<String> {
        self.clients.iter().filter(|(s, _, _)| s == service).map(|(_, id, _)| id.clone()).collect()
    }
}

fn rollout(http: &mut Http, service: &str) -> Value {
    http.ok("GET", &format!("/api/v1/services/{service}/rollout"), None).json()
}

/// Waits until the fleet view knows every instance of every service.
fn wait_fleet(http: &mut Http, fleet: &Fleet) {
    poll_until("every instance in the fleet view", DEADLINE, Duration::from_millis(20), || {
        SERVICES
            .iter()
            .all(|s| {
                let known = http.ok("GET", &format!("/api/v1/fleet/{s}"), None).json()["instances"]
                    .as_array()
                    .map_or(0, Vec::len);
                known == fleet.ids(s).len()
            })
            .then_some(())
    });
}

#[test]
fn staged_rollouts_reach_their_cohort_promote_abort_and_leave_a_replayable_record() {
    let clients_n = env_count("ROLLOUT_CLIENTS", 50);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, server, mut http) = serve_with_stream(dir.path(), &["--mqtt-listen", &listen], &SERVICES);
    for s in SERVICES {
        put_value(&mut http, s, "port", &json!(1));
    }
    let tokens: Vec<String> =
        SERVICES.iter().map(|s| token_create(&store, "config.read", Some(s), &format!("{s}-rollout")).token).collect();
    let fleet = Fleet::start(&store, &server, &listen, &tokens, clients_n);
    wait_fleet(&mut http, &fleet);
    let url = format!("http://{}", server.addr);

    // 1. A 20 % rollout of web, decided by hand: exactly its cohort runs it.
    let cohort: Vec<String> = fleet.ids("web").into_iter().filter(|id| in_share("web", id, 2_000)).collect();
    assert!(!cohort.is_empty() && cohort.len() < fleet.ids("web").len(), "a 20 % cohort of web: {cohort:?}");
    let started = store.json(&[
        "rollout",
        "start",
        "web",
        "--set",
        "port=2",
        "--percent",
        "20",
        "--bake",
        "1h",
        "--manual",
        "--reason",
        "canary port 2",
        "--url",
        &url,
        "--json",
    ]);
    let web_rollout = started["first_seq"].as_u64().unwrap();
    let t = Instant::now();
    poll_until("the 20 % cohort on the staged version", DEADLINE, Duration::from_millis(10), || {
        fleet
            .seen("web")
            .iter()
            .all(|(id, port, r)| {
                let staged = cohort.contains(id);
                *port == json!(if staged { 2 } else { 1 }) && *r == staged.then_some(web_rollout)
            })
            .then_some(())
    });
    eprintln!("the cohort of {} ran the staged version {:.1?} after the start", cohort.len(), t.elapsed());
    poll_until("the fleet view shows who runs the rollout", DEADLINE, Duration::from_millis(20), || {
        let members = rollout(&mut http, "web")["active"]["members"].as_array().cloned().unwrap_or_default();
        let ids: Vec<&str> = members.iter().filter_map(|m| m["instance"].as_str()).collect();
        (ids == cohort.iter().map(String::as_str).collect::<Vec<_>>() && members.iter().all(|m| m["applied"] == true))
            .then_some(())
    });
    let status = store.run(&["rollout", "status", "web", "--url", &url]);
    assert!(status.status.success() && status.stdout.contains(&cohort[0]), "{status}");

    // Other writes to web, to global, and a second rollout wait for this one.
    for (method, target, body) in [
        ("PUT", "/api/v1/services/web/values/port", json!({"value": 3})),
        ("PUT", "/api/v1/services/global/values/region", json!({"value": "eu"})),
        (
            "POST",
            "/api/v1/services/web/rollout",
            json!({"set": {"x": 1}, "cohort": {"percent": 5}, "bake_seconds": 60}),
        ),
    ] {
        let r = http.request(method, target, &[], Some(&body)).unwrap();
        assert_eq!(r.status, 409, "{method} {target}: {r}");
        assert_eq!(r.json()["error"], "rollout_in_progress", "{r}");
    }
    put_value(&mut http, "db", "other", &json!(true));

    // 2. Promoted by hand (CLI): every web instance on the new version, none on a rollout.
    store.ok(&["rollout", "promote", "web", "--reason", "looks good", "--url", &url]);
    poll_until("every web instance on the promoted version", DEADLINE, Duration::from_millis(10), || {
        fleet.seen("web").iter().all(|(_, port, r)| *port == json!(2) && r.is_none()).then_some(())
    });
    put_value(&mut http, "web", "after", &json!(1));

    // 3. An automatic rollout of db to two listed canaries; one reports unhealthy on it.
    let db_ids = fleet.ids("db");
    let (canary, other) = (db_ids[0].clone(), db_ids[1].clone());
    let bake = Duration::from_secs(60);
    let body = json!({"set": {"port": 7}, "cohort": {"instances": [&other, &canary]}, "bake_seconds": bake.as_secs(),
        "reason": "db canary"});
    let db_rollout = http.ok("POST", "/api/v1/services/db/rollout", Some(&body)).json()["first_seq"].as_u64().unwrap();
    let started = Instant::now();
    poll_until("the two canaries on the staged version", DEADLINE, Duration::from_millis(10), || {
        let seen = fleet.seen("db");
        seen.iter().all(|(id, port, _)| *port == json!(if *id == canary || *id == other { 7 } else { 1 })).then_some(())
    });
    fleet.client(&canary).set_healthy(Some(false));
    poll_until("the rollout aborted automatically", DEADLINE, Duration::from_millis(20), || {
        (rollout(&mut http, "db")["last"]["outcome"] == "aborted").then_some(())
    });
    let aborted_after = started.elapsed();
    assert!(aborted_after < bake, "aborted after {aborted_after:?}, not within the bake time {bake:?}");
    poll_until("every db instance back on the previous version", DEADLINE, Duration::from_millis(10), || {
        fleet.seen("db").iter().all(|(_, port, r)| *port == json!(1) && r.is_none()).then_some(())
    });
    fleet.client(&canary).set_healthy(Some(true));

    // 4. An automatic 20 % rollout of stt that stays healthy: promoted after its bake time.
    let stt_cohort: Vec<String> = fleet.ids("stt").into_iter().filter(|id| in_share("stt", id, 2_000)).collect();
    assert!(!stt_cohort.is_empty(), "a 20 % cohort of stt");
    let body = json!({"set": {"port": 9}, "cohort": {"percent": 20}, "bake_seconds": 2});
    let stt_rollout =
        http.ok("POST", "/api/v1/services/stt/rollout", Some(&body)).json()["first_seq"].as_u64().unwrap();
    poll_until("stt promoted automatically after its bake time", DEADLINE, Duration::from_millis(20), || {
        (rollout(&mut http, "stt")["last"]["outcome"] == "promoted").then_some(())
    });
    poll_until("every stt instance on the promoted version", DEADLINE, Duration::from_millis(10), || {
        fleet.seen("stt").iter().all(|(_, port, _)| *port == json!(9)).then_some(())
    });

    // 5. A staged secret stays sealed: in the log, the rollout's answer and the stream.
    let auditor = token_create(&store, "audit.read", None, "rollout-auditor").token;
    let watcher = RawClient::connect(port, "watcher", Some(("auditor", &auditor)), &["system/config-staged/+"]);
    let body = json!({"secrets": {"password": "hunter2-staged"}, "cohort": {"instances": [&other]},
        "bake_seconds": 3600, "auto": false});
    let secret_rollout =
        http.ok("POST", "/api/v1/services/db/rollout", Some(&body)).json()["first_seq"].as_u64().unwrap();
    poll_until("the staged secret on the stream", DEADLINE, Duration::from_millis(20), || {
        watcher.on("system/config-staged/db").iter().any(|m| m.payload.len() > 100).then_some(())
    });
    let shown = rollout(&mut http, "db").to_string();
    let export = store.ok(&["export"]);
    let streamed: Vec<String> = watcher
        .on("system/config-staged/db")
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    for (what, text) in [("GET rollout", shown.as_str()), ("the export", export.as_str())]
        .into_iter()
        .chain(streamed.iter().map(|s| ("the stream", s.as_str())))
    {
        assert!(!text.contains("hunter2-staged"), "the staged secret in {what}");
    }
    // Every staged message seen matches its published schema (and its staged snapshot that
    // of a snapshot).
    for text in &streamed {
        let payload: Value = serde_json::from_str(&decode_jws_payload(text)).unwrap();
        validate("mqtt-config-staged.json", &payload);
        if let Some(snapshot) = payload.get("snapshot") {
            validate("mqtt-config-update.json", snapshot);
        }
    }
    let decoded = streamed.iter().map(|s| decode_jws_payload(s)).collect::<Vec<_>>().join("\n");
    assert!(!decoded.contains("hunter2-staged") && decoded.contains("$secret"), "the stream carries the sealed marker");
    http.ok("POST", "/api/v1/services/db/rollout/abort", Some(&json!({"reason": "secret check done"})));

    // 6. Forgeries: a staged message or another service's status from a client without the
    //    credential for it are refused by the gate (it disconnects the client).
    let before = rollout(&mut http, "web");
    let forged_staged = RawClient::connect(port, "forger-1", Some(("web", &tokens[0])), &[]);
    forged_staged.publish("system/config-staged/web", b"{\"state\":\"active\"}", true);
    let forged_status = RawClient::connect(port, "forger-2", Some(("db", &tokens[1])), &[]);
    let claim = json!({"format": "confstore-status/1", "service": "web", "instance": &cohort[0], "state": "online",
        "store_id": "00".repeat(16), "generation": 1, "epoch": 1, "version": 1, "rollout": web_rollout, "time_ms": 1});
    forged_status.publish(&format!("system/config-status/web/{}", cohort[0]), claim.to_string().as_bytes(), true);
    poll_until("both forgers disconnected by the gate", DEADLINE, Duration::from_millis(20), || {
        let m = http.ok("GET", "/metrics", None).text();
        m.lines()
            .find(|l| l.starts_with("confstore_connections_closed_total") && l.contains("reason=\"acl_denied\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= 2.0)
    });
    assert_eq!(rollout(&mut http, "web")["message"], before["message"], "the staged message is the server's");

    // 7. The log alone tells every decision.
    let events: Vec<Value> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"]["kind"]["type"].as_str().is_some_and(|t| t.starts_with("rollout_")))
        .collect();
    let kinds: Vec<(String, Option<String>, u64)> = events
        .iter()
        .map(|e| {
            let k = &e["event"]["kind"];
            let id = k["rollout_seq"].as_u64().unwrap_or_else(|| e["seq"].as_u64().unwrap());
            (k["type"].as_str().unwrap().to_owned(), k["service"].as_str().map(str::to_owned), id)
        })
        .collect();
    let expect = |t: &str, s: &str, id: u64| (t.to_owned(), Some(s.to_owned()), id);
    assert_eq!(
        kinds,
        vec![
            expect("rollout_started", "web", web_rollout),
            expect("rollout_promoted", "web", web_rollout),
            expect("rollout_started", "db", db_rollout),
            expect("rollout_aborted", "db", db_rollout),
            expect("rollout_started", "stt", stt_rollout),
            expect("rollout_promoted", "stt", stt_rollout),
            expect("rollout_started", "db", secret_rollout),
        ]
    );
    let web_start = &events[0]["event"];
    assert_eq!(web_start["kind"]["cohort"], json!({"percent": 20.0}));
    assert_eq!(web_start["kind"]["changes"], json!([{"op": "set", "key": "port", "value": 2}]));
    assert!(web_start["actor"].as_str().unwrap().starts_with("token:"), "{web_start}");
    assert_eq!(web_start["reason"], "canary port 2");
    let web_promote = &events[1]["event"];
    assert_eq!(web_promote["kind"]["automatic"], false);
    assert_eq!(web_promote["reason"], "looks good");
    let db_abort = &events[3]["event"];
    assert_eq!(db_abort["actor"], "confstore-rollout");
    assert_eq!(db_abort["kind"]["automatic"], true);
    assert!(db_abort["reason"].as_str().unwrap().contains(&format!("{canary} reported unhealthy")), "{db_abort}");
    assert_eq!(
        db_abort["kind"]["cohort"][0],
        json!({"instance": canary, "applied": true, "healthy": false, "online": true})
    );
    let stt_promote = &events[5]["event"];
    assert_eq!(
        (stt_promote["actor"].as_str(), stt_promote["kind"]["automatic"].as_bool()),
        (Some("confstore-rollout"), Some(true))
    );
    let members: Vec<&str> =
        stt_promote["kind"]["cohort"].as_array().unwrap().iter().filter_map(|m| m["instance"].as_str()).collect();
    let mut expected_stt: Vec<&str> = stt_cohort.iter().map(String::as_str).collect();
    expected_stt.sort_unstable();
    assert_eq!(members, expected_stt, "the promotion names exactly the cohort");
    assert_eq!(store.json(&["verify", "--json"])["ok"], true);

    for (_, _, c) in fleet.clients {
        fleet.rt.block_on(c.shutdown());
    }
    drop(server);
}

/// Checks `instance` against the schema file `docs/schemas/<name>`.
fn validate(name: &str, instance: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas").join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {instance} violates: {errors:?}");
}

/// The payload of a flattened JWS, decoded (to look inside a streamed message).
fn decode_jws_payload(text: &str) -> String {
    use base64::Engine;
    let jws: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let payload = jws["payload"].as_str().unwrap_or("");
    String::from_utf8_lossy(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
        .into_owned()
}

#[test]
fn a_restarted_serve_continues_the_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, mut server, mut http) = serve_with_stream(dir.path(), &["--mqtt-listen", &listen], &SERVICES);
    put_value(&mut http, "web", "port", &json!(1));
    let tokens: Vec<String> =
        SERVICES.iter().map(|s| token_create(&store, "config.read", Some(s), &format!("{s}-restart")).token).collect();
    let fleet = Fleet::start(&store, &server, &listen, &tokens, 6);
    wait_fleet(&mut http, &fleet);
    let ids = fleet.ids("web");
    let body = json!({"set": {"port": 5}, "cohort": {"instances": [&ids[0]]}, "bake_seconds": 8});
    let id = http.ok("POST", "/api/v1/services/web/rollout", Some(&body)).json()["first_seq"].as_u64().unwrap();
    poll_until("the canary on the staged version", DEADLINE, Duration::from_millis(10), || {
        (fleet.seen("web").iter().find(|(i, _, _)| *i == ids[0]).map(|(_, p, r)| (p.clone(), *r))
            == Some((json!(5), Some(id))))
        .then_some(())
    });
    let killed_at = Instant::now();
    server.restart_killed();
    server.wait_ready();
    let mut http = server.admin();
    // Still active after the restart: the fleet view refills from the clients' new reports.
    assert!(rollout(&mut http, "web")["active"]["rollout"] == id, "the rollout survives the restart");
    poll_until("promoted automatically after the restart", Duration::from_secs(60), Duration::from_millis(50), || {
        (rollout(&mut http, "web")["last"]["outcome"] == "promoted").then_some(())
    });
    eprintln!("promoted {:.1?} after the restart", killed_at.elapsed());
    poll_until("every web instance on the promoted version", DEADLINE, Duration::from_millis(10), || {
        fleet.seen("web").iter().all(|(_, port, r)| *port == json!(5) && r.is_none()).then_some(())
    });
    for (_, _, c) in fleet.clients {
        fleet.rt.block_on(c.shutdown());
    }
}
