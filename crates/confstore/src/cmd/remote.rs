//! Asking a running `serve` over its REST API, for the commands whose answer lives in the
//! server's memory (`fleet`, `rollout`): the token, one request, the server's error message.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long a whole request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The token given, or the first admin token `serve` wrote into `data_dir`.
pub fn token(given: Option<String>, data_dir: &Path) -> Result<String> {
    if let Some(t) = given {
        return Ok(t);
    }
    let file = data_dir.join("admin.token");
    Ok(std::fs::read_to_string(&file)
        .with_context(|| {
            format!("no token: give --token (or CONFSTORE_TOKEN), or run where {} is readable", file.display())
        })?
        .trim()
        .to_owned())
}

/// `method url` with the bearer token and an optional JSON body; the JSON answer, or the
/// server's error message.
pub fn request(method: reqwest::Method, url: &str, token: &str, body: Option<&Value>) -> Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let mut request = client.request(method.clone(), url).bearer_auth(token);
        if let Some(b) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url} (is `confstore serve` running? --url)"))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("{method} {url}: the answer did not arrive"))?;
        let answer: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {url}: HTTP {status}, the answer is not JSON"))?;
        if !status.is_success() {
            let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
            bail!("{method} {url}: HTTP {status}: {message}");
        }
        Ok(answer)
    })
}
