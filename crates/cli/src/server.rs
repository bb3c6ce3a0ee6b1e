//! `hydra server`: the web role alone, until stopped.

use std::sync::Arc;

use hydra_config::{Config, Paths};
use hydra_nix::env::NixEnv;
use sqlx::PgPool;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::database::{self, Ownership};

/// Where the web server listens.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address of the web server
    #[arg(
        long,
        env = "HYDRA_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub listen: String,
}

pub fn state(
    paths: &Paths,
    config: &Config,
    pool: PgPool,
) -> Result<hydra_server::AppState, hydra_server::ServerError> {
    hydra_server::AppState::new(
        pool,
        Arc::new(config.clone()),
        paths.data_dir.clone(),
        NixEnv::default(),
    )
}

/// Connections the web server needs.
pub fn connections() -> u32 {
    16
}

pub async fn run(paths: &Paths, config: &Config, args: ListenArgs) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, connections()).await?;
    let prepared = match state(paths, config, db.pool.clone()) {
        Ok(state) => hydra_server::bind(&args.listen)
            .await
            .map(|listener| (state, listener)),
        Err(e) => Err(e),
    };
    let (state, listener) = match prepared {
        Ok(x) => x,
        Err(e) => {
            db.close().await?;
            return Err(e.into());
        }
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; stopping the web server"),
            _ = interrupt.recv() => tracing::info!("SIGINT received; stopping the web server"),
        }
        stop.cancel();
    });
    let result = hydra_server::run(state, listener, shutdown).await;
    db.close().await?;
    Ok(result?)
}
