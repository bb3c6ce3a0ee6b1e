//! What happens to a plugin's task after it ran: a failure is kept in
//! `TaskRetries` and tried again later, backing off, and given up after
//! 101 retries (about 26 hours); a retried task that succeeds is
//! forgotten. Hydra's schedule, so a database shared with Hydra's notify
//! behaves the same.

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

/// Records that `plugin` failed on the event NOTIFYed on `channel` with
/// `payload` at `now`; `retry` is the row when this was a retry.
pub async fn failed(
    pool: &PgPool,
    channel: &str,
    plugin: &str,
    payload: &str,
    retry: Option<&TaskRetry>,
    now: i32,
) -> Result<Failed, sqlx::Error> {
    let at = |attempts: i32| now.saturating_add(backoff(attempts.unsigned_abs()) as i32);
    match retry {
        None => {
            let retry_at = at(1);
            task_retries::save(pool, channel, plugin, payload, retry_at).await?;
            Ok(Failed::Retry {
                attempts: 1,
                retry_at,
            })
        }
        Some(row) if row.attempts > MAX_ATTEMPTS => {
            task_retries::delete(pool, row.id).await?;
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
