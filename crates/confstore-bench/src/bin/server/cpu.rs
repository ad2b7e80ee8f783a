//! CPU time from /proc: per process (this one, the servers it started) to report CPU per
//! request, and for the whole machine, split into this benchmark's client, the servers and
//! everything else, to tell whether other work skewed the figures.

use serde::Serialize;

/// Ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux architecture).
const USER_HZ: f64 = 100.0;

/// (own, reaped children's) CPU ticks of process `pid` (`"self"` for this one), from
/// /proc/PID/stat; zeros where /proc is missing.
fn process_ticks(pid: &str) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return (0, 0) };
    // Fields after the parenthesised command name: utime, stime, cutime, cstime are 14-17.
    let Some((_, rest)) = stat.rsplit_once(')') else { return (0, 0) };
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    (get(11) + get(12), get(13) + get(14))
}

/// CPU seconds used so far by process `pid` (without its children).
pub fn process_secs(pid: u32) -> f64 {
    process_ticks(&pid.to_string()).0 as f64 / USER_HZ
}

/// CPU seconds used so far by this process (the load generator and, for the SQLite
/// fallback, the baseline itself).
pub fn own_secs() -> f64 {
    process_ticks("self").0 as f64 / USER_HZ
}

/// Machine-wide and per-process counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    total: u64,
    busy: u64,
    iowait: u64,
    own: u64,
    children: u64,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn now() -> Self {
        let mut s = Self::default();
        if let Some(t) = confstore_bench::machine::system_ticks() {
            (s.total, s.busy, s.iowait) = (t.total, t.busy, t.iowait);
        }
        (s.own, s.children) = process_ticks("self");
        s
    }
}

/// How the machine's CPU time was spent during the run, in percent of all CPUs.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// This process: the load generator (and the SQLite fallback's work).
    pub client_pct: f64,
    /// The processes it started and reaped: both servers and the set-up commands.
    pub servers_pct: f64,
    /// Every other process on the machine.
    pub others_pct: f64,
    /// Idle waiting for I/O.
    pub iowait_pct: f64,
    /// /proc/loadavg before the run.
    pub loadavg_start: String,
    /// /proc/loadavg after it.
    pub loadavg_end: String,
}

impl Load {
    /// The split between two snapshots; `b` must be taken after every child was reaped.
    pub fn between(a: Snapshot, b: Snapshot, loadavg_start: String, loadavg_end: String) -> Self {
        let total = b.total.saturating_sub(a.total).max(1) as f64;
        let own = b.own.saturating_sub(a.own);
        let children = b.children.saturating_sub(a.children);
        let busy = b.busy.saturating_sub(a.busy);
        let pct = |x: u64| 100.0 * x as f64 / total;
        Self {
            client_pct: pct(own),
            servers_pct: pct(children),
            others_pct: pct(busy.saturating_sub(own + children)),
            iowait_pct: pct(b.iowait.saturating_sub(a.iowait)),
            loadavg_start,
            loadavg_end,
        }
    }
}
