//! Writing results: `BuildSteps` rows as steps start and move, builds
//! finished (succeeded, failed, cached), products, metrics, `FailedPaths`,
//! and the NOTIFYs (`step_started`, `build_started`, `step_finished`,
//! `build_finished`). Every finishing update is guarded by `finished = 0`,
//! so a build is finished exactly once whatever happens around it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hydra_db::status::{BuildStatus as Status, Busy};
use hydra_db::{DbError, Tx, lock_builds, transaction};
use sqlx::{PgConnection, PgPool};

use crate::QueueError;
use crate::products::{self, Analysis, OutputScan};
use crate::state::{Queue, Stats};

/// Status codes to bind as an `integer[]`.
fn codes(statuses: &[Status]) -> Vec<i32> {
    statuses.iter().map(|s| s.code()).collect()
}

fn now() -> i32 {
    hydra_db::now()
}

/// Marks steps left busy by an earlier run as aborted.
pub async fn clear_busy(pool: &PgPool) -> Result<u64, QueueError> {
    let done = sqlx::query(
        "update BuildSteps set busy = $2, status = $3, stopTime = coalesce(stopTime, $1) where busy <> $2",
    )
    .bind(now())
    .bind(Busy::NotRunning)
    .bind(Status::Aborted)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Which of `paths` are known to fail.
pub async fn failed_paths(
    pool: &PgPool,
    paths: &BTreeSet<String>,
) -> Result<BTreeSet<String>, QueueError> {
    if paths.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: Vec<&str> = paths.iter().map(String::as_str).collect();
    let found: Vec<String> =
        sqlx::query_scalar("select path from FailedPaths where path = any($1)")
            .bind(&list)
            .fetch_all(pool)
            .await?;
    Ok(found.into_iter().collect())
}

/// `build_finished` with the first build and the others, split so that
/// each payload stays under PostgreSQL's 8000-byte limit (each starting
/// with the first build).
pub fn build_finished_payloads(first: i32, others: &[i32]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = first.to_string();
    for id in others {
        let piece = format!("\t{id}");
        if current.len() + piece.len() > 7000 {
            payloads.push(std::mem::replace(&mut current, first.to_string()));
        }
        current.push_str(&piece);
    }
    payloads.push(current);
    payloads
}

async fn notify(conn: &mut PgConnection, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// One `info` line per finished build among `ids` (id, job, status,
/// duration): what an operator follows in the log. Written after the
/// transaction that finished them, so a retried transaction logs once.
pub async fn log_finished(pool: &PgPool, ids: &[i32]) {
    match hydra_db::builds::finished(pool, ids).await {
        Ok(builds) => {
            for b in builds {
                tracing::info!(
                    build = b.id,
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

async fn notify_finished(
    conn: &mut PgConnection,
    first: i32,
    others: &[i32],
) -> Result<(), sqlx::Error> {
    for payload in build_finished_payloads(first, others) {
        notify(conn, "build_finished", &payload).await?;
    }
    Ok(())
}

/// Adds a `BuildSteps` row (with `BuildStepOutputs`) and returns its
/// number; a busy row is announced with `step_started`.
#[allow(clippy::too_many_arguments)]
pub async fn insert_step(
    conn: &mut PgConnection,
    build: i32,
    kind: i32,
    drv_path: &str,
    machine: &str,
    system: Option<&str>,
    outputs: &BTreeMap<String, String>,
    busy: Busy,
    status: Option<Status>,
    error: Option<&str>,
    start: i32,
    stop: Option<i32>,
    propagated_from: Option<i32>,
) -> Result<i32, sqlx::Error> {
    let stepnr: i32 = sqlx::query_scalar(
        "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, errorMsg, startTime, stopTime, \
         machine, system, propagatedFrom) \
         select $1, coalesce(max(stepnr), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
         from BuildSteps where build = $1 returning stepnr",
    )
    .bind(build)
    .bind(kind)
    .bind(drv_path)
    .bind(busy)
    .bind(status)
    .bind(error)
    .bind(start)
    .bind(stop)
    .bind(machine)
    .bind(system)
    .bind(propagated_from)
    .fetch_one(&mut *conn)
    .await?;
    let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
    let paths: Vec<Option<&str>> = outputs
        .values()
        .map(|p| (!p.is_empty()).then_some(p.as_str()))
        .collect();
    sqlx::query(
        "insert into BuildStepOutputs (build, stepnr, name, path) select $1, $2, n, p from unnest($3::text[], $4::text[]) as t(n, p)",
    )
    .bind(build)
    .bind(stepnr)
    .bind(&names)
    .bind(&paths)
    .execute(&mut *conn)
    .await?;
    if busy != Busy::NotRunning {
        notify(conn, "step_started", &format!("{build}\t{stepnr}")).await?;
    }
    Ok(stepnr)
}

/// Creates the busy row of a step that starts on `machine`, with
/// `build_started` for the builds whose own derivation this is.
pub async fn start_step(
    pool: &PgPool,
    build: i32,
    drv_path: &str,
    machine: &str,
    system: &str,
    outputs: &BTreeMap<String, String>,
    toplevel_of: &[i32],
) -> Result<i32, QueueError> {
    let stepnr = transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            lock_builds(&mut tx, &[build]).await?;
            let stepnr = insert_step(
                &mut tx,
                build,
                0,
                drv_path,
                machine,
                Some(system),
                outputs,
                Busy::Preparing,
                None,
                None,
                now(),
                None,
                None,
            )
            .await?;
            for id in toplevel_of {
                notify(&mut tx, "build_started", &id.to_string()).await?;
            }
            Ok::<_, DbError>(stepnr)
        })
    })
    .await?;
    Ok(stepnr)
}

pub async fn set_busy(
    pool: &PgPool,
    build: i32,
    stepnr: i32,
    busy: Busy,
) -> Result<(), QueueError> {
    sqlx::query("update BuildSteps set busy = $3 where build = $1 and stepnr = $2 and busy <> $4")
        .bind(build)
        .bind(stepnr)
        .bind(busy)
        .bind(Busy::NotRunning)
        .execute(pool)
        .await?;
    Ok(())
}

/// A finished substitution step (outputs copied instead of built).
pub async fn substitution_step(
    pool: &PgPool,
    build: i32,
    drv_path: &str,
    outputs: &BTreeMap<String, String>,
    start: i32,
    stop: i32,
) -> Result<(), QueueError> {
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            lock_builds(&mut tx, &[build]).await?;
            insert_step(
                &mut tx,
                build,
                1,
                drv_path,
                "",
                None,
                outputs,
                Busy::NotRunning,
                Some(Status::Succeeded),
                None,
                start,
                Some(stop),
                None,
            )
            .await?;
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok(())
}

/// A build whose derivation is gone: finished as aborted.
pub async fn aborted_build(queue: &Arc<Queue>, id: i32, why: &str) -> Result<(), QueueError> {
    tracing::warn!(build = id, "{why}");
    transaction(&queue.ctx.pool, |mut tx: Tx| {
        Box::pin(async move {
            let t = now();
            let done = sqlx::query(
                "update Builds set finished = 1, buildStatus = $3, startTime = $2, stopTime = $2, \
                 notificationPendingSince = $2 where id = $1 and finished = 0",
            )
            .bind(id)
            .bind(t)
            .bind(Status::Aborted)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                notify_finished(&mut tx, id, &[]).await?;
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
pub async fn cached_failure(
    queue: &Arc<Queue>,
    id: i32,
    drv: &str,
    failed_drv: &str,
    message: Option<&str>,
) -> Result<(), QueueError> {
    let pool = &queue.ctx.pool;
    let propagated: Option<i32> = sqlx::query_scalar(
        "select max(s.build) from BuildSteps s where s.drvPath = $1 and s.status = any($2) \
         and s.propagatedFrom is null",
    )
    .bind(failed_drv)
    .bind(codes(&hydra_db::status::CACHEABLE_FAILURES))
    .fetch_one(pool)
    .await?;
    let status = if drv == failed_drv {
        Status::Failed
    } else {
        Status::DependencyFailed
    };
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            lock_builds(&mut tx, &[id]).await?;
            let finished: i32 = sqlx::query_scalar("select finished from Builds where id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            if finished != 0 {
                return Ok::<_, DbError>(());
            }
            let t = now();
            insert_step(
                &mut tx,
                id,
                0,
                failed_drv,
                "",
                None,
                &BTreeMap::new(),
                Busy::NotRunning,
                Some(Status::CachedFailure),
                message,
                t,
                Some(t),
                propagated,
            )
            .await?;
            sqlx::query(
                "update Builds set finished = 1, buildStatus = $2, isCachedBuild = 1, startTime = $3, stopTime = $3, \
                 notificationPendingSince = $3 where id = $1 and finished = 0",
            )
            .bind(id)
            .bind(status)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            notify_finished(&mut tx, id, &[]).await?;
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
pub struct Results {
    pub status: Status,
    pub analysis: Analysis,
    pub closure_size: u64,
}

/// A build whose outputs are all in the destination store: a cached
/// success, with the products, metrics and sizes of an earlier build with
/// the same outputs, else read from the store.
pub async fn cached_success(queue: &Arc<Queue>, id: i32) -> Result<(), QueueError> {
    let pool = &queue.ctx.pool;
    let outputs: Vec<(String, Option<String>)> =
        sqlx::query_as("select name, path from BuildOutputs where build = $1 order by name")
            .bind(id)
            .fetch_all(pool)
            .await?;
    let first = outputs.iter().find_map(|(_, p)| p.clone());
    type Earlier = (i32, i32, Option<i64>, Option<i64>, Option<String>);
    let earlier: Option<Earlier> = match &first {
        Some(path) => sqlx::query_as(
            "select b.id, b.buildStatus, b.size, b.closureSize, b.releaseName from Builds b \
             join BuildOutputs o on o.build = b.id where o.path = $1 and b.id <> $2 and b.finished = 1 \
             and b.buildStatus = any($3) order by b.id desc limit 1",
        )
        .bind(path)
        .bind(id)
        .bind(codes(&[Status::Succeeded, Status::FailedWithOutput]))
        .fetch_optional(pool)
        .await?,
        None => None,
    };
    let t = now();
    match earlier {
        Some((earlier_id, status, size, closure, release)) => {
            transaction(pool, |mut tx: Tx| {
                let release = &release;
                Box::pin(async move {
                    lock_builds(&mut tx, &[id]).await?;
                    let done = sqlx::query(
                        "update Builds set finished = 1, buildStatus = $2, isCachedBuild = 1, startTime = $3, \
                         stopTime = $3, size = $4, closureSize = $5, releaseName = $6, notificationPendingSince = $3 \
                         where id = $1 and finished = 0",
                    )
                    .bind(id)
                    .bind(status)
                    .bind(t)
                    .bind(size)
                    .bind(closure)
                    .bind(release)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok::<_, DbError>(());
                    }
                    sqlx::query("delete from BuildProducts where build = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "insert into BuildProducts (build, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath) \
                         select $1, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath \
                         from BuildProducts where build = $2",
                    )
                    .bind(id)
                    .bind(earlier_id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("delete from BuildMetrics where build = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp) \
                         select $1, m.name, m.unit, m.value, j.project, j.name, b.job, b.timestamp \
                         from BuildMetrics m, Builds b join Jobsets j on j.id = b.jobset_id \
                         where m.build = $2 and b.id = $1",
                    )
                    .bind(id)
                    .bind(earlier_id)
                    .execute(&mut *tx)
                    .await?;
                    notify_finished(&mut tx, id, &[]).await?;
                    Ok(())
                })
            })
            .await?;
        }
        None => {
            let mut scans = Vec::new();
            let paths: BTreeSet<String> = outputs.iter().filter_map(|(_, p)| p.clone()).collect();
            let infos = queue
                .ctx
                .dest
                .path_infos(&paths)
                .await
                .map_err(|e| QueueError::Machines(format!("destination store: {e}")))?;
            for (name, path) in &outputs {
                let Some(path) = path else { continue };
                let scan = queue
                    .ctx
                    .dest
                    .scan(path, &products::scan_options())
                    .await
                    .map_err(|e| QueueError::Machines(format!("destination store: {e}")))?;
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
            let results = Results {
                status: if analysis.failed {
                    Status::FailedWithOutput
                } else {
                    Status::Succeeded
                },
                analysis,
                closure_size,
            };
            transaction(pool, |mut tx: Tx| {
                let results = &results;
                Box::pin(async move {
                    lock_builds(&mut tx, &[id]).await?;
                    if finish_build(&mut tx, id, results, t, t, true).await? {
                        notify_finished(&mut tx, id, &[]).await?;
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

/// Marks a build finished with `results`; false if it already was.
async fn finish_build(
    conn: &mut PgConnection,
    id: i32,
    results: &Results,
    start: i32,
    stop: i32,
    cached: bool,
) -> Result<bool, sqlx::Error> {
    let a = &results.analysis;
    let done = sqlx::query(
        "update Builds set finished = 1, buildStatus = $2, isCachedBuild = $3, startTime = $4, stopTime = $5, \
         size = $6, closureSize = $7, releaseName = $8, notificationPendingSince = $5 \
         where id = $1 and finished = 0",
    )
    .bind(id)
    .bind(results.status)
    .bind(i32::from(cached))
    .bind(start)
    .bind(stop)
    .bind(a.size as i64)
    .bind(results.closure_size as i64)
    .bind(&a.release_name)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("delete from BuildProducts where build = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (i, p) in a.products.iter().enumerate() {
        sqlx::query(
            "insert into BuildProducts (build, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(i as i32 + 1)
        .bind(&p.kind)
        .bind(&p.subtype)
        .bind(p.file_size)
        .bind(&p.sha256)
        .bind(&p.path)
        .bind(&p.name)
        .bind(&p.default_path)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("delete from BuildMetrics where build = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (name, m) in &a.metrics {
        sqlx::query(
            "insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp) \
             select b.id, $2, $3, $4, j.project, j.name, b.job, b.timestamp from Builds b \
             join Jobsets j on j.id = b.jobset_id where b.id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(&m.unit)
        .bind(m.value)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// A step that built: its row finished, and every build whose own
/// derivation it is finished with `results` (cached for all but `build`,
/// the one the step ran for). Returns the builds finished.
#[allow(clippy::too_many_arguments)]
pub async fn step_succeeded(
    pool: &PgPool,
    build: i32,
    stepnr: i32,
    outputs: &BTreeMap<String, String>,
    toplevel_of: &[i32],
    results: &Results,
    start: i32,
    stop: i32,
    times_built: i32,
    non_deterministic: bool,
    overhead: i32,
    log: Option<&str>,
) -> Result<Vec<i32>, QueueError> {
    let mut ids: Vec<i32> = toplevel_of.to_vec();
    ids.push(build);
    ids.sort_unstable();
    ids.dedup();
    let finished = transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            sqlx::query(
                "update BuildSteps set busy = $7, status = $8, stopTime = $3, timesBuilt = $4, isNonDeterministic = $5, \
                 overhead = $6 where build = $1 and stepnr = $2",
            )
            .bind(build)
            .bind(stepnr)
            .bind(stop)
            .bind(times_built)
            .bind(non_deterministic)
            .bind(overhead)
            .bind(Busy::NotRunning)
            .bind(Status::Succeeded)
            .execute(&mut *tx)
            .await?;
            for (name, path) in outputs {
                sqlx::query("update BuildStepOutputs set path = $4 where build = $1 and stepnr = $2 and name = $3")
                    .bind(build)
                    .bind(stepnr)
                    .bind(name)
                    .bind(path)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut finished = Vec::new();
            for id in toplevel_of {
                for (name, path) in outputs {
                    sqlx::query("update BuildOutputs set path = $3 where build = $1 and name = $2")
                        .bind(id)
                        .bind(name)
                        .bind(path)
                        .execute(&mut *tx)
                        .await?;
                }
                if finish_build(&mut tx, *id, results, start, stop, *id != build).await? {
                    finished.push(*id);
                }
            }
            notify(
                &mut tx,
                "step_finished",
                &format!("{build}\t{stepnr}\t{}", log.unwrap_or("-")),
            )
            .await?;
            for id in &finished {
                notify_finished(&mut tx, *id, &[]).await?;
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
pub struct Failure {
    pub status: Status,
    /// Kept only for aborted (3) steps, as Hydra does.
    pub error: Option<String>,
    /// The outputs go to `FailedPaths`.
    pub cacheable: bool,
    pub times_built: i32,
    pub non_deterministic: bool,
}

/// A step that failed for good: its row (if it ran) finished, and every
/// build that needs it finished (the step's own builds with its status,
/// the others with 2 when it simply failed), each with a step row that
/// points at `build`. Returns the builds finished.
#[allow(clippy::too_many_arguments)]
pub async fn step_failed(
    pool: &PgPool,
    build: i32,
    stepnr: Option<i32>,
    drv_path: &str,
    machine: &str,
    outputs: &BTreeMap<String, String>,
    toplevel_of: &BTreeSet<i32>,
    dependents: &BTreeSet<i32>,
    failure: &Failure,
    start: i32,
    stop: i32,
    log: Option<&str>,
) -> Result<Vec<i32>, QueueError> {
    let mut ids: Vec<i32> = dependents.iter().copied().collect();
    // The build the step ran for has its row; without one (the step never
    // ran, or a later round for builds linked meanwhile) it is among the
    // dependents when it needs the step.
    if stepnr.is_some() {
        ids.push(build);
    }
    ids.sort_unstable();
    ids.dedup();
    let error = if failure.status == Status::Aborted || failure.status == Status::Unsupported {
        failure.error.clone()
    } else {
        None
    };
    let finished = transaction(pool, |mut tx: Tx| {
        let (ids, error) = (&ids, &error);
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            if let Some(stepnr) = stepnr {
                sqlx::query(
                    "update BuildSteps set busy = $8, status = $3, errorMsg = $4, stopTime = $5, timesBuilt = $6, \
                     isNonDeterministic = $7 where build = $1 and stepnr = $2",
                )
                .bind(build)
                .bind(stepnr)
                .bind(failure.status)
                .bind(error)
                .bind(stop)
                .bind(failure.times_built)
                .bind(failure.non_deterministic)
                .bind(Busy::NotRunning)
                .execute(&mut *tx)
                .await?;
                notify(
                    &mut tx,
                    "step_finished",
                    &format!("{build}\t{stepnr}\t{}", log.unwrap_or("-")),
                )
                .await?;
            }
            // Cached failures count as plain failures for builds.
            let base = if failure.status == Status::CachedFailure {
                Status::Failed
            } else {
                failure.status
            };
            let mut finished = Vec::new();
            for id in ids {
                let is_toplevel = toplevel_of.contains(id);
                let has_row = *id == build && stepnr.is_some();
                if !(has_row || failure.status == Status::CachedFailure && is_toplevel) {
                    insert_step(
                        &mut tx,
                        *id,
                        0,
                        drv_path,
                        machine,
                        None,
                        outputs,
                        Busy::NotRunning,
                        Some(failure.status),
                        error.as_deref(),
                        start,
                        Some(stop),
                        (*id != build).then_some(build),
                    )
                    .await?;
                }
                let build_status = if !is_toplevel && base == Status::Failed {
                    Status::DependencyFailed
                } else {
                    base
                };
                let done = sqlx::query(
                    "update Builds set finished = 1, buildStatus = $2, isCachedBuild = $3, startTime = $4, \
                     stopTime = $5, notificationPendingSince = $5 where id = $1 and finished = 0",
                )
                .bind(id)
                .bind(build_status)
                .bind(i32::from(failure.status == Status::CachedFailure))
                .bind(start)
                .bind(stop)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() > 0 {
                    finished.push(*id);
                }
            }
            if failure.cacheable {
                let paths: Vec<&str> = outputs.values().filter(|p| !p.is_empty()).map(String::as_str).collect();
                sqlx::query("insert into FailedPaths (path) select unnest($1::text[]) on conflict do nothing")
                    .bind(&paths)
                    .execute(&mut *tx)
                    .await?;
            }
            if !finished.is_empty() {
                let first = if finished.contains(&build) { build } else { finished[0] };
                let others: Vec<i32> = finished.iter().copied().filter(|id| *id != first).collect();
                notify_finished(&mut tx, first, &others).await?;
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
pub async fn close_abandoned_step(pool: &PgPool, build: i32, stepnr: i32, why: &str) {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        let closed = sqlx::query(
            "update BuildSteps set busy = $6, status = $3, errorMsg = $4, stopTime = $5 \
             where build = $1 and stepnr = $2 and busy <> $6",
        )
        .bind(build)
        .bind(stepnr)
        .bind(Status::Aborted)
        .bind(why)
        .bind(now())
        .bind(Busy::NotRunning)
        .execute(pool)
        .await;
        match closed {
            Ok(_) => {
                tracing::info!(
                    build,
                    stepnr,
                    "closed a step whose result could not be recorded"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(build, stepnr, error = %e, "cannot close the step yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// A step that will be tried again: its row finished with `status`.
pub async fn step_will_retry(
    pool: &PgPool,
    build: i32,
    stepnr: i32,
    status: Status,
    error: &str,
    stop: i32,
    log: Option<&str>,
) -> Result<(), QueueError> {
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            sqlx::query(
                "update BuildSteps set busy = $6, status = $3, errorMsg = $4, stopTime = $5 where build = $1 and stepnr = $2",
            )
            .bind(build)
            .bind(stepnr)
            .bind(status)
            .bind(error)
            .bind(stop)
            .bind(Busy::NotRunning)
            .execute(&mut *tx)
            .await?;
            notify(&mut tx, "step_finished", &format!("{build}\t{stepnr}\t{}", log.unwrap_or("-"))).await?;
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_finished_payloads_stay_under_the_limit() {
        assert_eq!(build_finished_payloads(5, &[]), ["5"]);
        assert_eq!(build_finished_payloads(5, &[6, 7]), ["5\t6\t7"]);
        let others: Vec<i32> = (1_000_000..1_003_000).collect();
        let payloads = build_finished_payloads(42, &others);
        assert!(payloads.len() > 1);
        let mut seen = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000);
            let mut ids = p.split('\t');
            assert_eq!(ids.next(), Some("42"));
            seen.extend(ids.map(|i| i.parse::<i32>().unwrap_or(0)));
        }
        assert_eq!(seen, others);
    }
}
