//! Prometheus metrics of the evaluator, served at `/metrics` on
//! `evaluator_metrics_address`.

use std::sync::Arc;

use hydra_metrics::{Counter, Family, Gauge, Histogram, Text, exponential_buckets};

use crate::engine;
use crate::outcome::{Outcome, Summary};

/// The evaluator's counters; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    started: Counter,
    finished: Family<Counter>,
    running: Gauge,
    duration: Histogram,
    checkout_duration: Histogram,
    jobs: Counter,
    job_errors: Counter,
    builds_queued: Counter,
    workers_started: Counter,
    worker_restarts: Family<Counter>,
    peak_rss: Gauge,
    scheduler_passes: Counter,
    jobsets_started: Counter,
    jobsets_due: Gauge,
    jobsets_waiting: Gauge,
}

/// What the scheduler decided, as its metrics tell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerDecisions {
    /// Passes over the jobsets so far.
    pub passes: u64,
    /// Evaluations started by all passes.
    pub started: u64,
    /// Jobsets due in the latest pass.
    pub due: i64,
    /// One-at-a-time jobsets due by their interval in the latest pass but
    /// waiting for their latest evaluation's builds.
    pub waiting_for_builds: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Counter::default(),
            finished: Family::default(),
            running: Gauge::default(),
            duration: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
            checkout_duration: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            jobs: Counter::default(),
            job_errors: Counter::default(),
            builds_queued: Counter::default(),
            workers_started: Counter::default(),
            worker_restarts: Family::default(),
            peak_rss: Gauge::default(),
            scheduler_passes: Counter::default(),
            jobsets_started: Counter::default(),
            jobsets_due: Gauge::default(),
            jobsets_waiting: Gauge::default(),
        }
    }

    /// One pass of the scheduler: `due` jobsets were due, `started` of them
    /// started, `waiting` waited for their builds.
    pub(crate) fn scheduler_pass(&self, due: usize, started: usize, waiting: usize) {
        self.jobsets_due.set(due as i64);
        self.jobsets_waiting.set(waiting as i64);
        self.jobsets_started.inc_by(started as u64);
        self.scheduler_passes.inc();
    }

    /// The scheduler's decisions so far.
    pub fn scheduler_decisions(&self) -> SchedulerDecisions {
        SchedulerDecisions {
            passes: self.scheduler_passes.get(),
            started: self.jobsets_started.get(),
            due: self.jobsets_due.get(),
            waiting_for_builds: self.jobsets_waiting.get(),
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
        self.finished.get(&[("outcome", outcome)]).inc();
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
            .get(&[("reason", "memory")])
            .inc_by(s.memory_kills);
        self.worker_restarts
            .get(&[("reason", "crash")])
            .inc_by(s.crashes);
        self.peak_rss
            .set(i64::try_from(s.peak_rss).unwrap_or(i64::MAX));
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut t = Text::new();
        t.counter(
            "hydra_evaluator_evaluations_started_total",
            "Evaluations started",
            self.started.get(),
        );
        t.counters(
            "hydra_evaluator_evaluations_total",
            "Evaluations finished, by outcome (evaluated, unchanged, fetch_failed, failed, spec_applied)",
            &self.finished,
        );
        t.gauge(
            "hydra_evaluator_evaluations_running",
            "Evaluations running now",
            self.running.get() as f64,
        );
        t.histogram(
            "hydra_evaluator_evaluation_duration_seconds",
            "Time from the start of an evaluation to its end",
            &self.duration,
        );
        t.histogram(
            "hydra_evaluator_checkout_duration_seconds",
            "Time spent fetching inputs",
            &self.checkout_duration,
        );
        t.counter(
            "hydra_evaluator_jobs_evaluated_total",
            "Jobs evaluated",
            self.jobs.get(),
        );
        t.counter(
            "hydra_evaluator_job_errors_total",
            "Jobs that failed to evaluate",
            self.job_errors.get(),
        );
        t.counter(
            "hydra_evaluator_builds_queued_total",
            "New builds created",
            self.builds_queued.get(),
        );
        t.counter(
            "hydra_evaluator_workers_started_total",
            "Evaluation worker processes started",
            self.workers_started.get(),
        );
        t.counters(
            "hydra_evaluator_worker_restarts_total",
            "Worker processes replaced, by reason (memory: passed evaluator_max_memory_size; crash: died on a job)",
            &self.worker_restarts,
        );
        t.gauge(
            "hydra_evaluator_worker_peak_resident_memory_bytes",
            "Highest resident memory of a worker in the latest evaluation",
            self.peak_rss.get() as f64,
        );
        t.counter(
            "hydra_evaluator_scheduler_passes_total",
            "Passes of the scheduler over the jobsets",
            self.scheduler_passes.get(),
        );
        t.counter(
            "hydra_evaluator_scheduler_started_total",
            "Evaluations the scheduler started",
            self.jobsets_started.get(),
        );
        t.gauge(
            "hydra_evaluator_jobsets_due",
            "Jobsets due in the latest pass of the scheduler",
            self.jobsets_due.get() as f64,
        );
        t.gauge(
            "hydra_evaluator_jobsets_waiting_for_builds",
            "One-at-a-time jobsets due by their interval but waiting for their builds",
            self.jobsets_waiting.get() as f64,
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
