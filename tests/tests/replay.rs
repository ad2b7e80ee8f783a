//! `confstore replay --to-epoch N | --at T --out DIR`: a new database holding the verified
//! log up to that point. For every epoch of a history with schemas, secrets, a global scope
//! and a rollback, the copy verifies on its own, its head is that epoch, and every service
//! reads in it exactly as `get --epoch N` replays it in the live store; `--at T` matches
//! `get --at T`. A path that holds a store is refused, and a tampered source writes nothing.

mod common;

use common::*;

fn history(store: &Store) {
    store.init();
    store.ok(&["service", "add", "web"]);
    store.ok(&["service", "add", "global"]);
    store.ok(&["set", "global", "region", "\"eu\""]);
    store.ok(&["set", "web", "port", "8080"]);
    store.ok(&["set", "web", "api_token", "\"s3cr3t\"", "--secret"]);
    store.ok(&["set", "web", "port", "8081", "--reason", "tune"]);
    store.ok(&["unset", "web", "port"]);
    store.ok(&["rollback", "--to-epoch", "4", "--reason", "undo"]);
    store.ok(&["set", "global", "region", "\"us\""]);
}

#[test]
fn every_epoch_replays_into_a_database_that_reads_like_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(&dir.path().join("live"));
    history(&store);
    let head = store.head();
    let last = head["epoch"].as_u64().unwrap();
    assert!(last >= 8, "{head}");
    for epoch in 1..=last {
        let out = dir.path().join(format!("at-{epoch}"));
        let receipt =
            store.json(&["replay", "--to-epoch", &epoch.to_string(), "--out", out.to_str().unwrap(), "--json"]);
        assert_eq!(receipt["epoch"].as_u64(), Some(epoch), "{receipt}");
        let copy = store.with_data_dir(&out);
        copy.ok(&["verify"]);
        let copy_head = copy.head();
        assert_eq!(copy_head["epoch"].as_u64(), Some(epoch));
        assert_eq!(copy_head["seq"], receipt["seq"]);
        assert_eq!(copy_head["store_id"], head["store_id"], "the copy is the same store");
        assert_eq!(
            copy.json(&["get", "--json"]),
            store.json(&["get", "--epoch", &epoch.to_string(), "--json"]),
            "epoch {epoch}"
        );
    }
    // By time: the time of an epoch's last event gives that epoch.
    let copy_time = store.with_data_dir(&dir.path().join("at-5")).head()["time"].as_str().unwrap().to_owned();
    let out = dir.path().join("at-time");
    store.ok(&["replay", "--at", &copy_time, "--out", out.to_str().unwrap()]);
    let copy = store.with_data_dir(&out);
    assert_eq!(copy.json(&["get", "--json"]), store.json(&["get", "--at", &copy_time, "--json"]));
    assert_eq!(copy.head()["epoch"].as_u64(), Some(5));
}

#[test]
fn an_existing_store_is_refused_and_a_tampered_source_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(&dir.path().join("live"));
    history(&store);
    let out = dir.path().join("copy");
    store.ok(&["replay", "--to-epoch", "2", "--out", out.to_str().unwrap()]);
    let before = std::fs::read(out.join("config.db")).unwrap();
    let run = store.run(&["replay", "--to-epoch", "3", "--out", out.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("already holds a store"), "{}", run.stderr);
    assert_eq!(std::fs::read(out.join("config.db")).unwrap(), before);

    // One flipped byte in a stored signature of the source: the replay fails, no file.
    let conn = rusqlite::Connection::open(store.db()).unwrap();
    conn.execute_batch("DROP TRIGGER events_no_update; UPDATE events SET sig = zeroblob(64) WHERE seq = 3;").unwrap();
    drop(conn);
    let bad = dir.path().join("bad");
    let run = store.run(&["replay", "--to-epoch", "5", "--out", bad.to_str().unwrap()]);
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    assert!(!bad.join("config.db").exists(), "a partial copy was left behind");
}
