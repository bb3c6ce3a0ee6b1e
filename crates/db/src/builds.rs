//! `Builds` and `BuildOutputs`: actions as Hydra's web interface performs
//! them (the queue runner reacts through the triggers' NOTIFYs), and the
//! queue runner's finishing of builds.

use sqlx::{PgConnection, PgPool};

use crate::DbError;
use crate::ids::{BuildId, EvalId, JobsetId};
use crate::tx::{Tx, lock_builds, transaction};

/// Cancels unfinished builds (status 4); returns how many.
pub async fn cancel_builds(pool: &PgPool, ids: &[BuildId]) -> Result<u64, DbError> {
    Ok(cancel_builds_because(pool, ids, None).await?.len() as u64)
}

/// Why the system (not a person) cancelled a build, kept in
/// `BuildCancellations` and shown on the build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// A newer evaluation of its jobset no longer wants it (`None`: the
    /// jobset's new head waits for an approval).
    Superseded(Option<EvalId>),
    /// Its pull request was closed.
    Closed,
}

impl CancelReason {
    fn columns(self) -> (&'static str, Option<EvalId>) {
        match self {
            CancelReason::Superseded(eval) => ("superseded", eval),
            CancelReason::Closed => ("closed", None),
        }
    }
}

/// Cancels unfinished builds (status 4), recording `reason` when given;
/// returns those cancelled now.
pub async fn cancel_builds_because(
    pool: &PgPool,
    ids: &[BuildId],
    reason: Option<CancelReason>,
) -> Result<Vec<BuildId>, DbError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            let now = crate::now();
            let done: Vec<BuildId> = sqlx::query_scalar(
                "update Builds set finished = 1, buildStatus = $3, isCachedBuild = 0, \
                 startTime = coalesce(startTime, $2), stopTime = $2 where id = any($1) and finished = 0 \
                 returning id",
            )
            .bind(ids)
            .bind(now)
            .bind(crate::status::BuildStatus::Cancelled)
            .fetch_all(&mut *tx)
            .await?;
            if let Some(reason) = reason {
                let (text, eval) = reason.columns();
                sqlx::query(
                    "insert into BuildCancellations (build_id, reason, eval_id, at) \
                     select unnest($1::integer[]), $2, $3, $4 \
                     on conflict (build_id) do update set reason = excluded.reason, \
                       eval_id = excluded.eval_id, at = excluded.at",
                )
                .bind(&done)
                .bind(text)
                .bind(eval)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Ok::<_, DbError>(done)
        })
    })
    .await
}

/// Why build `id` was cancelled by the system: (`superseded` or `closed`,
/// the superseding evaluation).
pub async fn cancellation(
    pool: &PgPool,
    id: BuildId,
) -> Result<Option<(String, Option<EvalId>)>, sqlx::Error> {
    sqlx::query_as("select reason, eval_id from BuildCancellations where build_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Queues finished builds again and forgets that their outputs failed
/// (`FailedPaths`), so they are really built; returns how many.
pub async fn restart_builds(pool: &PgPool, ids: &[BuildId]) -> Result<u64, DbError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            let done = sqlx::query(
                "update Builds set finished = 0, isCachedBuild = 0 where id = any($1) and finished = 1",
            )
            .bind(ids)
            .execute(&mut *tx)
            .await?;
            sqlx::query("delete from BuildCancellations where build_id = any($1)")
                .bind(ids)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "delete from FailedPaths where path in (select path from BuildOutputs where build = any($1))",
            )
            .bind(ids)
            .execute(&mut *tx)
            .await?;
            Ok::<_, DbError>(done.rows_affected())
        })
    })
    .await
}

/// Raises (or lowers) builds' global priority; the queue reorders at once.
pub async fn bump_builds(pool: &PgPool, ids: &[BuildId], priority: i32) -> Result<u64, DbError> {
    let done =
        sqlx::query("update Builds set globalPriority = $2 where id = any($1) and finished = 0")
            .bind(ids)
            .bind(priority)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

/// What Hydra's pages call a build status (`None`: still queued).
pub fn status_name(status: Option<i32>) -> &'static str {
    match status {
        None => "queued",
        Some(code) => {
            crate::status::BuildStatus::from_code(code).map_or("failed", |s| s.describe())
        }
    }
}

/// A finished build, as one log line tells it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FinishedBuild {
    pub id: BuildId,
    pub project: String,
    pub jobset: String,
    pub job: String,
    #[sqlx(rename = "buildstatus")]
    pub status: Option<i32>,
    /// Seconds from start to stop.
    pub duration: Option<i32>,
    #[sqlx(rename = "iscachedbuild")]
    pub cached: Option<i32>,
}

/// The builds among `ids` that are finished.
pub async fn finished(pool: &PgPool, ids: &[BuildId]) -> Result<Vec<FinishedBuild>, sqlx::Error> {
    sqlx::query_as(
        "select b.id, j.project, j.name as jobset, b.job, b.buildStatus, \
         b.stopTime - b.startTime as duration, b.isCachedBuild \
         from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.id = any($1) and b.finished = 1 order by b.id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A choice of statuses.
#[derive(Clone, Copy, Debug)]
pub enum Statuses<'a> {
    AnyOf(&'a [crate::status::BuildStatus]),
    NoneOf(&'a [crate::status::BuildStatus]),
}

/// The finished builds of evaluation `eval` whose status is chosen by
/// `which`, in id order.
pub async fn finished_in_eval(
    pool: &PgPool,
    eval: EvalId,
    which: Statuses<'_>,
) -> Result<Vec<BuildId>, sqlx::Error> {
    let (statuses, wanted) = match which {
        Statuses::AnyOf(s) => (s, true),
        Statuses::NoneOf(s) => (s, false),
    };
    let codes: Vec<i32> = statuses.iter().map(|s| s.code()).collect();
    sqlx::query_scalar(
        "select b.id from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = $1 and b.finished = 1 and (b.buildStatus = any($2)) = $3 order by b.id",
    )
    .bind(eval)
    .bind(&codes)
    .bind(wanted)
    .fetch_all(pool)
    .await
}

/// How a build ends: the columns every finishing update sets.
#[derive(Clone, Copy, Debug)]
pub struct Ending<'a> {
    pub status: crate::status::BuildStatus,
    /// Its outputs were there already (`isCachedBuild`).
    pub cached: bool,
    pub start: i32,
    pub stop: i32,
    /// Output sizes and release name, for builds that produced outputs.
    pub outputs: Option<OutputFacts<'a>>,
}

/// What a build's outputs add to its row.
#[derive(Clone, Copy, Debug)]
pub struct OutputFacts<'a> {
    pub size: Option<i64>,
    pub closure_size: Option<i64>,
    pub release_name: Option<&'a str>,
}

/// Finishes build `id` as `ending` says (and marks its notification
/// pending); false if it was finished already.
pub async fn finish(
    conn: &mut PgConnection,
    id: BuildId,
    ending: &Ending<'_>,
) -> Result<bool, sqlx::Error> {
    let with_outputs = ending.outputs.is_some();
    let facts = ending.outputs.unwrap_or(OutputFacts {
        size: None,
        closure_size: None,
        release_name: None,
    });
    let done = sqlx::query(
        "update Builds set finished = 1, buildStatus = $2, isCachedBuild = $3, startTime = $4, stopTime = $5, \
         notificationPendingSince = $5, \
         size = case when $6 then $7 else size end, \
         closureSize = case when $6 then $8 else closureSize end, \
         releaseName = case when $6 then $9 else releaseName end \
         where id = $1 and finished = 0",
    )
    .bind(id)
    .bind(ending.status)
    .bind(i32::from(ending.cached))
    .bind(ending.start)
    .bind(ending.stop)
    .bind(with_outputs)
    .bind(facts.size)
    .bind(facts.closure_size)
    .bind(facts.release_name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether build `id` is finished.
pub async fn is_finished(conn: &mut PgConnection, id: BuildId) -> Result<bool, sqlx::Error> {
    let finished: i32 = sqlx::query_scalar("select finished from Builds where id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(finished != 0)
}

/// Build `id`'s outputs, name and path (none when not known), by name.
pub async fn outputs(
    pool: &PgPool,
    id: BuildId,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as("select name, path from BuildOutputs where build = $1 order by name")
        .bind(id)
        .fetch_all(pool)
        .await
}

/// Records the paths of build `id`'s outputs.
pub async fn set_output_paths(
    conn: &mut PgConnection,
    id: BuildId,
    outputs: &std::collections::BTreeMap<String, String>,
) -> Result<(), sqlx::Error> {
    for (name, path) in outputs {
        sqlx::query("update BuildOutputs set path = $3 where build = $1 and name = $2")
            .bind(id)
            .bind(name)
            .bind(path)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A finished build whose outputs another build can reuse.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct EarlierSuccess {
    pub id: BuildId,
    #[sqlx(rename = "buildstatus", try_from = "i32")]
    pub status: crate::status::BuildStatus,
    pub size: Option<i64>,
    #[sqlx(rename = "closuresize")]
    pub closure_size: Option<i64>,
    #[sqlx(rename = "releasename")]
    pub release_name: Option<String>,
}

/// The latest build other than `not` that succeeded (possibly with a
/// failed output) and has output `path`.
pub async fn earlier_success(
    pool: &PgPool,
    path: &str,
    not: BuildId,
) -> Result<Option<EarlierSuccess>, sqlx::Error> {
    use crate::status::BuildStatus;
    let codes = [
        BuildStatus::Succeeded.code(),
        BuildStatus::FailedWithOutput.code(),
    ];
    sqlx::query_as(
        "select b.id, b.buildStatus, b.size, b.closureSize, b.releaseName from Builds b \
         join BuildOutputs o on o.build = b.id where o.path = $1 and b.id <> $2 and b.finished = 1 \
         and b.buildStatus = any($3) order by b.id desc limit 1",
    )
    .bind(path)
    .bind(not)
    .bind(&codes[..])
    .fetch_optional(pool)
    .await
}

/// An unfinished build as the queue runner loads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct QueuedBuild {
    pub id: BuildId,
    pub jobset_id: JobsetId,
    pub project: String,
    pub jobset: String,
    pub job: String,
    #[sqlx(rename = "drvpath")]
    pub drv_path: String,
    #[sqlx(rename = "maxsilent")]
    pub max_silent: Option<i32>,
    pub timeout: Option<i32>,
    pub timestamp: i32,
    #[sqlx(rename = "globalpriority")]
    pub global_priority: i32,
    pub priority: i32,
}

/// The unfinished builds (only `only` if given), most urgent first.
pub async fn queued(pool: &PgPool, only: Option<BuildId>) -> Result<Vec<QueuedBuild>, sqlx::Error> {
    sqlx::query_as(
        "select b.id, b.jobset_id, j.project, j.name as jobset, b.job, b.drvPath, b.maxsilent, b.timeout, \
         b.timestamp, b.globalPriority, b.priority from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 0 and ($1::int is null or b.id = $1) order by b.globalPriority desc, b.id",
    )
    .bind(only)
    .fetch_all(pool)
    .await
}

/// Each unfinished build's id and global priority.
pub async fn queued_priorities(pool: &PgPool) -> Result<Vec<(BuildId, i32)>, sqlx::Error> {
    sqlx::query_as("select id, globalPriority from Builds where finished = 0")
        .fetch_all(pool)
        .await
}

/// Whether build `id` exists and, if finished, how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Queued,
    Finished(crate::status::BuildStatus),
}

/// What the menu's "Queue (R/Q)" counts: builds with a running step, and
/// unfinished builds.
pub async fn queue_counts(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select (select count(distinct build) from BuildSteps where busy <> $1), \
                (select count(*) from Builds where finished = 0)",
    )
    .bind(crate::status::Busy::NotRunning)
    .fetch_one(pool)
    .await
}

/// Build `id`'s progress; `None` when there is no such build. A finished
/// build with a code this version does not know counts as failed.
pub async fn progress(pool: &PgPool, id: BuildId) -> Result<Option<Progress>, sqlx::Error> {
    let row: Option<(i32, Option<i32>)> =
        sqlx::query_as("select finished, buildStatus from Builds where id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(finished, status)| {
        if finished == 0 {
            Progress::Queued
        } else {
            Progress::Finished(
                status
                    .and_then(crate::status::BuildStatus::from_code)
                    .unwrap_or(crate::status::BuildStatus::Failed),
            )
        }
    }))
}

/// A build an evaluation adds.
#[derive(Clone, Copy, Debug)]
pub struct NewBuild<'a> {
    pub job: &'a str,
    pub nix_name: &'a str,
    pub description: Option<&'a str>,
    pub drv_path: &'a str,
    pub system: &'a str,
    pub license: Option<&'a str>,
    pub homepage: Option<&'a str>,
    pub maintainers: Option<&'a str>,
    pub max_silent: Option<i32>,
    pub timeout: Option<i32>,
    pub is_channel: bool,
    pub priority: i32,
    /// Output name to path (none for outputs without a fixed path).
    pub outputs: &'a std::collections::BTreeMap<String, Option<String>>,
}

/// Takes `n` build ids from the sequence.
pub async fn reserve_ids(conn: &mut PgConnection, n: usize) -> Result<Vec<BuildId>, sqlx::Error> {
    sqlx::query_scalar("select nextval('builds_id_seq')::int from generate_series(1, $1)")
        .bind(i32::try_from(n).unwrap_or(i32::MAX))
        .fetch_all(conn)
        .await
}

/// Adds `builds` (queued, current) to jobset `jobset_id` with the ids
/// `ids`, in order, and their outputs.
pub async fn insert_queued(
    conn: &mut PgConnection,
    jobset_id: JobsetId,
    now: i32,
    builds: &[NewBuild<'_>],
    ids: &[BuildId],
) -> Result<(), sqlx::Error> {
    fn col<'a, T>(builds: &'a [NewBuild<'a>], f: impl Fn(&NewBuild<'a>) -> T) -> Vec<T> {
        builds.iter().map(f).collect()
    }
    sqlx::query(
        "insert into Builds (id, finished, timestamp, jobset_id, job, nixName, description, drvPath, system, license, \
         homepage, maintainers, maxsilent, timeout, isChannel, isCurrent, priority, globalPriority) \
         select id, 0, $2, $3, job, nix, descr, drv, sys, lic, home, maint, silent, tmo, chan, 1, prio, 0 \
         from unnest($1::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::text[], $12::int[], $13::int[], $14::int[], $15::int[]) \
              as t(id, job, nix, descr, drv, sys, lic, home, maint, silent, tmo, chan, prio)",
    )
    .bind(ids)
    .bind(now)
    .bind(jobset_id)
    .bind(col(builds, |b| b.job))
    .bind(col(builds, |b| b.nix_name))
    .bind(col(builds, |b| b.description))
    .bind(col(builds, |b| b.drv_path))
    .bind(col(builds, |b| b.system))
    .bind(col(builds, |b| b.license))
    .bind(col(builds, |b| b.homepage))
    .bind(col(builds, |b| b.maintainers))
    .bind(col(builds, |b| b.max_silent))
    .bind(col(builds, |b| b.timeout))
    .bind(col(builds, |b| i32::from(b.is_channel)))
    .bind(col(builds, |b| b.priority))
    .execute(&mut *conn)
    .await?;
    let mut out_builds = Vec::new();
    let mut out_names = Vec::new();
    let mut out_paths: Vec<Option<&str>> = Vec::new();
    for (build, id) in builds.iter().zip(ids) {
        for (name, path) in build.outputs {
            out_builds.push(*id);
            out_names.push(name.as_str());
            out_paths.push(path.as_deref());
        }
    }
    sqlx::query("insert into BuildOutputs (build, name, path) select * from unnest($1::int[], $2::text[], $3::text[])")
        .bind(&out_builds)
        .bind(&out_names)
        .bind(&out_paths)
        .execute(conn)
        .await?;
    Ok(())
}

/// Points builds at new derivations and queues them again: (build, drvPath).
pub async fn repoint(
    conn: &mut PgConnection,
    ids: &[BuildId],
    drvs: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update Builds b set drvPath = t.drv, finished = 0, buildStatus = null, isCachedBuild = null \
         from unnest($1::int[], $2::text[]) as t(id, drv) where b.id = t.id",
    )
    .bind(ids)
    .bind(drvs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets `isCurrent` on builds `ids` (true: 1, false: 0).
pub async fn set_current(
    conn: &mut PgConnection,
    ids: &[BuildId],
    current: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update Builds set isCurrent = $2 where id = any($1) and isCurrent is distinct from $2",
    )
    .bind(ids)
    .bind(i32::from(current))
    .execute(conn)
    .await?;
    Ok(())
}

/// The current builds of jobset `jobset_id` that are not among `ids`.
pub async fn current_except(
    pool: &PgPool,
    jobset_id: JobsetId,
    ids: &[BuildId],
) -> Result<Vec<BuildId>, sqlx::Error> {
    sqlx::query_scalar("select id from Builds where jobset_id = $1 and isCurrent = 1 and not (id = any($2)) order by id")
        .bind(jobset_id)
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// A successful build as a `build` input uses it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InputBuild {
    pub id: BuildId,
    #[sqlx(rename = "nixname")]
    pub nix_name: Option<String>,
    #[sqlx(rename = "releasename")]
    pub release_name: Option<String>,
    #[sqlx(rename = "drvpath")]
    pub drv_path: String,
    pub system: String,
}

/// Build `id`, if it succeeded.
pub async fn succeeded(pool: &PgPool, id: BuildId) -> Result<Option<InputBuild>, sqlx::Error> {
    sqlx::query_as(
        "select id, nixName, releaseName, drvPath, system from Builds \
         where id = $1 and finished = 1 and buildStatus = $2",
    )
    .bind(id)
    .bind(crate::status::BuildStatus::Succeeded)
    .fetch_optional(pool)
    .await
}

/// Which job's builds, and the inputs (name, value or revision) their
/// evaluation must have had.
#[derive(Clone, Copy, Debug)]
pub struct JobQuery<'a> {
    pub project: &'a str,
    pub jobset: &'a str,
    pub job: &'a str,
    pub inputs: &'a [(String, String)],
}

/// The latest (up to 100) successful builds of a job, newest first.
pub async fn latest_succeeded(
    pool: &PgPool,
    query: &JobQuery<'_>,
) -> Result<Vec<InputBuild>, sqlx::Error> {
    let names: Vec<&str> = query.inputs.iter().map(|(k, _)| k.as_str()).collect();
    let values: Vec<&str> = query.inputs.iter().map(|(_, v)| v.as_str()).collect();
    sqlx::query_as(
        "select b.id, b.nixName, b.releaseName, b.drvPath, b.system from Builds b \
         join Jobsets j on j.id = b.jobset_id \
         where j.project = $1 and j.name = $2 and b.job = $3 and b.finished = 1 and b.buildStatus = $6 \
         and not exists (select 1 from unnest($4::text[], $5::text[]) as a(name, value) where not exists ( \
             select 1 from JobsetEvalMembers m join JobsetEvalInputs i on i.eval = m.eval \
             where m.build = b.id and i.name = a.name and (i.value = a.value or i.revision = a.value))) \
         order by b.id desc limit 100",
    )
    .bind(query.project)
    .bind(query.jobset)
    .bind(query.job)
    .bind(&names)
    .bind(&values)
    .bind(crate::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await
}

/// Build `id`'s place: whether it is finished and its project.
pub async fn whereabouts(
    pool: &PgPool,
    id: BuildId,
) -> Result<Option<(bool, String)>, sqlx::Error> {
    let row: Option<(i32, String)> = sqlx::query_as(
        "select b.finished, j.project from Builds b join Jobsets j on j.id = b.jobset_id where b.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(finished, project)| (finished == 1, project)))
}

/// Keeps build `id`'s outputs from garbage collection, or stops keeping
/// them.
pub async fn set_keep(pool: &PgPool, id: BuildId, keep: bool) -> Result<(), sqlx::Error> {
    sqlx::query("update Builds set keep = $2 where id = $1")
        .bind(id)
        .bind(i32::from(keep))
        .execute(pool)
        .await?;
    Ok(())
}

/// The queued builds that are not in the latest evaluation (with new
/// builds) of their jobset.
pub async fn queued_not_current(pool: &PgPool) -> Result<Vec<BuildId>, sqlx::Error> {
    sqlx::query_scalar(
        "select b.id from Builds b where b.finished = 0 and not exists ( \
           select 1 from JobsetEvalMembers m where m.build = b.id and m.eval = ( \
             select max(e.id) from JobsetEvals e where e.jobset_id = b.jobset_id and e.hasNewBuilds = 1)) \
         order by b.id",
    )
    .fetch_all(pool)
    .await
}

/// Build `id`'s derivation.
pub async fn drv_path(pool: &PgPool, id: BuildId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select drvPath from Builds where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The path of build `id`'s output `name` (`Some(None)`: the output has
/// no path yet; `None`: there is no such output).
pub async fn output_path(
    pool: &PgPool,
    id: BuildId,
    name: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("select path from BuildOutputs where build = $1 and name = $2")
        .bind(id)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// An output path of a build or a step that starts with `prefix`.
pub async fn known_path_with_prefix(
    pool: &PgPool,
    prefix: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select path from BuildOutputs where path like $1 || '%' \
         union all select path from BuildStepOutputs where path like $1 || '%' limit 1",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await
}
