//! The REST side: `GET /api/v1/services/{service}/snapshot[?epoch=N]`, the start-up
//! snapshot and the versions a gap is filled with; and the transparency log's checkpoint and
//! proofs (`GET /api/v1/checkpoint`, `/api/v1/proof/…`). Only fetches; verification is the
//! caller's, as for any other source.

use std::time::Duration;

use serde_json::Value;

/// How long to wait for the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a whole request may take (a snapshot can be megabytes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestError {
    #[error("GET {url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("GET {url}: HTTP {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("GET {url}: response larger than {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("GET {url}: response is not JSON: {source}")]
    NotJson { url: String, source: serde_json::Error },
}

/// Largest checkpoint note or proof answer read (limits.rs).
const TLOG_BYTES: usize = confstore_core::limits::TLOG_ANSWER_BYTES_MAX;

/// A REST client for one service's snapshots.
#[derive(Clone, Debug)]
pub(crate) struct Rest {
    http: reqwest::Client,
    snapshot_url: String,
    schema_url: String,
    stream_url: String,
    /// `<base>/api/v1`: the transparency log's routes (docs/format.md §19).
    api_url: String,
    /// `<base>/api/v1/fleet/<service>/`: where a client without MQTT reports its status.
    fleet_url: String,
    token: Option<String>,
}

impl Rest {
    pub(crate) fn new(base_url: &str, service: &str, token: Option<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT).build()?;
        // Service names are `[a-z0-9_-]` (checked by the builder): nothing to escape.
        let base = base_url.trim_end_matches('/');
        let snapshot_url = format!("{base}/api/v1/services/{service}/snapshot");
        let schema_url = format!("{base}/api/v1/services/{service}/schema");
        let stream_url = format!("{base}/api/v1/stream");
        let api_url = format!("{base}/api/v1");
        let fleet_url = format!("{base}/api/v1/fleet/{service}/");
        Ok(Self { http, snapshot_url, schema_url, stream_url, api_url, fleet_url, token })
    }

    /// The latest signed checkpoint note (`GET /api/v1/checkpoint`), unverified.
    pub(crate) async fn checkpoint(&self) -> Result<Vec<u8>, RestError> {
        self.get_bytes(format!("{}/checkpoint", self.api_url), "text/plain", TLOG_BYTES).await
    }

    /// `GET /api/v1/proof/inclusion?seq=&size=`, unverified.
    pub(crate) async fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Value, RestError> {
        let url = format!("{}/proof/inclusion?seq={seq}&size={size}", self.api_url);
        let body = self.get_bytes(url.clone(), "application/json", TLOG_BYTES).await?;
        serde_json::from_slice(&body).map_err(|source| RestError::NotJson { url, source })
    }

    /// `GET /api/v1/proof/consistency?from=&to=`, unverified.
    pub(crate) async fn consistency_proof(&self, from: u64, to: u64) -> Result<Value, RestError> {
        let url = format!("{}/proof/consistency?from={from}&to={to}", self.api_url);
        let body = self.get_bytes(url.clone(), "application/json", TLOG_BYTES).await?;
        serde_json::from_slice(&body).map_err(|source| RestError::NotJson { url, source })
    }

    /// The live stream's broker URL the server advertises (`GET /api/v1/stream`), if any.
    pub(crate) async fn advertised_mqtt_url(&self) -> Result<Option<String>, RestError> {
        let doc = self.get_json(self.stream_url.clone(), "application/json").await?;
        Ok(doc.get("mqtt_url").and_then(Value::as_str).map(str::to_owned))
    }

    /// The latest snapshot JWS, or the one at `epoch`.
    pub(crate) async fn snapshot(&self, epoch: Option<u64>) -> Result<Value, RestError> {
        let url = match epoch {
            Some(n) => format!("{}?epoch={n}", self.snapshot_url),
            None => self.snapshot_url.clone(),
        };
        self.get_json(url, "application/jose+json, application/json").await
    }

    /// The service's stored JSON Schema (`GET /api/v1/services/{service}/schema`), unsigned:
    /// the caller checks it against the `schema_hash` of a verified snapshot.
    pub(crate) async fn schema(&self) -> Result<Value, RestError> {
        self.get_json(self.schema_url.clone(), "application/json").await
    }

    /// Reports this instance's status (`PUT /api/v1/fleet/{service}/{instance}`, docs/format.md
    /// §20): the reporting of a client without MQTT. The error names the answer.
    pub(crate) async fn report(&self, instance: &str, body: String) -> Result<(), String> {
        // Instance ids are `[A-Za-z0-9._-]` (checked by the builder): nothing to escape.
        let url = format!("{}{instance}", self.fleet_url);
        let mut request = self.http.put(&url).header("content-type", "application/json").body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("PUT {url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(format!("PUT {url}: HTTP {}: {message}", status.as_u16()))
    }

    /// `GET url` with the token; the JSON body, bounded by the snapshot size limit.
    async fn get_json(&self, url: String, accept: &str) -> Result<Value, RestError> {
        let body = self.get_bytes(url.clone(), accept, crate::SNAPSHOT_BYTES_MAX).await?;
        serde_json::from_slice(&body).map_err(|source| RestError::NotJson { url, source })
    }

    /// `GET url` with the token; the body of a 2xx answer, at most `max` bytes.
    async fn get_bytes(&self, url: String, accept: &str, max: usize) -> Result<Vec<u8>, RestError> {
        let mut request = self.http.get(&url).header("accept", accept);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|source| RestError::Request { url: url.clone(), source })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|source| RestError::Request { url: url.clone(), source })?
        {
            if body.len() + chunk.len() > max {
                return Err(RestError::TooLarge { url, max });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(RestError::Status { url, status: status.as_u16(), message });
        }
        Ok(body)
    }
}
