//! `Jobsets`: the queue runner's scheduling shares and the evaluator's
//! record of each evaluation attempt.

use sqlx::PgPool;

/// The scheduling shares of the jobsets `ids`.
pub async fn scheduling_shares(pool: &PgPool, ids: &[i32]) -> Result<Vec<(i32, i32)>, sqlx::Error> {
    sqlx::query_as("select id, schedulingShares from Jobsets where id = any($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}
