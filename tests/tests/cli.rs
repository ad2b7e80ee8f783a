//! The command line, end to end, through the real binary: `init` and its keys, the write
//! and read commands with and without `--json`, reads from the log at an epoch or a time,
//! compare-and-set, bad input (refused with one `error:` line and nothing appended), and
//! `export` / `verify` agreeing with each other.

mod common;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{KEY_VARS, PUBLIC_KEY, SIGNING_KEY, Scratch, Store, str_of, u64_of};
use serde_json::{Value, json};

/// A store with services `web` and `db` registered (epoch 1, seq 3).
fn store_with_services(dir: &Scratch) -> Store {
    let store = Store::in_dir(dir.path());
    store.init();
    store.json(&["service", "add", "web", "db", "--json"]);
    store
}

/// Asserts that a refused command left the log exactly as it was.
#[track_caller]
fn assert_unchanged(store: &Store, before: &Value) {
    let after = store.head();
    assert_eq!(&after, before, "the head moved although the command was refused");
}

/// Asserts `cmd` is refused with one `error:` line mentioning `needle`, appending nothing.
#[track_caller]
fn assert_refused(store: &Store, args: &[&str], needle: &str) {
    let before = store.head();
    let run = store.run(args);
    let line = run.assert_one_error_line();
    assert!(line.contains(needle), "the error should mention {needle:?}:\n{run}");
    assert_eq!(run.stdout, "", "a refused command prints nothing on stdout:\n{run}");
    assert_unchanged(store, &before);
}

/// Extra environment variables for one command.
type Env<'a> = Vec<(&'a str, &'a str)>;

fn b64_32(text: &str) -> [u8; 32] {
    let raw = B64.decode(text).unwrap_or_else(|e| panic!("{text:?} is not base64: {e}"));
    raw.as_slice().try_into().unwrap_or_else(|_| panic!("{text:?} decodes to {} bytes, not 32", raw.len()))
}

#[test]
fn init_writes_the_four_keys_mode_0600_and_refuses_to_reinit() {
    let dir = Scratch::new("init");
    let store = Store::in_dir(dir.path());
    let out = store.init();
    let store_id = str_of(&out, "store_id");
    assert_eq!(store_id.len(), 32, "store id is 32 hex digits: {out}");
    assert!(store_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "lowercase hex: {out}");
    assert_eq!(out["keys_written"], json!(KEY_VARS), "init writes all four keys: {out}");

    let mode = std::fs::metadata(&store.env_file).expect("the env file exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the env file holds secrets: mode {mode:o}");
    let vars = store.env_vars();
    for name in KEY_VARS {
        let value = vars.get(name).unwrap_or_else(|| panic!("{name} missing from the env file: {vars:?}"));
        b64_32(value);
    }
    let seed = b64_32(&vars[SIGNING_KEY]);
    let public = confstore_core::SigningKey::from_seed(&seed).verifying_key().to_bytes();
    assert_eq!(public, b64_32(&vars[PUBLIC_KEY]), "the public key is the private key's public half");
    assert_eq!(out["signing_key_id"], json!(confstore_core::keys::key_id_of(&public).to_hex()));

    let head = store.head();
    assert_eq!((u64_of(&head, "seq"), u64_of(&head, "epoch")), (1, 0), "a new store holds event 1 at epoch 0");
    assert_eq!(str_of(&head, "store_id"), store_id);

    // Again, with the same files: refused, nothing touched.
    let env_before = std::fs::read(&store.env_file).expect("reading the env file");
    let db_before = std::fs::read(store.db()).expect("reading the database");
    let run = store.run(&["init"]);
    let line = run.assert_one_error_line();
    assert!(line.contains("already exists") && line.contains(store_id), "names the existing store:\n{run}");
    assert_eq!(std::fs::read(&store.env_file).expect("env file"), env_before, "re-init changed the env file");
    assert_eq!(std::fs::read(store.db()).expect("database"), db_before, "re-init changed the database");

    // Again, with another env file: still refused, and that env file is not created.
    let other = Store { data_dir: store.data_dir.clone(), env_file: dir.path().join("other.env") };
    other.run(&["init"]).assert_one_error_line();
    assert!(!other.env_file.exists(), "a refused init must not write keys anywhere");
    assert_eq!(std::fs::read(store.db()).expect("database"), db_before, "re-init changed the database");
    assert_eq!(store.head(), head);
}

#[test]
fn init_fails_fast_when_the_env_file_cannot_be_written() {
    let dir = Scratch::new("init-unwritable");
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"not a directory").expect("writing a plain file");
    for env_file in [not_a_dir.join(".env"), dir.path().join("missing-dir").join(".env")] {
        let store = Store { data_dir: dir.path().join("data"), env_file: env_file.clone() };
        let run = store.run(&["init"]);
        let line = run.assert_one_error_line();
        assert!(
            line.contains("env file") && line.contains(&env_file.display().to_string()),
            "the error names the env file:\n{run}"
        );
        assert!(!env_file.exists(), "no env file appeared at {}", env_file.display());
        assert!(!store.data_dir.exists(), "a failed init must not create the data directory or database:\n{run}");
    }
}

#[test]
fn keys_in_the_environment_take_precedence_over_the_env_file() {
    let dir = Scratch::new("env-precedence");
    let store = store_with_services(&dir);
    let own = store.env_vars();
    let foreign = Store::in_dir(&dir.path().join("foreign"));
    foreign.init();
    let foreign_vars = foreign.env_vars();

    // The env file holds a foreign key pair; the environment holds the store's own: writes work.
    let swapped = Store { data_dir: store.data_dir.clone(), env_file: foreign.env_file.clone() };
    let own_env = [(SIGNING_KEY, own[SIGNING_KEY].as_str()), (PUBLIC_KEY, own[PUBLIC_KEY].as_str())];
    let run = swapped.run_env(&["set", "web", "port", "1", "--json"], &own_env);
    run.assert_ok();
    assert_eq!(u64_of(&run.json(), "epoch"), 2);
    let run = swapped.run_env(&["verify", "--json"], &own_env);
    run.assert_ok();
    assert_eq!(run.json()["ok"], json!(true), "{run}");

    // The env file holds the store's own keys; the environment a foreign pair: refused.
    let before = store.head();
    let foreign_env =
        [(SIGNING_KEY, foreign_vars[SIGNING_KEY].as_str()), (PUBLIC_KEY, foreign_vars[PUBLIC_KEY].as_str())];
    let run = store.run_env(&["set", "web", "port", "2"], &foreign_env);
    run.assert_one_error_line();
    assert_unchanged(&store, &before);
    // verify trusts the environment's public key over the file's.
    let run = store.run_env(&["verify", "--json"], &[(PUBLIC_KEY, foreign_vars[PUBLIC_KEY].as_str())]);
    assert!(!run.status.success(), "a foreign trusted key must fail verification:\n{run}");
    assert_eq!(run.json()["ok"], json!(false), "{run}");

    // init with all four keys in the environment writes none of them.
    let fresh = Store::in_dir(&dir.path().join("fresh"));
    let env: Vec<(&str, &str)> = KEY_VARS.iter().map(|k| (*k, foreign_vars[*k].as_str())).collect();
    let run = fresh.run_env(&["init", "--json"], &env);
    run.assert_ok();
    let out = run.json();
    assert_eq!(out["keys_written"], json!([]), "keys from the environment are not copied to the file: {out}");
    assert!(!fresh.env_file.exists(), "nothing to write, so no env file: {out}");
    let run = fresh.run(&["verify", "--json", "--public-key", &foreign_vars[PUBLIC_KEY]]);
    run.assert_ok();
}

#[test]
fn a_bad_signing_key_is_one_error_line_naming_the_variable_and_appends_nothing() {
    let dir = Scratch::new("bad-key");
    let store = store_with_services(&dir);
    let good = std::fs::read_to_string(&store.env_file).expect("env file");
    let without_private: String =
        good.lines().filter(|l| !l.starts_with(SIGNING_KEY)).map(|l| format!("{l}\n")).collect();
    let with_private = |value: &str| -> String {
        good.lines()
            .map(|l| if l.starts_with(SIGNING_KEY) { format!("{SIGNING_KEY}={value}\n") } else { format!("{l}\n") })
            .collect()
    };
    let short = B64.encode([7u8; 16]);
    let long = B64.encode([7u8; 33]);
    // (what is wrong, the env file's text, extra environment)
    let cases: Vec<(&str, String, Env<'_>)> = vec![
        ("missing from the env file", without_private, vec![]),
        ("not base64 in the env file", with_private("not*base64!"), vec![]),
        ("16 bytes in the env file", with_private(&short), vec![]),
        ("33 bytes in the env file", with_private(&long), vec![]),
        ("not base64 in the environment", good.clone(), vec![(SIGNING_KEY, "%%%")]),
        ("16 bytes in the environment", good.clone(), vec![(SIGNING_KEY, short.as_str())]),
    ];
    let head = store.head();
    for (what, env_text, env) in &cases {
        std::fs::write(&store.env_file, env_text).expect("writing the env file");
        for args in [
            vec!["set", "web", "port", "1"],
            vec!["unset", "web", "port"],
            vec!["service", "add", "cache"],
            vec!["apply", "/dev/null"],
        ] {
            let run = store.run_env(&args, env);
            let line = run.assert_one_error_line();
            assert!(line.contains(SIGNING_KEY), "{what}: the error must name {SIGNING_KEY}:\n{run}");
            assert_unchanged(&store, &head);
        }
    }
    std::fs::write(&store.env_file, &good).expect("restoring the env file");
    store.ok(&["set", "web", "port", "1"]);
}

#[test]
fn set_get_unset_history_head_in_text_and_json() {
    let dir = Scratch::new("flow");
    let store = Store::in_dir(dir.path());
    store.init();
    let r = store.json(&["service", "add", "web", "db", "--json"]);
    assert_eq!((u64_of(&r, "epoch"), u64_of(&r, "first_seq"), u64_of(&r, "last_seq")), (1, 2, 3), "{r}");
    let list = store.json(&["service", "list", "--json"]);
    assert_eq!(list, json!({"services": ["db", "web"]}));
    assert_eq!(store.ok(&["service", "list"]), "db\nweb\n");

    let text = store.ok(&["set", "web", "port", "8080"]);
    assert!(text.starts_with("committed epoch 2 (1 event, seq 4..4, head "), "{text}");
    let r = store.json(&["set", "web", "name", r#""front""#, "--json", "--reason", "naming", "--actor", "alice"]);
    assert_eq!((u64_of(&r, "epoch"), u64_of(&r, "first_seq")), (3, 5), "{r}");
    store.ok(&["set", "web", "motd", "hello world", "--string"]);
    store.ok(&["set", "db", "pool", r#"{"max":10,"min":1}"#]);

    assert_eq!(store.ok(&["get", "web", "port"]), "8080\n");
    assert_eq!(store.ok(&["get", "web", "name"]), "\"front\"\n");
    assert_eq!(
        store.json(&["get", "web", "port", "--json"]),
        json!({"service": "web", "key": "port", "epoch": 5, "value": 8080})
    );
    assert_eq!(
        store.json(&["get", "web", "--json"]),
        json!({"epoch": 5, "services": {"web": {"port": 8080, "name": "front", "motd": "hello world"}}})
    );
    let all = store.json(&["get", "--json"]);
    assert_eq!(all["services"]["db"], json!({"pool": {"max": 10, "min": 1}}), "{all}");
    let text = store.ok(&["get"]);
    for needle in ["# epoch 5", "[web]", "port = 8080", "motd = \"hello world\"", "[db]"] {
        assert!(text.contains(needle), "`get` text lacks {needle:?}:\n{text}");
    }

    let text = store.ok(&["unset", "web", "port"]);
    assert!(text.starts_with("committed epoch 6 (1 event, seq 8..8"), "{text}");
    let run = store.run(&["get", "web", "port"]);
    assert!(run.assert_one_error_line().contains("not set"), "{run}");

    let history = store.history();
    let seqs: Vec<u64> = history.iter().map(|e| u64_of(e, "seq")).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "history lists every event in seq order");
    let kinds: Vec<&str> = history.iter().map(|e| str_of(&e["kind"], "type")).collect();
    assert_eq!(
        kinds,
        [
            "store_created",
            "service_registered",
            "service_registered",
            "value_set",
            "value_set",
            "value_set",
            "value_set",
            "value_unset"
        ]
    );
    let named = &history[4];
    assert_eq!((str_of(named, "actor"), str_of(named, "reason")), ("alice", "naming"), "{named}");
    assert_eq!(named["kind"]["value"], json!("front"), "{named}");
    let port = store.run(&["history", "web", "--key", "port", "--json"]).json_lines();
    let port_kinds: Vec<&str> = port.iter().map(|e| str_of(&e["kind"], "type")).collect();
    assert_eq!(port_kinds, ["value_set", "value_unset"], "{port:?}");
    let last_two = store.run(&["history", "--limit", "2", "--json"]).json_lines();
    assert_eq!(last_two.iter().map(|e| u64_of(e, "seq")).collect::<Vec<_>>(), [7, 8]);
    let text = store.ok(&["history"]);
    assert_eq!(text.lines().count(), 8, "one text line per event:\n{text}");
    assert!(text.contains("set web.port = 8080") && text.contains("unset web.port"), "{text}");

    let head = store.head();
    assert_eq!((u64_of(&head, "seq"), u64_of(&head, "epoch")), (8, 6), "{head}");
    assert_eq!(u64_of(&head, "verified_seq"), 8, "{head}");
    let hash = str_of(&head, "hash");
    assert_eq!(hash.len(), 64, "{head}");
    let text = store.ok(&["head"]);
    assert!(text.contains("seq      8") && text.contains("epoch    6") && text.contains(hash), "{text}");
}

#[test]
fn get_at_an_epoch_or_a_time_answers_from_the_log() {
    let dir = Scratch::new("pitr");
    let store = store_with_services(&dir);
    // (epoch, time, the value of web.level after it)
    let mut points: Vec<(u64, String, Option<u64>)> = Vec::new();
    for level in 1..=4u64 {
        let r = store.json(&["set", "web", "level", &level.to_string(), "--json"]);
        points.push((u64_of(&r, "epoch"), str_of(&r, "time").to_owned(), Some(level)));
    }
    let r = store.json(&["unset", "web", "level", "--json"]);
    points.push((u64_of(&r, "epoch"), str_of(&r, "time").to_owned(), None));
    store.ok(&["set", "web", "level", "99"]);

    for (epoch, _, level) in &points {
        let got = store.json(&["get", "web", "--epoch", &epoch.to_string(), "--json"]);
        assert_eq!(u64_of(&got, "epoch"), *epoch, "{got}");
        assert_eq!(got["services"]["web"].get("level").and_then(Value::as_u64), *level, "at epoch {epoch}: {got}");
    }
    assert_eq!(store.json(&["get", "web", "--epoch", "1", "--json"])["services"]["web"], json!({}));
    // The receipts' RFC 3339 times print the shortest fraction ("…27.8Z"), so compare the
    // times as the log's unix ms, not as text.
    let time_ms: std::collections::BTreeMap<u64, u64> =
        store.history().iter().map(|e| (u64_of(e, "epoch"), u64_of(e, "time_ms"))).collect();
    for (at_epoch, time, _) in &points {
        // Every changeset made at or before `time`: the last point whose time is not after it.
        let (epoch, _, level) =
            points.iter().rev().find(|(e, _, _)| time_ms[e] <= time_ms[at_epoch]).expect("the point itself");
        let got = store.json(&["get", "web", "--at", time, "--json"]);
        assert_eq!(u64_of(&got, "epoch"), *epoch, "at {time}: {got}");
        assert_eq!(got["services"]["web"].get("level").and_then(Value::as_u64), *level, "at {time}: {got}");
    }

    // Bounds and bad input.
    let head = store.head();
    let beyond = (u64_of(&head, "epoch") + 1).to_string();
    assert_refused(&store, &["get", "web", "--epoch", &beyond], "does not exist");
    assert_refused(&store, &["get", "--at", "2000-01-01T00:00:00Z"], "before the store was created");
    assert_refused(&store, &["get", "--at", "yesterday"], "RFC 3339");

    // Past reads replay the log; the tables beside it play no part. Edit the current-value
    // table behind confstore's back: `get` (now) shows the edit, `get --epoch head` does not.
    let conn = rusqlite::Connection::open(store.db()).expect("opening the database");
    conn.execute("UPDATE state_values SET value_json = '12345' WHERE service = 'web' AND key = 'level'", [])
        .expect("editing the write model");
    drop(conn);
    assert_eq!(store.ok(&["get", "web", "level"]), "12345\n");
    let at_head = store.json(&["get", "web", "level", "--epoch", &u64_of(&head, "epoch").to_string(), "--json"]);
    assert_eq!(at_head["value"], json!(99), "{at_head}");
    let run = store.run(&["verify", "--json"]);
    assert!(!run.status.success(), "verify compares the tables with a replay:\n{run}");
}

#[test]
fn several_pairs_make_one_changeset() {
    let dir = Scratch::new("changeset");
    let store = store_with_services(&dir);
    let r = store.json(&["set", "web", "a=1", r#"b="two""#, "c=true", "d={\"x\":[1,2]}", "--json"]);
    assert_eq!((u64_of(&r, "epoch"), u64_of(&r, "first_seq"), u64_of(&r, "last_seq")), (2, 4, 7), "{r}");
    let head = store.head();
    assert_eq!((u64_of(&head, "seq"), u64_of(&head, "epoch")), (7, 2));
    let events: Vec<Value> = store.history().into_iter().filter(|e| u64_of(e, "epoch") == 2).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(u64_of(e, "changeset_index"), u64::try_from(i).expect("small"), "{e}");
        assert_eq!(u64_of(e, "changeset_len"), 4, "{e}");
        assert_eq!(e["request_id"], events[0]["request_id"], "one request: {e}");
        assert_eq!(e["time_ms"], events[0]["time_ms"], "one time: {e}");
    }
    assert_eq!(
        store.json(&["get", "web", "--json"])["services"]["web"],
        json!({"a": 1, "b": "two", "c": true, "d": {"x": [1, 2]}})
    );
    let r = store.json(&["unset", "web", "a", "b", "--json"]);
    assert_eq!((u64_of(&r, "epoch"), u64_of(&r, "first_seq"), u64_of(&r, "last_seq")), (3, 8, 9), "{r}");
    // One bad pair spoils the whole changeset.
    assert_refused(&store, &["set", "web", "e=1", "f=nope"], "not JSON");
    assert_refused(&store, &["set", "web", "e=1", "Bad Key=2"], "invalid key name");
    assert_eq!(store.json(&["get", "web", "--json"])["services"]["web"], json!({"c": true, "d": {"x": [1, 2]}}));
}

#[test]
fn expect_epoch_is_compare_and_set() {
    let dir = Scratch::new("cas");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port", "1"]);
    let epoch = u64_of(&store.head(), "epoch");
    assert_refused(&store, &["set", "web", "port", "2", "--expect-epoch", &(epoch - 1).to_string()], "expected epoch");
    assert_refused(&store, &["unset", "web", "port", "--expect-epoch", &(epoch + 1).to_string()], "expected epoch");
    assert_refused(&store, &["service", "add", "x", "--expect-epoch", "0"], "expected epoch");
    let r = store.json(&["set", "web", "port", "2", "--expect-epoch", &epoch.to_string(), "--json"]);
    assert_eq!(u64_of(&r, "epoch"), epoch + 1);
    assert_eq!(store.ok(&["get", "web", "port"]), "2\n");
}

#[test]
fn bad_input_is_refused_with_one_error_line_and_appends_nothing() {
    let dir = Scratch::new("bad-input");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port", "1"]);
    let long_key = "k".repeat(129);
    let cases: &[(&[&str], &str)] = &[
        (&["set", "web", "port", "nope"], "not JSON"),
        (&["set", "web", "port", "{\"a\":"], "not JSON"),
        (&["set", "web", "port=nope"], "not JSON"),
        (&["set", "nosuch", "port", "1"], "unknown service"),
        (&["unset", "nosuch", "port"], "unknown service"),
        (&["unset", "web", "never_set"], "not set"),
        (&["unset", "web", "port", "never_set"], "not set"),
        (&["set", "web", "Bad Key", "1"], "invalid key name"),
        (&["set", "web", "_lead", "1"], "invalid key name"),
        (&["set", "web", &long_key, "1"], "key name"),
        (&["set", "web", "port"], "KEY=VALUE"),
        (&["service", "add", "Web"], "invalid service name"),
        (&["service", "add", "web"], "web"),
        (&["history", "nosuch"], "unknown service"),
        (&["get", "nosuch"], "unknown service"),
        (&["apply", "/nonexistent/changesets.jsonl"], "cannot read"),
    ];
    for (args, needle) in cases {
        assert_refused(&store, args, needle);
    }
    let run = store.run(&["verify", "--json"]);
    run.assert_ok();
    assert_eq!(u64_of(&run.json(), "events"), 4, "{run}");
}

#[test]
fn apply_prints_one_result_per_changeset_and_commits_each_whole_or_not_at_all() {
    let dir = Scratch::new("apply");
    let store = store_with_services(&dir);
    let lines = [
        json!({"changes": [{"op": "set", "service": "web", "key": "a", "value": 1},
                           {"op": "set", "service": "db", "key": "a", "value": 1}], "reason": "pair"}),
        json!({"changes": [{"op": "set", "service": "web", "key": "b", "value": 2},
                           {"op": "set", "service": "nosuch", "key": "b", "value": 2}]}),
        json!({"changes": [{"op": "unset", "service": "web", "key": "a"}], "expect_epoch": 2}),
        json!({"changes": [{"op": "register", "service": "cache"}], "expect_epoch": 99}),
        json!({"oops": true}),
    ];
    let results = store.apply(&lines);
    let oks: Vec<bool> = results.iter().map(|r| r["ok"].as_bool().expect("ok is a bool")).collect();
    assert_eq!(oks, [true, false, true, false, false], "{results:?}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(u64_of(r, "line"), u64::try_from(i + 1).expect("small"), "{r}");
    }
    assert_eq!((u64_of(&results[0], "first_seq"), u64_of(&results[0], "last_seq")), (4, 5));
    assert_eq!(u64_of(&results[2], "epoch"), 3);
    let head = store.head();
    assert_eq!((u64_of(&head, "seq"), u64_of(&head, "epoch")), (6, 3), "only the good lines were appended");
    assert_eq!(store.json(&["get", "--json"])["services"], json!({"web": {}, "db": {"a": 1}}));
}

#[test]
fn export_then_verify_export_agrees_with_verify() {
    let dir = Scratch::new("export");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "a=1", "b=[1,2,3]"]);
    store.ok(&["set", "db", "url", "postgres://x", "--string", "--reason", "moved"]);
    store.ok(&["unset", "web", "a"]);

    let on_db = store.json(&["verify", "--json"]);
    assert_eq!(on_db["ok"], json!(true), "{on_db}");
    assert_eq!(u64_of(&on_db, "events"), 7, "{on_db}");
    let text = store.ok(&["verify"]);
    assert!(text.starts_with("ok: ") && text.contains("7 events verified"), "{text}");

    let file = dir.path().join("export.jsonl");
    let run = store.run(&["export", "--out", file.to_str().expect("utf-8 path")]);
    run.assert_ok();
    assert_eq!(run.stdout, "", "export --out writes the file, not stdout:\n{run}");
    let exported = std::fs::read_to_string(&file).expect("reading the export");
    assert_eq!(store.ok(&["export"]), exported, "export to stdout and to a file are the same bytes");
    let lines: Vec<Value> =
        exported.lines().map(|l| serde_json::from_str(l).expect("each export line is JSON")).collect();
    assert_eq!(lines.len(), 8, "a header and one line per event");
    assert_eq!(lines[0]["format"], json!("confstore-export/1"));
    assert_eq!(lines[0]["store_id"], on_db["store_id"]);
    for (i, l) in lines[1..].iter().enumerate() {
        assert_eq!(u64_of(l, "seq"), u64::try_from(i + 1).expect("small"), "{l}");
        for field in ["prev_hash", "hash", "key_id", "sig", "body"] {
            str_of(l, field);
        }
    }
    assert_eq!(str_of(&lines[7], "hash"), str_of(&on_db, "head_hash"));

    let on_file = store.json(&["verify", "--export", file.to_str().expect("utf-8 path"), "--json"]);
    for field in ["ok", "store_id", "events", "epoch", "head_hash", "keys", "trusted_key_id"] {
        assert_eq!(on_file[field], on_db[field], "verify --export and verify disagree on {field}");
    }
    // An export needs no database and no private key: only the public key.
    let public = store.env_vars()[PUBLIC_KEY].clone();
    let nowhere = Store::in_dir(&dir.path().join("auditor"));
    let audit =
        nowhere.json(&["verify", "--export", file.to_str().expect("utf-8 path"), "--public-key", &public, "--json"]);
    assert_eq!(audit["head_hash"], on_db["head_hash"], "{audit}");
    // --strict checks each signature on its own: same verdict on a clean log.
    for args in [
        vec!["verify", "--strict", "--json"],
        vec!["verify", "--export", file.to_str().expect("utf-8 path"), "--strict", "--json"],
    ] {
        let strict = store.json(&args);
        assert_eq!(strict["head_hash"], on_db["head_hash"], "{args:?}: {strict}");
    }
}

#[test]
fn verify_with_a_foreign_public_key_fails() {
    let dir = Scratch::new("foreign-key");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "a", "1"]);
    let foreign = Store::in_dir(&dir.path().join("foreign"));
    foreign.init();
    let foreign_public = foreign.env_vars()[PUBLIC_KEY].clone();
    let file = dir.path().join("export.jsonl");
    store.ok(&["export", "--out", file.to_str().expect("utf-8 path")]);

    for source in [vec![], vec!["--export", file.to_str().expect("utf-8 path")]] {
        let mut args = vec!["verify", "--public-key", foreign_public.as_str()];
        args.extend(&source);
        let run = store.run(&args);
        assert!(!run.status.success(), "a foreign key must not verify:\n{run}");
        assert!(run.stderr.contains("FAILED"), "{run}");
        args.push("--json");
        let run = store.run(&args);
        assert!(!run.status.success(), "{run}");
        let out = run.json();
        assert_eq!(out["ok"], json!(false), "{out}");
        assert_eq!(u64_of(&out, "first_bad_seq"), 1, "the trust anchor is checked against event 1: {out}");
    }
    let run = store.run(&["verify", "--public-key", "not base64"]);
    assert!(run.assert_one_error_line().contains("--public-key"), "{run}");
}

#[test]
fn diff_and_rollback_append_a_changeset_that_restores_an_epoch() {
    let dir = Scratch::new("rollback");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port=80", "tls=false"]); // epoch 2
    store.ok(&["set", "db", "pool", "4"]); // 3
    store.ok(&["set", "web", "port", "8080"]); // 4
    store.ok(&["unset", "web", "tls"]); // 5

    let d = store.json(&["diff", "2", "--json"]);
    assert_eq!((u64_of(&d, "from_epoch"), u64_of(&d, "to_epoch")), (2, 5), "{d}");
    let changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (format!("{}.{}", str_of(c, "service"), str_of(c, "key")), str_of(c, "change").to_owned()))
        .collect();
    let expected = [("db.pool", "added"), ("web.port", "changed"), ("web.tls", "removed")];
    assert_eq!(changes, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert!(store.ok(&["diff", "2", "5", "--service", "web"]).contains("~ web.port: 80 -> 8080"));

    let before = store.head();
    let r = store.json(&["rollback", "--to-epoch", "2", "--reason", "bad deploy", "--json"]);
    assert_eq!((u64_of(&r, "epoch"), u64_of(&r, "rolled_back_to"), u64_of(&r, "keys_changed")), (6, 2, 3), "{r}");
    assert_eq!(u64_of(&r, "first_seq"), u64_of(&before, "seq") + 1, "{r}");
    let now = store.json(&["get", "--json"]);
    let at_2 = store.json(&["get", "--epoch", "2", "--json"]);
    assert_eq!(now["services"], at_2["services"], "the rolled-back state equals epoch 2");
    assert!(store.json(&["diff", "2", "--json"])["changes"].as_array().expect("changes").is_empty());
    // History keeps everything; the marker names the rollback.
    let history = store.run(&["history", "--json"]).assert_ok().json_lines();
    assert!(history.iter().any(|e| e["kind"]["type"] == json!("rolled_back") && e["reason"] == json!("bad deploy")));
    assert!(store.ok(&["history", "--limit", "4"]).contains("rollback to epoch 2 (from epoch 5)"));
    // A rollback can be rolled back.
    store.ok(&["rollback", "--to-epoch", "5", "--reason", "undo"]);
    assert_eq!(store.json(&["get", "web", "port", "--json"])["value"], json!(8080));
    assert_eq!(store.json(&["verify", "--json"])["ok"], json!(true));

    // Refusals change nothing.
    let head = store.head();
    assert_refused(&store, &["rollback", "--to-epoch", "99", "--reason", "x"], "epoch 99");
    assert_refused(&store, &["rollback", "--to-epoch", "5", "--reason", "x"], "nothing to roll back");
    assert_refused(&store, &["rollback", "--to-epoch", "2", "--service", "nope", "--reason", "x"], "unknown service");
    assert_refused(&store, &["diff", "yesterday"], "neither an epoch");
    assert_unchanged(&store, &head);
    let no_reason = store.run(&["rollback", "--to-epoch", "2"]);
    assert!(!no_reason.status.success() && no_reason.stderr.contains("--reason"), "{no_reason}");
}

#[test]
fn signing_key_rotation_and_an_interrupted_one_finish_cleanly() {
    let b64 = |b: &[u8]| B64.encode(b);
    let dir = Scratch::new("rotate");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "a", "1"]);
    let first_public = store.env_vars()[PUBLIC_KEY].clone();

    let r = store.json(&["keys", "rotate", "--signing", "--reason", "yearly", "--json"]);
    let vars = store.env_vars();
    assert_ne!(vars[PUBLIC_KEY], first_public, "the env file holds the new key");
    assert!(!vars.contains_key("CONFIG_SIGNATURE_PREVIOUS_PRIVATE_KEY"), "clean-up done: {vars:?}");
    store.ok(&["set", "web", "a", "2"]);
    // Both the first and the new key are trust anchors for the whole chain.
    for key in [&first_public, &vars[PUBLIC_KEY]] {
        let v = store.json(&["verify", "--json", "--public-key", key]);
        assert_eq!((v["ok"].clone(), u64_of(&v, "keys")), (json!(true), 2), "{v}");
    }
    assert_eq!(u64_of(&r, "seq"), 5, "store_created, two registrations, one set, then the rotation: {r}");

    // An interrupted rotation: the new key was written, the event was not appended.
    let old_private = vars[SIGNING_KEY].clone();
    let next = confstore_core::SigningKey::from_seed(&[0x77; 32]);
    let env_path = dir.path().join(".env");
    let text = std::fs::read_to_string(&env_path).expect("env file");
    let rewritten: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{SIGNING_KEY}=")) {
                format!("{SIGNING_KEY}={}\nCONFIG_SIGNATURE_PREVIOUS_PRIVATE_KEY={old_private}\n", b64(&next.seed()))
            } else if l.starts_with(&format!("{PUBLIC_KEY}=")) {
                format!("{PUBLIC_KEY}={}\n", b64(&next.verifying_key().to_bytes()))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&env_path, rewritten).expect("writing the env file");
    let head = store.head();
    let refused = store.run(&["set", "web", "a", "3"]);
    assert!(refused.assert_one_error_line().contains("rotation was interrupted"), "{refused}");
    assert_unchanged(&store, &head);
    let done = store.json(&["keys", "rotate", "--signing", "--json"]);
    assert_eq!(str_of(&done, "new_key_id"), next.verifying_key().key_id().to_hex(), "finishes to the written key");
    assert!(!store.env_vars().contains_key("CONFIG_SIGNATURE_PREVIOUS_PRIVATE_KEY"));
    store.ok(&["set", "web", "a", "3"]);
    assert_eq!(store.json(&["verify", "--json", "--public-key", &first_public])["ok"], json!(true));

    // Keys from the environment override the file: rotating the file would not take effect.
    let env_key = store.env_vars()[SIGNING_KEY].clone();
    let run = store.run_env(&["keys", "rotate", "--signing"], &[(SIGNING_KEY, env_key.as_str())]);
    assert!(run.assert_one_error_line().contains("set in the environment"), "{run}");
}

#[test]
fn schemas_refuse_invalid_writes_listing_every_violation() {
    let dir = Scratch::new("schema");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port", "80"]);
    let schema = dir.path().join("web.schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["port"],"properties":{
            "port":{"type":"integer","minimum":1,"maximum":65535},
            "mode":{"enum":["fast","safe"],"default":"safe"}}}"#,
    )
    .expect("schema file");
    let schema_path = schema.to_str().expect("utf-8 path");
    store.ok(&["schema", "set", "web", schema_path, "--reason", "first schema"]);
    let shown = store.json(&["schema", "get", "web", "--json"]);
    assert_eq!(str_of(&shown, "schema_hash").len(), 64, "{shown}");

    // Every violation, by key and rule, in one line; nothing appended.
    assert_refused(&store, &["set", "web", "port=0", "mode=\"x\""], "2 schema violation(s)");
    let run = store.run(&["set", "web", "port=0", "mode=\"x\""]);
    let line = run.assert_one_error_line();
    assert!(line.contains("web.port (minimum)") && line.contains("web.mode (enum)"), "{line}");
    assert_refused(&store, &["set", "web", "debug", "true"], "additionalProperties");
    assert_refused(&store, &["unset", "web", "port"], "required");
    // A valid change records the schema's hash.
    store.ok(&["set", "web", "port", "8080"]);
    let last = store.run(&["history", "web", "--json", "--limit", "1"]).assert_ok().json_lines();
    assert_eq!(last[0]["kind"]["schema_hash"], shown["schema_hash"], "{last:?}");

    // A schema that the current values break is refused, naming the keys.
    let strict = dir.path().join("strict.json");
    std::fs::write(&strict, r#"{"properties":{"port":{"type":"integer","maximum":100}}}"#).expect("schema file");
    assert_refused(&store, &["schema", "set", "web", strict.to_str().expect("utf-8")], "web.port (maximum)");
    // An invalid schema, a non-JSON file, an unknown service: clear errors, nothing appended.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"type": 12}"#).expect("file");
    assert_refused(&store, &["schema", "set", "web", bad.to_str().expect("utf-8")], "invalid schema");
    std::fs::write(&bad, "not json").expect("file");
    assert_refused(&store, &["schema", "set", "web", bad.to_str().expect("utf-8")], "is not JSON");
    assert_refused(&store, &["schema", "set", "nope", schema_path], "unknown service");
    assert_eq!(store.json(&["verify", "--json"])["ok"], json!(true));
}

#[test]
fn snapshot_resolves_service_then_global_then_schema_default() {
    let dir = Scratch::new("snapshot");
    let store = store_with_services(&dir);
    store.ok(&["service", "add", "global"]);
    store.ok(&["set", "global", "region", "\"eu\""]);
    let schema = dir.path().join("web.json");
    std::fs::write(&schema, r#"{"properties":{"port":{"type":"integer","default":8080},"region":{"type":"string"}}}"#)
        .expect("schema");
    store.ok(&["schema", "set", "web", schema.to_str().expect("utf-8")]);
    let s = store.json(&["snapshot", "web", "--json"]);
    assert_eq!(s["config"], json!({"port": 8080, "region": "eu"}), "{s}");
    assert_eq!(s["sources"], json!({"port": "default", "region": "global"}), "{s}");
    store.ok(&["set", "web", "port", "9000"]);
    let s = store.json(&["snapshot", "web", "--json"]);
    assert_eq!((s["config"]["port"].clone(), s["sources"]["port"].clone()), (json!(9000), json!("service")));
    let earlier = store.json(&["snapshot", "web", "--epoch", &(u64_of(&s, "epoch") - 1).to_string(), "--json"]);
    assert_eq!(earlier["config"]["port"], json!(8080));
    assert_eq!(str_of(&s, "store_id"), str_of(&store.head(), "store_id"));
}

#[test]
fn the_lkg_cache_follows_every_write_and_refuses_tampering() {
    let dir = Scratch::new("lkg");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port", "80"]);
    let v = store.json(&["lkg", "verify", "--json"]);
    assert_eq!((v["ok"].clone(), u64_of(&v, "events_behind_log")), (json!(true), 0), "{v}");
    assert_eq!(u64_of(&v, "services"), 2, "{v}");
    let file = dir.path().join("data").join("config.lkg.json");
    let mode = std::fs::metadata(&file).expect("lkg file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the LKG file is private");
    let older = std::fs::read(&file).expect("lkg file");

    store.ok(&["set", "web", "port", "81"]);
    assert_eq!(u64_of(&store.json(&["lkg", "verify", "--json"]), "events_behind_log"), 0);
    // An older but genuine cache verifies and says how far behind it is.
    std::fs::write(&file, &older).expect("restore");
    assert_eq!(u64_of(&store.json(&["lkg", "verify", "--json"]), "events_behind_log"), 1);
    store.ok(&["lkg", "write"]);

    // Any modification is refused: a flipped byte anywhere in the file.
    let good = std::fs::read(&file).expect("lkg file");
    for i in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        std::fs::write(&file, &bad).expect("tamper");
        let run = store.run(&["lkg", "verify"]);
        run.assert_one_error_line();
    }
    std::fs::write(&file, &good).expect("restore");
    // Another LKG key (the file is refused, not trusted).
    let other_key = B64.encode([9u8; 32]);
    let run = store.run_env(&["lkg", "verify"], &[("LKG_HMAC_KEY_BASE64", other_key.as_str())]);
    assert!(run.assert_one_error_line().contains("does not verify"), "{run}");
}

/// A stock JOSE library (Python's jwcrypto, installed by ops/test.sh) verifies the snapshot
/// JWS with nothing but the public key (docs/design.md §8), and refuses a modified one.
#[test]
fn snapshot_jws_verifies_with_a_stock_jose_library() {
    let dir = Scratch::new("jws");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port", "80"]);
    let jws = store.ok(&["snapshot", "web", "--jws"]);
    let public = B64.decode(store.env_vars()[PUBLIC_KEY].as_bytes()).expect("public key");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    let script = r#"
import json, sys
from jwcrypto import jwk, jws
key = jwk.JWK(kty="OKP", crv="Ed25519", x=sys.argv[1])
token = jws.JWS()
token.deserialize(sys.stdin.read())
try:
    token.verify(key)
except Exception as e:
    print("REFUSED", type(e).__name__)
    sys.exit(3)
print(json.dumps(json.loads(token.payload)))
"#;
    let verify = |text: &str| {
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", script, &x]);
        common::run_with_deadline(cmd, Some(text.as_bytes().to_vec()), std::time::Duration::from_secs(60))
    };
    let ok = verify(&jws);
    ok.assert_ok();
    let payload: Value = serde_json::from_str(ok.stdout.trim()).expect("payload JSON");
    assert_eq!(payload["config"], json!({"port": 80}), "{ok}");
    assert_eq!(payload, store.json(&["snapshot", "web", "--json"]));
    let mut forged: Value = serde_json::from_str(&jws).expect("jws json");
    let doctored = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string().replace("80", "81"));
    forged["payload"] = json!(doctored);
    let refused = verify(&forged.to_string());
    assert!(!refused.status.success() && refused.stdout.contains("REFUSED"), "{refused}");
}

#[test]
fn search_finds_keys_by_part_of_their_value_and_rebuild_gives_the_same_answers() {
    let dir = Scratch::new("search");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "ingress=\"billing-ingress.example.com\"", "motd=\"Hello World\""]);
    store.ok(&["set", "db", "url", "\"postgres://db-primary:5432\""]);
    let hits = store.json(&["search", "INGRES", "--json"]);
    let found: Vec<String> = hits["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| format!("{}.{}", str_of(h, "service"), str_of(h, "key")))
        .collect();
    assert_eq!(found, ["web.ingress"], "{hits}");
    assert_eq!(store.json(&["search", "primary", "--service", "web", "--json"])["hits"], json!([]));
    let epoch = u64_of(&store.head(), "epoch");
    store.ok(&["set", "web", "motd", "\"Goodbye World\""]);
    let since = store.json(&["search", "world", "--since", &epoch.to_string(), "--json"]);
    assert_eq!(since["hits"].as_array().expect("hits").len(), 1, "{since}");
    store.ok(&["unset", "web", "motd"]);
    assert_eq!(store.json(&["search", "world", "--json"])["hits"], json!([]));
    let before = store.json(&["search", "o", "--json"]);
    let rebuilt = store.json(&["rebuild", "--json"]);
    assert_eq!(u64_of(&rebuilt, "events"), u64_of(&store.head(), "seq"), "{rebuilt}");
    assert_eq!(store.json(&["search", "o", "--json"]), before, "a rebuild answers exactly as the incremental index");
    assert_eq!(u64_of(&store.json(&["lkg", "verify", "--json"]), "events_behind_log"), 0);
}

#[test]
fn lkg_key_rotation_re_signs_the_cache() {
    let dir = Scratch::new("lkg-rotate");
    let store = store_with_services(&dir);
    store.ok(&["set", "web", "port", "80"]);
    let old_key = store.env_vars()["LKG_HMAC_KEY_BASE64"].clone();
    let r = store.json(&["keys", "rotate", "--lkg", "--json"]);
    assert_eq!(str_of(&r, "rotated"), "LKG_HMAC_KEY_BASE64", "{r}");
    assert_ne!(store.env_vars()["LKG_HMAC_KEY_BASE64"], old_key);
    assert_eq!(store.json(&["lkg", "verify", "--json"])["ok"], json!(true));
    let with_old = store.run_env(&["lkg", "verify"], &[("LKG_HMAC_KEY_BASE64", old_key.as_str())]);
    assert!(with_old.assert_one_error_line().contains("does not verify"), "{with_old}");
    let neither = store.run(&["keys", "rotate"]);
    assert!(!neither.status.success() && neither.stderr.contains("--signing"), "{neither}");
}

/// docs/testing.md row 16, for what exists now: a canary secret appears in plaintext nowhere but
/// in `secret reveal`'s output, and every reveal is recorded.
#[test]
fn a_canary_secret_is_never_stored_or_shown_in_plaintext() {
    let canary = "CANARY-b1d7e0c4";
    let dir = Scratch::new("secret");
    let store = store_with_services(&dir);
    let json_canary = format!("\"{canary}\"");
    store.ok(&["set", "db", "password", &json_canary, "--secret", "--reason", "rotate db password"]);
    store.ok(&["set", "db", "host", "\"db1\""]);
    let mut outputs = Vec::new();
    for args in [
        vec!["get"],
        vec!["get", "--json"],
        vec!["get", "db", "password"],
        vec!["history", "--json"],
        vec!["history"],
        vec!["snapshot", "db", "--json"],
        vec!["snapshot", "db", "--jws"],
        vec!["search", "CANARY", "--json"],
        vec!["diff", "1", "--json"],
        vec!["export"],
    ] {
        outputs.push((format!("{args:?}"), store.ok(&args)));
    }
    assert!(store.ok(&["get", "db", "password"]).contains("<secret>"));
    for (what, out) in &outputs {
        assert!(!out.contains(canary), "{what} printed the secret:\n{out}");
    }
    let epoch = u64_of(&store.head(), "epoch");
    assert_eq!(store.ok(&["secret", "reveal", "db", "password", "--reason", "debugging"]).trim(), json_canary);
    assert_eq!(u64_of(&store.head(), "epoch"), epoch, "a reveal changes no configuration");
    let history = store.run(&["history", "--json"]).assert_ok().json_lines();
    let last = history.last().expect("events");
    assert_eq!((last["kind"]["type"].clone(), last["reason"].clone()), (json!("secret_revealed"), json!("debugging")));
    // Nothing on disk holds it: the database, its WAL, the LKG cache.
    for file in ["config.db", "config.db-wal", "config.lkg.json"] {
        let path = dir.path().join("data").join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()), "{file} holds the plaintext");
        }
    }
    assert_refused(&store, &["secret", "reveal", "db", "host"], "not a secret");
    assert_refused(&store, &["set", "db", "x", r#"{"$secret":1}"#], "reserved for secrets");
    assert_eq!(store.json(&["verify", "--json"])["ok"], json!(true));
}

#[test]
fn import_env_brings_a_service_env_file_in_as_one_changeset() {
    let dir = Scratch::new("import");
    let store = store_with_services(&dir);
    let schema = dir.path().join("web.json");
    std::fs::write(
        &schema,
        r#"{"properties":{"PORT":{"type":"integer"},"DEBUG":{"type":"boolean"},"NAME":{"type":"string"},
            "API_TOKEN":{"type":"string"},"KEYBOARD_LAYOUT":{"type":"string"}}}"#,
    )
    .expect("schema");
    store.ok(&["schema", "set", "web", schema.to_str().expect("utf-8")]);
    let env = dir.path().join("web.env");
    std::fs::write(&env, "PORT=8080\nDEBUG=true\nNAME=\"front end\"\nAPI_TOKEN=tok-CANARY-42\nKEYBOARD_LAYOUT=us\n")
        .expect("env file");
    let before = u64_of(&store.head(), "epoch");
    let run = store.run(&["import-env", "web", env.to_str().expect("utf-8"), "--plain", "KEYBOARD_LAYOUT"]);
    run.assert_ok();
    assert!(run.stderr.contains("API_TOKEN") && !run.stderr.contains("KEYBOARD_LAYOUT"), "{run}");
    assert_eq!(u64_of(&store.head(), "epoch"), before + 1, "one changeset");
    let got = store.json(&["get", "web", "--json"]);
    assert_eq!(
        got["services"]["web"],
        json!({"PORT": 8080, "DEBUG": true, "NAME": "front end", "API_TOKEN": "<secret>", "KEYBOARD_LAYOUT": "us"})
    );
    assert_eq!(store.ok(&["secret", "reveal", "web", "API_TOKEN"]).trim(), "\"tok-CANARY-42\"");
    // A value the schema cannot type refuses the whole file.
    std::fs::write(&env, "PORT=eighty\nNAME=x\n").expect("env file");
    assert_refused(&store, &["import-env", "web", env.to_str().expect("utf-8")], "not a valid integer");
}

#[test]
fn import_env_and_set_into_a_new_service_ask_for_create_then_register_it_in_the_same_changeset() {
    let dir = Scratch::new("import-create");
    let store = store_with_services(&dir);
    let env = dir.path().join("stt.env");
    std::fs::write(&env, "THRESHOLD=0.5\nMODEL=\"base\"\n").expect("env file");
    let file = env.to_str().expect("utf-8");
    assert_refused(&store, &["import-env", "stt", file], "--create");
    assert_refused(&store, &["set", "tts", "voice", "\"anna\""], "--create");
    let before = u64_of(&store.head(), "epoch");
    store.ok(&["import-env", "stt", file, "--create"]);
    assert_eq!(u64_of(&store.head(), "epoch"), before + 1, "registration and values in one changeset");
    // Without a schema, .env values are strings (a schema types them).
    assert_eq!(store.json(&["get", "stt", "--json"])["services"]["stt"], json!({"THRESHOLD": "0.5", "MODEL": "base"}));
    store.ok(&["set", "tts", "voice", "\"anna\"", "--create"]);
    assert_eq!(store.json(&["get", "tts", "--json"])["services"]["tts"], json!({"voice": "anna"}));
    // --create on a service that exists changes nothing about it.
    store.ok(&["set", "tts", "rate", "1.2", "--create"]);
    assert_eq!(store.json(&["get", "tts", "--json"])["services"]["tts"], json!({"voice": "anna", "rate": 1.2}));
}

#[test]
fn rollback_restores_a_secret_as_its_old_ciphertext() {
    let dir = Scratch::new("rollback-secret");
    let store = store_with_services(&dir);
    let first = store.json(&["set", "db", "password", "\"pw-one\"", "--secret", "--json"]);
    store.ok(&["set", "db", "password", "\"pw-two\"", "--secret"]);
    let epoch = u64_of(&first, "epoch").to_string();
    store.ok(&["rollback", "--to-epoch", &epoch, "--service", "db", "--reason", "back to the first password"]);
    assert_eq!(store.ok(&["secret", "reveal", "db", "password"]).trim(), "\"pw-one\"");
    // The log holds the first envelope again, never the plaintext.
    let export = store.ok(&["export"]);
    assert!(!export.contains("pw-one") && !export.contains("pw-two"), "a plaintext reached the log");
}

#[test]
fn master_key_rotation_rewraps_every_secret_and_retires_the_old_version() {
    let dir = Scratch::new("master");
    let store = store_with_services(&dir);
    store.ok(&["set", "db", "password", "\"pw-one\"", "--secret"]);
    store.ok(&["set", "web", "token", "\"tok-two\"", "--secret"]);
    store.ok(&["set", "web", "port", "80"]);
    let old_master = store.env_vars()["CONFIG_MASTER_KEY_BASE64"].clone();
    let r = store.json(&["keys", "rotate", "--master", "--json"]);
    assert_eq!((u64_of(&r, "key_version"), u64_of(&r, "secrets_rewrapped")), (2, 2), "{r}");
    let vars = store.env_vars();
    assert_ne!(vars["CONFIG_MASTER_KEY_BASE64"], old_master);
    assert_eq!(vars["CONFIG_MASTER_KEY_VERSION"], "2");
    assert!(!vars.contains_key("CONFIG_MASTER_KEY_PREVIOUS_BASE64"), "the old version is retired");
    assert_eq!(store.ok(&["secret", "reveal", "db", "password"]).trim(), "\"pw-one\"");
    assert_eq!(store.ok(&["secret", "reveal", "web", "token"]).trim(), "\"tok-two\"");
    let history = store.run(&["history", "--json"]).assert_ok().json_lines();
    let rewrap: Vec<_> = history.iter().filter(|e| e["kind"]["type"] == json!("secret_set")).collect();
    assert!(rewrap.iter().filter(|e| e["kind"]["key_version"] == json!(2)).count() == 2, "{rewrap:?}");
    // With only the retired key, nothing decrypts.
    let run = store.run_env(
        &["secret", "reveal", "db", "password"],
        &[("CONFIG_MASTER_KEY_BASE64", old_master.as_str()), ("CONFIG_MASTER_KEY_VERSION", "1")],
    );
    assert!(run.assert_one_error_line().contains("retired") || run.stderr.contains("does not decrypt"), "{run}");
    // A second rotation continues the versions.
    let r = store.json(&["keys", "rotate", "--master", "--json"]);
    assert_eq!(u64_of(&r, "key_version"), 3, "{r}");
    assert_eq!(store.ok(&["secret", "reveal", "web", "token"]).trim(), "\"tok-two\"");
    assert_eq!(store.json(&["verify", "--json"])["ok"], json!(true));
}
