//! Section 3: full verification of a large log (`LogReader::verify(None, ..)`, every
//! signature checked in batches), next to the Ed25519 ceiling measured with ed25519-dalek
//! directly in the same run: single `verify_strict` and batch verification.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use confstore_core::{ChainVerifier, limits};
use confstore_log::{DbOptions, LogReader, Store};
use ed25519_dalek::{Signature, Signer};
use serde::Serialize;

use crate::workload;
use confstore_bench::timing::{Samples, rate};

/// Batch sizes measured besides the verifier's own.
const OTHER_BATCH_SIZES: [usize; 3] = [64, 1024, 4096];

/// Services the verify log spreads its values over.
pub const SERVICES: usize = 20;
/// Distinct keys per service in the verify log.
pub const KEYS_PER_SERVICE: usize = 500;

/// Section 3's log and its verification rate.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyResult {
    /// Events in the log.
    pub events: u64,
    /// Events per changeset (except the first two changesets and possibly the last).
    pub changeset_events: usize,
    /// Seconds it took to build the log through `Store::append`.
    pub build_secs: f64,
    /// Events verified per second.
    pub verify: Samples,
    /// Events merely read from SQLite per second (`for_each_event`, no checks).
    pub read_only: Samples,
    /// Events per second through `ChainVerifier` with signature checks skipped (links,
    /// hashes, decoding, structure): verification minus Ed25519.
    pub without_signatures: Samples,
}

/// The Ed25519 baseline, signatures per second on one core.
#[derive(Clone, Debug, Serialize)]
pub struct CryptoResult {
    /// Signatures per run.
    pub signatures: usize,
    /// Signatures per batch in the batch figure (the verifier's batch size).
    pub batch_size: usize,
    /// Signing.
    pub sign: Samples,
    /// `VerifyingKey::verify_strict`, one at a time.
    pub verify_strict: Samples,
    /// `ed25519_dalek::verify_batch`.
    pub verify_batch: Samples,
    /// Batch verification at other batch sizes (size, signatures per second), to show what
    /// a different [`limits::VERIFY_BATCH_EVENTS`] would give.
    pub verify_batch_by_size: Vec<(usize, Samples)>,
    /// Batch verification on every core at once (one thread per core, each verifying its
    /// share in batches of `batch_size`): the ceiling of a parallel verifier.
    pub verify_batch_all_cores: Samples,
    /// Threads used for `verify_batch_all_cores`.
    pub cores: usize,
}

/// Checks `msgs`/`sigs` in batches of `batch`; signatures per second.
fn batch_rate(vk: &ed25519_dalek::VerifyingKey, msgs: &[[u8; 32]], sigs: &[Signature], batch: usize) -> Result<f64> {
    let keys = vec![*vk; batch];
    let start = Instant::now();
    for (m, s) in msgs.chunks(batch).zip(sigs.chunks(batch)) {
        let refs: Vec<&[u8]> = m.iter().map(<[u8; 32]>::as_slice).collect();
        ed25519_dalek::verify_batch(&refs, s, &keys[..m.len()]).context("batch verification failed")?;
    }
    Ok(rate(msgs.len(), start.elapsed()))
}

/// Builds a log of `events` events at `path`: event 1, one changeset registering the
/// services, then changesets of `changeset_events` value sets.
pub fn build_log(path: &Path, events: usize, changeset_events: usize) -> Result<f64> {
    ensure!(events >= 3, "the verify log needs at least 3 events");
    ensure!(
        (1..=limits::EVENTS_PER_CHANGESET_MAX).contains(&changeset_events),
        "changeset size must be 1 to {}",
        limits::EVENTS_PER_CHANGESET_MAX
    );
    let start = Instant::now();
    let store = Store::create(
        path,
        workload::signing_key(),
        workload::store_id(0xee),
        workload::ACTOR,
        workload::clock(),
        &DbOptions::default(),
    )?;
    let services = SERVICES.min(events - 2);
    store.append(workload::register_draft(services))?;
    let mut done = 1 + services;
    let mut g = 0usize;
    let mut cs = 0usize;
    while done < events {
        let n = changeset_events.min(events - done);
        // Consecutive g give distinct (service, key) pairs while n <= SERVICES * KEYS_PER_SERVICE.
        let changes =
            (0..n).map(|j| workload::set((g + j) % services, ((g + j) / services) % KEYS_PER_SERVICE, g + j)).collect();
        store.append(workload::draft(cs, changes))?;
        g += n;
        done += n;
        cs += 1;
    }
    drop(store);
    Ok(start.elapsed().as_secs_f64())
}

/// Verifies the log at `path` `runs` times; events per second. Also times reading alone and
/// verification without signatures, to show where verification's time goes.
pub fn verify(path: &Path, runs: usize, changeset_events: usize, build_secs: f64) -> Result<VerifyResult> {
    let reader = LogReader::open(path)?;
    let events = reader.count()?;
    // Warm-up: read every page once (the log was just written, so this is mostly cached).
    let _: i64 =
        reader.connection().query_row("SELECT sum(length(body) + length(sig)) FROM events", [], |r| r.get(0))?;
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let head = match reader.verify(None, &mut |_| {})? {
            Ok(head) => head,
            Err(e) => bail!("the benchmark log does not verify: {e}"),
        };
        let elapsed = start.elapsed();
        ensure!(head.seq == events, "verify stopped at {} of {events} events", head.seq);
        rates.push(rate(usize::try_from(events)?, elapsed));
    }
    let n = usize::try_from(events)?;
    let (mut read, mut nosig) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        let mut seen = 0usize;
        reader.for_each_event(1, |ev| {
            std::hint::black_box(&ev);
            seen += 1;
            Ok(true)
        })?;
        read.push(rate(seen, start.elapsed()));

        let start = Instant::now();
        let mut verifier =
            ChainVerifier::new(reader.store_id(), None).trust_signatures_through(u64::MAX).discard_events();
        let mut failure = None;
        reader.for_each_event(1, |ev| match verifier.push(&ev) {
            Ok(()) => Ok(true),
            Err(e) => {
                failure = Some(e);
                Ok(false)
            }
        })?;
        if let Some(e) = failure {
            bail!("the benchmark log does not verify without signatures: {e}");
        }
        verifier.finish().map_err(|e| anyhow::anyhow!("the benchmark log does not verify: {e}"))?;
        nosig.push(rate(n, start.elapsed()));
    }
    Ok(VerifyResult {
        events,
        changeset_events,
        build_secs,
        verify: Samples::new(rates),
        read_only: Samples::new(read),
        without_signatures: Samples::new(nosig),
    })
}

/// The Ed25519 ceiling on this machine: sign, `verify_strict` and batch verification of
/// `n` signatures over 32-byte messages (event hashes), single-threaded.
pub fn crypto(n: usize, runs: usize) -> Result<CryptoResult> {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let vk = sk.verifying_key();
    let batch = limits::VERIFY_BATCH_EVENTS;
    let msgs: Vec<[u8; 32]> = (0..n)
        .map(|i| confstore_core::event_hash(i as u64 + 1, &confstore_core::Hash32([7; 32]), b"bench").0)
        .collect();
    let (mut sign, mut strict, mut batched) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_size: Vec<Vec<f64>> = vec![Vec::new(); OTHER_BATCH_SIZES.len()];
    let mut all_cores = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for _ in 0..runs {
        let start = Instant::now();
        let sigs: Vec<Signature> = msgs.iter().map(|m| sk.sign(m)).collect();
        sign.push(rate(n, start.elapsed()));

        let start = Instant::now();
        let ok = msgs.iter().zip(&sigs).filter(|(m, s)| vk.verify_strict(m.as_slice(), s).is_ok()).count();
        strict.push(rate(n, start.elapsed()));
        ensure!(ok == n, "verify_strict refused {} good signatures", n - ok);

        batched.push(batch_rate(&vk, &msgs, &sigs, batch)?);
        for (i, size) in OTHER_BATCH_SIZES.iter().enumerate() {
            by_size[i].push(batch_rate(&vk, &msgs, &sigs, *size)?);
        }
        let per_core = n.div_ceil(cores);
        let start = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = msgs
                .chunks(per_core)
                .zip(sigs.chunks(per_core))
                .map(|(m, s)| scope.spawn(move || batch_rate(&vk, m, s, batch)))
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("a verifying thread panicked"))??;
            }
            Ok(())
        })?;
        all_cores.push(rate(n, start.elapsed()));
    }
    Ok(CryptoResult {
        signatures: n,
        batch_size: batch,
        sign: Samples::new(sign),
        verify_strict: Samples::new(strict),
        verify_batch: Samples::new(batched),
        verify_batch_by_size: OTHER_BATCH_SIZES.iter().copied().zip(by_size.into_iter().map(Samples::new)).collect(),
        verify_batch_all_cores: Samples::new(all_cores),
        cores,
    })
}
