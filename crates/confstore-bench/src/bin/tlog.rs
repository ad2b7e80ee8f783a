//! Benchmarks of the transparency log (docs/format.md §19, ADR 0027), each next to a baseline
//! measured in the same run on the same disk:
//!
//! 1. tree maintenance per appended event (target ≤ 5 µs): `merkle::append`, what the writer
//!    runs for each event inside its commit, over 10,000 events appended to a tree of
//!    `BENCH_TLOG_EVENTS` leaves — vs a raw SQLite insert of one 32-byte row per event in the
//!    same kind of transaction;
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

/// The synthetic event hash of `seq` (what the tree hashes does not matter for its cost).
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

fn main() -> Result<()> {
    let n = count("BENCH_TLOG_EVENTS", 1_000_000);
    let proofs = count("BENCH_TLOG_PROOFS", 10_000);
    let dir = tempfile::tempdir()?;
    let mut conn = open(&dir.path().join("config.db"))?;

    // The tree of n leaves, built as the writer builds it (chunks of 100,000 per transaction).
    let started = Instant::now();
    let mut seq = 1;
    while seq <= n {
        let tx = conn.transaction()?;
        let end = n.min(seq + 99_999);
        for s in seq..=end {
            merkle::append(&tx, s, &event_hash(s))?;
        }
        tx.commit()?;
        seq = end + 1;
    }
    println!("built a tree of {n} leaves in {:.1} s", started.elapsed().as_secs_f64());

    // 1. Tree maintenance per event, 10,000 events appended after it, in transactions of 100.
    let extra = 10_000u64;
    let mut tree = Duration::ZERO;
    let mut raw = Duration::ZERO;
    conn.execute_batch("CREATE TABLE raw_rows (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL) STRICT")?;
    for chunk in 0..extra / 100 {
        let tx = conn.transaction()?;
        let t = Instant::now();
        for s in (n + 1 + chunk * 100)..(n + 1 + (chunk + 1) * 100) {
            merkle::append(&tx, s, &event_hash(s))?;
        }
        tree += t.elapsed();
        let t = Instant::now();
        {
            let mut st = tx.prepare_cached("INSERT INTO raw_rows (idx, hash) VALUES (?1, ?2)")?;
            for s in (n + 1 + chunk * 100)..(n + 1 + (chunk + 1) * 100) {
                st.execute(rusqlite::params![i64::try_from(s)?, event_hash(s).0.as_slice()])?;
            }
        }
        raw += t.elapsed();
        tx.commit()?;
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
    let mut st = conn.prepare_cached("SELECT hash FROM merkle_hashes WHERE idx = ?1")?;
    for _ in 0..proofs {
        let s = 1 + rng.below(size);
        let t = Instant::now();
        let p = merkle::inclusion_proof(&conn, s, size)?;
        gen_inc.push(t.elapsed());
        let t = Instant::now();
        tlog::verify_inclusion(&p, size, &root, s, &event_hash(s)).context("an inclusion proof does not verify")?;
        ver_inc.push(t.elapsed());

        let old = 1 + rng.below(size);
        let old_root = merkle::root(&conn, old)?;
        let t = Instant::now();
        let p = merkle::consistency_proof(&conn, old, size)?;
        gen_con.push(t.elapsed());
        let t = Instant::now();
        tlog::verify_consistency(&p, size, &root, old, &old_root).context("a consistency proof does not verify")?;
        ver_con.push(t.elapsed());

        let idx = i64::try_from(rng.below(tlog::stored_hash_count(size)))?;
        let t = Instant::now();
        let _: Vec<u8> = st.query_row([idx], |r| r.get(0))?;
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
    let bytes: i64 = conn.query_row(
        "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
        [],
        |r| r.get(0),
    )?;
    println!(
        "\nsize on disk: {:.1} MB for {size} leaves ({:.0} B per event, stored hashes and raw rows together)",
        bytes as f64 / 1e6,
        bytes as f64 / size as f64
    );
    Ok(())
}
