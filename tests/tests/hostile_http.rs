//! A hostile local user against the REST API (docs/operations.md, "Threat model"), against
//! the real `confstore serve`: what held when the server was first probed, kept so it stays
//! held.
//!
//! - 20 malformed, unknown or revoked credentials → 401, and nothing recorded;
//! - a huge header → 431; a 50 MB body → 413; hostile names (traversal, NUL, RTL, emoji,
//!   slashes) → 422 or 404, never a 2xx or a 5xx;
//! - 2,000 concurrent mixed requests are all answered, and `verify` is clean afterwards;
//! - disk full (the data directory on a 4 MiB tmpfs): writes answer 503, never 2xx; when
//!   space returns, writes succeed again and nothing acknowledged is missing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::mqtt::put_value;
use common::*;
use serde_json::json;

/// A raw request on a new connection; the status code (0 if the server closed first).
fn raw_status(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn served(dir: &std::path::Path) -> (Store, Server, Http) {
    let store = Store::in_dir(dir);
    store.init();
    let mut server = Server::start(&store, &[], &dir.join("serve.log"));
    server.wait_ready();
    let mut http = server.admin();
    http.ok("POST", "/api/v1/services", Some(&json!({ "name": "stt" })));
    (store, server, http)
}

#[test]
fn malformed_credentials_oversized_requests_and_hostile_names_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, server, mut http) = served(dir.path());
    let admin = admin_token(&store);
    let revoked =
        str_of(&store.json(&["token", "create", "--role", "admin", "--name", "gone", "--json"]), "token").to_owned();
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    store.ok(&["token", "revoke", &revoked_id]);
    let events_before = store.history().len();
    let (id, secret) = admin.trim_start_matches("cst_").split_once('_').unwrap();
    let shapes: Vec<String> = vec![
        String::new(),
        "Bearer".into(),
        "Bearer ".into(),
        "Basic YWRtaW46YWRtaW4=".into(),
        format!("Token {admin}"),
        "Bearer cst_".into(),
        "Bearer cst_zzzz".into(),
        format!("Bearer cst_{id}"),
        format!("Bearer cst_{id}_"),
        format!("Bearer cst_{id}_{}", &secret[1..]),
        format!("Bearer cst_{id}_{secret}A"),
        format!("Bearer cst_{}_{secret}", id.to_uppercase().replace('0', "G")),
        format!("Bearer {}", admin.replace("cst_", "cst-")),
        format!("Bearer cst_0000000000000000_{secret}"),
        format!("Bearer {admin} {admin}"),
        format!("Bearer {}", "A".repeat(8000)),
        format!("Bearer {revoked}"),
        format!("Bearer {}", admin.to_uppercase()),
        format!("Bearer {}", &admin[..admin.len() - 1]),
        format!("Bearer\t{admin}x"),
    ];
    assert_eq!(shapes.len(), 20);
    for shape in &shapes {
        let headers: Vec<(&str, &str)> =
            if shape.is_empty() { vec![] } else { vec![("Authorization", shape.as_str())] };
        let resp = Http::new(server.addr).request("GET", "/api/v1/services", &headers, None).unwrap();
        assert_eq!(resp.status, 401, "{shape:?}: {resp}");
    }
    assert_eq!(store.history().len(), events_before, "an unauthenticated request was recorded");

    // A 1 MiB header: 431. A 50 MB body: 413 before it is read.
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    assert_eq!(raw_status(server.addr, &huge, b""), 431);
    let head = format!(
        "POST /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        50 * 1024 * 1024
    );
    assert_eq!(raw_status(server.addr, &head, &[b'{'; 64 * 1024]), 413);

    // Hostile names: refused, never served, never a server error.
    for name in ["../etc", "a/b", "a\u{0}b", "\u{202e}txt.exe", "😀", "", ".", "..", "a b", &"x".repeat(65)] {
        let resp = http.send("POST", "/api/v1/services", &json!({ "name": name })).unwrap();
        assert_eq!(resp.status, 422, "{name:?}: {resp}");
    }
    for path in [
        "/api/v1/services/..%2F..%2Fetc/snapshot",
        "/api/v1/services/%00/values/x",
        "/api/v1/services/stt/values/..%2Fx",
    ] {
        let resp = http.get(path).unwrap();
        assert!(matches!(resp.status, 400 | 404 | 422), "{path}: {resp}");
    }
    drop(server);
}

#[test]
fn two_thousand_concurrent_mixed_requests_are_all_answered_and_the_log_verifies() {
    let total = env_count("HOSTILE_CONCURRENT_REQUESTS", 2_000);
    let threads = 50;
    let dir = tempfile::tempdir().unwrap();
    let (store, server, _http) = served(dir.path());
    let admin = admin_token(&store);
    let addr = server.addr;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let admin = admin.clone();
            std::thread::spawn(move || {
                let mut http = Http::new(addr).with_token(&admin).with_timeout(Duration::from_secs(30));
                let mut statuses = Vec::new();
                for i in 0..total / threads {
                    let resp = match i % 4 {
                        0 => http.send("PUT", &format!("/api/v1/services/stt/values/k{t}"), &json!({ "value": i })),
                        1 => http.get("/api/v1/services/stt/snapshot"),
                        2 => http.get("/api/v1/search?q=k"),
                        _ => http.get("/api/v1/history?service=stt"),
                    };
                    statuses.push(resp.map(|r| r.status).unwrap_or(0));
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.len(), total / threads * threads);
    let failed: Vec<_> = statuses.iter().filter(|s| !(200..300).contains(*s)).collect();
    assert!(failed.is_empty(), "{} of {} requests not answered 2xx: {failed:?}", failed.len(), statuses.len());
    drop(server);
    store.ok(&["verify"]);
}

/// A 4 MiB tmpfs mounted for the test (root only), unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"]).arg(at).status();
        assert!(st.is_ok_and(|s| s.success()), "mounting a tmpfs at {} (the test runs as root in CI)", at.display());
        Self(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_with_503_never_2xx_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"));
    let store = Store::in_dir(dir.path()).with_data_dir(&disk.0.join("data"));
    store.init();
    let mut server = Server::start(&store, &[], &dir.path().join("serve.log"));
    server.wait_ready();
    let mut http = server.admin();
    http.ok("POST", "/api/v1/services", Some(&json!({ "name": "stt" })));
    // Fill the disk with a ballast file, leaving a little room.
    let ballast = disk.0.join("ballast");
    let _ = std::fs::write(&ballast, vec![0u8; 3 * 1024 * 1024]);
    let big = "x".repeat(32 * 1024);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let resp = http.send("PUT", &format!("/api/v1/services/stt/values/k{i}"), &json!({ "value": big })).unwrap();
        match resp.status {
            s if (200..300).contains(&s) => acked.push(format!("k{i}")),
            503 | 507 => refused += 1,
            other => panic!("a write on a full disk answered {other}: {resp}"),
        }
        if refused >= 5 {
            break;
        }
    }
    assert!(refused >= 5, "the disk never filled ({} writes acknowledged)", acked.len());
    // Readiness says writes are failing (reads are still served, so it stays 200).
    let ready = Http::new(server.addr).get("/readyz").unwrap();
    assert_eq!(ready.status, 200, "{ready}");
    assert!(ready.json()["writes"]["failing"]["error"].is_string(), "{ready}");
    // Space returns: writes succeed again.
    std::fs::remove_file(&ballast).unwrap();
    let epoch = poll_until("writes to succeed again", Duration::from_secs(30), Duration::from_millis(100), || {
        let resp = http.send("PUT", "/api/v1/services/stt/values/after", &json!({ "value": 1 })).ok()?;
        resp.is_success().then(|| resp.json()["epoch"].as_u64())
    });
    assert!(epoch.is_some());
    let ready = Http::new(server.addr).get("/readyz").unwrap().json();
    assert_eq!(ready["writes"], json!("accepted"), "{ready}");
    // Nothing acknowledged is missing.
    for k in &acked {
        let resp = http.get(&format!("/api/v1/services/stt/values/{k}")).unwrap();
        assert!(resp.is_success(), "acknowledged {k} is missing: {resp}");
    }
    put_value(&mut http, "stt", "final", &json!(true));
    drop(server);
    store.ok(&["verify"]);
}
