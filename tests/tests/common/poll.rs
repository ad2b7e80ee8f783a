//! Waiting for a condition with a deadline ([`poll_until`]): the condition is the
//! synchronisation, the interval only a retry pace.

use std::time::{Duration, Instant};

/// Calls `attempt` every `interval` until it returns `Some`, and panics naming `what` once
/// `deadline` has passed. The wait between attempts is a retry interval, not the
/// synchronisation: the condition is.
#[track_caller]
pub fn poll_until<T>(what: &str, deadline: Duration, interval: Duration, mut attempt: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(interval);
    }
}
