//! The notify role: it hears the events the other roles NOTIFY (builds
//! queued, started and finished, steps finished, evaluations), and runs the
//! notification plugins on them, retrying failures from `TaskRetries`.
//!
//! This crate holds, so far, what the role is built on: the events with
//! Hydra's parsing and validation of their payloads (`event`), and what
//! becomes of a failed task (`retry`: kept, backed off with `backoff`,
//! given up). The rows are `hydra_db::task_retries`.

pub mod dispatch;
pub mod event;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod plugin;
pub mod plugins;
pub mod retry;
pub mod run;
pub mod s3;
pub mod status;

pub use event::{Event, ParseError};
pub use plugin::{Context, Plugin};
pub use plugins::Plugins;
pub use run::{Options, run};

/// Seconds to wait before retry `n` of a failed task: `2^min(n, 10)`, so
/// 1, 2, 4, … 1024 and then 1024 again (Hydra's schedule).
pub fn backoff(n: u32) -> i64 {
    1_i64 << n.min(10)
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn retries_back_off_exponentially_up_to_1024_seconds() {
        assert_eq!(backoff(0), 1);
        assert_eq!(backoff(1), 2);
        assert_eq!(backoff(2), 4);
        assert_eq!(backoff(9), 512);
        assert_eq!(backoff(10), 1024);
        assert_eq!(backoff(11), 1024);
        assert_eq!(backoff(11000), 1024);
    }
}
