//! The integration tests of `hydra-store`, one target so the suite links and
//! starts its shared fixtures once.

mod stores;
