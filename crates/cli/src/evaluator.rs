//! `hydra evaluator` (the scheduler, until stopped) and `hydra eval-jobset`
//! (one evaluation, now).

use std::io::Write;
use std::sync::Arc;

use hydra_config::{Config, Paths};
use hydra_evaluator::engine::NixEnv;
use hydra_evaluator::evaluation::{self, Context};
use hydra_evaluator::metrics::Metrics;
use hydra_evaluator::scheduler;
use sqlx::PgPool;

use crate::database::{self, Ownership};

#[derive(Debug, clap::Args)]
pub struct EvaluatorArgs {
    /// Only clear the marks of evaluations that were running when the
    /// evaluator stopped, then exit
    #[arg(long)]
    unlock: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalJobsetArgs {
    /// The project
    project: String,
    /// The jobset
    jobset: String,
}

/// The evaluation context for a command.
pub fn context(paths: &Paths, config: &Config, pool: PgPool) -> Context {
    Context {
        pool,
        config: Arc::new(config.clone()),
        data_dir: paths.data_dir.clone(),
        nix: NixEnv::default(),
        metrics: Arc::new(Metrics::new()),
    }
}

/// Connections the evaluator needs: one per running evaluation, the
/// listener, and the scheduler's own.
pub fn connections(config: &Config) -> u32 {
    config.evaluator.max_concurrent_evals + 4
}

pub async fn run(paths: &Paths, config: &Config, args: EvaluatorArgs) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, connections(config)).await?;
    if args.unlock {
        let cleared = scheduler::unlock(&db.pool).await;
        db.close().await?;
        tracing::info!(
            jobsets = cleared?,
            "cleared the start times of interrupted evaluations"
        );
        return Ok(());
    }
    let shutdown = crate::stop_on_signals("the evaluator")?;
    let result = scheduler::run(context(paths, config, db.pool.clone()), shutdown).await;
    db.close().await?;
    Ok(result?)
}

/// `hydra update-gc-roots`: roots what must survive garbage collection in
/// `gc_roots_dir` and removes stale roots.
pub async fn update_gc_roots(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, 2).await?;
    let result = hydra_evaluator::gc_roots::update(
        &db.pool,
        &NixEnv::default(),
        &config.gc_roots_dir,
        hydra_evaluator::gc_roots::MIN_AGE,
    )
    .await;
    db.close().await?;
    let report = result?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} paths kept, {} roots added, {} removed, {} too recent to remove",
        config.gc_roots_dir.display(),
        report.kept,
        report.added,
        report.removed,
        report.spared
    )?;
    Ok(())
}

/// Evaluates one jobset and prints a summary; fails when the evaluation
/// did.
pub async fn eval_jobset(
    paths: &Paths,
    config: &Config,
    args: EvalJobsetArgs,
) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, 4).await?;
    let ctx = context(paths, config, db.pool.clone());
    let result = evaluation::evaluate_jobset(&ctx, &args.project, &args.jobset).await;
    db.close().await?;
    let summary = result?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{summary}")?;
    if summary.failed() {
        anyhow::bail!("the evaluation of {}:{} failed", args.project, args.jobset);
    }
    Ok(())
}
