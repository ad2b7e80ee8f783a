//! Backups with real Litestream and the shipped `ops/litestream.yml`: `confstore serve` runs
//! under `litestream replicate -exec` (with `--head-file` on the replica's volume); after
//! acknowledged writes and a clean stop, `litestream restore` gives a database that passes
//! `restore-check` against the signed head kept beside the replica, verifies, and reads
//! exactly like the original.
//!
//! Kills under load, the lost-tail bound, replication lag, `restore -timestamp` against
//! `replay --at` and the #752 checkpoint scenario (docs/testing.md row 11) are in
//! `tests/tests/backup_drill.rs`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn a_litestream_backup_restores_to_a_database_that_passes_restore_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(&dir.path().join("live"));
    store.init();
    store.ok(&["service", "add", "web"]);
    let replica = dir.path().join("replica");
    std::fs::create_dir_all(&replica).unwrap();
    let head_file = replica.join("head.jws");
    let port = free_port();
    let serve = format!(
        "{} --data-dir {} --env-file {} serve --listen 127.0.0.1:{port} --no-mqtt --head-file {}",
        bin().display(),
        store.data_dir.display(),
        store.env_file.display(),
        head_file.display()
    );
    let mut cmd = Command::new(common::litestream::bin());
    clean_env(&mut cmd);
    cmd.args(["replicate", "-config"])
        .arg(common::litestream::config())
        .arg("-exec")
        .arg(&serve)
        .env("CONFSTORE_DATA_DIR", &store.data_dir)
        .env("LITESTREAM_REPLICA_DIR", &replica)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(dir.path().join("litestream.log")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("litestream.err")).unwrap()));
    let mut child = cmd.spawn().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut http = Http::new(addr).with_token(&admin_token_when_written(&store));
    poll_until("serve under litestream to answer", Duration::from_secs(60), Duration::from_millis(20), || {
        http.get("/readyz").ok().filter(|r| r.status == 200)
    });
    let mut last_epoch = 0;
    for i in 0..40 {
        let resp = http.ok("PUT", "/api/v1/services/web/values/k", Some(&json!({"value": i})));
        last_epoch = resp.json()["epoch"].as_u64().unwrap();
    }
    let head_seq = http.ok("GET", "/api/v1/head", None).json()["seq"].as_u64().unwrap();
    poll_until(
        "the head file beside the replica to reach the head",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let text = std::fs::read_to_string(&head_file).ok()?;
            let jws: serde_json::Value = serde_json::from_str(&text).ok()?;
            let payload = jws["payload"].as_str()?;
            use base64::Engine;
            let doc: serde_json::Value =
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
            (doc["seq"].as_u64() == Some(head_seq)).then_some(())
        },
    );
    // Replication is asynchronous (1 s sync interval): wait until a restore has the head.
    let probe = dir.path().join("probe");
    let lag = std::time::Instant::now();
    poll_until(
        "the replica to hold the last acknowledged write",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let _ = std::fs::remove_dir_all(&probe);
            std::fs::create_dir_all(&probe).unwrap();
            restore(&store, &replica, &probe.join("config.db")).ok()?;
            (store.with_data_dir(&probe).head()["seq"].as_u64() == Some(head_seq)).then_some(())
        },
    );
    eprintln!("the replica held the last write {:?} after it was acknowledged", lag.elapsed());
    // A clean stop: litestream stops serve (SIGTERM).
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    poll_until("litestream to exit", Duration::from_secs(60), Duration::from_millis(20), || child.try_wait().unwrap());

    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    restore(&store, &replica, &restored.join("config.db")).unwrap();
    let copy = store.with_data_dir(&restored);
    let check = copy.json(&["restore-check", "--json", "--head", head_file.to_str().unwrap()]);
    assert_eq!(check["ok"], json!(true), "{check}");
    assert_eq!(check["head"]["seq"].as_u64(), Some(head_seq));
    copy.ok(&["verify"]);
    assert_eq!(copy.head()["epoch"].as_u64(), Some(last_epoch));
    assert_eq!(copy.json(&["get", "--json"]), store.json(&["get", "--json"]));
}

/// `litestream restore` of the store's database from `replica` into `out`.
fn restore(store: &Store, replica: &Path, out: &Path) -> Result<(), String> {
    let run = Command::new(common::litestream::bin())
        .args(["restore", "-config"])
        .arg(common::litestream::config())
        .arg("-o")
        .arg(out)
        .arg(store.db())
        .env("CONFSTORE_DATA_DIR", &store.data_dir)
        .env("LITESTREAM_REPLICA_DIR", replica)
        .output()
        .map_err(|e| e.to_string())?;
    if run.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&run.stderr).into_owned()) }
}

/// The admin token `serve` writes on its first start (it may not exist yet).
fn admin_token_when_written(store: &Store) -> String {
    let path = store.data_dir.join("admin.token");
    poll_until("serve to write the first admin token", Duration::from_secs(60), Duration::from_millis(20), || {
        std::fs::read_to_string(&path).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
    })
}
