//! What happens to a plugin's task after it ran: a failure is kept in
//! `TaskRetries` and tried again later, backing off, and given up after
//! 101 retries (about 26 hours); a retried task that succeeds is
//! forgotten. Hydra's schedule, so a database shared with Hydra's notify
//! behaves the same. Unlike Hydra, a task given up is kept in
//! `DroppedTasks` with its last error, for the build page and the admin.

use hydra_db::ids::BuildId;
use hydra_db::task_retries::{self, TaskRetry};
use sqlx::PgPool;

use crate::backoff;

/// Attempts after which a failing retry is given up.
pub const MAX_ATTEMPTS: i32 = 100;

/// What became of a failed task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    /// Kept, to be tried again at `retry_at` (attempt `attempts` failed).
    Retry { attempts: i32, retry_at: i32 },
    /// Given up.
    Dropped,
}

/// A plugin's failure on an event.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The event as NOTIFYed.
    pub channel: &'a str,
    pub payload: &'a str,
    pub plugin: &'a str,
    pub error: &'a str,
    /// The build the event is about, if any.
    pub build: Option<BuildId>,
}

/// Records `failure` at `now`; `retry` is the row when this was a retry.
pub async fn failed(
    pool: &PgPool,
    failure: Failure<'_>,
    retry: Option<&TaskRetry>,
    now: i32,
) -> Result<Failed, sqlx::Error> {
    let at = |attempts: i32| now.saturating_add(backoff(attempts.unsigned_abs()) as i32);
    match retry {
        None => {
            let retry_at = at(1);
            task_retries::save(
                pool,
                failure.channel,
                failure.plugin,
                failure.payload,
                retry_at,
            )
            .await?;
            Ok(Failed::Retry {
                attempts: 1,
                retry_at,
            })
        }
        Some(row) if row.attempts > MAX_ATTEMPTS => {
            task_retries::give_up(pool, row, failure.error, failure.build, now).await?;
            Ok(Failed::Dropped)
        }
        Some(row) => {
            let attempts = row.attempts + 1;
            let retry_at = at(attempts);
            task_retries::reschedule(pool, row.id, attempts, retry_at).await?;
            Ok(Failed::Retry { attempts, retry_at })
        }
    }
}

/// Records that a task succeeded: a retried one is forgotten.
pub async fn succeeded(pool: &PgPool, retry: Option<&TaskRetry>) -> Result<(), sqlx::Error> {
    if let Some(row) = retry {
        task_retries::delete(pool, row.id).await?;
    }
    Ok(())
}
