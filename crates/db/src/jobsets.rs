//! `Jobsets`: the queue runner's scheduling shares and the evaluator's
//! record of each evaluation attempt.

use sqlx::{PgConnection, PgPool};

use crate::ids::JobsetId;
use crate::status::{JobsetState, JobsetType};

/// The scheduling shares of the jobsets `ids`.
pub async fn scheduling_shares(
    pool: &PgPool,
    ids: &[JobsetId],
) -> Result<Vec<(JobsetId, i32)>, sqlx::Error> {
    sqlx::query_as("select id, schedulingShares from Jobsets where id = any($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// The scheduling shares of every jobset that is not disabled, except
/// `project:jobset` (what that jobset's shares are added to).
pub async fn other_shares(pool: &PgPool, project: &str, jobset: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(sum(schedulingShares), 0)::bigint from Jobsets \
         where enabled <> $1 and not (project = $2 and name = $3)",
    )
    .bind(JobsetState::Disabled)
    .bind(project)
    .bind(jobset)
    .fetch_one(pool)
    .await
}

/// Records a finished evaluation attempt of jobset `id` at `now`: checked,
/// no forced evaluation pending, no fetch error, `error_text` as its
/// evaluation error (empty: none), and a one-shot jobset disabled.
pub async fn record_checked(
    conn: &mut PgConnection,
    id: JobsetId,
    error_text: &str,
    now: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update Jobsets set lastCheckedTime = $2, forceEval = null, fetchErrorMsg = null, errorMsg = $3, \
         errorTime = $2, enabled = case when enabled = $4 then $5 else enabled end where id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(error_text)
    .bind(JobsetState::OneShot)
    .bind(JobsetState::Disabled)
    .execute(conn)
    .await?;
    Ok(())
}

/// A jobset as the evaluator's scheduler sees it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: JobsetId,
    pub project: String,
    pub name: String,
    #[sqlx(rename = "lastcheckedtime")]
    pub last_checked_time: Option<i32>,
    #[sqlx(rename = "triggertime")]
    pub trigger_time: Option<i32>,
    #[sqlx(rename = "checkinterval")]
    pub check_interval: i32,
    #[sqlx(try_from = "i32")]
    pub enabled: JobsetState,
    /// For one-at-a-time jobsets: whether the latest evaluation still has
    /// unfinished builds.
    pub busy: bool,
}

/// Enabled jobsets of enabled projects.
pub async fn schedulable(pool: &PgPool) -> Result<Vec<ScheduleRow>, sqlx::Error> {
    sqlx::query_as(
        "select j.id, j.project, j.name, j.lastCheckedTime, j.triggerTime, j.checkInterval, j.enabled, \
         (j.enabled = $1 and exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
            where m.eval = (select max(e.id) from JobsetEvals e where e.jobset_id = j.id) and b.finished = 0)) as busy \
         from Jobsets j join Projects p on p.name = j.project where j.enabled <> $2 and p.enabled <> 0",
    )
    .bind(JobsetState::OneAtATime)
    .bind(JobsetState::Disabled)
    .fetch_all(pool)
    .await
}

/// Clears every `startTime` (evaluations that were running when the
/// evaluator stopped); returns how many there were.
pub async fn clear_start_times(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("update Jobsets set startTime = null where startTime is not null")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Marks an evaluation of jobset `id` as running since `now` (`None`:
/// as not running).
pub async fn set_start_time(
    pool: &PgPool,
    id: JobsetId,
    now: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query("update Jobsets set startTime = $2 where id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records the end of an evaluation of jobset `id`: no longer running,
/// and a `triggerTime` set before it started is cleared (one set during
/// it stays, so it causes another evaluation).
pub async fn evaluation_ended(pool: &PgPool, id: JobsetId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update Jobsets set triggerTime = case when triggerTime <= startTime then null else triggerTime end, \
         startTime = null where id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that jobset `id`'s evaluation failed as a whole with `text`.
pub async fn record_eval_error(
    pool: &PgPool,
    id: JobsetId,
    text: &str,
    now: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update Jobsets set errorMsg = $2, errorTime = $3, lastCheckedTime = $3, fetchErrorMsg = null \
         where id = $1",
    )
    .bind(id)
    .bind(text)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that fetching jobset `id`'s inputs failed with `text`.
pub async fn record_fetch_error(
    pool: &PgPool,
    id: JobsetId,
    text: &str,
    now: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("update Jobsets set fetchErrorMsg = $2, lastCheckedTime = $3 where id = $1")
        .bind(id)
        .bind(text)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records that jobset `id` was checked at `now` and nothing needed
/// evaluating.
pub async fn record_unchanged(pool: &PgPool, id: JobsetId, now: i32) -> Result<(), sqlx::Error> {
    sqlx::query("update Jobsets set lastCheckedTime = $2, fetchErrorMsg = null where id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// The ids of the jobsets of `project` (only `jobset`, if given).
pub async fn ids_in(
    pool: &PgPool,
    project: &str,
    jobset: Option<&str>,
) -> Result<Vec<JobsetId>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from Jobsets where project = $1 and ($2::text is null or name = $2) order by id",
    )
    .bind(project)
    .bind(jobset)
    .fetch_all(pool)
    .await
}

/// The id of jobset `project:name`.
pub async fn id_of(
    pool: &PgPool,
    project: &str,
    name: &str,
) -> Result<Option<JobsetId>, sqlx::Error> {
    sqlx::query_scalar("select id from Jobsets where project = $1 and name = $2")
        .bind(project)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// A jobset's settable fields, as its form gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobsetRow {
    pub name: String,
    pub kind: JobsetType,
    pub description: String,
    pub nix_expr_input: Option<String>,
    pub nix_expr_path: Option<String>,
    pub flake: Option<String>,
    pub enabled: JobsetState,
    pub enable_email: bool,
    pub dynamic_run_command: bool,
    pub email_override: String,
    pub hidden: bool,
    pub keepnr: i32,
    pub check_interval: i32,
    pub scheduling_shares: i32,
    pub inputs: Vec<InputRow>,
}

/// A jobset input with its one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRow {
    pub name: String,
    pub kind: String,
    pub value: Option<String>,
    pub email_responsible: bool,
}

/// Whether project `project` has a jobset `name`.
pub async fn exists(
    conn: &mut PgConnection,
    project: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from Jobsets where project = $1 and name = $2)")
        .bind(project)
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Adds jobset `j` to `project` (`trigger`: evaluate it at that time), or
/// changes jobset `old_name` to `j` (a trigger already set stays), with
/// its inputs.
pub async fn save(
    conn: &mut PgConnection,
    project: &str,
    old_name: Option<&str>,
    j: &JobsetRow,
    trigger: Option<i32>,
) -> Result<(), sqlx::Error> {
    let sql = if old_name.is_none() {
        "insert into Jobsets (project, name, description, type, nixExprInput, nixExprPath, flake, enabled, \
         enableEmail, enable_dynamic_run_command, emailOverride, hidden, keepnr, checkInterval, \
         schedulingShares, triggerTime) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    } else {
        "update Jobsets set name = $2, description = $3, type = $4, nixExprInput = $5, nixExprPath = $6, \
         flake = $7, enabled = $8, enableEmail = $9, enable_dynamic_run_command = $10, emailOverride = $11, \
         hidden = $12, keepnr = $13, checkInterval = $14, schedulingShares = $15, \
         triggerTime = coalesce(triggerTime, $16) where project = $1 and name = $17"
    };
    sqlx::query(sql)
        .bind(project)
        .bind(&j.name)
        .bind(&j.description)
        .bind(j.kind)
        .bind(&j.nix_expr_input)
        .bind(&j.nix_expr_path)
        .bind(&j.flake)
        .bind(j.enabled)
        .bind(i32::from(j.enable_email))
        .bind(j.dynamic_run_command)
        .bind(&j.email_override)
        .bind(i32::from(j.hidden))
        .bind(j.keepnr)
        .bind(j.check_interval)
        .bind(j.scheduling_shares)
        .bind(trigger)
        .bind(old_name)
        .execute(&mut *conn)
        .await?;
    if let Some(old) = old_name.filter(|old| *old != j.name) {
        sqlx::query(
            "insert into JobsetRenames (project, from_, to_) values ($1, $2, $3) \
             on conflict (project, from_) do update set to_ = excluded.to_",
        )
        .bind(project)
        .bind(old)
        .bind(&j.name)
        .execute(&mut *conn)
        .await?;
    }
    replace_inputs(conn, project, &j.name, &j.inputs).await
}

/// Replaces the inputs of jobset `project:jobset`.
pub async fn replace_inputs(
    conn: &mut PgConnection,
    project: &str,
    jobset: &str,
    inputs: &[InputRow],
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from JobsetInputs where project = $1 and jobset = $2")
        .bind(project)
        .bind(jobset)
        .execute(&mut *conn)
        .await?;
    for input in inputs {
        sqlx::query(
            "insert into JobsetInputs (project, jobset, name, type, emailResponsible) values ($1, $2, $3, $4, $5)",
        )
        .bind(project)
        .bind(jobset)
        .bind(&input.name)
        .bind(&input.kind)
        .bind(i32::from(input.email_responsible))
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "insert into JobsetInputAlts (project, jobset, input, altnr, value) values ($1, $2, $3, 0, $4)",
        )
        .bind(project)
        .bind(jobset)
        .bind(&input.name)
        .bind(&input.value)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The name jobset `project:name` was renamed to.
pub async fn renamed_to(
    pool: &PgPool,
    project: &str,
    name: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select to_ from JobsetRenames where project = $1 and from_ = $2")
        .bind(project)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Deletes the jobsets `ids` with their builds and evaluations (the
/// delete trigger tells the queue runner).
pub async fn delete_with_builds(
    conn: &mut PgConnection,
    ids: &[JobsetId],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from Builds where id in \
         (select id from Builds where jobset_id = any($1) order by id for update)",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query("delete from JobsetEvals where jobset_id = any($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from Jobsets where id = any($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Evaluates jobset `project:name` soon (`force`: even when its inputs
/// did not change).
pub async fn trigger(
    pool: &PgPool,
    project: &str,
    name: &str,
    now: i32,
    force: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update Jobsets set triggerTime = $3, forceEval = (coalesce(forceEval, false) or $4) where project = $1 and name = $2",
    )
    .bind(project)
    .bind(name)
    .bind(now)
    .bind(force)
    .execute(pool)
    .await?;
    Ok(())
}

/// Jobset `project:name`'s state, `None` when there is no such jobset.
pub async fn state_of(
    pool: &PgPool,
    project: &str,
    name: &str,
) -> Result<Option<JobsetState>, sqlx::Error> {
    let code: Option<i32> =
        sqlx::query_scalar("select enabled from Jobsets where project = $1 and name = $2")
            .bind(project)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(code.map(JobsetState::from))
}

/// The enabled jobsets with an input whose value is one of `values`, by
/// project and name.
pub async fn with_input_value(
    pool: &PgPool,
    values: &[String],
) -> Result<Vec<(String, String, JobsetState)>, sqlx::Error> {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "select distinct j.project, j.name, j.enabled from Jobsets j \
         join JobsetInputAlts a on a.project = j.project and a.jobset = j.name \
         where j.enabled <> $2 and a.value = any($1) order by 1, 2",
    )
    .bind(values)
    .bind(JobsetState::Disabled)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(p, j, e)| (p, j, JobsetState::from(e)))
        .collect())
}

/// Triggers every enabled jobset whose flake URI matches `flake_pattern`
/// or that has an input value matching `input_pattern` (LIKE patterns);
/// returns their project and name.
pub async fn trigger_matching(
    pool: &PgPool,
    flake_pattern: &str,
    input_pattern: &str,
    now: i32,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "update Jobsets j set triggerTime = $3 \
         where j.enabled <> $4 and (j.flake like $1 or exists (select 1 from JobsetInputAlts a \
           where a.project = j.project and a.jobset = j.name and a.value like $2)) \
         returning j.project, j.name",
    )
    .bind(flake_pattern)
    .bind(input_pattern)
    .bind(now)
    .bind(JobsetState::Disabled)
    .fetch_all(pool)
    .await
}

/// Disables and hides jobset `id` (a closed pull request's): kept with
/// its history, never deleted.
pub async fn retire(pool: &PgPool, id: JobsetId) -> Result<(), sqlx::Error> {
    sqlx::query("update Jobsets set enabled = $2, hidden = 1 where id = $1")
        .bind(id)
        .bind(JobsetState::Disabled)
        .execute(pool)
        .await?;
    Ok(())
}

/// `(project, jobset)` of jobset `jobset` and of the jobsets of `builds`.
pub async fn names_of(
    pool: &PgPool,
    builds: &[i32],
    jobset: Option<i32>,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "select distinct j.project, j.name from Jobsets j \
         where j.id = $2 or j.id in (select jobset_id from Builds where id = any($1))",
    )
    .bind(builds)
    .bind(jobset)
    .fetch_all(pool)
    .await
}
