//! docs/testing.md row 23 and issue 7's generations, with real processes: `confstore serve`, a
//! Mosquitto broker started on a free port, and a `confstore-client`.
//!
//! - An older copy of the database put back (a restore to a point in time) is refused for
//!   writing: the server serves the LKG read-only and names the missing seq range, the CLI's
//!   write commands refuse with the same range, `restore-check` fails. Once the operator runs
//!   `confstore generation start`, the server goes back to read-write by itself, clients take
//!   the new generation's lower epoch, and a replay of an old-generation message is refused.
//! - A database whose `-wal` was deleted (the committed tail lost) is refused the same way.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mqtt::{Broker, RawClient, put_value, store_public_key};
use common::*;
use confstore_client::Client;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `/readyz` once the server is in the fallback; its `writes.refused` text.
fn refused_reason(server: &mut Server) -> String {
    let resp = server.wait_for("the read-only fallback", "/readyz", DEADLINE, |r| {
        r.json().get("mode").and_then(Value::as_str) == Some("read_only_fallback")
    });
    resp.json()["writes"]["refused"].as_str().unwrap_or_default().to_owned()
}

/// The epoch inside a snapshot JWS (flattened: the payload is base64url JSON).
fn snapshot_epoch(jws: &[u8]) -> Option<u64> {
    let doc: Value = serde_json::from_slice(jws).ok()?;
    let payload = doc["payload"].as_str()?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["epoch"].as_u64()
}

/// Replaces the data directory's database by `copy` (a database file alone: no WAL).
fn put_back(data_dir: &Path, copy: &Path) {
    for name in ["config.db-wal", "config.db-shm"] {
        let _ = std::fs::remove_file(data_dir.join(name));
    }
    std::fs::copy(copy, data_dir.join("config.db")).unwrap();
}

#[test]
fn an_older_copy_is_refused_until_a_new_generation_starts_and_clients_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let store = Store::in_dir(&dir.path().join("store"));
    store.init();
    let serve_args = ["--mqtt-url", &broker.url(), "--recover-interval-s", "1"];
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&store, &serve_args, &log);
    server.wait_ready();
    let mut http = Http::new(server.addr).with_token(&admin_token(&store));
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "web"})));
    let early_epoch = put_value(&mut http, "web", "port", &json!(8001));

    // The point in time we will go back to: a verified copy of the log up to this epoch.
    let copy_dir = dir.path().join("copy");
    store.ok(&["replay", "--to-epoch", &early_epoch.to_string(), "--out", copy_dir.to_str().unwrap()]);

    let tap = RawClient::connect(broker.port, "tap", None, &["system/config/web"]);
    let mut last_epoch = early_epoch;
    for port in 8002..=8005 {
        last_epoch = put_value(&mut http, "web", "port", &json!(port));
    }
    let rt = runtime();
    let lkg_path = dir.path().join("client.lkg");
    let client = rt
        .block_on(
            Client::builder("web")
                .public_key_base64(&store_public_key(&store))
                .rest_url(&format!("http://{}", server.addr))
                .token(&admin_token(&store))
                .mqtt_url(&broker.url())
                .mqtt_client_id("gen-client-web")
                .lkg_path(&lkg_path)
                .env(Vec::new())
                .start(),
        )
        .unwrap();
    assert_eq!(client.config().version().changed_epoch, last_epoch);
    assert_eq!(client.config().version().generation, 1);
    // A generation-1 message as an attacker (or a stale retained copy) could replay later.
    let old_message =
        poll_until("the snapshot of the last write on the wire", DEADLINE, Duration::from_millis(5), || {
            tap.on("system/config/web").into_iter().rev().find(|m| snapshot_epoch(&m.payload) == Some(last_epoch))
        });
    let head_seq = u64_of(&http.ok("GET", "/api/v1/head", None).json(), "seq");
    server.wait_lkg_current();
    assert!(server.terminate().success());

    // The restore: the older copy goes back in place of the database.
    put_back(&store.data_dir, &copy_dir.join("config.db"));
    let copy_head = u64_of(&store.head(), "seq");
    let range = format!("events {}..={head_seq} are missing", copy_head + 1);

    let mut server = Server::start(&store, &serve_args, &log);
    let why = refused_reason(&mut server);
    assert!(why.contains(&range), "the refusal names the missing range {range:?}: {why}");
    assert!(why.contains("generation start"), "{why}");
    let mut http = Http::new(server.addr).with_token(&admin_token(&store));
    // Reads come from the LKG (the newest state clients have); writes are refused.
    assert_eq!(http.ok("GET", "/api/v1/services/web/values/port", None).json()["value"], json!(8005));
    let write = http.send("PUT", "/api/v1/services/web/values/port", &json!({"value": 9000})).unwrap();
    assert_eq!(write.status, 503, "{}", write.text());
    // The CLI refuses too, with the range, and changes nothing.
    let cli = store.run(&["set", "web", "port", "9000"]);
    assert!(!cli.status.success());
    assert!(cli.stderr.contains(&range), "{}", cli.stderr);
    assert_eq!(u64_of(&store.head(), "seq"), copy_head);
    // restore-check says the same, from the data directory's own records.
    let check = store.run(&["restore-check", "--json"]);
    assert!(!check.status.success());
    let report = check.json();
    assert_eq!(report["missing"]["from_seq"], json!(copy_head + 1), "{report}");
    assert_eq!(report["missing"]["to_seq"], json!(head_seq), "{report}");

    // The deliberate step.
    let started = store.json(&["generation", "start", "--reason", "restored to before the bad deploy", "--json"]);
    assert_eq!(started["generation"], json!(2), "{started}");
    assert_eq!(started["missing"], json!({"from_seq": copy_head + 1, "to_seq": head_seq}));
    let info = std::fs::read_to_string(store.data_dir.join("rebuild.info")).unwrap();
    let line: Value = serde_json::from_str(info.lines().last().unwrap()).unwrap();
    assert_eq!(line["abandoned"]["seq"], json!(head_seq));
    assert_eq!(line["reason"], json!("restored to before the bad deploy"));
    // Starting another one now is refused: nothing is behind any more.
    let again = store.run(&["generation", "start", "--reason", "twice"]);
    assert!(!again.status.success() && again.stderr.contains("not behind"), "{}", again.stderr);

    // The server recovers by itself, in generation 2, at the restored (lower) epoch.
    server.wait_for("read-write again", "/readyz", DEADLINE, |r| {
        r.status == 200 && r.json().get("mode").and_then(Value::as_str) == Some("read_write")
    });
    poll_until("the client to take generation 2", DEADLINE, Duration::from_millis(5), || {
        let config = client.config();
        let v = config.version();
        (v.generation == 2 && v.changed_epoch == early_epoch).then_some(())
    });
    assert_eq!(client.config().value("port"), Some(&json!(8001)));
    let epoch = put_value(&mut http, "web", "port", &json!(8101));
    assert!(epoch < last_epoch, "the new generation's epochs are lower ({epoch} < {last_epoch})");
    poll_until("the client to apply the new generation's write", DEADLINE, Duration::from_millis(5), || {
        (client.config().version().changed_epoch == epoch).then_some(())
    });

    // A replay of the old generation's newest message is refused, and changes nothing.
    let rejected_before = client.stats().rejected("old_generation");
    let attacker = RawClient::connect(broker.port, "attacker", None, &[]);
    attacker.publish("system/config/web", &old_message.payload, false);
    poll_until("the replay to be refused", DEADLINE, Duration::from_millis(5), || {
        (client.stats().rejected("old_generation") > rejected_before).then_some(())
    });
    assert_eq!(client.config().value("port"), Some(&json!(8101)));
    assert_eq!(client.config().version().generation, 2);
    rt.block_on(client.shutdown());

    // The whole log verifies, generation event included; restore-check is clean now.
    let verified = store.json(&["verify", "--json"]);
    assert_eq!(verified["ok"], json!(true), "{verified}");
    let check = store.run(&["restore-check", "--json"]);
    assert!(check.status.success(), "{}", check.stdout);
    assert!(server.terminate().success());
}

#[test]
fn a_database_whose_wal_was_deleted_is_refused_with_the_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(dir.path());
    store.init();
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&store, &["--recover-interval-s", "1"], &log);
    server.wait_ready();
    let mut http = Http::new(server.addr).with_token(&admin_token(&store));
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "web"})));
    // Make the database file itself hold a known point: a clean stop checkpoints the WAL.
    assert!(server.terminate().success());
    let mut server = Server::start(&store, &["--recover-interval-s", "1"], &log);
    server.wait_ready();
    let mut http_again = Http::new(server.addr).with_token(&admin_token(&store));
    let file_head = u64_of(&http_again.ok("GET", "/api/v1/head", None).json(), "seq");
    for port in 0..5 {
        put_value(&mut http_again, "web", "port", &json!(7000 + port));
    }
    let head_seq = u64_of(&http_again.ok("GET", "/api/v1/head", None).json(), "seq");
    server.wait_lkg_current();
    // Killed: the last writes are only in the WAL, which is then lost.
    server.kill();
    drop(http);
    assert!(store.data_dir.join("config.db-wal").exists());
    std::fs::remove_file(store.data_dir.join("config.db-wal")).unwrap();
    let _ = std::fs::remove_file(store.data_dir.join("config.db-shm"));

    let mut server = Server::start(&store, &["--recover-interval-s", "1"], &log);
    let why = refused_reason(&mut server);
    let lost_from = u64_of(&store.head(), "seq") + 1;
    assert!(lost_from > file_head && lost_from <= head_seq, "{lost_from} in {file_head}..={head_seq}");
    let range = format!("events {lost_from}..={head_seq} are missing");
    assert!(why.contains(&range), "{range:?} in {why}");
    assert!(server.log_text().contains("rewound_database"), "the alert is logged:\n{}", server.log_tail());
    assert!(server.terminate().success());
}
