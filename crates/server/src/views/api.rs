//! What `/api/*` reads: build lists and counts for scripts, rendered as
//! JSON by PostgreSQL.

use serde_json::Value;
use sqlx::PgPool;

use super::{FILTER, Filter};
use crate::error::{ApiError, ApiResult};

fn parse(text: &str) -> ApiResult<Value> {
    serde_json::from_str(text).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The `nr` latest finished builds that match `f`, newest first.
pub(crate) async fn latest_builds(pool: &PgPool, f: &Filter<'_>, nr: i64) -> ApiResult<Value> {
    let sql = format!(
        "select coalesce(json_agg(json_build_object('id', x.id, 'project', x.project, 'jobset', x.jobset, \
         'job', x.job, 'system', x.system, 'nixname', x.nixName, 'finished', x.finished, \
         'timestamp', x.timestamp, 'buildstatus', x.buildStatus) order by x.id desc), '[]'::json)::text \
         from (select b.id, j.project, j.name as jobset, b.job, b.system, b.nixName, b.finished, b.timestamp, \
               b.buildStatus from Builds b join Jobsets j on j.id = b.jobset_id \
               where b.finished = 1 and {FILTER} order by b.id desc limit $5) x"
    );
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(f.project)
        .bind(f.jobset)
        .bind(f.job)
        .bind(f.system)
        .bind(nr)
        .fetch_one(pool)
        .await?;
    parse(&text)
}

/// The `nr` most urgent unfinished builds.
pub(crate) async fn queue(pool: &PgPool, nr: i64) -> ApiResult<Value> {
    let text: String = sqlx::query_scalar(
        "select coalesce(json_agg(json_build_object('id', x.id, 'project', x.project, 'jobset', x.jobset, \
         'job', x.job, 'system', x.system, 'nixname', x.nixName, 'finished', x.finished, \
         'timestamp', x.timestamp, 'priority', x.priority) order by x.globalPriority desc, x.priority desc, x.id), \
         '[]'::json)::text \
         from (select b.id, j.project, j.name as jobset, b.job, b.system, b.nixName, b.finished, b.timestamp, \
               b.priority, b.globalPriority from Builds b join Jobsets j on j.id = b.jobset_id \
               where b.finished = 0 order by b.globalPriority desc, b.priority desc, b.id limit $1) x",
    )
    .bind(nr)
    .fetch_one(pool)
    .await?;
    parse(&text)
}

/// How many builds are queued.
pub(crate) async fn nr_queued(pool: &PgPool) -> ApiResult<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from Builds where finished = 0")
            .fetch_one(pool)
            .await?,
    )
}

/// Finished builds matching `f` with a timestamp from `first` on, counted
/// per `period` seconds (period start, count).
pub(crate) async fn finished_per_period(
    pool: &PgPool,
    f: &Filter<'_>,
    period: i32,
    first: i32,
) -> ApiResult<Vec<(i64, i64)>> {
    let sql = format!(
        "select (b.timestamp - b.timestamp % $5)::bigint, count(*) from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and b.timestamp >= $6 and {FILTER} group by 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(f.project)
        .bind(f.jobset)
        .bind(f.job)
        .bind(f.system)
        .bind(period)
        .bind(first)
        .fetch_all(pool)
        .await?)
}

/// Project `project`'s jobsets with the counts of their current builds.
pub(crate) async fn jobsets(pool: &PgPool, project: &str) -> ApiResult<Value> {
    let text: String = sqlx::query_scalar(
        "select coalesce(json_agg(json_build_object('project', j.project, 'name', j.name, \
         'nrscheduled', coalesce(c.scheduled, 0), 'nrsucceeded', coalesce(c.succeeded, 0), \
         'nrfailed', coalesce(c.failed, 0), 'nrtotal', coalesce(c.total, 0), \
         'lastcheckedtime', j.lastCheckedTime, 'starttime', j.startTime, 'checkinterval', j.checkInterval, \
         'triggertime', j.triggerTime, 'fetcherrormsg', j.fetchErrorMsg, 'errortime', j.errorTime, \
         'haserrormsg', coalesce(j.errorMsg, '') <> '') order by j.name), '[]'::json)::text \
         from Jobsets j left join (select jobset_id, \
              count(*) filter (where finished = 0) as scheduled, \
              count(*) filter (where finished = 1 and buildStatus = $2) as succeeded, \
              count(*) filter (where finished = 1 and buildStatus <> $2) as failed, \
              count(*) as total \
              from Builds where isCurrent = 1 group by jobset_id) c on c.jobset_id = j.id \
         where j.project = $1",
    )
    .bind(project)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_one(pool)
    .await?;
    parse(&text)
}
