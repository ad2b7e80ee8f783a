//! Checking signature batches on worker threads while the caller keeps reading and checking
//! the chain, so `verify` uses every core ([`ChainVerifier::defer_signatures`]).

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use confstore_core::verify::ChainHead;
use confstore_core::{ChainVerifier, SignatureBatch, StoredEvent, VerifyError};

/// Worker threads that check signature batches; remembers the failure with the smallest seq.
pub struct SignatureChecker {
    tx: Option<SyncSender<SignatureBatch>>,
    workers: Vec<JoinHandle<()>>,
    failure: Arc<Mutex<Option<VerifyError>>>,
}

impl SignatureChecker {
    /// One worker per available core (at least one, at most eight).
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let (tx, rx) = mpsc::sync_channel::<SignatureBatch>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let failure = Arc::new(Mutex::new(None));
        let workers = (0..threads)
            .map(|_| {
                let (rx, failure) = (Arc::clone(&rx), Arc::clone(&failure));
                std::thread::spawn(move || work(&rx, &failure))
            })
            .collect();
        Self { tx: Some(tx), workers, failure }
    }

    /// Queues batches (blocks while the workers are busy, bounding memory).
    pub fn submit(&self, batches: Vec<SignatureBatch>) {
        if let Some(tx) = &self.tx {
            for b in batches {
                // A send fails only if every worker died; `finish` then reports nothing
                // checked, which the caller sees as a failure below.
                let _ = tx.send(b);
            }
        }
    }

    /// Waits for every batch; the failure with the smallest seq, if any.
    pub fn finish(mut self) -> Option<VerifyError> {
        self.tx.take();
        let mut panicked = false;
        for w in self.workers.drain(..) {
            panicked |= w.join().is_err();
        }
        let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner).take();
        if panicked && failure.is_none() {
            return Some(VerifyError::Structure { seq: 0, reason: "a signature worker crashed".into() });
        }
        failure
    }
}

impl Default for SignatureChecker {
    fn default() -> Self {
        Self::new()
    }
}

fn work(rx: &Mutex<Receiver<SignatureBatch>>, failure: &Mutex<Option<VerifyError>>) {
    loop {
        let batch = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(b) => b,
                Err(_) => return,
            }
        };
        if let Err(e) = batch.check() {
            let mut slot = failure.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_none_or(|f| e.seq() < f.seq()) {
                *slot = Some(e);
            }
        }
    }
}

/// A [`ChainVerifier`] whose signatures are checked on every core: the chain rules on the
/// caller's thread, signature batches on a [`SignatureChecker`].
pub struct ParallelVerifier {
    verifier: ChainVerifier,
    checker: SignatureChecker,
    failed: Option<VerifyError>,
}

impl ParallelVerifier {
    /// Wraps a verifier (switching it to deferred signatures).
    pub fn new(verifier: ChainVerifier) -> Self {
        Self { verifier: verifier.defer_signatures(), checker: SignatureChecker::new(), failed: None }
    }

    /// Checks one event; `false` once the chain failed (stop pushing, call `finish`).
    pub fn push(&mut self, ev: &StoredEvent) -> bool {
        if self.failed.is_some() {
            return false;
        }
        if let Err(e) = self.verifier.push(ev) {
            self.failed = Some(e);
        }
        self.checker.submit(self.verifier.take_signature_batches());
        self.failed.is_none()
    }

    /// The head after the last event pushed.
    pub fn head(&self) -> &ChainHead {
        self.verifier.head()
    }

    /// The final head, or the first bad event: a failed signature comes before the chain
    /// error that stopped pushing, since its event came first.
    pub fn finish(mut self) -> Result<ChainHead, VerifyError> {
        let end = match self.failed.take() {
            Some(e) => Err(e),
            None => {
                let (end, last) = self.verifier.finish_deferred();
                self.checker.submit(last);
                end
            }
        };
        match self.checker.finish() {
            Some(sig_failure) => Err(sig_failure),
            None => end,
        }
    }

    /// For a caller that stops for its own reason (an unreadable export line): the first bad
    /// event among those pushed, if any, which then comes before the caller's reason.
    pub fn abandon(mut self) -> Option<VerifyError> {
        self.checker.submit(self.verifier.take_signature_batches());
        let sig_failure = self.checker.finish();
        sig_failure.or(self.failed)
    }
}
