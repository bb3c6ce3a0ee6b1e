//! Writing results: `BuildSteps` rows as steps start and move, builds
//! finished (succeeded, failed, cached), products, metrics, `FailedPaths`,
//! and the NOTIFYs (`step_started`, `build_started`, `step_finished`,
//! `build_finished`). Every finishing update is guarded by `finished = 0`,
//! so a build is finished exactly once whatever happens around it.

use hydra_db::ids::BuildId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hydra_db::builds::{Ending, OutputFacts};
use hydra_db::status::{BuildStatus as Status, Busy, StepStatus};
use hydra_db::steps::{NewStep, StepEnd, StepKind};
use hydra_db::{DbError, Tx, lock_builds, notify, transaction};
use sqlx::PgPool;

use crate::QueueError;
use crate::products::{self, Analysis, OutputScan};
use crate::state::{Queue, Stats};

fn now() -> i32 {
    hydra_db::now()
}

/// Which of `paths` are known to fail.
pub(crate) async fn failed_paths(
    pool: &PgPool,
    paths: &BTreeSet<String>,
) -> Result<BTreeSet<String>, QueueError> {
    Ok(hydra_db::failed_paths::known(pool, paths).await?)
}

/// One `info` line per finished build among `ids` (id, job, status,
/// duration): what an operator follows in the log. Written after the
/// transaction that finished them, so a retried transaction logs once.
pub(crate) async fn log_finished(pool: &PgPool, ids: &[BuildId]) {
    match hydra_db::builds::finished(pool, ids).await {
        Ok(builds) => {
            for b in builds {
                tracing::info!(
                    build = b.id.0,
                    job = %format!("{}:{}:{}", b.project, b.jobset, b.job),
                    status = hydra_db::builds::status_name(b.status),
                    seconds = b.duration.unwrap_or(0),
                    cached = b.cached == Some(1),
                    "build {} {}: {}:{}:{}",
                    b.id,
                    hydra_db::builds::status_name(b.status),
                    b.project,
                    b.jobset,
                    b.job
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the finished builds to log them"),
    }
}

/// Creates the busy row of a step that starts on `machine`, with
/// `build_started` for the builds whose own derivation this is.
pub(crate) async fn start_step(
    pool: &PgPool,
    build: BuildId,
    drv_path: &str,
    machine: &str,
    system: &str,
    outputs: &BTreeMap<String, String>,
    toplevel_of: &[BuildId],
) -> Result<i32, QueueError> {
    let step = NewStep {
        build,
        kind: StepKind::Build,
        drv_path,
        machine,
        system: Some(system),
        outputs,
        busy: Busy::Preparing,
        status: None,
        error: None,
        start: now(),
        stop: None,
        propagated_from: None,
    };
    let stepnr = transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            lock_builds(&mut tx, &[build]).await?;
            let stepnr = hydra_db::steps::insert(&mut tx, &step).await?;
            for id in toplevel_of {
                notify::send(&mut tx, "build_started", &id.to_string()).await?;
            }
            Ok::<_, DbError>(stepnr)
        })
    })
    .await?;
    Ok(stepnr)
}

pub(crate) async fn set_busy(
    pool: &PgPool,
    build: BuildId,
    stepnr: i32,
    busy: Busy,
) -> Result<(), QueueError> {
    Ok(hydra_db::steps::set_busy(pool, build, stepnr, busy).await?)
}

/// A finished substitution step (outputs copied instead of built).
pub(crate) async fn substitution_step(
    pool: &PgPool,
    build: BuildId,
    drv_path: &str,
    outputs: &BTreeMap<String, String>,
    start: i32,
    stop: i32,
) -> Result<(), QueueError> {
    let step = NewStep {
        build,
        kind: StepKind::Substitution,
        drv_path,
        machine: "",
        system: None,
        outputs,
        busy: Busy::NotRunning,
        status: Some(StepStatus::Succeeded),
        error: None,
        start,
        stop: Some(stop),
        propagated_from: None,
    };
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            lock_builds(&mut tx, &[build]).await?;
            hydra_db::steps::insert(&mut tx, &step).await?;
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok(())
}

/// A build whose derivation is gone: finished as aborted.
pub(crate) async fn aborted_build(
    queue: &Arc<Queue>,
    id: BuildId,
    why: &str,
) -> Result<(), QueueError> {
    tracing::warn!(build = id.0, "{why}");
    let t = now();
    let ending = Ending {
        status: Status::Aborted,
        cached: false,
        start: t,
        stop: t,
        outputs: None,
    };
    transaction(&queue.ctx.pool, |mut tx: Tx| {
        Box::pin(async move {
            if hydra_db::builds::finish(&mut tx, id, &ending).await? {
                notify::build_finished(&mut tx, id, &[]).await?;
            }
            Ok::<_, DbError>(())
        })
    })
    .await?;
    log_finished(&queue.ctx.pool, &[id]).await;
    Stats::add(&queue.stats.builds_done, 1);
    Stats::add(&queue.stats.builds_failed, 1);
    Ok(())
}

/// A build that needs a derivation whose output failed before: finished
/// at once (status 1 if it is its own derivation, else 2), with a cached
/// failure step pointing at the build that really failed.
pub(crate) async fn cached_failure(
    queue: &Arc<Queue>,
    id: BuildId,
    drv: &str,
    failed_drv: &str,
    message: Option<&str>,
) -> Result<(), QueueError> {
    let pool = &queue.ctx.pool;
    let propagated = hydra_db::steps::latest_own_failure(pool, failed_drv).await?;
    let status = StepStatus::CachedFailure.build_status(drv == failed_drv);
    let t = now();
    let no_outputs = BTreeMap::new();
    let step = NewStep {
        build: id,
        kind: StepKind::Build,
        drv_path: failed_drv,
        machine: "",
        system: None,
        outputs: &no_outputs,
        busy: Busy::NotRunning,
        status: Some(StepStatus::CachedFailure),
        error: message,
        start: t,
        stop: Some(t),
        propagated_from: propagated,
    };
    let ending = Ending {
        status,
        cached: true,
        start: t,
        stop: t,
        outputs: None,
    };
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            lock_builds(&mut tx, &[id]).await?;
            if hydra_db::builds::is_finished(&mut tx, id).await? {
                return Ok::<_, DbError>(());
            }
            hydra_db::steps::insert(&mut tx, &step).await?;
            hydra_db::builds::finish(&mut tx, id, &ending).await?;
            notify::build_finished(&mut tx, id, &[]).await?;
            Ok(())
        })
    })
    .await?;
    log_finished(pool, &[id]).await;
    Stats::add(&queue.stats.builds_done, 1);
    Stats::add(&queue.stats.builds_failed, 1);
    Ok(())
}

/// What a finished build records.
#[derive(Clone, Debug, Default)]
pub(crate) struct Results {
    pub status: Status,
    pub analysis: Analysis,
    pub closure_size: u64,
}

impl Results {
    /// How a build with these results ends.
    fn ending(&self, start: i32, stop: i32, cached: bool) -> Ending<'_> {
        Ending {
            status: self.status,
            cached,
            start,
            stop,
            outputs: Some(OutputFacts {
                size: Some(self.analysis.size as i64),
                closure_size: Some(self.closure_size as i64),
                release_name: self.analysis.release_name.as_deref(),
            }),
        }
    }
}

/// Finishes build `id` with `results`, products and metrics included;
/// false if it was finished already.
async fn finish_with_results(
    tx: &mut Tx<'_, '_>,
    id: BuildId,
    results: &Results,
    ending: &Ending<'_>,
) -> Result<bool, sqlx::Error> {
    if !hydra_db::builds::finish(tx, id, ending).await? {
        return Ok(false);
    }
    let a = &results.analysis;
    hydra_db::products::replace(tx, id, &a.products, &a.metrics).await?;
    Ok(true)
}

/// A build whose outputs are all in the destination store: a cached
/// success, with the products, metrics and sizes of an earlier build with
/// the same outputs, else read from the store.
pub(crate) async fn cached_success(queue: &Arc<Queue>, id: BuildId) -> Result<(), QueueError> {
    let pool = &queue.ctx.pool;
    let outputs = hydra_db::builds::outputs(pool, id).await?;
    let earlier = match outputs.iter().find_map(|(_, p)| p.as_deref()) {
        Some(path) => hydra_db::builds::earlier_success(pool, path, id).await?,
        None => None,
    };
    let t = now();
    match earlier {
        Some(earlier) => {
            let ending = Ending {
                status: earlier.status,
                cached: true,
                start: t,
                stop: t,
                outputs: Some(OutputFacts {
                    size: earlier.size,
                    closure_size: earlier.closure_size,
                    release_name: earlier.release_name.as_deref(),
                }),
            };
            transaction(pool, |mut tx: Tx| {
                Box::pin(async move {
                    lock_builds(&mut tx, &[id]).await?;
                    if hydra_db::builds::finish(&mut tx, id, &ending).await? {
                        hydra_db::products::copy(&mut tx, id, earlier.id).await?;
                        notify::build_finished(&mut tx, id, &[]).await?;
                    }
                    Ok::<_, DbError>(())
                })
            })
            .await?;
        }
        None => {
            let results = read_results(queue, &outputs).await?;
            let ending = results.ending(t, t, true);
            transaction(pool, |mut tx: Tx| {
                let results = &results;
                Box::pin(async move {
                    lock_builds(&mut tx, &[id]).await?;
                    if finish_with_results(&mut tx, id, results, &ending).await? {
                        notify::build_finished(&mut tx, id, &[]).await?;
                    }
                    Ok::<_, DbError>(())
                })
            })
            .await?;
        }
    }
    log_finished(pool, &[id]).await;
    Stats::add(&queue.stats.builds_done, 1);
    Stats::add(&queue.stats.builds_succeeded, 1);
    Ok(())
}

/// The results of outputs already in the destination store, read there.
async fn read_results(
    queue: &Arc<Queue>,
    outputs: &[(String, Option<String>)],
) -> Result<Results, QueueError> {
    let dest_error = |e| QueueError::Machines(format!("destination store: {e}"));
    let paths: BTreeSet<String> = outputs.iter().filter_map(|(_, p)| p.clone()).collect();
    let infos = queue
        .ctx
        .dest
        .path_infos(&paths)
        .await
        .map_err(dest_error)?;
    let mut scans = Vec::new();
    for (name, path) in outputs {
        let Some(path) = path else { continue };
        let scan = queue
            .ctx
            .dest
            .scan(path, &products::scan_options())
            .await
            .map_err(dest_error)?;
        scans.push(OutputScan {
            name: name.clone(),
            path: path.clone(),
            nar_size: infos
                .get(path)
                .map_or(scan.summary.nar_size, |i| i.nar_size),
            scan,
        });
    }
    let analysis = products::analyse(&scans);
    let closure_size = queue.ctx.dest.closure_size(&paths).await.unwrap_or(0);
    Ok(Results {
        status: if analysis.failed {
            Status::FailedWithOutput
        } else {
            Status::Succeeded
        },
        analysis,
        closure_size,
    })
}

/// Where and when a step ran, and where its log is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepRun<'a> {
    /// The build the step ran for.
    pub build: BuildId,
    /// Its row, if it ran.
    pub stepnr: Option<i32>,
    pub drv_path: &'a str,
    pub machine: &'a str,
    pub outputs: &'a BTreeMap<String, String>,
    pub start: i32,
    pub stop: i32,
    pub log: Option<&'a str>,
}

/// How a step that built went.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Success<'a> {
    pub results: &'a Results,
    pub times_built: i32,
    pub non_deterministic: bool,
    pub overhead: i32,
}

/// A step that built: its row finished, and every build whose own
/// derivation it is finished with `results` (cached for all but the one
/// the step ran for). Returns the builds finished.
pub(crate) async fn step_succeeded(
    pool: &PgPool,
    run: &StepRun<'_>,
    stepnr: i32,
    toplevel_of: &[BuildId],
    success: &Success<'_>,
) -> Result<Vec<BuildId>, QueueError> {
    let build = run.build;
    let mut ids: Vec<BuildId> = toplevel_of.to_vec();
    ids.push(build);
    ids.sort_unstable();
    ids.dedup();
    let end = StepEnd {
        status: StepStatus::Succeeded,
        error: None,
        stop: run.stop,
        times_built: Some(success.times_built),
        non_deterministic: Some(success.non_deterministic),
        overhead: Some(success.overhead),
    };
    let finished = transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            hydra_db::steps::end(&mut tx, build, stepnr, &end).await?;
            hydra_db::steps::set_output_paths(&mut tx, build, stepnr, run.outputs).await?;
            let mut finished = Vec::new();
            for id in toplevel_of {
                hydra_db::builds::set_output_paths(&mut tx, *id, run.outputs).await?;
                let ending = success.results.ending(run.start, run.stop, *id != build);
                if finish_with_results(&mut tx, *id, success.results, &ending).await? {
                    finished.push(*id);
                }
            }
            notify::step_finished(&mut tx, build, stepnr, run.log).await?;
            for id in &finished {
                notify::build_finished(&mut tx, *id, &[]).await?;
            }
            Ok::<_, DbError>(finished)
        })
    })
    .await?;
    log_finished(pool, &finished).await;
    Ok(finished)
}

/// How a step failed.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub status: StepStatus,
    /// Kept only for aborted (3) steps, as Hydra does.
    pub error: Option<String>,
    /// The outputs go to `FailedPaths`.
    pub cacheable: bool,
    pub times_built: i32,
    pub non_deterministic: bool,
}

impl Failure {
    /// A failure of `status` before anything was built (not cached).
    pub(crate) fn of(status: StepStatus, error: Option<String>) -> Failure {
        Failure {
            status,
            error,
            cacheable: false,
            times_built: 0,
            non_deterministic: false,
        }
    }
}

/// A step that failed for good: its row (if it ran) finished, and every
/// build that needs it finished (the step's own builds with its status,
/// the others with 2 when it simply failed), each with a step row that
/// points at the build it ran for. Returns the builds finished.
pub(crate) async fn step_failed(
    pool: &PgPool,
    run: &StepRun<'_>,
    toplevel_of: &BTreeSet<BuildId>,
    dependents: &BTreeSet<BuildId>,
    failure: &Failure,
) -> Result<Vec<BuildId>, QueueError> {
    let build = run.build;
    let mut ids: Vec<BuildId> = dependents.iter().copied().collect();
    // The build the step ran for has its row; without one (the step never
    // ran, or a later round for builds linked meanwhile) it is among the
    // dependents when it needs the step.
    if run.stepnr.is_some() {
        ids.push(build);
    }
    ids.sort_unstable();
    ids.dedup();
    let error =
        if failure.status == StepStatus::Aborted || failure.status == StepStatus::Unsupported {
            failure.error.as_deref()
        } else {
            None
        };
    let end = StepEnd {
        status: failure.status,
        error,
        stop: run.stop,
        times_built: Some(failure.times_built),
        non_deterministic: Some(failure.non_deterministic),
        overhead: None,
    };
    let finished = transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            if let Some(stepnr) = run.stepnr {
                hydra_db::steps::end(&mut tx, build, stepnr, &end).await?;
                notify::step_finished(&mut tx, build, stepnr, run.log).await?;
            }
            let mut finished = Vec::new();
            for id in ids {
                let is_toplevel = toplevel_of.contains(id);
                let has_row = *id == build && run.stepnr.is_some();
                if !(has_row || failure.status == StepStatus::CachedFailure && is_toplevel) {
                    let step = NewStep {
                        build: *id,
                        kind: StepKind::Build,
                        drv_path: run.drv_path,
                        machine: run.machine,
                        system: None,
                        outputs: run.outputs,
                        busy: Busy::NotRunning,
                        status: Some(failure.status),
                        error,
                        start: run.start,
                        stop: Some(run.stop),
                        propagated_from: (*id != build).then_some(build),
                    };
                    hydra_db::steps::insert(&mut tx, &step).await?;
                }
                let ending = Ending {
                    status: failure.status.build_status(is_toplevel),
                    cached: failure.status == StepStatus::CachedFailure,
                    start: run.start,
                    stop: run.stop,
                    outputs: None,
                };
                if hydra_db::builds::finish(&mut tx, *id, &ending).await? {
                    finished.push(*id);
                }
            }
            if failure.cacheable {
                let paths: Vec<&str> = run
                    .outputs
                    .values()
                    .filter(|p| !p.is_empty())
                    .map(String::as_str)
                    .collect();
                hydra_db::failed_paths::add(&mut tx, &paths).await?;
            }
            if !finished.is_empty() {
                let first = if finished.contains(&build) {
                    build
                } else {
                    finished[0]
                };
                let others: Vec<BuildId> =
                    finished.iter().copied().filter(|id| *id != first).collect();
                notify::build_finished(&mut tx, first, &others).await?;
            }
            Ok::<_, DbError>(finished)
        })
    })
    .await?;
    log_finished(pool, &finished).await;
    Ok(finished)
}

/// Closes a step row whose result could not be written (the database was
/// gone): aborted, with a stop time. Tries until the database takes it,
/// waiting a second, then longer, between attempts.
pub(crate) async fn close_abandoned_step(pool: &PgPool, build: BuildId, stepnr: i32, why: &str) {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        match hydra_db::steps::abort_if_busy(pool, build, stepnr, why, now()).await {
            Ok(()) => {
                tracing::info!(
                    build = build.0,
                    stepnr,
                    "closed a step whose result could not be recorded"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(build = build.0, stepnr, error = %e, "cannot close the step yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// A step that will be tried again: its row finished with `status`.
pub(crate) async fn step_will_retry(
    pool: &PgPool,
    build: BuildId,
    stepnr: i32,
    status: StepStatus,
    error: &str,
    stop: i32,
    log: Option<&str>,
) -> Result<(), QueueError> {
    let end = StepEnd {
        status,
        error: Some(error),
        stop,
        times_built: None,
        non_deterministic: None,
        overhead: None,
    };
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            hydra_db::steps::end(&mut tx, build, stepnr, &end).await?;
            notify::step_finished(&mut tx, build, stepnr, log).await?;
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok(())
}
