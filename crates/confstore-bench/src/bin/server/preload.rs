//! Filling both peers before a matrix cell: the written service with its keys, and for a
//! populated store other services with theirs. confstore through its REST API in big
//! changesets (`PATCH .../values`, what an operator's import does), etcd in transactions of
//! puts; the same key names and value sizes on both.

use anyhow::{Context, Result};
use hyper::Method;

use confstore_bench::confstore::{HttpConn, SERVICE};
#[cfg(feature = "etcd")]
use confstore_bench::harness::PREFIX;
use confstore_bench::harness::{service_key, value};

/// Keys per preload changeset (the server takes at most 1,000 events per changeset).
const CHANGESET_KEYS: usize = 500;
/// Puts per etcd transaction (etcd's default --max-txn-ops is 128).
#[cfg(feature = "etcd")]
const TXN_PUTS: usize = 100;

/// What a store holds besides the written service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Store {
    /// Other services.
    pub services: usize,
    /// Keys in each.
    pub keys: usize,
}

impl Store {
    /// `empty` or `SERVICESxKEYS` (e.g. `100x100`).
    pub fn parse(s: &str) -> Result<Self> {
        if s == "empty" {
            return Ok(Self { services: 0, keys: 0 });
        }
        let (a, b) = s.split_once('x').with_context(|| format!("store {s:?}: expected `empty` or e.g. `100x100`"))?;
        let store = Self {
            services: a.parse().with_context(|| format!("store {s:?}: services"))?,
            keys: b.parse().with_context(|| format!("store {s:?}: keys per service"))?,
        };
        anyhow::ensure!(store.services <= 1000 && store.keys <= 10_000, "store {s:?}: at most 1000x10000");
        Ok(store)
    }

    /// The name it was given.
    pub fn name(&self) -> String {
        if self.services == 0 { "empty".into() } else { format!("{}x{}", self.services, self.keys) }
    }

    /// Name of the `j`-th other service (also its etcd prefix, with a slash).
    pub fn service(j: usize) -> String {
        format!("s{j:03}")
    }
}

/// The values of a preload: `keys` keys of `value_bytes`, tagged by what they fill.
fn values(tag: &str, keys: usize, value_bytes: usize) -> impl Iterator<Item = (String, String)> + '_ {
    (0..keys).map(move |i| (service_key(i), value(tag, 0, i, value_bytes)))
}

/// Sets `keys` keys of `service` in changesets of [`CHANGESET_KEYS`].
async fn fill_confstore(conn: &mut HttpConn, service: &str, keys: usize, value_bytes: usize) -> Result<()> {
    let all: Vec<(String, String)> = values(service, keys, value_bytes).collect();
    for chunk in all.chunks(CHANGESET_KEYS) {
        let set: serde_json::Map<String, serde_json::Value> =
            chunk.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let body = serde_json::json!({ "set": set, "reason": "benchmark preload" }).to_string();
        conn.send(Method::PATCH, &format!("/api/v1/services/{service}/values"), Some(body), None)
            .await
            .with_context(|| format!("preloading {service}"))?;
    }
    Ok(())
}

/// Fills a fresh confstore store: [`SERVICE`] (registered by `Server::start`) with
/// `service_keys` keys, and `store.services` more services of `store.keys` keys.
pub async fn confstore(conn: &mut HttpConn, service_keys: usize, store: Store, value_bytes: usize) -> Result<()> {
    for j in 0..store.services {
        let name = Store::service(j);
        let body = serde_json::json!({ "name": name, "reason": "benchmark preload" }).to_string();
        conn.send(Method::POST, "/api/v1/services", Some(body), None)
            .await
            .with_context(|| format!("registering {name}"))?;
        fill_confstore(conn, &name, store.keys, value_bytes).await?;
    }
    fill_confstore(conn, SERVICE, service_keys, value_bytes).await
}

/// Fills a fresh etcd the same way: `bench/k00000`... and `s000/k00000`...
#[cfg(feature = "etcd")]
pub async fn etcd(
    client: &mut etcd_client::Client,
    service_keys: usize,
    store: Store,
    value_bytes: usize,
) -> Result<()> {
    use etcd_client::{Txn, TxnOp};
    let mut all: Vec<(String, String)> = Vec::new();
    for j in 0..store.services {
        let name = Store::service(j);
        all.extend(values(&name, store.keys, value_bytes).map(|(k, v)| (format!("{name}/{k}"), v)));
    }
    all.extend(values(SERVICE, service_keys, value_bytes).map(|(k, v)| (format!("{PREFIX}{k}"), v)));
    for chunk in all.chunks(TXN_PUTS) {
        let ops: Vec<TxnOp> = chunk.iter().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)).collect();
        client.txn(Txn::new().and_then(ops)).await.context("preloading etcd")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_parse() {
        assert_eq!(Store::parse("empty").unwrap(), Store { services: 0, keys: 0 });
        assert_eq!(Store::parse("100x100").unwrap(), Store { services: 100, keys: 100 });
        assert_eq!(Store::parse("100x100").unwrap().name(), "100x100");
        assert!(Store::parse("100").is_err());
        assert!(Store::parse("lots").is_err());
    }
}
