//! Real parts for tests: a throwaway PostgreSQL cluster per test binary with
//! a fresh migrated database per test, temporary `HYDRA_DATA` directories,
//! separate chroot Nix stores, and a directory of Nix expressions.
//!
//! Nothing here fakes a part of the system; it only sets up the real things
//! the system talks to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
pub mod builds;
mod git;
pub mod http;
pub mod jobsets;
mod nix;
mod pg;
pub mod s3;
pub mod slapd;
pub mod smtp;
mod sshd;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use browser::Browser;
pub use git::GitRepo;
pub use nix::NixStore;
pub use pg::{TestCluster, TestDb, cluster};
pub use sshd::Sshd;

/// A temporary directory that other users may enter (mode 0755): the
/// managed PostgreSQL server runs as an unprivileged user when tests run as
/// root, and must reach its directory inside.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hydra-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A temporary `HYDRA_DATA`.
pub fn temp_data_dir() -> tempfile::TempDir {
    shared_tempdir()
}

/// The directory of fixture Nix expressions (`config.nix`, `basic.nix`, …).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
