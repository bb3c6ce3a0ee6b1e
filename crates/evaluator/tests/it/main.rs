//! The integration tests of `hydra-evaluator`, one target so the suite links and
//! starts its shared fixtures once.

mod aggregates;
mod common;
mod declarative;
mod engine;
mod evaluation;
mod flakes;
mod gc_roots;
mod input_types;
mod pulls;
mod scheduler;
