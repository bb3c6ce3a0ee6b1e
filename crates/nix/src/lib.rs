//! Nix, spoken without linking Nix: its formats and its serve protocol.
//!
//! This crate owns Nix base32, hashes, store paths and their computation,
//! derivations (`.drv` ATerm, hash modulo, output paths), NAR, the export
//! format, binary-cache records (`nix-cache-info`, narinfo, signatures, NAR
//! listings), machines files, and the client of `nix-store --serve`. The
//! formats are pure code; the serve client (in [`serve`]) is async. It knows
//! nothing of Hydra's database or configuration.

pub mod base32;
pub mod copy;
pub mod derivation;
pub mod env;
pub mod export;
pub mod hash;
pub mod machines;
pub mod nar;
pub mod narinfo;
pub mod serve;
pub mod store_path;
pub mod wire;

pub use hash::{HashAlgo, Hasher, NixHash};
pub use store_path::{StoreDir, StorePath, StorePathError};
