//! What the build pages read besides the Build object.

use serde_json::Value;
use sqlx::PgPool;

use hydra_db::ids::{BuildId, EvalId};

use crate::error::{ApiError, ApiResult};

/// The constituents of aggregate build `id`, by id.
pub(crate) async fn constituents(pool: &PgPool, id: BuildId) -> ApiResult<Vec<BuildId>> {
    Ok(sqlx::query_scalar(
        "select constituent from AggregateConstituents where aggregate = $1 order by constituent",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

/// Builds that took build `id` as an input: the builds of evaluations
/// with an input fixed to it (and, from databases Hydra wrote long ago,
/// the `BuildInputs` naming it), newest first, at most `limit`: id, input
/// name, system, timestamp, project, jobset and job.
pub(crate) async fn used_by(pool: &PgPool, id: BuildId, limit: i64) -> ApiResult<Vec<Value>> {
    let rows: Vec<(i32, String, String, i32, String, String, String)> = sqlx::query_as(
        "with inputs as materialized (select eval, name from JobsetEvalInputs where dependency = $1) \
         select distinct on (b.id) b.id, u.name, b.system, b.timestamp, j.project, j.name, b.job \
         from (select m.build, i.name from inputs i join JobsetEvalMembers m on m.eval = i.eval \
               union select build, name from BuildInputs where dependency = $1) u \
         join Builds b on b.id = u.build join Jobsets j on j.id = b.jobset_id \
         order by b.id desc, u.name limit $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, input, system, timestamp, project, jobset, job)| {
            serde_json::json!({
                "id": id, "input": input, "system": system, "timestamp": timestamp,
                "project": project, "jobset": jobset, "job": job,
            })
        })
        .collect())
}

/// The evaluations build `id` belongs to, newest first.
pub(crate) async fn evals(pool: &PgPool, id: BuildId) -> ApiResult<Vec<EvalId>> {
    Ok(
        sqlx::query_scalar(
            "select eval from JobsetEvalMembers where build = $1 order by eval desc",
        )
        .bind(id)
        .fetch_all(pool)
        .await?,
    )
}

/// Build `id`'s derivation and main output (`out` first, else the first
/// by name).
pub(crate) async fn drv_and_out(pool: &PgPool, id: BuildId) -> ApiResult<(String, Option<String>)> {
    Ok(sqlx::query_as(
        "select b.drvPath, (select o.path from BuildOutputs o where o.build = b.id \
         order by o.name <> 'out', o.name limit 1) from Builds b where b.id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?)
}

/// Step `nr` of build `id` as Hydra's JSON shows it.
pub(crate) async fn step(pool: &PgPool, id: BuildId, nr: i32) -> ApiResult<Option<Value>> {
    let step: Option<String> = sqlx::query_scalar(
        "select json_build_object('machine', s.machine, 'system', s.system, 'stepnr', s.stepnr, \
         'drvpath', s.drvPath, 'starttime', s.startTime, 'stoptime', s.stopTime, 'busy', s.busy, \
         'status', s.status, 'errormsg', s.errorMsg, 'resolveddrvpath', s.resolvedDrvPath, \
         'build', json_build_object('id', s.build))::text \
         from BuildSteps s where s.build = $1 and s.stepnr = $2",
    )
    .bind(id)
    .bind(nr)
    .fetch_optional(pool)
    .await?;
    step.map(|s| serde_json::from_str(&s).map_err(|e| ApiError::Internal(e.to_string())))
        .transpose()
}

/// A step of a build as its page lists it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct StepRow {
    pub stepnr: i32,
    /// 0 a build, 1 a substitution.
    pub kind: i32,
    pub drv_path: String,
    pub busy: i32,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub start: Option<i32>,
    pub stop: Option<i32>,
    pub machine: String,
    pub propagated_from: Option<i32>,
}

/// Build `id`'s steps, newest first.
pub(crate) async fn steps(pool: &PgPool, id: BuildId) -> ApiResult<Vec<StepRow>> {
    Ok(sqlx::query_as(
        "select stepnr, type as kind, drvPath as drv_path, busy, status, errorMsg as error, \
         startTime as start, stopTime as stop, coalesce(machine, '') as machine, \
         propagatedFrom as propagated_from from BuildSteps where build = $1 order by stepnr desc",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

/// The outputs of step `nr` of build `id`: name and path.
pub(crate) async fn step_outputs(
    pool: &PgPool,
    id: BuildId,
    nr: i32,
) -> ApiResult<Vec<(String, Option<String>)>> {
    Ok(sqlx::query_as(
        "select name, path from BuildStepOutputs where build = $1 and stepnr = $2 order by name",
    )
    .bind(id)
    .bind(nr)
    .fetch_all(pool)
    .await?)
}

/// A build as the "previous builds" of another show it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct Neighbour {
    pub id: BuildId,
    pub stoptime: Option<i32>,
    pub finished: i32,
    pub buildstatus: Option<i32>,
}

/// For build `id`: the last successful build of the same job and system
/// before it, and the first finished build after that one (when it is not
/// `id` itself).
pub(crate) async fn previous(
    pool: &PgPool,
    id: BuildId,
) -> ApiResult<(Option<Neighbour>, Option<Neighbour>)> {
    let success: Option<Neighbour> = sqlx::query_as(
        "select p.id, p.stopTime as stoptime, p.finished, p.buildStatus as buildstatus \
         from Builds b join Builds p on p.jobset_id = b.jobset_id and p.job = b.job and p.system = b.system \
         where b.id = $1 and p.id < b.id and p.finished = 1 and p.buildStatus = $2 \
         order by p.id desc limit 1",
    )
    .bind(id)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_optional(pool)
    .await?;
    let Some(s) = &success else {
        return Ok((None, None));
    };
    let broken: Option<Neighbour> = sqlx::query_as(
        "select p.id, p.stopTime as stoptime, p.finished, p.buildStatus as buildstatus \
         from Builds b join Builds p on p.jobset_id = b.jobset_id and p.job = b.job and p.system = b.system \
         where b.id = $1 and p.id > $2 and p.id < b.id and p.finished = 1 \
         order by p.id limit 1",
    )
    .bind(id)
    .bind(s.id)
    .fetch_optional(pool)
    .await?;
    Ok((success, broken))
}

#[derive(sqlx::FromRow)]
struct ReproRow {
    job: String,
    project: String,
    jobset: String,
    eval: i32,
    flake: Option<String>,
    nixexprinput: Option<String>,
    nixexprpath: Option<String>,
}

/// What build `id` is reproduced from: its job, its first evaluation's
/// expression or flake, and that evaluation's inputs.
pub(crate) async fn reproduction(
    pool: &PgPool,
    id: BuildId,
) -> ApiResult<Option<crate::reproduce::Build>> {
    let row: Option<ReproRow> = sqlx::query_as(
        "select b.job, j.project, j.name as jobset, e.id as eval, e.flake, \
         e.nixExprInput as nixexprinput, e.nixExprPath as nixexprpath \
         from Builds b join Jobsets j on j.id = b.jobset_id \
         join JobsetEvalMembers m on m.build = b.id join JobsetEvals e on e.id = m.eval \
         where b.id = $1 order by e.id limit 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let inputs: Vec<crate::reproduce::Input> = sqlx::query_as(
        "select name, type, uri, revision, value from JobsetEvalInputs \
         where eval = $1 and altNr = 0 order by name",
    )
    .bind(r.eval)
    .fetch_all(pool)
    .await?;
    Ok(Some(crate::reproduce::Build {
        id: id.0,
        full_name: format!("{}:{}:{}", r.project, r.jobset, r.job),
        job: r.job,
        eval: r.eval,
        flake: r.flake.filter(|f| !f.is_empty()),
        nix_expr_input: r.nixexprinput,
        nix_expr_path: r.nixexprpath,
        inputs,
    }))
}

/// What the build page's details add to the Build object.
#[derive(Clone, Debug, Default, serde::Serialize, sqlx::FromRow)]
pub(crate) struct Details {
    pub keep: bool,
    pub cached: bool,
    pub size: Option<i64>,
    pub closure_size: Option<i64>,
    /// The build whose step produced a cached build's first output.
    pub cached_from: Option<i32>,
}

/// Build `id`'s keep flag, sizes, and where a cached build's output came
/// from.
pub(crate) async fn details(pool: &PgPool, id: BuildId) -> ApiResult<Details> {
    Ok(sqlx::query_as(
        "select b.keep <> 0 as keep, coalesce(b.isCachedBuild, 0) <> 0 as cached, b.size, \
         b.closureSize as closure_size, \
         (select s.build from BuildStepOutputs so join BuildSteps s on s.build = so.build and s.stepnr = so.stepnr \
          where so.path = (select o.path from BuildOutputs o where o.build = b.id order by o.name limit 1) \
          and s.status = $2 and s.build <> b.id order by s.build limit 1) as cached_from \
         from Builds b where b.id = $1",
    )
    .bind(id)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_optional(pool)
    .await?
    .unwrap_or_default())
}

/// The last successful step (build, step number) that built or
/// substituted each of `paths`, by path.
pub(crate) async fn steps_of_outputs(
    pool: &PgPool,
    paths: &[String],
) -> ApiResult<std::collections::BTreeMap<String, (i32, i32)>> {
    let rows: Vec<(String, i32, i32)> = sqlx::query_as(
        "select distinct on (o.path) o.path, s.build, s.stepnr from BuildStepOutputs o \
         join BuildSteps s on s.build = o.build and s.stepnr = o.stepnr \
         where o.path = any($1) and s.status = $2 order by o.path, s.build desc, s.stepnr desc",
    )
    .bind(paths)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(p, b, s)| (p, (b, s))).collect())
}

/// For each of `drvs`, the latest step that built it successfully: build
/// and step number.
pub(crate) async fn steps_of(
    pool: &PgPool,
    drvs: &[String],
) -> ApiResult<std::collections::BTreeMap<String, (i32, i32)>> {
    let rows: Vec<(String, i32, i32)> = sqlx::query_as(
        "select distinct on (drvPath) drvPath, build, stepnr from BuildSteps \
         where drvPath = any($1) and status = $2 order by drvPath, build desc, stepnr desc",
    )
    .bind(drvs)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(d, b, s)| (d, (b, s))).collect())
}

/// When each of `builds` that has a prediction is expected to finish,
/// by build id (for the lists of queued builds).
pub(crate) async fn etas(pool: &PgPool, builds: &[BuildId]) -> ApiResult<Value> {
    let latest = hydra_db::etas::latest_of(pool, builds).await?;
    Ok(Value::Object(
        latest
            .into_iter()
            .map(|o| (o.build.to_string(), Value::from(o.eta.finish_at)))
            .collect(),
    ))
}

/// The latest step of each of `drvs` (a running one first), as the
/// dependency graph shows it.
pub(crate) async fn step_facts(
    pool: &PgPool,
    drvs: &[String],
    now: i64,
) -> ApiResult<std::collections::HashMap<String, crate::graph::Fact>> {
    use crate::graph::{Fact, State};
    use hydra_db::status::BuildStatus as S;
    #[derive(sqlx::FromRow)]
    struct Row {
        drvpath: String,
        build: i32,
        stepnr: i32,
        busy: i32,
        status: Option<i32>,
        starttime: Option<i32>,
        stoptime: Option<i32>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select distinct on (drvPath) drvPath, build, stepnr, busy, status, startTime, stopTime \
         from BuildSteps where drvPath = any($1) \
         order by drvPath, (busy <> 0) desc, startTime desc nulls last, build desc, stepnr desc",
    )
    .bind(drvs)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let (busy, start, stop) = (r.busy, r.starttime, r.stoptime);
            let state = if busy != 0 {
                State::Building
            } else {
                match r.status.and_then(S::from_code) {
                    Some(S::Succeeded) => State::Done,
                    Some(S::DependencyFailed) => State::DepFailed,
                    Some(S::Aborted | S::Cancelled | S::TimedOut | S::Unsupported) => {
                        State::Aborted
                    }
                    Some(_) => State::Failed,
                    None => State::Aborted,
                }
            };
            let seconds = match (start, stop, busy != 0) {
                (Some(a), _, true) => Some(now - i64::from(a)),
                (Some(a), Some(b), false) => Some(i64::from(b - a)),
                _ => None,
            };
            (
                r.drvpath,
                Fact {
                    state,
                    step: Some((r.build, r.stepnr)),
                    seconds,
                    end: stop.map(i64::from),
                },
            )
        })
        .collect())
}

/// The notifications about build `id`: its commit statuses (each with
/// where its delivery stands: `sent`, `due`, `retrying` or `dropped`) and
/// the notification tasks being retried or given up.
pub(crate) async fn notifications(pool: &PgPool, id: BuildId) -> ApiResult<Value> {
    let statuses = hydra_db::commit_statuses::of_build(pool, id).await?;
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let delivery = if s.dropped {
                "dropped"
            } else if s.sent {
                "sent"
            } else if s.attempts > 0 {
                "retrying"
            } else {
                "due"
            };
            serde_json::json!({
                "id": s.id,
                "forge": s.forge,
                "url": s.url,
                "context": s.context,
                "state": s.state,
                "delivery": delivery,
                "attempts": s.attempts,
                "sentAt": s.sent_at,
                "nextAttempt": (delivery == "retrying" || delivery == "due").then_some(s.next_attempt),
                "lastError": s.last_error,
            })
        })
        .collect();
    let tasks = hydra_db::task_retries::of_build(pool, id).await?;
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "plugin": t.plugin.strip_prefix("Hydra::Plugin::").unwrap_or(&t.plugin),
                "channel": t.channel,
                "delivery": if t.dropped_at.is_some() { "dropped" } else { "retrying" },
                "attempts": t.attempts,
                "nextAttempt": t.next_attempt,
                "droppedAt": t.dropped_at,
                "lastError": t.last_error,
            })
        })
        .collect();
    Ok(serde_json::json!({ "commitStatuses": statuses, "tasks": tasks }))
}
