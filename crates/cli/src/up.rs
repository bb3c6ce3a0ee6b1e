//! `hydra up`: the whole system in one process. It brings up the database
//! (the managed cluster unless one is configured), migrates it, and runs
//! until SIGINT or SIGTERM.

use hydra_config::{Config, Paths};
use tokio::signal::unix::{SignalKind, signal};

use crate::database::{self, Ownership};
use crate::init;

pub async fn run(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let db = database::open(paths, config, Ownership::Own, 16).await?;
    let done = match init::initialise(&db.pool).await {
        Ok(done) => done,
        Err(e) => {
            db.close().await?;
            return Err(e);
        }
    };
    for line in init::describe(&done) {
        tracing::info!("{line}");
    }
    match config.files.first() {
        Some(file) => tracing::info!(config = %file.display(), "configuration"),
        None => tracing::info!(
            "no configuration file at {}; using the defaults",
            paths.config_file.display()
        ),
    }
    tracing::info!(
        data = %paths.data_dir.display(),
        database = %db.location,
        managed = db.owns_cluster(),
        "hydra is up; connect to the database with: psql '{}'",
        db.location
    );

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    db.close().await?;
    tracing::info!("hydra stopped");
    Ok(())
}
