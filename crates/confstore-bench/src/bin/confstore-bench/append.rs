//! Sections 1 and 2: durable appends.
//!
//! Section 1 compares `Store::append` of one single-event changeset per commit, one appender,
//! with raw rusqlite single-row commits into a table of the same columns, same constraints
//! and same pragmas (opened by `confstore_log::db::open`, so WAL, `synchronous` and the rest
//! are set by the very code the store uses). A third variant, "raw + log SQL", runs the SQL
//! the writer runs per changeset (read `PRAGMA data_version`, insert the event; the write
//! model and verified head are checkpointed every 256 events) without signing, to show where
//! confstore's time goes. Variants alternate within each run so drift affects them alike.
//!
//! Section 2 runs many appender threads against one store (group commit), and as a baseline
//! the same number of threads, each with its own raw connection, committing one row each.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use confstore_core::state::{self, ChangesetDraft};
use confstore_core::{EventBody, State, StoredEvent};
use confstore_log::{DbOptions, Store, Synchronous, db, rows};
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;

use crate::workload;
use confstore_bench::timing::{Samples, rate};

/// The `events` table of migration 0001, alone: taken from the migration itself, so the
/// raw baseline always has the same columns, types and CHECKs (and no triggers).
pub fn raw_events_ddl() -> &'static str {
    let sql = db::MIGRATIONS[0].2;
    let start = sql.find("CREATE TABLE events").unwrap_or(0);
    let end = sql[start..].find(") STRICT;").map_or(sql.len(), |e| start + e + ") STRICT;".len());
    &sql[start..end]
}

/// Distinct keys the single appender cycles through.
pub const SINGLE_KEYS: usize = 1000;
/// Distinct keys per service (one service per thread) in the concurrent workloads.
pub const GROUP_KEYS_PER_SERVICE: usize = 64;

/// How many operations each measurement does.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Counts {
    /// Timed runs per measurement.
    pub runs: usize,
    /// Untimed operations before each timed run.
    pub warmup: usize,
    /// Timed single-appender operations per run.
    pub ops: usize,
}

/// Section 1 at one `synchronous` level: rates in operations (= events = commits) per second.
#[derive(Clone, Debug, Serialize)]
pub struct SingleResult {
    /// `FULL` or `NORMAL`.
    pub synchronous: &'static str,
    /// Raw rusqlite, one row per commit.
    pub raw: Samples,
    /// Raw rusqlite running the writer's per-changeset SQL, one changeset per commit.
    pub raw_log_sql: Samples,
    /// `Store::append`, one single-event changeset per call.
    pub confstore: Samples,
}

impl SingleResult {
    /// confstore's median rate over raw's.
    pub fn ratio(&self) -> f64 {
        self.confstore.median / self.raw.median
    }
}

/// Section 2.
#[derive(Clone, Debug, Serialize)]
pub struct GroupResult {
    /// `FULL` or `NORMAL`.
    pub synchronous: &'static str,
    /// Appender threads.
    pub threads: usize,
    /// Single-event changesets per run (all threads together).
    pub events_per_run: usize,
    /// confstore events per second.
    pub confstore: Samples,
    /// Raw rusqlite rows per second, one connection per thread, one row per commit.
    pub raw_per_thread_connections: Samples,
    /// Rows per run of the raw baseline.
    pub raw_rows_per_run: usize,
    /// Changesets per SQLite commit (= per fsync at FULL), from one extra untimed run whose
    /// WAL is pinned by an open reader so that every commit frame can be counted afterwards.
    pub changesets_per_commit: f64,
    /// Events per second of that extra run (a growing, pinned WAL: for information only).
    pub pinned_run_events_per_sec: f64,
}

/// Per-event CPU costs of the writer's pure steps (no SQLite), microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct CpuCosts {
    /// `state::decide` of a one-change draft (validation, canonical JSON).
    pub decide_us: f64,
    /// `state::seal`: postcard encode + SHA-256 + Ed25519 sign.
    pub seal_us: f64,
    /// Of which the Ed25519 signature alone.
    pub sign_us: f64,
    /// One request/reply round trip between two threads over std's bounded channels, as
    /// `Store::append` does with its writer (two thread wake-ups), with nothing else done.
    pub handoff_us: f64,
}

fn opts(sync: Synchronous) -> DbOptions {
    DbOptions { synchronous: sync, ..DbOptions::default() }
}

/// The name of a `synchronous` level.
pub fn sync_name(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

/// Section 1 at `sync`.
pub fn single(dir: &Path, sync: Synchronous, c: Counts) -> Result<SingleResult> {
    let name = sync_name(sync);
    let rows = workload::sealed_rows(c.warmup + c.ops, SINGLE_KEYS)?;
    let drafts: Vec<ChangesetDraft> = (0..c.warmup + c.ops).map(|i| workload::set_draft(0, i, SINGLE_KEYS)).collect();
    let (mut raw, mut log_sql, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..c.runs {
        // Rotate the order so that no variant always runs first (cold) or last.
        for variant in 0..3 {
            let path = dir.join(format!("append-{name}-{run}-{variant}.db"));
            match (variant + run) % 3 {
                0 => raw.push(raw_single(&path, sync, &rows, c.warmup, false)?),
                1 => log_sql.push(raw_single(&path, sync, &rows, c.warmup, true)?),
                _ => cs.push(confstore_single(&path, sync, &drafts, c.warmup, run)?),
            }
            remove_db(&path);
        }
    }
    Ok(SingleResult {
        synchronous: name,
        raw: Samples::new(raw),
        raw_log_sql: Samples::new(log_sql),
        confstore: Samples::new(cs),
    })
}

fn raw_single(
    path: &Path,
    sync: Synchronous,
    rows: &[(StoredEvent, EventBody)],
    warmup: usize,
    log_sql: bool,
) -> Result<f64> {
    let mut conn = db::open(path, &opts(sync), true)?;
    if log_sql {
        db::migrate(&mut conn, workload::now_ms())?;
    } else {
        conn.execute_batch(raw_events_ddl())?;
    }
    prime_wal(&conn)?;
    let (warm, timed) = rows.split_at(warmup.min(rows.len()));
    for (ev, body) in warm {
        commit_row(&mut conn, ev, body, log_sql)?;
    }
    let start = Instant::now();
    for (ev, body) in timed {
        commit_row(&mut conn, ev, body, log_sql)?;
    }
    Ok(rate(timed.len(), start.elapsed()))
}

/// One transaction: the raw single-row insert, or the writer's SQL for one changeset.
fn commit_row(conn: &mut Connection, ev: &StoredEvent, body: &EventBody, log_sql: bool) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if log_sql {
        // The writer's per-commit SQL; the checkpoint (write model + verified head) is
        // written every CHECKPOINT_EVENTS events and is left out of this step.
        // `PRAGMA data_version` tells the writer whether another connection wrote (it read
        // the last event instead until 2026-12-06).
        let _ = body;
        let _: i64 = tx.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        rows::insert_event(&tx, ev)?;
    } else {
        raw_insert(&tx, Some(ev.seq), ev)?;
    }
    tx.commit()?;
    Ok(())
}

fn raw_insert(conn: &Connection, seq: Option<u64>, ev: &StoredEvent) -> Result<()> {
    let seq = seq.map(i64::try_from).transpose()?;
    conn.prepare_cached(
        "INSERT INTO events (seq, body, prev_hash, hash, key_id, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        seq,
        ev.body,
        ev.prev_hash.0.as_slice(),
        ev.hash.0.as_slice(),
        ev.key_id.0.as_slice(),
        ev.sig.as_slice()
    ])?;
    Ok(())
}

fn confstore_single(
    path: &Path,
    sync: Synchronous,
    drafts: &[ChangesetDraft],
    warmup: usize,
    run: usize,
) -> Result<f64> {
    let id = workload::store_id(u8::try_from(run % 200).unwrap_or(0) + 1);
    let store = Store::create(path, workload::signing_key(), id, workload::ACTOR, workload::clock(), &opts(sync))?;
    store.append(workload::register_draft(1))?;
    prime_wal(&db::open(path, &opts(sync), false)?)?;
    let (warm, timed) = drafts.split_at(warmup.min(drafts.len()));
    for d in warm {
        store.append(d.clone())?;
    }
    let timed = timed.to_vec();
    let n = timed.len();
    let start = Instant::now();
    for d in timed {
        store.append(d)?;
    }
    let r = rate(n, start.elapsed());
    drop(store);
    Ok(r)
}

/// Section 2: `threads` appenders on one store, and the raw baseline (`raw_rows` rows per
/// run; 0 skips it).
pub fn group(
    dir: &Path,
    sync: Synchronous,
    threads: usize,
    events: usize,
    raw_rows: usize,
    c: Counts,
) -> Result<GroupResult> {
    let per_thread = events.div_ceil(threads);
    let name = sync_name(sync);
    let (mut cs, mut raw) = (Vec::new(), Vec::new());
    for run in 0..c.runs {
        let path = dir.join(format!("group-{name}-{run}.db"));
        let id = workload::store_id(u8::try_from(run % 50).unwrap_or(0) + 200);
        let store = Store::create(&path, workload::signing_key(), id, workload::ACTOR, workload::clock(), &opts(sync))?;
        store.append(workload::register_draft(threads))?;
        prime_wal(&db::open(&path, &opts(sync), false)?)?;
        // Warm-up: a few changesets per thread through the same path.
        let warm = (c.warmup / threads).max(2);
        append_concurrently(&store, threads, warm, 0)?;
        let elapsed = append_concurrently(&store, threads, per_thread, warm)?;
        cs.push(rate(per_thread * threads, elapsed));
        drop(store);
        remove_db(&path);

        if raw_rows > 0 {
            let path = dir.join(format!("group-raw-{name}-{run}.db"));
            raw.push(raw_concurrent(&path, sync, threads, raw_rows)?);
            remove_db(&path);
        }
    }
    let (changesets_per_commit, pinned) =
        batch_sizes(&dir.join(format!("group-{name}-pinned.db")), sync, threads, per_thread)?;
    Ok(GroupResult {
        changesets_per_commit,
        pinned_run_events_per_sec: pinned,
        synchronous: name,
        threads,
        events_per_run: per_thread * threads,
        confstore: Samples::new(cs),
        raw_per_thread_connections: Samples::new(raw),
        raw_rows_per_run: raw_rows.div_ceil(threads) * threads,
    })
}

/// Runs the group-commit workload once more with the WAL pinned by a reader (so it is never
/// checkpointed or restarted) and counts the commit frames in it afterwards: the changesets
/// per commit the writer actually achieved. Returns that and the run's rate.
fn batch_sizes(path: &Path, sync: Synchronous, threads: usize, per_thread: usize) -> Result<(f64, f64)> {
    let store = Store::create(
        path,
        workload::signing_key(),
        workload::store_id(250),
        workload::ACTOR,
        workload::clock(),
        &opts(sync),
    )?;
    store.append(workload::register_draft(threads))?;
    append_concurrently(&store, threads, 2, 0)?;
    let mut pin = db::open(path, &opts(sync), false)?;
    let (busy, log, done): (i64, i64, i64) =
        pin.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    ensure!(busy == 0 && log == done, "could not checkpoint before pinning the WAL");
    // A read transaction started on a fully checkpointed WAL reads the database file alone;
    // while it is open, no checkpoint may write to that file, so every frame stays in the WAL.
    let tx = pin.transaction()?;
    let _: i64 = tx.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let elapsed = append_concurrently(&store, threads, per_thread, 2)?;
    let commits = count_commit_frames(path)?;
    drop(tx);
    drop(store);
    remove_db(path);
    ensure!(commits > 0, "no commit frames found in the pinned WAL");
    let changesets = threads * per_thread;
    Ok((changesets as f64 / commits as f64, rate(changesets, elapsed)))
}

/// Commit frames in the current generation of a database's WAL (format: sqlite.org/fileformat2.html#walformat).
fn count_commit_frames(db_path: &Path) -> Result<u64> {
    let mut p = db_path.as_os_str().to_owned();
    p.push("-wal");
    let wal = std::fs::read(&p)?;
    ensure!(wal.len() >= 32, "the WAL is empty");
    let be = |at: usize| u32::from_be_bytes([wal[at], wal[at + 1], wal[at + 2], wal[at + 3]]);
    let page = usize::try_from(be(8))?;
    let (salt1, salt2) = (be(16), be(20));
    let mut commits = 0;
    let mut at = 32;
    while at + 24 + page <= wal.len() {
        if be(at + 8) != salt1 || be(at + 12) != salt2 {
            break;
        }
        if be(at + 4) != 0 {
            commits += 1;
        }
        at += 24 + page;
    }
    Ok(commits)
}

/// `threads` threads each append `per_thread` single-event changesets (thread `t` sets keys of
/// service `t`, revisions from `first`); returns the time from the common start to the last
/// acknowledgement. The services must be registered.
pub fn append_concurrently(store: &Store, threads: usize, per_thread: usize, first: usize) -> Result<Duration> {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<()> {
                    let drafts: Vec<ChangesetDraft> = (first..first + per_thread)
                        .map(|i| workload::set_draft(t, i, GROUP_KEYS_PER_SERVICE))
                        .collect();
                    barrier.wait();
                    for d in drafts {
                        store.append(d)?;
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().map_err(|_| anyhow!("an appender thread panicked"))??;
        }
        Ok(start.elapsed())
    })
}

/// `threads` connections, each committing its share of `rows` rows one per transaction.
fn raw_concurrent(path: &Path, sync: Synchronous, threads: usize, rows: usize) -> Result<f64> {
    let per_thread = rows.div_ceil(threads);
    let opts = DbOptions { busy_timeout: Duration::from_secs(120), ..opts(sync) };
    let conn = db::open(path, &opts, true)?;
    conn.execute_batch(raw_events_ddl())?;
    prime_wal(&conn)?;
    drop(conn);
    let sealed = workload::sealed_rows(per_thread, SINGLE_KEYS)?;
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, sealed, opts) = (&barrier, &sealed, &opts);
                scope.spawn(move || -> Result<()> {
                    let mut conn = db::open(path, opts, false)?;
                    barrier.wait();
                    for (ev, _) in sealed {
                        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        raw_insert(&tx, None, ev)?;
                        tx.commit()?;
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().map_err(|_| anyhow!("a raw writer thread panicked"))??;
        }
        Ok(rate(per_thread * threads, start.elapsed()))
    })
}

/// The writer's pure per-event steps, timed alone (median of `runs` runs of `iters` each).
pub fn cpu_costs(iters: usize, runs: usize) -> Result<CpuCosts> {
    let key = workload::signing_key();
    let mut st = State::default();
    st.services.insert(workload::service(0), Default::default());
    let drafts: Vec<ChangesetDraft> = (0..iters).map(|i| workload::set_draft(0, i, SINGLE_KEYS)).collect();
    let body = state::decide(&st, &drafts[0], workload::now_ms())?.pop().context("decide made no event")?;
    let hash = confstore_core::event_hash(1, &confstore_core::Hash32([0; 32]), &body.encode());
    let (mut decide, mut seal, mut sign) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        for d in &drafts {
            std::hint::black_box(state::decide(&st, std::hint::black_box(d), 1)?);
        }
        decide.push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
        let start = Instant::now();
        for seq in 1..=iters {
            std::hint::black_box(state::seal(seq as u64, &hash, std::hint::black_box(&body), &key));
        }
        seal.push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
        let start = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(key.sign_hash(std::hint::black_box(&hash)));
        }
        sign.push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    let handoff = (0..runs).map(|_| handoff_round_trip_us(iters)).collect::<Result<Vec<_>>>()?;
    Ok(CpuCosts {
        decide_us: Samples::new(decide).median,
        seal_us: Samples::new(seal).median,
        sign_us: Samples::new(sign).median,
        handoff_us: Samples::new(handoff).median,
    })
}

/// Mean cost of the group-commit queue for a lone appender (no other thread involved).
fn handoff_round_trip_us(iters: usize) -> Result<f64> {
    // The leader/follower queue: take the queue lock to enqueue, again to post the result,
    // and once more to collect it; a condvar notify with nobody waiting.
    let queue = std::sync::Mutex::new(std::collections::HashMap::<u64, u64>::new());
    let turn = std::sync::Condvar::new();
    let start = Instant::now();
    for i in 0..iters as u64 {
        queue.lock().map_err(|_| anyhow!("poisoned"))?.insert(i, 0);
        queue.lock().map_err(|_| anyhow!("poisoned"))?.insert(i, i + 1);
        turn.notify_all();
        let got = queue.lock().map_err(|_| anyhow!("poisoned"))?.remove(&i);
        ensure!(got == Some(i + 1), "queue lost a result");
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

/// Brings a new database's WAL to its steady state, as in a store that has run for a while:
/// one transaction of 1,200 one-page rows in a table of its own grows the WAL past the
/// 1,000-page autocheckpoint, the checkpoint copies it all back, and the next commit restarts
/// the WAL from its start, overwriting frames of a file that no longer grows. Without this,
/// the first ~1,000 commits of a fresh database append to a growing WAL, whose fsyncs also
/// flush file-size metadata, and a variant that writes more pages per commit would reach the
/// cheaper steady state sooner: an unfair comparison. Every database in sections 1 and 2 is
/// primed the same way.
pub fn prime_wal(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE bench_wal_primer (b BLOB NOT NULL) STRICT;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
         INSERT INTO bench_wal_primer (b) SELECT zeroblob(4000) FROM n;
         COMMIT;",
    )?;
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    ensure!(busy == 0 && log == done, "priming the WAL: checkpoint incomplete ({done} of {log} frames)");
    Ok(())
}

/// Deletes a database and its WAL and shared-memory files (best effort: disk hygiene only).
pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod ddl_tests {
    #[test]
    fn the_raw_table_is_the_events_table_of_the_migration() {
        let ddl = super::raw_events_ddl();
        assert!(ddl.starts_with("CREATE TABLE events (") && ddl.ends_with(") STRICT;"), "{ddl}");
        assert!(ddl.contains("CHECK (length(sig) = 64)") && !ddl.contains("TRIGGER"), "{ddl}");
    }
}
