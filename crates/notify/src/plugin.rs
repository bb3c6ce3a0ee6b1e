//! A notification plugin: what it is called (Hydra's name, stored in
//! `TaskRetries`), which events it wants, and what it does with one.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::PgPool;

use crate::Event;

/// What plugins work with.
#[derive(Clone, Debug)]
pub struct Context {
    pub pool: PgPool,
    pub config: Arc<hydra_config::Config>,
    /// `$HYDRA_DATA` (RunCommand's logs).
    pub data_dir: hydra_config::DataDir,
    /// Where the local store's paths physically are, when it is a chroot
    /// store (`--store DIR`); `None`: at their own paths.
    pub local_root: Option<PathBuf>,
}

impl Context {
    /// Where `store_path` physically is on this machine.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        match &self.local_root {
            Some(root) => root.join(store_path.trim_start_matches('/')),
            None => PathBuf::from(store_path),
        }
    }
}

/// The work of a plugin on one event.
pub type Work<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A notification plugin.
pub trait Plugin: Send + Sync {
    /// Hydra's name for it (`Hydra::Plugin::GithubStatus`), which
    /// `TaskRetries.pluginname` stores.
    fn name(&self) -> &'static str;

    /// Whether it does anything on `event` (by default: a finished build,
    /// what most plugins act on).
    fn wants(&self, event: &Event) -> bool {
        event.finished_build().is_some()
    }

    /// Does its work on `event`; an error is retried later.
    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a>;
}
