//! The projections the server keeps on disk, caught up in the background after commits:
//! the search index (in `config.db`, its checkpoint in the same transaction) and the LKG
//! file (rewritten at most every `lkg_interval`, its high-water mark first). It also folds
//! in events other processes appended (the CLI), every second when idle.

use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, LiveMode, Mode};

/// How often the projector looks for other processes' events when nothing happens here.
const IDLE_REFRESH: Duration = Duration::from_secs(1);

/// A pass may take at most one part in this many of the time (one core's 5 %): the
/// interval between passes is at least this many times the last pass's duration.
const PASS_SHARE_INVERSE: u32 = 20;

/// Least time between two background catch-ups of the search index. Each one is a write
/// transaction that flushes a new FTS5 segment, which later merges rewrite: fewer, larger
/// catch-ups cost less CPU and less of the index's WAL (when the index shared config.db, a
/// catch-up every `lkg_interval` doubled the WAL written per commit, docs/testing.md row 12).
/// Readers never wait for it: a search request, and the web UI's keys view, catch the index
/// up themselves first.
const SEARCH_INTERVAL: Duration = Duration::from_secs(2);

/// Writes the high-water mark, then the LKG file, for the read model's head; and the signed
/// head file, if one is configured.
fn write_lkg(app: &App, live: &LiveMode) -> Result<u64, String> {
    // The state at the head, taken under the read model's lock and rendered after it: a clone
    // shares every service's values (confstore_core::state::Values), while rendering a
    // 10,000-key store takes ~10 ms, and the commit listener waits for the lock to fold the
    // next commit in (docs/benchmarks.md, "The read model's lock and the LKG rewrite").
    let (state, store_id, generation, head_hash) =
        live.model.read(|m| (m.state.clone(), m.store_id, m.generation, m.head_hash));
    let services = confstore_snapshots::project_all(&state, &store_id.to_hex(), generation);
    let content = confstore_lkg::LkgContent::at_head(&state, store_id, generation, &head_hash, services);
    let seq = content.seq;
    if let Some(path) = &app.config.head_file {
        let doc = {
            let (store_id, hash) = (store_id.to_hex(), head_hash.to_hex());
            let at = confstore_core::stream::Position { store_id: &store_id, generation, seq: state.seq, hash: &hash };
            confstore_core::stream::head_document(&at, state.epoch, state.time_ms)
        };
        let jws = confstore_core::jws::sign(&doc, confstore_core::jws::TYP_HEAD, &app.keys.signing);
        confstore_lkg::write_atomically(path, &jws.to_string())
            .map_err(|e| format!("cannot write the signed head file: {e}"))?;
    }
    confstore_lkg::raise_high_water_mark(
        &app.config.hwm_path(),
        seq,
        content.generation,
        &app.config.lkg_path(),
        &app.keys.lkg,
    )
    .map_err(|e| format!("cannot write the LKG high-water mark: {e}"))?;
    let jws = content.to_jws(&app.keys.lkg, confstore_core::state::canonical_json_text);
    confstore_lkg::write_atomically(&app.config.lkg_path(), &jws).map_err(|e| e.to_string())?;
    Ok(seq)
}

/// Runs until the server stops. One pass — fold in other writers' events, catch the search
/// index up, rewrite the LKG file — when a commit happened (or every second, for other
/// processes' events), but at most once per `lkg_interval` (or 20× the last pass's time, if
/// longer: a pass's cost grows with the store): under continuous writes the
/// projections cost a fixed amount per interval, not per commit. Search requests catch the
/// index up themselves, so they never wait for a pass.
pub async fn run(app: App) {
    let mut done = Pass { search_seq: None, search_at: None, lkg_seq: None };
    let mut last_pass: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let mode = app.mode();
        let Mode::Live(live) = &*mode else {
            // The fallback: try the database again every recover_interval.
            tokio::time::sleep(app.config.recover_interval).await;
            let a = app.clone();
            let _ = tokio::task::spawn_blocking(move || a.try_recover()).await;
            continue;
        };
        let head = live.model.read(|m| m.state.seq);
        if done.lkg_seq == Some(head) && done.search_seq == Some(head) {
            // Up to date: wait for a commit, or look for other processes' events after a while.
            let _ = tokio::time::timeout(IDLE_REFRESH, live.model.changed.notified()).await;
        }
        // Rate limit: a fixed cost per interval however many commits land meanwhile, and at
        // most 1/PASS_SHARE_INVERSE of a core however large the store (a pass rewrites the
        // whole LKG file: its cost grows with the store, the interval with it).
        if let Some((t, cost)) = last_pass {
            let interval = app.config.lkg_interval.max(cost * PASS_SHARE_INVERSE);
            let rest = interval.saturating_sub(t.elapsed());
            if !rest.is_zero() {
                tokio::time::sleep(rest).await;
            }
        }
        let started = tokio::time::Instant::now();
        let (a, m) = (app.clone(), Arc::clone(&mode));
        let before = done;
        let result = tokio::task::spawn_blocking(move || pass(&a, &m, before)).await;
        if let Ok(next) = result {
            done = next;
        }
        last_pass = Some((started, started.elapsed()));
    }
}

/// What the last pass brought each projection to.
#[derive(Clone, Copy, Debug)]
struct Pass {
    search_seq: Option<u64>,
    /// When the search index was last caught up.
    search_at: Option<std::time::Instant>,
    lkg_seq: Option<u64>,
}

fn pass(app: &App, mode: &Mode, mut done: Pass) -> Pass {
    let Mode::Live(live) = mode else { return done };
    if let Err(e) = live.store.refresh() {
        tracing::error!(error = %e, "cannot fold in other writers' events");
    }
    let head = live.model.read(|m| m.state.seq);
    if done.search_seq != Some(head) && done.search_at.is_none_or(|t| t.elapsed() >= SEARCH_INTERVAL) {
        done.search_at = Some(std::time::Instant::now());
        let search = {
            let _one = live.search_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            live.readers.with(|r| confstore_search::catch_up(r, head))
        };
        match search {
            Ok(seq) => {
                done.search_seq = Some(seq);
                app.projections.search_seq.store(seq, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "the search index is behind; retrying"),
        }
    }
    app.metrics.projection_lag("search", head.saturating_sub(done.search_seq.unwrap_or(0)));
    // The Merkle tree, in batches behind the commits (ADR 0027); checkpoints and proofs
    // extend it themselves too, so this only keeps their work small.
    if let Err(e) = crate::checkpoints::extend_to_head(live) {
        tracing::warn!(error = %e, "the Merkle tree is behind the log; retrying");
    }
    // Only when the head moved since the last rewrite (an idle server writes nothing).
    if done.lkg_seq != Some(head) {
        match write_lkg(app, live) {
            Ok(seq) => {
                done.lkg_seq = Some(seq);
                app.projections.lkg_seq.store(seq, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "the LKG file was not refreshed; retrying"),
        }
    }
    app.metrics.projection_lag("lkg", head.saturating_sub(done.lkg_seq.unwrap_or(0)));
    done
}
