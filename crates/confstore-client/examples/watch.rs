//! Prints this service's configuration, then each change as it arrives, until Ctrl-C.
//!
//! ```text
//! CONFSTORE_SERVICE=web CONFSTORE_URL=http://127.0.0.1:8080 CONFSTORE_TOKEN=… \
//! CONFSTORE_MQTT_URL=mqtt://127.0.0.1:1883 CONFIG_SIGNATURE_PUBLIC_KEY=… \
//! CONFSTORE_LKG_PATH=/tmp/web.lkg.json cargo run -p confstore-client --example watch
//! ```
#![allow(clippy::print_stdout, reason = "printing the configuration is what this example does")]

use std::collections::BTreeSet;

use confstore_client::{Client, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let client = Client::from_env()?.start().await?;
    let mut shown = client.config();
    println!("{} at epoch {}:", client.service(), shown.version().changed_epoch);
    for (key, value, source) in shown.iter() {
        println!("  {key} = {value}  [{source}]");
    }

    let mut updates = client.subscribe();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = updates.changed() => if changed.is_err() { break },
        }
        let latest = updates.borrow_and_update().clone();
        print_changes(&shown, &latest);
        shown = latest;
    }
    client.shutdown().await;
    Ok(())
}

/// One line per key that differs: `key: old → new`.
fn print_changes(old: &Config, new: &Config) {
    println!("epoch {} → {}:", old.version().changed_epoch, new.version().changed_epoch);
    let keys: BTreeSet<&str> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let show = |v: Option<&serde_json::Value>| v.map_or("(unset)".to_owned(), ToString::to_string);
        let (before, after) = (old.value(key), new.value(key));
        if before != after {
            let source = new.source(key).map_or("", |s| s.name());
            println!("  {key}: {} → {}  [{source}]", show(before), show(after));
        }
    }
}
