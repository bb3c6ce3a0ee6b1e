//! `hydra notify [--queued-only]`: the notification role on its own.

use std::sync::Arc;

use anyhow::Context as _;
use hydra_config::{Config, Paths};
use hydra_nix::env::NixEnv;
use hydra_notify::{Context, Options};
use sqlx::PgPool;

use crate::database::{self, Ownership};

#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// Deliver the notifications still pending (finished builds not yet
    /// notified), then exit
    #[arg(long)]
    queued_only: bool,
}

/// The notify role's context for a command.
pub fn context(paths: &Paths, config: &Config, pool: PgPool) -> Context {
    Context {
        pool,
        config: Arc::new(config.clone()),
        data_dir: paths.data_dir.clone(),
        local_root: NixEnv::default().detect_root(),
    }
}

/// The plugins the configuration enables, or why it cannot be used.
pub fn plugins(config: &Config, pool: &PgPool) -> anyhow::Result<hydra_notify::Plugins> {
    hydra_notify::plugins::enabled(config, pool)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("hydra.conf")
}

pub async fn run(paths: &Paths, config: &Config, args: NotifyArgs) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, 8).await?;
    let shutdown = crate::stop_on_signals("notify")?;
    let cx = context(paths, config, db.pool.clone());
    let plugins = match plugins(config, &db.pool) {
        Ok(p) => p,
        Err(e) => {
            db.close().await?;
            return Err(e);
        }
    };
    let result = hydra_notify::run(
        cx,
        plugins,
        Options {
            queued_only: args.queued_only,
        },
        shutdown,
    )
    .await
    .map_err(anyhow::Error::from);
    db.close().await?;
    result
}
