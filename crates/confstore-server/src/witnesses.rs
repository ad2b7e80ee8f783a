//! Witnesses (c2sp.org/tlog-witness; docs/format.md §19.4, ADR 0028): each checkpoint the
//! server publishes is submitted to the configured witnesses, and the cosignatures they
//! answer are appended to the published note, so `GET /api/v1/checkpoint` and the retained
//! `system/config-checkpoint` carry them.
//!
//! A submission is `POST <url>/add-checkpoint` with `old <size>` (the size this server last
//! had the witness cosign, 0 at first), the consistency proof from that size (base64 lines,
//! from the stored tree), a blank line, and the signed note. A `409 Conflict` answers the
//! witness's own latest size (`text/x.tlog.size`): the server retries once with a proof from
//! that size. Any other refusal is logged (a `422` means the witness holds a checkpoint of
//! another history: `alert=witness_refused`) and the checkpoint stays without that
//! witness's cosignature. A cosignature is kept only if it verifies with the witness's
//! configured key. Bodies are bounded, requests time out, failures never delay publishing.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use confstore_core::tlog::{self, WitnessEndpoint as Witness, WitnessKey};

use crate::app::{App, Mode};
use crate::checkpoints::Published;

/// How long one submission may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from a witness (limits.rs).
const ANSWER_BYTES: usize = confstore_core::limits::WITNESS_ANSWER_BYTES_MAX;

/// Submits every newly published checkpoint to every witness, until the server stops.
pub async fn run(app: App) {
    if app.config.witnesses.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the witnesses' HTTP client; no cosignatures");
            return;
        }
    };
    // The size each witness last cosigned for us (0: none yet, or unknown).
    let mut sizes = vec![0u64; app.config.witnesses.len()];
    let mut latest = app.checkpoints.subscribe();
    loop {
        let current = latest.borrow_and_update().clone();
        if let Some(p) = current.filter(|p| !is_cosigned(p, &app)) {
            let mut lines = String::new();
            for (i, w) in app.config.witnesses.iter().enumerate() {
                match submit(&app, &http, w, &p, &mut sizes[i]).await {
                    Ok(line) => lines.push_str(&line),
                    Err(why) => {
                        tracing::warn!(witness = %w.key.name, size = p.checkpoint.size, "no cosignature: {why}")
                    }
                }
            }
            if !lines.is_empty() {
                let note: Arc<str> = format!("{}{lines}", p.note).into();
                app.checkpoints.cosigned(p.checkpoint.size, note);
            }
        }
        if latest.changed().await.is_err() {
            return;
        }
    }
}

/// Whether the note already carries a cosignature line (it was cosigned: this is the
/// republished note).
fn is_cosigned(p: &Published, app: &App) -> bool {
    let keys: Vec<WitnessKey> = app.config.witnesses.iter().map(|w| w.key.clone()).collect();
    tlog::cosigned_by(p.note.as_bytes(), &keys).is_ok_and(|by| !by.is_empty())
}

/// One witness: submit (and once more after a 409 with the witness's size); the verified
/// cosignature line.
async fn submit(
    app: &App,
    http: &reqwest::Client,
    w: &Witness,
    p: &Published,
    size: &mut u64,
) -> Result<String, String> {
    for _ in 0..2 {
        let old = if *size > p.checkpoint.size { 0 } else { *size };
        let proof = proof(app, old, p.checkpoint.size).await?;
        let mut body = format!("old {old}\n");
        for h in &proof {
            body.push_str(&B64.encode(h));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&p.note);
        let resp = http
            .post(format!("{}/add-checkpoint", w.url))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {}/add-checkpoint: {e}", w.url))?;
        let status = resp.status().as_u16();
        let text = read_bounded(resp).await?;
        match status {
            200 => {
                let line = text.lines().find(|l| l.starts_with('\u{2014}')).map(|l| format!("{l}\n"));
                let Some(line) = line else { return Err("the answer has no signature line".into()) };
                let cosigned = format!("{}{line}", p.note);
                match tlog::cosigned_by(cosigned.as_bytes(), std::slice::from_ref(&w.key)) {
                    Ok(by) if !by.is_empty() => {
                        *size = p.checkpoint.size;
                        return Ok(line);
                    }
                    Ok(_) => return Err("the answer is not a cosignature by the configured key".into()),
                    Err(e) => return Err(format!("the cosignature does not verify: {e}")),
                }
            }
            409 => {
                let theirs = text.trim().parse::<u64>().map_err(|_| format!("409 without a size: {text:?}"))?;
                if theirs > p.checkpoint.size {
                    return Err(format!("the witness holds a larger checkpoint ({theirs}) than this one"));
                }
                *size = theirs;
            }
            422 => {
                tracing::error!(
                    alert = "witness_refused", witness = %w.key.name, size = p.checkpoint.size,
                    "the witness refuses the checkpoint as inconsistent with the one it holds: {}",
                    text.trim()
                );
                return Err(format!("422: {}", text.trim()));
            }
            other => return Err(format!("HTTP {other}: {}", text.trim())),
        }
    }
    Err("the witness's size kept changing".into())
}

/// The consistency proof from `old` to `size` from the stored tree.
async fn proof(app: &App, old: u64, size: u64) -> Result<Vec<[u8; 32]>, String> {
    if old == 0 || old == size {
        return Ok(Vec::new());
    }
    let mode = app.mode();
    if !matches!(&*mode, Mode::Live(_)) {
        return Err("the database is not open".into());
    }
    tokio::task::spawn_blocking(move || match &*mode {
        Mode::Live(live) => live.readers.with(|r| r.consistency_proof(old, size)),
        _ => Err(confstore_log::LogError::OutOfRange("the database is not open".into())),
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("no consistency proof from {old} to {size}: {e}"))
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > ANSWER_BYTES {
            return Err(format!("the answer is larger than {ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8".into())
}
