//! What the figures were measured on: CPU, core count, SQLite, build profile, and the
//! filesystem that holds the benchmark's databases.

use std::path::Path;

use serde::Serialize;

/// The machine and build.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release, from /proc/sys/kernel/osrelease.
    pub kernel: String,
    /// SQLite linked (bundled).
    pub sqlite_version: String,
    /// `release` or `debug`; debug figures mean nothing.
    pub build: &'static str,
    /// When the run started, UTC.
    pub date_utc: String,
}

/// The directory the databases live in and the filesystem under it.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// The benchmark's temporary directory.
    pub path: String,
    /// Mount point of the filesystem that holds it.
    pub mount_point: String,
    /// Device (or source) of that mount.
    pub device: String,
    /// Filesystem type (ext4, xfs, tmpfs, ...).
    pub fs_type: String,
    /// Mount options.
    pub options: String,
}

impl Machine {
    /// Reads what it can; unknown parts say `unknown`.
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel,
            sqlite_version: rusqlite::version().to_owned(),
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            date_utc: date_utc(),
        }
    }
}

impl Disk {
    /// The mount that holds `path`: the longest mount point that is a prefix of it
    /// (the last such line of /proc/mounts, since later mounts hide earlier ones).
    pub fn detect(path: &Path) -> Self {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let mut best: Option<(String, String, String, String)> = None;
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            for line in mounts.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 4 {
                    continue;
                }
                let mount_point = unescape(f[1]);
                if !path.starts_with(&mount_point) {
                    continue;
                }
                if best.as_ref().is_none_or(|b| mount_point.len() >= b.0.len()) {
                    best = Some((mount_point, unescape(f[0]), f[2].to_owned(), f[3].to_owned()));
                }
            }
        }
        let (mount_point, device, fs_type, options) =
            best.unwrap_or_else(|| ("unknown".into(), "unknown".into(), "unknown".into(), String::new()));
        Self { path: path.display().to_string(), mount_point, device, fs_type, options }
    }
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn date_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let day_secs = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", day_secs / 3600, day_secs % 3600 / 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn mount_escapes() {
        assert_eq!(unescape("/mnt/my\\040disk"), "/mnt/my disk");
    }
}

/// CPU time counters at one moment, in USER_HZ ticks, from /proc/stat and /proc/self/stat.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSnapshot {
    total: u64,
    busy: u64,
    iowait: u64,
    own: u64,
}

/// How busy the machine was while the benchmark ran: other processes' CPU use skews every
/// figure, and other processes' I/O skews the fsync-bound ones.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// Share of all CPUs' time used by this process, percent.
    pub own_cpu_pct: f64,
    /// Share of all CPUs' time used by every other process, percent.
    pub others_cpu_pct: f64,
    /// Share of all CPUs' time idle waiting for I/O, percent.
    pub iowait_pct: f64,
    /// /proc/loadavg at the start.
    pub loadavg_start: String,
    /// /proc/loadavg at the end.
    pub loadavg_end: String,
}

/// The whole machine's CPU time so far, in clock ticks, from the first line of /proc/stat.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemTicks {
    /// All ticks (user nice system idle iowait irq softirq steal).
    pub total: u64,
    /// Not idle and not waiting for I/O.
    pub busy: u64,
    /// Waiting for I/O.
    pub iowait: u64,
}

/// Reads [`SystemTicks`]; `None` where /proc is missing or unreadable.
pub fn system_ticks() -> Option<SystemTicks> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let f: Vec<u64> = text.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    if f.len() != 8 {
        return None;
    }
    let total: u64 = f.iter().sum();
    Some(SystemTicks { total, busy: total - f[3] - f[4], iowait: f[4] })
}

impl CpuSnapshot {
    /// Reads the counters (zeros where /proc is missing).
    pub fn now() -> Self {
        let mut s = Self::default();
        if let Some(t) = system_ticks() {
            (s.total, s.busy, s.iowait) = (t.total, t.busy, t.iowait);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name; utime and stime are fields 14, 15.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                s.own = get(11) + get(12);
            }
        }
        s
    }
}

/// /proc/loadavg's first three numbers.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl Load {
    /// The load between two snapshots.
    pub fn between(a: CpuSnapshot, b: CpuSnapshot, loadavg_start: String) -> Self {
        let total = b.total.saturating_sub(a.total).max(1) as f64;
        let own = b.own.saturating_sub(a.own);
        let busy = b.busy.saturating_sub(a.busy);
        Self {
            own_cpu_pct: 100.0 * own as f64 / total,
            others_cpu_pct: 100.0 * busy.saturating_sub(own) as f64 / total,
            iowait_pct: 100.0 * b.iowait.saturating_sub(a.iowait) as f64 / total,
            loadavg_start,
            loadavg_end: loadavg(),
        }
    }
}
