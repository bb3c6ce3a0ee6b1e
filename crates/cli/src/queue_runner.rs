//! `hydra queue-runner` (until stopped) and `hydra build-one BUILD_ID`.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context as _;
use hydra_config::{Config, Paths};
use hydra_nix::env::NixEnv;
use hydra_queue_runner::Context;
use sqlx::PgPool;

use crate::database::{self, Ownership};

#[derive(Debug, clap::Args)]
pub struct BuildOneArgs {
    /// The build
    build: i32,
}

/// The queue runner's context for a command.
pub fn context(paths: &Paths, config: &Config, pool: PgPool) -> anyhow::Result<Context> {
    let local = NixEnv::default();
    let dest = hydra_store::open(&config.queue_runner.store_uri, &local)
        .with_context(|| "cannot open the destination store (store_uri)")?;
    Ok(Context {
        pool,
        config: Arc::new(config.clone()),
        data_dir: paths.data_dir.clone(),
        local_root: local.detect_root(),
        local,
        dest: Arc::new(dest),
    })
}

/// Connections the queue runner needs.
pub fn connections(config: &Config) -> u32 {
    config.queue_runner.max_db_connections.clamp(4, 128)
}

pub async fn run(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, connections(config)).await?;
    let shutdown = crate::stop_on_signals("the queue runner")?;
    let result = match context(paths, config, db.pool.clone()) {
        Ok(ctx) => hydra_queue_runner::run(ctx, shutdown)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    db.close().await?;
    result
}

pub async fn build_one(paths: &Paths, config: &Config, args: BuildOneArgs) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, 8).await?;
    let result = match context(paths, config, db.pool.clone()) {
        Ok(ctx) => hydra_queue_runner::build_one(ctx, args.build)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    db.close().await?;
    let status = result?;
    writeln!(
        std::io::stdout().lock(),
        "build {}: status {}",
        args.build,
        status.code()
    )?;
    Ok(())
}
