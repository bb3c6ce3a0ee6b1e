//! Actions on builds as Hydra's web interface performs them; the queue
//! runner reacts to them through the triggers' NOTIFYs.

use sqlx::PgPool;

use crate::DbError;
use crate::tx::{Tx, lock_builds, transaction};

/// Cancels unfinished builds (status 4); returns how many.
pub async fn cancel_builds(pool: &PgPool, ids: &[i32]) -> Result<u64, DbError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            let now = crate::now();
            let done = sqlx::query(
                "update Builds set finished = 1, buildStatus = $3, isCachedBuild = 0, \
                 startTime = coalesce(startTime, $2), stopTime = $2 where id = any($1) and finished = 0",
            )
            .bind(ids)
            .bind(now)
            .bind(crate::status::BuildStatus::Cancelled)
            .execute(&mut *tx)
            .await?;
            Ok::<_, DbError>(done.rows_affected())
        })
    })
    .await
}

/// Queues finished builds again and forgets that their outputs failed
/// (`FailedPaths`), so they are really built; returns how many.
pub async fn restart_builds(pool: &PgPool, ids: &[i32]) -> Result<u64, DbError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    transaction(pool, |mut tx: Tx| {
        let ids = &ids;
        Box::pin(async move {
            lock_builds(&mut tx, ids).await?;
            let done = sqlx::query(
                "update Builds set finished = 0, isCachedBuild = 0 where id = any($1) and finished = 1",
            )
            .bind(ids)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "delete from FailedPaths where path in (select path from BuildOutputs where build = any($1))",
            )
            .bind(ids)
            .execute(&mut *tx)
            .await?;
            Ok::<_, DbError>(done.rows_affected())
        })
    })
    .await
}

/// Raises (or lowers) builds' global priority; the queue reorders at once.
pub async fn bump_builds(pool: &PgPool, ids: &[i32], priority: i32) -> Result<u64, DbError> {
    let done =
        sqlx::query("update Builds set globalPriority = $2 where id = any($1) and finished = 0")
            .bind(ids)
            .bind(priority)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

/// What Hydra's pages call a build status (`None`: still queued).
pub fn status_name(status: Option<i32>) -> &'static str {
    match status {
        None => "queued",
        Some(code) => {
            crate::status::BuildStatus::from_code(code).map_or("failed", |s| s.describe())
        }
    }
}

/// A finished build, as one log line tells it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FinishedBuild {
    pub id: i32,
    pub project: String,
    pub jobset: String,
    pub job: String,
    #[sqlx(rename = "buildstatus")]
    pub status: Option<i32>,
    /// Seconds from start to stop.
    pub duration: Option<i32>,
    #[sqlx(rename = "iscachedbuild")]
    pub cached: Option<i32>,
}

/// The builds among `ids` that are finished.
pub async fn finished(pool: &PgPool, ids: &[i32]) -> Result<Vec<FinishedBuild>, sqlx::Error> {
    sqlx::query_as(
        "select b.id, j.project, j.name as jobset, b.job, b.buildStatus, \
         b.stopTime - b.startTime as duration, b.isCachedBuild \
         from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.id = any($1) and b.finished = 1 order by b.id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A choice of statuses.
#[derive(Clone, Copy, Debug)]
pub enum Statuses<'a> {
    AnyOf(&'a [crate::status::BuildStatus]),
    NoneOf(&'a [crate::status::BuildStatus]),
}

/// The finished builds of evaluation `eval` whose status is chosen by
/// `which`, in id order.
pub async fn finished_in_eval(
    pool: &PgPool,
    eval: i32,
    which: Statuses<'_>,
) -> Result<Vec<i32>, sqlx::Error> {
    let (statuses, wanted) = match which {
        Statuses::AnyOf(s) => (s, true),
        Statuses::NoneOf(s) => (s, false),
    };
    let codes: Vec<i32> = statuses.iter().map(|s| s.code()).collect();
    sqlx::query_scalar(
        "select b.id from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = $1 and b.finished = 1 and (b.buildStatus = any($2)) = $3 order by b.id",
    )
    .bind(eval)
    .bind(&codes)
    .bind(wanted)
    .fetch_all(pool)
    .await
}
