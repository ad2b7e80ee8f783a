//! The client's one error type.

use std::path::PathBuf;

/// What can go wrong starting a client or reading its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A builder setting or environment variable is unusable.
    #[error("invalid {setting}: {reason}")]
    InvalidSetting {
        /// The builder method or environment variable.
        setting: &'static str,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// No source produced a verified snapshot; lists why each one failed.
    #[error("no verified configuration for service {service:?}: {}", list(.reasons))]
    NoVerifiedConfig {
        /// The service.
        service: String,
        /// One `(source, why)` per configured source, in start-up order.
        reasons: Vec<(&'static str, String)>,
    },
    /// The LKG file, the only configured source, is unusable (corrupt, tampered, another
    /// store's or service's).
    #[error("lkg file {}: {reason}", .path.display())]
    Lkg {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// The configuration has no such key.
    #[error("configuration has no key {0:?}")]
    MissingKey(String),
    /// The key's value does not deserialize into the requested type.
    #[error("configuration key {key:?} does not fit the requested type: {source}")]
    KeyType {
        /// The key.
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The service's stored JSON Schema could not be fetched, or what the server sent is not
    /// the schema the verified snapshot names (its `schema_hash`).
    #[error("stored schema of service {service:?}: {reason}")]
    Schema {
        /// The service.
        service: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The whole configuration does not deserialize into the requested type.
    #[error("configuration does not fit {type_name}: {source}")]
    Deserialize {
        /// The requested type.
        type_name: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
}

fn list(reasons: &[(&'static str, String)]) -> String {
    reasons.iter().map(|(source, why)| format!("{source}: {why}")).collect::<Vec<_>>().join("; ")
}

impl ClientError {
    pub(crate) fn setting(setting: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidSetting { setting, reason: reason.into() }
    }
}
