//! The notify role: it hears the events the other roles NOTIFY (builds
//! queued, started and finished, steps finished, evaluations), and runs the
//! notification plugins on them.
//!
//! `run` is the loop (LISTEN, the backlog of pending notifications, events,
//! due retries); `dispatch` gives each plugin its own bounded queue;
//! `retry` keeps failed tasks in `TaskRetries` with Hydra's back-off;
//! `plugins` are Hydra's plugins (mail, chat, metrics, RunCommand, …);
//! `status` holds the commit-status plugins and the reporter that
//! delivers their outbox; `metrics` the role's Prometheus metrics.

#![warn(unreachable_pub)]

pub mod dispatch;
pub mod event;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod plugin;
pub mod plugins;
pub mod retry;
pub mod run;
pub mod status;

pub use event::{Event, ParseError};
pub use plugin::{Context, Plugin};
pub use plugins::Plugins;
pub use run::{Options, run, run_with};

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
