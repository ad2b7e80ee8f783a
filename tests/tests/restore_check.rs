//! `confstore restore-check` after a restore: integrity, the whole chain, and the head
//! compared with the last signed head the live stream published. A database that is an
//! older copy (it verifies: a chain cannot show its missing tail) is caught and the exact
//! missing seq range named, from a saved head file, from the head file the server keeps
//! (`serve --head-file`) and from the broker's retained message;
//! the complete database passes; a forged head file is refused.

mod common;

use std::time::Duration;

use common::mqtt::{Broker, RawClient, put_value, serve_with_stream, store_verifying_key};
use common::*;
use serde_json::{Value, json};

#[test]
fn an_older_copy_is_caught_with_the_missing_range_and_the_complete_one_passes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    // The server also keeps the signed head beside (what would be) the Litestream replica.
    let replica = dir.path().join("replica");
    std::fs::create_dir_all(&replica).unwrap();
    let kept = replica.join("head.jws");
    let (store, server, mut http) =
        serve_with_stream(dir.path(), &["--mqtt-url", &broker.url(), "--head-file", kept.to_str().unwrap()], &["web"]);
    for i in 0..3 {
        put_value(&mut http, "web", "k", &json!(i));
    }
    let older_epoch = store.head()["epoch"].as_u64().unwrap();
    for i in 3..6 {
        put_value(&mut http, "web", "k", &json!(i));
    }
    let head = store.head();
    let head_seq = head["seq"].as_u64().unwrap();
    // The signed head as a subscriber saw it, once it names the last event.
    let tap = RawClient::connect(broker.port, "tap", None, &["system/config-head"]);
    let key = store_verifying_key(&store);
    let head_jws =
        poll_until("the signed head of the last event", Duration::from_secs(30), Duration::from_millis(10), || {
            tap.on("system/config-head").into_iter().rev().find_map(|m| {
                let jws: Value = serde_json::from_slice(&m.payload).ok()?;
                let doc = confstore_core::jws::verify(&jws, confstore_core::jws::TYP_HEAD, &[key]).ok()?;
                (doc["seq"].as_u64() == Some(head_seq)).then(|| String::from_utf8(m.payload.clone()).unwrap())
            })
        });
    let head_file = dir.path().join("head.jws");
    std::fs::write(&head_file, &head_jws).unwrap();
    poll_until(
        "the server's head file to reach the last event",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || {
            let text = std::fs::read_to_string(&kept).ok()?;
            let jws: Value = serde_json::from_str(&text).ok()?;
            let doc = confstore_core::jws::verify(&jws, confstore_core::jws::TYP_HEAD, &[key]).ok()?;
            (doc["seq"].as_u64() == Some(head_seq)).then_some(())
        },
    );

    // An older copy of the database: the verified log up to an earlier epoch.
    let older = dir.path().join("older");
    store.ok(&["replay", "--to-epoch", &older_epoch.to_string(), "--out", older.to_str().unwrap()]);
    let older_store = store.with_data_dir(&older);
    let older_seq = older_store.head()["seq"].as_u64().unwrap();
    older_store.ok(&["verify"]);
    for source in [
        vec!["--head", head_file.to_str().unwrap()],
        vec!["--head", kept.to_str().unwrap()],
        vec!["--mqtt-url", &broker.url()],
    ] {
        let mut args = vec!["restore-check", "--json"];
        args.extend(source.iter().copied());
        let run = older_store.run(&args);
        assert!(!run.status.success(), "{}", run.stdout);
        let out = run.json();
        assert_eq!(out["ok"], json!(false));
        assert_eq!(out["integrity"], json!("ok"));
        assert_eq!(out["chain"], json!("ok"));
        assert_eq!(out["compared_with"][0]["verdict"], json!("behind"), "{out}");
        assert_eq!(
            out["missing"],
            json!({"from_seq": older_seq + 1, "to_seq": head_seq, "events": head_seq - older_seq})
        );
    }
    // Text output names the range too.
    let run = older_store.run(&["restore-check", "--head", head_file.to_str().unwrap()]);
    assert!(run.stderr.contains(&format!("events {}..={head_seq} are missing", older_seq + 1)), "{}", run.stderr);

    // The complete database passes against both.
    drop(server);
    let out =
        store.json(&["restore-check", "--json", "--head", head_file.to_str().unwrap(), "--mqtt-url", &broker.url()]);
    assert_eq!(out["ok"], json!(true), "{out}");
    assert_eq!(out["missing"], Value::Null);

    // A head signed by another key is refused, not trusted.
    let forged = confstore_core::jws::sign(
        &json!({"store_id": head["store_id"], "generation": 1, "seq": head_seq + 100, "epoch": 1, "hash": "00", "time_ms": 0}),
        confstore_core::jws::TYP_HEAD,
        &confstore_core::SigningKey::from_seed(&[7; 32]),
    );
    let forged_file = dir.path().join("forged.jws");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let run = store.run(&["restore-check", "--head", forged_file.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("forged.jws") && run.stderr.contains("signed by key"), "{}", run.stderr);
}

/// A restore SQLite cannot read through (a damaged page) is a verdict, not a crash of the
/// check: `restore-check --json` says `ok: false`, `chain: unreadable` and why, and exits 1;
/// `verify` fails too. (Litestream produced one in a loaded run of the #752 drill.)
#[test]
fn a_damaged_database_is_reported_as_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(&dir.path().join("live"));
    store.init();
    store.ok(&["service", "add", "web"]);
    for round in 0..4 {
        let mut args = vec!["set".to_owned(), "web".to_owned()];
        args.extend((0..100).map(|i| format!("key{i}=\"{round}-{}\"", "v".repeat(300))));
        store.ok(&args);
    }
    // Overwrite a page in the middle of the events table (SQLite's pages are 4 KiB) with
    // garbage, after a checkpoint put every page in the database file.
    let db = store.db();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 8, "a database of {pages} pages");
    for page in [pages / 2, pages / 2 + 1] {
        bytes[page * 4096..(page + 1) * 4096].fill(0xA5);
    }
    std::fs::write(&db, &bytes).unwrap();
    let run = store.run(&["restore-check", "--json"]);
    assert!(!run.status.success(), "{run}");
    let v = run.json();
    assert_eq!(v["ok"], json!(false), "{v}");
    eprintln!("restore-check on a damaged file: {v}");
    let damaged = v["chain"] == json!("unreadable") || v["integrity"] != json!("ok");
    assert!(damaged, "the damage is named: {v}");
    assert!(!store.run(&["verify"]).status.success(), "verify passed a damaged database");
}
