//! wrk, an independent load generator, against both peers: the Lua scripts shipped in
//! `crates/confstore-bench/wrk/` (PUTs to confstore's REST API, puts through etcd's JSON
//! gateway) with their parameters prepended, run for a fixed time, and wrk's report parsed.
//! The scripts count every non-2xx answer; any makes the run fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use confstore_bench::process;

/// The confstore script (`PUT /api/v1/services/<svc>/values/<key>`).
const CONFSTORE_LUA: &str = include_str!("../../../wrk/confstore-put.lua");
/// The etcd script (`POST /v3/kv/put`).
const ETCD_LUA: &str = include_str!("../../../wrk/etcd-put.lua");

/// Which API a script writes to.
#[derive(Clone, Copy, Debug)]
pub enum Api<'a> {
    /// confstore: service and bearer token.
    Confstore {
        /// The service written.
        service: &'a str,
        /// An admin (or config.write) token.
        token: &'a str,
    },
    /// etcd's JSON gateway: the prefix that stands for the service.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Etcd {
        /// e.g. `bench/`.
        prefix: &'a str,
    },
}

/// Parameters of one script.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    /// The API.
    pub api: Api<'a>,
    /// Bytes of every value.
    pub value_bytes: usize,
    /// Preloaded keys `k00000`... cycled over (0: a new key per request).
    pub keys: usize,
    /// wrk threads (`-t`), each writing its own keys.
    pub threads: usize,
}

/// A Lua string literal of `s` (quotes, backslashes and control bytes escaped).
pub fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// The whole script: a `local P = {...}` line with the parameters, then the shipped body.
pub fn script(p: &Params<'_>) -> String {
    let (fields, body) = match p.api {
        Api::Confstore { service, token } => {
            (format!("service = {}, token = {}", lua_string(service), lua_string(token)), CONFSTORE_LUA)
        }
        Api::Etcd { prefix } => (format!("prefix = {}", lua_string(prefix)), ETCD_LUA),
    };
    format!(
        "local P = {{ {fields}, value_bytes = {}, keys = {}, threads = {} }}\n{body}",
        p.value_bytes, p.keys, p.threads
    )
}

/// What one wrk run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WrkRun {
    /// `-c`.
    pub connections: usize,
    /// `-t`.
    pub threads: usize,
    /// Requests completed.
    pub requests: u64,
    /// Seconds wrk ran.
    pub secs: f64,
    /// wrk's Requests/sec.
    pub rate: f64,
    /// Latency percentiles (`--latency`), milliseconds.
    pub p50_ms: f64,
    /// 75th.
    pub p75_ms: f64,
    /// 90th.
    pub p90_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// Answers other than 2xx, counted by the script's `response()`.
    pub non_2xx: u64,
    /// wrk's socket errors (connect, read, write, timeout), summed.
    pub socket_errors: u64,
    /// The server's CPU time per request, microseconds (filled in by the caller).
    pub server_cpu_us_per_request: Option<f64>,
    /// The subscribed client's CPU per request, microseconds (filled in by the caller).
    pub subscriber_cpu_us_per_request: Option<f64>,
}

/// A duration as wrk prints it (`640.12us`, `1.50ms`, `5.00s`, `1.00m`), in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let x: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(x * scale)
}

/// Parses wrk's report (run with `--latency` and one of our scripts).
pub fn parse(out: &str) -> Result<WrkRun> {
    let mut r = WrkRun::default();
    let (mut have_rate, mut have_requests, mut have_script, mut percentiles) = (false, false, false, 0);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", x] => {
                r.rate = x.parse().with_context(|| format!("wrk's rate {x:?}"))?;
                have_rate = true;
            }
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().with_context(|| format!("wrk's request count {n:?}"))?;
                r.secs = duration_ms(secs.trim_end_matches(',')).context("wrk's duration")? / 1e3;
                have_requests = true;
            }
            [q @ ("50%" | "75%" | "90%" | "99%"), d] => {
                let ms = duration_ms(d).with_context(|| format!("wrk's percentile {d:?}"))?;
                match *q {
                    "50%" => r.p50_ms = ms,
                    "75%" => r.p75_ms = ms,
                    "90%" => r.p90_ms = ms,
                    _ => r.p99_ms = ms,
                }
                percentiles += 1;
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                r.socket_errors = rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            ["wrk-script:", "non-2xx", n] => {
                r.non_2xx = n.parse().with_context(|| format!("the script's count {n:?}"))?;
                have_script = true;
            }
            _ => {}
        }
    }
    ensure!(have_rate && have_requests, "wrk printed no rate or request count:\n{out}");
    ensure!(percentiles == 4, "wrk printed no latency distribution (was it run with --latency?):\n{out}");
    ensure!(have_script, "wrk printed no line of the benchmark's script (non-2xx count):\n{out}");
    Ok(r)
}

/// The wrk binary: `explicit` (`WRK_BIN`), else `wrk` on PATH; `None` if absent.
pub fn find_bin(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_owned());
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("wrk")).find(|p| p.is_file())
}

/// Runs wrk with `connections` and `threads` for `secs` against `url` (the script sets the
/// path), the script written to `dir`. Fails on any non-2xx answer or socket error.
pub fn run(bin: &Path, dir: &Path, url: &str, p: &Params<'_>, connections: usize, secs: u64) -> Result<WrkRun> {
    let path = dir.join(match p.api {
        Api::Confstore { .. } => "confstore-put.lua",
        Api::Etcd { .. } => "etcd-put.lua",
    });
    std::fs::write(&path, script(p)).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-t{}", p.threads))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(&path)
        .arg(url);
    let out = process::output("wrk", cmd, Duration::from_secs(secs + 60))?;
    let text = String::from_utf8_lossy(&out);
    let mut r = parse(&text)?;
    (r.connections, r.threads) = (connections, p.threads);
    if r.non_2xx > 0 {
        bail!("wrk against {url}: {} answers were not 2xx:\n{text}", r.non_2xx);
    }
    ensure!(r.socket_errors == 0, "wrk against {url}: {} socket errors:\n{text}", r.socket_errors);
    ensure!(r.requests > 0, "wrk against {url} completed no request:\n{text}");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:40123
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.52ms    1.20ms  41.07ms   91.02%
    Req/Sec     2.29k   150.31     2.61k    72.00%
  Latency Distribution
     50%    3.31ms
     75%  812.50us
     90%    4.47ms
     99%     1.02s
  22845 requests in 5.00s, 4.88MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   4566.51
Transfer/sec:      0.98MB
wrk-script: non-2xx 0
";

    #[test]
    fn parses_rate_count_percentiles_and_errors() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 22845);
        assert_eq!(r.secs, 5.0);
        assert_eq!(r.rate, 4566.51);
        assert!((r.p50_ms - 3.31).abs() < 1e-9);
        assert!((r.p75_ms - 0.8125).abs() < 1e-9);
        assert!((r.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!((r.socket_errors, r.non_2xx), (3, 0));
    }

    #[test]
    fn refuses_a_report_without_latencies_or_script_line() {
        let no_latency: String = REPORT
            .lines()
            .filter(|l| !l.trim_start().starts_with(|c: char| c.is_ascii_digit()) || l.contains("requests"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(format!("{:#}", parse(&no_latency).unwrap_err()).contains("--latency"));
        let no_script = REPORT.replace("wrk-script: non-2xx 0", "");
        assert!(format!("{:#}", parse(&no_script).unwrap_err()).contains("script"));
        assert_eq!(parse(&REPORT.replace("non-2xx 0", "non-2xx 7")).unwrap().non_2xx, 7);
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_ms("250.00us"), Some(0.25));
        assert_eq!(duration_ms("2.5ms"), Some(2.5));
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
        assert_eq!(duration_ms("1.00m"), Some(60_000.0));
        assert_eq!(duration_ms("12"), None);
        assert_eq!(duration_ms("3.0parsecs"), None);
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_string("bench"), "\"bench\"");
        assert_eq!(lua_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\010\"");
    }

    #[test]
    fn scripts_carry_their_parameters_and_the_shipped_body() {
        let p = Params {
            api: Api::Confstore { service: "bench", token: "cs_x\"y" },
            value_bytes: 300,
            keys: 20,
            threads: 2,
        };
        let s = script(&p);
        let first = s.lines().next().unwrap();
        assert_eq!(
            first,
            "local P = { service = \"bench\", token = \"cs_x\\\"y\", value_bytes = 300, keys = 20, threads = 2 }"
        );
        assert!(s.contains("/api/v1/services/\" .. P.service"));
        assert!(s.contains("function response(status, headers, body)"));
        assert!(s.contains("wrk-script: non-2xx"));

        let e = script(&Params { api: Api::Etcd { prefix: "bench/" }, ..p });
        assert!(e.starts_with("local P = { prefix = \"bench/\", value_bytes = 300, keys = 20, threads = 2 }\n"));
        assert!(e.contains("\"/v3/kv/put\""));
        assert!(!e.contains("P.token"));
        // Both scripts have the same shape: keys, values, the non-2xx count.
        for body in [CONFSTORE_LUA, ETCD_LUA] {
            for part in ["function setup(thread)", "function request()", "function response(", "function done("] {
                assert!(body.contains(part), "{part}");
            }
        }
    }
}
