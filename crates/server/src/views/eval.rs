//! What the evaluation pages read besides the JobsetEval object.

use sqlx::PgPool;

use hydra_db::ids::{BuildId, EvalId};

use crate::error::ApiResult;

/// Output paths of evaluation `id`'s successful builds that have a
/// `nix-build` product.
pub(crate) async fn store_paths(pool: &PgPool, id: EvalId) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select distinct o.path from JobsetEvalMembers m join Builds b on b.id = m.build \
         join BuildOutputs o on o.build = b.id \
         where m.eval = $1 and b.finished = 1 and b.buildStatus = $2 and o.path is not null \
         and exists (select 1 from BuildProducts p where p.build = b.id and p.type = 'nix-build') \
         order by o.path",
    )
    .bind(id)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await?)
}

/// Evaluation `id`'s error text (empty when it had none).
pub(crate) async fn error_text(pool: &PgPool, id: EvalId) -> ApiResult<String> {
    let error: Option<Option<String>> = sqlx::query_scalar(
        "select x.errorMsg from JobsetEvals e join EvaluationErrors x on x.id = e.evaluationerror_id where e.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(error.flatten().unwrap_or_default())
}

/// The latest build of job `job` in evaluation `id`.
pub(crate) async fn build_of_job(
    pool: &PgPool,
    id: EvalId,
    job: &str,
) -> ApiResult<Option<BuildId>> {
    Ok(sqlx::query_scalar(
        "select b.id from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = $1 and b.job = $2 order by b.id desc limit 1",
    )
    .bind(id)
    .bind(job)
    .fetch_optional(pool)
    .await?)
}

/// A row of the evaluations table: an evaluation and the counts of its
/// builds.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct EvalSummary {
    pub id: EvalId,
    pub timestamp: i32,
    pub checkout_time: Option<i32>,
    pub eval_time: Option<i32>,
    pub has_errors: bool,
    pub succeeded: i64,
    pub failed: i64,
    pub queued: i64,
}

/// The latest `limit` evaluations with new builds of jobset `jobset`,
/// newest first, with their builds counted.
pub(crate) async fn latest(
    pool: &PgPool,
    jobset: hydra_db::ids::JobsetId,
    limit: i64,
) -> ApiResult<Vec<EvalSummary>> {
    Ok(sqlx::query_as(
        "select e.id, e.timestamp, e.checkoutTime as checkout_time, e.evalTime as eval_time, \
         coalesce(x.errorMsg, '') <> '' as has_errors, \
         count(*) filter (where b.finished = 1 and b.buildStatus = $3) as succeeded, \
         count(*) filter (where b.finished = 1 and b.buildStatus <> $3) as failed, \
         count(*) filter (where b.finished = 0) as queued \
         from JobsetEvals e left join EvaluationErrors x on x.id = e.evaluationerror_id \
         left join JobsetEvalMembers m on m.eval = e.id left join Builds b on b.id = m.build \
         where e.jobset_id = $1 and e.hasNewBuilds = 1 \
         group by e.id, x.errorMsg order by e.id desc limit $2",
    )
    .bind(jobset)
    .bind(limit)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await?)
}
