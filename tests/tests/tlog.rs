//! The transparency log through `confstore serve` (docs/format.md §19; docs/testing.md rows 7
//! and 8): signed checkpoints of the log's Merkle tree published at `GET /api/v1/checkpoint`,
//! retained on `system/config-checkpoint` and in `<data-dir>/tree.checkpoint`; inclusion and
//! consistency proofs from the API and the CLI; all of it verified by Go's own
//! `golang.org/x/mod/sumdb/note` and `sumdb/tlog` (tests/go/tlogverify, from Debian's
//! `golang-go` and `golang-golang-x-mod-dev`), not only by this repository's code; and a
//! dropped tail and a forked history signed with the real key caught by the checkpoint
//! published before them.

#![allow(clippy::cast_possible_truncation)] // test sizes of a few thousand events index vectors

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::mqtt::{put_value, serve_with_stream, store_verifying_key};
use common::{Http, Rng, Scratch, Server, Store, copy_db, free_port, poll_until, run_with_deadline, seed};
use confstore_core::tlog::{self, Checkpoint};
use confstore_core::{Hash32, StoreId};
use serde_json::{Value, json};

/// A checkpoint covers the head within this (the policy is 100 events or 10 s; generous,
/// the machine is shared).
const CHECKPOINT_DEADLINE: Duration = Duration::from_secs(40);

fn store_id(store: &Store) -> StoreId {
    StoreId::from_hex(common::str_of(&store.head(), "store_id")).expect("store id")
}

fn head_seq(http: &mut Http) -> u64 {
    http.ok("GET", "/api/v1/head", None).json()["seq"].as_u64().expect("seq")
}

/// Waits until the published checkpoint covers at least `seq` events; (note, checkpoint).
fn checkpoint_at_least(server: &mut Server, token: &str, store: &Store, seq: u64) -> (String, Checkpoint) {
    let origin = tlog::origin(&store_id(store));
    let key = store_verifying_key(store);
    poll_until(&format!("a checkpoint of {seq} events"), CHECKPOINT_DEADLINE, Duration::from_millis(20), || {
        let resp = Http::new(server.addr).with_token(token).get("/api/v1/checkpoint").ok()?;
        if resp.status != 200 {
            return None;
        }
        let note = resp.text();
        let cp = Checkpoint::open(note.as_bytes(), &origin, std::slice::from_ref(&key))
            .unwrap_or_else(|e| panic!("the published checkpoint does not verify: {e}\n{note}"));
        (cp.size >= seq).then_some((note, cp))
    })
}

fn b64_hashes(v: &Value) -> Vec<[u8; 32]> {
    v.as_array()
        .expect("hashes")
        .iter()
        .map(|h| {
            let b = B64.decode(h.as_str().expect("base64")).expect("base64");
            <[u8; 32]>::try_from(b.as_slice()).expect("32 bytes")
        })
        .collect()
}

/// Runs Go's tlogverify on `cases`; one line per case.
fn go_verify(vkey: &str, cases: &[Value]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    let cache = root.join("target").join("go-cache");
    let mut cmd = Command::new("go");
    cmd.args(["run", "./tests/go/tlogverify"])
        .current_dir(root)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", &cache)
        .env("GOFLAGS", "");
    let input = json!({ "vkey": vkey, "cases": cases }).to_string();
    let run = run_with_deadline(cmd, Some(input.into_bytes()), Duration::from_secs(300));
    assert!(run.status.success(), "go run tlogverify failed: {}{}", run.stdout, run.stderr);
    let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), cases.len(), "one answer per case:\n{}", run.stdout);
    lines
}

#[test]
fn checkpoints_are_published_and_every_proof_verifies_with_gos_tlog() {
    let dir = Scratch::new("tlog-publish");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, mut server, mut http) = serve_with_stream(dir.path(), &["--mqtt-listen", &listen], &["web"]);
    let token = common::admin_token(&store);
    for i in 0..120 {
        put_value(&mut http, "web", &format!("k{}", i % 30), &json!(i));
    }
    let seq1 = head_seq(&mut http);
    let (note1, cp1) = checkpoint_at_least(&mut server, &token, &store, seq1);
    assert_eq!(cp1.origin, format!("confstore/{}", store_id(&store).to_hex()));

    // Retained on the stream: a subscriber gets the latest checkpoint.
    let port_s = port.to_string();
    let retained = poll_until("the retained checkpoint", CHECKPOINT_DEADLINE, Duration::from_millis(50), || {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port_s, "-u", "auditor", "-P", &token]).args([
            "-t",
            "system/config-checkpoint",
            "-C",
            "1",
            "-W",
            "3",
            "-q",
            "1",
        ]);
        let run = run_with_deadline(cmd, None, Duration::from_secs(20));
        let text = run.stdout.strip_suffix('\n').unwrap_or(&run.stdout).to_owned();
        let latest = Http::new(server.addr).with_token(&token).get("/api/v1/checkpoint").ok()?.text();
        (run.status.success() && text == latest).then_some(text)
    });
    assert!(retained.starts_with(&cp1.origin), "{retained}");
    // And in the data directory.
    let file = std::fs::read_to_string(store.data_dir.join("tree.checkpoint")).expect("tree.checkpoint");
    Checkpoint::open(file.as_bytes(), &cp1.origin, &[store_verifying_key(&store)]).expect("the file verifies");

    for i in 0..150 {
        put_value(&mut http, "web", &format!("k{}", i % 40), &json!(format!("v{i}")));
    }
    let seq2 = head_seq(&mut http);
    let (note2, cp2) = checkpoint_at_least(&mut server, &token, &store, seq2);
    assert!(cp2.size > cp1.size);

    // Proofs from the API, checked here and by Go's sumdb/tlog; each mutated one must fail.
    let events = http.ok("GET", "/api/v1/events?after=0&limit=1000", None).json();
    let hashes: Vec<Hash32> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| Hash32::from_hex(e["hash"].as_str().expect("hash")).expect("hex"))
        .collect();
    assert!(hashes.len() as u64 >= cp2.size);
    assert_eq!(tlog::root_of(&hashes[..cp2.size as usize]), cp2.root, "the checkpoint's root is the events'");
    let vkey = tlog::note_verifier_key(&cp1.origin, &store_verifying_key(&store));
    let mut cases = vec![json!({"kind": "checkpoint", "note": note1}), json!({"kind": "checkpoint", "note": note2})];
    let mut expect = vec![
        format!("ok {} {} {}", cp1.origin, cp1.size, B64.encode(cp1.root)),
        format!("ok {} {} {}", cp2.origin, cp2.size, B64.encode(cp2.root)),
    ];
    // A checkpoint whose size was changed after signing.
    let forged = note2.replacen(&format!("\n{}\n", cp2.size), &format!("\n{}\n", cp2.size + 1), 1);
    cases.push(json!({"kind": "checkpoint", "note": forged}));
    expect.push("fail".into());
    let mut rng = Rng::new(seed("TLOG_SEED"));
    for (cp, n) in [(&cp1, 20), (&cp2, 30)] {
        for _ in 0..n {
            let seq = rng.between(1, cp.size);
            let p = http.ok("GET", &format!("/api/v1/proof/inclusion?seq={seq}&size={}", cp.size), None).json();
            assert_eq!(p["event_hash"], json!(hashes[seq as usize - 1].to_hex()));
            let proof = b64_hashes(&p["hashes"]);
            tlog::verify_inclusion(&proof, cp.size, &cp.root, seq, &hashes[seq as usize - 1]).expect("inclusion");
            let case = |proof: &[[u8; 32]]| {
                json!({"kind": "inclusion", "size": cp.size, "root": B64.encode(cp.root), "index": seq - 1,
                       "leaf": hashes[seq as usize - 1].to_hex(),
                       "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>()})
            };
            cases.push(case(&proof));
            expect.push("ok ".into());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = rng.index(bad.len());
                bad[i][rng.index(32)] ^= 1 << rng.below(8);
                cases.push(case(&bad));
                expect.push("fail".into());
            }
        }
    }
    let c = http.ok("GET", &format!("/api/v1/proof/consistency?from={}&to={}", cp1.size, cp2.size), None).json();
    let proof = b64_hashes(&c["hashes"]);
    tlog::verify_consistency(&proof, cp2.size, &cp2.root, cp1.size, &cp1.root).expect("consistency");
    let case = |proof: &[[u8; 32]]| {
        json!({"kind": "consistency", "size": cp2.size, "root": B64.encode(cp2.root), "old_size": cp1.size,
               "old_root": B64.encode(cp1.root), "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>()})
    };
    cases.push(case(&proof));
    expect.push("ok ".into());
    let mut bad = proof.clone();
    bad[0][0] ^= 1;
    cases.push(case(&bad));
    expect.push("fail".into());

    let answers = go_verify(&vkey, &cases);
    for (i, (got, want)) in answers.iter().zip(&expect).enumerate() {
        assert!(got.starts_with(want.as_str()), "case {i} ({}): Go said {got:?}, expected {want:?}", cases[i]["kind"]);
    }

    // The CLI reads the same proofs from the database.
    let cli = store.json(&["proof", "inclusion", "--seq", "7", "--size", &cp2.size.to_string(), "--json"]);
    let api = http.ok("GET", &format!("/api/v1/proof/inclusion?seq=7&size={}", cp2.size), None).json();
    assert_eq!(cli["hashes"], api["hashes"]);
    assert_eq!(cli["root"], json!(B64.encode(cp2.root)));
    let cli = store.json(&["proof", "checkpoint", "--json"]);
    assert_eq!(cli["verdict"], json!("ok"), "{cli}");

    // Bad requests: clear errors.
    for (path, status) in [
        ("/api/v1/proof/inclusion?seq=0&size=3", 422),
        (&format!("/api/v1/proof/inclusion?seq=1&size={}", u64::MAX / 2) as &str, 404),
        ("/api/v1/proof/consistency?from=5&to=3", 422),
        ("/api/v1/proof/inclusion?seq=x&size=3", 400),
    ] {
        let resp = http.get(path).expect("answer");
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
    }
    server.terminate();
}

/// Stops `server`, then puts the database of `from` back into the store's data directory
/// (as a restore of an older backup would), with the files that would say the log is behind
/// (the LKG file and its high-water mark) removed, so only the checkpoint can tell.
fn put_back(store: &Store, from: &Path) {
    for name in ["config.db", "config.db-wal", "config.db-shm", "config.lkg.json", "config.lkg.hwm", "mqtt.checkpoint"]
    {
        let _ = std::fs::remove_file(store.data_dir.join(name));
    }
    copy_db(from, &store.data_dir);
}

#[test]
fn a_dropped_tail_and_a_forked_history_are_caught_by_the_checkpoint_published_before() {
    let dir = Scratch::new("tlog-fork");
    let store = Store::in_dir(dir.path());
    store.init();
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let token = common::admin_token(&store);
    let mut http = Http::new(server.addr).with_token(&token);
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "web"})));
    for i in 0..10 {
        put_value(&mut http, "web", "a", &json!(i));
    }
    let seq_a = head_seq(&mut http);
    checkpoint_at_least(&mut server, &token, &store, seq_a);
    server.terminate();
    let backup = dir.path().join("backup-a");
    copy_db(&store.data_dir, &backup);

    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let mut http = Http::new(server.addr).with_token(&token);
    for i in 0..120 {
        put_value(&mut http, "web", "b", &json!(i));
    }
    let seq_b = head_seq(&mut http);
    let (note_b, cp_b) = checkpoint_at_least(&mut server, &token, &store, seq_b);
    server.terminate();
    let saved = dir.path().join("checkpoint-b");
    std::fs::write(&saved, &note_b).expect("saving checkpoint B");

    // The tail after A is dropped (an older copy put back): the checkpoint of B says so.
    put_back(&store, &backup);
    let run = store.run(&["proof", "checkpoint", "--file", saved.to_str().expect("utf-8"), "--json"]);
    let out: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", run.stdout, run.stderr));
    assert_eq!(out["verdict"], json!("behind"), "{out}");
    assert_eq!(run.status.code(), Some(1));
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let mut http = Http::new(server.addr).with_token(&token);
    let why =
        poll_until("checkpoints halted on the dropped tail", CHECKPOINT_DEADLINE, Duration::from_millis(20), || {
            let resp = http.get("/api/v1/checkpoint").ok()?;
            (resp.status == 503 && resp.text().contains("missing")).then(|| resp.text())
        });
    assert!(why.contains(&format!("{}..{}", seq_a + 1, cp_b.size)), "{why}");

    // A forked history, signed with the real key, as long as B: the checkpoint of B catches it,
    // and the server never signs a checkpoint of it.
    for i in 0..(cp_b.size - seq_a + 5) {
        put_value(&mut http, "web", "fork", &json!(i));
    }
    let why = poll_until("checkpoints halted on the fork", CHECKPOINT_DEADLINE, Duration::from_millis(20), || {
        let resp = http.get("/api/v1/checkpoint").ok()?;
        (resp.status == 503 && resp.text().contains("rewritten")).then(|| resp.text())
    });
    assert!(why.contains(&format!("first {} events", cp_b.size)), "{why}");
    let run = store.run(&["proof", "checkpoint", "--file", saved.to_str().expect("utf-8"), "--json"]);
    let out: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(out["verdict"], json!("forked"), "{out}");
    assert_eq!(run.status.code(), Some(1));
    let kept = std::fs::read_to_string(store.data_dir.join("tree.checkpoint")).expect("tree.checkpoint");
    assert_eq!(kept, note_b, "the server did not sign over the checkpoint it published");
    server.terminate();
}

/// Runs `verify --export FILE --json` (exit status, JSON answer).
fn verify_export(store: &Store, file: &Path) -> (Option<i32>, Value) {
    let run = store.run(&["verify", "--export", file.to_str().expect("utf-8"), "--json"]);
    let out: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", run.stdout, run.stderr));
    (run.status.code(), out)
}

/// Writes `header` and `events` as an export file.
fn write_export(file: &Path, header: &Value, events: &[&str]) {
    let mut text = header.to_string() + "\n";
    for l in events {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(file, text).expect("writing the export");
}

#[test]
fn exports_carry_the_latest_checkpoint_and_verify_checks_it() {
    let dir = Scratch::new("tlog-export");
    let store = Store::in_dir(dir.path());
    store.init();
    // No checkpoint published yet: no member, and the export verifies as every export did.
    let plain = dir.path().join("plain.jsonl");
    store.ok(&["export", "--out", plain.to_str().expect("utf-8")]);
    let text = std::fs::read_to_string(&plain).expect("export");
    let header: Value = serde_json::from_str(text.lines().next().expect("header")).expect("json");
    assert_eq!(header.get("checkpoint"), None, "{header}");
    let (code, out) = verify_export(&store, &plain);
    assert_eq!((code, &out["ok"], &out["checkpoint_size"]), (Some(0), &json!(true), &Value::Null), "{out}");

    // 120 events in one changeset: a checkpoint follows at once (every 100 events).
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    let token = common::admin_token(&store);
    let mut http = Http::new(server.addr).with_token(&token);
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "web"})));
    let set: serde_json::Map<String, Value> = (0..120).map(|i| (format!("k{i}"), json!(i))).collect();
    http.ok("PATCH", "/api/v1/services/web/values", Some(&json!({"set": set})));
    let seq = head_seq(&mut http);
    let (note, cp) = checkpoint_at_least(&mut server, &token, &store, seq);
    // Two events after it: the export covers more than the checkpoint.
    put_value(&mut http, "web", "after", &json!(1));
    put_value(&mut http, "web", "after", &json!(2));
    let rest = http.ok("GET", "/api/v1/export", None).text();
    let rest_header: Value = serde_json::from_str(rest.lines().next().expect("header")).expect("json");
    assert_eq!(rest_header["checkpoint"], json!(note), "GET /api/v1/export carries the checkpoint");
    server.terminate();

    let file = dir.path().join("export.jsonl");
    store.ok(&["export", "--out", file.to_str().expect("utf-8")]);
    let text = std::fs::read_to_string(&file).expect("export");
    let lines: Vec<&str> = text.lines().collect();
    let header: Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(header["checkpoint"], json!(note), "the CLI export carries <data-dir>/tree.checkpoint");
    assert_eq!(lines.len() as u64, 1 + cp.size + 2, "every event after the header");
    let (code, out) = verify_export(&store, &file);
    assert_eq!((code, &out["checkpoint_size"]), (Some(0), &json!(cp.size)), "{out}");
    let rest_file = dir.path().join("rest.jsonl");
    std::fs::write(&rest_file, &rest).expect("rest export");
    let (code, out) = verify_export(&store, &rest_file);
    assert_eq!((code, &out["checkpoint_size"]), (Some(0), &json!(cp.size)), "{out}");

    // Every edit of the checkpoint, or of the events under it, fails verification.
    let edited = dir.path().join("edited.jsonl");
    let root_b64 = B64.encode(cp.root);
    let mut other_root = cp.root;
    other_root[0] ^= 1;
    let cases: Vec<(&str, Value, usize, &str)> = vec![
        // The root edited in the note: its signature no longer verifies.
        ("root", json!(note.replacen(&root_b64, &B64.encode(other_root), 1)), lines.len(), "does not verify"),
        // Another store key's signature on the same text.
        ("signature", json!(cp.sign(&confstore_core::SigningKey::from_seed(&[5; 32]))), lines.len(), "trusted key"),
        // The events under the checkpoint cut: the export lost events it signed.
        ("truncated", json!(note), cp.size as usize, "missing"),
        ("not a note", json!("hello"), lines.len(), "checkpoint"),
    ];
    for (what, member, keep, expect) in cases {
        let mut h = header.clone();
        h["checkpoint"] = member;
        write_export(&edited, &h, &lines[1..keep]);
        let (code, out) = verify_export(&store, &edited);
        assert_eq!((code, &out["ok"]), (Some(1), &json!(false)), "{what}: {out}");
        assert!(out["reason"].as_str().unwrap_or_default().contains(expect), "{what}: {out}");
    }
    // The member removed: an export without a checkpoint still verifies.
    let mut h = header.clone();
    h.as_object_mut().expect("object").remove("checkpoint");
    write_export(&edited, &h, &lines[1..]);
    let (code, out) = verify_export(&store, &edited);
    assert_eq!((code, &out["checkpoint_size"]), (Some(0), &Value::Null), "{out}");
}

/// The store's signing key (from its env file): to sign checkpoints the server never would.
fn store_signing_key(store: &Store) -> confstore_core::SigningKey {
    let seed = store.env_vars().get(common::SIGNING_KEY).cloned().expect("the signing key in .env");
    let bytes = B64.decode(seed.trim_matches('"')).expect("base64 seed");
    confstore_core::SigningKey::from_seed(&<[u8; 32]>::try_from(bytes.as_slice()).expect("a 32-byte seed"))
}

/// One changeset of `n` values on `service` (one event each): with 100 or more, a
/// checkpoint follows at once.
fn patch_many(http: &mut Http, service: &str, prefix: &str, n: usize) {
    let set: serde_json::Map<String, Value> = (0..n).map(|i| (format!("{prefix}{i}"), json!(i))).collect();
    http.ok("PATCH", &format!("/api/v1/services/{service}/values"), Some(&json!({ "set": set })));
}

#[test]
fn a_client_accepts_only_checkpoints_that_grow_and_checks_that_its_versions_are_in_them() {
    use common::mqtt::{Broker, RawClient, store_public_key};
    let dir = Scratch::new("tlog-client");
    let broker = Broker::start(&dir.path().join("broker"));
    let (store, mut server, mut http) = serve_with_stream(dir.path(), &["--mqtt-url", &broker.url()], &["web"]);
    let token = common::admin_token(&store);
    patch_many(&mut http, "web", "a", 120);
    let (first_note, first) = checkpoint_at_least(&mut server, &token, &store, head_seq(&mut http));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let lkg = dir.path().join("client").join("web.lkg.json");
    let client = rt
        .block_on(
            confstore_client::Client::builder("web")
                .public_key_base64(&store_public_key(&store))
                .rest_url(&format!("http://{}", server.addr))
                .token(&token)
                .mqtt_url(&broker.url())
                .mqtt_client_id(&format!("tlog-client-{}", std::process::id()))
                .lkg_path(&lkg)
                .env(Vec::new())
                .start(),
        )
        .expect("the client starts");
    let wait = |what: &str, done: &dyn Fn(&confstore_client::Stats) -> bool| {
        poll_until(what, CHECKPOINT_DEADLINE, Duration::from_millis(10), || done(&client.stats()).then_some(()));
    };
    // The version it applied (its changed_seq) is shown in the checkpoint it accepted.
    wait("the first version shown in a checkpoint", &|s| s.inclusions_verified >= 1);
    let held = client.checkpoint().expect("a checkpoint accepted");
    assert!(held.size >= first.size && held.size >= client.config().version().changed_seq, "{held:?}");

    // The log grows: the client takes the larger checkpoint (consistent with the one held)
    // and shows the new version in it.
    patch_many(&mut http, "web", "b", 120);
    let seq = head_seq(&mut http);
    checkpoint_at_least(&mut server, &token, &store, seq);
    wait("the second version shown in a checkpoint", &|s| s.inclusions_verified >= 2);
    let held = client.checkpoint().expect("a checkpoint accepted");
    assert!(held.size >= seq, "{held:?} {:?}", client.stats());
    let stats = client.stats();
    assert_eq!((stats.inclusions_failed, stats.checkpoints_refused("forked")), (0, 0), "{stats:?}");
    // The LKG file keeps the accepted checkpoint (written with a version applied after it).
    let kept: Value = serde_json::from_slice(&std::fs::read(&lkg).expect("lkg file")).expect("json");
    let kept_note = kept["checkpoint"].as_str().expect("a checkpoint in the LKG file");
    let origin = tlog::origin(&store_id(&store));
    Checkpoint::open(kept_note.as_bytes(), &origin, &[store_verifying_key(&store)]).expect("a signed checkpoint");

    // Checkpoints that do not extend the one held, sent where the client listens: refused
    // and counted, never accepted.
    let key = store_signing_key(&store);
    let attacker = RawClient::connect(broker.port, &format!("attacker-{}", std::process::id()), None, &[]);
    let before = client.stats();
    let send = |note: &str| attacker.publish(confstore_core::stream::CHECKPOINT_TOPIC, note.as_bytes(), false);
    // Same size, another root, signed with the store's own key: a fork.
    send(&Checkpoint { origin: origin.clone(), size: held.size, root: [7; 32] }.sign(&key));
    // Smaller, another root: the server's consistency proof does not lead to it.
    send(&Checkpoint { origin: origin.clone(), size: first.size - 3, root: [8; 32] }.sign(&key));
    // Signed by a key the client does not trust.
    send(
        &Checkpoint { origin: origin.clone(), size: held.size + 1, root: [9; 32] }
            .sign(&confstore_core::SigningKey::from_seed(&[3; 32])),
    );
    // The real first checkpoint again: a prefix of the one held, stale.
    send(&first_note);
    wait("four checkpoints refused", &|s| {
        s.checkpoints_refused.values().sum::<u64>() >= before.checkpoints_refused.values().sum::<u64>() + 4
    });
    let stats = client.stats();
    assert_eq!(stats.checkpoints_refused("forked"), before.checkpoints_refused("forked") + 2, "{stats:?}");
    assert_eq!(stats.checkpoints_refused("signature"), before.checkpoints_refused("signature") + 1, "{stats:?}");
    assert!(stats.checkpoints_refused("stale") > before.checkpoints_refused("stale"), "{stats:?}");
    assert_eq!(client.checkpoint().map(|c| (c.size, c.root)), Some((held.size, held.root)), "nothing forged accepted");
    // Applying configuration never depended on any of it.
    assert_eq!(stats.applied, before.applied);
    assert_eq!(stats.inclusions_failed, 0);
    rt.block_on(client.shutdown());
    server.terminate();
}

/// The witness: `aics-witness` (PyPI `aics-witness`, an independent C2SP tlog-witness; ADR
/// 0028), from `AICS_WITNESS`, else `target/witness-venv/bin/aics-witness` (ops/test.sh
/// installs it there).
fn witness_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("AICS_WITNESS") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    let p = root.join("target").join("witness-venv").join("bin").join("aics-witness");
    assert!(p.is_file(), "{} is missing: run ops/test.sh (it installs aics-witness) or set AICS_WITNESS", p.display());
    p
}

/// A running witness that trusts one log.
struct WitnessProc {
    child: std::process::Child,
    url: String,
    vkey: String,
}

impl Drop for WitnessProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_witness(dir: &Path, origin: &str, log_vkey: &str) -> WitnessProc {
    std::fs::create_dir_all(dir).expect("witness dir");
    let config = dir.join("witness.json");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(witness_bin());
        c.args(args).env("AICS_WITNESS_CONFIG", &config).current_dir(dir);
        c
    };
    let init = run_with_deadline(cmd(&["init", "--name", "witness.test/w1"]), None, Duration::from_secs(60));
    assert!(init.status.success(), "aics-witness init: {}{}", init.stdout, init.stderr);
    let vkey =
        init.stdout.lines().chain(init.stderr.lines()).find(|l| l.starts_with("witness.test/w1+")).expect("the vkey");
    let add =
        run_with_deadline(cmd(&["add-log", "--origin", origin, "--vkey", log_vkey]), None, Duration::from_secs(60));
    assert!(add.status.success(), "aics-witness add-log: {}{}", add.stdout, add.stderr);
    let port = common::free_port();
    let log = std::fs::File::create(dir.join("witness.log")).expect("witness log");
    let child = cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting aics-witness");
    let w = WitnessProc { child, url: format!("http://127.0.0.1:{port}"), vkey: vkey.to_owned() };
    poll_until("the witness to listen", Duration::from_secs(30), Duration::from_millis(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    w
}

/// The checkpoint `server` publishes once it covers `seq` and `done` holds of it.
fn published_checkpoint(server: &Server, token: &str, seq: u64, done: impl Fn(&str) -> bool) -> String {
    poll_until(&format!("a checkpoint of {seq} events"), CHECKPOINT_DEADLINE, Duration::from_millis(20), || {
        let resp = Http::new(server.addr).with_token(token).get("/api/v1/checkpoint").ok()?;
        let note = resp.text();
        let size = note.lines().nth(1).and_then(|l| l.parse::<u64>().ok())?;
        (resp.status == 200 && size >= seq && done(&note)).then_some(note)
    })
}

#[test]
fn a_witness_refuses_a_split_view_and_a_client_that_requires_it_refuses_that_history() {
    let dir = Scratch::new("tlog-witness");
    let a = Store::in_dir(&dir.path().join("a"));
    a.init();
    a.json(&["service", "add", "web", "--json"]);
    // The same store and key in a second database, copied now: from here on two histories.
    let b = a.with_data_dir(&dir.path().join("b-data"));
    copy_db(&a.data_dir, &b.data_dir);
    let origin = tlog::origin(&store_id(&a));
    let log_vkey = tlog::note_verifier_key(&origin, &store_verifying_key(&a));
    let witness = start_witness(&dir.path().join("witness"), &origin, &log_vkey);
    let wkey = tlog::WitnessKey::parse(&witness.vkey).expect("the witness's verifier key");
    let witness_arg = format!("{}={}", witness.url, witness.vkey);
    let args = ["--no-mqtt", "--witness", witness_arg.as_str()];
    let cosigned = |note: &str| tlog::cosigned_by(note.as_bytes(), std::slice::from_ref(&wkey)).map(|by| by.len());

    // A: its checkpoints are cosigned by the witness (verified here with the witness's key).
    // A publishes its live stream to a broker too: the retained checkpoint is the cosigned one.
    let broker = common::mqtt::Broker::start(&dir.path().join("broker"));
    let a_args = ["--mqtt-url", &broker.url(), "--witness", witness_arg.as_str()];
    let tap = common::mqtt::RawClient::connect(
        broker.port,
        &format!("tlog-tap-{}", std::process::id()),
        None,
        &[confstore_core::stream::CHECKPOINT_TOPIC],
    );
    let mut server_a = Server::start(&a, &a_args, &dir.path().join("a.log"));
    server_a.wait_ready();
    let token_a = common::admin_token(&a);
    let mut http_a = Http::new(server_a.addr).with_token(&token_a);
    patch_many(&mut http_a, "web", "a", 120);
    let seq_a = head_seq(&mut http_a);
    let note_a = published_checkpoint(&server_a, &token_a, seq_a, |n| cosigned(n) == Ok(1));
    Checkpoint::open(note_a.as_bytes(), &origin, &[store_verifying_key(&a)]).expect("still the store's signature");
    poll_until("the cosigned checkpoint on the stream", CHECKPOINT_DEADLINE, Duration::from_millis(20), || {
        tap.on(confstore_core::stream::CHECKPOINT_TOPIC).iter().any(|m| m.payload == note_a.as_bytes()).then_some(())
    });

    // B: the other history, signed with the same key; the witness refuses its checkpoint
    // (inconsistent with the one it cosigned), which stays without a cosignature.
    let b_log = dir.path().join("b.log");
    let mut server_b = Server::start(&b, &args, &b_log);
    server_b.wait_ready();
    let token_b = common::admin_token(&b);
    let mut http_b = Http::new(server_b.addr).with_token(&token_b);
    patch_many(&mut http_b, "web", "b", 130);
    let seq_b = head_seq(&mut http_b);
    let note_b = published_checkpoint(&server_b, &token_b, seq_b, |_| true);
    poll_until("the witness's refusal in B's log", CHECKPOINT_DEADLINE, Duration::from_millis(20), || {
        std::fs::read_to_string(&b_log).ok().filter(|t| t.contains("witness_refused")).map(|_| ())
    });
    let note_b_now = published_checkpoint(&server_b, &token_b, seq_b, |_| true);
    assert_eq!((cosigned(&note_b), cosigned(&note_b_now)), (Ok(0), Ok(0)), "{note_b_now}");

    // Clients that require the witness: A's is accepted, B's refused.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let client = |server: &Server, token: &str| {
        rt.block_on(
            confstore_client::Client::builder("web")
                .public_key_base64(&common::mqtt::store_public_key(&a))
                .rest_url(&format!("http://{}", server.addr))
                .token(token)
                .mqtt_discovery(false)
                .witness(&witness.vkey)
                .require_witnesses(1)
                .env(Vec::new())
                .start(),
        )
        .expect("the client starts")
    };
    let on_a = client(&server_a, &token_a);
    let on_b = client(&server_b, &token_b);
    poll_until("A's client to accept a witnessed checkpoint", CHECKPOINT_DEADLINE, Duration::from_millis(10), || {
        (on_a.stats().inclusions_verified >= 1).then_some(())
    });
    poll_until(
        "B's client to refuse its unwitnessed checkpoint",
        CHECKPOINT_DEADLINE,
        Duration::from_millis(10),
        || (on_b.stats().checkpoints_refused("unwitnessed") >= 1).then_some(()),
    );
    assert!(on_a.checkpoint().is_some_and(|c| c.size >= seq_a), "{:?}", on_a.stats());
    assert_eq!(on_b.checkpoint(), None, "{:?}", on_b.stats());
    assert_eq!(on_b.stats().checkpoints_accepted, 0);
    // The configuration itself was applied on both: the checks never hold it back.
    assert_eq!((on_a.stats().applied, on_b.stats().applied), (1, 1));
    rt.block_on(on_a.shutdown());
    rt.block_on(on_b.shutdown());
    server_a.terminate();
    server_b.terminate();
}

#[test]
fn a_bad_witness_setting_stops_serve_before_anything_is_created() {
    let dir = Scratch::new("tlog-bad-witness");
    let store = Store::in_dir(dir.path());
    let good_key = "witness.test/w1+0483b5b8+BCalxNTbwNQMFU5BM9hOYRtqdWEPfD7vdtzpDn/PQ/ps";
    for bad in [
        "http://127.0.0.1:1".to_owned(),
        format!("ftp://w.example={good_key}"),
        "http://127.0.0.1:1=witness.test/w1+0483b5b9+BCalxNTbwNQMFU5BM9hOYRtqdWEPfD7vdtzpDn/PQ/ps".to_owned(),
        "http://127.0.0.1:1=confstore/x+bd10e603+AYE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU".to_owned(),
    ] {
        let run = store.run(&["serve", "--listen", "127.0.0.1:0", "--no-mqtt", "--witness", &bad]);
        assert_eq!(run.status.code(), Some(1), "{bad}: {run}");
        assert!(run.stderr.contains("--witness"), "{bad}: {run}");
        assert!(!store.db().exists(), "{bad}: a store was created");
    }
}
