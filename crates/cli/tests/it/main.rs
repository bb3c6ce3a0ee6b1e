//! The integration tests of `hydra-cli`, one target so the suite links and
//! starts its shared fixtures once.

mod attacks;
mod checks;
mod common;
mod create_user;
mod evaluator;
mod faults;
mod first_run;
mod init;
mod notify;
mod pull_requests;
mod queue_runner;
mod up;
mod web;
