//! Prometheus metrics of the evaluator, served at `/metrics` on
//! `evaluator_metrics_address`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine;
use crate::outcome::{Outcome, Summary};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The evaluator's counters; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Counter,
    finished: Family<OutcomeLabel, Counter>,
    running: Gauge,
    duration: Histogram,
    checkout_duration: Histogram,
    jobs: Counter,
    job_errors: Counter,
    builds_queued: Counter,
    workers_started: Counter,
    worker_restarts: Family<ReasonLabel, Counter>,
    peak_rss: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hydra_evaluator");
        let started = Counter::default();
        let finished = Family::<OutcomeLabel, Counter>::default();
        let running = Gauge::default();
        let duration = Histogram::new(exponential_buckets(0.1, 2.0, 16));
        let checkout_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        let jobs = Counter::default();
        let job_errors = Counter::default();
        let builds_queued = Counter::default();
        let workers_started = Counter::default();
        let worker_restarts = Family::<ReasonLabel, Counter>::default();
        let peak_rss = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "evaluations_started",
            "Evaluations started",
            started.clone(),
        );
        registry.register(
            "evaluations",
            "Evaluations finished, by outcome (evaluated, unchanged, fetch_failed, failed, spec_applied)",
            finished.clone(),
        );
        registry.register(
            "evaluations_running",
            "Evaluations running now",
            running.clone(),
        );
        registry.register(
            "evaluation_duration_seconds",
            "Time from the start of an evaluation to its end",
            duration.clone(),
        );
        registry.register(
            "checkout_duration_seconds",
            "Time spent fetching inputs",
            checkout_duration.clone(),
        );
        registry.register("jobs_evaluated", "Jobs evaluated", jobs.clone());
        registry.register(
            "job_errors",
            "Jobs that failed to evaluate",
            job_errors.clone(),
        );
        registry.register("builds_queued", "New builds created", builds_queued.clone());
        registry.register(
            "workers_started",
            "Evaluation worker processes started",
            workers_started.clone(),
        );
        registry.register(
            "worker_restarts",
            "Worker processes replaced, by reason (memory: passed evaluator_max_memory_size; crash: died on a job)",
            worker_restarts.clone(),
        );
        registry.register(
            "worker_peak_resident_memory_bytes",
            "Highest resident memory of a worker in the latest evaluation",
            peak_rss.clone(),
        );
        Metrics {
            registry,
            started,
            finished,
            running,
            duration,
            checkout_duration,
            jobs,
            job_errors,
            builds_queued,
            workers_started,
            worker_restarts,
            peak_rss,
        }
    }

    pub(crate) fn evaluation_started(&self) {
        self.started.inc();
        self.running.inc();
    }

    pub(crate) fn evaluation_finished(&self, summary: &Summary) {
        self.running.dec();
        let outcome = match &summary.outcome {
            Outcome::Evaluated { new_builds, .. } => {
                self.builds_queued.inc_by(*new_builds as u64);
                "evaluated"
            }
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::FetchFailed(_) => "fetch_failed",
            Outcome::Failed(_) => "failed",
            Outcome::SpecApplied { .. } => "spec_applied",
        };
        self.finished.get_or_create(&OutcomeLabel { outcome }).inc();
        self.duration.observe(summary.total_time.as_secs_f64());
        self.checkout_duration
            .observe(summary.checkout_time.as_secs_f64());
    }

    pub(crate) fn engine_stats(&self, outcome: &engine::Outcome) {
        self.jobs.inc_by(outcome.jobs.len() as u64);
        self.job_errors.inc_by(outcome.errors.len() as u64);
        let s = &outcome.stats;
        self.workers_started.inc_by(s.workers_started);
        self.worker_restarts
            .get_or_create(&ReasonLabel { reason: "memory" })
            .inc_by(s.memory_kills);
        self.worker_restarts
            .get_or_create(&ReasonLabel { reason: "crash" })
            .inc_by(s.crashes);
        self.peak_rss.set(s.peak_rss);
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Serves `/metrics` on `listener` until the returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    })
}
