//! The integration tests of `hydra-db`, one target so the suite links and
//! starts its shared fixtures once.

mod error_mails;
mod listen_tx;
mod managed;
mod migrate;
mod notify;
mod rows;
mod schema;
mod superseded;
mod task_retries;
