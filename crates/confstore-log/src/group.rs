//! Group commit without a dedicated thread (leader/follower). Appenders enqueue their request
//! and wait; whenever no commit is running, one waiting appender becomes the leader, takes
//! every queued request (up to the group-commit limits), commits them in one transaction
//! through the [`Writer`], posts every result, and wakes the others. A lone appender thus
//! commits on its own thread with no hand-off; many appenders share one fsync.
//!
//! The group is generic over what commits ([`Committer`], the [`Writer`] in production) and
//! takes its primitives from `crate::sync`, so the hand-off is checked under shuttle with a
//! fake committer (the tests below, `--features shuttle`; docs/testing.md row 20).

use std::collections::HashMap;

use confstore_core::limits;

use crate::Receipt;
use crate::error::LogError;
use crate::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use crate::writer::{Request, Writer};

/// What commits a batch: the [`Writer`], or a fake in the shuttle tests.
pub(crate) trait Committer {
    /// One queued request.
    type Request: Batched;
    /// The answer to one request.
    type Outcome;
    /// Commits `requests` together; one outcome per request, in order.
    fn commit_batch(&mut self, requests: Vec<Self::Request>) -> Vec<Self::Outcome>;
    /// The answer to a request whose commit panicked, or whose committer is poisoned.
    fn gone() -> Self::Outcome;
}

/// What the group-commit limits need to know of a request.
pub(crate) trait Batched {
    /// Events the request appends.
    fn events(&self) -> usize;
    /// Whether no request may follow it in its batch.
    fn ends_batch(&self) -> bool;
}

impl Committer for Writer {
    type Request = Request;
    type Outcome = Result<Receipt, LogError>;
    fn commit_batch(&mut self, requests: Vec<Request>) -> Vec<Self::Outcome> {
        Writer::commit_batch(self, requests)
    }
    fn gone() -> Self::Outcome {
        Err(LogError::WriterGone)
    }
}

impl Batched for Request {
    fn events(&self) -> usize {
        Request::events(self)
    }
    fn ends_batch(&self) -> bool {
        // Events after a rotation are signed by the new key, and those after a new
        // generation belong to it: let either end the batch.
        matches!(self, Request::Rotate { .. } | Request::StartGeneration { .. })
    }
}

struct Queue<C: Committer> {
    next_ticket: u64,
    waiting: Vec<(u64, C::Request)>,
    done: HashMap<u64, C::Outcome>,
    /// One condition per waiting appender (used with the queue's mutex), so a leader wakes
    /// exactly the appenders it answered and the one that leads next, not all of them.
    wakers: HashMap<u64, Arc<Condvar>>,
    leader: bool,
}

/// The queue and the writer.
pub(crate) struct Group<C: Committer = Writer> {
    queue: Mutex<Queue<C>>,
    writer: Mutex<C>,
}

/// Leadership is released, and the taken requests answered, even if the commit panics.
struct Leadership<'g, C: Committer> {
    group: &'g Group<C>,
    /// The leader's own ticket: its thread is running, not waiting, so it is not woken.
    own: u64,
    tickets: Vec<u64>,
    results: Option<Vec<(u64, C::Outcome)>>,
}

impl<C: Committer> Drop for Leadership<'_, C> {
    fn drop(&mut self) {
        let mut q = self.group.lock_queue();
        match self.results.take() {
            Some(results) => q.done.extend(results),
            None => q.done.extend(self.tickets.iter().map(|t| (*t, C::gone()))),
        }
        q.leader = false;
        for t in self.tickets.iter().filter(|t| **t != self.own) {
            if let Some(cv) = q.wakers.get(t) {
                cv.notify_one();
            }
        }
        // The oldest appender still queued leads next.
        if let Some(cv) = q.waiting.first().and_then(|(t, _)| q.wakers.get(t)) {
            cv.notify_one();
        }
    }
}

impl<C: Committer> Group<C> {
    pub(crate) fn new(writer: C) -> Self {
        Self {
            queue: Mutex::new(Queue {
                next_ticket: 0,
                waiting: Vec::new(),
                done: HashMap::new(),
                wakers: HashMap::new(),
                leader: false,
            }),
            writer: Mutex::new(writer),
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue<C>> {
        // The queue holds plain data, consistent after every statement: usable after a panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request` and returns once it is committed (or refused).
    pub(crate) fn submit(&self, request: C::Request) -> C::Outcome {
        let mut q = self.lock_queue();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push((ticket, request));
        let wake = Arc::new(Condvar::new());
        q.wakers.insert(ticket, Arc::clone(&wake));
        loop {
            if let Some(outcome) = q.done.remove(&ticket) {
                q.wakers.remove(&ticket);
                return outcome;
            }
            if !q.leader {
                q.leader = true;
                let batch = take_batch(&mut q.waiting);
                drop(q);
                self.lead(ticket, batch);
                q = self.lock_queue();
                continue;
            }
            q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Queues `requests` together, in order, and returns once every one is committed (or
    /// refused): one outcome per request, in order. What a thread that gathers appends for
    /// others submits (the server's append thread): it leads as a lone appender would, its
    /// requests sharing batches with any other appender's.
    pub(crate) fn submit_all(&self, requests: Vec<C::Request>) -> Vec<C::Outcome> {
        let mut q = self.lock_queue();
        let wake = Arc::new(Condvar::new());
        let mut tickets = Vec::with_capacity(requests.len());
        for request in requests {
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            q.waiting.push((ticket, request));
            q.wakers.insert(ticket, Arc::clone(&wake));
            tickets.push(ticket);
        }
        let mut outcomes: HashMap<u64, C::Outcome> = HashMap::with_capacity(tickets.len());
        loop {
            for t in &tickets {
                if let Some(outcome) = q.done.remove(t) {
                    q.wakers.remove(t);
                    outcomes.insert(*t, outcome);
                }
            }
            if outcomes.len() == tickets.len() {
                return tickets.iter().filter_map(|t| outcomes.remove(t)).collect();
            }
            if !q.leader {
                q.leader = true;
                let batch = take_batch(&mut q.waiting);
                drop(q);
                // Its own tickets in the batch are woken needlessly (a notify with no waiter).
                let own = tickets.iter().copied().find(|t| !outcomes.contains_key(t)).unwrap_or_default();
                self.lead(own, batch);
                q = self.lock_queue();
                continue;
            }
            q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lead(&self, own: u64, batch: Vec<(u64, C::Request)>) {
        let tickets: Vec<u64> = batch.iter().map(|(t, _)| *t).collect();
        let mut leadership = Leadership { group: self, own, tickets, results: None };
        // A writer poisoned by an earlier panic is in an unknown state: refuse from now on.
        let Ok(mut writer) = self.writer.lock() else { return };
        let (tickets, requests): (Vec<u64>, Vec<C::Request>) = batch.into_iter().unzip();
        let outcomes = writer.commit_batch(requests);
        leadership.results = Some(tickets.into_iter().zip(outcomes).collect());
    }

    /// Runs `f` with the writer (for work outside appends, such as the final checkpoint).
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce(&mut C) -> T) -> Option<T> {
        self.writer.lock().ok().map(|mut w| f(&mut w))
    }
}

/// The oldest queued requests, within the group-commit limits (at least one).
fn take_batch<R: Batched>(waiting: &mut Vec<(u64, R)>) -> Vec<(u64, R)> {
    let mut events = 0;
    let mut n = 0;
    for (_, r) in waiting.iter() {
        if n > 0 && (n >= limits::GROUP_COMMIT_CHANGESETS_MAX || events + r.events() > limits::GROUP_COMMIT_EVENTS_MAX)
        {
            break;
        }
        events += r.events();
        n += 1;
        if r.ends_batch() {
            break;
        }
    }
    waiting.drain(..n).collect()
}

/// The hand-off under shuttle's randomized and PCT schedulers with a fake committer
/// (docs/testing.md row 20). `SHUTTLE_ITERS` schedules per property (default 2,000).
#[cfg(all(test, feature = "shuttle"))]
mod shuttle_tests {
    use super::{Batched, Committer, Group};
    use shuttle::sync::atomic::{AtomicBool, Ordering};
    use shuttle::sync::{Arc, Mutex};

    const APPENDERS: usize = 3;
    const EACH: usize = 2;

    /// A request: (appender, its n-th submission); `panics` makes its commit panic.
    struct Req {
        who: usize,
        nth: usize,
        panics: bool,
    }

    impl Batched for Req {
        fn events(&self) -> usize {
            1
        }
        fn ends_batch(&self) -> bool {
            false
        }
    }

    /// Assigns seqs in commit order; checks that no two commits overlap.
    struct Fake {
        next_seq: u64,
        busy: Arc<AtomicBool>,
        log: Arc<Mutex<Vec<(u64, usize, usize)>>>,
    }

    impl Committer for Fake {
        type Request = Req;
        type Outcome = Result<(usize, usize, u64), ()>;
        fn commit_batch(&mut self, requests: Vec<Req>) -> Vec<Self::Outcome> {
            assert!(!self.busy.swap(true, Ordering::SeqCst), "two leaders commit at once");
            shuttle::thread::yield_now();
            if requests.iter().any(|r| r.panics) {
                self.busy.store(false, Ordering::SeqCst);
                panic!("commit panics (expected by the test)");
            }
            let mut out = Vec::new();
            for r in requests {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.log.lock().unwrap().push((seq, r.who, r.nth));
                out.push(Ok((r.who, r.nth, seq)));
            }
            self.busy.store(false, Ordering::SeqCst);
            out
        }
        fn gone() -> Self::Outcome {
            Err(())
        }
    }

    type CommitLog = Arc<Mutex<Vec<(u64, usize, usize)>>>;

    /// A group over a fake committer, and the log of what it committed.
    fn fake_group() -> (Arc<Group<Fake>>, CommitLog) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake { next_seq: 0, busy: Arc::new(AtomicBool::new(false)), log: Arc::clone(&log) };
        (Arc::new(Group::new(fake)), log)
    }

    fn assert_gap_free(log: &[(u64, usize, usize)]) {
        for (i, (seq, _, _)) in log.iter().enumerate() {
            assert_eq!(*seq, i as u64, "seqs not gap-free in commit order");
        }
    }

    fn iters() -> usize {
        std::env::var("SHUTTLE_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
    }

    /// Every appender gets its own outcome, seqs are gap-free in commit order, each
    /// appender's requests commit in its order; with `panic_at`, that request's batch is
    /// answered with an error and the others still finish (no deadlock: shuttle fails a
    /// schedule where every thread waits).
    fn scenario(panic_at: Option<(usize, usize)>) {
        let (group, log) = fake_group();
        let handles: Vec<_> = (0..APPENDERS)
            .map(|who| {
                let group = Arc::clone(&group);
                shuttle::thread::spawn(move || {
                    let mut last_seq = None;
                    for nth in 0..EACH {
                        let panics = panic_at == Some((who, nth));
                        let req = Req { who, nth, panics };
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.submit(req)));
                        match outcome {
                            Ok(Ok((w, n, seq))) => {
                                assert_eq!((w, n), (who, nth), "an appender got another's outcome");
                                assert!(last_seq.is_none_or(|l| l < seq), "an appender's requests reordered");
                                last_seq = Some(seq);
                            }
                            Ok(Err(())) => assert!(panic_at.is_some(), "an error without a panicking commit"),
                            // The panic reaches whichever appender led that batch.
                            Err(_) => assert!(panic_at.is_some(), "a panic without a panicking commit"),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("appender");
        }
        let log = log.lock().unwrap();
        assert_gap_free(&log);
        if panic_at.is_none() {
            assert_eq!(log.len(), APPENDERS * EACH);
        }
    }

    #[test]
    fn hand_off_random() {
        shuttle::check_random(|| scenario(None), iters());
    }

    #[test]
    fn hand_off_pct() {
        shuttle::check_pct(|| scenario(None), iters(), 3);
    }

    /// Appender 0 submits all its requests at once (`submit_all`, as the server's append
    /// thread does) while the others submit one at a time: each gets its own outcomes in
    /// order, seqs are gap-free in commit order.
    fn gathering_scenario() {
        let (group, log) = fake_group();
        let handles: Vec<_> = (0..APPENDERS)
            .map(|who| {
                let group = Arc::clone(&group);
                shuttle::thread::spawn(move || {
                    let outcomes: Vec<_> = if who == 0 {
                        group.submit_all((0..EACH).map(|nth| Req { who, nth, panics: false }).collect())
                    } else {
                        (0..EACH).map(|nth| group.submit(Req { who, nth, panics: false })).collect()
                    };
                    let mut last_seq = None;
                    for (nth, outcome) in outcomes.into_iter().enumerate() {
                        let (w, n, seq) = outcome.expect("no commit panics");
                        assert_eq!((w, n), (who, nth), "an appender got another's outcome");
                        assert!(last_seq.is_none_or(|l| l < seq), "an appender's requests reordered");
                        last_seq = Some(seq);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("appender");
        }
        let log = log.lock().unwrap();
        assert_eq!(log.len(), APPENDERS * EACH);
        assert_gap_free(&log);
    }

    #[test]
    fn hand_off_with_a_gathering_appender() {
        shuttle::check_random(gathering_scenario, iters());
        shuttle::check_pct(gathering_scenario, iters(), 3);
    }

    #[test]
    fn panicking_commit_passes_leadership_on() {
        shuttle::check_random(|| scenario(Some((1, 0))), iters());
    }
}
