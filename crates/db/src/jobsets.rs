//! `Jobsets`: the queue runner's scheduling shares and the evaluator's
//! record of each evaluation attempt.

use sqlx::{PgConnection, PgPool};

use crate::status::JobsetState;

/// The scheduling shares of the jobsets `ids`.
pub async fn scheduling_shares(pool: &PgPool, ids: &[i32]) -> Result<Vec<(i32, i32)>, sqlx::Error> {
    sqlx::query_as("select id, schedulingShares from Jobsets where id = any($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Records a finished evaluation attempt of jobset `id` at `now`: checked,
/// no forced evaluation pending, no fetch error, `error_text` as its
/// evaluation error (empty: none), and a one-shot jobset disabled.
pub async fn record_checked(
    conn: &mut PgConnection,
    id: i32,
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
    pub id: i32,
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
pub async fn set_start_time(pool: &PgPool, id: i32, now: Option<i32>) -> Result<(), sqlx::Error> {
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
pub async fn evaluation_ended(pool: &PgPool, id: i32) -> Result<(), sqlx::Error> {
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
    id: i32,
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
    id: i32,
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
pub async fn record_unchanged(pool: &PgPool, id: i32, now: i32) -> Result<(), sqlx::Error> {
    sqlx::query("update Jobsets set lastCheckedTime = $2, fetchErrorMsg = null where id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}
