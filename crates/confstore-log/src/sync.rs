//! The synchronisation primitives of the group commit (`group.rs`): the standard library's,
//! or shuttle's when the `shuttle` feature is on, so that the hand-off
//! between leader and followers can be explored schedule by schedule (docs/testing.md
//! row 20). Production builds use std and pay nothing for the indirection.

#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(crate) use std::sync::PoisonError;
