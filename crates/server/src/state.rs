//! What every handler shares.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use hydra_config::Config;
use sqlx::PgPool;

#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// `HYDRA_DATA`: build logs live under it.
    pub data_dir: PathBuf,
}

impl AppState {
    pub fn new(pool: PgPool, config: Arc<Config>, data_dir: PathBuf) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                pool,
                config,
                data_dir,
            }),
        }
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}
