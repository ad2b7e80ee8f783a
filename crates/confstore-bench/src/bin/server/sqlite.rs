//! The fallback baseline when etcd is not installed: raw SQLite, a `kv` table written one
//! row per durable transaction (`BEGIN IMMEDIATE; INSERT OR REPLACE; COMMIT`), opened by
//! `confstore_log::db::open` so WAL mode and synchronous=FULL are set by the store's code.
//! No server, no network: a floor for what any durable store on this disk can do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use confstore_log::{DbOptions, db};
use rusqlite::{Connection, params};

use confstore_bench::harness::{Conn, PREFIX};

/// The table the fallback writes and reads.
const DDL: &str = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT";

/// Makes the database at `path`.
pub fn create(path: &Path) -> Result<PathBuf> {
    let conn = db::open(path, &DbOptions::default(), true)?;
    conn.execute_batch(DDL)?;
    Ok(path.to_owned())
}

/// What a connection reads: one key, or every key under a prefix.
#[derive(Clone, Debug)]
pub enum Read {
    /// `SELECT value WHERE key = ?`.
    Key(String),
    /// `SELECT key, value WHERE key >= prefix AND key < prefix + '\u{10FFFF}'`; `expect` rows.
    Prefix {
        /// The prefix.
        prefix: String,
        /// Rows expected.
        expect: usize,
    },
}

/// `n` connections to the database at `path`.
pub fn conns(path: &Path, n: usize, read: &Read) -> Result<Vec<SqliteConn>> {
    (0..n)
        .map(|_| Ok(SqliteConn { conn: Some(db::open(path, &DbOptions::default(), false)?), read: read.clone() }))
        .collect()
}

/// One SQLite connection; each call runs on tokio's blocking pool so that a commit's fsync
/// does not stall the runtime's worker threads.
pub struct SqliteConn {
    conn: Option<Connection>,
    read: Read,
}

impl SqliteConn {
    async fn with<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut conn = self.conn.take().context("a previous call on this connection failed")?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut conn);
            (conn, out)
        })
        .await?;
        self.conn = Some(conn);
        out
    }
}

impl Conn for SqliteConn {
    async fn put(&mut self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (format!("{PREFIX}{key}"), value.to_owned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?
                .execute(params![key, value])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn read(&mut self) -> Result<usize> {
        let read = self.read.clone();
        self.with(move |c| match read {
            Read::Key(key) => {
                let v: String =
                    c.prepare_cached("SELECT value FROM kv WHERE key = ?1")?.query_row([&key], |r| r.get(0))?;
                Ok(key.len() + v.len())
            }
            Read::Prefix { prefix, expect } => {
                let mut st = c.prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
                let rows: Vec<(String, String)> = st
                    .query_map(params![prefix, format!("{prefix}\u{10FFFF}")], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                ensure!(rows.len() == expect, "prefix {prefix}: {} rows, expected {expect}", rows.len());
                Ok(rows.iter().map(|(k, v)| k.len() + v.len()).sum())
            }
        })
        .await
    }
}
