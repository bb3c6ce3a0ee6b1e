//! Deciding when each jobset is evaluated (Hydra's `hydra-evaluator`).
//!
//! A jobset is due when it is not running and either has a `triggerTime`
//! or its `checkInterval` (> 0) has passed since `lastCheckedTime`, in
//! which case one-at-a-time jobsets (`enabled = 3`) also wait until their
//! latest evaluation has no unfinished builds. Due jobsets start in the order
//! triggerTime, lastCheckedTime, id, up to `max_concurrent_evals` at once.
//! `startTime` marks a running evaluation in the database. The scheduler
//! sleeps until the next jobset is due, a jobset changes (NOTIFY) or an
//! evaluation ends.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt;
use hydra_db::ids::JobsetId;
use hydra_db::status::JobsetState;
use hydra_db::{DbError, Listener, Wakeup};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::evaluation::{self, Context, Summary};

/// The channels that change the schedule.
pub const CHANNELS: &[&str] = &[
    "jobsets_added",
    "jobsets_deleted",
    "jobset_scheduling_changed",
];

/// A jobset as the scheduler sees it.
pub use hydra_db::jobsets::ScheduleRow as Candidate;

/// When a jobset is due.
pub trait Schedule {
    /// Whether the jobset is due at `now` (ignoring whether it runs).
    /// A trigger always makes a jobset due; by its interval, a
    /// one-at-a-time jobset is due only when its latest evaluation is done.
    fn due(&self, now: i64) -> bool;

    /// Seconds until the jobset is due by its interval.
    fn wait(&self, now: i64) -> Option<i64>;

    /// Whether the jobset would be due by its interval but is a
    /// one-at-a-time jobset whose latest evaluation has unfinished builds.
    fn waits_for_builds(&self, now: i64) -> bool;
}

impl Schedule for Candidate {
    fn due(&self, now: i64) -> bool {
        if self.trigger_time.is_some() {
            return true;
        }
        if self.check_interval <= 0 {
            return false;
        }
        i64::from(self.last_checked_time.unwrap_or(0)) + i64::from(self.check_interval) <= now
            && !(self.enabled == JobsetState::OneAtATime && self.busy)
    }

    fn wait(&self, now: i64) -> Option<i64> {
        (self.check_interval > 0).then(|| {
            i64::from(self.last_checked_time.unwrap_or(0)) + i64::from(self.check_interval) - now
        })
    }

    fn waits_for_builds(&self, now: i64) -> bool {
        self.trigger_time.is_none()
            && self.wait(now).is_some_and(|w| w <= 0)
            && self.enabled == JobsetState::OneAtATime
            && self.busy
    }
}

/// The order in which due jobsets start.
pub fn sort_candidates(candidates: &mut [Candidate]) {
    candidates.sort_by_key(|c| {
        (
            c.trigger_time.map_or(i64::MAX, i64::from),
            c.last_checked_time.unwrap_or(0),
            c.id,
        )
    });
}

/// Enabled jobsets of enabled projects.
pub async fn candidates(pool: &sqlx::PgPool) -> Result<Vec<Candidate>, sqlx::Error> {
    hydra_db::jobsets::schedulable(pool).await
}

/// Clears every `startTime` (evaluations that were running when the
/// evaluator stopped); returns how many there were.
pub async fn unlock(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    hydra_db::jobsets::clear_start_times(pool).await
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "cannot serve the evaluator's metrics on {address} (evaluator_metrics_address): {source}"
    )]
    Metrics {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for SchedulerError {
    fn from(e: sqlx::Error) -> Self {
        SchedulerError::Db(DbError::from(e))
    }
}

/// How an evaluation task ended, when it did not produce a summary.
enum Crash {
    Error(String),
    TimedOut(u64),
}

/// Runs the scheduler until `shutdown` is cancelled, with its metrics on
/// `evaluator_metrics_address` (an address that is taken is an error: the
/// figures there would be another program's).
pub async fn run(ctx: Context, shutdown: CancellationToken) -> Result<(), SchedulerError> {
    let metrics =
        match &ctx.config.evaluator.metrics_address {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(
                |source| SchedulerError::Metrics {
                    address: address.clone(),
                    source,
                },
            )?),
            None => None,
        };
    run_with(ctx, metrics, shutdown).await
}

/// Runs the scheduler until `shutdown` is cancelled, serving its metrics on
/// `metrics` if given.
pub async fn run_with(
    ctx: Context,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let stale = crate::engine::remove_stale_work_dirs();
    if stale > 0 {
        tracing::info!(
            directories = stale,
            "removed the working directories of evaluators that were killed"
        );
    }
    let cleared = unlock(&ctx.pool).await?;
    if cleared > 0 {
        tracing::info!(
            jobsets = cleared,
            "cleared the start times of interrupted evaluations"
        );
    }
    let metrics_task = metrics.map(|listener| {
        if let Ok(local) = listener.local_addr() {
            tracing::info!(address = %local, "evaluator metrics at http://{local}/metrics");
        }
        crate::metrics::serve(listener, ctx.metrics.clone())
    });
    let mut listener = Listener::connect(&ctx.pool, CHANNELS).await?;
    let pull_requests = tokio::spawn(crate::pull_requests::run(ctx.clone(), shutdown.clone()));
    let max = ctx.config.evaluator.max_concurrent_evals.max(1) as usize;
    let time_limit = ctx.config.evaluator.time_limit;
    let mut running: HashMap<JobsetId, (String, String)> = HashMap::new();
    let mut tasks: JoinSet<(JobsetId, Result<Summary, Crash>)> = JoinSet::new();
    tracing::info!(max_concurrent_evals = max, "evaluator started");

    let result = loop {
        let now = i64::from(hydra_db::now());
        let mut all = match candidates(&ctx.pool).await {
            Ok(all) => all,
            Err(e) => break Err(e.into()),
        };
        sort_candidates(&mut all);
        let due: Vec<&Candidate> = all
            .iter()
            .filter(|c| !running.contains_key(&c.id) && c.due(now))
            .collect();
        let waiting = all.iter().filter(|c| c.waits_for_builds(now)).count();
        let (due_count, before) = (due.len(), running.len());
        for c in due {
            if running.len() >= max {
                break;
            }
            if let Err(e) =
                hydra_db::jobsets::set_start_time(&ctx.pool, c.id, Some(now as i32)).await
            {
                tracing::error!(error = %e, "cannot mark an evaluation as started");
                continue;
            }
            tracing::info!(project = %c.project, jobset = %c.name, "starting an evaluation");
            running.insert(c.id, (c.project.clone(), c.name.clone()));
            let (ctx, id, project, name) = (ctx.clone(), c.id, c.project.clone(), c.name.clone());
            tasks.spawn(async move {
                let limit = Duration::from_secs(time_limit) + Duration::from_secs(30);
                let evaluation = std::panic::AssertUnwindSafe(tokio::time::timeout(
                    limit,
                    evaluation::evaluate_jobset(&ctx, &project, &name),
                ))
                .catch_unwind();
                let result = match evaluation.await {
                    Ok(Ok(Ok(summary))) => Ok(summary),
                    Ok(Ok(Err(e))) => Err(Crash::Error(e.to_string())),
                    Ok(Err(_)) => Err(Crash::TimedOut(time_limit)),
                    Err(panic) => Err(Crash::Error(format!(
                        "the evaluation panicked: {}",
                        panic_message(&panic)
                    ))),
                };
                (id, result)
            });
        }
        ctx.metrics
            .scheduler_pass(due_count, running.len() - before, waiting);
        // Sleep until the next jobset is due by its interval.
        let sleep = all
            .iter()
            .filter(|c| !running.contains_key(&c.id))
            .filter_map(|c| c.wait(now))
            .min()
            .map_or(Duration::from_secs(300), |s| {
                Duration::from_secs(s.clamp(1, 300) as u64)
            });
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            wakeup = listener.recv() => match wakeup {
                Ok(Wakeup::Notification { channel, .. }) => tracing::debug!(%channel, "woken"),
                Ok(Wakeup::Rescan) => tracing::info!("database connection re-established; re-reading the jobsets"),
                Err(e) => break Err(e.into()),
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((id, result)) = joined else {
                    // Only aborted tasks end without a result, and tasks
                    // are aborted only at shutdown.
                    continue;
                };
                let (project, name) = running.remove(&id).unwrap_or_default();
                if let Err(e) = finished(&ctx, id, result).await {
                    tracing::error!(%project, jobset = %name, error = %e, "cannot record the end of an evaluation");
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    };

    // Stop whatever still runs; the next start clears the marks anyway.
    tasks.shutdown().await;
    for id in running.keys() {
        let _ = hydra_db::jobsets::set_start_time(&ctx.pool, *id, None).await;
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    pull_requests.abort();
    result
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Records the end of an evaluation: clears `startTime`, clears a
/// `triggerTime` that was set before the evaluation started (one set during
/// it stays, so it causes another evaluation), and records crashes.
async fn finished(
    ctx: &Context,
    jobset_id: JobsetId,
    result: Result<Summary, Crash>,
) -> Result<(), sqlx::Error> {
    hydra_db::jobsets::evaluation_ended(&ctx.pool, jobset_id).await?;
    let error = match result {
        Ok(_) => return Ok(()),
        Err(Crash::Error(e)) => format!("evaluation failed: {e}"),
        Err(Crash::TimedOut(limit)) => format!(
            "evaluation failed: it took longer than {limit} s (evaluator_time_limit) and was stopped"
        ),
    };
    tracing::error!(jobset_id = jobset_id.0, "{error}");
    let now = hydra_db::now();
    hydra_db::jobsets::record_eval_error(&ctx.pool, jobset_id, &error, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(
        id: i32,
        last: Option<i32>,
        trigger: Option<i32>,
        interval: i32,
        enabled: i32,
    ) -> Candidate {
        Candidate {
            id: JobsetId(id),
            project: "p".into(),
            name: format!("j{id}"),
            last_checked_time: last,
            trigger_time: trigger,
            check_interval: interval,
            enabled: JobsetState::from_code(enabled).unwrap_or_default(),
            busy: false,
        }
    }

    #[test]
    fn due_follows_trigger_then_interval() {
        let now = 1000;
        assert!(c(1, Some(900), None, 100, 1).due(now));
        assert!(!c(1, Some(901), None, 100, 1).due(now));
        assert!(!c(1, None, None, 0, 1).due(now));
        assert!(c(1, Some(999), Some(5), 0, 1).due(now));
        assert!(c(1, None, None, 10, 2).due(now));
        let mut busy = c(1, None, None, 10, 3);
        busy.busy = true;
        assert!(!busy.due(now));
        assert!(busy.waits_for_builds(now));
        assert!(!c(1, None, None, 10, 1).waits_for_builds(now));
        busy.trigger_time = Some(5);
        assert!(busy.due(now), "a trigger overrides one-at-a-time");
        busy.trigger_time = None;
        busy.busy = false;
        assert!(busy.due(now));
    }

    #[test]
    fn triggered_jobsets_go_first_then_the_least_recently_checked() {
        let mut all = vec![
            c(1, Some(50), None, 10, 1),
            c(2, Some(10), None, 10, 1),
            c(3, Some(90), Some(7), 10, 1),
            c(4, None, None, 10, 1),
            c(5, Some(90), Some(3), 10, 1),
            c(6, Some(10), None, 10, 1),
        ];
        sort_candidates(&mut all);
        let ids: Vec<i32> = all.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, [5, 3, 4, 2, 6, 1]);
    }
}
