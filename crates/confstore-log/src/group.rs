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

/// Consecutive batches one leader commits before handing leadership on. Staying leader
/// while requests wait saves a wake-up of another thread between commits (the disk idles
/// meanwhile); the bound caps how long the leader's own caller waits for its answer.
const LEAD_BATCHES_MAX: usize = 8;

/// If a commit panics, the taken requests are answered and leadership passes on.
struct Leadership<'g> {
    group: &'g Group,
    tickets: Vec<u64>,
    armed: bool,
}

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut q = self.group.lock_queue();
        q.done.extend(self.tickets.iter().map(|t| (*t, Err(LogError::WriterGone))));
        wake(&q, &self.tickets);
        q.leader = false;
        wake_next_leader(&q);
    }
}

fn wake(q: &Queue, tickets: &[u64]) {
    for t in tickets {
        if let Some(cv) = q.wakers.get(t) {
            cv.notify_one();
        }
    }
}

/// The oldest appender still queued leads next.
fn wake_next_leader(q: &Queue) {
    if let Some(cv) = q.waiting.first().and_then(|(t, _)| q.wakers.get(t)) {
        cv.notify_one();
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
                q = self.lead(q);
                continue;
            }
            q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Commits batches while requests wait (at most [`LEAD_BATCHES_MAX`]), answering each
    /// batch as soon as it is durable, then hands leadership on.
    fn lead<'q>(&'q self, mut q: MutexGuard<'q, Queue>) -> MutexGuard<'q, Queue> {
        for _ in 0..LEAD_BATCHES_MAX {
            let batch = take_batch(&mut q.waiting);
            if batch.is_empty() {
                break;
            }
            drop(q);
            let (tickets, requests): (Vec<u64>, Vec<Request>) = batch.into_iter().unzip();
            let mut guard = Leadership { group: self, tickets, armed: true };
            // A writer poisoned by an earlier panic is in an unknown state: the guard
            // answers WriterGone for every request from now on.
            let outcomes = match self.writer.lock() {
                Ok(mut writer) => writer.commit_batch(requests),
                Err(_) => {
                    // Answer and release leadership (the guard takes the queue lock itself).
                    drop(guard);
                    return self.lock_queue();
                }
            };
            guard.armed = false;
            q = self.lock_queue();
            q.done.extend(guard.tickets.iter().copied().zip(outcomes));
            wake(&q, &guard.tickets);
        }
        q.leader = false;
        wake_next_leader(&q);
        q
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
        if matches!(r, Request::Rotate { .. }) {
            // Events after a rotation are signed by the new key: let it end the batch.
            break;
        }
    }
    waiting.drain(..n).collect()
}
