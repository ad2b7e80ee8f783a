//! Benchmarks of the projections issue's targets, each next to a baseline measured in the
//! same run on the same disk:
//!
//! 1. search over 10,000 keys in 20 services: p99 latency (target < 5 ms) vs a naive
//!    `LIKE` scan of the same rows;
//! 2. LKG verification of 100 services x 100 keys: median and p99 (target < 2 ms) vs
//!    HMAC-SHA256 alone and JSON parsing alone over the same bytes;
//! 3. `get --epoch N` (a verified replay) on a 100,000-event log (target < 1 s) vs reading
//!    the rows alone;
//! 4. rebuild (replay + search fold) of that log in events/s (target >= 50,000/s).
//!
//! 5. start-up with a 1,000,000-event log whose projections are current (target < 200 ms),
//!    and a full rebuild of it in events/s (target >= 50,000/s).
//!
//! `cargo run --release -p confstore-bench --bin projections [-- --check]`; counts by env:
//! BENCH_SEARCH_QUERIES, BENCH_LKG_RUNS, BENCH_LOG_EVENTS, BENCH_STARTUP_EVENTS.

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use confstore_core::state::{Change, ChangesetDraft};
use confstore_core::{SigningKey, State, StoreId};
use confstore_lkg::LkgContent;
use confstore_log::{DbOptions, LogReader, Store, Synchronous, SystemClock, Until};
use serde_json::json;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `per_mille`-th per-mille of the samples (500 = median, 990 = p99).
fn pct(mut v: Vec<Duration>, per_mille: u64) -> Duration {
    v.sort();
    let i = usize::try_from((v.len() as u64 - 1) * per_mille / 1000).unwrap_or(v.len() - 1);
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn draft(changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft {
        actor: "bench".into(),
        reason: String::new(),
        request_id: "b".into(),
        expected_epoch: None,
        changes,
    }
}

fn store(dir: &std::path::Path, name: &str) -> Result<Store> {
    // The build of the data set is not what is measured: NORMAL keeps it quick.
    let opts = DbOptions { synchronous: Synchronous::Normal, ..DbOptions::default() };
    Ok(Store::create(
        &dir.join(name),
        SigningKey::from_seed(&[1; 32]),
        StoreId([9; 16]),
        "bench",
        Arc::new(SystemClock),
        &opts,
    )?)
}

struct Line {
    what: String,
    figure: String,
    baseline: String,
    target: String,
    pass: bool,
}

fn search_bench(dir: &std::path::Path, queries: usize) -> Result<Line> {
    let s = store(dir, "search.db")?;
    s.append(draft((0..20).map(|i| Change::RegisterService { service: format!("service-{i:02}") }).collect()))?;
    for svc in 0..20 {
        for chunk in 0..5 {
            let changes = (0..100)
                .map(|k| {
                    let key = chunk * 100 + k;
                    Change::Set {
                        service: format!("service-{svc:02}"),
                        key: format!("setting_{key:03}"),
                        value: json!(format!("https://host-{svc}-{key}.internal.example:8443/v{}", key % 7)),
                    }
                })
                .collect();
            s.append(draft(changes))?;
        }
    }
    let reader = s.reader()?;
    confstore_search::attach(reader.connection())?;
    let tx = reader.connection().unchecked_transaction()?;
    confstore_search::apply(&tx, &reader.verified_after(0)?, &reader.current_state()?)?;
    tx.commit()?;
    let terms: Vec<String> = (0..queries).map(|i| format!("host-{}-{}", i % 20, (i * 37) % 500)).collect();
    let mut fts = Vec::with_capacity(queries);
    let mut scan = Vec::with_capacity(queries);
    let mut like = reader.connection().prepare(
        "SELECT service, key FROM search_keys WHERE service LIKE ?1 OR key LIKE ?1 OR value_text LIKE ?1 OR description LIKE ?1",
    )?;
    for t in &terms {
        let start = Instant::now();
        let hits = confstore_search::search(reader.connection(), t, None, None, 50)?;
        fts.push(start.elapsed());
        if hits.is_empty() {
            return Err(anyhow!("search for {t} found nothing"));
        }
        let start = Instant::now();
        let n = like.query_map([format!("%{t}%")], |_| Ok(()))?.count();
        scan.push(start.elapsed());
        if n == 0 {
            return Err(anyhow!("scan for {t} found nothing"));
        }
    }
    let p99 = pct(fts.clone(), 990);
    Ok(Line {
        what: format!("search, 10,000 keys in 20 services, {queries} queries"),
        figure: format!("p50 {} / p99 {}", ms(pct(fts, 500)), ms(p99)),
        baseline: format!("LIKE scan p50 {} / p99 {}", ms(pct(scan.clone(), 500)), ms(pct(scan, 990))),
        target: "p99 < 5 ms".into(),
        pass: p99 < Duration::from_millis(5),
    })
}

fn lkg_bench(dir: &std::path::Path, runs: usize) -> Result<Line> {
    let mut state = State::default();
    for s in 0..100 {
        let values: std::collections::BTreeMap<String, String> =
            (0..100).map(|k| (format!("key_{k:03}"), format!("\"value-{s}-{k}-abcdefghij\""))).collect();
        state.services.insert(format!("service-{s:03}"), values.into());
    }
    let services: BTreeMap<String, serde_json::Value> = state
        .services
        .keys()
        .map(|s| Ok((s.clone(), confstore_snapshots::project(&state, "09", 1, s)?.to_json())))
        .collect::<Result<_, confstore_snapshots::SnapshotError>>()?;
    let content = LkgContent {
        store_id: "09".into(),
        generation: 1,
        epoch: 1,
        seq: 1,
        head_hash: "00".repeat(32),
        services,
        tokens: Default::default(),
    };
    let key = [5u8; 32];
    let path = dir.join(confstore_lkg::FILE_NAME);
    let jws = content.to_jws(&key, confstore_core::state::canonical_json_text);
    confstore_lkg::write_atomically(&path, &jws)?;
    let bytes = std::fs::read(&path)?;
    let (mut full, mut parse, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        let file = std::fs::read(&path)?;
        std::hint::black_box(confstore_lkg::check_signature(&file, &key)?);
        verify.push(start.elapsed());
        let start = Instant::now();
        let loaded = confstore_lkg::load(&path, &key, None)?;
        full.push(start.elapsed());
        if loaded.services.len() != 100 {
            return Err(anyhow!("LKG lost services"));
        }
        let start = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        parse.push(start.elapsed());
        std::hint::black_box(v);
    }
    let p99 = pct(verify.clone(), 990);
    Ok(Line {
        what: format!("LKG verify (read + MAC), 100 services x 100 keys ({} KB)", bytes.len() / 1024),
        figure: format!("p50 {} / p99 {}", ms(pct(verify, 500)), ms(p99)),
        baseline: format!(
            "outer JSON parse {}; full load (verify + parse all snapshots) p50 {}",
            ms(pct(parse, 500)),
            ms(pct(full, 500))
        ),
        target: "< 2 ms".into(),
        pass: p99 < Duration::from_millis(2),
    })
}

/// Registers 20 services, then appends `events` value sets in changesets of `per`.
fn fill(s: &Store, events: usize, per: usize) -> Result<()> {
    s.append(draft((0..20).map(|i| Change::RegisterService { service: format!("svc{i}") }).collect()))?;
    for c in 0..events / per {
        let changes = (0..per)
            .map(|k| Change::Set {
                service: format!("svc{}", k % 20),
                key: format!("k{}", k / 20),
                value: json!(c * per + k),
            })
            .collect();
        s.append(draft(changes))?;
    }
    Ok(())
}

fn log_bench(dir: &std::path::Path, events: usize) -> Result<(Line, Line)> {
    let s = store(dir, "log.db")?;
    fill(&s, events, 100)?;
    drop(s);
    let reader = LogReader::open(&dir.join("log.db"))?;
    let head = reader.head()?;
    let start = Instant::now();
    let mut rows = 0u64;
    reader.for_each_event(1, |_| {
        rows += 1;
        Ok(true)
    })?;
    let read_only = start.elapsed();
    let mid = head.epoch / 2;
    let start = Instant::now();
    let state = reader.replay(Until::Epoch(mid))?;
    let replay = start.elapsed();
    if state.epoch != mid {
        return Err(anyhow!("replay stopped at epoch {}", state.epoch));
    }
    let get = Line {
        what: format!("get --epoch {mid} on a {rows}-event log (verified replay)"),
        figure: ms(replay),
        baseline: format!("reading every row alone {}", ms(read_only)),
        target: "< 1 s".into(),
        pass: replay < Duration::from_secs(1),
    };
    confstore_search::attach(reader.connection())?;
    let tx = reader.connection().unchecked_transaction()?;
    let start = Instant::now();
    let mut rebuild = confstore_search::Rebuild::start(&tx)?;
    reader.replay_with(Until::Head, |ev| rebuild.push(ev))?;
    let n = rebuild.finish()?;
    tx.commit()?;
    let secs = start.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let rebuild = Line {
        what: format!("rebuild (replay + search fold) of the {rows}-event log"),
        figure: format!("{rate:.0} events/s"),
        baseline: format!("reading rows alone {:.0} rows/s", rows as f64 / read_only.as_secs_f64()),
        target: ">= 50,000 events/s".into(),
        pass: rate >= 50_000.0,
    };
    Ok((get, rebuild))
}

/// Start-up on a long log whose projections are current: open the store (migrations check,
/// write model, events after its checkpoint), read the current state, and check the search
/// index's checkpoint; plus a full rebuild of that log.
fn startup_bench(dir: &std::path::Path, events: usize) -> Result<(Line, Line)> {
    let path = dir.join("long.db");
    {
        let s = store(dir, "long.db")?;
        fill(&s, events, 1000)?;
    }
    // Make the projections current, as a running server keeps them.
    let reader = LogReader::open(&path)?;
    confstore_search::attach(reader.connection())?;
    let tx = reader.connection().unchecked_transaction()?;
    confstore_search::apply(&tx, &reader.verified_after(0)?, &reader.current_state()?)?;
    tx.commit()?;
    drop(reader);
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let s =
            Store::open(&path, Some(SigningKey::from_seed(&[1; 32])), Arc::new(SystemClock), &DbOptions::default())?;
        let reader = s.reader()?;
        let state = reader.current_state()?;
        let head = reader.head()?;
        let current = confstore_search::checkpoint(reader.connection())?.is_some_and(|(seq, _)| seq == head.seq);
        times.push(start.elapsed());
        if !current || state.seq != head.seq {
            return Err(anyhow!("projections were not current at start-up"));
        }
        std::mem::forget(s); // measure start-up, not the close-time checkpoint
    }
    let ready = pct(times, 500);
    let start = Instant::now();
    let reader = LogReader::open(&path)?;
    confstore_search::attach(reader.connection())?;
    let tx = reader.connection().unchecked_transaction()?;
    let mut rebuild = confstore_search::Rebuild::start(&tx)?;
    reader.replay_with(Until::Head, |ev| rebuild.push(ev))?;
    let n = rebuild.finish()?;
    tx.commit()?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok((
        Line {
            what: format!("start-up, {n}-event log, projections current"),
            figure: format!("ready in {}", ms(ready)),
            baseline: "open + write model + tail + search checkpoint".into(),
            target: "< 200 ms".into(),
            pass: ready < Duration::from_millis(200),
        },
        Line {
            what: format!("full rebuild of the {n}-event log"),
            figure: format!("{rate:.0} events/s"),
            baseline: "replay (links, hashes) + search fold".into(),
            target: ">= 50,000 events/s".into(),
            pass: rate >= 50_000.0,
        },
    ))
}

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    match run() {
        Ok(lines) => {
            println!(
                "confstore projections benchmark ({} build)",
                if cfg!(debug_assertions) { "DEBUG: figures mean nothing" } else { "release" }
            );
            println!("{:<62} {:<28} {:<44} {:<20} result", "measure", "figure", "baseline (same run)", "target");
            for l in &lines {
                println!(
                    "{:<62} {:<28} {:<44} {:<20} {}",
                    l.what,
                    l.figure,
                    l.baseline,
                    l.target,
                    if l.pass { "PASS" } else { "FAIL" }
                );
            }
            if check && lines.iter().any(|l| !l.pass) { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<Vec<Line>> {
    let dir = tempfile::tempdir()?;
    let mut lines = vec![search_bench(dir.path(), count("BENCH_SEARCH_QUERIES", 2000))?];
    lines.push(lkg_bench(dir.path(), count("BENCH_LKG_RUNS", 200))?);
    let (get, rebuild) = log_bench(dir.path(), count("BENCH_LOG_EVENTS", 100_000))?;
    lines.push(get);
    lines.push(rebuild);
    let (startup, full) = startup_bench(dir.path(), count("BENCH_STARTUP_EVENTS", 1_000_000))?;
    lines.push(startup);
    lines.push(full);
    Ok(lines)
}
