//! Hostile input against the real binary (issue 14): every file of the data directory is
//! private (0600, directories 0700) and an open data directory is reported; numbers that
//! would not be kept exactly, negative zero, repeated keys and other charsets are refused
//! by the REST API (422 / 415 naming the value) and the CLI with nothing changed; and
//! numbers that are accepted come back byte for byte in the value, the state, the signed
//! snapshot and the LKG file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use common::{Scratch, Server, Store, u64_of};
use serde_json::{Value, json};

/// Every entry under `dir` (recursively) with its mode and whether it is a directory.
fn modes(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).flatten() {
        let meta = entry.metadata().expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        out.push((entry.path().display().to_string(), mode, meta.is_dir()));
        if meta.is_dir() {
            modes(&entry.path(), out);
        }
    }
}

/// Panics listing every file not 0600 and directory not 0700 under `dir` (and `dir` itself);
/// the files `required` must be there.
#[track_caller]
fn assert_private(dir: &Path, when: &str, required: &[&str]) {
    let mut all = vec![(dir.display().to_string(), std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, true)];
    modes(dir, &mut all);
    let names: Vec<&str> = all.iter().map(|(p, _, _)| p.rsplit('/').next().unwrap_or(p)).collect();
    for expected in required {
        assert!(names.contains(expected), "{when}: {expected} is missing from {}: {names:?}", dir.display());
    }
    let open: Vec<String> = all
        .iter()
        .filter(|(_, mode, is_dir)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(p, mode, is_dir)| format!("{p} {mode:04o}{}", if *is_dir { " (dir)" } else { "" }))
        .collect();
    assert!(open.is_empty(), "{when}: not private: {open:?}");
}

#[test]
fn every_file_of_the_data_directory_is_private_and_an_open_directory_is_reported() {
    let scratch = Scratch::new("modes");
    let store = Store::in_dir(scratch.path());
    let init = store.run(&["init"]);
    init.assert_ok();
    assert!(!init.stderr.contains("warning"), "a new data directory is private: {init}");
    store.ok(&["service", "add", "web"]);
    store.ok(&["set", "web", "timeout_ms", "500"]);
    // The last connection of a CLI command checkpoints and removes the -wal and -shm files.
    let at_rest = ["config.db", "config.lkg.json", "config.lkg.hwm"];
    assert_private(&store.data_dir, "after init and a write", &at_rest);

    let mut server = Server::start(&store, &["--log-format", "json"], &scratch.path().join("serve.log"));
    server.wait_ready();
    let mut admin = server.admin();
    admin.ok("PUT", "/api/v1/services/web/values/retries", Some(&json!({"value": 3})));
    server.wait_lkg_current();
    let serving = ["config.db", "config.db-wal", "config.db-shm", "config.lkg.json", "config.lkg.hwm", "admin.token"];
    assert_private(&store.data_dir, "while serving", &serving);
    assert!(!server.log_text().contains("is not private"), "{}", server.log_tail());
    assert!(server.terminate().success());
    assert_private(&store.data_dir, "after serve stopped", &at_rest);

    // What other commands write: an export (the whole log) and a replayed database.
    let export = scratch.path().join("audit.jsonl");
    store.ok(&["export", "--out", export.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&export).unwrap().permissions().mode() & 0o777, 0o600, "the export is private");
    let replayed = scratch.path().join("replayed");
    store.ok(&["replay", "--to-epoch", "1", "--out", replayed.to_str().unwrap()]);
    assert_private(&replayed, "a replayed database", &["config.db"]);

    // A data directory that exists already keeps its mode (the operator's call), and both
    // init and serve say it is open.
    let open_dir = scratch.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = store.with_data_dir(&open_dir);
    let init = open.run(&["init"]);
    init.assert_ok();
    assert!(
        init.stderr.contains("warning: the data directory") && init.stderr.contains("(mode 0755)"),
        "init says the directory is open:\n{init}"
    );
    let mut server = Server::start(&open, &["--log-format", "json"], &scratch.path().join("serve-open.log"));
    server.wait_ready();
    let log = server.log_text();
    assert!(log.contains("the data directory is not private") && log.contains("mode 0755"), "{log}");
    assert!(server.terminate().success());
    let mut files = Vec::new();
    modes(&open_dir, &mut files);
    let open_files: Vec<_> = files.iter().filter(|(_, mode, is_dir)| !is_dir && *mode != 0o600).collect();
    assert!(open_files.is_empty(), "the files are private even in an open directory: {open_files:?}");
}

/// `PUT` of a raw body to one key.
fn put_raw(http: &mut common::Http, key: &str, content_type: &str, body: &str) -> common::HttpResponse {
    let target = format!("/api/v1/services/web/values/{key}");
    http.request_raw("PUT", &target, &[("Content-Type", content_type)], body.as_bytes())
        .unwrap_or_else(|e| panic!("PUT {target}: {e}"))
}

#[test]
fn the_api_refuses_numbers_it_would_change_repeated_keys_and_other_charsets_changing_nothing() {
    let scratch = Scratch::new("exact-api");
    let store = Store::in_dir(scratch.path());
    let mut server = common::api::ready_server(scratch.path());
    let mut admin = server.admin();
    admin.ok("POST", "/api/v1/services", Some(&json!({"name": "web"})));
    let head = admin.ok("GET", "/api/v1/head", None).json();
    let json_type = "application/json";

    let refused: &[(&str, &str, &str, &[&str])] = &[
        ("big", json_type, r#"{"value": 18446744073709551616}"#, &["18446744073709551616", "at /value"]),
        ("small", json_type, r#"{"value": [1, -9223372036854775809]}"#, &["-9223372036854775809", "at /value/1"]),
        ("negzero", json_type, r#"{"value": -0}"#, &["-0", "negative zero", "at /value"]),
        ("negzero2", json_type, r#"{"value": {"x": -0.0e3}}"#, &["-0.0e3", "at /value/x"]),
        ("inexact", json_type, r#"{"value": 1.00000000000000000001}"#, &["1.00000000000000000001", "at /value"]),
        ("huge", json_type, r#"{"value": 1e400}"#, &["1e400", "at /value"]),
        ("dup", json_type, r#"{"value": {"a": 1, "a": 2}}"#, &["\"a\"", "at /value", "more than once"]),
        ("dup2", json_type, r#"{"value": 1, "value": 2}"#, &["\"value\"", "at the top level"]),
    ];
    for (key, content_type, body, needles) in refused {
        let r = put_raw(&mut admin, key, content_type, body);
        assert_eq!(r.status, 422, "{body}: {r}");
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        for n in *needles {
            assert!(message.contains(n), "{body}: the message names {n}: {message}");
        }
        assert!(message.contains("nothing was changed"), "{message}");
    }
    let patch = admin
        .request_raw(
            "PATCH",
            "/api/v1/services/web/values",
            &[("Content-Type", json_type)],
            br#"{"set": {"ok": 1, "x": 12345678901234567890123}}"#,
        )
        .unwrap();
    assert_eq!(patch.status, 422, "{patch}");
    assert!(patch.text().contains("at /set/x"), "{patch}");

    for charset in ["latin1", "ISO-8859-1", "\"utf-16\""] {
        let r = put_raw(&mut admin, "k", &format!("application/json; charset={charset}"), r#"{"value": 1}"#);
        assert_eq!(r.status, 415, "charset={charset}: {r}");
        assert!(r.text().contains("UTF-8"), "{r}");
    }

    let after = admin.ok("GET", "/api/v1/head", None).json();
    assert_eq!((after["seq"].clone(), after["epoch"].clone()), (head["seq"].clone(), head["epoch"].clone()));
    assert_eq!(u64_of(&store.head(), "seq"), u64_of(&head, "seq"), "nothing was appended");

    // The same requests, exact and in UTF-8, are accepted: the refusals were about the values.
    let r = put_raw(&mut admin, "big", "application/json; charset=UTF-8", r#"{"value": 18446744073709551615}"#);
    assert_eq!(r.status, 200, "{r}");
    let r = put_raw(&mut admin, "dup", "application/merge-patch+json", r#"{"value": {"a": 1, "b": 2}}"#);
    assert_eq!(r.status, 200, "{r}");
    assert!(server.terminate().success());
}

/// The payload of a flattened JWS, as text.
fn jws_payload(jws: &Value) -> String {
    let payload = jws["payload"].as_str().unwrap_or_else(|| panic!("no payload in {jws}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    String::from_utf8(bytes).expect("a UTF-8 payload")
}

#[test]
fn accepted_numbers_come_back_byte_for_byte_everywhere() {
    let scratch = Scratch::new("exact-round-trip");
    let store = Store::in_dir(scratch.path());
    let mut server = common::api::ready_server(scratch.path());
    let mut admin = server.admin();
    admin.ok("POST", "/api/v1/services", Some(&json!({"name": "web"})));
    let values = [
        ("max_u64", "18446744073709551615"),
        ("min_i64", "-9223372036854775808"),
        ("tenth", "0.1"),
        ("tiny", "1e-7"),
        ("mixed", r#"[18446744073709551615,-9223372036854775808,0.1,1e-7,{"n":2.5}]"#),
    ];
    for (key, literal) in values {
        let r = put_raw(&mut admin, key, "application/json", &format!(r#"{{"value": {literal}}}"#));
        assert_eq!(r.status, 200, "{key}: {r}");
        let got = admin.ok("GET", &format!("/api/v1/services/web/values/{key}"), None).text();
        assert!(got.contains(&format!("\"value\":{literal}")), "GET value of {key}: {got}");
    }
    server.wait_lkg_current();
    let state = admin.ok("GET", "/api/v1/state?service=web", None).text();
    let jws = admin.request("GET", "/api/v1/services/web/snapshot", &[("Accept", "application/jose+json")], None);
    let jws = jws.expect("GET the snapshot JWS");
    assert_eq!(jws.status, 200, "{jws}");
    let snapshot = jws_payload(&jws.json());
    let lkg: Value = serde_json::from_slice(&std::fs::read(store.data_dir.join("config.lkg.json")).unwrap()).unwrap();
    let lkg = jws_payload(&lkg);
    let cli = store.ok(&["get", "web", "--json"]);
    for (key, literal) in values {
        let member = format!("\"{key}\":{literal}");
        for (what, text) in [("state", &state), ("snapshot JWS payload", &snapshot), ("LKG payload", &lkg)] {
            assert!(text.contains(&member), "{what} holds {member}: {text}");
        }
        assert!(cli.contains(literal), "confstore get holds {literal}: {cli}");
    }
    assert!(server.terminate().success());
}

#[test]
fn the_cli_refuses_inexact_numbers_and_repeated_keys_changing_nothing() {
    let scratch = Scratch::new("exact-cli");
    let store = Store::in_dir(scratch.path());
    store.init();
    store.ok(&["service", "add", "web"]);
    let seq = u64_of(&store.head(), "seq");
    for (value, needle) in [
        ("18446744073709551616", "18446744073709551616"),
        ("-0", "negative zero"),
        ("[1e400]", "at /0"),
        (r#"{"a":1,"a":2}"#, "more than once"),
    ] {
        let run = store.run(&["set", "web", "k", "--", value]);
        let line = run.assert_one_error_line();
        assert!(line.contains(needle) && line.contains("nothing was changed"), "set {value}: {line}");
    }
    let results = store.apply(&[json!({"changes": [{"op": "set", "service": "web", "key": "k", "value": "@"}]})]);
    assert_eq!(results[0]["ok"], true, "a plain line is applied: {results:?}");
    let seq = seq + 1;
    let line = r#"{"changes": [{"op": "set", "service": "web", "key": "k", "value": 99999999999999999999}]}"#;
    let run = common::run_with_deadline(
        store.command(&["apply", "-"]),
        Some(format!("{line}\n").into_bytes()),
        common::COMMAND_DEADLINE,
    );
    let out = run.json_lines();
    assert_eq!(out[0]["ok"], false, "{run}");
    assert!(out[0]["error"].as_str().unwrap_or_default().contains("99999999999999999999 at /changes/0/value"), "{run}");
    let schema = scratch.path().join("schema.json");
    std::fs::write(&schema, r#"{"type": "object", "type": "array"}"#).unwrap();
    let run = store.run(&["schema", "set", "web", schema.to_str().unwrap()]);
    assert!(run.assert_one_error_line().contains("more than once"), "{run}");
    assert_eq!(u64_of(&store.head(), "seq"), seq, "nothing was appended");
}
