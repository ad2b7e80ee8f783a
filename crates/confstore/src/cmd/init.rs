//! `confstore init`: keys first (fail fast if the env file cannot be written), then the store.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::StoreId;
use confstore_log::{LogReader, Store, SystemClock};
use serde_json::json;

use super::{Ctx, default_actor};
use crate::cli::InitArgs;
use crate::output;

pub fn init(ctx: &Ctx, args: &InitArgs) -> Result<ExitCode> {
    let db = ctx.db_path();
    if db.exists()
        && let Ok(reader) = LogReader::open(&db)
    {
        bail!("a store already exists at {} (store id {}); nothing was changed", db.display(), reader.store_id());
    }
    let (store_id, written, key_id) = create(ctx)?;
    warn_if_exposed(ctx);
    if args.json {
        output::json(&json!({
            "store_id": store_id.to_hex(),
            "database": db.display().to_string(),
            "env_file": ctx.env_file.display().to_string(),
            "keys_written": written,
            "signing_key_id": key_id.to_hex(),
        }));
    } else {
        println!("created store {store_id} at {}", db.display());
        println!("signing key {key_id}");
        if written.is_empty() {
            println!("keys: all four already set; none written");
        } else {
            println!("keys written to {} (mode 0600): {}", ctx.env_file.display(), written.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes missing keys to the env file, then creates the store and its LKG file. Returns
/// the store id, the names of the keys written and the signing key id.
pub fn create(ctx: &Ctx) -> Result<(StoreId, Vec<&'static str>, confstore_core::KeyId)> {
    let db = ctx.db_path();
    let mut keys = ctx.keys()?;
    let written = keys.ensure_all()?;
    let key = keys.signing_key()?;
    let key_id = key.verifying_key().key_id();
    // The log is not secret, but who may read the history is the operator's call: start
    // private (the directory 0700, config.db and its -wal and -shm 0600).
    confstore_log::files::create_private_dir(&ctx.data_dir)
        .with_context(|| format!("cannot create the data directory {}", ctx.data_dir.display()))?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| anyhow!("the operating system's random source failed: {e}"))?;
    let store_id = StoreId(id);
    let store = Store::create(&db, key, store_id, &default_actor(), Arc::new(SystemClock), &ctx.db)
        .with_context(|| format!("cannot create the store at {}", db.display()))?;
    drop(store);
    ctx.refresh_lkg();
    Ok((store_id, written, key_id))
}

/// Prints a warning (stderr) for a data directory, or a file in it, open to the group or
/// to everyone: an existing directory keeps its mode, which is the operator's call, but
/// they should know.
pub fn warn_if_exposed(ctx: &Ctx) {
    for w in confstore_log::files::exposure(&ctx.data_dir) {
        eprintln!("warning: {w}");
    }
}
