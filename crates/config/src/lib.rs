//! Configuration of the system: `hydra.conf` and the environment.
//!
//! This crate owns reading `hydra.conf` exactly as Hydra's Perl code reads it
//! (see [`general`]), the typed [`Config`] with every option's default, and the
//! locations given by `HYDRA_DATA` and `HYDRA_CONFIG`. It does not connect to
//! anything and does not decide which database to use.

pub mod general;
mod options;

use std::path::{Path, PathBuf};

pub use general::{ConfigError, Origin, Tree, Value, Warning};
pub use options::{
    Config, EvaluatorConfig, GitInputConfig, JobsetRepeats, LogCompression, NotifyConfig, OPTIONS,
    OptionDoc, QueueRunnerConfig, Secret, WebConfig, default_gc_roots_dir, options_markdown,
};

/// The log file of a step under `$HYDRA_DATA`: `build-logs/<first 2
/// characters of the drv's base name>/<the rest>`; compressed copies add
/// `.bz2` or `.zst`. The queue runner writes it, the web server reads it.
pub fn build_log_path(data_dir: &Path, drv_path: &str) -> PathBuf {
    let base = drv_path.rsplit('/').next().unwrap_or(drv_path);
    let split = base.char_indices().nth(2).map_or(base.len(), |(i, _)| i);
    let (head, rest) = base.split_at(split);
    data_dir.join("build-logs").join(head).join(rest)
}

/// `$HYDRA_DATA/scm/<kind>/<sha256 of the URL>`: where the evaluator keeps
/// a repository's clone between evaluations (and `/api/scmdiff` reads it).
pub fn scm_clone_dir(data_dir: &Path, kind: &str, url: &str) -> PathBuf {
    use sha2::Digest;
    data_dir
        .join("scm")
        .join(kind)
        .join(hex::encode(sha2::Sha256::digest(url.as_bytes())))
}

/// The default of `HYDRA_DATA`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hydra";

/// Where the system keeps its state and finds its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// `HYDRA_DATA`: logs, clone caches, the managed database.
    pub data_dir: PathBuf,
    /// `HYDRA_CONFIG`, by default `$HYDRA_DATA/hydra.conf`.
    pub config_file: PathBuf,
    /// Whether the configuration file was named explicitly; a missing file is
    /// then an error rather than an empty configuration.
    pub config_explicit: bool,
}

impl Paths {
    /// From explicit values, falling back to the defaults.
    pub fn new(data_dir: Option<PathBuf>, config_file: Option<PathBuf>) -> Paths {
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let config_explicit = config_file.is_some();
        let config_file = config_file.unwrap_or_else(|| data_dir.join("hydra.conf"));
        Paths {
            data_dir,
            config_file,
            config_explicit,
        }
    }

    /// From `HYDRA_DATA` and `HYDRA_CONFIG`; empty values count as unset.
    pub fn from_env() -> Paths {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Paths::new(var("HYDRA_DATA"), var("HYDRA_CONFIG"))
    }

    /// Loads the configuration: the file if it exists, else the defaults.
    pub fn load_config(&self) -> Result<(Config, Vec<Warning>), ConfigError> {
        if !self.config_explicit && !self.config_file.exists() {
            return Ok((Config::default(), Vec::new()));
        }
        Config::load_file(&self.config_file)
    }

    /// `$HYDRA_DATA/<sub>`.
    pub fn data(&self, sub: impl AsRef<Path>) -> PathBuf {
        self.data_dir.join(sub)
    }
}
