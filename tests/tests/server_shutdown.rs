//! Graceful shutdown: SIGTERM while four writers append over HTTP. The server stops with
//! exit code 0; every write it acknowledged is in the log after a restart, every answer it
//! gave was complete (a write either commits and is answered, or is refused), and writes
//! sent after the signal are refused by a closed connection, never half-applied.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Http, Scratch, Server, Store, env_count, u64_of};
use serde_json::json;

#[test]
fn sigterm_under_write_load_finishes_in_flight_writes_and_loses_nothing() {
    let rounds = env_count("SHUTDOWN_ROUNDS", 3);
    let scratch = Scratch::new("server-shutdown");
    let store = Store::in_dir(scratch.path());
    let log = scratch.path().join("serve.log");
    let mut server = Server::start(&store, &[], &log);
    server.wait_ready();
    server.admin().ok("POST", "/api/v1/services", Some(&json!({"name": "svc"})));
    let mut acked: Vec<(String, String, u64)> = Vec::new();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (mut http, stop) = (server.admin(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for n in 0u64.. {
                        if stop.load(Ordering::Relaxed) && n > 0 {
                            break;
                        }
                        let (key, value) = (format!("w{w}"), format!("r{round}-w{w}-n{n}"));
                        match http.send("PUT", &format!("/api/v1/services/svc/values/{key}"), &json!({"value": value}))
                        {
                            Ok(r) if r.is_success() => mine.push((key, value, u64_of(&r.json(), "last_seq"))),
                            // Refused after the signal (503 or a closed connection): never acked.
                            Ok(r) => assert!(r.status >= 500, "unexpected answer {r}"),
                            Err(_) => break,
                        }
                    }
                    mine
                })
            })
            .collect();
        // Let the writers get going: wait until some writes are acknowledged.
        let mut watch = server.admin();
        common::poll_until("writes to land", Duration::from_secs(30), Duration::from_millis(5), || {
            let head = watch.get("/api/v1/head").ok()?.json();
            (u64_of(&head, "seq") > 20 * (round + 1) as u64).then_some(())
        });
        let status = server.terminate();
        stop.store(true, Ordering::Relaxed);
        assert!(status.success(), "serve must exit 0 on SIGTERM: {status}\n{}", server.log_tail());
        for w in writers {
            acked.extend(w.join().expect("writer"));
        }
        server = Server::start(&store, &[], &log);
        server.wait_ready();
    }
    assert!(!acked.is_empty());
    // Every acknowledged write is the event at its seq.
    let mut http: Http = server.admin();
    for (key, value, seq) in &acked {
        let page = http.get(&format!("/api/v1/events?after={}&limit=1", seq - 1)).expect("events").json();
        let ev = &page["events"][0];
        assert_eq!(ev["seq"].as_u64(), Some(*seq));
        assert_eq!(
            (ev["event"]["kind"]["key"].as_str(), ev["event"]["kind"]["value"].as_str()),
            (Some(key.as_str()), Some(value.as_str()))
        );
    }
    let verify = store.run(&["verify", "--json"]);
    verify.assert_ok();
    server.terminate();
}
