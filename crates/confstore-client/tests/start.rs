//! Start-up through the public API against a fake REST server: REST, then the LKG file;
//! never backwards, never silently empty; env precedence and typed access.

mod common;

use std::path::Path;
use std::time::Duration;

use common::testutil::{FakeRest, STORE, Signer, chain};
use common::{applied_log, wait_until};
use confstore_client::{Client, ClientBuilder, ClientError, Source};
use serde_json::json;

fn builder(rest: &FakeRest, lkg: &Path) -> ClientBuilder {
    Client::builder("web")
        .public_key_base64(&Signer::new(1).public_base64())
        .rest_url(&rest.url)
        .lkg_path(lkg)
        .env(Vec::new())
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Web {
    port: u16,
    region: String,
}

#[tokio::test]
async fn rest_first_with_env_precedence_typed_access_and_an_lkg_file() {
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let rest = FakeRest::start().await;
    rest.require_token("s3cret");
    let signer = Signer::new(1);
    rest.publish(&signer.snapshot("web", 1, 4, 3, json!({"port": 8080, "region": "eu-west", "max.conns": 10})));
    let (log, on_update) = applied_log();
    let env = [("WEB__MAX_CONNS", "64"), ("WEB__DEBUG", "true"), ("API__PORT", "1")];
    let client = builder(&rest, &lkg)
        .token("s3cret")
        .store_id(STORE)
        .env(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .on_update(on_update)
        .start()
        .await
        .unwrap();

    let config = client.config();
    assert_eq!(config.version().changed_epoch, 4);
    assert_eq!(config.value("port"), Some(&json!(8080)));
    assert_eq!(config.value("max.conns"), Some(&json!(64)));
    assert_eq!(config.source("max.conns"), Some(Source::Env));
    assert_eq!(config.value("debug"), Some(&json!(true)));
    assert_eq!(config.source("port"), Some(Source::Service));
    assert_eq!(config.get_key::<String>("region").unwrap(), "eu-west");
    let web = client.get::<Web>().unwrap();
    assert_eq!(*web, Web { port: 8080, region: "eu-west".into() });
    assert!(std::sync::Arc::ptr_eq(&web, &client.get::<Web>().unwrap()));
    assert_eq!(*log.lock().unwrap(), [4], "on_update saw the first version");
    assert!(lkg.exists(), "the applied version is persisted");
    assert_eq!(client.stats().applied, 1);
    assert_eq!(client.subscribe().borrow().version().changed_epoch, 4);
    client.shutdown().await;

    // Without the token: 401, and the message says so.
    let err = builder(&rest, &dir.path().join("none.json")).start().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

#[tokio::test]
async fn the_lkg_file_carries_a_restart_when_rest_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let rest = FakeRest::start().await;
    rest.publish(&Signer::new(1).snapshot("web", 1, 4, 3, json!({"port": 1})));
    builder(&rest, &lkg).start().await.unwrap().shutdown().await;

    rest.fail_with(Some(503));
    let (log, on_update) = applied_log();
    let client = builder(&rest, &lkg).on_update(on_update).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 4);
    assert_eq!(client.config().value("port"), Some(&json!(1)));
    assert!(log.lock().unwrap().is_empty(), "the resumed version is not applied again");
}

#[tokio::test]
async fn a_newer_lkg_version_is_kept_and_an_older_one_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 6);
    let rest = FakeRest::start().await;
    versions.iter().for_each(|v| rest.keep(v));

    rest.publish(&versions[4]);
    builder(&rest, &lkg).start().await.unwrap();
    // REST goes back to version 3 (a stale replica): the client keeps 5.
    rest.publish(&versions[2]);
    let (log, on_update) = applied_log();
    let client = builder(&rest, &lkg).on_update(on_update).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 5);
    assert_eq!(client.stats().rejected("stale"), 1);
    assert!(log.lock().unwrap().is_empty());

    // REST moves on to 6, the next version after the held 5; from an older file, the client
    // walks through every version in between.
    rest.publish(&versions[5]);
    let (log, on_update) = applied_log();
    let client = builder(&rest, &lkg).on_update(on_update).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 6);
    assert_eq!(*log.lock().unwrap(), [6]);

    let old = dir.path().join("old.lkg.json");
    rest.publish(&versions[1]);
    builder(&rest, &old).start().await.unwrap();
    rest.publish(&versions[5]);
    let (log, on_update) = applied_log();
    let client = builder(&rest, &old).on_update(on_update).start().await.unwrap();
    assert_eq!(*log.lock().unwrap(), [3, 4, 5, 6]);
    assert_eq!(client.stats().gaps_filled, 3);
}

#[tokio::test]
async fn no_source_means_an_error_that_says_why_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let rest = FakeRest::start().await;
    rest.fail_with(Some(503));
    let err = builder(&rest, &lkg).start().await.unwrap_err();
    let ClientError::NoVerifiedConfig { reasons, .. } = &err else { panic!("{err}") };
    let sources: Vec<&str> = reasons.iter().map(|(s, _)| *s).collect();
    assert_eq!(sources, ["rest", "lkg"]);
    let text = err.to_string();
    assert!(text.contains("HTTP 503") && text.contains("does not exist yet"), "{text}");

    // A forged snapshot is no configuration either.
    rest.fail_with(None);
    rest.publish(&Signer::new(9).snapshot("web", 1, 1, 0, json!({})));
    let err = builder(&rest, &lkg).start().await.unwrap_err();
    assert!(err.to_string().contains("signed by key"), "{err}");
    assert!(!lkg.exists());
}

#[tokio::test]
async fn a_tampered_lkg_file_is_an_error_alone_and_ignored_beside_rest() {
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("web.lkg.json");
    let rest = FakeRest::start().await;
    rest.publish(&Signer::new(1).snapshot("web", 1, 4, 3, json!({"port": 1})));
    builder(&rest, &lkg).start().await.unwrap();
    let mut bytes = std::fs::read(&lkg).unwrap();
    let at = String::from_utf8_lossy(&bytes).find("\"signature\":\"").unwrap() + 20;
    bytes[at] ^= 0x02;
    std::fs::write(&lkg, &bytes).unwrap();

    let only_lkg = || Client::builder("web").public_key_base64(&Signer::new(1).public_base64()).lkg_path(&lkg);
    let err = only_lkg().start().await.unwrap_err();
    assert!(matches!(&err, ClientError::Lkg { path, .. } if path == &lkg), "{err}");
    assert!(err.to_string().contains(&lkg.display().to_string()), "{err}");

    let client = builder(&rest, &lkg).start().await.unwrap();
    assert_eq!(client.config().version().changed_epoch, 4);
    assert_eq!(client.stats().lkg_rejected, 1);
    // REST's version rewrote the file: it loads again.
    assert_eq!(only_lkg().start().await.unwrap().config().version().changed_epoch, 4);
}

#[tokio::test]
async fn from_vars_starts_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let rest = FakeRest::start().await;
    rest.publish(&Signer::new(1).snapshot("web", 1, 2, 1, json!({"port": 1})));
    let lkg = dir.path().join("web.lkg.json");
    let vars = [
        ("CONFSTORE_SERVICE", "web"),
        ("CONFSTORE_URL", rest.url.as_str()),
        ("CONFIG_SIGNATURE_PUBLIC_KEY", &Signer::new(1).public_base64()),
        ("CONFSTORE_LKG_PATH", lkg.to_str().unwrap()),
        ("WEB__PORT", "2"),
    ];
    let client =
        confstore_client::ClientBuilder::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
            .unwrap()
            .startup_timeout(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
    assert_eq!(client.config().value("port"), Some(&json!(2)));
    assert_eq!(client.config().source("port"), Some(Source::Env));
    wait_until("the lkg file", || lkg.exists()).await;
}
