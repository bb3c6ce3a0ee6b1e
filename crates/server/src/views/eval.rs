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
