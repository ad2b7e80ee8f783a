//! Helpers shared by the end-to-end tests, one module per purpose:
//!
//! - [`process`]: the `confstore` binary under test, a clean environment, commands run with
//!   a deadline and their output;
//! - [`scratch`]: a temporary directory kept when the test fails;
//! - [`store`]: a store driven through the CLI, its key variables and env file, the JSON the
//!   CLI prints;
//! - [`server`]: a running `confstore serve` on a free loopback port;
//! - [`http`]: the HTTP client of the REST API (reqwest, blocking);
//! - [`api`]: the REST API tests' ready server and tokens issued through the CLI;
//! - [`poll`]: waiting for a condition with a deadline;
//! - [`rng`]: seeds and a small generator for randomised tests;
//! - [`mqtt`]: a real Mosquitto, a cuttable proxy and a raw MQTT client (live stream);
//! - [`litestream`]: the Litestream binary and the shipped configuration (backups);
//! - [`browser`]: a real Chromium through chromedriver (the UI tests).
//!
//! The items most tests use are re-exported here (`use common::{Store, Server, Http}`).
//! Each test file compiles this module separately and uses a different subset of it: what
//! one file leaves unused (items, re-exports) is not dead code.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod browser;
pub mod http;
pub mod litestream;
pub mod mqtt;
pub mod poll;
pub mod process;
pub mod rng;
pub mod scratch;
pub mod server;
pub mod store;

pub use http::{Http, HttpResponse};
pub use poll::poll_until;
pub use process::{COMMAND_DEADLINE, Run, bin, clean_env, kill, run_with_deadline};
pub use rng::{Rng, env_count, seed};
pub use scratch::Scratch;
pub use server::{SERVER_DEADLINE, Server, admin_token, free_port};
pub use store::{
    KEY_VARS, LKG_KEY, MASTER_KEY, PUBLIC_KEY, SIGNING_KEY, Store, copy_db, parse_env_file, str_of, u64_of,
};
