//! The live stream end to end, with real parts: `confstore serve` as a process, a real
//! Mosquitto started on a free port (or the embedded broker), and the real client library.
//!
//! - a write reaches a client verified with the right epoch; a new client starts from the
//!   retained message alone; an env override wins over the store;
//! - contracts: every message on every topic matches its JSON Schema in docs/schemas/ and
//!   verifies (Rust, and Python with jwcrypto + jsonschema, as the fleet's Python services
//!   will); no secret plaintext on the wire;
//! - the embedded broker carries the stream, and a taken port is a clear error;
//! - ops/mosquitto: only the store publishes under system/config*, a service reads only its
//!   own snapshot;
//! - store down at client start: the client's verified LKG copy is used; a tampered one is a
//!   clear error.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mqtt::{
    Broker, RawClient, password_file, put_value, serve_with_stream, store_public_key, store_verifying_key,
};
use common::*;
use confstore_client::{Client, Source};
use confstore_core::VerifyingKey;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn public_key(store: &Store) -> String {
    store_public_key(store)
}

fn verifying_key(store: &Store) -> VerifyingKey {
    store_verifying_key(store)
}

/// A store served with the live stream going to `mqtt_args`; `web` and `db` registered.
fn served(dir: &Path, mqtt_args: &[&str]) -> (Store, Server, Http) {
    serve_with_stream(dir, mqtt_args, &["web", "db"])
}

fn put(http: &mut Http, service: &str, key: &str, value: &Value) -> u64 {
    put_value(http, service, key, value)
}

type Applied = Arc<Mutex<Vec<(u64, Value)>>>;

fn client_builder(store: &Store, server: &Server, service: &str, mqtt_url: &str) -> confstore_client::ClientBuilder {
    Client::builder(service)
        .public_key_base64(&public_key(store))
        .rest_url(&format!("http://{}", server.addr))
        .token(&admin_token(store))
        .mqtt_url(mqtt_url)
        .mqtt_client_id(&format!("test-{service}-{}", free_port()))
        .env(Vec::new())
}

fn recording(b: confstore_client::ClientBuilder) -> (confstore_client::ClientBuilder, Applied) {
    let applied: Applied = Arc::default();
    let a = Arc::clone(&applied);
    let b = b.on_update(move |c| a.lock().unwrap().push((c.version().epoch, c.to_json())));
    (b, applied)
}

#[test]
fn a_write_reaches_the_client_verified_and_a_new_client_starts_from_the_retained_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let (store, server, mut http) = served(dir.path(), &["--mqtt-url", &broker.url()]);
    put(&mut http, "web", "port", &json!(8080));
    let rt = runtime();
    let (builder, applied) = recording(client_builder(&store, &server, "web", &broker.url()));
    let client = rt.block_on(builder.start()).unwrap();
    assert_eq!(client.config().value("port"), Some(&json!(8080)));

    let epoch = put(&mut http, "web", "port", &json!(8081));
    poll_until("the client to apply the write", DEADLINE, Duration::from_millis(5), || {
        (client.config().version().changed_epoch == epoch).then_some(())
    });
    let cfg = client.config();
    assert_eq!(cfg.value("port"), Some(&json!(8081)));
    assert_eq!(cfg.source("port"), Some(Source::Service));
    assert_eq!(applied.lock().unwrap().last().unwrap().0, epoch);
    // A write to another service is not this client's business.
    put(&mut http, "db", "pool", &json!(5));
    // The retained copy of the version fetched over REST at start, and the retained
    // snapshot that follows each version's delta, are duplicates. The retained snapshot
    // trails the log by up to one coalescing window (format.md §17.2), so the one the
    // broker holds when the client subscribes may be a version older than the REST answer:
    // at most one stale message. Nothing else is rejected.
    let stats = client.stats();
    assert_eq!(stats.rejected_total(), stats.rejected("duplicate") + stats.rejected("stale"), "{stats:?}");
    assert!(stats.rejected("stale") <= 1, "{stats:?}");
    assert!(stats.rejected("duplicate") <= stats.applied + 1, "{stats:?}");

    // A client with no REST (only the broker) starts from the retained snapshot; an env
    // override wins over the store.
    let only_mqtt = Client::builder("web")
        .public_key_base64(&public_key(&store))
        .mqtt_url(&broker.url())
        .mqtt_client_id("test-web-retained")
        .env(vec![("WEB__PORT".to_owned(), "9999".to_owned())]);
    let second = rt.block_on(only_mqtt.start()).unwrap();
    // It starts from the retained snapshot the broker holds, which reaches the newest
    // version within one coalescing window.
    poll_until("the retained snapshot to reach the newest version", DEADLINE, Duration::from_millis(5), || {
        (second.config().version().changed_epoch == epoch).then_some(())
    });
    let cfg = second.config();
    assert_eq!(cfg.value("port"), Some(&json!(9999)));
    assert_eq!(cfg.source("port"), Some(Source::Env));

    // The stored schema (`Client::stored_schema`): none yet; once set, the one the signed
    // snapshot's schema_hash names; without REST, a clear error.
    assert_eq!(rt.block_on(client.stored_schema()).unwrap(), None);
    let schema = json!({"type": "object", "properties": {"port": {"type": "integer"}}});
    let receipt = http.ok("PUT", "/api/v1/services/web/schema", Some(&schema)).json();
    let schema_epoch = receipt["epoch"].as_u64().unwrap();
    poll_until("both clients to hold the version with the schema", DEADLINE, Duration::from_millis(5), || {
        (client.config().version().changed_epoch == schema_epoch
            && second.config().version().changed_epoch == schema_epoch)
            .then_some(())
    });
    assert_eq!(rt.block_on(client.stored_schema()).unwrap(), Some(schema));
    let no_rest = rt.block_on(second.stored_schema()).unwrap_err();
    assert!(matches!(no_rest, confstore_client::ClientError::Schema { .. }), "{no_rest}");
    assert!(no_rest.to_string().contains("no rest_url"), "{no_rest}");
    rt.block_on(second.shutdown());
    rt.block_on(client.shutdown());
    drop(server);
}

/// Checks `instance` against the schema file `docs/schemas/<name>`.
fn validate(name: &str, instance: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas").join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {instance} violates: {errors:?}");
}

/// The `typ` of a JWS's protected header (unverified: it only picks the schema to check).
fn header_typ(jws_text: &str) -> String {
    use base64::Engine;
    let jws: Value = serde_json::from_str(jws_text).unwrap();
    let protected =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jws["protected"].as_str().unwrap()).unwrap();
    serde_json::from_slice::<Value>(&protected).unwrap()["typ"].as_str().unwrap().to_owned()
}

#[test]
fn every_message_matches_its_published_schema_and_verifies_in_rust_and_python() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let tap = RawClient::connect(broker.port, "tap", None, &["system/#"]);
    let (store, server, mut http) = served(dir.path(), &["--mqtt-url", &broker.url()]);
    let canary = "canary-7f3a9c1e-plaintext";
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "global"})));
    http.ok("PUT", "/api/v1/services/global/values/region", Some(&json!({"value": "eu"})));
    let schema = json!({"type": "object", "properties": {"port": {"type": "integer", "default": 80}}});
    http.ok("PUT", "/api/v1/services/web/schema", Some(&schema));
    put(&mut http, "web", "port", &json!(8080));
    http.ok("PATCH", "/api/v1/services/db/values", Some(&json!({"secrets": {"password": canary}})));
    http.ok("DELETE", "/api/v1/services/web/values/port", None);
    let head = http.ok("GET", "/api/v1/head", None).json();
    let head_seq = head["seq"].as_u64().unwrap();
    poll_until("the signed head to reach the head seq", DEADLINE, Duration::from_millis(10), || {
        tap.on("system/config-head")
            .iter()
            .any(|m| {
                let jws: Value = serde_json::from_slice(&m.payload).unwrap();
                let doc =
                    confstore_core::jws::verify(&jws, confstore_core::jws::TYP_HEAD, &[verifying_key(&store)]).unwrap();
                doc["seq"].as_u64() == Some(head_seq)
            })
            .then_some(())
    });
    let key = verifying_key(&store);
    let messages = tap.messages();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for m in &messages {
        let text = String::from_utf8(m.payload.clone()).unwrap();
        assert!(!text.contains(canary), "secret plaintext on {}", m.topic);
        if m.topic == confstore_core::stream::CHECKPOINT_TOPIC {
            // Not JSON: a C2SP signed note (docs/format.md §19), signed by the store's key.
            let store_id = confstore_core::StoreId::from_hex(head["store_id"].as_str().unwrap()).unwrap();
            let origin = confstore_core::tlog::origin(&store_id);
            let cp = confstore_core::tlog::Checkpoint::open(text.as_bytes(), &origin, &[key]).unwrap();
            assert!(cp.size >= 1 && cp.size <= head_seq, "{cp}");
            *kinds.entry("checkpoint").or_default() += 1;
            continue;
        }
        let payload: Value = serde_json::from_str(&text).unwrap();
        let on_config = m.topic.starts_with("system/config/");
        let (typ, schema) = if on_config && header_typ(&text) == confstore_core::jws::TYP_DELTA {
            (confstore_core::jws::TYP_DELTA, "mqtt-config-delta.json")
        } else if on_config && header_typ(&text) == confstore_core::jws::TYP_DELTAS {
            (confstore_core::jws::TYP_DELTAS, "mqtt-config-deltas.json")
        } else if on_config {
            (confstore_core::jws::TYP_SNAPSHOT, "mqtt-config-update.json")
        } else if m.topic.starts_with("system/config-events/") {
            (confstore_core::jws::TYP_EVENT, "mqtt-config-event.json")
        } else if m.topic == "system/config-head" {
            (confstore_core::jws::TYP_HEAD, "mqtt-config-head.json")
        } else {
            assert_eq!(m.topic, "system/health/config-manager");
            validate("mqtt-health-status.json", &payload);
            *kinds.entry("health").or_default() += 1;
            continue;
        };
        validate("mqtt-jws.json", &payload);
        let doc = confstore_core::jws::verify(&payload, typ, &[key]).unwrap();
        validate(schema, &doc);
        // Several deltas signed once: each one is a delta document.
        let docs = if typ == confstore_core::jws::TYP_DELTAS {
            let each = doc["deltas"].as_array().unwrap().clone();
            each.iter().for_each(|d| validate("mqtt-config-delta.json", d));
            each
        } else {
            vec![doc]
        };
        // The signed payload names the topic's service.
        if let Some(service) = m.topic.rsplit_once('/').map(|t| t.1).filter(|_| m.topic != "system/config-head") {
            docs.iter().for_each(|d| assert_eq!(d["service"], json!(service), "{}", m.topic));
        }
        *kinds.entry(schema).or_default() += 1;
    }
    for k in [
        "mqtt-config-update.json",
        "mqtt-config-delta.json",
        "mqtt-config-event.json",
        "mqtt-config-head.json",
        "health",
    ] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "no {k} message captured: {kinds:?}");
    }
    // The same messages through Python: jwcrypto verifies each JWS with the public key as
    // an OKP JWK, jsonschema validates each document. What a Python service would do. (The
    // checkpoint notes are not JWS; Go's sumdb/note checks them in tests/tests/tlog.rs.)
    let dump = dir.path().join("messages.json");
    let list: Vec<Value> = messages
        .iter()
        .filter(|m| m.topic != confstore_core::stream::CHECKPOINT_TOPIC)
        .map(|m| json!({"topic": m.topic, "payload": String::from_utf8_lossy(&m.payload)}))
        .collect();
    std::fs::write(&dump, serde_json::to_vec(&list).unwrap()).unwrap();
    let script = r#"
import base64, json, sys
from jwcrypto import jwk, jws
import jsonschema
dump, schemas, pub = sys.argv[1], sys.argv[2], sys.argv[3]
key = jwk.JWK(kty="OKP", crv="Ed25519", x=base64.urlsafe_b64encode(base64.b64decode(pub)).rstrip(b"=").decode())
def schema(name):
    return json.load(open(f"{schemas}/{name}"))
checked = 0
for m in json.load(open(dump)):
    topic, payload = m["topic"], json.loads(m["payload"])
    if topic == "system/health/config-manager":
        jsonschema.validate(payload, schema("mqtt-health-status.json")); checked += 1; continue
    jsonschema.validate(payload, schema("mqtt-jws.json"))
    token = jws.JWS()
    token.deserialize(json.dumps(payload))
    token.verify(key)
    header = token.jose_header
    on_config = {"confstore-delta+json": "mqtt-config-delta.json",
                 "confstore-deltas+json": "mqtt-config-deltas.json"}.get(header["typ"], "mqtt-config-update.json")
    name = {"system/config-head": "mqtt-config-head.json"}.get(topic) or (
        on_config if topic.startswith("system/config/") else "mqtt-config-event.json")
    assert header["alg"] == "EdDSA" and header["typ"].startswith("confstore-"), header
    doc = json.loads(token.payload)
    jsonschema.validate(doc, schema(name))
    for one in doc["deltas"] if name == "mqtt-config-deltas.json" else []:
        jsonschema.validate(one, schema("mqtt-config-delta.json"))
    checked += 1
print(checked)
"#;
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&dump)
        .arg(&schemas)
        .arg(public_key(&store))
        .output()
        .unwrap();
    assert!(out.status.success(), "python check failed: {}", String::from_utf8_lossy(&out.stderr));
    let checked: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(checked, list.len());
    drop(server);
}

/// The versions (changed_epoch) in a message on `system/config/<service>` and whether it is
/// several deltas signed once, verified with `key`.
fn versions_of(payload: &[u8], key: &VerifyingKey) -> (Vec<u64>, bool) {
    use confstore_core::{jws, stream};
    let message: Value = serde_json::from_slice(payload).unwrap();
    let typs = [jws::TYP_SNAPSHOT, jws::TYP_DELTA, jws::TYP_DELTAS];
    let (typ, doc) = jws::verify_one_of(&message, &typs, &[*key]).unwrap();
    if typ == jws::TYP_DELTAS {
        (stream::deltas_of(&doc).unwrap().iter().map(|(_, v)| v.changed_epoch).collect(), true)
    } else {
        (vec![stream::snapshot_version(&doc).unwrap().changed_epoch], false)
    }
}

/// docs/adr/0035: a publisher that finds several versions of a service waiting (here,
/// resuming after writes made with the stream off) signs them once, as one deltas message;
/// it matches its schema and verifies in Rust and Python, and a client applies each version
/// in order from it, over MQTT alone.
#[test]
fn versions_taken_in_together_go_out_signed_once_and_a_client_applies_each() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let tap = RawClient::connect(broker.port, "tap", None, &["system/config/web"]);
    let (store, mut server, mut http) = served(dir.path(), &["--mqtt-url", &broker.url()]);
    let key = verifying_key(&store);
    let first = put(&mut http, "web", "k", &json!(0));
    let rt = runtime();
    let (builder, applied) = recording(client_builder(&store, &server, "web", &broker.url()));
    let client = rt.block_on(builder.start()).unwrap();
    assert_eq!(client.config().version().changed_epoch, first);
    let at_start = client.stats();
    // The retained snapshot of that version is out: the publisher's checkpoint covers it.
    poll_until("the retained snapshot of the first write", DEADLINE, Duration::from_millis(5), || {
        tap.on("system/config/web").iter().any(|m| versions_of(&m.payload, &key) == (vec![first], false)).then_some(())
    });
    assert!(server.terminate().success(), "{}", server.log_tail());
    let captured_before = tap.on("system/config/web").len();

    // Four versions written with the stream off.
    let mut off = Server::start(&store, &["--no-mqtt"], &dir.path().join("serve-off.log"));
    off.wait_ready();
    let mut off_http = Http::new(off.addr).with_token(&admin_token(&store));
    let written: Vec<u64> = (1..=4).map(|i| put(&mut off_http, "web", "k", &json!(i))).collect();
    assert!(off.terminate().success(), "{}", off.log_tail());

    // Back with the stream: the publisher resumes at its checkpoint and takes the four in at once.
    let mut back = Server::start(&store, &["--mqtt-url", &broker.url()], &dir.path().join("serve-back.log"));
    back.wait_ready();
    let last = *written.last().unwrap();
    poll_until("the client to apply the last version", DEADLINE, Duration::from_millis(5), || {
        (client.config().version().changed_epoch == last).then_some(())
    });
    // (Only web is written: its versions are the store's epochs.)
    let applied: Vec<u64> = applied.lock().unwrap().iter().map(|(epoch, _)| *epoch).collect();
    assert_eq!(applied, [&[first][..], &written].concat(), "every version once, in order");
    let stats = client.stats();
    // Over MQTT: the client's REST address is the first server's, gone since.
    assert_eq!((stats.gaps_filled, stats.resyncs), (at_start.gaps_filled, at_start.resyncs), "{stats:?}");
    let after: Vec<_> = tap.on("system/config/web").split_off(captured_before);
    let batches: Vec<&common::mqtt::Captured> = after.iter().filter(|m| versions_of(&m.payload, &key).1).collect();
    assert_eq!(batches.len(), 1, "one deltas message");
    // The four versions, signed once; and the first again when the checkpoint written at the
    // stop was from before its retained snapshot's acknowledgement (the client skips it).
    let in_batch = versions_of(&batches[0].payload, &key).0;
    assert!(in_batch == written || in_batch == [&[first][..], &written].concat(), "{in_batch:?}");
    // Its schema, in Rust and with Python's jwcrypto and jsonschema.
    let message: Value = serde_json::from_slice(&batches[0].payload).unwrap();
    validate("mqtt-jws.json", &message);
    let doc = confstore_core::jws::verify(&message, confstore_core::jws::TYP_DELTAS, &[key]).unwrap();
    validate("mqtt-config-deltas.json", &doc);
    doc["deltas"].as_array().unwrap().iter().for_each(|d| validate("mqtt-config-delta.json", d));
    let script = r#"
import base64, json, sys
from jwcrypto import jwk, jws
import jsonschema
message, schemas, pub = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
key = jwk.JWK(kty="OKP", crv="Ed25519", x=base64.urlsafe_b64encode(base64.b64decode(pub)).rstrip(b"=").decode())
token = jws.JWS()
token.deserialize(json.dumps(message))
token.verify(key)
assert token.jose_header["typ"] == "confstore-deltas+json", token.jose_header
doc = json.loads(token.payload)
jsonschema.validate(doc, json.load(open(f"{schemas}/mqtt-config-deltas.json")))
for one in doc["deltas"]:
    jsonschema.validate(one, json.load(open(f"{schemas}/mqtt-config-delta.json")))
print(len(doc["deltas"]))
"#;
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(message.to_string())
        .arg(&schemas)
        .arg(public_key(&store))
        .output()
        .unwrap();
    assert!(out.status.success(), "python check failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), in_batch.len().to_string());
    rt.block_on(client.shutdown());
    drop(back);
}

#[test]
fn the_embedded_broker_carries_the_stream_and_a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, server, mut http) = served(dir.path(), &["--mqtt-listen", &listen]);
    let rt = runtime();
    let client = rt.block_on(client_builder(&store, &server, "web", &format!("mqtt://{listen}")).start()).unwrap();
    let epoch = put(&mut http, "web", "port", &json!(1));
    poll_until("the client to apply the write via the embedded broker", DEADLINE, Duration::from_millis(5), || {
        (client.config().version().changed_epoch == epoch).then_some(())
    });
    rt.block_on(client.shutdown());

    // A second server on the same broker address: refused before it listens, saying what to do.
    let other = Store::in_dir(&dir.path().join("other"));
    other.init();
    let run = other.run(&["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--mqtt-listen", &listen]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains(&listen) && run.stderr.contains("--mqtt-url") && run.stderr.contains("--no-mqtt"),
        "{}",
        run.stderr
    );
    drop(server);
}

/// A Mosquitto in `dir` with the shipped `ops/mosquitto` settings and ACL — without its
/// status-report lines when `without_status` — and users confstore, web and auditor.
fn shipped_broker(dir: &Path, without_status: bool) -> Broker {
    let bdir = dir.join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/mosquitto");
    let acl = bdir.join("confstore.acl");
    let shipped_acl = std::fs::read_to_string(ops.join("confstore.acl")).unwrap();
    let kept: String = shipped_acl
        .lines()
        .filter(|l| !(without_status && !l.starts_with('#') && l.contains("system/config-status/")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&acl, kept).unwrap();
    let passwd = bdir.join("confstore.passwd");
    password_file(&passwd, &[("confstore", "store-pw"), ("web", "web-pw"), ("auditor", "audit-pw")]);
    // The shipped settings, minus what the test replaces (listener, files, persistence).
    let shipped = std::fs::read_to_string(ops.join("mosquitto.conf")).unwrap();
    let mut extra: String = shipped
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with('#')
                || l.starts_with("listener")
                || l.starts_with("password_file")
                || l.starts_with("acl_file")
                || l.starts_with("persistence")
                || l.starts_with("autosave")
                || l.starts_with("message_size_limit"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    extra.push_str(&format!("password_file {}\nacl_file {}\n", passwd.display(), acl.display()));
    assert!(extra.contains("allow_anonymous false"));
    Broker::start_with(&bdir, false, &extra)
}

#[test]
fn the_shipped_acl_lets_only_the_store_publish_and_each_service_read_its_own_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = shipped_broker(dir.path(), false);

    let (store, server, mut http) = served(
        dir.path(),
        &["--mqtt-url", &broker.url(), "--mqtt-username", "confstore", "--mqtt-password", "store-pw"],
    );
    let auditor = RawClient::connect(broker.port, "auditor", Some(("auditor", "audit-pw")), &["system/config/#"]);
    let web =
        RawClient::connect(broker.port, "web", Some(("web", "web-pw")), &["system/config/#", "system/config-head"]);
    let epoch_db = put(&mut http, "db", "pool", &json!(3));
    let epoch_web = put(&mut http, "web", "port", &json!(80));
    let snapshot_epochs = |c: &RawClient, topic: &str| -> Vec<u64> {
        c.on(topic)
            .iter()
            .map(|m| {
                let jws: Value = serde_json::from_slice(&m.payload).unwrap();
                let typs = [confstore_core::jws::TYP_SNAPSHOT, confstore_core::jws::TYP_DELTA];
                let (_, doc) = confstore_core::jws::verify_one_of(&jws, &typs, &[verifying_key(&store)]).unwrap();
                doc["changed_epoch"].as_u64().unwrap()
            })
            .collect()
    };
    poll_until("the auditor to see both services' new snapshots", DEADLINE, Duration::from_millis(10), || {
        (snapshot_epochs(&auditor, "system/config/db").contains(&epoch_db)
            && snapshot_epochs(&auditor, "system/config/web").contains(&epoch_web))
        .then_some(())
    });
    poll_until("web to see its own snapshot", DEADLINE, Duration::from_millis(10), || {
        snapshot_epochs(&web, "system/config/web").contains(&epoch_web).then_some(())
    });
    assert!(web.on("system/config/db").is_empty(), "web read db's configuration");
    // web forges a snapshot on its own topic: the broker drops it (the auditor, subscribed
    // to everything, never sees it), then a real write still flows.
    web.publish("system/config/web", b"{\"forged\":true}", true);
    let epoch_after = put(&mut http, "web", "port", &json!(81));
    poll_until("the auditor to see the next real snapshot", DEADLINE, Duration::from_millis(10), || {
        snapshot_epochs(&auditor, "system/config/web").contains(&epoch_after).then_some(())
    });
    assert!(
        auditor.on("system/config/web").iter().all(|m| !m.payload.starts_with(b"{\"forged\"")),
        "the broker delivered a forged message from a service user"
    );
    // A client logged in as web reports its status (on by default): the ACL lets it, and the
    // store's user reads it into the fleet view.
    let rt = runtime();
    let client = rt
        .block_on(
            client_builder(&store, &server, "web", &broker.url())
                .mqtt_credentials("web", "web-pw")
                .instance_id("web-acl-1")
                .start(),
        )
        .unwrap();
    poll_until("the client's report in the fleet view", DEADLINE, Duration::from_millis(20), || {
        let fleet = http.ok("GET", "/api/v1/fleet/web", None).json();
        fleet["instances"].as_array().unwrap().iter().any(|i| i["instance"] == "web-acl-1").then_some(())
    });
    rt.block_on(client.shutdown());
    drop(server);
}

/// A broker whose ACL predates status reports refuses a reporting client's last will at
/// CONNECT: the client connects again without it, takes its stream, and reports nothing.
#[test]
fn a_broker_without_the_status_acl_still_streams_to_a_client_that_would_report() {
    let dir = tempfile::tempdir().unwrap();
    let broker = shipped_broker(dir.path(), true);
    let (store, server, mut http) = served(
        dir.path(),
        &["--mqtt-url", &broker.url(), "--mqtt-username", "confstore", "--mqtt-password", "store-pw"],
    );
    put(&mut http, "web", "port", &json!(80));
    let rt = runtime();
    // MQTT only (no REST to fall back on): it starts from the retained snapshot, so its
    // connection worked.
    let client = rt
        .block_on(
            Client::builder("web")
                .public_key_base64(&public_key(&store))
                .mqtt_url(&broker.url())
                .mqtt_credentials("web", "web-pw")
                .mqtt_client_id("web-old-acl")
                .instance_id("web-old-acl")
                .env(Vec::new())
                .start(),
        )
        .unwrap();
    let epoch = put(&mut http, "web", "port", &json!(81));
    poll_until("the live update over the broker", DEADLINE, Duration::from_millis(10), || {
        (client.config().version().changed_epoch == epoch).then_some(())
    });
    assert_eq!(client.config().value("port"), Some(&json!(81)));
    let fleet = http.ok("GET", "/api/v1/fleet/web", None).json();
    assert!(fleet["instances"].as_array().unwrap().is_empty(), "no report got through: {fleet}");
    rt.block_on(client.shutdown());
    drop(server);
}

#[test]
fn with_the_store_down_the_client_starts_from_its_verified_lkg_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let (store, server, mut http) = served(dir.path(), &["--mqtt-url", &broker.url()]);
    let epoch = put(&mut http, "web", "port", &json!(7070));
    let lkg = dir.path().join("client").join("web.lkg.json");
    std::fs::create_dir_all(lkg.parent().unwrap()).unwrap();
    let rt = runtime();
    let client = rt.block_on(client_builder(&store, &server, "web", &broker.url()).lkg_path(&lkg).start()).unwrap();
    assert_eq!(client.config().version().changed_epoch, epoch);
    rt.block_on(client.shutdown());
    assert!(lkg.is_file(), "the client wrote no LKG copy");
    let mode = std::fs::metadata(&lkg).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    // Everything down: REST and the broker point at closed ports.
    let dead_rest = format!("http://127.0.0.1:{}", free_port());
    let dead_mqtt = format!("mqtt://127.0.0.1:{}", free_port());
    drop(server);
    drop(broker);
    let offline = || {
        Client::builder("web")
            .public_key_base64(&public_key(&store))
            .rest_url(&dead_rest)
            .token(&admin_token(&store))
            .mqtt_url(&dead_mqtt)
            .startup_timeout(Duration::from_millis(500))
            .lkg_path(&lkg)
            .env(Vec::new())
    };
    let from_lkg = rt.block_on(offline().start()).unwrap();
    assert_eq!(from_lkg.config().value("port"), Some(&json!(7070)));
    assert_eq!(from_lkg.config().version().changed_epoch, epoch);
    rt.block_on(from_lkg.shutdown());

    // One flipped byte inside the signed payload: a clear error naming the file, no config.
    let mut bytes = std::fs::read(&lkg).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let at = text.find("\"payload\":\"").unwrap() + 20;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&lkg, &bytes).unwrap();
    let err = rt.block_on(offline().start()).expect_err("a tampered LKG must not start a client");
    let msg = err.to_string();
    assert!(msg.contains("web.lkg.json"), "{msg}");
    // And with no LKG at all: an error, never an empty configuration.
    std::fs::remove_file(&lkg).unwrap();
    let err = rt.block_on(offline().start()).expect_err("no source at all must not start a client");
    assert!(!err.to_string().is_empty());
}

/// A broker restarted without persistence has lost every retained message: the publisher
/// (its session gone too) puts every service's snapshot and the head back, so a new
/// subscriber still starts from the current state without any further write.
#[test]
fn after_the_broker_loses_its_retained_messages_the_publisher_puts_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_with(&dir.path().join("broker"), false, "allow_anonymous true\n");
    let (store, server, mut http) = served(dir.path(), &["--mqtt-url", &broker.url()]);
    let epoch = put(&mut http, "web", "port", &json!(8443));
    let key = verifying_key(&store);
    // The newest snapshot a client has seen on system/config/web (retained copy or live).
    let newest = |c: &RawClient| -> Option<u64> {
        let m = c.on("system/config/web").pop()?;
        let jws: Value = serde_json::from_slice(&m.payload).ok()?;
        let doc = confstore_core::jws::verify(&jws, confstore_core::jws::TYP_SNAPSHOT, &[key]).ok()?;
        doc["changed_epoch"].as_u64()
    };
    let before = RawClient::connect(broker.port, "before", None, &["system/config/web"]);
    poll_until("the retained snapshot before the restart", DEADLINE, Duration::from_millis(10), || {
        (newest(&before) == Some(epoch)).then_some(())
    });
    drop(before);
    broker.restart(false);
    // A subscriber connecting now gets the snapshot once the publisher has put it back
    // (live if it subscribed first, else as the retained copy)...
    let after = RawClient::connect(broker.port, "after", None, &["system/config/web"]);
    poll_until("the publisher to republish the snapshot", DEADLINE, Duration::from_millis(10), || {
        (newest(&after) == Some(epoch)).then_some(())
    });
    // ...and from then on every new subscriber gets it retained, with the signed head.
    let late = RawClient::connect(broker.port, "late", None, &["system/config/web", "system/config-head"]);
    poll_until("the retained snapshot and head after the restart", DEADLINE, Duration::from_millis(10), || {
        (late.on("system/config/web").iter().any(|m| m.retain) && newest(&late) == Some(epoch)).then_some(())
    });
    // The head follows the snapshots in the same batch: a subscriber that came in between
    // gets it live (not flagged retained), so wait for it, then check a newcomer's copy.
    poll_until("the signed head after the restart", DEADLINE, Duration::from_millis(10), || {
        (!late.on("system/config-head").is_empty()).then_some(())
    });
    let newcomer = RawClient::connect(broker.port, "newcomer", None, &["system/config-head"]);
    poll_until("the retained signed head", DEADLINE, Duration::from_millis(10), || {
        newcomer.on("system/config-head").iter().any(|m| m.retain).then_some(())
    });
    drop(server);
}

/// A service large enough that its retained snapshots are signed off the publisher's task
/// (docs/adr/0033: they reach the client after the deltas sent meanwhile), written
/// continuously: the client applies every version in order, and those late snapshots keep
/// its LKG file short instead of counting as stale (docs/format.md §17.5).
#[test]
fn a_large_service_written_continuously_keeps_the_client_lkg_file_short_with_its_late_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let (store, server, mut http) = served(dir.path(), &["--mqtt-url", &broker.url()]);
    let keys = confstore_core::limits::STREAM_RENDER_ELSEWHERE_KEYS_MIN + 50;
    let set: serde_json::Map<String, Value> = (0..keys).map(|i| (format!("k{i:04}"), json!("v".repeat(100)))).collect();
    let first =
        http.ok("PATCH", "/api/v1/services/web/values", Some(&json!({ "set": set }))).json()["epoch"].as_u64().unwrap();
    let lkg = dir.path().join("client").join("web.lkg.json");
    std::fs::create_dir_all(lkg.parent().unwrap()).unwrap();
    let rt = runtime();
    let (builder, applied) = recording(client_builder(&store, &server, "web", &broker.url()).lkg_path(&lkg));
    let client = rt.block_on(builder.start()).unwrap();
    assert!(client.config().version().changed_epoch >= first);
    let deltas_in_file = || -> usize {
        let file: Value = serde_json::from_slice(&std::fs::read(&lkg).unwrap()).unwrap();
        file.get("deltas").and_then(Value::as_array).map_or(0, Vec::len)
    };
    // Each write waits until the client applied it: the snapshots of the windows go out
    // while the next writes' deltas do.
    let writes = 80_u64;
    let mut most = 0;
    let mut last = 0;
    // Stale messages counted before the first write is applied come from the start (the
    // retained snapshot the broker held may trail the version fetched over REST).
    let mut stale_at_start = 0;
    for i in 0..writes {
        last = put(&mut http, "web", "k0000", &json!(i));
        poll_until("the client to apply the write", DEADLINE, Duration::from_millis(1), || {
            (client.config().version().changed_epoch == last).then_some(())
        });
        if i == 0 {
            stale_at_start = client.stats().rejected("stale");
        }
        most = most.max(deltas_in_file());
    }
    assert!(most < 40, "the LKG file held up to {most} deltas over {writes} writes: late snapshots did not compact it");
    // Once the writes stop, the retained snapshot of the newest version empties it.
    poll_until("the LKG file to hold the newest version without deltas", DEADLINE, Duration::from_millis(5), || {
        (deltas_in_file() == 0).then_some(())
    });
    let stats = client.stats();
    // Counted as stale, every late snapshot was 17 of these 80 writes' messages when
    // measured; taken for the LKG file instead, a loaded CI machine showed at most 3 in
    // all (start included), which this bound leaves room for.
    let stale_in_writes = stats.rejected("stale") - stale_at_start;
    assert!(stale_in_writes <= writes / 10, "{stale_in_writes} stale during the writes: {stats:?}");
    assert_eq!(stats.rejected_total(), stats.rejected("duplicate") + stats.rejected("stale"), "{stats:?}");
    // Every version since the start, once each, in order.
    let epochs: Vec<u64> = applied.lock().unwrap().iter().map(|(e, _)| *e).collect();
    let from = epochs[0];
    assert_eq!(epochs, (from..=last).collect::<Vec<_>>());
    assert_eq!(client.config().value("k0000"), Some(&json!(writes - 1)));
    rt.block_on(client.shutdown());
    drop(server);
}

/// The external-broker options for real: `mqtts://` with a private CA and a username and
/// password; and a CA file that holds no certificate stops `serve` at start with a clear
/// error instead of a reconnect loop.
#[test]
fn serve_publishes_over_tls_with_a_private_ca_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let ca = common::mqtt::certs::make_certificates(&bdir);
    let passwd = bdir.join("passwd");
    password_file(&passwd, &[("confstore", "s3cret")]);
    let tls_port = free_port();
    let b = bdir.display();
    let extra = format!(
        "allow_anonymous false\npassword_file {}\nlistener {tls_port} 127.0.0.1\n\
         cafile {b}/ca.pem\ncertfile {b}/server.pem\nkeyfile {b}/server.key\n",
        passwd.display()
    );
    let broker = Broker::start_with(&bdir, false, &extra);
    let url = format!("mqtts://localhost:{tls_port}");
    let ca_arg = ca.display().to_string();
    let (store, server, mut http) = served(
        dir.path(),
        &["--mqtt-url", &url, "--mqtt-ca-file", &ca_arg, "--mqtt-username", "confstore", "--mqtt-password", "s3cret"],
    );
    // The reader uses the plain listener: what crosses TLS is the publisher's side.
    let tap = RawClient::connect(broker.port, "tap", Some(("confstore", "s3cret")), &["system/config/web"]);
    let epoch = put(&mut http, "web", "port", &json!(443));
    let key = verifying_key(&store);
    poll_until("the snapshot published over TLS", DEADLINE, Duration::from_millis(10), || {
        tap.on("system/config/web")
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
            .filter_map(|j| confstore_core::jws::verify(&j, confstore_core::jws::TYP_SNAPSHOT, &[key]).ok())
            .any(|d| d["changed_epoch"].as_u64() == Some(epoch))
            .then_some(())
    });
    drop(server);

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let run = store.run(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--mqtt-url",
        &url,
        "--mqtt-ca-file",
        &empty.display().to_string(),
    ]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("empty.pem") && run.stderr.contains("no PEM certificate"), "{}", run.stderr);
}

#[test]
fn zero_flag_serve_works_when_port_1883_is_taken_and_clients_need_only_the_url_and_a_token() {
    // Someone holds 1883 (on many machines a Mosquitto does; if not, this test does).
    let _held = std::net::TcpListener::bind("127.0.0.1:1883").ok();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(dir.path());
    store.init();
    // No --mqtt-url, no --mqtt-listen: the embedded broker at its default address. (The
    // client id keeps the test helper from adding --no-mqtt.)
    let mut server = Server::start(&store, &["--mqtt-client-id", "zero-flag"], &dir.path().join("serve.log"));
    server.wait_ready();
    let mut http = server.admin();
    http.ok("POST", "/api/v1/services", Some(&json!({ "name": "web" })));
    let log = server.log_text();
    assert!(log.contains("port 1883 is taken"), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "a clean start logs no error:\n{log}");

    // REST tells clients where the stream is and how to log in.
    let advert = http.ok("GET", "/api/v1/stream", None).json();
    let url = str_of(&advert, "mqtt_url").to_owned();
    assert!(url.starts_with("mqtt://127.0.0.1:") && !url.ends_with(":1883"), "{advert}");
    assert_eq!((advert["embedded"].as_bool(), advert["login"].as_str()), (Some(true), Some("token")), "{advert}");
    assert_eq!(Http::new(server.addr).get("/api/v1/stream").unwrap().status, 401);

    // A client given only the server's URL and a token follows the configuration live.
    let token = str_of(
        &store.json(&["token", "create", "--role", "config.read", "--service", "web", "--name", "web", "--json"]),
        "token",
    )
    .to_owned();
    let rt = runtime();
    let client = Client::builder("web")
        .public_key_base64(&public_key(&store))
        .rest_url(&format!("http://{}", server.addr))
        .token(&token)
        .env(Vec::new());
    let client = rt.block_on(client.start()).unwrap();
    let epoch = put(&mut http, "web", "port", &json!(8080));
    poll_until("the client to apply the write live", DEADLINE, Duration::from_millis(5), || {
        (client.config().version().changed_epoch == epoch).then_some(())
    });
    assert_eq!(client.stats().gaps_filled, 0, "the write came over MQTT");
    rt.block_on(client.shutdown());
    drop(server);
}
