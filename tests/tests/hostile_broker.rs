//! A hostile local user against the live stream's broker (docs/operations.md, "Threat
//! model"), with the real parts: `confstore serve` as a process, its embedded broker,
//! Mosquitto's own command-line clients (`mosquitto_pub`, `mosquitto_sub`) as the attacker,
//! a raw MQTT client as an honest subscriber, and the real client library.
//!
//! - The embedded broker refuses anonymous clients, unknown tokens, any client's publish
//!   (deleting or replacing a retained snapshot included), a scoped token's subscription to
//!   another service or a wildcard over services, and a takeover of the publisher's client
//!   id; services still start from the retained snapshot with only their token.
//! - Retained state heals itself: on an open external broker (Mosquitto without an ACL) a
//!   deleted or replaced retained snapshot is put back within 5 s, without a new write.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::mqtt::{Broker, RawClient, put_value, serve_with_stream, store_public_key, store_verifying_key};
use common::*;
use confstore_client::{Client, Source};
use serde_json::json;

/// The bar: a deleted or replaced retained snapshot is back within this.
const HEAL_DEADLINE: Duration = Duration::from_secs(5);

/// Runs a mosquitto command-line client with a deadline; (success, stdout + stderr).
fn mosquitto_tool(tool: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(tool);
    cmd.args(args);
    let run = run_with_deadline(cmd, None, Duration::from_secs(20));
    (run.status.success(), format!("{}{}", run.stdout, run.stderr))
}

/// `mosquitto_sub` for one retained message on `topic` (or none within 2 s).
fn sub_once(port: u16, auth: Option<(&str, &str)>, topic: &str, extra: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-t", topic, "-C", "1", "-W", "2", "-q", "1"];
    if let Some((u, p)) = auth {
        args.extend(["-u", u, "-P", p]);
    }
    args.extend(extra);
    mosquitto_tool("mosquitto_sub", &args)
}

/// `mosquitto_pub` (QoS 1, so it waits for the broker's answer).
fn publish(port: u16, auth: Option<(&str, &str)>, extra: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-q", "1"];
    if let Some((u, p)) = auth {
        args.extend(["-u", u, "-P", p]);
    }
    args.extend(extra);
    mosquitto_tool("mosquitto_pub", &args)
}

/// A token created with the CLI: (secret, json).
fn token(store: &Store, role: &str, service: Option<&str>, name: &str) -> String {
    let mut args = vec!["token", "create", "--role", role, "--name", name, "--json"];
    if let Some(s) = service {
        args.extend(["--service", s]);
    }
    str_of(&store.json(&args), "token").to_owned()
}

/// The signed snapshot document in `payload` if it is one of `service` signed by the
/// store's key.
fn signed_snapshot(store: &Store, service: &str, payload: &[u8]) -> Option<serde_json::Value> {
    let jws = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    let key = store_verifying_key(store);
    confstore_core::jws::verify(&jws, confstore_core::jws::TYP_SNAPSHOT, &[key])
        .ok()
        .filter(|doc| doc["service"] == json!(service))
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = Http::new(server.addr).get("/metrics").expect("metrics").text();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_embedded_broker_refuses_every_attack_and_services_still_start_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, server, mut http) = serve_with_stream(dir.path(), &["--mqtt-listen", &listen], &["stt", "web"]);
    let store_id = str_of(&store.head(), "store_id").to_owned();
    let publisher_id = format!("confstore-{}", &store_id[..16]);
    let epoch = put_value(&mut http, "stt", "threshold", &json!(0.5));
    put_value(&mut http, "web", "port", &json!(8080));
    let admin = admin_token(&store);
    let scoped = token(&store, "config.read", Some("stt"), "stt-reader");

    // An honest reader sees the signed snapshot of stt.
    let honest = RawClient::connect(port, "honest", Some(("stt", &scoped)), &["system/config/stt"]);
    let retained =
        poll_until("the snapshot of stt's write", Duration::from_secs(20), Duration::from_millis(10), || {
            honest.on("system/config/stt").into_iter().find(|m| {
                signed_snapshot(&store, "stt", &m.payload).is_some_and(|d| d["changed_epoch"] == json!(epoch))
            })
        });

    // Anonymous, and an unknown token: refused at CONNECT.
    let (ok, out) = sub_once(port, None, "system/config-head", &[]);
    assert!(!ok && out.contains("not authorised"), "anonymous: {out}");
    let (ok, out) =
        sub_once(port, Some(("x", "cst_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")), "#", &[]);
    assert!(!ok && out.to_lowercase().contains("refused"), "unknown token: {out}");

    // A scoped token reads its own service, the head and health, nothing else.
    let (ok, out) = sub_once(port, Some(("stt", &scoped)), "system/config/stt", &[]);
    assert!(ok && out.contains("payload"), "own snapshot: {out}");
    for other in ["system/config/web", "system/config/+", "system/config/#", "#", "system/config-events/web"] {
        let (_, out) = sub_once(port, Some(("stt", &scoped)), other, &[]);
        assert!(out.contains("denied") && !out.contains("payload"), "{other}: {out}");
    }

    // Nobody but the publisher publishes: not even an admin token may delete or replace a
    // retained snapshot, or publish anywhere.
    let connects_before = metric(&server, "confstore_mqtt_connects_total");
    for attack in [
        vec!["-t", "system/config/stt", "-r", "-n"],
        vec!["-t", "system/config/stt", "-r", "-m", r#"{"payload":"e30","protected":"e30","signature":"AA"}"#],
        vec!["-t", "system/config-head", "-r", "-m", "forged"],
        vec!["-t", "elsewhere", "-m", "x"],
    ] {
        let (ok, out) = publish(port, Some(("admin", &admin)), &attack);
        assert!(!ok, "the publish {attack:?} went through: {out}");
    }
    // The retained snapshot is still the signed one, byte for byte.
    let late = RawClient::connect(port, "late", Some(("stt", &scoped)), &["system/config/stt"]);
    let now = poll_until(
        "the retained snapshot after the attacks",
        Duration::from_secs(20),
        Duration::from_millis(10),
        || late.on("system/config/stt").last().cloned(),
    );
    assert_eq!(now.payload, retained.payload, "the retained snapshot changed");

    // The publisher's client id is reserved: a valid token cannot take its session over.
    let (ok, out) = sub_once(port, Some(("admin", &admin)), "system/config-head", &["-i", &publisher_id, "-c"]);
    assert!(!ok && out.contains("not authorised"), "takeover: {out}");
    assert_eq!(metric(&server, "confstore_mqtt_connects_total"), connects_before, "the publisher was disconnected");
    let log = server.log_text();
    assert!(log.contains("MQTT publish refused") && log.contains("MQTT client refused"), "the refusals are logged");
    assert!(metric(&server, "confstore_connections_closed_total{listener=\"mqtt\",reason=\"acl_denied\"}") >= 4.0);

    // A service with only its token (no REST) starts from the retained snapshot.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = Client::builder("stt")
        .public_key_base64(&store_public_key(&store))
        .token(&scoped)
        .mqtt_url(&format!("mqtt://{listen}"))
        .mqtt_client_id("stt-instance-1")
        .env(Vec::new());
    let client = rt.block_on(client.start()).expect("the client starts from the embedded broker");
    assert_eq!(client.config().version().changed_epoch, epoch);
    assert_eq!(client.config().source("threshold"), Some(Source::Service));
    rt.block_on(client.shutdown());

    // The events topic: nothing is made for it until someone subscribes (nobody could
    // receive it); an auditor's subscription switches it on, and the next write's event
    // reaches the auditor, signed.
    assert_eq!(metric(&server, "confstore_mqtt_published_total{kind=\"event\"}"), 0.0, "events before any subscriber");
    let audit = token(&store, "audit.read", None, "auditor");
    let auditor = RawClient::connect(port, "auditor", Some(("auditor", &audit)), &["system/config-events/stt"]);
    let audited = put_value(&mut http, "stt", "threshold", &json!(0.75));
    let event =
        poll_until("the auditor to receive the event", Duration::from_secs(20), Duration::from_millis(10), || {
            auditor.on("system/config-events/stt").into_iter().find_map(|m| {
                let jws: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
                let doc =
                    confstore_core::jws::verify(&jws, confstore_core::jws::TYP_EVENT, &[store_verifying_key(&store)])
                        .ok()?;
                (doc["epoch"] == json!(audited)).then_some(doc)
            })
        });
    assert_eq!(event["service"], json!("stt"));
    drop(server);
}

#[test]
fn a_deleted_or_replaced_retained_snapshot_heals_on_an_open_broker() {
    let dir = tempfile::tempdir().unwrap();
    // Mosquitto with anonymous access and no ACL: the attacker can publish anything.
    let broker = Broker::start(&dir.path().join("broker"));
    let (store, server, mut http) = serve_with_stream(dir.path(), &["--mqtt-url", &broker.url()], &["stt"]);
    let epoch = put_value(&mut http, "stt", "threshold", &json!(0.5));
    let watcher = RawClient::connect(broker.port, "watcher", None, &["system/config/stt"]);
    // The snapshot of that write (an earlier one may be retained still when the watcher
    // subscribes).
    let good = poll_until("the retained snapshot", Duration::from_secs(20), Duration::from_millis(10), || {
        watcher
            .on("system/config/stt")
            .into_iter()
            .find(|m| signed_snapshot(&store, "stt", &m.payload).is_some_and(|d| d["changed_epoch"] == json!(epoch)))
    });
    let attacks: [&[&str]; 2] = [
        &["-t", "system/config/stt", "-r", "-n"],
        &["-t", "system/config/stt", "-r", "-m", r#"{"payload":"e30","protected":"e30","signature":"AA"}"#],
    ];
    for attack in attacks {
        let (ok, out) = publish(broker.port, None, attack);
        assert!(ok, "the open broker took the attack: {out}");
        let started = Instant::now();
        // A new subscriber's retained copy is the signed snapshot again, without a write.
        poll_until("the retained snapshot to heal", HEAL_DEADLINE, Duration::from_millis(20), || {
            let (_, out) = sub_once(broker.port, None, "system/config/stt", &[]);
            (out.trim_end().as_bytes() == good.payload.as_slice()).then_some(())
        });
        let took = started.elapsed();
        eprintln!("{attack:?}: healed in {took:?}");
        assert!(took < HEAL_DEADLINE);
    }
    assert!(server.log_text().contains("putting the signed one back"));
}
