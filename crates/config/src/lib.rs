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
