//! The projections the server keeps on disk, caught up in the background after commits:
//! the search index (in `config.db`, its checkpoint in the same transaction) and the LKG
//! file (rewritten at most every `lkg_interval`, its high-water mark first). It also folds
//! in events other processes appended (the CLI), every second when idle.

use std::sync::Arc;
use std::time::Duration;

use confstore_log::{LogError, LogReader};

use crate::app::{App, LiveMode, Mode};
use crate::model::lkg_content;

/// How often the projector looks for other processes' events when nothing happens here.
const IDLE_REFRESH: Duration = Duration::from_secs(1);

/// Brings the search index up to the log's head. If its checkpoint is not an event of this
/// log (a restore, a copied file), the index is rebuilt instead.
pub fn search_catch_up(reader: &LogReader) -> Result<u64, LogError> {
    let conn = reader.connection();
    let sql = LogError::sqlite("updating the search index");
    let tx = conn.unchecked_transaction().map_err(LogError::sqlite("starting to update the search index"))?;
    let from = match confstore_search::checkpoint(&tx).map_err(|e| LogError::Schema(e.to_string()))? {
        None => 0,
        Some((seq, hash)) => {
            let mut same = false;
            reader.for_each_event(seq, |ev| {
                same = ev.seq == seq && ev.hash == hash;
                Ok(false)
            })?;
            if same {
                seq
            } else {
                confstore_search::clear(&tx).map_err(|e| LogError::Schema(e.to_string()))?;
                0
            }
        }
    };
    let events = reader.verified_after(from)?;
    let last = events.last().map_or(from, confstore_core::Verified::seq);
    if !events.is_empty() {
        confstore_search::apply(&tx, &events, &reader.current_state()?).map_err(|e| LogError::Schema(e.to_string()))?;
    }
    tx.commit().map_err(sql)?;
    Ok(last)
}

/// Writes the high-water mark, then the LKG file, for the read model's head.
fn write_lkg(app: &App, live: &LiveMode) -> Result<u64, String> {
    let content = live.model.read(|m| lkg_content(&m.state, &m.store_id, m.generation, &m.head_hash));
    let seq = content.seq;
    confstore_lkg::raise_high_water_mark(&app.config.hwm_path(), seq)
        .map_err(|e| format!("cannot write the LKG high-water mark: {e}"))?;
    let jws = content.to_jws(&app.keys.lkg, confstore_core::state::canonical_json_text);
    confstore_lkg::write_atomically(&app.config.lkg_path(), &jws).map_err(|e| e.to_string())?;
    Ok(seq)
}

/// Runs until the server stops: after each wake-up (a commit, or the idle tick), refresh
/// from other writers, catch the search index up, and rewrite the LKG file if the head
/// moved and `lkg_interval` has passed since the last rewrite.
pub async fn run(app: App) {
    let mut lkg_seq: Option<u64> = None;
    let mut last_lkg: Option<tokio::time::Instant> = None;
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
        let lkg_due = lkg_seq != Some(head);
        let since_lkg = last_lkg.map_or(app.config.lkg_interval, |t| t.elapsed());
        let wait = if lkg_due { app.config.lkg_interval.saturating_sub(since_lkg) } else { IDLE_REFRESH };
        let _ = tokio::time::timeout(wait, live.model.changed.notified()).await;
        let (a, m) = (app.clone(), Arc::clone(&mode));
        let write_now = last_lkg.is_none_or(|t| t.elapsed() >= app.config.lkg_interval);
        let result = tokio::task::spawn_blocking(move || {
            let Mode::Live(live) = &*m else { return (None, None) };
            if let Err(e) = live.store.refresh() {
                tracing::error!(error = %e, "cannot fold in other writers' events");
            }
            let search = {
                let _one = live.search_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                live.readers.with(search_catch_up)
            };
            let head = live.model.read(|m| m.state.seq);
            // Only when the head moved since the last rewrite (an idle server writes nothing).
            let write_now = write_now && lkg_seq != Some(head);
            match &search {
                Ok(seq) => {
                    a.projections.search_seq.store(*seq, std::sync::atomic::Ordering::Relaxed);
                    a.metrics.projection_lag("search", head.saturating_sub(*seq));
                }
                Err(e) => tracing::warn!(error = %e, "the search index is behind; retrying"),
            }
            let lkg = write_now.then(|| write_lkg(&a, live));
            (Some(head), lkg)
        })
        .await;
        if let Ok((Some(head), lkg)) = result {
            match lkg {
                Some(Ok(seq)) => {
                    lkg_seq = Some(seq);
                    app.projections.lkg_seq.store(seq, std::sync::atomic::Ordering::Relaxed);
                    last_lkg = Some(tokio::time::Instant::now());
                    app.metrics.projection_lag("lkg", head.saturating_sub(seq));
                }
                Some(Err(e)) => tracing::error!(error = %e, "the LKG file was not refreshed; retrying"),
                None => app.metrics.projection_lag("lkg", head.saturating_sub(lkg_seq.unwrap_or(0))),
            }
        }
    }
}
