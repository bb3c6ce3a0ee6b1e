//! `TaskRetries`: notification tasks (a plugin on an event) that failed,
//! kept with when to try them again. The schedule is the notify role's;
//! this module only stores it.

use sqlx::PgPool;

use crate::ids::BuildId;

/// A task to try again.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskRetry {
    pub id: i32,
    pub channel: String,
    /// The plugin, by Hydra's name for it (`Hydra::Plugin::GithubStatus`).
    #[sqlx(rename = "pluginname")]
    pub plugin: String,
    /// The event's payload as it was NOTIFYed.
    pub payload: String,
    pub attempts: i32,
    pub retry_at: i32,
}

/// Records a first failure: tried once, again at `retry_at`.
pub async fn save(
    pool: &PgPool,
    channel: &str,
    plugin: &str,
    payload: &str,
    retry_at: i32,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "insert into TaskRetries (channel, pluginname, payload, attempts, retry_at) \
         values ($1, $2, $3, 1, $4) returning id",
    )
    .bind(channel)
    .bind(plugin)
    .bind(payload)
    .bind(retry_at)
    .fetch_one(pool)
    .await
}

/// Records another failed attempt of task `id`: `attempts` so far, next at
/// `retry_at`.
pub async fn reschedule(
    pool: &PgPool,
    id: i32,
    attempts: i32,
    retry_at: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("update TaskRetries set attempts = $2, retry_at = $3 where id = $1")
        .bind(id)
        .bind(attempts)
        .bind(retry_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets task `id` (it succeeded, or it was given up).
pub async fn delete(pool: &PgPool, id: i32) -> Result<(), sqlx::Error> {
    sqlx::query("delete from TaskRetries where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The task due soonest among those due at `now`, if any.
pub async fn next_due(pool: &PgPool, now: i32) -> Result<Option<TaskRetry>, sqlx::Error> {
    sqlx::query_as(
        "select id, channel, pluginname, payload, attempts, retry_at from TaskRetries \
         where retry_at <= $1 order by retry_at, id limit 1",
    )
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// Seconds from `now` until the next task is due: 0 when one is overdue,
/// `None` when there is none.
pub async fn seconds_to_next(pool: &PgPool, now: i32) -> Result<Option<i64>, sqlx::Error> {
    let next: Option<i32> = sqlx::query_scalar("select min(retry_at) from TaskRetries")
        .fetch_one(pool)
        .await?;
    Ok(next.map(|at| i64::from(at.saturating_sub(now)).max(0)))
}

/// Finished builds whose notifications were not all delivered (the queue
/// runner sets `notificationPendingSince`; notify clears it).
pub async fn pending_builds(pool: &PgPool) -> Result<Vec<BuildId>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from Builds where notificationPendingSince is not null order by id",
    )
    .fetch_all(pool)
    .await
}

/// Marks the notifications of those of `builds` that finished as
/// delivered.
pub async fn clear_pending(pool: &PgPool, builds: &[BuildId]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update Builds set notificationPendingSince = null \
         where id = any($1) and finished = 1 and notificationPendingSince is not null",
    )
    .bind(builds)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
