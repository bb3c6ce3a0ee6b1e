//! What the account pages read besides the user.

use serde_json::Value;
use sqlx::PgPool;

use crate::error::{ApiError, ApiResult};

/// `user`'s API tokens (never their secrets), by id.
pub(crate) async fn tokens(pool: &PgPool, user: &str) -> ApiResult<Value> {
    let text: String = sqlx::query_scalar(
        "select coalesce(json_agg(json_build_object('id', id, 'name', name, 'created', created, \
         'lastused', lastUsed) order by id), '[]'::json)::text from ApiTokens where userName = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await?;
    serde_json::from_str(&text).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A build of a starred job, as the dashboard shows it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct StarredBuild {
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub id: Option<i32>,
    pub finished: Option<i32>,
    pub buildstatus: Option<i32>,
}

/// `user`'s starred jobs, each with its 20 latest builds, newest first
/// (a job without builds has one row with no build).
pub(crate) async fn starred_builds(pool: &PgPool, user: &str) -> ApiResult<Vec<StarredBuild>> {
    Ok(sqlx::query_as(
        "select s.project, s.jobset, s.job, b.id, b.finished, b.buildStatus as buildstatus \
         from StarredJobs s left join Jobsets j on j.project = s.project and j.name = s.jobset \
         left join lateral (select id, finished, buildStatus from Builds \
                            where jobset_id = j.id and job = s.job order by id desc limit 20) b on true \
         where s.userName = $1 order by s.project, s.jobset, s.job, b.id desc",
    )
    .bind(user)
    .fetch_all(pool)
    .await?)
}

/// The current builds (of enabled projects and jobsets) whose
/// maintainers include `email`, at most 500, newest first.
pub(crate) async fn maintained_builds(
    pool: &PgPool,
    email: &str,
) -> ApiResult<Vec<super::BuildSummary>> {
    let sql = format!(
        "select {} from Builds b join Jobsets j on j.id = b.jobset_id \
         join Projects p on p.name = j.project \
         where b.isCurrent = 1 and j.enabled <> $2 and p.enabled = 1 \
         and strpos(coalesce(b.maintainers, ''), $1) > 0 order by b.id desc limit 500",
        super::BUILD_SUMMARY_COLUMNS
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .bind(hydra_db::status::JobsetState::Disabled)
        .fetch_all(pool)
        .await?)
}

/// The enabled projects `user` owns.
pub(crate) async fn owned_projects(pool: &PgPool, user: &str) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select name from Projects where owner = $1 and enabled = 1 order by name",
    )
    .bind(user)
    .fetch_all(pool)
    .await?)
}
