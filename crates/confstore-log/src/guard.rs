//! The reader-age guard (ADR 0016): no read of a [`crate::LogReader`] lives longer than a
//! limit (default [`MAX_READ_AGE_DEFAULT`]).
//!
//! An open read transaction pins the WAL: SQLite cannot checkpoint past the snapshot it
//! reads, so every write while it is open grows `config.db-wal`, and `journal_size_limit`
//! only trims the file after a checkpoint has caught up. Reads of the whole log are therefore
//! done in short chunks (see `LogReader::for_each_event`); this guard is the backstop for
//! any read that still runs long. It acts two ways, because SQLite can only be stopped
//! while it runs:
//!
//! - a watchdog thread (one per process) calls `sqlite3_interrupt` on a connection whose
//!   read has passed the limit, which stops a long statement at its next step;
//! - a read that iterates rows checks its age after each row ([`ReadGuard::check`]), which
//!   stops a read whose consumer is slow.
//!
//! Either way the reader gets [`LogError::ReaderTooOld`], its transaction ends, and
//! [`readers_aborted_total`] counts it. A read is timed from the start of the outermost
//! guarded call, so nested calls (a replay reading the head, then the events) are one read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::{Duration, Instant};

use rusqlite::{Connection, InterruptHandle};

use crate::error::LogError;

/// The default limit (limits.rs).
pub const MAX_READ_AGE_DEFAULT: Duration = Duration::from_secs(confstore_core::limits::READ_AGE_SECS_DEFAULT);

/// The watchdog looks at every reader this often, at most (1/10 of the smallest limit,
/// at least [`TICK_MIN`]): an interrupt lands within a tenth of the limit after it.
const TICK_MAX: Duration = Duration::from_secs(1);
const TICK_MIN: Duration = Duration::from_millis(5);

static ABORTED: AtomicU64 = AtomicU64::new(0);

/// Reads this process aborted because they passed the limit, since it started.
pub fn readers_aborted_total() -> u64 {
    ABORTED.load(Ordering::Relaxed)
}

/// `30 s`, `1.5 s`, `50 ms`: a duration as a person reads it, for messages.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The guard of one connection.
pub(crate) struct ReadGuard(Arc<Watched>);

struct Watched {
    limit: Duration,
    interrupt: InterruptHandle,
    read: Mutex<Read>,
}

/// The read in progress on a connection, if any.
#[derive(Default)]
struct Read {
    /// Guarded calls in progress (nested calls are one read).
    depth: u32,
    /// When the outermost call started.
    started: Option<Instant>,
    /// Whether the watchdog interrupted this read.
    interrupted: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent under a panic (plain fields set in one go).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReadGuard {
    /// Guards `conn`'s reads with `limit`.
    pub(crate) fn new(conn: &Connection, limit: Duration) -> Self {
        let watched = Arc::new(Watched { limit, interrupt: conn.get_interrupt_handle(), read: Mutex::default() });
        lock(watchdog()).push(Arc::downgrade(&watched));
        Self(watched)
    }

    /// The limit.
    pub(crate) fn limit(&self) -> Duration {
        self.0.limit
    }

    /// Runs `f` as one read (or part of the read already in progress). If the watchdog
    /// interrupted it, its error becomes [`LogError::ReaderTooOld`]; a read that finished
    /// anyway keeps its result.
    pub(crate) fn run<T>(&self, f: impl FnOnce() -> Result<T, LogError>) -> Result<T, LogError> {
        {
            let mut read = lock(&self.0.read);
            if read.depth == 0 {
                *read = Read { depth: 0, started: Some(Instant::now()), interrupted: false };
            }
            read.depth += 1;
        }
        let out = f();
        let (age, interrupted) = {
            let mut read = lock(&self.0.read);
            let age = read.started.map_or(Duration::ZERO, |s| s.elapsed());
            let interrupted = read.interrupted;
            read.depth = read.depth.saturating_sub(1);
            if read.depth == 0 {
                *read = Read::default();
            }
            (age, interrupted)
        };
        match out {
            Err(e @ LogError::ReaderTooOld { .. }) => Err(e),
            Err(_) if interrupted => Err(self.aborted(age)),
            other => other,
        }
    }

    /// Fails with [`LogError::ReaderTooOld`] once the read in progress is older than the
    /// limit. Called between rows, where a slow consumer would otherwise keep the read open.
    pub(crate) fn check(&self) -> Result<(), LogError> {
        let age = lock(&self.0.read).started.map(|s| s.elapsed());
        match age {
            Some(age) if age >= self.0.limit => Err(self.aborted(age)),
            _ => Ok(()),
        }
    }

    fn aborted(&self, age: Duration) -> LogError {
        ABORTED.fetch_add(1, Ordering::Relaxed);
        LogError::ReaderTooOld { limit: self.0.limit, age }
    }
}

impl Watched {
    /// Interrupts the read in progress if it is past the limit (once per read). The lock is
    /// held across the interrupt, so a read that has ended is never interrupted.
    fn interrupt_if_old(&self) {
        let mut read = lock(&self.read);
        if let Some(started) = read.started
            && !read.interrupted
            && started.elapsed() >= self.limit
        {
            read.interrupted = true;
            self.interrupt.interrupt();
        }
    }
}

/// The connections being watched; the first call starts the watchdog thread.
fn watchdog() -> &'static Mutex<Vec<Weak<Watched>>> {
    static WATCHED: Mutex<Vec<Weak<Watched>>> = Mutex::new(Vec::new());
    static START: Once = Once::new();
    START.call_once(|| {
        // Without the thread, long statements run on, but reads still stop between rows.
        let _ = std::thread::Builder::new().name("confstore-read-guard".into()).spawn(|| {
            loop {
                std::thread::sleep(patrol());
            }
        });
    });
    &WATCHED
}

/// One round of the watchdog: interrupts every read past its limit, forgets closed
/// connections, and returns how long to wait before the next round.
fn patrol() -> Duration {
    let watched: Vec<Arc<Watched>> = {
        let mut list = lock(watchdog());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    let mut tick = TICK_MAX;
    for w in &watched {
        w.interrupt_if_old();
        tick = tick.min(w.limit / 10);
    }
    tick.max(TICK_MIN)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn guarded(limit: Duration) -> (Connection, ReadGuard) {
        let conn = Connection::open_in_memory().unwrap();
        let guard = ReadGuard::new(&conn, limit);
        (conn, guard)
    }

    #[test]
    fn a_long_statement_is_interrupted_at_the_limit() {
        let (conn, guard) = guarded(Duration::from_millis(100));
        let start = Instant::now();
        let before = readers_aborted_total();
        // Counts forever unless interrupted.
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let err = guard
            .run(|| conn.query_row(endless, [], |r| r.get::<_, i64>(0)).map_err(LogError::sqlite("counting")))
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(err, LogError::ReaderTooOld { .. }), "{err}");
        assert!(err.to_string().contains("older than 100 ms"), "{err}");
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(5), "{took:?}");
        assert!(readers_aborted_total() > before);
        // The connection is usable afterwards, and a short read is not touched.
        assert_eq!(
            guard
                .run(|| conn.query_row("SELECT 7", [], |r| r.get::<_, i64>(0)).map_err(LogError::sqlite("x")))
                .unwrap(),
            7
        );
    }

    #[test]
    fn nested_calls_are_one_read_and_check_fails_past_the_limit() {
        let (_conn, guard) = guarded(Duration::from_millis(50));
        let until = Instant::now() + Duration::from_millis(60);
        let err = guard
            .run(|| {
                guard.run(|| Ok(()))?;
                // A slow consumer between rows: paced until past the limit.
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                guard.run(|| guard.check())
            })
            .unwrap_err();
        match err {
            LogError::ReaderTooOld { limit, age } => {
                assert_eq!(limit, Duration::from_millis(50));
                assert!(age >= limit, "{age:?}");
            }
            other => panic!("{other}"),
        }
        // The next read starts a new clock.
        guard.run(|| guard.check()).unwrap();
    }

    /// A store of `events` events (plus the first), written with NORMAL sync for speed.
    fn store_with(events: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        use confstore_core::state::{Change, ChangesetDraft};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let opts = crate::DbOptions { synchronous: crate::Synchronous::Normal, ..crate::DbOptions::default() };
        let key = confstore_core::SigningKey::from_seed(&[1; 32]);
        let id = confstore_core::StoreId([0x5a; 16]);
        let store = crate::Store::create(&path, key, id, "test", Arc::new(crate::SystemClock), &opts).unwrap();
        let draft = |changes| ChangesetDraft {
            actor: "test".into(),
            reason: "guard".into(),
            request_id: "req".into(),
            expected_epoch: None,
            changes,
        };
        store.append(draft(vec![Change::RegisterService { service: "s".into() }])).unwrap();
        for batch in 0..events.div_ceil(500) {
            let changes = (0..500.min(events - batch * 500))
                .map(|i| Change::Set { service: "s".into(), key: format!("k{batch}-{i}"), value: serde_json::json!(i) })
                .collect();
            store.append(draft(changes)).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn a_snapshot_with_a_slow_consumer_is_aborted_but_a_chunked_read_is_not() {
        let (_dir, path) = store_with(2 * crate::reader::EVENTS_PER_READ);
        let opts = crate::DbOptions { max_read_age: Duration::from_millis(100), ..crate::DbOptions::default() };
        let reader = crate::LogReader::open_with(&path, &opts).unwrap();
        // A consumer that needs about 300 ms for the log: pacing, not synchronisation.
        let slow = |seq: u64| {
            if seq.is_multiple_of(100) {
                std::thread::sleep(Duration::from_millis(15));
            }
        };
        let start = Instant::now();
        let mut seen = 0u64;
        let err = reader
            .snapshot(|r| {
                r.for_each_event(1, |ev| {
                    seen = ev.seq;
                    slow(ev.seq);
                    Ok(true)
                })
            })
            .unwrap_err();
        assert!(matches!(err, LogError::ReaderTooOld { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        assert!(seen > 1 && seen < reader.last_seq().unwrap(), "stopped at {seen}");
        // Outside a snapshot the same consumer reads everything: each chunk is a short read,
        // and the consumer runs between them, holding none.
        let start = Instant::now();
        let mut last = 0;
        reader
            .for_each_event(1, |ev| {
                assert_eq!(ev.seq, last + 1);
                last = ev.seq;
                slow(ev.seq);
                Ok(true)
            })
            .unwrap();
        assert_eq!(last, reader.last_seq().unwrap());
        assert!(start.elapsed() > Duration::from_millis(100), "the consumer was meant to outlast the limit");
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human(Duration::from_secs(30)), "30 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_millis(50)), "50 ms");
    }
}
