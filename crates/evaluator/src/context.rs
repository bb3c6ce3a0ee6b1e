//! What every stage of an evaluation shares: its context and the error
//! that fails it as a whole.

use std::sync::Arc;

use hydra_config::{Config, DataDir};
use hydra_db::DbError;
use sqlx::PgPool;

use crate::engine::{self, NixEnv};
use crate::inputs::FetchContext;
use crate::metrics::Metrics;

/// What every evaluation needs.
#[derive(Clone, Debug)]
pub struct Context {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// `$HYDRA_DATA`: the clone caches live under `scm/`.
    pub data_dir: DataDir,
    /// How Nix programs are run (which store, which settings).
    pub nix: NixEnv,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// What fetching the inputs of jobset `project:jobset` needs.
    pub(crate) fn fetch_context<'a>(
        &'a self,
        project: &'a str,
        jobset: &'a str,
    ) -> FetchContext<'a> {
        FetchContext {
            pool: &self.pool,
            config: &self.config,
            data_dir: &self.data_dir,
            nix: &self.nix,
            project,
            jobset,
        }
    }
}

/// An error that fails the evaluation as a whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("database error: {0}")]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        RunError::Db(DbError::from(e))
    }
}
