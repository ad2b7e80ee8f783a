//! The tests' HTTP client for the server's REST API, `/healthz`, `/readyz`, `/metrics` and
//! the WebDriver endpoint of chromedriver: [`Http`], a thin blocking wrapper around
//! `reqwest::blocking::Client` (HTTP/1.1, keep-alive, no redirects followed, no retries of
//! writes), and [`HttpResponse`], one answer read whole.
//!
//! Tests whose point is the bytes on the wire (malformed requests, slow clients, the event
//! stream read line by line) write to a `TcpStream` themselves and do not use this.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding removed).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, or a panic showing it.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): status {}: {}", self.status, self.text()))
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl std::fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.status)?;
        for (n, v) in &self.headers {
            write!(f, "[{n}: {v}] ")?;
        }
        write!(f, "{}", self.text())
    }
}

/// An HTTP/1.1 client of one server (`reqwest::blocking`, its own connection pool, so its
/// own kept-alive connection): requests with an optional JSON body, an optional bearer
/// token, and a timeout for the whole request. Redirects are returned, not followed. A GET
/// that failed other than by a timeout or a refused connection (a kept-alive connection the
/// server had closed) is retried once; nothing else is retried beyond what the pool does for
/// a request it never sent, so a write whose answer was lost stays unanswered, as the crash
/// tests need.
#[derive(Debug)]
pub struct Http {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
    /// Made on the first request, with the timeout then set.
    client: Option<reqwest::blocking::Client>,
}

impl Http {
    /// A client for `addr` (nothing is connected yet), with a generous 60 s timeout.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, token: None, timeout: Duration::from_secs(60), client: None }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Sets the connect timeout and the timeout of a whole request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.client = None;
        self
    }

    /// One request; `body`, if any, is sent as JSON.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> std::io::Result<HttpResponse> {
        let body = body.map(Value::to_string).unwrap_or_default();
        self.request_bytes(method, path, headers, body.as_bytes(), true)
    }

    /// One request with `body` sent byte for byte (JSON that serde_json cannot write:
    /// numbers beyond 64 bits, repeated keys, other charsets) and only the headers given
    /// (no automatic `Content-Type`).
    pub fn request_raw(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        self.request_bytes(method, path, headers, body, false)
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("GET", path, &[], None)
    }

    /// `GET path` with `Accept: application/json`.
    pub fn get_json(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("GET", path, &[("Accept", "application/json")], None)
    }

    /// `method path` with a JSON body.
    pub fn send(&mut self, method: &str, path: &str, body: &Value) -> std::io::Result<HttpResponse> {
        self.request(method, path, &[], Some(body))
    }

    /// `method path` (with a JSON body if given), panicking on an I/O error or a status
    /// other than 2xx; the response.
    #[track_caller]
    pub fn ok(&mut self, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
        let accept = [("Accept", "application/json")];
        let resp = self
            .request(method, path, if method == "GET" { &accept } else { &[] }, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(resp.is_success(), "{method} {path}: expected 2xx, got {resp}");
        resp
    }

    fn request_bytes(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        json_content_type: bool,
    ) -> std::io::Result<HttpResponse> {
        match self.try_request(method, path, headers, body, json_content_type) {
            Err(e) if method == "GET" && !e.is_timeout() && !e.is_connect() => {
                self.try_request(method, path, headers, body, json_content_type).map_err(std::io::Error::other)
            }
            answer => answer.map_err(std::io::Error::other),
        }
    }

    fn client(&mut self) -> reqwest::Result<&reqwest::blocking::Client> {
        if self.client.is_none() {
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(self.timeout)
                .timeout(self.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .build()?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("made above"))
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        json_content_type: bool,
    ) -> reqwest::Result<HttpResponse> {
        let url = format!("http://{}{path}", self.addr);
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("method {method:?}: {e}"));
        let sends_body = !body.is_empty() || !matches!(method.as_str(), "GET" | "HEAD" | "DELETE");
        let token = self.token.clone();
        let mut req = self.client()?.request(method.clone(), url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if !body.is_empty() && json_content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        if sends_body {
            // A sized body, so `Content-Length` is sent, also `0` for a write without one.
            req = req.body(body.to_vec());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let event_stream = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        // An event stream (`GET /api/v1/live`) ends only when the server stops: the caller
        // gets the status and headers, and the connection is dropped instead of read
        // (tests/tests/server_live.rs reads the stream itself).
        let body = if method == reqwest::Method::HEAD || event_stream { Vec::new() } else { resp.bytes()?.to_vec() };
        Ok(HttpResponse { status, headers, body })
    }
}
