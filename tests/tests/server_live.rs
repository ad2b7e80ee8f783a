//! `GET /api/v1/live`, the server-sent event stream the web UI updates from: refused
//! without a token (401) and for a role without `config.read` (403); with one it sends the
//! head at once, then a `head` event after a write through the API and after a write by
//! another process (the CLI), each with the new epoch; and an open stream does not hold a
//! graceful shutdown (SIGTERM ends the stream and the server exits 0 promptly).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::api::{ready_server, token_create};
use common::{Scratch, admin_token, u64_of};
use serde_json::{Value, json};

/// Longest wait for one event.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// An open event stream: the raw connection, read line by line.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
    content_type: String,
}

fn open(addr: std::net::SocketAddr, token: Option<&str>) -> Stream {
    let mut conn = TcpStream::connect(addr).expect("connecting to the server");
    conn.set_read_timeout(Some(EVENT_DEADLINE)).expect("a read timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(conn, "GET /api/v1/live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n")
        .expect("sending the request");
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("the status line");
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-type")
        {
            content_type = value.trim().to_owned();
        }
    }
    Stream { reader, status, content_type }
}

impl Stream {
    /// The data of the next `head` event (chunked-encoding size lines and keep-alive
    /// comments are skipped: neither starts with `event:` or `data:`).
    fn next_head(&mut self) -> Value {
        let started = Instant::now();
        let mut event = String::new();
        loop {
            assert!(started.elapsed() < EVENT_DEADLINE, "no head event within {EVENT_DEADLINE:?}");
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("reading the stream");
            assert!(n > 0, "the stream ended before a head event");
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:")
                && event == "head"
            {
                return serde_json::from_str(data.trim()).expect("the data is JSON");
            }
        }
    }

    /// Whether the stream ends (EOF, or the chunked body's last chunk) within the deadline.
    fn ends(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < EVENT_DEADLINE {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return true,
                Ok(_) if line.trim() == "0" => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

#[test]
fn live_stream_sends_heads_after_every_write_and_ends_on_shutdown() {
    let scratch = Scratch::new("server-live");
    let mut server = ready_server(scratch.path());
    let admin = admin_token(&server.store);
    let auditor = token_create(&server.store, "audit.read", None, "auditor");
    let reader = token_create(&server.store, "config.read", None, "reader");

    assert_eq!(open(server.addr, None).status, 401, "no token");
    assert_eq!(open(server.addr, Some(&auditor.token)).status, 403, "audit.read does not read configuration");

    let mut stream = open(server.addr, Some(&reader.token));
    assert_eq!(stream.status, 200);
    assert!(stream.content_type.starts_with("text/event-stream"), "content type {:?}", stream.content_type);
    let first = stream.next_head();
    let start_epoch = u64_of(&first, "epoch");
    assert!(u64_of(&first, "seq") > 0 && u64_of(&first, "generation") == 1, "{first}");

    // A write through the API.
    let mut http = server.client().with_token(&admin);
    http.ok("POST", "/api/v1/services", Some(&json!({"name": "web", "reason": "live test"})));
    let after_api = stream.next_head();
    assert!(u64_of(&after_api, "epoch") > start_epoch, "{after_api} after {first}");

    // A write by another process: the server folds it in and says so.
    server.store.ok(&["set", "web", "port", "8081", "--reason", "from the cli"]);
    let want = u64_of(&after_api, "epoch") + 1;
    let mut seen = stream.next_head();
    while u64_of(&seen, "epoch") < want {
        seen = stream.next_head();
    }
    assert_eq!(u64_of(&seen, "epoch"), want, "{seen}");

    // An open stream does not hold the graceful shutdown.
    let stopping = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "serve must exit 0 on SIGTERM with a live stream open: {status}");
    assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown took {:?}", stopping.elapsed());
    assert!(stream.ends(), "the stream must end when the server stops");
}
