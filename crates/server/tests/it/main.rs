//! The integration tests of `hydra-server`, one target so the suite links and
//! starts its shared fixtures once.

mod access;
mod cache;
mod common;
mod files;
mod insight;
mod ops;
mod pages;
mod read;
mod sign_in;
mod writes;
