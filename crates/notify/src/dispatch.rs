//! Runs plugins on events. Each plugin has its own queue and runs at most
//! `PER_PLUGIN` tasks at once, so a slow plugin never delays another's
//! events. A task's outcome is recorded as it ends: a failure goes to
//! `TaskRetries` (see `retry`), a success of `buildFinished` clears the
//! builds' pending notifications, and a retried task that succeeds is
//! forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use hydra_db::task_retries::{self, TaskRetry};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::Event;
use crate::metrics::Metrics;
use crate::plugin::{Context, Plugin};
use crate::retry::{self, Failed};

/// Tasks one plugin runs at once.
pub const PER_PLUGIN: usize = 8;

/// An event for one plugin.
#[derive(Debug)]
struct Task {
    channel: String,
    payload: String,
    event: Arc<Event>,
    /// The row, when this is a retry.
    retry: Option<TaskRetry>,
}

/// The plugins and their queues.
pub struct Dispatcher {
    queues: HashMap<&'static str, mpsc::UnboundedSender<Task>>,
    plugins: Vec<Arc<dyn Plugin>>,
    workers: JoinSet<()>,
    cx: Context,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.name()).collect();
        f.debug_struct("Dispatcher")
            .field("plugins", &names)
            .finish()
    }
}

impl Dispatcher {
    /// Starts a worker for each of `plugins`.
    pub fn start(cx: Context, plugins: Vec<Arc<dyn Plugin>>, metrics: Arc<Metrics>) -> Dispatcher {
        let mut queues = HashMap::new();
        let mut workers = JoinSet::new();
        for plugin in &plugins {
            let (tx, rx) = mpsc::unbounded_channel();
            queues.insert(plugin.name(), tx);
            workers.spawn(work(cx.clone(), plugin.clone(), rx, metrics.clone()));
        }
        Dispatcher {
            queues,
            plugins,
            workers,
            cx,
            metrics,
        }
    }

    /// Gives the event NOTIFYed on `channel` with `payload` to every plugin
    /// that wants it.
    pub fn dispatch(&self, channel: &str, payload: &str, event: Event) {
        let event = Arc::new(event);
        for plugin in &self.plugins {
            if !plugin.wants(&event) {
                self.metrics
                    .plugin_not_interested
                    .get(&[("channel", channel), ("plugin", plugin.name())])
                    .inc();
                continue;
            }
            if let Some(queue) = self.queues.get(plugin.name()) {
                let _ = queue.send(Task {
                    channel: channel.to_string(),
                    payload: payload.to_string(),
                    event: event.clone(),
                    retry: None,
                });
            }
        }
    }

    /// Tries task `row` again with its plugin. Until it ends, the row is
    /// due again only after its next back-off (so it is not taken twice,
    /// and not lost if this process dies); a row whose plugin is not
    /// enabled, or whose event no longer parses, is dropped with a log
    /// line.
    pub async fn retry(&self, row: TaskRetry, now: i32) -> Result<(), sqlx::Error> {
        let Some(queue) = self.queues.get(row.plugin.as_str()) else {
            self.metrics
                .plugin_no_such_plugin
                .get(&[("channel", &row.channel), ("plugin", &row.plugin)])
                .inc();
            tracing::warn!(
                plugin = %row.plugin,
                channel = %row.channel,
                payload = %row.payload,
                "dropping a retry for a plugin that is not enabled"
            );
            return task_retries::delete(&self.cx.pool, row.id).await;
        };
        let event = match Event::parse(&row.channel, &row.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a retry whose event does not parse");
                return task_retries::delete(&self.cx.pool, row.id).await;
            }
        };
        let lease = now.saturating_add(crate::backoff((row.attempts + 1).unsigned_abs()) as i32);
        task_retries::reschedule(&self.cx.pool, row.id, row.attempts, lease).await?;
        let _ = queue.send(Task {
            channel: row.channel.clone(),
            payload: row.payload.clone(),
            event: Arc::new(event),
            retry: Some(row),
        });
        Ok(())
    }

    /// Waits until every task given so far has ended (for
    /// `--queued-only`).
    pub async fn finish(mut self) {
        self.queues.clear();
        while self.workers.join_next().await.is_some() {}
    }
}

/// A plugin's worker: takes its tasks in order, running up to
/// `PER_PLUGIN` at once.
async fn work(
    cx: Context,
    plugin: Arc<dyn Plugin>,
    mut tasks: mpsc::UnboundedReceiver<Task>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(PER_PLUGIN));
    let mut running = JoinSet::new();
    while let Some(task) = tasks.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (cx, plugin, metrics) = (cx.clone(), plugin.clone(), metrics.clone());
        running.spawn(async move {
            run_task(&cx, plugin.as_ref(), task, &metrics).await;
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Runs one task and records how it ended.
async fn run_task(cx: &Context, plugin: &dyn Plugin, task: Task, metrics: &Metrics) {
    let labels = [
        ("channel", task.channel.as_str()),
        ("plugin", plugin.name()),
    ];
    metrics.plugin_executions.get(&labels).inc();
    let started = std::time::Instant::now();
    let outcome = plugin.run(cx, &task.event).await;
    metrics
        .plugin_runtime
        .get(&labels)
        .observe(started.elapsed().as_secs_f64());
    let recorded = match outcome {
        Ok(()) => {
            metrics.plugin_success.get(&labels).inc();
            if task.retry.is_some() {
                metrics.plugin_retry_success.get(&labels).inc();
            }
            if let Event::BuildFinished { .. } = task.event.as_ref()
                && let Err(e) = task_retries::clear_pending(&cx.pool, &task.event.builds()).await
            {
                tracing::warn!(error = %e, "cannot clear the builds' pending notifications");
            }
            retry::succeeded(&cx.pool, task.retry.as_ref()).await
        }
        Err(error) => {
            metrics.plugin_error.get(&labels).inc();
            let now = hydra_db::now();
            let failure = retry::Failure {
                channel: &task.channel,
                payload: &task.payload,
                plugin: plugin.name(),
                error: &error,
                build: task.event.builds().first().copied(),
            };
            let kept = retry::failed(&cx.pool, failure, task.retry.as_ref(), now).await;
            match &kept {
                Ok(Failed::Retry { .. }) => metrics.plugin_requeue.get(&labels).inc(),
                Ok(Failed::Dropped) => metrics.plugin_drop.get(&labels).inc(),
                Err(_) => {}
            }
            match &kept {
                Ok(Failed::Retry { attempts, retry_at }) => tracing::warn!(
                    plugin = plugin.name(),
                    channel = %task.channel,
                    payload = %task.payload,
                    %error,
                    attempts,
                    retry_in = retry_at - now,
                    "a notification failed; it will be tried again"
                ),
                Ok(Failed::Dropped) => tracing::error!(
                    plugin = plugin.name(),
                    channel = %task.channel,
                    payload = %task.payload,
                    %error,
                    "a notification failed too many times; given up"
                ),
                Err(_) => {}
            }
            kept.map(|_| ())
        }
    };
    if let Err(e) = recorded {
        tracing::error!(plugin = plugin.name(), error = %e, "cannot record a notification's outcome");
    }
}
