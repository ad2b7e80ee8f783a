//! The append thread (docs/adr/0036): one OS thread per live store takes the API's
//! changesets from a channel and commits whatever has gathered meanwhile in one call
//! (`Store::append_all`), answering each caller on its own oneshot channel.
//!
//! A write thus costs one hand-off in (the channel; none when the thread is busy committing
//! the batch before) and one out (the oneshot wakes the request's task), where a blocking-pool
//! thread per write cost a thread wake-up in, the group commit's wake-up of each follower,
//! and the blocking task's completion out.
//!
//! The commit listener's wakes (publisher, projector) are handed, as before
//! (`ReadModel::commit_wakes`), to the task of the first write of each batch: it wakes them
//! once it has its answer, or this thread does if that task is gone.

use std::sync::Arc;
use std::sync::mpsc;

use confstore_core::state::ChangesetDraft;
use confstore_log::{LogError, Receipt, Store};
use tokio::sync::oneshot;

use crate::app::App;
use crate::model::WakeHand;

/// What a write gets back.
pub type Answer = Result<Receipt, LogError>;

/// One write waiting for the thread.
struct Job {
    /// The store it goes to (every job of one thread's channel names the same one).
    store: Arc<Store>,
    draft: ChangesetDraft,
    hand: WakeHand,
    /// Told the outcome (readiness reports failing writes), whether or not the caller
    /// still waits for it.
    app: App,
    reply: oneshot::Sender<Answer>,
}

/// The sending side; dropping it (with the live mode) ends the thread once the writes in
/// flight are answered.
#[derive(Debug)]
pub struct Appender {
    tx: mpsc::Sender<Job>,
}

impl Appender {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("confstore-append".into()).spawn(move || run(&rx))?;
        Ok(Self { tx })
    }

    /// Queues `draft` for `store`; the answer comes once it is durably committed or refused.
    /// `None`: the thread is gone (it cannot be, short of a panic outside a commit).
    pub fn submit(
        &self,
        app: App,
        store: Arc<Store>,
        draft: ChangesetDraft,
        hand: WakeHand,
    ) -> Option<oneshot::Receiver<Answer>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { store, draft, hand, app, reply }).ok()?;
        Some(answer)
    }
}

fn run(rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < confstore_core::limits::GROUP_COMMIT_CHANGESETS_MAX {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A panic is the group's to answer (its commit answers `WriterGone`); should one
        // escape, its callers get no answer (a 500) and the thread goes on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(jobs)));
    }
}

/// Commits `jobs` in order, in as few transactions as the group-commit limits allow.
fn commit(jobs: Vec<Job>) {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else { return };
    let Job { store, draft, hand, app, reply } = first;
    let (mut drafts, mut replies) = (vec![draft], vec![(app, reply)]);
    for job in jobs {
        debug_assert!(Arc::ptr_eq(&job.store, &store), "one thread per store");
        drafts.push(job.draft);
        replies.push((job.app, job.reply));
        // The others' wakes are the first's to make (their halves stay unused).
        drop(job.hand);
    }
    let answers = hand.run(|| store.append_all(drafts));
    for ((app, reply), answer) in replies.into_iter().zip(answers) {
        app.note_append(&answer);
        let _ = reply.send(answer);
    }
}
