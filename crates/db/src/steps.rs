//! `BuildSteps` and `BuildStepOutputs`: the queue runner's record of what
//! it built or copied for each build, written as steps start, move and end.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};

use crate::ids::{BuildId, JobsetId};
use crate::notify;
use crate::status::{Busy, StepStatus};

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[repr(i32)]
pub enum StepKind {
    Build = 0,
    /// The outputs were copied from a substituter.
    Substitution = 1,
}

/// A step row to add.
#[derive(Clone, Copy, Debug)]
pub struct NewStep<'a> {
    pub build: BuildId,
    pub kind: StepKind,
    pub drv_path: &'a str,
    pub machine: &'a str,
    pub system: Option<&'a str>,
    /// Output name to path (empty when not known yet).
    pub outputs: &'a BTreeMap<String, String>,
    pub busy: Busy,
    pub status: Option<StepStatus>,
    pub error: Option<&'a str>,
    pub start: i32,
    pub stop: Option<i32>,
    /// The build whose step really failed, for a failure copied to others.
    pub propagated_from: Option<BuildId>,
}

/// Adds a step row (with its outputs) and returns its number; a busy row
/// is announced with `step_started`.
pub async fn insert(conn: &mut PgConnection, step: &NewStep<'_>) -> Result<i32, sqlx::Error> {
    let stepnr: i32 = sqlx::query_scalar(
        "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, errorMsg, startTime, stopTime, \
         machine, system, propagatedFrom) \
         select $1, coalesce(max(stepnr), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
         from BuildSteps where build = $1 returning stepnr",
    )
    .bind(step.build)
    .bind(step.kind)
    .bind(step.drv_path)
    .bind(step.busy)
    .bind(step.status)
    .bind(step.error)
    .bind(step.start)
    .bind(step.stop)
    .bind(step.machine)
    .bind(step.system)
    .bind(step.propagated_from)
    .fetch_one(&mut *conn)
    .await?;
    let names: Vec<&str> = step.outputs.keys().map(String::as_str).collect();
    let paths: Vec<Option<&str>> = step
        .outputs
        .values()
        .map(|p| (!p.is_empty()).then_some(p.as_str()))
        .collect();
    sqlx::query(
        "insert into BuildStepOutputs (build, stepnr, name, path) \
         select $1, $2, n, p from unnest($3::text[], $4::text[]) as t(n, p)",
    )
    .bind(step.build)
    .bind(stepnr)
    .bind(&names)
    .bind(&paths)
    .execute(&mut *conn)
    .await?;
    if step.busy != Busy::NotRunning {
        notify::send(conn, "step_started", &format!("{}\t{stepnr}", step.build)).await?;
    }
    Ok(stepnr)
}

/// Marks steps left busy by an earlier run as aborted at `now`.
pub async fn abort_busy(pool: &PgPool, now: i32) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update BuildSteps set busy = $2, status = $3, stopTime = coalesce(stopTime, $1) where busy <> $2",
    )
    .bind(now)
    .bind(Busy::NotRunning)
    .bind(StepStatus::Aborted)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Moves a running step to `busy`.
pub async fn set_busy(
    pool: &PgPool,
    build: BuildId,
    stepnr: i32,
    busy: Busy,
) -> Result<(), sqlx::Error> {
    sqlx::query("update BuildSteps set busy = $3 where build = $1 and stepnr = $2 and busy <> $4")
        .bind(build)
        .bind(stepnr)
        .bind(busy)
        .bind(Busy::NotRunning)
        .execute(pool)
        .await?;
    Ok(())
}

/// How a step row ends. `None` fields keep what the row has.
#[derive(Clone, Copy, Debug)]
pub struct StepEnd<'a> {
    pub status: StepStatus,
    pub error: Option<&'a str>,
    pub stop: i32,
    pub times_built: Option<i32>,
    pub non_deterministic: Option<bool>,
    pub overhead: Option<i32>,
}

/// Ends a step row (no longer busy).
pub async fn end(
    conn: &mut PgConnection,
    build: BuildId,
    stepnr: i32,
    end: &StepEnd<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update BuildSteps set busy = $3, status = $4, errorMsg = $5, stopTime = $6, \
         timesBuilt = coalesce($7, timesBuilt), isNonDeterministic = coalesce($8, isNonDeterministic), \
         overhead = coalesce($9, overhead) where build = $1 and stepnr = $2",
    )
    .bind(build)
    .bind(stepnr)
    .bind(Busy::NotRunning)
    .bind(end.status)
    .bind(end.error)
    .bind(end.stop)
    .bind(end.times_built)
    .bind(end.non_deterministic)
    .bind(end.overhead)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a step row that is still busy as aborted with `why` at `now`:
/// for a step whose result could not be written.
pub async fn abort_if_busy(
    pool: &PgPool,
    build: BuildId,
    stepnr: i32,
    why: &str,
    now: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update BuildSteps set busy = $6, status = $3, errorMsg = $4, stopTime = $5 \
         where build = $1 and stepnr = $2 and busy <> $6",
    )
    .bind(build)
    .bind(stepnr)
    .bind(StepStatus::Aborted)
    .bind(why)
    .bind(now)
    .bind(Busy::NotRunning)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the paths a step's outputs got.
pub async fn set_output_paths(
    conn: &mut PgConnection,
    build: BuildId,
    stepnr: i32,
    outputs: &BTreeMap<String, String>,
) -> Result<(), sqlx::Error> {
    for (name, path) in outputs {
        sqlx::query(
            "update BuildStepOutputs set path = $4 where build = $1 and stepnr = $2 and name = $3",
        )
        .bind(build)
        .bind(stepnr)
        .bind(name)
        .bind(path)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The latest build whose own step of `drv_path` failed in a way that is
/// cached (not a copy of another build's failure).
pub async fn latest_own_failure(
    pool: &PgPool,
    drv_path: &str,
) -> Result<Option<BuildId>, sqlx::Error> {
    let codes: Vec<i32> = crate::status::CACHEABLE_FAILURES
        .iter()
        .map(|s| s.code())
        .collect();
    sqlx::query_scalar(
        "select max(s.build) from BuildSteps s where s.drvPath = $1 and s.status = any($2) \
         and s.propagatedFrom is null",
    )
    .bind(drv_path)
    .bind(codes)
    .fetch_one(pool)
    .await
}

/// Jobset, start and stop time of the finished steps of jobsets `ids`
/// that started after `since`, by start time.
pub async fn recent_times(
    pool: &PgPool,
    ids: &[JobsetId],
    since: i32,
) -> Result<Vec<(JobsetId, i32, i32)>, sqlx::Error> {
    sqlx::query_as(
        "select b.jobset_id, s.startTime, s.stopTime from BuildSteps s join Builds b on b.id = s.build \
         where b.jobset_id = any($1) and s.startTime > $2 and s.stopTime is not null order by s.startTime",
    )
    .bind(ids)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Whether a step of derivation `drv_path` is running now.
pub async fn is_running(pool: &PgPool, drv_path: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from BuildSteps where drvPath = $1 and busy <> $2)")
        .bind(drv_path)
        .bind(Busy::NotRunning)
        .fetch_one(pool)
        .await
}

/// Whether step `stepnr` of build `build` is not running (finished, or
/// gone).
pub async fn is_over(pool: &PgPool, build: BuildId, stepnr: i32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select not exists (select 1 from BuildSteps where build = $1 and stepnr = $2 and busy <> $3)")
        .bind(build)
        .bind(stepnr)
        .bind(Busy::NotRunning)
        .fetch_one(pool)
        .await
}

/// The derivation of step `stepnr` of build `build`.
pub async fn drv_path(
    pool: &PgPool,
    build: BuildId,
    stepnr: i32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select drvPath from BuildSteps where build = $1 and stepnr = $2")
        .bind(build)
        .bind(stepnr)
        .fetch_optional(pool)
        .await
}

/// The derivations other than `except` whose steps produced build
/// `build`'s outputs.
pub async fn producers(
    pool: &PgPool,
    build: BuildId,
    except: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select distinct s.drvPath from BuildStepOutputs o \
         join BuildSteps s on s.build = o.build and s.stepnr = o.stepnr \
         where o.path in (select path from BuildOutputs where build = $1) and s.drvPath <> $2",
    )
    .bind(build)
    .bind(except)
    .fetch_all(pool)
    .await
}
