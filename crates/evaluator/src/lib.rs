//! The evaluator role: decides which jobsets to evaluate, fetches their
//! inputs, evaluates them, and records evaluations and queued builds.
//!
//! It owns the evaluation engine (worker processes driving
//! `nix-instantiate`), input fetching, the recording rules of Hydra's
//! `hydra-eval-jobset`, and the scheduling of `hydra-evaluator`. It talks to
//! the other roles only through the database.

#![warn(unreachable_pub)]

mod aggregates;
mod context;
mod declarative;
pub mod engine;
pub mod evaluation;
pub mod gc_roots;
mod inputs;
pub mod metrics;
mod outcome;
mod pull_requests;
mod record;
pub mod scheduler;
