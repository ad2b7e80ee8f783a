//! `restore-check`: what to run after any restore (Litestream, a copied file, a backup).
//! A hash chain cannot show that its newest events are missing (TESTPLAN "design facts"):
//! a restored database that verifies may still be behind what clients have seen. So, beyond
//! SQLite's integrity check and a full verification, the head is compared with the last
//! signed head published off the host — a file, or the broker's retained
//! `system/config-head` — and a database behind it is reported with the exact missing range.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::{VerifyingKey, jws, stream};
use confstore_log::LogReader;
use serde_json::{Value, json};

use super::Ctx;
use super::audit::{trusted_key_from, verify_database};
use crate::cli::RestoreCheckArgs;
use crate::output;

/// How long to wait for the broker's retained head.
const MQTT_WAIT: Duration = Duration::from_secs(5);

/// A signed head from somewhere, verified.
struct KnownHead {
    source: String,
    store_id: String,
    generation: u64,
    seq: u64,
    hash: String,
}

pub fn check(ctx: &Ctx, args: &RestoreCheckArgs) -> Result<ExitCode> {
    let db = ctx.db_path();
    if !db.exists() {
        bail!("no database at {}", db.display());
    }
    let anchor = trusted_key_from(ctx, args.public_key.as_deref())?;
    let reader = ctx.reader()?;
    let integrity = integrity_check(&reader)?;
    let chain = verify_database(&reader, anchor, false)?;
    let generation = confstore_log::rows::store_row(reader.connection())?.map_or(1, |r| r.1);
    let mut keys: Vec<VerifyingKey> = reader.keys()?.entries().iter().map(|e| e.key).collect();
    keys.push(anchor);

    let mut known = Vec::new();
    for path in &args.head {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        known.push(parse_head(text.trim(), &keys, &path.display().to_string())?);
    }
    if let Some(url) = &args.mqtt_url {
        let text = retained_head(url, args)?;
        known.push(parse_head(&text, &keys, &format!("{url} (retained {})", stream::HEAD_TOPIC))?);
    }

    let mut problems: Vec<String> = Vec::new();
    if integrity != "ok" {
        problems.push(format!("sqlite integrity_check: {integrity}"));
    }
    let (head_seq, head_hash, store_id) = match &chain {
        Ok(h) => (h.seq, h.hash.to_hex(), h.store_id.to_hex()),
        Err(f) => {
            problems.push(format!("the chain does not verify: first bad event is seq {}: {}", f.seq, f.reason));
            (0, String::new(), reader.store_id().to_hex())
        }
    };
    let mut compared = Vec::new();
    let mut missing: Option<(u64, u64)> = None;
    for k in &known {
        let verdict = if k.store_id != store_id {
            problems.push(format!("{}: a head of store {}, this database is store {store_id}", k.source, k.store_id));
            "another_store"
        } else if k.generation > generation {
            problems.push(format!(
                "{}: a head of generation {}, this database is generation {generation}: it is from before a restore",
                k.source, k.generation
            ));
            "older_generation"
        } else if k.generation < generation {
            "newer_generation"
        } else if k.seq > head_seq {
            let range = (head_seq + 1, k.seq);
            missing = Some(missing.map_or(range, |(a, b)| (a.min(range.0), b.max(range.1))));
            problems.push(format!(
                "{}: the last published head is event {} but this database ends at event {head_seq}: \
                 events {}..={} are missing",
                k.source, k.seq, range.0, range.1
            ));
            "behind"
        } else if event_hash(&reader, k.seq)?.as_deref() != Some(k.hash.as_str()) {
            problems.push(format!(
                "{}: event {} here is not the one that was published (hash {}): the history forked",
                k.source, k.seq, k.hash
            ));
            "forked"
        } else {
            "ok"
        };
        compared.push(
            json!({"source": k.source, "seq": k.seq, "hash": k.hash, "generation": k.generation, "verdict": verdict}),
        );
    }
    let ok = problems.is_empty();
    if args.json {
        output::json(&json!({
            "ok": ok,
            "database": db,
            "integrity": integrity,
            "chain": match &chain { Ok(_) => json!("ok"), Err(f) => json!({"first_bad_seq": f.seq, "reason": f.reason}) },
            "head": {"seq": head_seq, "hash": head_hash, "generation": generation, "store_id": store_id},
            "compared_with": compared,
            "missing": missing.map(|(from, to)| json!({"from_seq": from, "to_seq": to, "events": to - from + 1})),
            "problems": problems,
        }));
    } else {
        println!("integrity: {integrity}");
        match &chain {
            Ok(h) => println!("chain: ok, {} events, head {}", h.seq, h.hash),
            Err(f) => println!("chain: FAILED at seq {}: {}", f.seq, f.reason),
        }
        for c in &compared {
            println!(
                "signed head {} (seq {}): {}",
                c["source"].as_str().unwrap_or(""),
                c["seq"],
                c["verdict"].as_str().unwrap_or("")
            );
        }
        if known.is_empty() {
            eprintln!(
                "warning: no signed head to compare with (--head FILE or --mqtt-url URL): a restore that lost \
                 the newest events cannot be told from a complete one"
            );
        }
        for p in &problems {
            eprintln!("problem: {p}");
        }
        println!("{}", if ok { "restore check: ok" } else { "restore check: FAILED" });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `PRAGMA integrity_check` (the full check, not `quick_check`): `ok`, or the problems found.
fn integrity_check(reader: &LogReader) -> Result<String> {
    let mut st = reader.connection().prepare("PRAGMA integrity_check").context("cannot run integrity_check")?;
    let rows: Vec<String> =
        st.query_map([], |r| r.get::<_, String>(0)).context("integrity_check")?.collect::<Result<_, _>>()?;
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

/// Verifies a head JWS (typ confstore-head+json) with the store's keys and reads it.
fn parse_head(text: &str, keys: &[VerifyingKey], source: &str) -> Result<KnownHead> {
    let jws_doc: Value = serde_json::from_str(text).with_context(|| format!("{source}: not a JSON head JWS"))?;
    let doc = jws::verify(&jws_doc, jws::TYP_HEAD, keys).map_err(|e| anyhow!("{source}: {e}"))?;
    let field = |k: &str| doc.get(k).cloned().ok_or_else(|| anyhow!("{source}: the head has no {k:?}"));
    Ok(KnownHead {
        source: source.to_owned(),
        store_id: field("store_id")?.as_str().unwrap_or_default().to_owned(),
        generation: field("generation")?.as_u64().unwrap_or(0),
        seq: field("seq")?.as_u64().unwrap_or(0),
        hash: field("hash")?.as_str().unwrap_or_default().to_owned(),
    })
}

/// Subscribes to `system/config-head` and returns the retained message's text.
fn retained_head(url: &str, args: &RestoreCheckArgs) -> Result<String> {
    let mut settings = confstore_server::stream::MqttSettings::from_url(
        url,
        format!("confstore-restore-check-{}", std::process::id()),
    )?;
    args.mqtt_access.apply(&mut settings);
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
