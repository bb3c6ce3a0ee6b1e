//! The integration tests of `hydra-queue-runner`, one target so the suite links and
//! starts its shared fixtures once.

mod actions;
mod builds;
mod common;
mod dest;
mod failures;
mod remote;
