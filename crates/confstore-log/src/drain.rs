//! The one loop every reader of the log runs: push each stored event into a
//! [`ChainVerifier`] and hand the events it releases, verified and in order, to a sink.
//!
//! Replays, the current state, projections catching up and the writer's catch-up all read
//! events the same way; [`Drain`] is that loop, so none of them can forget the last
//! signature batch ([`Drain::flush`]) or the end-of-log checks ([`Drain::finish`]).

use std::ops::ControlFlow;

use confstore_core::verify::ChainHead;
use confstore_core::{ChainVerifier, StoredEvent, Verified};

use crate::error::LogError;

/// Drives a [`ChainVerifier`] over stored events and hands every event it verifies, in log
/// order, to `sink`. The sink may stop the drain (`ControlFlow::Break`): later events are
/// still verified if pushed, but no longer handed out, and [`Self::push`] answers `false`
/// so a reading loop can stop. A verification failure is [`LogError::Tampered`] with the
/// verifier's error (the first bad event).
///
/// ```text
/// let mut drain = Drain::new(verifier, |v| { state.apply(&v); ControlFlow::Continue(()) });
/// reader.for_each_event(from, |ev| drain.push(&ev))?;
/// let head = drain.finish()?;
/// ```
pub(crate) struct Drain<F> {
    verifier: ChainVerifier,
    sink: F,
    stopped: bool,
}

impl<F: FnMut(Verified) -> ControlFlow<()>> Drain<F> {
    /// A drain handing what `verifier` verifies to `sink`.
    pub(crate) fn new(verifier: ChainVerifier, sink: F) -> Self {
        Self { verifier, sink, stopped: false }
    }

    /// Verifies `ev` and hands the events it made ready to the sink. `Ok(true)`: keep
    /// reading; `Ok(false)`: the sink has stopped. The shape of
    /// [`crate::LogReader::for_each_event`]'s callback.
    pub(crate) fn push(&mut self, ev: &StoredEvent) -> Result<bool, LogError> {
        self.verifier.push(ev).map_err(LogError::Tampered)?;
        let ready = self.verifier.take_ready();
        self.deliver(ready);
        Ok(!self.stopped)
    }

    /// Checks the signatures still queued and hands out the events they held back, without
    /// the end-of-log checks: for a read that may stop before the end of the log (a replay
    /// to an epoch or a time).
    pub(crate) fn flush(mut self) -> Result<(), LogError> {
        self.flush_ready()
    }

    /// [`Self::flush`], then the end-of-log checks (no changeset left open, the log is not
    /// empty, the trusted key is in the key chain); returns the head after the last event.
    pub(crate) fn finish(mut self) -> Result<ChainHead, LogError> {
        self.flush_ready()?;
        self.verifier.finish().map_err(LogError::Tampered)
    }

    fn flush_ready(&mut self) -> Result<(), LogError> {
        let ready = self.verifier.flush_ready().map_err(LogError::Tampered)?;
        self.deliver(ready);
        Ok(())
    }

    fn deliver(&mut self, ready: Vec<Verified>) {
        for v in ready {
            if self.stopped {
                return;
            }
            if (self.sink)(v).is_break() {
                self.stopped = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use confstore_core::chain::genesis_hash;
    use confstore_core::state::{ChangesetDraft, decide, seal, store_created};
    use confstore_core::{Change, SigningKey, State, StoreId, VerifyError};
    use serde_json::json;

    use super::*;

    const STORE: StoreId = StoreId([3; 16]);

    /// A valid log of at least `events` events: a service, then one value set per changeset.
    fn log(events: usize) -> Vec<StoredEvent> {
        let key = SigningKey::from_seed(&[9; 32]);
        let mut out = vec![seal(1, &genesis_hash(&STORE), &store_created(STORE, &key, "t", "r", 1), &key)];
        let mut state = State::default();
        let mut changes = vec![Change::RegisterService { service: "s".into() }];
        while out.len() < events {
            let draft = ChangesetDraft {
                actor: "t".into(),
                reason: String::new(),
                request_id: "r".into(),
                expected_epoch: None,
                changes,
            };
            for body in decide(&state, &draft, 10).expect("a valid change") {
                let prev = out.last().expect("genesis").hash;
                let ev = seal(out.len() as u64 + 1, &prev, &body, &key);
                state.apply_body(ev.seq, &body);
                out.push(ev);
            }
            changes = vec![Change::Set { service: "s".into(), key: "k".into(), value: json!(out.len()) }];
        }
        out
    }

    #[test]
    fn hands_out_every_event_in_order_and_finishes_at_the_last() {
        let events = log(600);
        let mut seen = Vec::new();
        let mut drain = Drain::new(ChainVerifier::new(STORE, None), |v| {
            seen.push(v.seq());
            ControlFlow::Continue(())
        });
        for ev in &events {
            assert!(drain.push(ev).expect("verifies"));
        }
        let head = drain.finish().expect("a whole log");
        assert_eq!(head.seq, events.len() as u64);
        assert_eq!(seen, (1..=events.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_sink_that_stops_gets_nothing_more_and_push_says_so() {
        let events = log(40);
        let mut seen = Vec::new();
        // Trusted signatures: nothing is held back, each event is released as it is pushed.
        let verifier = ChainVerifier::new(STORE, None).trust_signatures_through(u64::MAX);
        let mut drain = Drain::new(verifier, |v| {
            if v.seq() > 10 {
                return ControlFlow::Break(());
            }
            seen.push(v.seq());
            ControlFlow::Continue(())
        });
        let mut pushed = 0;
        for ev in &events {
            pushed += 1;
            if !drain.push(ev).expect("verifies") {
                break;
            }
        }
        drain.flush().expect("the queued signatures check");
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert_eq!(pushed, 11, "push says stop at the first event the sink refused");
    }

    #[test]
    fn a_bad_event_is_tampered_with_the_verifiers_error() {
        let mut events = log(30);
        events[19].sig[0] ^= 1;
        let mut seen = 0u64;
        let mut drain = Drain::new(ChainVerifier::new(STORE, None), |_| {
            seen += 1;
            ControlFlow::Continue(())
        });
        let mut outcome = Ok(true);
        for ev in &events {
            outcome = drain.push(ev);
            if outcome.is_err() {
                break;
            }
        }
        let err = match outcome {
            Err(e) => e,
            Ok(_) => drain.finish().expect_err("a bad signature"),
        };
        assert!(matches!(err, LogError::Tampered(VerifyError::BadSignature { seq: 20, .. })), "{err:?}");
        assert!(seen < 20, "nothing at or after the bad event was handed out ({seen})");
    }
}
