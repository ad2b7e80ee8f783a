//! Counters: what the client applied, rejected, filled in and recovered from.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A copy of the client's counters (see [`crate::Client::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Versions applied (each one went through `on_update`), including gap fills.
    pub applied: u64,
    /// Snapshots not taken, by kind: the [`confstore_core::stream::Rejection::kind`] names
    /// (`signature`, `malformed`, `wrong_store`, `wrong_service`, `stale`, `duplicate`,
    /// `old_generation`, `forked`) and `wrong_topic` (a message on a topic that is not this
    /// service's snapshot topic).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Missing versions fetched over REST and applied before the message that revealed
    /// the gap.
    pub gaps_filled: u64,
    /// Gaps that could not be filled (REST unreachable, chain longer than the walk bound
    /// or broken): the newest version was applied directly.
    pub resyncs: u64,
    /// MQTT connections established after the first one.
    pub reconnects: u64,
    /// Latest snapshots fetched over REST because messages may have been lost: after each
    /// connection on which the broker had no session for the client (a broker restart
    /// without persistence loses queued and retained messages), and after a start from the
    /// LKG file alone.
    pub catch_ups: u64,
    /// LKG files that did not load (corrupt, tampered, another store's) and were ignored
    /// because another source succeeded.
    pub lkg_rejected: u64,
    /// LKG writes that failed (the version was applied, the high-water mark not saved).
    pub lkg_write_errors: u64,
    /// Signed checkpoints of the log's Merkle tree accepted (docs/format.md §19): each one
    /// consistent with the one accepted before it.
    pub checkpoints_accepted: u64,
    /// Checkpoints not accepted, by kind: `signature` (not a checkpoint of this store signed
    /// by a trusted key), `stale` (smaller than the one held, and a prefix of it), `forked`
    /// (inconsistent with the one held: another history; logged as an error), `unproven`
    /// (the consistency proof could not be fetched or was malformed; tried again later),
    /// `unwitnessed` (fewer valid witness cosignatures than `require_witnesses`).
    pub checkpoints_refused: BTreeMap<&'static str, u64>,
    /// Applied versions whose event (`changed_seq`) was shown to be in the accepted
    /// checkpoint's tree.
    pub inclusions_verified: u64,
    /// Applied versions whose inclusion proof did not verify against the accepted
    /// checkpoint (the server answered for another history; logged as an error).
    pub inclusions_failed: u64,
    /// Transparency-log requests that failed (REST unreachable, an error status); retried.
    pub tlog_fetch_errors: u64,
}

impl Stats {
    /// How many snapshots were rejected as `kind`.
    pub fn rejected(&self, kind: &str) -> u64 {
        self.rejected.get(kind).copied().unwrap_or(0)
    }

    /// How many checkpoints were refused as `kind`.
    pub fn checkpoints_refused(&self, kind: &str) -> u64 {
        self.checkpoints_refused.get(kind).copied().unwrap_or(0)
    }

    /// How many snapshots were rejected, all kinds together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The live counters, shared by the tasks and the [`crate::Client`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) applied: AtomicU64,
    pub(crate) gaps_filled: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) catch_ups: AtomicU64,
    pub(crate) lkg_rejected: AtomicU64,
    pub(crate) lkg_write_errors: AtomicU64,
    pub(crate) checkpoints_accepted: AtomicU64,
    pub(crate) inclusions_verified: AtomicU64,
    pub(crate) inclusions_failed: AtomicU64,
    pub(crate) tlog_fetch_errors: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    checkpoints_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reject(&self, kind: &'static str) {
        *self.rejected.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    pub(crate) fn refuse_checkpoint(&self, kind: &'static str) {
        *self.checkpoints_refused.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            applied: load(&self.applied),
            rejected: self.rejected.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            gaps_filled: load(&self.gaps_filled),
            resyncs: load(&self.resyncs),
            reconnects: load(&self.reconnects),
            catch_ups: load(&self.catch_ups),
            lkg_rejected: load(&self.lkg_rejected),
            lkg_write_errors: load(&self.lkg_write_errors),
            checkpoints_accepted: load(&self.checkpoints_accepted),
            checkpoints_refused: self.checkpoints_refused.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            inclusions_verified: load(&self.inclusions_verified),
            inclusions_failed: load(&self.inclusions_failed),
            tlog_fetch_errors: load(&self.tlog_fetch_errors),
        }
    }
}
