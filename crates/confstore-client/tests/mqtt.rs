//! Live updates through a real Mosquitto (started by each test on a free port): order,
//! attacks, gaps after a broker restart, persistent sessions, large snapshots, stale
//! retained messages.

mod common;

use std::time::Duration;

use common::testutil::{FakeRest, Signer, chain};
use common::{Broker, Publisher, applied_log, wait_until};
use confstore_client::{Client, ClientBuilder, ClientError};
use serde_json::json;

fn builder(broker: &Broker, client_id: &str) -> ClientBuilder {
    Client::builder("web")
        .public_key_base64(&Signer::new(1).public_base64())
        .mqtt_url(&broker.url())
        .mqtt_client_id(client_id)
        .env(Vec::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_apply_in_order_and_attacks_are_counted() {
    let broker = Broker::start();
    let mut store = Publisher::connect(&broker, "store").await;
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 5);
    store.snapshot("web", &versions[0]).await;

    let (log, on_update) = applied_log();
    let client = builder(&broker, "web-live").on_update(on_update).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 1, "started from the retained message");
    for v in &versions[1..3] {
        store.snapshot("web", v).await;
    }
    wait_until("versions 2 and 3", || log.lock().unwrap().len() == 3).await;

    let mut attacker = Publisher::connect(&broker, "attacker").await;
    let mut sent = 0;
    for v in &versions[..3] {
        attacker.snapshot("web", v).await; // replays: stale, stale, duplicate
        sent += 1;
    }
    attacker.snapshot("web", &signer.snapshot("api", 1, 4, 3, json!({}))).await; // another service's
    attacker.snapshot("web", &Signer::new(9).snapshot("web", 1, 4, 3, json!({}))).await; // unknown key
    sent += 2;
    let bytes = versions[3].to_string().into_bytes();
    for i in (0..bytes.len()).step_by(bytes.len() / 20) {
        let mut bad = bytes.clone();
        bad[i] ^= 1 << (i % 8);
        attacker.publish("system/config/web", bad, false).await;
        sent += 1;
    }
    wait_until("every attack counted", || client.stats().rejected_total() == sent).await;
    let stats = client.stats();
    assert_eq!((stats.rejected("stale"), stats.rejected("duplicate"), stats.rejected("wrong_service")), (2, 1, 1));

    for v in &versions[3..] {
        store.snapshot("web", v).await;
    }
    wait_until("versions 4 and 5", || log.lock().unwrap().len() == 5).await;
    assert_eq!(*log.lock().unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(client.config().value("v"), Some(&json!(5)));
    let mut rx = client.subscribe();
    assert_eq!(rx.borrow_and_update().version().changed_epoch, 5);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_the_client_resubscribes_and_fills_the_gap() {
    let mut broker = Broker::start();
    let rest = FakeRest::start().await;
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 4);
    versions.iter().for_each(|v| rest.keep(v));
    rest.publish(&versions[0]);
    let mut store = Publisher::connect(&broker, "store").await;
    store.snapshot("web", &versions[0]).await;

    let (log, on_update) = applied_log();
    let client = builder(&broker, "web-restart").rest_url(&rest.url).on_update(on_update).start().await.unwrap();
    store.snapshot("web", &versions[1]).await;
    wait_until("version 2", || log.lock().unwrap().len() == 2).await;

    // The broker loses retained messages and sessions; version 3 is lost with it.
    broker.restart();
    wait_until("the client's reconnect", || client.stats().reconnects >= 1).await;
    store.snapshot("web", &versions[3]).await;
    wait_until("versions 3 and 4", || log.lock().unwrap().len() == 4).await;
    assert_eq!(*log.lock().unwrap(), [1, 2, 3, 4]);
    let stats = client.stats();
    assert_eq!((stats.gaps_filled, stats.resyncs), (1, 0));
    assert!(rest.requests().iter().any(|r| r.ends_with("?epoch=3")));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_client_id_gets_what_was_published_while_it_was_down() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 3);
    let mut store = Publisher::connect(&broker, "store").await;
    store.snapshot("web", &versions[0]).await;
    let first = builder(&broker, "web-stable").lkg_path(&lkg).start().await.unwrap();
    first.shutdown().await;

    for v in &versions[1..] {
        store.snapshot("web", v).await;
    }
    let (log, on_update) = applied_log();
    let client = builder(&broker, "web-stable").lkg_path(&lkg).on_update(on_update).start().await.unwrap();
    wait_until("versions 2 and 3", || log.lock().unwrap().len() == 2).await;
    assert_eq!(*log.lock().unwrap(), [2, 3], "queued in the session, no gap, no resync");
    assert_eq!(client.stats().resyncs, 0);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_retained_message_does_not_take_the_client_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 4);
    let mut store = Publisher::connect(&broker, "store").await;
    store.snapshot("web", &versions[2]).await;
    builder(&broker, "web-stale-1").lkg_path(&lkg).start().await.unwrap().shutdown().await;

    // An attacker with publish rights pins the retained message to version 1.
    Publisher::connect(&broker, "attacker").await.snapshot("web", &versions[0]).await;
    let (log, on_update) = applied_log();
    let client = builder(&broker, "web-stale-2").lkg_path(&lkg).on_update(on_update).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 3);
    assert_eq!(client.stats().rejected("stale"), 1);
    store.snapshot("web", &versions[3]).await;
    wait_until("version 4", || log.lock().unwrap().len() == 1).await;
    assert_eq!(*log.lock().unwrap(), [4]);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_mebibyte_snapshot_arrives() {
    let broker = Broker::start();
    let signer = Signer::new(1);
    let big = "x".repeat(1536 * 1024);
    let jws = signer.snapshot("web", 1, 1, 0, json!({ "blob": big }));
    assert!(jws.to_string().len() > 2 * 1024 * 1024);
    Publisher::connect(&broker, "store").await.snapshot("web", &jws).await;
    let client = builder(&broker, "web-big").start().await.unwrap();
    assert_eq!(client.config().value("blob").and_then(|v| v.as_str()).map(str::len), Some(big.len()));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retained_message_start_fails_after_the_timeout() {
    let broker = Broker::start();
    let err = builder(&broker, "web-empty").startup_timeout(Duration::from_millis(300)).start().await.unwrap_err();
    assert!(matches!(&err, ClientError::NoVerifiedConfig { reasons, .. } if reasons[0].0 == "mqtt"), "{err}");
    assert!(err.to_string().contains("no retained snapshot within 300ms"), "{err}");

    let port = broker.port;
    drop(broker);
    let err = Client::builder("web")
        .public_key_base64(&Signer::new(1).public_base64())
        .mqtt_url(&format!("mqtt://127.0.0.1:{port}"))
        .startup_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broker:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_ca_file() {
    let broker = Broker::start_tls();
    let (tls_port, ca) = broker.tls.clone().unwrap();
    let signer = Signer::new(1);
    Publisher::connect(&broker, "store")
        .await
        .snapshot("web", &signer.snapshot("web", 1, 1, 0, json!({"tls": true})))
        .await;
    let tls = || {
        Client::builder("web")
            .public_key_base64(&signer.public_base64())
            .mqtt_url(&format!("mqtts://localhost:{tls_port}"))
            .startup_timeout(Duration::from_secs(2))
            .env(Vec::new())
    };
    let client = tls().mqtt_ca_file(&ca).start().await.unwrap();
    assert_eq!(client.config().value("tls"), Some(&json!(true)));
    client.shutdown().await;

    // The webpki roots do not know the test CA: no connection, no configuration.
    let err = tls().startup_timeout(Duration::from_millis(500)).start().await.unwrap_err();
    assert!(err.to_string().contains("broker:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_lost_with_the_broker_state_are_caught_up_over_rest() {
    let mut broker = Broker::start();
    let rest = FakeRest::start().await;
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 3);
    versions.iter().for_each(|v| rest.keep(v));
    rest.publish(&versions[0]);
    Publisher::connect(&broker, "store").await.snapshot("web", &versions[0]).await;
    let (log, on_update) = applied_log();
    let client = builder(&broker, "web-lost").rest_url(&rest.url).on_update(on_update).start().await.unwrap();

    // A first connection without a session asks REST once: nothing new.
    wait_until("the first catch-up", || client.stats().catch_ups == 1).await;
    // Versions 2 and 3 went to the broker, which restarts without persistence before the
    // client got them: no queued message, no retained message, no further write.
    rest.publish(&versions[2]);
    broker.restart();
    wait_until("the catch-up", || log.lock().unwrap().len() == 3).await;
    assert_eq!(*log.lock().unwrap(), [1, 2, 3]);
    let stats = client.stats();
    assert_eq!((stats.catch_ups, stats.reconnects, stats.gaps_filled, stats.resyncs), (2, 1, 1, 0));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_from_the_lkg_file_catches_up_once_rest_answers() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let rest = FakeRest::start().await;
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 3);
    versions.iter().for_each(|v| rest.keep(v));
    rest.publish(&versions[0]);
    let with_rest = || builder(&broker, "web-lkg").rest_url(&rest.url).lkg_path(&lkg);
    with_rest().start().await.unwrap().shutdown().await;

    rest.fail_with(Some(503));
    let (log, on_update) = applied_log();
    let client = with_rest().startup_timeout(Duration::from_millis(200)).on_update(on_update).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 1, "from the lkg file");
    rest.publish(&versions[2]);
    rest.fail_with(None);
    wait_until("the catch-up", || log.lock().unwrap().len() == 2).await;
    assert_eq!(*log.lock().unwrap(), [2, 3]);
    client.shutdown().await;
}
