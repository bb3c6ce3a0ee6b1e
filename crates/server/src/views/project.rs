//! What the project page reads besides the Project object.

use serde::Serialize;
use sqlx::PgPool;

use crate::error::ApiResult;
use hydra_db::status::{BuildStatus, JobsetState};

/// A row of the jobset overview table: a jobset and the counts of its
/// current builds.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub(crate) struct JobsetOverview {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub hidden: bool,
    pub last_checked: Option<i32>,
    /// An evaluation or fetch error is recorded.
    pub has_error: bool,
    pub succeeded: i64,
    pub failed: i64,
    pub queued: i64,
    pub total: i64,
}

/// Project `project`'s jobsets (hidden ones only with `include_hidden`):
/// visible before hidden, enabled before disabled, then by name.
pub(crate) async fn jobsets(
    pool: &PgPool,
    project: &str,
    include_hidden: bool,
) -> ApiResult<Vec<JobsetOverview>> {
    Ok(sqlx::query_as(
        "select j.name, j.description, j.enabled <> $3 as enabled, j.hidden <> 0 as hidden, \
         j.lastCheckedTime as last_checked, \
         (coalesce(j.errorMsg, '') <> '' or coalesce(j.fetchErrorMsg, '') <> '') as has_error, \
         coalesce(c.succeeded, 0) as succeeded, coalesce(c.failed, 0) as failed, \
         coalesce(c.queued, 0) as queued, coalesce(c.total, 0) as total \
         from Jobsets j left join (select jobset_id, \
              count(*) filter (where finished = 1 and buildStatus = $2) as succeeded, \
              count(*) filter (where finished = 1 and buildStatus <> $2) as failed, \
              count(*) filter (where finished = 0) as queued, \
              count(*) as total \
              from Builds where isCurrent = 1 group by jobset_id) c on c.jobset_id = j.id \
         where j.project = $1 and ($4 or j.hidden = 0) \
         order by j.hidden <> 0, j.enabled = $3, j.name",
    )
    .bind(project)
    .bind(BuildStatus::Succeeded)
    .bind(JobsetState::Disabled)
    .bind(include_hidden)
    .fetch_all(pool)
    .await?)
}
