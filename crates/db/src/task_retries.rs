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

/// Gives task `row` up after its last failure, `error`, at `now`: it
/// moves to `DroppedTasks` (about `build`, when it is about one), where
/// the build page shows it and the admin can revive it.
pub async fn give_up(
    pool: &PgPool,
    row: &TaskRetry,
    error: &str,
    build: Option<BuildId>,
    now: i32,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from TaskRetries where id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into DroppedTasks (channel, pluginname, payload, attempts, droppedAt, lastError, build) \
         values ($1, $2, $3, $4, $5, $6, (select id from Builds where id = $7))",
    )
    .bind(&row.channel)
    .bind(&row.plugin)
    .bind(&row.payload)
    .bind(row.attempts)
    .bind(now)
    .bind(error)
    .bind(build)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Makes given-up task `dropped` about `build` due again at `now` (a
/// first retry), and tells the notify role; whether there was such a
/// task.
pub async fn revive(
    pool: &PgPool,
    dropped: i32,
    build: BuildId,
    now: i32,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "with gone as (delete from DroppedTasks where id = $1 and build = $2 \
           returning channel, pluginname, payload) \
         insert into TaskRetries (channel, pluginname, payload, attempts, retry_at) \
         select channel, pluginname, payload, 1, $3 from gone",
    )
    .bind(dropped)
    .bind(build)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if done {
        crate::notify::send(&mut tx, crate::notify::NOTIFICATIONS_DUE, "").await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// A notification task about a build that is being retried or was given
/// up, as the build page shows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct BuildTask {
    pub id: i32,
    pub channel: String,
    pub plugin: String,
    pub attempts: i32,
    /// When it is tried next (`None`: given up).
    #[serde(rename = "nextAttempt")]
    pub next_attempt: Option<i32>,
    #[serde(rename = "droppedAt")]
    pub dropped_at: Option<i32>,
    /// Why it was given up (failures being retried keep no message).
    #[serde(rename = "lastError")]
    pub last_error: Option<String>,
}

/// The tasks about `build` being retried, then those given up.
pub async fn of_build(pool: &PgPool, build: BuildId) -> Result<Vec<BuildTask>, sqlx::Error> {
    sqlx::query_as(
        "select id, channel, pluginname as plugin, attempts, retry_at as next_attempt, \
           null::integer as dropped_at, null::text as last_error \
         from TaskRetries \
         where (channel like 'cached\\_build\\_%' and split_part(payload, E'\\t', 2) = ($1::integer)::text) \
            or (channel in ('build_queued', 'build_started', 'build_finished', 'step_finished') \
                and split_part(payload, E'\\t', 1) = ($1::integer)::text) \
         union all \
         select id, channel, pluginname, attempts, null, droppedAt, lastError \
         from DroppedTasks where build = $1 \
         order by dropped_at nulls first, id",
    )
    .bind(build)
    .fetch_all(pool)
    .await
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
