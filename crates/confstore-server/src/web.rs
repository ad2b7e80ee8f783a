//! The web UI's files, compiled into the binary (ADR 0018): one HTML page, one script, one
//! stylesheet from `crates/confstore-server/ui/`. No build step, no network at run time.
//! The page is a shell; everything it shows comes from the REST API with the user's bearer
//! token, so the API's role checks are the only ones, for the UI as for any client.
//!
//! Every answer carries a strict Content-Security-Policy (only these files; no inline
//! script or style; fetches only to this origin), `nosniff`, no framing and no referrer.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The policy of every UI file: nothing but this origin's own script, style and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One embedded file with its content type and ETag (a hash of its bytes).
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        Self { body, content_type, etag: format!("\"{}\"", hex::encode(&digest[..12])) }
    }

    /// 200 with the file, or 304 when the browser's copy is current. Browsers revalidate
    /// on every load (`no-cache`), so a new binary's UI is picked up at once.
    fn respond(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == self.etag));
        let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { self.body.into_response() };
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        resp
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../ui/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../ui/app.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> = LazyLock::new(|| Asset::new(include_str!("../ui/app.css"), "text/css; charset=utf-8"));

/// `GET /`: the UI's page.
pub async fn index(headers: HeaderMap) -> Response {
    INDEX.respond(&headers)
}

/// `GET /ui/app.js`.
pub async fn script(headers: HeaderMap) -> Response {
    SCRIPT.respond(&headers)
}

/// `GET /ui/app.css`.
pub async fn style(headers: HeaderMap) -> Response {
    STYLE.respond(&headers)
}

/// Adds the UI's routes (open: the files hold no data).
pub fn routes<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    use axum::routing::get;
    router.route("/", get(index)).route("/ui/app.js", get(script)).route("/ui/app.css", get(style))
}
