//! Benchmarks of the transparency log (docs/format.md §19, ADR 0027), each next to a baseline
//! measured in the same run on the same disk:
//!
//! 1. tree maintenance per appended event (target ≤ 5 µs): `merkle::extend`, what `serve` runs
//!    behind the commits (in transactions of `TLOG_EXTEND_EVENTS_PER_TRANSACTION` events, each
//!    event's chain link checked), over 10,000 events appended after a tree of
//!    `BENCH_TLOG_EVENTS` leaves — vs a raw SQLite insert of one 32-byte row per event in
//!    transactions of the same size;
//! 2. proofs at `BENCH_TLOG_EVENTS` (default 1,000,000) leaves: inclusion and consistency proof
//!    generation from the stored tree (p50, p99) and their verification, `BENCH_TLOG_PROOFS`
//!    (default 10,000) of each at random positions — vs a primary-key SELECT of one row.
//!
//! `cargo run --release -p confstore-bench --bin tlog`.

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use confstore_core::Hash32;
use confstore_core::tlog;
use confstore_log::{DbOptions, Synchronous, merkle};
use rusqlite::Connection;

fn count(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `per_mille`-th per-mille of the samples (500 = median, 990 = p99).
fn pct(v: &mut [Duration], per_mille: usize) -> Duration {
    v.sort();
    v[((v.len() - 1) * per_mille / 1000).min(v.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A 32-byte value per `seq`, for the raw baseline rows.
fn event_hash(seq: u64) -> Hash32 {
    Hash32(tlog::sha256(&seq.to_be_bytes()))
}

/// xorshift64*: positions of the proofs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn open(path: &std::path::Path) -> Result<Connection> {
    // NORMAL: the build of the data set is not what is measured; the appends measured are
    // timed inside their transaction, before its commit.
    let opts = DbOptions { synchronous: Synchronous::Normal, ..DbOptions::default() };
    let mut conn = confstore_log::db::open(path, &opts, true)?;
    confstore_log::db::migrate(&mut conn, 0)?;
    Ok(conn)
}

/// Appends events `from..=to` as rows of `events` with a correct hash chain (bodies of 300
/// bytes, signatures left zero: the tree checks links, not signatures). Returns the last hash.
fn insert_events(conn: &Connection, from: u64, to: u64, mut prev: Hash32) -> Result<Hash32> {
    let mut st = conn.prepare_cached(
        "INSERT INTO events (seq, body, prev_hash, hash, key_id, sig) VALUES (?1, ?2, ?3, ?4, zeroblob(8), zeroblob(64))",
    )?;
    for seq in from..=to {
        let body = vec![u8::try_from(seq % 251)?; 300];
        let hash = confstore_core::event_hash(seq, &prev, &body);
        st.execute(rusqlite::params![i64::try_from(seq)?, body, prev.0.as_slice(), hash.0.as_slice()])?;
        prev = hash;
    }
    Ok(prev)
}

fn main() -> Result<()> {
    let n = count("BENCH_TLOG_EVENTS", 1_000_000);
    let proofs = count("BENCH_TLOG_PROOFS", 10_000);
    let chunk = confstore_core::limits::TLOG_EXTEND_EVENTS_PER_TRANSACTION;
    let dir = tempfile::tempdir()?;
    let mut conn = open(&dir.path().join("config.db"))?;
    let store_id = confstore_core::StoreId([7; 16]);
    conn.execute(
        "INSERT INTO store (id, store_id, generation, created_ms) VALUES (1, ?1, 1, 0)",
        [store_id.0.as_slice()],
    )?;
    // The events and the tree of n leaves, built as serve builds it.
    let started = Instant::now();
    let mut prev = confstore_core::genesis_hash(&store_id);
    let mut seq = 1;
    while seq <= n {
        let tx = conn.transaction()?;
        let end = n.min(seq + 99_999);
        prev = insert_events(&tx, seq, end, prev)?;
        tx.commit()?;
        seq = end + 1;
    }
    let mut done = 0;
    while done < n {
        let tx = conn.transaction()?;
        done = merkle::extend(&tx, &store_id, n.min(done + 100_000), None)?;
        tx.commit()?;
    }
    println!("built a log and tree of {n} events in {:.1} s", started.elapsed().as_secs_f64());

    // 1. Tree maintenance per event: 10,240 events appended after it, then the tree extended
    // over them in transactions of `chunk`, beside raw 32-byte inserts in transactions as big.
    let extra = chunk * 10;
    let tx = conn.transaction()?;
    insert_events(&tx, n + 1, n + extra, prev)?;
    tx.commit()?;
    conn.execute_batch("CREATE TABLE raw_rows (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL) STRICT")?;
    let (mut tree, mut raw) = (Duration::ZERO, Duration::ZERO);
    for k in 0..10 {
        let to = n + (k + 1) * chunk;
        let t = Instant::now();
        let tx = conn.transaction()?;
        merkle::extend(&tx, &store_id, to, None)?;
        tx.commit()?;
        tree += t.elapsed();
        let t = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT INTO raw_rows (idx, hash) VALUES (?1, ?2)")?;
            for s in (to - chunk + 1)..=to {
                st.execute(rusqlite::params![i64::try_from(s)?, event_hash(s).0.as_slice()])?;
            }
        }
        tx.commit()?;
        raw += t.elapsed();
    }
    let size = n + extra;
    let per = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / extra as f64);
    println!();
    println!("{:<44} {:>22}   {:<44} target", "measure", "figure", "baseline (same run, same disk)");
    println!(
        "{:<44} {:>22}   {:<44} ≤ 5 µs: {}",
        "tree maintenance per appended event",
        us(per(tree)),
        format!("raw SQLite insert of a 32-byte row: {}", us(per(raw))),
        if per(tree) <= Duration::from_micros(5) { "PASS" } else { "FAIL" }
    );

    // 2. Proofs at `size` leaves.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut gen_inc, mut ver_inc, mut gen_con, mut ver_con, mut select) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let root = merkle::root(&conn, size)?;
    let mut st = conn.prepare_cached("SELECT hash FROM events WHERE seq = ?1")?;
    for _ in 0..proofs {
        let s = 1 + rng.below(size);
        let leaf: Vec<u8> =
            conn.query_row("SELECT hash FROM events WHERE seq = ?1", [i64::try_from(s)?], |r| r.get(0))?;
        let leaf = Hash32(<[u8; 32]>::try_from(leaf.as_slice())?);
        let t = Instant::now();
        let p = merkle::inclusion_proof(&conn, s, size)?;
        gen_inc.push(t.elapsed());
        let t = Instant::now();
        tlog::verify_inclusion(&p, size, &root, s, &leaf).context("an inclusion proof does not verify")?;
        ver_inc.push(t.elapsed());

        let old = 1 + rng.below(size);
        let old_root = merkle::root(&conn, old)?;
        let t = Instant::now();
        let p = merkle::consistency_proof(&conn, old, size)?;
        gen_con.push(t.elapsed());
        let t = Instant::now();
        tlog::verify_consistency(&p, size, &root, old, &old_root).context("a consistency proof does not verify")?;
        ver_con.push(t.elapsed());

        let at = i64::try_from(1 + rng.below(size))?;
        let t = Instant::now();
        let _: Vec<u8> = st.query_row([at], |r| r.get(0))?;
        select.push(t.elapsed());
    }
    let base = format!("primary-key SELECT of one row: {} / {}", us(pct(&mut select, 500)), us(pct(&mut select, 990)));
    for (what, v) in [
        ("inclusion proof generation p50 / p99", &mut gen_inc),
        ("inclusion proof verification p50 / p99", &mut ver_inc),
        ("consistency proof generation p50 / p99", &mut gen_con),
        ("consistency proof verification p50 / p99", &mut ver_con),
    ] {
        let fig = format!("{} / {}", us(pct(v, 500)), us(pct(v, 990)));
        println!("{:<44} {:>22}   {:<44} (at {size} events)", what, fig, base);
    }
    let (rows, tree_bytes): (i64, i64) = conn.query_row(
        "SELECT (SELECT count(*) FROM merkle_hashes), (SELECT sum(pgsize) FROM dbstat WHERE name = 'merkle_hashes')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!(
        "\nthe tree on disk: {rows} stored hashes, {:.1} MB for {size} events ({:.0} B per event)",
        tree_bytes as f64 / 1e6,
        tree_bytes as f64 / size as f64
    );
    Ok(())
}
