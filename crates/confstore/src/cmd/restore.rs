//! `restore-check`: what to run after any restore (Litestream, a copied file, a backup).
//! A hash chain cannot show that its newest events are missing (docs/testing.md "design facts"):
//! a restored database that verifies may still be behind what clients have seen. So, beyond
//! SQLite's integrity check and a full verification, the head is compared with the last
//! signed head published off the host — a file, or the broker's retained
//! `system/config-head` — and a database behind it is reported with the exact missing range.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::{VerifyingKey, stream};
use confstore_lkg::heads::{self as known_heads, DbHead, KnownHead, Standing, standing};
use confstore_log::LogReader;
use serde_json::json;

use super::Ctx;
use super::audit::{trusted_key_from, verify_database};
use crate::cli::{HeadSourceArgs, MqttAccessArgs, RestoreCheckArgs};
use crate::output;

/// How long to wait for the broker's retained head.
const MQTT_WAIT: Duration = Duration::from_secs(5);

pub fn check(ctx: &Ctx, args: &RestoreCheckArgs) -> Result<ExitCode> {
    let db = ctx.db_path();
    if !db.exists() {
        bail!("no database at {}", db.display());
    }
    let anchor = trusted_key_from(ctx, args.public_key.as_deref())?;
    match check_database(ctx, args, anchor) {
        // A restore SQLite cannot even read through (a page that is not what it should be)
        // is a verdict, not a failure of the check: say so the way every other problem is
        // said, `--json` included.
        Err(e) if damaged(&e) => {
            let problem = format!("the database is damaged: {e:#}");
            if args.json {
                output::json(&json!({
                    "ok": false,
                    "database": db,
                    "integrity": format!("{e:#}"),
                    "chain": "unreadable",
                    "problems": [problem],
                }));
            } else {
                eprintln!("problem: {problem}");
                println!("restore check: FAILED");
            }
            Ok(ExitCode::from(1))
        }
        other => other,
    }
}

/// Whether `e` is SQLite finding the file damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
fn damaged(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<confstore_log::LogError>().is_some_and(confstore_log::LogError::is_damaged))
}

fn check_database(ctx: &Ctx, args: &RestoreCheckArgs, anchor: VerifyingKey) -> Result<ExitCode> {
    let db = ctx.db_path();
    let reader = ctx.reader()?;
    let integrity = integrity_check(&reader)?;
    let chain = verify_database(&reader, anchor, false)?;
    let generation = reader.head().map_or(1, |h| h.generation);
    let (known, warnings) = gather_known_heads(ctx, &reader, Some(anchor), &args.heads)?;

    let mut problems: Vec<String> = Vec::new();
    if integrity != "ok" {
        problems.push(format!("sqlite integrity_check: {integrity}"));
    }
    let (head_seq, head_hash, store_id) = match &chain {
        Ok(h) => (h.seq, h.hash.to_hex(), h.store_id),
        Err(f) => {
            problems.push(format!("the chain does not verify: first bad event is seq {}: {}", f.seq, f.reason));
            // Still compare where the log ends, so a missing tail is not reported as a
            // missing whole log.
            let last = reader.head().map(|h| (h.seq, h.hash.to_hex())).unwrap_or_default();
            (last.0, last.1, reader.store_id())
        }
    };
    let db_head = DbHead { store_id, generation, seq: head_seq };
    let mut compared = Vec::new();
    let mut missing: Option<(u64, u64)> = None;
    for k in &known {
        let verdict = standing(&db_head, k, |seq| event_hash(&reader, seq))?;
        if let Standing::Behind { from, to } = verdict {
            missing = Some(missing.map_or((from, to), |(a, b)| (a.min(from), b.max(to))));
        }
        if let Some(text) = verdict.describe(k, &db_head) {
            problems.push(text);
        }
        compared.push(json!({"source": k.source, "seq": k.seq, "hash": k.hash, "generation": k.generation,
                             "verdict": verdict.name()}));
    }
    let ok = problems.is_empty();
    if args.json {
        output::json(&json!({
            "ok": ok,
            "database": db,
            "integrity": integrity,
            "chain": match &chain { Ok(_) => json!("ok"), Err(f) => json!({"first_bad_seq": f.seq, "reason": f.reason}) },
            "head": {"seq": head_seq, "hash": head_hash, "generation": generation, "store_id": store_id.to_hex()},
            "compared_with": compared,
            "missing": missing.map(|(from, to)| json!({"from_seq": from, "to_seq": to, "events": to - from + 1})),
            "warnings": warnings,
            "problems": problems,
        }));
    } else {
        println!("integrity: {integrity}");
        match &chain {
            Ok(h) => println!("chain: ok, {} events, head {}, generation {generation}", h.seq, h.hash),
            Err(f) => println!("chain: FAILED at seq {}: {}", f.seq, f.reason),
        }
        for c in &compared {
            println!(
                "known head {} (seq {}): {}",
                c["source"].as_str().unwrap_or(""),
                c["seq"],
                c["verdict"].as_str().unwrap_or("")
            );
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        if known.is_empty() {
            eprintln!(
                "warning: no signed head to compare with (--head FILE or --mqtt-url URL, or the data directory's \
                 LKG file and publisher checkpoint): a restore that lost the newest events cannot be told from a \
                 complete one"
            );
        }
        for p in &problems {
            eprintln!("problem: {p}");
        }
        println!("{}", if ok { "restore check: ok" } else { "restore check: FAILED" });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Every head recorded before that can be found: the data directory's own records (LKG
/// file and high-water mark, publisher checkpoint), the signed head files given, and the
/// broker's retained head when a URL is given. Also warnings about records that exist but
/// are not usable. A forged head file or retained head is an error.
pub(super) fn gather_known_heads(
    ctx: &Ctx,
    reader: &LogReader,
    trusted: Option<VerifyingKey>,
    sources: &HeadSourceArgs,
) -> Result<(Vec<KnownHead>, Vec<String>)> {
    // The database's own keys, plus the trusted one: a head of the newer history may be
    // signed by a key rotated in after the point this copy ends.
    let mut keys: Vec<VerifyingKey> = reader.keys()?.entries().iter().map(|e| e.key).collect();
    keys.extend(trusted);
    let (mut known, mut warnings) = match ctx.keys().and_then(|k| k.lkg_key()) {
        Ok(lkg_key) => known_heads::local(&known_heads::LocalFiles {
            data_dir: &ctx.data_dir,
            head_file: None,
            lkg_key: &lkg_key,
            store_keys: &keys,
        }),
        Err(e) => (Vec::new(), vec![format!("the data directory's LKG file is not compared: {e:#}")]),
    };
    for path in &sources.head {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        known.push(known_heads::from_head_jws(&text, &keys, &path.display().to_string()).map_err(|e| anyhow!(e))?);
    }
    if let Some(url) = &sources.mqtt_url {
        let text = retained_head(url, &sources.mqtt_access)?;
        let source = format!("{url} (retained {})", stream::HEAD_TOPIC);
        known.push(known_heads::from_head_jws(&text, &keys, &source).map_err(|e| anyhow!(e))?);
    }
    warnings.dedup();
    Ok((known, warnings))
}

/// How the database stands against each known head.
pub(super) fn judge_all(reader: &LogReader, known: &[KnownHead]) -> Result<Vec<(KnownHead, Standing)>> {
    let head = reader.head()?;
    let db = DbHead { store_id: head.store_id, generation: head.generation, seq: head.seq };
    known.iter().map(|k| Ok((k.clone(), standing(&db, k, |seq| event_hash(reader, seq))?))).collect()
}

/// Problems with the data directory's own records of the head (no broker, no files
/// named): what every write command checks before it appends.
pub(super) fn local_problems(ctx: &Ctx, reader: &LogReader) -> Result<Vec<String>> {
    let trusted = trusted_key_from(ctx, None).ok();
    let (known, _) = gather_known_heads(ctx, reader, trusted, &HeadSourceArgs::default())?;
    let head = reader.head()?;
    let db = DbHead { store_id: head.store_id, generation: head.generation, seq: head.seq };
    Ok(judge_all(reader, &known)?.iter().filter_map(|(k, v)| v.describe(k, &db)).collect())
}

/// `PRAGMA integrity_check` (the full check, not `quick_check`): `ok`, or the problems found.
fn integrity_check(reader: &LogReader) -> Result<String> {
    let rows = reader
        .connection()
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>())
        .map_err(confstore_log::LogError::sqlite("running integrity_check"))?;
    Ok(rows.join("; "))
}

/// The hash (hex) of event `seq`, if the log has it.
fn event_hash(reader: &LogReader, seq: u64) -> Result<Option<String>> {
    let mut found = None;
    reader.for_each_event(seq, |ev| {
        if ev.seq == seq {
            found = Some(ev.hash.to_hex());
        }
        Ok(false)
    })?;
    Ok(found)
}

/// Subscribes to `system/config-head` and returns the retained message's text.
fn retained_head(url: &str, access: &MqttAccessArgs) -> Result<String> {
    let mut settings =
        confstore_server::MqttSettings::from_url(url, format!("confstore-restore-check-{}", std::process::id()))?;
    access.apply(&mut settings);
    let mut options = settings.options(None)?;
    options.set_clean_session(true);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        client.subscribe(stream::HEAD_TOPIC, rumqttc::QoS::AtLeastOnce).await?;
        let wait = async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) if p.topic == stream::HEAD_TOPIC => {
                        return Ok(String::from_utf8_lossy(&p.payload).into_owned());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(anyhow!("cannot read from {url}: {e}")),
                }
            }
        };
        let text = tokio::time::timeout(MQTT_WAIT, wait)
            .await
            .map_err(|_| anyhow!("no retained {} at {url} within {MQTT_WAIT:?}", stream::HEAD_TOPIC))??;
        let _ = client.disconnect().await;
        Ok(text)
    })
}
