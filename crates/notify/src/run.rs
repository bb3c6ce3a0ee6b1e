//! The role's loop: LISTEN first, then the backlog (finished builds whose
//! notifications are still pending, from before this process ran), then
//! events as they come and retries as they fall due. A lost database
//! connection is taken up again and the backlog read again, so nothing
//! is lost while the connection was down.

use std::time::Duration;

use hydra_db::task_retries;
use hydra_db::{DbError, Listener, Wakeup};
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::event::{CHANNELS, Event};
use crate::metrics::{self, Metrics};
use crate::plugin::Context;
use crate::plugins::Plugins;
use crate::status::Reporter;

/// How the role runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Deliver the backlog, wait for it, and stop (`--queued-only`).
    pub queued_only: bool,
}

/// Runs `plugins` on events until `shutdown` (or, with `queued_only`,
/// until the backlog is delivered).
pub async fn run(
    cx: Context,
    plugins: Plugins,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), DbError> {
    run_with(cx, plugins, options, shutdown, None).await
}

/// [`run`], telling `ready` once it listens and has read the backlog (what
/// is pending from then on arrives as events).
pub async fn run_with(
    cx: Context,
    plugins: Plugins,
    options: Options,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), DbError> {
    // Listening before reading the backlog: nothing falls between them.
    let channels: Vec<&str> = CHANNELS
        .iter()
        .copied()
        .chain([hydra_db::notify::NOTIFICATIONS_DUE, metrics::DUMP_CHANNEL])
        .collect();
    let mut listener = Listener::connect(&cx.pool, &channels).await?;
    let metrics = plugins.metrics.clone();
    let exporter = metrics::exporter(&cx.config, &metrics).await;
    let dispatcher = Dispatcher::start(cx.clone(), plugins.list, metrics.clone());
    backlog(&cx, &dispatcher).await?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    if options.queued_only {
        dispatcher.finish().await;
        if let Some(reporter) = plugins.reporter {
            reporter.deliver_due().await?;
        }
        if let Some(exporter) = exporter {
            exporter.abort();
        }
        return Ok(());
    }
    let stop_reporter = shutdown.child_token();
    let reporter = plugins.reporter.map(|reporter| {
        let running = tokio::spawn(reporter.clone().run(stop_reporter.clone()));
        (reporter, running)
    });
    tracing::info!(plugins = ?dispatcher, "notify started");
    let parts = Parts {
        cx: &cx,
        dispatcher: &dispatcher,
        reporter: reporter.as_ref().map(|(r, _)| r.as_ref()),
        metrics: &metrics,
    };
    let result = events(parts, &mut listener, &shutdown).await;
    stop_reporter.cancel();
    if let Some((_, running)) = reporter {
        let _ = running.await;
    }
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    result
}

/// What the loop hands events to.
#[derive(Clone, Copy)]
struct Parts<'a> {
    cx: &'a Context,
    dispatcher: &'a Dispatcher,
    reporter: Option<&'a Reporter>,
    metrics: &'a Metrics,
}

/// Events as they come and retries as they fall due, until `shutdown`.
async fn events(
    parts: Parts<'_>,
    listener: &mut Listener,
    shutdown: &CancellationToken,
) -> Result<(), DbError> {
    let Parts {
        cx,
        dispatcher,
        reporter,
        metrics,
    } = parts;
    loop {
        metrics.event_loop_iterations.inc();
        let now = hydra_db::now();
        let wait = task_retries::seconds_to_next(&cx.pool, now)
            .await?
            .map_or(Duration::from_secs(3600), |s| {
                Duration::from_secs(s.unsigned_abs())
            });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            wakeup = listener.recv() => match wakeup? {
                Wakeup::Notification { channel, .. } if channel == metrics::DUMP_CHANNEL => {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "{}", metrics.render());
                }
                Wakeup::Notification { channel, .. } if channel == hydra_db::notify::NOTIFICATIONS_DUE => {
                    if let Some(reporter) = reporter {
                        reporter.wake();
                    }
                }
                Wakeup::Notification { channel, payload } => {
                    handle(dispatcher, metrics, &channel, &payload);
                }
                Wakeup::Rescan => {
                    tracing::info!("the database connection is back: reading the backlog again");
                    backlog(cx, dispatcher).await?;
                }
            },
            _ = tokio::time::sleep(wait) => {}
        }
        // At most one due retry a turn, so events keep their place.
        let now = hydra_db::now();
        if let Some(row) = task_retries::next_due(&cx.pool, now).await? {
            dispatcher.retry(row, now).await?;
        }
    }
    Ok(())
}

/// Gives a notification to the plugins; one that does not parse is
/// logged and dropped.
fn handle(dispatcher: &Dispatcher, metrics: &Metrics, channel: &str, payload: &str) {
    let started = std::time::Instant::now();
    metrics.event_received.set(i64::from(hydra_db::now()));
    metrics.event.get(&[("channel", channel)]).inc();
    match Event::parse(channel, payload) {
        Ok(event) => dispatcher.dispatch(channel, payload, event),
        Err(e) => {
            metrics.event_error.get(&[("channel", channel)]).inc();
            tracing::warn!(error = %e, "ignoring a notification that does not parse");
        }
    }
    metrics
        .event_runtime
        .get(&[("channel", channel)])
        .observe(started.elapsed().as_secs_f64());
}

/// A `build_finished` for each finished build whose notifications are
/// pending (its dependents have their own).
async fn backlog(cx: &Context, dispatcher: &Dispatcher) -> Result<(), DbError> {
    let pending = task_retries::pending_builds(&cx.pool).await?;
    if !pending.is_empty() {
        tracing::info!(
            builds = pending.len(),
            "sending the notifications still pending"
        );
    }
    for build in pending {
        let payload = build.to_string();
        dispatcher.dispatch(
            "build_finished",
            &payload,
            Event::BuildFinished {
                build,
                dependents: Vec::new(),
            },
        );
    }
    Ok(())
}
