//! The integration tests of `hydra-test-support`, one target so the suite links and
//! starts its shared fixtures once.

mod fixtures;
