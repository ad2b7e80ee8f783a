//! The etcd side: a single-node etcd (Debian's `etcd-server`) started on free loopback
//! ports with its data directory beside confstore's, durable as shipped (no
//! `--unsafe-no-fsync`), and the native gRPC client (`etcd-client`, tonic).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::harness::{Conn, PREFIX};
use crate::process::{self, Guard, POLL_INTERVAL};

/// Where Debian's `etcd-server` package installs etcd.
pub const DEFAULT_BIN: &str = "/usr/bin/etcd";

/// A running single-node etcd, killed when dropped.
pub struct Etcd {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// First line of `etcd --version`.
    pub version: String,
    guard: Guard,
}

impl Etcd {
    /// The etcd binary to use, or `None` if it is not installed.
    pub fn find_bin(explicit: Option<&Path>) -> Option<PathBuf> {
        let p = explicit.map_or_else(|| PathBuf::from(DEFAULT_BIN), Path::to_owned);
        p.is_file().then_some(p)
    }

    /// Starts etcd with its data in `dir/etcd` (`dir` must exist), a client and a peer URL on
    /// free loopback ports, and default settings otherwise. Call [`Etcd::wait_ready`] next.
    pub fn start(bin: &Path, dir: &Path) -> Result<Self> {
        let mut v = Command::new(bin);
        v.arg("--version");
        let version = String::from_utf8_lossy(&process::output("etcd --version", v, Duration::from_secs(30))?)
            .lines()
            .next()
            .unwrap_or("etcd")
            .trim()
            .to_owned();
        let ports = process::free_ports(2)?;
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let mut cmd = Command::new(bin);
        // etcd reads every flag from ETCD_* variables too: none of the caller's may apply.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("ETCD_")) {
                cmd.env_remove(name);
            }
        }
        cmd.arg("--name")
            .arg("bench")
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("bench={peer}"))
            .arg("--initial-cluster-state")
            .arg("new");
        let guard = Guard::spawn("etcd", cmd, &dir.join("etcd.log"))?;
        Ok(Self { endpoint: client, version, guard })
    }

    /// Polls etcd's status until it has a leader (it can take writes), etcd exits, or
    /// `deadline` passes.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<Duration> {
        let started = Instant::now();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_millis(500));
        loop {
            self.guard.check_running()?;
            let status = async {
                let mut c = Client::connect([&self.endpoint], Some(options.clone())).await?;
                c.status().await
            };
            match status.await {
                Ok(s) if s.leader() != 0 => return Ok(started.elapsed()),
                Ok(_) if started.elapsed() > deadline => bail!("etcd has no leader after {deadline:?}"),
                Err(e) if started.elapsed() > deadline => {
                    bail!("etcd not ready after {deadline:?}: {e}\nits log:\n{}", self.guard.log_tail())
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// A plain client of its own (for watches).
    pub async fn client(&self) -> Result<Client> {
        Client::connect([&self.endpoint], None).await.context("connecting to etcd")
    }

    /// `n` new clients, each with its own connection, whose reads are `read`.
    pub async fn conns(&self, n: usize, read: &Read) -> Result<Vec<EtcdConn>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let client = Client::connect([&self.endpoint], None).await.context("connecting to etcd")?;
            v.push(EtcdConn { client, read: read.clone() });
        }
        Ok(v)
    }

    /// Stops etcd and reports a failed exit.
    pub fn stop(mut self) -> Result<()> {
        let status = self.guard.stop()?;
        ensure!(
            status.success() || status.code().is_none(),
            "etcd exited with {status} after SIGTERM; its log:\n{}",
            self.guard.log_tail()
        );
        Ok(())
    }
}

/// What an etcd client reads.
#[derive(Clone, Debug)]
pub enum Read {
    /// One key, linearizable (etcd's default: a ReadIndex round through raft).
    Get(String),
    /// One key, serializable (answered from the member's local store).
    GetSerializable(String),
    /// Every key under a prefix (linearizable); `expect` keys must come back.
    Prefix {
        /// The prefix.
        prefix: String,
        /// Keys expected.
        expect: usize,
    },
}

/// One client: its own `etcd_client::Client` and so its own gRPC (HTTP/2) connection.
pub struct EtcdConn {
    client: Client,
    read: Read,
}

impl Conn for EtcdConn {
    async fn put(&mut self, key: &str, value: &str) -> Result<()> {
        self.client.put(format!("{PREFIX}{key}"), value, None).await.with_context(|| format!("etcd put {key}"))?;
        Ok(())
    }

    async fn read(&mut self) -> Result<usize> {
        let (key, options, expect) = match &self.read {
            Read::Get(key) => (key, None, 1),
            Read::GetSerializable(key) => (key, Some(GetOptions::new().with_serializable()), 1),
            Read::Prefix { prefix, expect } => (prefix, Some(GetOptions::new().with_prefix()), *expect),
        };
        let res = self.client.get(key.as_str(), options).await.with_context(|| format!("etcd get {key}"))?;
        ensure!(res.kvs().len() == expect, "etcd get {key}: {} keys, expected {expect}", res.kvs().len());
        Ok(res.kvs().iter().map(|kv| kv.key().len() + kv.value().len()).sum())
    }
}
