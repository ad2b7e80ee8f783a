//! [`Config`]: one applied version of the service's configuration, env overrides included,
//! immutable once built and shared by `Arc`.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use confstore_core::stream::SnapshotVersion;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::env::EnvOverrides;
use crate::error::ClientError;

/// Where a resolved value comes from, highest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An environment variable `<SERVICE>__<KEY>`.
    Env,
    /// Set on the service in the store.
    Service,
    /// Inherited from the store's `global` scope.
    Global,
    /// The service schema's default.
    Default,
}

impl Source {
    /// Lowercase name: `env`, `service`, `global`, `default`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Service => "service",
            Self::Global => "global",
            Self::Default => "default",
        }
    }

    fn from_snapshot(name: Option<&str>) -> Self {
        match name {
            Some("global") => Self::Global,
            Some("default") => Self::Default,
            _ => Self::Service,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    source: Source,
}

type Typed = Arc<dyn Any + Send + Sync>;

/// One applied version: the verified snapshot document, its version, and the resolved
/// key → value map (env → store → schema defaults). Lookups read memory only.
pub struct Config {
    version: SnapshotVersion,
    document: Value,
    entries: BTreeMap<String, Entry>,
    /// Deserialized views of the whole map, one per requested type (see [`Config::get`]).
    typed: RwLock<HashMap<TypeId, Typed>>,
}

impl Config {
    /// Resolves a verified snapshot document: the store's `config` and `sources`, then the
    /// env overrides on top.
    pub(crate) fn new(document: Value, version: SnapshotVersion, env: &EnvOverrides) -> Self {
        let sources = document.get("sources");
        let mut entries: BTreeMap<String, Entry> = document
            .get("config")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let source = Source::from_snapshot(sources.and_then(|s| s.get(key)).and_then(Value::as_str));
                (key.clone(), Entry { value: value.clone(), source })
            })
            .collect();
        env.apply(&mut entries, |entries, key, value| {
            entries.insert(key, Entry { value, source: Source::Env });
        });
        Self { version, document, entries, typed: RwLock::new(HashMap::new()) }
    }

    /// Store id, generation, epoch and version chain of this snapshot.
    pub fn version(&self) -> &SnapshotVersion {
        &self.version
    }

    /// The resolved value of `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.entries.get(key).map(|e| &e.value)
    }

    /// Where the resolved value of `key` comes from.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.entries.get(key).map(|e| e.source)
    }

    /// The resolved value of `key` as a `T`.
    pub fn get_key<T: DeserializeOwned>(&self, key: &str) -> Result<T, ClientError> {
        let value = self.value(key).ok_or_else(|| ClientError::MissingKey(key.to_owned()))?;
        T::deserialize(value).map_err(|source| ClientError::KeyType { key: key.to_owned(), source })
    }

    /// Every resolved key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }

    /// Every resolved `(key, value, source)`, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value, Source)> + '_ {
        self.entries.iter().map(|(k, e)| (k.as_str(), &e.value, e.source))
    }

    /// The verified snapshot document as signed by the store (no env overrides).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The resolved map as one JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.entries.iter().map(|(k, e)| (k.clone(), e.value.clone())).collect::<Map<_, _>>())
    }

    /// The whole resolved map deserialized into `T`; done once per type and version, later
    /// calls return the same `Arc`.
    pub fn get<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<T>, ClientError> {
        let id = TypeId::of::<T>();
        if let Some(hit) = self.typed.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(downcast(hit));
        }
        let fresh: Arc<T> = Arc::new(
            T::deserialize(self.to_json())
                .map_err(|source| ClientError::Deserialize { type_name: std::any::type_name::<T>(), source })?,
        );
        let mut cache = self.typed.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have won the race: keep its value so every caller shares one.
        Ok(downcast(cache.entry(id).or_insert(fresh)))
    }
}

fn downcast<T: Send + Sync + 'static>(typed: &Typed) -> Arc<T> {
    // The cache is keyed by TypeId, so the entry for T always holds a T.
    Arc::clone(typed).downcast::<T>().unwrap_or_else(|_| unreachable!("typed cache entry of the wrong type"))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("version", &self.version).field("entries", &self.entries).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(env: &[(&str, &str)]) -> Config {
        let doc = json!({
            "service": "web", "store_id": "00", "generation": 1, "epoch": 5, "changed_epoch": 4,
            "changed_seq": 9, "prev_epoch": 3, "schema_hash": "",
            "config": {"log_level": "debug", "port": 8080, "region": "eu-west", "tls": true},
            "sources": {"log_level": "service", "port": "default", "region": "global", "tls": "default"},
        });
        let version = confstore_core::stream::snapshot_version(&doc).unwrap();
        let vars = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::new(doc, version, &EnvOverrides::from_vars("web", vars))
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Web {
        port: u16,
        tls: bool,
        region: String,
    }

    #[test]
    fn values_sources_and_env_precedence() {
        let c = config(&[("WEB__PORT", "9090"), ("WEB__EXTRA", "hello")]);
        assert_eq!(c.value("port"), Some(&json!(9090)));
        assert_eq!(c.source("port"), Some(Source::Env));
        assert_eq!(c.source("region"), Some(Source::Global));
        assert_eq!(c.source("tls"), Some(Source::Default));
        assert_eq!(c.source("log_level"), Some(Source::Service));
        assert_eq!(c.value("extra"), Some(&json!("hello")));
        assert_eq!(c.source("extra"), Some(Source::Env));
        assert_eq!(c.keys().collect::<Vec<_>>(), ["extra", "log_level", "port", "region", "tls"]);
        assert_eq!(c.document()["config"]["port"], json!(8080), "the signed document stays as signed");
        assert_eq!(c.version().changed_epoch, 4);
    }

    #[test]
    fn typed_access() {
        let c = config(&[]);
        assert_eq!(c.get_key::<u16>("port").unwrap(), 8080);
        assert!(matches!(c.get_key::<u16>("region"), Err(ClientError::KeyType { .. })));
        assert!(matches!(c.get_key::<u16>("nope"), Err(ClientError::MissingKey(k)) if k == "nope"));
        let first = c.get::<Web>().unwrap();
        assert_eq!(*first, Web { port: 8080, tls: true, region: "eu-west".into() });
        assert!(Arc::ptr_eq(&first, &c.get::<Web>().unwrap()), "cached per type");
        assert!(matches!(c.get::<Vec<u8>>(), Err(ClientError::Deserialize { .. })));
    }
}
