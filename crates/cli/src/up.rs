//! `hydra up`: the whole system in one process. It brings up the database
//! (the managed cluster unless one is configured), migrates it, runs the
//! evaluator, the queue runner and the web server, and stops everything on
//! SIGINT or SIGTERM.

use hydra_config::{Config, Paths};
use tokio::signal::unix::{SignalKind, signal};

use tokio_util::sync::CancellationToken;

use crate::database::{self, Ownership};
use crate::evaluator;
use crate::init;
use crate::queue_runner;
use crate::server::{self, ListenArgs};

pub async fn run(paths: &Paths, config: &Config, listen: ListenArgs) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let db = database::open(
        paths,
        config,
        Ownership::Own,
        8 + evaluator::connections(config)
            + queue_runner::connections(config)
            + server::connections(),
    )
    .await?;
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

    // The web server reads the status of the queue runner started here.
    let mut web_config = config.clone();
    if web_config.web.queue_runner_endpoint.is_none()
        && !config.queue_runner.metrics_address.is_empty()
    {
        web_config.web.queue_runner_endpoint =
            Some(format!("http://{}", config.queue_runner.metrics_address));
    }
    let prepared = match server::state(paths, &web_config, db.pool.clone()) {
        Ok(state) => hydra_server::bind(&listen.listen)
            .await
            .map(|listener| (state, listener)),
        Err(e) => Err(e),
    };
    let (web_state, listener) = match prepared {
        Ok(x) => x,
        Err(e) => {
            db.close().await?;
            return Err(e.into());
        }
    };
    let shutdown = CancellationToken::new();
    let mut web = tokio::spawn(hydra_server::run(web_state, listener, shutdown.clone()));
    let mut evaluator = tokio::spawn(hydra_evaluator::scheduler::run(
        evaluator::context(paths, config, db.pool.clone()),
        shutdown.clone(),
    ));
    let mut queue_runner = match queue_runner::context(paths, config, db.pool.clone()) {
        Ok(ctx) => tokio::spawn(hydra_queue_runner::run(ctx, shutdown.clone())),
        Err(e) => {
            shutdown.cancel();
            let _ = evaluator.await;
            let _ = web.await;
            db.close().await?;
            return Err(e);
        }
    };
    let failure = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM received; shutting down"); None }
        _ = interrupt.recv() => { tracing::info!("SIGINT received; shutting down"); None }
        ended = &mut evaluator => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the evaluator stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the evaluator failed"),
            Err(e) => anyhow::anyhow!("the evaluator failed: {e}"),
        }),
        ended = &mut queue_runner => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the queue runner stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the queue runner failed"),
            Err(e) => anyhow::anyhow!("the queue runner failed: {e}"),
        }),
        ended = &mut web => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the web server stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the web server failed"),
            Err(e) => anyhow::anyhow!("the web server failed: {e}"),
        }),
    };
    shutdown.cancel();
    if !evaluator.is_finished()
        && let Ok(Err(e)) = evaluator.await
    {
        tracing::error!("the evaluator failed while stopping: {e}");
    }
    if !queue_runner.is_finished()
        && let Ok(Err(e)) = queue_runner.await
    {
        tracing::error!("the queue runner failed while stopping: {e}");
    }
    if !web.is_finished()
        && let Ok(Err(e)) = web.await
    {
        tracing::error!("the web server failed while stopping: {e}");
    }
    db.close().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!("hydra stopped");
    Ok(())
}
