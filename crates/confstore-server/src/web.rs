//! The web UI's files, compiled into the binary (ADR 0018): the page, its ES modules and its
//! stylesheet from `crates/confstore-server/ui/`, in one table ([`FILES`]). No build step, no
//! bundler, no network at run time: the browser loads `index.html`, which loads
//! `/ui/main.js` with `<script type="module">`, which imports the other modules by relative
//! path. The page is a shell; everything it shows comes from the REST API with the user's
//! bearer token, so the API's role checks are the only ones, for the UI as for any client.
//!
//! Every answer carries a strict Content-Security-Policy (only these files; no inline
//! script or style; fetches only to this origin — module scripts and their imports are
//! same-origin, so `script-src 'self'` covers them), `nosniff`, no framing and no referrer.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The policy of every UI file: nothing but this origin's own script, style and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One file of `ui/`: its name there and its bytes.
macro_rules! ui_file {
    ($name:literal) => {
        ($name, include_bytes!(concat!("../ui/", $name)).as_slice())
    };
}

/// Every file of `ui/`, served at `/ui/<name>` (and `index.html` at `/` too). Adding a
/// module is one line here; a unit test checks this table and the directory agree.
const FILES: &[(&str, &[u8])] = &[
    ui_file!("index.html"),
    ui_file!("app.css"),
    ui_file!("main.js"),
    ui_file!("values.js"),
    ui_file!("dom.js"),
    ui_file!("state.js"),
    ui_file!("api.js"),
    ui_file!("shell.js"),
    ui_file!("router.js"),
    ui_file!("page-service.js"),
    ui_file!("page-search.js"),
    ui_file!("page-history.js"),
    ui_file!("page-audit.js"),
    ui_file!("page-fleet.js"),
    ui_file!("editor.js"),
    ui_file!("fields.js"),
    ui_file!("validate.js"),
    ui_file!("live.js"),
];

/// The page every other file hangs from, served at `/`.
const INDEX: &str = "index.html";

/// The content type of a UI file, by its extension (`None`: a kind of file the UI does not
/// serve, which the unit test refuses).
fn content_type(name: &str) -> Option<&'static str> {
    match name.rsplit_once('.')?.1 {
        "html" => Some("text/html; charset=utf-8"),
        "js" => Some("text/javascript; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        _ => None,
    }
}

/// One embedded file with its content type and ETag (a hash of its bytes).
struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(name: &'static str, body: &'static [u8]) -> Self {
        let digest = Sha256::digest(body);
        let content_type = content_type(name).unwrap_or("application/octet-stream");
        Self { name, body, content_type, etag: format!("\"{}\"", hex::encode(&digest[..12])) }
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

/// [`FILES`] with their content types and ETags, computed once.
static ASSETS: LazyLock<Vec<Asset>> =
    LazyLock::new(|| FILES.iter().map(|&(name, body)| Asset::new(name, body)).collect());

/// Adds the UI's routes (open: the files hold no data): `GET /` (the page) and
/// `GET /ui/<name>` for every file of the table.
pub fn routes<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    use axum::routing::get;
    let mut router = router;
    for asset in ASSETS.iter() {
        let serve = get(move |headers: HeaderMap| async move { asset.respond(&headers) });
        if asset.name == INDEX {
            router = router.route("/", serve.clone());
        }
        router = router.route(&format!("/ui/{}", asset.name), serve);
    }
    router
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    fn ui_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui")
    }

    fn text_of(name: &str) -> &'static str {
        let (_, body) = FILES.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} is not in FILES"));
        std::str::from_utf8(body).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"))
    }

    /// Every file under `ui/` is in the table, and every entry of the table is a file there,
    /// once, of a kind the UI serves: a module added to the directory but not the table (or
    /// the other way round) fails here, not in a browser.
    #[test]
    fn the_table_lists_exactly_the_files_of_the_ui_directory() {
        let mut on_disk = BTreeSet::new();
        for entry in std::fs::read_dir(ui_dir()).expect("ui/ is readable") {
            let entry = entry.expect("a directory entry of ui/");
            let kind = entry.file_type().expect("its file type");
            let name = entry.file_name().into_string().expect("a UTF-8 file name");
            assert!(kind.is_file(), "ui/{name} is not a plain file: the table serves ui/ flat");
            on_disk.insert(name);
        }
        let listed: BTreeSet<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(listed.len(), FILES.len(), "a file is listed twice in FILES");
        assert_eq!(listed, on_disk, "FILES (left) and the files of ui/ (right) differ");
        for (name, _) in FILES {
            assert!(content_type(name).is_some(), "ui/{name}: no content type for its extension");
        }
        assert!(listed.contains(INDEX));
    }

    /// What the page and the modules load is in the table: index.html's script and
    /// stylesheet, and every `from "./x.js"` of every module.
    #[test]
    fn every_file_the_page_loads_is_in_the_table() {
        let names: BTreeSet<&str> = FILES.iter().map(|(n, _)| *n).collect();
        let index = text_of(INDEX);
        for wanted in [r#"<script type="module" src="/ui/main.js">"#, r#"<link rel="stylesheet" href="/ui/app.css">"#] {
            assert!(index.contains(wanted), "index.html does not have {wanted}");
        }
        let mut imported = BTreeSet::new();
        for (name, _) in FILES.iter().filter(|(n, _)| n.ends_with(".js")) {
            for part in text_of(name).split(" from \"./").skip(1) {
                let target = part.split('"').next().unwrap_or_default();
                assert!(names.contains(target), "{name} imports ./{target}, which is not in FILES");
                imported.insert(target);
            }
        }
        for (name, _) in FILES.iter().filter(|(n, _)| n.ends_with(".js") && *n != "main.js") {
            assert!(imported.contains(name), "{name} is in FILES but no module imports it");
        }
    }

    /// A module is served as JavaScript with the CSP that lets it (and only this origin's
    /// scripts) run, and a matching `If-None-Match` gets a 304.
    #[tokio::test]
    async fn a_module_is_served_as_javascript_under_the_csp_and_revalidates() {
        use tower::ServiceExt;
        let app: axum::Router = routes(axum::Router::new());
        let get = |path: &str, etag: Option<&str>| {
            let mut req = axum::http::Request::get(path);
            if let Some(etag) = etag {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            req.body(axum::body::Body::empty()).expect("a request")
        };
        let resp = app.clone().oneshot(get("/ui/main.js", None)).await.expect("an answer");
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ASCII");
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"), "{csp}");
        let etag = h[header::ETAG].to_str().expect("ASCII").to_owned();
        let again = app.clone().oneshot(get("/ui/main.js", Some(&etag))).await.expect("an answer");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let page = app.clone().oneshot(get("/", None)).await.expect("an answer");
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let missing = app.oneshot(get("/ui/app.js", None)).await.expect("an answer");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "the old single script is gone");
    }
}
