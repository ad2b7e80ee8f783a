//! Replays every committed corpus input and past crash input (`corpus/<target>/`,
//! `artifacts/<target>/`) through its fuzz target on stable Rust: a regression test of the
//! fuzzing (docs/testing.md, "Fuzzing").

use std::path::Path;

#[test]
fn every_corpus_and_artifact_input_returns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (name, target) in confstore_fuzz::TARGETS {
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("README")) {
                    continue;
                }
                let data = std::fs::read(&path).expect("readable input");
                target(&data);
                replayed += 1;
            }
        }
    }
    assert!(replayed >= confstore_fuzz::TARGETS.len(), "only {replayed} inputs: are the corpora committed?");
}

#[test]
fn every_target_takes_empty_and_arbitrary_bytes() {
    for (_, target) in confstore_fuzz::TARGETS {
        target(b"");
        target(&[0xff; 64]);
        target(b"{}");
        target(b"[]");
    }
}

/// (Re)writes the seed corpora from the documented export (docs/format.md) and from documents
/// signed here with the targets' fixed keys: `cargo test -p confstore-fuzz -- --ignored`.
#[test]
#[ignore = "rewrites tests/fuzz/corpus; run by hand"]
fn regenerate_seed_corpora() {
    use base64::Engine;
    use confstore_core::{jws, secret};
    use serde_json::json;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let format_md = std::fs::read_to_string(root.join("../../docs/format.md")).expect("docs/format.md");
    let start = format_md.find("```jsonl\n").expect("export example") + "```jsonl\n".len();
    let export = &format_md[start..start + format_md[start..].find("```").expect("end of the block")];
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    seeds.push(("export_lines", "documented".into(), export.as_bytes().to_vec()));
    let lines: Vec<&str> = export.lines().collect();
    seeds.push(("export_lines", "header_and_one".into(), format!("{}\n{}\n", lines[0], lines[1]).into_bytes()));
    for (i, line) in lines[1..].iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let body = base64::engine::general_purpose::STANDARD.decode(v["body"].as_str().expect("body")).expect("b64");
        seeds.push(("event_body", format!("documented_{}", i + 1), body));
    }

    let key = confstore_fuzz::signing_key();
    let snapshot = confstore_fuzz::held_document();
    let mut next = snapshot.clone();
    next["epoch"] = json!(7);
    next["changed_epoch"] = json!(7);
    next["prev_epoch"] = json!(5);
    next["changed_seq"] = json!(12);
    let mut delta = next.clone();
    delta["config"] = json!({"rate": 500});
    delta["sources"] = json!({"rate": "service"});
    delta["removed"] = json!(["burst"]);
    let signed_snapshot = jws::sign(&next, jws::TYP_SNAPSHOT, &key);
    let signed_delta = jws::sign(&delta, jws::TYP_DELTA, &key);
    seeds.push(("stream_message", "snapshot".into(), signed_snapshot.to_string().into_bytes()));
    seeds.push(("stream_message", "delta".into(), signed_delta.to_string().into_bytes()));
    seeds.push(("stream_message", "delta_document".into(), delta.to_string().into_bytes()));
    seeds.push(("stream_message", "snapshot_document".into(), next.to_string().into_bytes()));

    let client_file = json!({"format": confstore_fuzz::confstore_client_lkg_format(), "service": confstore_fuzz::SERVICE,
        "store_id": confstore_fuzz::STORE_ID_HEX, "jws": jws::sign(&snapshot, jws::TYP_SNAPSHOT, &key),
        "deltas": [signed_delta]});
    seeds.push(("lkg_client", "file_with_delta".into(), client_file.to_string().into_bytes()));
    seeds.push(("lkg_client", "delta_document".into(), delta.to_string().into_bytes()));

    let payload = json!({"store_id": confstore_fuzz::STORE_ID_HEX, "generation": 1, "epoch": 5, "seq": 9,
        "head_hash": "ab".repeat(32), "services": {"api": {"rate": 100}}, "tokens": {"ci": {"role": "reader"}}})
    .to_string();
    seeds.push(("lkg_server", "payload".into(), payload.clone().into_bytes()));
    seeds.push(("lkg_server", "file".into(), confstore_fuzz::lkg_server_file(payload.as_bytes()).into_bytes()));

    let plaintext = secret::Plaintext(zeroize_string("\"hunter2\""));
    let envelope = secret::seal(
        &confstore_fuzz::MASTER_KEY,
        1,
        [3; 12],
        &confstore_fuzz::store_id(),
        confstore_fuzz::SERVICE,
        "password",
        &plaintext,
    );
    seeds.push(("secret_open", "marker".into(), secret::marker(&envelope).to_string().into_bytes()));
    let mut raw = envelope.key_version.to_le_bytes().to_vec();
    raw.extend_from_slice(&envelope.nonce);
    raw.extend_from_slice(&envelope.ciphertext);
    seeds.push(("secret_open", "raw".into(), raw));

    for (name, body) in [
        ("set", r#"{"changes":[{"op":"set","service":"api","key":"rate","value":100}],"reason":"load"}"#),
        ("numbers", r#"{"a":1.5,"b":-0,"c":1e400,"d":18446744073709551615,"e":[0.1,2.50]}"#),
        ("duplicate", r#"{"a":{"b":1,"b":2}}"#),
        ("token", r#"{"name":"ci","role":"writer","services":["api"]}"#),
    ] {
        seeds.push(("rest_json", name.into(), body.as_bytes().to_vec()));
    }

    for (target, name, data) in seeds {
        let dir = root.join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), data).expect("write seed");
    }
}

fn zeroize_string(s: &str) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(s.to_owned())
}

/// The signed seeds pass the checks they are meant to get past, so the fuzzer starts from
/// inputs that reach the code after verification.
#[test]
fn signed_seeds_verify_with_the_targets_fixtures() {
    use confstore_core::{ChainVerifier, export, stream};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let read = |p: &str| std::fs::read(corpus.join(p)).expect("seed");

    let export_text = String::from_utf8(read("export_lines/documented")).expect("UTF-8");
    let mut lines = export_text.lines();
    let store = export::parse_header(lines.next().expect("header")).expect("header parses");
    let anchor = confstore_core::VerifyingKey::from_bytes(&hex_bytes(confstore_fuzz::ANCHOR_HEX)).expect("anchor");
    let mut verifier = ChainVerifier::new(store, Some(anchor));
    for (i, line) in lines.enumerate() {
        verifier.push(&export::parse_event(i as u64 + 2, line).expect("line parses")).expect("event verifies");
    }
    verifier.finish().expect("the documented export verifies");

    confstore_lkg::verify_jws(&read("lkg_server/file"), &confstore_fuzz::LKG_KEY).expect("server LKG verifies");

    let keys = [confstore_fuzz::signing_key().verifying_key()];
    let delta: serde_json::Value = serde_json::from_slice(&read("stream_message/delta")).expect("JSON");
    let (kind, _, version) =
        stream::verify_update(&delta, &keys, Some(confstore_fuzz::STORE_ID_HEX), "api").expect("the delta verifies");
    assert_eq!(kind, stream::UpdateKind::Delta);
    let held = stream::snapshot_version(&confstore_fuzz::held_document()).expect("held version");
    assert_eq!(stream::judge_delta(Some(&held), &version), Ok(stream::Verdict::Apply));
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len() / 2).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex")).collect()
}
