//! Group commit without a dedicated thread (leader/follower). Appenders enqueue their request
//! and wait; whenever no commit is running, one waiting appender becomes the leader, takes
//! every queued request (up to the group-commit limits), commits them in one transaction
//! through the [`Writer`], posts every result, and wakes the others. A lone appender thus
//! commits on its own thread with no hand-off; many appenders share one fsync.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use confstore_core::limits;

use crate::Receipt;
use crate::error::LogError;
use crate::writer::{Request, Writer};

type Outcome = Result<Receipt, LogError>;

struct Queue {
    next_ticket: u64,
    waiting: Vec<(u64, Request)>,
    done: HashMap<u64, Outcome>,
    /// One condition per waiting appender (used with the queue's mutex), so a leader wakes
    /// exactly the appenders it answered and the one that leads next, not all of them.
    wakers: HashMap<u64, Arc<Condvar>>,
    leader: bool,
}

/// The queue and the writer.
pub(crate) struct Group {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
}

/// Leadership is released, and the taken requests answered, even if the commit panics.
struct Leadership<'g> {
    group: &'g Group,
    tickets: Vec<u64>,
    results: Option<Vec<(u64, Outcome)>>,
}

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        let mut q = self.group.lock_queue();
        match self.results.take() {
            Some(results) => q.done.extend(results),
            None => q.done.extend(self.tickets.iter().map(|t| (*t, Err(LogError::WriterGone)))),
        }
        q.leader = false;
        for t in &self.tickets {
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

impl Group {
    pub(crate) fn new(writer: Writer) -> Self {
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

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        // The queue holds plain data, consistent after every statement: usable after a panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request` and returns once it is committed (or refused).
    pub(crate) fn submit(&self, request: Request) -> Outcome {
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
                self.lead(batch);
                q = self.lock_queue();
                continue;
            }
            q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lead(&self, batch: Vec<(u64, Request)>) {
        let tickets: Vec<u64> = batch.iter().map(|(t, _)| *t).collect();
        let mut leadership = Leadership { group: self, tickets, results: None };
        // A writer poisoned by an earlier panic is in an unknown state: refuse from now on.
        let Ok(mut writer) = self.writer.lock() else { return };
        let (tickets, requests): (Vec<u64>, Vec<Request>) = batch.into_iter().unzip();
        let outcomes = writer.commit_batch(requests);
        leadership.results = Some(tickets.into_iter().zip(outcomes).collect());
    }

    /// Runs `f` with the writer (for work outside appends, such as the final checkpoint).
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> Option<T> {
        self.writer.lock().ok().map(|mut w| f(&mut w))
    }
}

/// The oldest queued requests, within the group-commit limits (at least one).
fn take_batch(waiting: &mut Vec<(u64, Request)>) -> Vec<(u64, Request)> {
    let mut events = 0;
    let mut n = 0;
    for (_, r) in waiting.iter() {
        if n > 0 && (n >= limits::GROUP_COMMIT_CHANGESETS_MAX || events + r.events() > limits::GROUP_COMMIT_EVENTS_MAX)
        {
            break;
        }
        events += r.events();
        n += 1;
        if matches!(r, Request::Rotate { .. } | Request::StartGeneration { .. }) {
            // Events after a rotation are signed by the new key, and those after a new
            // generation belong to it: let either end the batch.
            break;
        }
    }
    waiting.drain(..n).collect()
}
