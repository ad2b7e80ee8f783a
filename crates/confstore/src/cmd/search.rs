//! `search` (catching the index up from its checkpoint first) and `rebuild` (every
//! projection from scratch, with a progress bar).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use confstore_log::{LogReader, Until};
use serde_json::json;

use super::Ctx;
use crate::cli::SearchArgs;
use crate::output;

/// Brings the search index up to the log's head (rebuilt if its checkpoint is not an event
/// of this log).
fn catch_up(reader: &LogReader) -> Result<()> {
    confstore_search::catch_up(reader, 0).context("cannot update the search index")?;
    Ok(())
}

pub fn search(ctx: &Ctx, args: &SearchArgs) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    catch_up(&reader)?;
    let hits =
        confstore_search::search(reader.connection(), &args.query, args.service.as_deref(), args.since, args.limit)?;
    if args.json {
        let items: Vec<_> = hits
            .iter()
            .map(|h| json!({"service": h.service, "key": h.key, "value": h.value_text, "description": h.description, "epoch": h.epoch}))
            .collect();
        output::json(&json!({"query": args.query, "hits": items}));
    } else {
        for h in &hits {
            let desc = if h.description.is_empty() { String::new() } else { format!("  — {}", h.description) };
            println!("{}.{} = {}  (epoch {}){desc}", h.service, h.key, h.value_text, h.epoch);
        }
        if hits.is_empty() {
            println!("no match");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rebuild(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let reader = ctx.reader()?;
    let total = reader.count()?;
    let bar = output::progress(total, "rebuilding");
    let conn = reader.connection();
    confstore_search::attach(conn).context("cannot open the search index")?;
    let tx = conn.unchecked_transaction().context("cannot start the rebuild")?;
    let mut rebuild = confstore_search::Rebuild::start(&tx)?;
    reader.replay_with(Until::Head, |ev| {
        rebuild.push(ev);
        if rebuild.events().is_multiple_of(10_000) {
            bar.set_position(rebuild.events());
        }
    })?;
    let done = rebuild.finish()?;
    tx.commit().context("cannot save the rebuilt search index")?;
    bar.finish_and_clear();
    let lkg = ctx.write_lkg()?;
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    if as_json {
        output::json(&json!({"events": done, "seconds": secs, "events_per_sec": rate, "lkg_epoch": lkg.epoch}));
    } else {
        println!("rebuilt the search index and the LKG cache from {done} events in {secs:.2} s ({rate:.0} events/s)");
    }
    Ok(ExitCode::SUCCESS)
}
