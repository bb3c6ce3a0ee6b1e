//! The notify role's Prometheus metrics, under Hydra's names (`plugin`
//! labels hold Hydra's package names), plus the commit-status reporter's.
//! Served at `/metrics` on `<hydra_notify><prometheus> listen_address
//! port`, and printed to the log on a NOTIFY of
//! `hydra_notify_dump_metrics`.

use std::sync::Arc;

use hydra_metrics::{Counter, Family, Gauge, Histogram, Text, exponential_buckets};

/// The channel whose NOTIFY prints the metrics.
pub const DUMP_CHANNEL: &str = "hydra_notify_dump_metrics";

fn runtime_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 18)
}

/// Every metric of the role.
pub struct Metrics {
    pub event_loop_iterations: Counter,
    /// Epoch seconds of the last notification (Hydra declares it a counter
    /// and sets it).
    pub event_received: Gauge,
    pub event: Family<Counter>,
    pub event_error: Family<Counter>,
    pub event_runtime: Family<Histogram>,
    pub plugin_executions: Family<Counter>,
    pub plugin_success: Family<Counter>,
    pub plugin_error: Family<Counter>,
    pub plugin_retry_success: Family<Counter>,
    pub plugin_drop: Family<Counter>,
    pub plugin_requeue: Family<Counter>,
    pub plugin_no_such_plugin: Family<Counter>,
    pub plugin_not_interested: Family<Counter>,
    pub plugin_runtime: Family<Histogram>,
    /// Commit statuses: delivered, and failed by outcome, per forge.
    pub statuses_sent: Family<Counter>,
    pub statuses_failed: Family<Counter>,
    /// Seconds from a state's being written to its delivery.
    pub status_latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("event_loop_iterations", &self.event_loop_iterations.get())
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let counters = || Family::new(Counter::default);
        let runtimes = || Family::new(|| Histogram::new(runtime_buckets()));
        Metrics {
            event_loop_iterations: Counter::default(),
            event_received: Gauge::default(),
            event: counters(),
            event_error: counters(),
            event_runtime: runtimes(),
            plugin_executions: counters(),
            plugin_success: counters(),
            plugin_error: counters(),
            plugin_retry_success: counters(),
            plugin_drop: counters(),
            plugin_requeue: counters(),
            plugin_no_such_plugin: counters(),
            plugin_not_interested: counters(),
            plugin_runtime: runtimes(),
            statuses_sent: counters(),
            statuses_failed: counters(),
            status_latency: Histogram::new(runtime_buckets()),
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut t = Text::new();
        t.counter(
            "event_loop_iterations",
            "Iterations of the event loop",
            self.event_loop_iterations.get(),
        );
        t.gauge(
            "event_received",
            "Epoch seconds of the last notification received",
            self.event_received.get() as f64,
        );
        t.counters(
            "notify_event",
            "Notifications received, by channel",
            &self.event,
        );
        t.counters(
            "notify_event_error",
            "Notifications that did not parse, by channel",
            &self.event_error,
        );
        t.histograms(
            "notify_event_runtime",
            "Seconds to handle a notification, by channel",
            &self.event_runtime,
        );
        t.counters(
            "notify_plugin_executions",
            "Plugin runs, by channel and plugin",
            &self.plugin_executions,
        );
        t.counters(
            "notify_plugin_success",
            "Plugin runs that succeeded",
            &self.plugin_success,
        );
        t.counters(
            "notify_plugin_error",
            "Plugin runs that failed",
            &self.plugin_error,
        );
        t.counters(
            "notify_plugin_retry_success",
            "Retried plugin runs that succeeded",
            &self.plugin_retry_success,
        );
        t.counters(
            "notify_plugin_drop",
            "Failed tasks given up",
            &self.plugin_drop,
        );
        t.counters(
            "notify_plugin_requeue",
            "Failed tasks kept to be tried again",
            &self.plugin_requeue,
        );
        t.counters(
            "notify_plugin_no_such_plugin",
            "Retries for a plugin that is not enabled",
            &self.plugin_no_such_plugin,
        );
        t.counters(
            "notify_plugin_not_interested",
            "Events a plugin does nothing with",
            &self.plugin_not_interested,
        );
        t.histograms(
            "notify_plugin_runtime",
            "Seconds a plugin run took, by channel and plugin",
            &self.plugin_runtime,
        );
        t.counters(
            "hydra_notify_commit_statuses_sent_total",
            "Commit statuses the forges accepted, by forge",
            &self.statuses_sent,
        );
        t.counters(
            "hydra_notify_commit_statuses_failed_total",
            "Commit status deliveries that failed, by forge and outcome (retry, rate_limited, dropped)",
            &self.statuses_failed,
        );
        t.histogram(
            "hydra_notify_commit_status_delivery_seconds",
            "Seconds from a commit status's state being written to the forge accepting it",
            &self.status_latency,
        );
        t.finish()
    }
}

/// Serves `/metrics` on `listener` until the returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    hydra_metrics::serve(listener, move || metrics.render())
}

/// Starts the exporter `config` asks for (`<hydra_notify><prometheus>`);
/// an address that cannot be bound is logged, not fatal (as Hydra).
pub async fn exporter(
    config: &hydra_config::Config,
    metrics: &Arc<Metrics>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Some((address, port)) = &config.notify.prometheus else {
        tracing::info!("no <hydra_notify><prometheus> block: the metrics exporter is not started");
        return None;
    };
    match tokio::net::TcpListener::bind((address.as_str(), *port)).await {
        Ok(listener) => {
            tracing::info!(
                address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                "notify metrics at /metrics"
            );
            Some(serve(listener, metrics.clone()))
        }
        Err(e) => {
            tracing::error!(%address, port, error = %e, "cannot start the notify metrics exporter");
            None
        }
    }
}
