//! What the job pages read: recent builds, the latest finished one, and
//! series over the job's builds.

use serde_json::{Value, json};
use sqlx::PgPool;

use super::{BUILD_SUMMARY_COLUMNS, BuildSummary};
use hydra_db::ids::JobsetId;

use crate::error::ApiResult;

/// Points of a series, at most (the most recent).
pub(crate) const SERIES_LIMIT: i64 = 1000;

/// The job `jobset:job`'s ten latest builds, finished or queued.
pub(crate) async fn recent(
    pool: &PgPool,
    jobset: JobsetId,
    job: &str,
    finished: bool,
) -> ApiResult<Vec<BuildSummary>> {
    let sql = format!(
        "select {BUILD_SUMMARY_COLUMNS} from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.jobset_id = $1 and b.job = $2 and b.finished = $3 \
         order by b.id desc limit 10"
    );
    Ok(sqlx::query_as::<_, BuildSummary>(sqlx::AssertSqlSafe(sql))
        .bind(jobset)
        .bind(job)
        .bind(i32::from(finished))
        .fetch_all(pool)
        .await?)
}

/// An aggregate job's latest builds (at most `limit`, newest first: id,
/// finished, status) and their constituents (aggregate, constituent job,
/// build, finished, status), for the job page's matrix.
pub(crate) async fn constituents(
    pool: &PgPool,
    jobset: JobsetId,
    job: &str,
    limit: i64,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let aggregates: Vec<(i32, i32, Option<i32>)> = sqlx::query_as(
        "select b.id, b.finished, b.buildStatus from Builds b \
         where b.jobset_id = $1 and b.job = $2 \
         and exists (select 1 from AggregateConstituents a where a.aggregate = b.id) \
         order by b.id desc limit $3",
    )
    .bind(jobset)
    .bind(job)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<i32> = aggregates.iter().map(|a| a.0).collect();
    let cells: Vec<(i32, String, i32, i32, Option<i32>)> = sqlx::query_as(
        "select a.aggregate, c.job, c.id, c.finished, c.buildStatus \
         from AggregateConstituents a join Builds c on c.id = a.constituent \
         where a.aggregate = any($1) order by c.job collate \"C\", a.aggregate desc",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok((
        aggregates
            .into_iter()
            .map(|(id, finished, status)| json!({"id": id, "finished": finished, "buildstatus": status}))
            .collect(),
        cells
            .into_iter()
            .map(|(aggregate, job, id, finished, status)| {
                json!({"aggregate": aggregate, "job": job, "build": id, "finished": finished, "buildstatus": status})
            })
            .collect(),
    ))
}

/// Whether `user` starred job `project:jobset:job`.
pub(crate) async fn starred(
    pool: &PgPool,
    user: &str,
    project: &str,
    jobset: &str,
    job: &str,
) -> ApiResult<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from StarredJobs where userName = $1 and project = $2 \
         and jobset = $3 and job = $4)",
    )
    .bind(user)
    .bind(project)
    .bind(jobset)
    .bind(job)
    .fetch_one(pool)
    .await?)
}

/// The figures of a job's latest finished build.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct LatestFigures {
    #[sqlx(rename = "stoptime")]
    pub stop_time: Option<i32>,
    #[sqlx(rename = "buildstatus")]
    pub status: Option<i32>,
    #[sqlx(rename = "closuresize")]
    pub closure_size: Option<i64>,
    pub size: Option<i64>,
}

/// The latest finished build of job `jobset:job`.
pub(crate) async fn latest_finished(
    pool: &PgPool,
    jobset: JobsetId,
    job: &str,
) -> ApiResult<Option<LatestFigures>> {
    Ok(sqlx::query_as(
        "select stopTime, buildStatus, closureSize, size from Builds \
         where jobset_id = $1 and job = $2 and finished = 1 order by id desc limit 1",
    )
    .bind(jobset)
    .bind(job)
    .fetch_optional(pool)
    .await?)
}

/// A figure of successful builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Series {
    BuildTimes,
    ClosureSizes,
    OutputSizes,
}

/// The series of `which` over job `jobset:job`'s successful builds
/// (build, timestamp, value), oldest first.
pub(crate) async fn series(
    pool: &PgPool,
    jobset: JobsetId,
    job: &str,
    which: Series,
) -> ApiResult<Vec<(i32, i32, f64)>> {
    let column = match which {
        Series::BuildTimes => "stopTime - startTime",
        Series::ClosureSizes => "closureSize",
        Series::OutputSizes => "size",
    };
    let sql = format!(
        "select id, timestamp, value from (select id, timestamp, ({column})::float8 as value from Builds \
         where jobset_id = $1 and job = $2 and finished = 1 and buildStatus = $4 and ({column}) is not null \
         order by id desc limit $3) s order by id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(jobset)
        .bind(job)
        .bind(SERIES_LIMIT)
        .bind(hydra_db::status::BuildStatus::Succeeded)
        .fetch_all(pool)
        .await?)
}

/// The series of metric `name` of job `project:jobset:job` (build,
/// timestamp, value, unit), oldest first.
pub(crate) async fn metric(
    pool: &PgPool,
    project: &str,
    jobset: &str,
    job: &str,
    name: &str,
) -> ApiResult<Vec<(i32, i32, f64, Option<String>)>> {
    Ok(sqlx::query_as(
        "select build, timestamp, value, unit from (select build, timestamp, value, unit from BuildMetrics \
         where project = $1 and jobset = $2 and job = $3 and name = $4 \
         order by build desc limit $5) m order by build",
    )
    .bind(project)
    .bind(jobset)
    .bind(job)
    .bind(name)
    .bind(SERIES_LIMIT)
    .fetch_all(pool)
    .await?)
}

/// The names of the metrics job `project:jobset:job`'s builds recorded.
pub(crate) async fn metric_names(
    pool: &PgPool,
    project: &str,
    jobset: &str,
    job: &str,
) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select distinct name from BuildMetrics where project = $1 and jobset = $2 and job = $3 \
         order by name",
    )
    .bind(project)
    .bind(jobset)
    .bind(job)
    .fetch_all(pool)
    .await?)
}

/// Whether job `jobset:job` has a build in the jobset's latest evaluation
/// with new builds.
pub(crate) async fn is_current(pool: &PgPool, jobset: JobsetId, job: &str) -> ApiResult<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = (select id from JobsetEvals where jobset_id = $1 and hasNewBuilds = 1 \
                         order by id desc limit 1) and b.job = $2)",
    )
    .bind(jobset)
    .bind(job)
    .fetch_one(pool)
    .await?)
}
