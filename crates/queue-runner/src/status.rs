//! The status endpoint on `queue_runner_metrics_address`: `/status` (the
//! queue runner, its machines and jobsets, in Hydra's field names),
//! `/status/machines`, `/status/jobsets`, `/status/steps`, and `/metrics`
//! (Prometheus text, `hydraqueuerunner_*`).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::state::{Queue, Stats};

/// Serves the endpoint on `listener` until the task is aborted.
pub fn serve(queue: &Arc<Queue>, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(address = %local, "queue runner status at http://{local}/status");
    }
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/status/machines", get(machines))
        .route("/status/jobsets", get(jobsets))
        .route("/status/steps", get(steps))
        .route("/metrics", get(metrics))
        .with_state(queue.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the status endpoint stopped");
        }
    })
}

/// An instant as Unix seconds.
fn unix_of(t: Option<Instant>) -> Value {
    let Some(t) = t else { return Value::Null };
    let now = Instant::now();
    let unix = i64::from(hydra_db::now());
    json!(if t >= now {
        unix + (t - now).as_secs() as i64
    } else {
        unix - (now - t).as_secs() as i64
    })
}

fn machines_json(queue: &Queue) -> Value {
    let state = queue.lock();
    let now = Instant::now();
    let mut out = serde_json::Map::new();
    for m in state.machines.list() {
        let done = m.steps_done.max(1);
        out.insert(
            m.machine.store_uri.clone(),
            json!({
                "enabled": m.enabled,
                "systemTypes": m.machine.systems,
                "supportedFeatures": m.machine.supported_features,
                "mandatoryFeatures": m.machine.mandatory_features,
                "maxJobs": m.machine.max_jobs,
                "speedFactor": m.machine.speed_factor,
                "currentJobs": m.current_jobs,
                "nrStepsDone": m.steps_done,
                "consecutiveFailures": m.consecutive_failures,
                "disabledUntil": unix_of(m.disabled_until.filter(|t| *t > now)),
                "lastFailure": unix_of(m.last_failure),
                "idleSince": unix_of(m.idle_since),
                "totalStepTime": m.total_step_time.as_secs(),
                "totalStepBuildTime": m.total_build_time.as_secs(),
                "avgStepTime": m.total_step_time.as_secs_f64() / done as f64,
                "avgStepBuildTime": m.total_build_time.as_secs_f64() / done as f64,
            }),
        );
    }
    Value::Object(out)
}

fn jobsets_json(queue: &Queue) -> Value {
    let state = queue.lock();
    let mut out = serde_json::Map::new();
    for (id, j) in &state.jobsets {
        out.insert(
            id.to_string(),
            json!({"shareUsed": j.share_used(), "seconds": j.seconds, "shares": j.shares}),
        );
    }
    Value::Object(out)
}

fn status_json(queue: &Queue) -> Value {
    let s = &queue.stats;
    let (builds, steps, runnable, active, unsupported_possible, machine_types) = {
        let state = queue.lock();
        let runnable = state.steps.values().filter(|s| s.is_runnable()).count();
        let active = state.steps.values().filter(|s| s.running.is_some()).count();
        let mut types: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for step in state.steps.values() {
            let e = types.entry(step.system.clone()).or_default();
            if step.running.is_some() {
                e.1 += 1;
            } else if step.deps.is_empty() {
                e.0 += 1;
            }
        }
        (
            state.builds.len(),
            state.steps.len(),
            runnable,
            active,
            0u64,
            types,
        )
    };
    let done = Stats::get(&s.steps_done).max(1);
    let wakeups = Stats::get(&s.dispatcher_wakeups).max(1);
    let builds_read = Stats::get(&s.builds_read).max(1);
    json!({
        "status": "up",
        "time": hydra_db::now(),
        "uptime": queue.started.elapsed().as_secs(),
        "pid": std::process::id(),
        "nrQueuedBuilds": builds,
        "nrUnfinishedSteps": steps,
        "nrRunnableSteps": runnable,
        "nrActiveSteps": active,
        "nrStepsBuilding": Stats::get(&s.steps_building),
        "nrStepsCopyingTo": Stats::get(&s.steps_copying_to),
        "nrStepsCopyingFrom": Stats::get(&s.steps_copying_from),
        "nrStepsWaitingForDownloadSlot": Stats::get(&s.steps_waiting_local),
        "nrUnsupportedSteps": unsupported_possible,
        "nrUnsupportedStepsAborted": Stats::get(&s.unsupported_aborted),
        "bytesSent": Stats::get(&s.bytes_sent),
        "bytesReceived": Stats::get(&s.bytes_received),
        "nrBuildsRead": Stats::get(&s.builds_read),
        "buildReadTimeMs": Stats::get(&s.build_read_time_ms),
        "buildReadTimeAvgMs": Stats::get(&s.build_read_time_ms) as f64 / builds_read as f64,
        "nrBuildsDone": Stats::get(&s.builds_done),
        "nrBuildsSucceeded": Stats::get(&s.builds_succeeded),
        "nrBuildsFailed": Stats::get(&s.builds_failed),
        "nrStepsStarted": Stats::get(&s.steps_started),
        "nrStepsDone": Stats::get(&s.steps_done),
        "nrRetries": Stats::get(&s.retries),
        "maxNrRetries": Stats::get(&s.max_retries),
        "nrQueueWakeups": Stats::get(&s.queue_wakeups),
        "nrDispatcherWakeups": Stats::get(&s.dispatcher_wakeups),
        "dispatchTimeMs": Stats::get(&s.dispatch_time_us) / 1000,
        "dispatchTimeAvgMs": Stats::get(&s.dispatch_time_us) as f64 / 1000.0 / wakeups as f64,
        "totalStepTime": Stats::get(&s.total_step_time_ms) / 1000,
        "totalStepBuildTime": Stats::get(&s.total_step_build_time_ms) / 1000,
        "avgStepTime": Stats::get(&s.total_step_time_ms) as f64 / 1000.0 / done as f64,
        "avgStepBuildTime": Stats::get(&s.total_step_build_time_ms) as f64 / 1000.0 / done as f64,
        "machineTypes": machine_types.into_iter().map(|(t, (runnable, running))| (t, json!({"runnable": runnable, "running": running}))).collect::<serde_json::Map<_, _>>(),
        "machines": machines_json(queue),
        "jobsets": jobsets_json(queue),
        "store": { "uri": queue.ctx.dest.describe() },
    })
}

async fn status(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    axum::Json(status_json(&queue))
}

async fn machines(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    axum::Json(machines_json(&queue))
}

async fn jobsets(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    axum::Json(jobsets_json(&queue))
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
pub fn metrics_text(queue: &Queue) -> String {
    let s = &queue.stats;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP hydraqueuerunner_{name} {help}");
        let _ = writeln!(out, "# TYPE hydraqueuerunner_{name} counter");
        let _ = writeln!(out, "hydraqueuerunner_{name} {value}");
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
        let per_machine: Vec<(String, u32, u64, u32)> = state
            .machines
            .list()
            .iter()
            .map(|m| {
                (
                    m.machine.store_uri.clone(),
                    m.current_jobs,
                    m.steps_done,
                    m.consecutive_failures,
                )
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
        let _ = writeln!(out, "# HELP hydraqueuerunner_{name} {help}");
        let _ = writeln!(out, "# TYPE hydraqueuerunner_{name} gauge");
        let _ = writeln!(out, "hydraqueuerunner_{name} {value}");
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
    let _ = writeln!(
        out,
        "# HELP hydraqueuerunner_machine_current_jobs Steps running on a machine"
    );
    let _ = writeln!(out, "# TYPE hydraqueuerunner_machine_current_jobs gauge");
    for (uri, current, _, _) in &per_machine {
        let _ = writeln!(
            out,
            "hydraqueuerunner_machine_current_jobs{{machine=\"{}\"}} {current}",
            escape(uri)
        );
    }
    let _ = writeln!(
        out,
        "# HELP hydraqueuerunner_machine_steps_done Steps a machine finished"
    );
    let _ = writeln!(out, "# TYPE hydraqueuerunner_machine_steps_done counter");
    for (uri, _, done, _) in &per_machine {
        let _ = writeln!(
            out,
            "hydraqueuerunner_machine_steps_done{{machine=\"{}\"}} {done}",
            escape(uri)
        );
    }
    let _ = writeln!(
        out,
        "# HELP hydraqueuerunner_machine_consecutive_failures Failures of a machine in a row"
    );
    let _ = writeln!(
        out,
        "# TYPE hydraqueuerunner_machine_consecutive_failures gauge"
    );
    for (uri, _, _, failures) in &per_machine {
        let _ = writeln!(
            out,
            "hydraqueuerunner_machine_consecutive_failures{{machine=\"{}\"}} {failures}",
            escape(uri)
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(AxumState(queue): AxumState<Arc<Queue>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_text(&queue),
    )
}
