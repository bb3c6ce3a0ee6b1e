//! The integration tests of `hydra-notify`, one target.

mod common;
mod declarative;
mod retry;
mod run_command;
mod status;
mod web_plugins;
