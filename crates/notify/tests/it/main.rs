//! The integration tests of `hydra-notify`, one target.

mod declarative;
mod retry;
mod run_command;
mod status;
