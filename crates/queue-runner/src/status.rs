//! The status endpoint on `queue_runner_metrics_address`: `/status` (the
//! queue runner, its machines and jobsets, in Hydra's field names),
//! `/status/machines`, `/status/jobsets`, `/status/steps`, and `/metrics`
//! (Prometheus text, `hydraqueuerunner_*`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use hydra_db::runner_status::{
    JobsetShare, MachineStatus, MachineTypeStatus, RunnerStatus, StoreStatus,
};
use hydra_metrics::Text;
use serde_json::{Value, json};

use crate::state::{Queue, Stats};

/// Serves the endpoint on `listener` until the task is aborted.
pub(crate) fn serve(
    queue: &Arc<Queue>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(address = %local, "queue runner status at http://{local}/status");
    }
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/status/machines", get(machines))
        .route("/status/jobsets", get(jobsets))
        .route("/status/steps", get(steps))
        .route("/status/build/{id}", get(waiting))
        .route("/status/build/{id}/steps", get(build_steps))
        .route("/metrics", get(metrics))
        .with_state(queue.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the status endpoint stopped");
        }
    })
}

/// An instant as Unix seconds.
fn unix_of(t: Option<Instant>) -> Option<i64> {
    let t = t?;
    let now = Instant::now();
    let unix = i64::from(hydra_db::now());
    Some(if t >= now {
        unix + (t - now).as_secs() as i64
    } else {
        unix - (now - t).as_secs() as i64
    })
}

fn machines_status(queue: &Queue) -> BTreeMap<String, MachineStatus> {
    let state = queue.lock();
    let now = Instant::now();
    state
        .machines
        .list()
        .iter()
        .map(|m| {
            let done = m.steps_done.max(1);
            let status = MachineStatus {
                enabled: m.enabled,
                system_types: m.machine.systems.clone(),
                supported_features: m.machine.supported_features.iter().cloned().collect(),
                mandatory_features: m.machine.mandatory_features.iter().cloned().collect(),
                max_jobs: m.machine.max_jobs,
                speed_factor: m.machine.speed_factor,
                current_jobs: m.current_jobs,
                nr_steps_done: m.steps_done,
                consecutive_failures: m.consecutive_failures,
                disabled_until: unix_of(m.disabled_until.filter(|t| *t > now)),
                last_failure: unix_of(m.last_failure),
                idle_since: unix_of(m.idle_since),
                total_step_time: m.total_step_time.as_secs(),
                total_step_build_time: m.total_build_time.as_secs(),
                avg_step_time: m.total_step_time.as_secs_f64() / done as f64,
                avg_step_build_time: m.total_build_time.as_secs_f64() / done as f64,
            };
            (m.machine.store_uri.clone(), status)
        })
        .collect()
}

fn jobsets_status(queue: &Queue) -> BTreeMap<String, JobsetShare> {
    let state = queue.lock();
    state
        .jobsets
        .iter()
        .map(|(id, j)| {
            let share = JobsetShare {
                share_used: j.share_used(),
                seconds: j.seconds,
                shares: j.shares,
            };
            (id.to_string(), share)
        })
        .collect()
}

fn runner_status(queue: &Queue) -> RunnerStatus {
    let s = &queue.stats;
    let mut status = {
        let state = queue.lock();
        let mut machine_types: BTreeMap<String, MachineTypeStatus> = BTreeMap::new();
        for step in state.steps.values() {
            let e = machine_types.entry(step.system.clone()).or_default();
            if step.running.is_some() {
                e.running += 1;
            } else if step.deps.is_empty() {
                e.runnable += 1;
            }
        }
        RunnerStatus {
            nr_queued_builds: state.builds.len() as u64,
            nr_unfinished_steps: state.steps.len() as u64,
            nr_runnable_steps: state.steps.values().filter(|s| s.is_runnable()).count() as u64,
            nr_active_steps: state.steps.values().filter(|s| s.running.is_some()).count() as u64,
            machine_types,
            ..RunnerStatus::default()
        }
    };
    let done = Stats::get(&s.steps_done).max(1);
    let wakeups = Stats::get(&s.dispatcher_wakeups).max(1);
    let builds_read = Stats::get(&s.builds_read).max(1);
    status.status = "up".into();
    status.time = i64::from(hydra_db::now());
    status.uptime = queue.started.elapsed().as_secs();
    status.pid = std::process::id();
    status.nr_steps_building = Stats::get(&s.steps_building);
    status.nr_steps_copying_to = Stats::get(&s.steps_copying_to);
    status.nr_steps_copying_from = Stats::get(&s.steps_copying_from);
    status.nr_steps_waiting_for_download_slot = Stats::get(&s.steps_waiting_local);
    status.nr_unsupported_steps_aborted = Stats::get(&s.unsupported_aborted);
    status.bytes_sent = Stats::get(&s.bytes_sent);
    status.bytes_received = Stats::get(&s.bytes_received);
    status.nr_builds_read = Stats::get(&s.builds_read);
    status.build_read_time_ms = Stats::get(&s.build_read_time_ms);
    status.build_read_time_avg_ms = Stats::get(&s.build_read_time_ms) as f64 / builds_read as f64;
    status.nr_builds_done = Stats::get(&s.builds_done);
    status.nr_builds_succeeded = Stats::get(&s.builds_succeeded);
    status.nr_builds_failed = Stats::get(&s.builds_failed);
    status.nr_steps_started = Stats::get(&s.steps_started);
    status.nr_steps_done = Stats::get(&s.steps_done);
    status.nr_retries = Stats::get(&s.retries);
    status.max_nr_retries = Stats::get(&s.max_retries);
    status.nr_queue_wakeups = Stats::get(&s.queue_wakeups);
    status.nr_dispatcher_wakeups = Stats::get(&s.dispatcher_wakeups);
    status.dispatch_time_ms = Stats::get(&s.dispatch_time_us) / 1000;
    status.dispatch_time_avg_ms = Stats::get(&s.dispatch_time_us) as f64 / 1000.0 / wakeups as f64;
    let predictions = Stats::get(&s.predictions);
    status.nr_predictions = predictions;
    let per_prediction = |us: u64| us as f64 / 1000.0 / predictions.max(1) as f64;
    status.prediction_time_avg_ms = per_prediction(Stats::get(&s.prediction_time_us));
    status.prediction_lock_time_avg_ms = per_prediction(Stats::get(&s.prediction_lock_time_us));
    status.prediction_time_last_ms = Stats::get(&s.prediction_last_us) as f64 / 1000.0;
    status.prediction_lock_time_last_ms = Stats::get(&s.prediction_last_lock_us) as f64 / 1000.0;
    status.total_step_time = Stats::get(&s.total_step_time_ms) / 1000;
    status.total_step_build_time = Stats::get(&s.total_step_build_time_ms) / 1000;
    status.avg_step_time = Stats::get(&s.total_step_time_ms) as f64 / 1000.0 / done as f64;
    status.avg_step_build_time =
        Stats::get(&s.total_step_build_time_ms) as f64 / 1000.0 / done as f64;
    status.machines = machines_status(queue);
    status.jobsets = jobsets_status(queue);
    status.store = StoreStatus {
        uri: queue.ctx.dest.describe(),
    };
    status
}

async fn status(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    axum::Json(runner_status(&queue))
}

async fn machines(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    axum::Json(machines_status(&queue))
}

async fn jobsets(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    axum::Json(jobsets_status(&queue))
}

async fn steps(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    let state = queue.lock();
    let steps: Vec<Value> = state
        .steps
        .values()
        .map(|s| {
            json!({
                "drvPath": s.drv_path,
                "system": s.system,
                "runnable": s.is_runnable(),
                "machine": s.running.as_ref().map(|r| r.machine.clone()),
                "tries": s.tries,
                "deps": s.deps.len(),
                "rdeps": s.rdeps.len(),
                "builds": s.builds,
                "highestGlobalPriority": s.highest_global_priority,
                "highestLocalPriority": s.highest_local_priority,
                "lowestBuildID": s.lowest_build_id,
            })
        })
        .collect();
    axum::Json(Value::Array(steps))
}

/// Prometheus text.
pub(crate) fn metrics_text(queue: &Queue) -> String {
    let s = &queue.stats;
    let mut out = Text::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        out.counter(&format!("hydraqueuerunner_{name}"), help, value);
    };
    counter(
        "queue_checks_started_total",
        "Queue checks started",
        Stats::get(&s.queue_checks_started),
    );
    counter(
        "queue_checks_finished_total",
        "Queue checks finished",
        Stats::get(&s.queue_checks_finished),
    );
    counter(
        "queue_steps_created_total",
        "Steps created",
        Stats::get(&s.queue_steps_created),
    );
    counter(
        "builds_read",
        "Builds read from the database",
        Stats::get(&s.builds_read),
    );
    counter(
        "builds_finished",
        "Builds finished",
        Stats::get(&s.builds_done),
    );
    counter(
        "builds_succeeded",
        "Builds succeeded",
        Stats::get(&s.builds_succeeded),
    );
    counter(
        "builds_failed",
        "Builds failed",
        Stats::get(&s.builds_failed),
    );
    counter(
        "steps_started",
        "Steps started",
        Stats::get(&s.steps_started),
    );
    counter(
        "steps_finished",
        "Steps finished",
        Stats::get(&s.steps_done),
    );
    counter("steps_retries", "Step retries", Stats::get(&s.retries));
    counter(
        "steps_unsupported_aborted",
        "Steps failed as unsupported",
        Stats::get(&s.unsupported_aborted),
    );
    counter(
        "dispatch_wakeup",
        "Dispatcher wake-ups",
        Stats::get(&s.dispatcher_wakeups),
    );
    counter(
        "monitor_checks",
        "Queue monitor wake-ups",
        Stats::get(&s.queue_wakeups),
    );
    counter(
        "dispatch_time_ms",
        "Time spent dispatching",
        Stats::get(&s.dispatch_time_us) / 1000,
    );
    counter(
        "steps_total_time_ms",
        "Time spent in steps",
        Stats::get(&s.total_step_time_ms),
    );
    counter(
        "steps_total_build_time_ms",
        "Time spent building",
        Stats::get(&s.total_step_build_time_ms),
    );
    let (builds, steps, runnable, active, machines_total, machines_in_use, per_machine) = {
        let state = queue.lock();
        let per_machine: Vec<(hydra_metrics::Labels, [f64; 3])> = state
            .machines
            .list()
            .iter()
            .map(|m| {
                let labels = vec![("machine".to_string(), m.machine.store_uri.clone())];
                let figures = [
                    f64::from(m.current_jobs),
                    m.steps_done as f64,
                    f64::from(m.consecutive_failures),
                ];
                (labels, figures)
            })
            .collect();
        (
            state.builds.len(),
            state.steps.len(),
            state.steps.values().filter(|s| s.is_runnable()).count(),
            state.steps.values().filter(|s| s.running.is_some()).count(),
            state.machines.list().len(),
            state
                .machines
                .list()
                .iter()
                .filter(|m| m.current_jobs > 0)
                .count(),
            per_machine,
        )
    };
    let mut gauge = |name: &str, help: &str, value: u64| {
        out.gauge(&format!("hydraqueuerunner_{name}"), help, value as f64);
    };
    gauge("builds_unfinished", "Builds in the queue", builds as u64);
    gauge("steps_unfinished", "Steps in the queue", steps as u64);
    gauge(
        "steps_runnable",
        "Steps waiting for a machine",
        runnable as u64,
    );
    gauge("steps_building", "Steps running", active as u64);
    gauge("machines_total", "Machines", machines_total as u64);
    gauge(
        "machines_in_use",
        "Machines with a step",
        machines_in_use as u64,
    );
    gauge(
        "uptime_seconds",
        "Seconds since start",
        queue.started.elapsed().as_secs(),
    );
    // Per machine: current jobs, steps done, consecutive failures.
    let per = |figure: usize| -> Vec<(hydra_metrics::Labels, f64)> {
        per_machine
            .iter()
            .map(|(labels, figures)| (labels.clone(), figures[figure]))
            .collect()
    };
    out.samples(
        "hydraqueuerunner_machine_current_jobs",
        "Steps running on a machine",
        "gauge",
        &per(0),
    );
    out.samples(
        "hydraqueuerunner_machine_steps_done",
        "Steps a machine finished",
        "counter",
        &per(1),
    );
    out.samples(
        "hydraqueuerunner_machine_consecutive_failures",
        "Failures of a machine in a row",
        "gauge",
        &per(2),
    );
    out.finish()
}

async fn metrics(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, hydra_metrics::CONTENT_TYPE)],
        metrics_text(&queue),
    )
}

/// Why queued build `id` waits (see `waiting.rs`).
async fn waiting(
    AxumState(queue): AxumState<Arc<Queue>>,
    axum::extract::Path(id): axum::extract::Path<i32>,
) -> impl IntoResponse {
    let id = hydra_db::ids::BuildId(id);
    let mut answer = {
        let state = queue.lock();
        let now = std::time::Instant::now();
        crate::waiting::explain(&state, id, now, i64::from(hydra_db::now()))
    };
    let predictions = queue.predictions();
    answer.eta = predictions.builds.get(&id).copied();
    for b in &mut answer.blocking {
        b.eta = predictions.steps.get(&b.drv_path).copied();
    }
    axum::Json(answer)
}

/// When each unfinished step of queued build `id` is expected to be
/// built (derivation → prediction), for its graph.
async fn build_steps(
    AxumState(queue): AxumState<Arc<Queue>>,
    axum::extract::Path(id): axum::extract::Path<i32>,
) -> impl IntoResponse {
    let drvs = {
        let state = queue.lock();
        let drvs: Vec<String> = state
            .closure(hydra_db::ids::BuildId(id))
            .iter()
            .map(|s| s.drv_path.clone())
            .collect();
        drvs
    };
    let predictions = queue.predictions();
    let etas: BTreeMap<String, hydra_db::etas::Eta> = drvs
        .into_iter()
        .filter_map(|d| Some((d.clone(), *predictions.steps.get(&d)?)))
        .collect();
    axum::Json(etas)
}
