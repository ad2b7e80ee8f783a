//! How refused requests (403) reach the audit log without letting a token grow it at will
//! (ADR 0013): the first refusal of a token on a (method, route) is appended as an
//! `access_denied` event; the ones after it are counted here, in memory, and appended as
//! one `access_denied_summary` event per token per window (a minute by default) by
//! [`run`], and by [`flush_all`] when the server stops. Every refusal is still logged and
//! counted in metrics by the caller.
//!
//! The table is bounded: at most [`limits::DENIAL_TOKENS_TRACKED_MAX`] tokens, each with at
//! most [`limits::DENIAL_SUMMARY_ROUTES_MAX`] routes; what does not fit is counted (the
//! summary's `dropped`, or the `confstore_access_denied_unrecorded` metric), never appended
//! one by one. Beside it, the ids of the tokens whose first refusal was appended are kept
//! for the life of the process (at most [`limits::TOKENS_MAX`]: only issued tokens are ever
//! refused), so a token's first refusal is in the log even when the table is full. Time is
//! passed in (unix ms), so the logic is tested without a clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confstore_core::event::DenialCount;
use confstore_core::limits;
use confstore_core::state::{Change, ChangesetDraft};

use crate::app::{App, Mode};

/// What to do with one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The token's first refusal on this (method, route): append an `access_denied` event.
    First,
    /// Counted for the token's next `access_denied_summary`.
    Counted,
    /// The table is full of tokens with refusals pending, and this token's first refusal
    /// is in the log already: only logged and counted in metrics.
    Untracked,
}

impl Verdict {
    /// How the refusal is audited, for the JSON log: `event`, `summary` or `unrecorded`.
    pub fn audit(self) -> &'static str {
        match self {
            Verdict::First => "event",
            Verdict::Counted => "summary",
            Verdict::Untracked => "unrecorded",
        }
    }
}

/// One token's refusals counted over a window: the content of an `access_denied_summary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The token.
    pub token_id: String,
    /// The actor its events carry (`token:<name>`).
    pub actor: String,
    /// Time of the first refusal counted (unix ms).
    pub window_start_ms: u64,
    /// Time of the last refusal counted (unix ms).
    pub window_end_ms: u64,
    /// Refusals per (method, route), sorted.
    pub counts: Vec<DenialCount>,
    /// Refusals beyond the routes itemised.
    pub dropped: u64,
}

impl Summary {
    /// Every refusal it counts.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.count).sum::<u64>() + self.dropped
    }

    /// The changeset recording it.
    pub fn draft(&self, request_id: String) -> ChangesetDraft {
        ChangesetDraft {
            actor: self.actor.clone(),
            reason: String::new(),
            request_id,
            expected_epoch: None,
            changes: vec![Change::SummarizeDenials {
                token_id: self.token_id.clone(),
                window_start_ms: self.window_start_ms,
                window_end_ms: self.window_end_ms,
                counts: self.counts.clone(),
                dropped: self.dropped,
            }],
        }
    }
}

/// One token's entry.
#[derive(Debug, Default)]
struct TokenDenials {
    actor: String,
    /// (method, route) pairs whose first refusal was recorded as an event.
    seen: HashSet<(String, String)>,
    /// Counts since the last summary.
    pending: BTreeMap<(String, String), u64>,
    /// Refusals since the last summary on routes beyond the itemised ones.
    dropped: u64,
    /// (first, last) refusal counted since the last summary, unix ms.
    window: Option<(u64, u64)>,
}

impl TokenDenials {
    fn has_pending(&self) -> bool {
        self.window.is_some()
    }

    fn take(&mut self, token_id: &str) -> Option<Summary> {
        let (start, end) = self.window.take()?;
        let counts = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((method, route), count)| DenialCount { method, route, count })
            .collect();
        Some(Summary {
            token_id: token_id.to_owned(),
            actor: self.actor.clone(),
            window_start_ms: start,
            window_end_ms: end,
            counts,
            dropped: std::mem::take(&mut self.dropped),
        })
    }
}

/// The in-memory table of refusals. Cheap to share (`Arc` inside).
#[derive(Clone, Debug)]
pub struct Denials(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    window: Duration,
    tokens_max: usize,
    routes_max: usize,
    table: Mutex<HashMap<String, TokenDenials>>,
    /// Tokens whose first refusal (on any route) was appended. Locked after `table`.
    recorded: Mutex<HashSet<String>>,
}

impl Denials {
    /// A table summarising each token's refusals over `window`, with the limits of
    /// [`limits`].
    pub fn new(window: Duration) -> Self {
        Self::with_limits(window, limits::DENIAL_TOKENS_TRACKED_MAX, limits::DENIAL_SUMMARY_ROUTES_MAX)
    }

    /// A table with other bounds (tests).
    pub fn with_limits(window: Duration, tokens_max: usize, routes_max: usize) -> Self {
        Self(Arc::new(Inner {
            window,
            tokens_max,
            routes_max,
            table: Mutex::new(HashMap::new()),
            recorded: Mutex::new(HashSet::new()),
        }))
    }

    /// The summary window.
    pub fn window(&self) -> Duration {
        self.0.window
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenDenials>> {
        self.0.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes one refusal of `token_id` on `method` `route` at `now_ms` and says how to
    /// audit it.
    pub fn note(&self, token_id: &str, actor: &str, method: &str, route: &str, now_ms: u64) -> Verdict {
        let mut table = self.table();
        if !table.contains_key(token_id) {
            if table.len() >= self.0.tokens_max {
                // Forget a token with nothing pending (its next refusal is a first again);
                // with none, the table is full of open windows: do not grow it, but make
                // sure the token's very first refusal is in the log.
                let idle = table.iter().find(|(_, t)| !t.has_pending()).map(|(id, _)| id.clone());
                match idle {
                    Some(id) => {
                        table.remove(&id);
                    }
                    None if self.recorded().insert(token_id.to_owned()) => return Verdict::First,
                    None => return Verdict::Untracked,
                }
            }
            table.insert(token_id.to_owned(), TokenDenials::default());
        }
        let Some(entry) = table.get_mut(token_id) else { return Verdict::Untracked };
        entry.actor = actor.to_owned();
        let pair = (method.to_owned(), route.to_owned());
        if !entry.seen.contains(&pair) && entry.seen.len() < self.0.routes_max {
            entry.seen.insert(pair);
            self.recorded().insert(token_id.to_owned());
            return Verdict::First;
        }
        if entry.seen.contains(&pair) {
            *entry.pending.entry(pair).or_default() += 1;
        } else {
            entry.dropped += 1;
        }
        entry.window = Some(match entry.window {
            Some((start, end)) => (start, end.max(now_ms)),
            None => (now_ms, now_ms),
        });
        Verdict::Counted
    }

    /// Undoes [`Verdict::First`] when its event could not be appended, so the next refusal
    /// on that route tries again.
    pub fn unsee(&self, token_id: &str, method: &str, route: &str) {
        if let Some(entry) = self.table().get_mut(token_id) {
            entry.seen.remove(&(method.to_owned(), route.to_owned()));
        }
        self.recorded().remove(token_id);
    }

    /// The summaries whose window has passed at `now_ms` (a window opens with its first
    /// counted refusal), taken out of the table.
    pub fn take_due(&self, now_ms: u64) -> Vec<Summary> {
        let window_ms = u64::try_from(self.0.window.as_millis()).unwrap_or(u64::MAX);
        let mut table = self.table();
        let mut out: Vec<Summary> = table
            .iter_mut()
            .filter(|(_, t)| {
                t.window.is_some_and(|(start, _)| now_ms >= start.saturating_add(window_ms) || now_ms < start)
            })
            .filter_map(|(id, t)| t.take(id))
            .collect();
        out.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        out
    }

    /// Every pending summary, due or not (at shutdown).
    pub fn take_all(&self) -> Vec<Summary> {
        let mut out: Vec<Summary> = self.table().iter_mut().filter_map(|(id, t)| t.take(id)).collect();
        out.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        out
    }

    /// Puts back a summary that could not be appended, to be tried with the next flush.
    pub fn restore(&self, s: Summary) {
        let mut table = self.table();
        let Some(entry) = table.get_mut(&s.token_id) else { return };
        for c in s.counts {
            *entry.pending.entry((c.method, c.route)).or_default() += c.count;
        }
        entry.dropped += s.dropped;
        entry.window = Some(match entry.window {
            Some((start, end)) => (start.min(s.window_start_ms), end.max(s.window_end_ms)),
            None => (s.window_start_ms, s.window_end_ms),
        });
    }

    /// Tokens tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.table().len()
    }
}

/// Now, in unix ms (the wall clock: the summaries carry it).
pub fn wall_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Appends `summaries`; those that cannot be appended now (fallback, a database error) go
/// back into the table for the next try.
async fn append(app: &App, summaries: Vec<Summary>) {
    for s in summaries {
        let mode = app.mode();
        let Mode::Live(live) = &*mode else {
            app.denials.restore(s);
            continue;
        };
        let store = Arc::clone(&live.store);
        let draft = s.draft(crate::http::new_request_id());
        let total = s.total();
        match tokio::task::spawn_blocking(move || store.append(draft)).await {
            Ok(Ok(r)) => {
                tracing::info!(token_id = %s.token_id, denials = total, seq = r.last_seq, "recorded a denial summary");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, token_id = %s.token_id, "could not record a denial summary; retrying later");
                app.denials.restore(s);
            }
            Err(e) => {
                tracing::error!(error = %e, "the task recording a denial summary failed");
                app.denials.restore(s);
            }
        }
    }
}

/// Appends the summaries whose window has passed, checking several times per window (at
/// most every second), until aborted.
pub async fn run(app: App) {
    let tick = (app.denials.window() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let due = app.denials.take_due(wall_ms());
        if !due.is_empty() {
            append(&app, due).await;
        }
    }
}

/// Appends every pending summary, due or not: at shutdown, after the last request.
pub async fn flush_all(app: &App) {
    let all = app.denials.take_all();
    if !all.is_empty() {
        append(app, all).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0011223344556677";
    const U: &str = "8899aabbccddeeff";

    fn table() -> Denials {
        Denials::with_limits(Duration::from_secs(60), 2, 3)
    }

    #[test]
    fn the_first_refusal_per_route_is_an_event_and_the_rest_are_counted() {
        let d = table();
        assert_eq!(d.note(T, "token:t", "GET", "/a", 1_000), Verdict::First);
        assert_eq!(d.note(T, "token:t", "PUT", "/a", 1_001), Verdict::First, "another method is another route");
        for i in 0..10 {
            assert_eq!(d.note(T, "token:t", "GET", "/a", 2_000 + i), Verdict::Counted);
        }
        assert_eq!(d.note(T, "token:t", "PUT", "/a", 5_000), Verdict::Counted);
        assert_eq!(d.note(U, "token:u", "GET", "/a", 5_000), Verdict::First, "per token");
        assert!(d.take_due(61_999).is_empty(), "the window opened at 2000 and lasts 60 s");
        let due = d.take_due(62_000);
        assert_eq!(due.len(), 1);
        let s = &due[0];
        assert_eq!((s.token_id.as_str(), s.actor.as_str()), (T, "token:t"));
        assert_eq!((s.window_start_ms, s.window_end_ms, s.dropped, s.total()), (2_000, 5_000, 0, 11));
        let counts: Vec<(&str, &str, u64)> =
            s.counts.iter().map(|c| (c.method.as_str(), c.route.as_str(), c.count)).collect();
        assert_eq!(counts, vec![("GET", "/a", 10), ("PUT", "/a", 1)]);
        assert!(d.take_due(1_000_000).is_empty(), "taken once");
        // The route stays seen: the next refusal opens a new window, not a new event.
        assert_eq!(d.note(T, "token:t", "GET", "/a", 70_000), Verdict::Counted);
        assert_eq!(d.take_all()[0].window_start_ms, 70_000);
    }

    #[test]
    fn routes_beyond_the_bound_are_counted_as_dropped() {
        let d = table();
        for r in ["/1", "/2", "/3"] {
            assert_eq!(d.note(T, "token:t", "GET", r, 1), Verdict::First);
        }
        for _ in 0..5 {
            assert_eq!(d.note(T, "token:t", "GET", "/4", 2), Verdict::Counted, "never an event per request");
        }
        let s = d.take_all().remove(0);
        assert_eq!((s.counts.len(), s.dropped, s.total()), (0, 5, 5));
    }

    #[test]
    fn a_full_table_forgets_idle_tokens_and_never_grows() {
        let d = table();
        assert_eq!(d.note(T, "token:t", "GET", "/a", 1), Verdict::First);
        assert_eq!(d.note(U, "token:u", "GET", "/a", 1), Verdict::First);
        assert_eq!(d.note(U, "token:u", "GET", "/a", 2), Verdict::Counted);
        // T has nothing pending: forgotten for the third token.
        assert_eq!(d.note("0000000000000003", "token:v", "GET", "/a", 3), Verdict::First);
        assert_eq!(d.tracked(), 2);
        assert_eq!(d.note("0000000000000003", "token:v", "GET", "/a", 4), Verdict::Counted);
        // Both tracked tokens have refusals pending: T, whose first refusal is in the log,
        // is not tracked; a token never refused gets its first refusal recorded, once.
        assert_eq!(d.note(T, "token:t", "GET", "/a", 5), Verdict::Untracked);
        assert_eq!(d.note("0000000000000004", "token:w", "GET", "/a", 5), Verdict::First);
        assert_eq!(d.note("0000000000000004", "token:w", "PUT", "/b", 5), Verdict::Untracked);
        assert_eq!(d.tracked(), 2);
        assert_eq!(d.take_all().len(), 2);
        assert_eq!(d.note(T, "token:t", "GET", "/a", 6), Verdict::First, "room again once flushed");
    }

    #[test]
    fn unsee_and_restore_keep_counts() {
        let d = table();
        assert_eq!(d.note(T, "token:t", "GET", "/a", 1), Verdict::First);
        d.unsee(T, "GET", "/a");
        assert_eq!(d.note(T, "token:t", "GET", "/a", 2), Verdict::First, "the failed first is tried again");
        assert_eq!(d.note(T, "token:t", "GET", "/a", 3), Verdict::Counted);
        let s = d.take_all().remove(0);
        d.restore(s);
        assert_eq!(d.note(T, "token:t", "GET", "/a", 9), Verdict::Counted);
        let s = d.take_all().remove(0);
        assert_eq!((s.window_start_ms, s.window_end_ms, s.total()), (3, 9, 2));
        assert!(matches!(&s.draft("r".into()).changes[0], Change::SummarizeDenials { dropped: 0, .. }));
    }
}
