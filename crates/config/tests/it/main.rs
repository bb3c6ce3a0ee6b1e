//! The integration tests of `hydra-config`, one target so the suite links and
//! starts its shared fixtures once.

mod general_cases;
mod no_panic;
mod typed;
