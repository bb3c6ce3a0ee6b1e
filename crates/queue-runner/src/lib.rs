//! The queue-runner role: turns queued builds into built outputs in the
//! destination store.
//!
//! The **monitor** (`monitor.rs`) loads unfinished builds, reads their
//! `.drv` files and creates one *step* per derivation whose outputs the
//! destination store lacks, shared between builds. The **dispatcher**
//! (`dispatch.rs`) sends runnable steps to machines (`machines.rs`) the
//! moment a slot is free. A step (`step.rs`) copies its inputs to the
//! machine, builds over the serve protocol while the log is written to
//! `build-logs/`, and brings the outputs back into the local store (and the
//! destination store), reading `nix-support/` on the way (`products.rs`).
//! Results are written by `finish.rs`; `eta.rs` predicts when queued
//! builds finish from the durations of earlier steps. Everything is driven by NOTIFY and
//! by steps finishing; `status.rs` serves the status and metrics.
//!
//! It talks to the other roles only through the database.

#![warn(unreachable_pub)]

mod dispatch;
mod eta;
mod finish;
mod machines;
mod monitor;
mod products;
mod ready;
mod state;
mod status;
mod step;
mod waiting;

use std::path::PathBuf;
use std::sync::Arc;

use hydra_config::Config;
use hydra_db::DbError;
use hydra_nix::env::NixEnv;
use hydra_store::DestStore;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use state::Queue;

/// What the queue runner works with.
#[derive(Clone, Debug)]
pub struct Context {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// `$HYDRA_DATA`: logs go to `build-logs/`.
    pub data_dir: hydra_config::DataDir,
    /// The local store: where `.drv` files are read from, what `localhost`
    /// builds in, and where outputs are gathered.
    pub local: NixEnv,
    /// Where the local store's files are, when it is a chroot store
    /// ([`NixEnv::detect_root`]).
    pub local_root: Option<PathBuf>,
    /// Where outputs end up (`store_uri`).
    pub dest: Arc<DestStore>,
}

impl Context {
    /// Where a store path of the local store physically is (chroot stores
    /// keep `/nix/store` under their root).
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        match &self.local_root {
            Some(root) => root.join(store_path.trim_start_matches('/')),
            None => PathBuf::from(store_path),
        }
    }

    /// Reads and parses the derivation `drv_path` from the local store
    /// (blocking: call off the async threads).
    pub fn read_derivation(
        &self,
        drv_path: &str,
    ) -> Result<hydra_nix::derivation::Derivation, String> {
        let text = std::fs::read_to_string(self.real_path(drv_path))
            .map_err(|e| format!("cannot read {drv_path}: {e}"))?;
        hydra_nix::derivation::Derivation::parse(&text).map_err(|e| format!("{drv_path}: {e}"))
    }

    /// The log file of a step: `build-logs/<2 chars>/<rest of the drv's
    /// base name>`.
    pub fn log_path(&self, drv_path: &str) -> PathBuf {
        self.data_dir.build_log(drv_path)
    }

    /// Garbage collector roots for the outputs of a successful step (empty
    /// files named after them in `gc_roots_dir`, which Nix's collector
    /// honours), whatever the destination store: outputs are staged in the
    /// machine's store in every case, and later steps copy from there.
    pub fn register_roots<'a>(&self, outputs: impl IntoIterator<Item = &'a String>) {
        let dir = &self.config.gc_roots_dir;
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the garbage collector roots directory");
            return;
        }
        for path in outputs {
            let Some(base) = path.rsplit('/').next().filter(|b| !b.is_empty()) else {
                continue;
            };
            let root = dir.join(base);
            if root.symlink_metadata().is_err()
                && let Err(e) = std::fs::File::create(&root)
            {
                tracing::warn!(root = %root.display(), error = %e, "cannot register a garbage collector root");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("another queue runner is using this database")]
    AlreadyRunning,
    #[error(
        "another queue runner took this database's lock while the connection holding it was lost; stopping"
    )]
    LockLost,
    #[error("build {0} does not exist")]
    NoSuchBuild(hydra_db::ids::BuildId),
    #[error("{0}")]
    Machines(String),
    #[error("cannot serve the status on {address} (queue_runner_metrics_address): {source}")]
    Status {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        QueueError::Db(DbError::from(e))
    }
}

/// Runs the queue runner until `shutdown` is cancelled, with its status on
/// `queue_runner_metrics_address` (an address that is taken is an error:
/// the status there would be another program's).
pub async fn run(ctx: Context, shutdown: CancellationToken) -> Result<(), QueueError> {
    let address = ctx.config.queue_runner.metrics_address.clone();
    let status = if address.is_empty() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|source| QueueError::Status { address, source })?,
        )
    };
    run_with(ctx, status, shutdown).await
}

/// Runs the queue runner until `shutdown` is cancelled, serving its status
/// on `status` if given.
pub async fn run_with(
    ctx: Context,
    status: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let lock = state::InstanceLock::acquire(&ctx.pool).await?;
    let queue = Queue::start(ctx).await?;
    let status = status.map(|listener| status::serve(&queue, listener));
    let result = tokio::select! {
        r = monitor::run(queue.clone()) => r,
        r = dispatch::run(queue.clone()) => r,
        r = eta::run(queue.clone()) => r,
        r = lock.keep(&queue.lock_held, &queue.dispatch) => r,
        _ = shutdown.cancelled() => Ok(()),
    };
    queue.stop().await;
    if let Some(task) = status {
        task.abort();
    }
    result
}

/// Builds one build (and what it needs) and returns when it is finished.
pub async fn build_one(
    ctx: Context,
    build_id: i32,
) -> Result<hydra_db::status::BuildStatus, QueueError> {
    let lock = state::InstanceLock::acquire(&ctx.pool).await?;
    let queue = Queue::start(ctx).await?;
    let dispatcher = tokio::spawn(dispatch::run(queue.clone()));
    let result = monitor::build_one(&queue, hydra_db::ids::BuildId(build_id)).await;
    dispatcher.abort();
    queue.stop().await;
    drop(lock);
    result
}
