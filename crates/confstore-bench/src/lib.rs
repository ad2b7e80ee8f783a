//! What confstore's benchmark binaries share (docs/benchmarks.md). Each benchmark is a binary
//! under `src/bin/`, with its own modules beside it when it has any
//! (`src/bin/confstore-bench/`, `src/bin/server/`); this library holds the parts more than
//! one of them uses:
//!
//! - [`machine`]: what the figures were measured on (CPU, cores, SQLite, build, filesystem);
//! - [`timing`]: repeated measurements, their median, and number formatting;
//! - [`process`]: child processes (free ports, a guard that stops them, waiting with a
//!   deadline);
//! - [`harness`]: the closed-loop load generator and its summaries;
//! - [`confstore`]: a fresh store, `confstore serve` and an HTTP/1.1 client for its API;
//! - `etcd` (feature `etcd`): a single-node etcd and its gRPC client, the baseline.

pub mod confstore;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod harness;
pub mod machine;
pub mod process;
pub mod timing;
