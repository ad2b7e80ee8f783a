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
