//! The last-known-good cache: refreshed after every write command, checked by `lkg verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use confstore_lkg::{FILE_NAME, LkgContent};
use confstore_log::LogReader;
use serde_json::json;

use super::Ctx;
use crate::output;

impl Ctx {
    pub(super) fn lkg_path(&self) -> PathBuf {
        self.data_dir.join(FILE_NAME)
    }

    /// Rewrites the LKG file from the log: every service snapshot at the head.
    pub(super) fn write_lkg(&self) -> Result<LkgContent> {
        let key = self.keys()?.lkg_key()?;
        let reader = self.reader()?;
        let content = lkg_content(&reader)?;
        let jws = content.to_jws(&key, confstore_core::state::canonical_json_text);
        confstore_lkg::raise_high_water_mark(
            &self.data_dir.join(confstore_lkg::HWM_FILE_NAME),
            content.seq,
            content.generation,
            &self.lkg_path(),
            &key,
        )?;
        confstore_lkg::write_atomically(&self.lkg_path(), &jws)?;
        Ok(content)
    }

    /// After a committed write: refresh the LKG file, and only warn if that fails (the
    /// write itself is durable; the cache is one write behind until the next one).
    pub(super) fn refresh_lkg(&self) {
        if let Err(e) = self.write_lkg() {
            eprintln!("warning: the change is committed, but the LKG cache was not refreshed: {e:#}");
        }
    }
}

fn lkg_content(reader: &LogReader) -> Result<LkgContent> {
    // State and head from the same point: retry if another process appended in between.
    for _ in 0..5 {
        let state = reader.current_state()?;
        let head = reader.head()?;
        if head.seq != state.seq {
            continue;
        }
        let services = confstore_snapshots::project_all(&state, &head.store_id.to_hex(), head.generation);
        return Ok(LkgContent::at_head(&state, head.store_id, head.generation, &head.hash, services));
    }
    Err(anyhow!("the log kept changing while the LKG cache was being built; try again"))
}

pub fn write(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    let c = ctx.write_lkg()?;
    if as_json {
        output::json(
            &json!({"file": ctx.lkg_path().display().to_string(), "epoch": c.epoch, "seq": c.seq, "services": c.services.len()}),
        );
    } else {
        println!(
            "wrote {} ({} services, epoch {}, event {})",
            ctx.lkg_path().display(),
            c.services.len(),
            c.epoch,
            c.seq
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(ctx: &Ctx, file: Option<&Path>, as_json: bool) -> Result<ExitCode> {
    let key = ctx.keys()?.lkg_key()?;
    let path = file.map_or_else(|| ctx.lkg_path(), Path::to_path_buf);
    let reader = ctx.reader().ok();
    let head = reader.as_ref().and_then(|r| r.head().ok());
    let expected = head.as_ref().map(|h| h.store_id.to_hex());
    let c = confstore_lkg::load(&path, &key, expected.as_deref())?;
    // Behind the log: usable as a fallback, but say how far behind.
    let behind = head.as_ref().map(|h| h.seq.saturating_sub(c.seq));
    if as_json {
        output::json(&json!({
            "ok": true, "file": path.display().to_string(), "store_id": c.store_id, "epoch": c.epoch, "seq": c.seq,
            "services": c.services.len(), "events_behind_log": behind,
        }));
    } else {
        println!(
            "ok: {} verifies: {} services at epoch {} (event {})",
            path.display(),
            c.services.len(),
            c.epoch,
            c.seq
        );
        match behind {
            Some(0) => println!("    current with the log"),
            Some(n) => println!("    {n} event(s) behind the log; `confstore lkg write` refreshes it"),
            None => println!("    the database could not be read to compare"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
