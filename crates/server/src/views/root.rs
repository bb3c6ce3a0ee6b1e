//! What the root-level pages read: the queue, running and finished steps,
//! and search.

use serde_json::Value;
use sqlx::PgPool;

use super::{BUILD_SUMMARY_COLUMNS, BuildSummary};
use crate::error::ApiResult;
use hydra_db::ids::BuildId;
use hydra_db::keyset::Position;
use hydra_db::status::Busy;

/// Every unfinished build, most urgent first.
pub(crate) async fn queue(pool: &PgPool) -> ApiResult<Vec<BuildSummary>> {
    let sql = format!(
        "select {BUILD_SUMMARY_COLUMNS} from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 0 order by b.globalPriority desc, b.id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?)
}

/// Parses the JSON texts PostgreSQL rendered.
fn parsed(rows: Vec<String>) -> Vec<Value> {
    rows.iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect()
}

/// Builds with a running step, with the step, by machine.
pub(crate) async fn running_steps(pool: &PgPool) -> ApiResult<Vec<Value>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "select json_build_object('id', b.id, 'project', j.project, 'jobset', j.name, 'job', b.job, \
         'system', b.system, 'nixname', b.nixName, 'timestamp', b.timestamp, 'priority', b.priority, \
         'stepnr', s.stepnr, 'drvpath', s.drvPath, 'machine', s.machine, 'busy', s.busy, \
         'type', s.type, 'starttime', s.startTime)::text \
         from BuildSteps s join Builds b on b.id = s.build join Jobsets j on j.id = b.jobset_id \
         where s.busy <> $1 order by s.machine, s.stepnr",
    )
    .bind(Busy::NotRunning)
    .fetch_all(pool)
    .await?;
    Ok(parsed(rows))
}

/// A page of finished steps, most recent first, and its links.
pub(crate) async fn finished_steps(
    pool: &PgPool,
    position: &Position,
    per_page: i64,
) -> ApiResult<(Vec<Value>, serde_json::Map<String, Value>)> {
    const ORDER: [&str; 3] = ["s.stopTime", "s.build", "s.stepnr"];
    // `busy = 0` written out: the index of finished steps is on it.
    let sql = format!(
        "select json_build_object('build', s.build, 'stepnr', s.stepnr, 'drvpath', s.drvPath, \
         'system', s.system, 'machine', s.machine, 'status', s.status, 'starttime', s.startTime, \
         'stoptime', s.stopTime, 'type', s.type)::text \
         from BuildSteps s where s.busy = {} and s.stopTime is not null and {} {}",
        Busy::NotRunning as i32,
        position.condition(&ORDER, 1),
        position.order(&ORDER, per_page)
    );
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(position.key())
        .fetch_all(pool)
        .await?;
    Ok(position.page(parsed(rows), per_page, |s| {
        ["stoptime", "build", "stepnr"]
            .iter()
            .map(|k| s.get(*k).and_then(Value::as_i64).unwrap_or(0))
            .collect()
    }))
}

/// What a search found, at most `limit` of each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Found {
    pub projects: Vec<String>,
    pub jobsets: Vec<(String, String)>,
    /// Builds with an output path that matches.
    pub builds: Vec<BuildId>,
    /// Builds whose derivation path matches.
    pub builds_drv: Vec<BuildId>,
}

/// Visible projects, jobsets and builds matching `pattern` (an `ilike`
/// pattern); the whole search stops after 20 seconds.
pub(crate) async fn search(pool: &PgPool, pattern: &str, limit: i64) -> ApiResult<Found> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local statement_timeout = 20000")
        .execute(&mut *tx)
        .await?;
    let projects = sqlx::query_scalar(
        "select name from Projects where hidden = 0 and (name ilike $1 or displayName ilike $1 or description ilike $1) \
         order by name limit $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let jobsets = sqlx::query_as(
        "select j.project, j.name from Jobsets j join Projects p on p.name = j.project \
         where j.hidden = 0 and p.hidden = 0 and (j.name ilike $1 or j.description ilike $1) \
         order by j.project, j.name limit $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let builds = sqlx::query_scalar(
        "select distinct b.id from Builds b join BuildOutputs o on o.build = b.id \
         join Jobsets j on j.id = b.jobset_id join Projects p on p.name = j.project \
         where j.hidden = 0 and p.hidden = 0 and o.path ilike $1 order by b.id desc limit $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let builds_drv = sqlx::query_scalar(
        "select b.id from Builds b join Jobsets j on j.id = b.jobset_id join Projects p on p.name = j.project \
         where j.hidden = 0 and p.hidden = 0 and b.drvPath ilike $1 order by b.id desc limit $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Found {
        projects,
        jobsets,
        builds,
        builds_drv,
    })
}

/// `project:jobset:job` of builds `ids`, by build id.
pub(crate) async fn job_names(pool: &PgPool, ids: &[i32]) -> ApiResult<Vec<(i32, String)>> {
    Ok(sqlx::query_as(
        "select b.id, j.project || ':' || j.name || ':' || b.job from Builds b \
         join Jobsets j on j.id = b.jobset_id where b.id = any($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// The queue by jobset: how many builds wait, the oldest and the newest.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct QueuedByJobset {
    pub project: String,
    pub jobset: String,
    pub queued: i64,
    pub oldest: i32,
    pub newest: i32,
}

/// The queue by system type.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct QueuedBySystem {
    pub system: String,
    pub queued: i64,
}

/// The queue summed up by jobset and by system type, largest first.
pub(crate) async fn queue_summary(
    pool: &PgPool,
) -> ApiResult<(Vec<QueuedByJobset>, Vec<QueuedBySystem>)> {
    let jobsets = sqlx::query_as(
        "select j.project, j.name as jobset, count(*) as queued, min(b.timestamp) as oldest, \
         max(b.timestamp) as newest from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 0 group by j.project, j.name order by queued desc, j.project, j.name",
    )
    .fetch_all(pool);
    let systems = sqlx::query_as(
        "select system, count(*) as queued from Builds where finished = 0 \
         group by system order by queued desc, system",
    )
    .fetch_all(pool);
    Ok(tokio::try_join!(jobsets, systems)?)
}

/// Jobs of visible jobsets with a current build whose name matches
/// `pattern` (an `ilike` pattern): project, jobset, job; `limit` + 1 at
/// most, so that a caller can tell there are more.
pub(crate) async fn search_jobs(
    pool: &PgPool,
    pattern: &str,
    limit: i64,
) -> ApiResult<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "select distinct j.project, j.name, b.job from Builds b join Jobsets j on j.id = b.jobset_id \
         join Projects p on p.name = j.project \
         where b.isCurrent = 1 and j.hidden = 0 and p.hidden = 0 and b.job ilike $1 \
         order by j.project, j.name, b.job limit $2",
    )
    .bind(pattern)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?)
}
