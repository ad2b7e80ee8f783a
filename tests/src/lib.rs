//! End-to-end tests of confstore live in `tests/` beside this file: `cli.rs` (the command
//! line), `crash.rs` (SIGKILL during appends, docs/testing.md row 1), `tamper.rs` (tamper detection
//! by `verify`, docs/testing.md row 6) and `tidy.rs` (repository conventions), with shared helpers
//! in `tests/common`. They run the real binary, which cargo does not build for them:
//! `cargo build -p confstore && cargo test -p confstore-e2e` (or set `CONFSTORE_BIN`).
//! This library is empty.
