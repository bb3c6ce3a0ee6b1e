//! The integration tests of `hydra-nix`, one target so the suite links and
//! starts its shared fixtures once.

mod golden_cache;
mod golden_derivations;
mod golden_formats;
mod properties;
mod serve;
