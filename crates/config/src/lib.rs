//! Configuration of the system: `hydra.conf` and the environment.
//!
//! This crate owns reading `hydra.conf` exactly as Hydra's Perl code reads it
//! (see [`general`]), the typed [`Config`] with every option's default, and the
//! locations given by `HYDRA_DATA` and `HYDRA_CONFIG`. It does not connect to
//! anything and does not decide which database to use.

pub mod general;
pub mod ldap;
pub mod oidc;
mod options;

use std::path::{Path, PathBuf};

pub use general::{ConfigError, Origin, Tree, Value, Warning};
pub use options::{
    Config, EvaluatorConfig, GitInputConfig, JobsetRepeats, LogCompression, NotifyConfig, OPTIONS,
    OptionDoc, QueueRunnerConfig, Secret, WebConfig, default_gc_roots_dir, options_markdown,
};

/// `$HYDRA_DATA` and the layout of what lives under it: the one place
/// that knows where logs, clones, keys and the managed database are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new(dir: impl Into<PathBuf>) -> DataDir {
        DataDir(dir.into())
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The log file of a step: `build-logs/<first 2 characters of the
    /// drv's base name>/<the rest>`; compressed copies add `.bz2` or
    /// `.zst`. The queue runner writes it, the web server reads it.
    pub fn build_log(&self, drv_path: &str) -> PathBuf {
        let base = drv_path.rsplit('/').next().unwrap_or(drv_path);
        let split = base.char_indices().nth(2).map_or(base.len(), |(i, _)| i);
        let (head, rest) = base.split_at(split);
        self.0.join("build-logs").join(head).join(rest)
    }

    /// The output of a RunCommand run: `runcommand-logs/<first 2
    /// characters of its UUID>/<the UUID>`, as Hydra writes it.
    pub fn run_command_log(&self, uuid: &str) -> PathBuf {
        let split = uuid.char_indices().nth(2).map_or(uuid.len(), |(i, _)| i);
        self.0
            .join("runcommand-logs")
            .join(&uuid[..split])
            .join(uuid)
    }

    /// `scm/<kind>/<sha256 of the URL>`: where the evaluator keeps a
    /// repository's clone between evaluations (and `/api/scmdiff` reads
    /// it).
    pub fn scm_clone(&self, kind: &str, url: &str) -> PathBuf {
        use sha2::Digest;
        self.0
            .join("scm")
            .join(kind)
            .join(hex::encode(sha2::Sha256::digest(url.as_bytes())))
    }

    /// `postgres/`: the managed PostgreSQL cluster.
    pub fn postgres(&self) -> PathBuf {
        self.0.join("postgres")
    }

    /// `keys/binary-cache.secret`: the generated binary-cache signing key.
    pub fn binary_cache_key(&self) -> PathBuf {
        self.0.join("keys").join("binary-cache.secret")
    }

    /// `hydra.conf`: the configuration file unless one is named.
    pub fn config_file(&self) -> PathBuf {
        self.0.join("hydra.conf")
    }
}

impl std::ops::Deref for DataDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for DataDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<PathBuf> for DataDir {
    fn from(dir: PathBuf) -> DataDir {
        DataDir(dir)
    }
}

impl From<&Path> for DataDir {
    fn from(dir: &Path) -> DataDir {
        DataDir(dir.to_path_buf())
    }
}

/// The default of `HYDRA_DATA`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hydra";

/// Where the system keeps its state and finds its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// `HYDRA_DATA`: logs, clone caches, the managed database.
    pub data_dir: DataDir,
    /// `HYDRA_CONFIG`, by default `$HYDRA_DATA/hydra.conf`.
    pub config_file: PathBuf,
    /// Whether the configuration file was named explicitly; a missing file is
    /// then an error rather than an empty configuration.
    pub config_explicit: bool,
}

impl Paths {
    /// From explicit values, falling back to the defaults.
    pub fn new(data_dir: Option<PathBuf>, config_file: Option<PathBuf>) -> Paths {
        let data_dir = DataDir::new(data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)));
        let config_explicit = config_file.is_some();
        let config_file = config_file.unwrap_or_else(|| data_dir.config_file());
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
