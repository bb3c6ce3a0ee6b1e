//! Building one step on one machine through the serve protocol: copy the
//! inputs the machine lacks, build the derivation's basic form while the
//! log goes to `build-logs/`, fetch the outputs as NARs into the local
//! store (reading `nix-support/` on the way) and the destination store,
//! and record the result. Failures that may pass another time are retried
//! with back-off; a machine that cannot be reached is backed off.

use hydra_db::ids::{BuildId, JobsetId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hydra_db::status::{BuildStatus as Status, Busy, StepStatus};
use hydra_nix::derivation::{Derivation, DerivationError};
use hydra_nix::serve::{BuildOptions, BuildStatus, PathInfo, ServeClient, ServeError};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::QueueError;
use crate::finish::{self, Failure, Results};
use crate::products::{self, OutputScan};
use crate::state::{Queue, Stats};

/// What the step needs to know about its builds, taken from the queue when
/// it starts.
struct Plan {
    outputs: BTreeMap<String, String>,
    system: String,
    /// The build the step runs for.
    build: BuildId,
    /// Builds whose own derivation this is.
    toplevel_of: BTreeSet<BuildId>,
    options: BuildOptions,
    jobsets: BTreeSet<JobsetId>,
}

/// How a step ended.
/// A step being run: what every stage of running it reads.
#[derive(Clone, Copy)]
struct Job<'a> {
    queue: &'a Arc<Queue>,
    drv_path: &'a str,
    machine: &'a str,
    plan: &'a Plan,
    cancel: &'a CancellationToken,
}

enum Outcome {
    Succeeded {
        results: Results,
        times_built: i32,
        non_deterministic: bool,
    },
    Failed(Failure),
    /// Failed in a way that may pass another time (machine trouble,
    /// transient failure).
    Retry {
        status: StepStatus,
        error: String,
    },
    /// No build needs it any more, or the queue runner stops.
    Cancelled,
}

/// Keeps the machine's slot until released (once).
struct Slot<'a> {
    queue: &'a Queue,
    machine: String,
    released: bool,
}

impl Slot<'_> {
    fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let mut state = self.queue.lock();
        if let Some(m) = state.machines.get_mut(&self.machine) {
            m.current_jobs = m.current_jobs.saturating_sub(1);
            if m.current_jobs == 0 {
                m.idle_since = Some(Instant::now());
            }
        }
        drop(state);
        self.queue.dispatch.notify_one();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

fn plan(queue: &Queue, drv_path: &str) -> Option<Plan> {
    let state = queue.lock();
    let step = state.steps.get(drv_path)?;
    let dependents = state.dependent_builds(drv_path);
    let build = step
        .builds
        .iter()
        .next()
        .or_else(|| dependents.iter().next())
        .copied()?;
    let qr = &queue.ctx.config.queue_runner;
    let mut max_silent = 0u64;
    let mut timeout = 0u64;
    let mut repeats = 0u32;
    for id in &dependents {
        if let Some(b) = state.builds.get(id) {
            max_silent = max_silent.max(
                b.max_silent
                    .map_or(qr.default_max_silent_time, |v| v.max(0) as u64),
            );
            timeout = timeout.max(
                b.timeout
                    .map_or(qr.default_build_timeout, |v| v.max(0) as u64),
            );
            for r in &qr.jobset_repeats {
                if r.project == b.project && r.jobset == b.jobset {
                    repeats = repeats.max(r.repeats);
                }
            }
        }
    }
    if step.builds.is_empty() {
        // Only a dependency: the defaults are a floor.
        max_silent = max_silent.max(qr.default_max_silent_time);
        timeout = timeout.max(qr.default_build_timeout);
    }
    if step.check_determinism && repeats == 0 {
        repeats = 1;
    }
    Some(Plan {
        outputs: step.outputs.clone(),
        system: step.system.clone(),
        build,
        toplevel_of: step.builds.clone(),
        options: BuildOptions {
            max_silent_time: max_silent,
            build_timeout: timeout,
            max_log_size: qr.max_log_size,
            repeats: u64::from(repeats),
            enforce_determinism: repeats > 0,
            keep_failed: false,
        },
        jobsets: step.jobsets.clone(),
    })
}

/// Runs the step `drv_path` on `machine` (whose slot the dispatcher took).
pub(crate) async fn run(
    queue: Arc<Queue>,
    drv_path: String,
    machine: String,
    cancel: CancellationToken,
) {
    let mut slot = Slot {
        queue: &queue,
        machine: machine.clone(),
        released: false,
    };
    let Some(plan) = plan(&queue, &drv_path) else {
        // No build needs it any more.
        let mut state = queue.lock();
        state.stop(&drv_path, None);
        state.release([drv_path]);
        return;
    };
    let span =
        tracing::info_span!("step", drv = %drv_path, build = plan.build.0, machine = %machine);
    let mut opened = None;
    let job = Job {
        queue: &queue,
        drv_path: &drv_path,
        machine: &machine,
        plan: &plan,
        cancel: &cancel,
    };
    let executed = execute(job, &mut slot, &mut opened).instrument(span).await;
    if let Err(e) = executed {
        tracing::error!(drv = %drv_path, error = %e, "cannot record the step's result");
        // Its row, if one was started, must not stay busy: it is closed as
        // aborted as soon as the database takes writes again.
        if let Some((build, stepnr)) = opened {
            let pool = queue.ctx.pool.clone();
            let why = format!("the queue runner could not record this step's result: {e}");
            queue.background(async move {
                finish::close_abandoned_step(&pool, build, stepnr, &why).await;
            });
        }
        // Leave it to be tried again, and tell the dispatcher when (the
        // machine's slot may have been given back already, with the step
        // still marked running).
        {
            let mut state = queue.lock();
            state.stop(&drv_path, Some(Instant::now() + Duration::from_secs(10)));
        }
        queue.dispatch.notify_one();
    }
    slot.release();
}

/// Runs the step and records its outcome; `opened` is its row once it
/// has one.
async fn execute(
    job: Job<'_>,
    slot: &mut Slot<'_>,
    opened: &mut Option<(BuildId, i32)>,
) -> Result<(), QueueError> {
    let Job {
        queue,
        drv_path,
        machine,
        plan,
        ..
    } = job;
    let ctx = &queue.ctx;
    let pool = &ctx.pool;

    // Outputs that failed before: a cached failure, nothing is built.
    let outputs: BTreeSet<String> = plan
        .outputs
        .values()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect();
    if !finish::failed_paths(pool, &outputs).await?.is_empty() {
        let failure = Failure::of(StepStatus::CachedFailure, None);
        let t = hydra_db::now();
        let run = step_run(job, None, t, t, None);
        return fail_for_good(queue, plan, &run, &failure).await;
    }

    let start = hydra_db::now();
    let started = Instant::now();
    let toplevel: Vec<BuildId> = plan.toplevel_of.iter().copied().collect();
    let stepnr = finish::start_step(
        pool,
        plan.build,
        drv_path,
        machine,
        &plan.system,
        &plan.outputs,
        &toplevel,
    )
    .await?;
    *opened = Some((plan.build, stepnr));
    Stats::add(&queue.stats.steps_started, 1);
    let log_path = ctx.log_path(drv_path);

    let outcome = tokio::select! {
        outcome = build(job, stepnr, &log_path, slot) => outcome,
        _ = job.cancel.cancelled() => Outcome::Cancelled,
    };
    let stop = hydra_db::now();
    account_time(job, start, stop, started.elapsed());
    let log_str = log_path.to_string_lossy().into_owned();
    let log = log_path.exists().then_some(log_str.as_str());
    let run = step_run(job, Some(stepnr), start, stop, log);
    record(job, &run, outcome).await?;
    queue.dispatch.notify_one();
    queue.predict.notify_one();
    Ok(())
}

/// The step's row data for `finish`.
fn step_run<'a>(
    job: Job<'a>,
    stepnr: Option<i32>,
    start: i32,
    stop: i32,
    log: Option<&'a str>,
) -> finish::StepRun<'a> {
    finish::StepRun {
        build: job.plan.build,
        stepnr,
        drv_path: job.drv_path,
        machine: job.machine,
        outputs: &job.plan.outputs,
        start,
        stop,
        log,
    }
}

/// Adds the step's time to its machine, its jobsets' shares and the
/// statistics.
fn account_time(job: Job<'_>, start: i32, stop: i32, elapsed: Duration) {
    let queue = job.queue;
    {
        let mut state = queue.lock();
        if let Some(m) = state.machines.get_mut(job.machine) {
            m.total_step_time += elapsed;
            m.steps_done += 1;
        }
        for j in &job.plan.jobsets {
            if let Some(share) = state.jobsets.get_mut(j) {
                share.add(i64::from(start), i64::from(stop - start));
            }
        }
    }
    Stats::add(&queue.stats.steps_done, 1);
    Stats::add(&queue.stats.total_step_time_ms, elapsed.as_millis() as u64);
}

/// Records how the step went: its builds finished, or the step queued
/// again.
async fn record(
    job: Job<'_>,
    run: &finish::StepRun<'_>,
    outcome: Outcome,
) -> Result<(), QueueError> {
    match outcome {
        Outcome::Succeeded {
            results,
            times_built,
            non_deterministic,
        } => {
            crate::eta::learn(
                job.queue,
                job.drv_path,
                &job.plan.system,
                job.machine,
                run.stop - run.start,
                job.plan.build,
            );
            let success = finish::Success {
                results: &results,
                times_built,
                non_deterministic,
                overhead: 0,
            };
            succeeded(job, run, &success).await
        }
        Outcome::Failed(failure) => fail_for_good(job.queue, job.plan, run, &failure).await,
        Outcome::Retry { status, error } => retry_or_fail(job, run, status, error).await,
        Outcome::Cancelled => cancelled(job, run).await,
    }
}

/// The row of a step that ran.
fn stepnr_of(run: &finish::StepRun<'_>) -> Result<i32, QueueError> {
    run.stepnr
        .ok_or_else(|| QueueError::Machines("a step that ran has no row".into()))
}

async fn succeeded(
    job: Job<'_>,
    run: &finish::StepRun<'_>,
    success: &finish::Success<'_>,
) -> Result<(), QueueError> {
    let Job {
        queue,
        drv_path,
        machine,
        plan,
        ..
    } = job;
    let ctx = &queue.ctx;
    let toplevel: Vec<BuildId> = plan.toplevel_of.iter().copied().collect();
    let finished =
        finish::step_succeeded(&ctx.pool, run, stepnr_of(run)?, &toplevel, success).await?;
    if let Some(log) = run.log
        && ctx.config.queue_runner.upload_logs_to_binary_cache
        && !ctx.dest.is_machine_store()
        && let Err(e) = ctx
            .dest
            .upload_log(drv_path, std::path::Path::new(log))
            .await
    {
        tracing::warn!(error = %e, "cannot upload the log to the binary cache");
    }
    let n = finished.len() as u64;
    Stats::add(&queue.stats.builds_done, n);
    Stats::add(&queue.stats.builds_succeeded, n);
    let mut state = queue.lock();
    let mut tops = Vec::new();
    for id in finished.iter().chain(&plan.toplevel_of) {
        if let Some(build) = state.builds.remove(id) {
            tops.push(build.toplevel);
        }
    }
    state.remove_step(drv_path);
    if let Some(m) = state.machines.get_mut(machine) {
        m.succeeded();
    }
    state.release(tops);
    Ok(())
}

/// A step that failed in a way worth another try: tried again later
/// (with backoff) until `max_tries`, then failed for good.
async fn retry_or_fail(
    job: Job<'_>,
    run: &finish::StepRun<'_>,
    status: StepStatus,
    error: String,
) -> Result<(), QueueError> {
    let Job {
        queue, drv_path, ..
    } = job;
    let ctx = &queue.ctx;
    let max_tries = ctx.config.queue_runner.max_tries.max(1);
    let tries = queue.lock().steps.get(drv_path).map_or(0, |s| s.tries) + 1;
    if tries >= max_tries {
        let failure = Failure::of(status, Some(error));
        return fail_for_good(queue, job.plan, run, &failure).await;
    }
    finish::step_will_retry(
        &ctx.pool,
        run.build,
        stepnr_of(run)?,
        status,
        &error,
        run.stop,
        run.log,
    )
    .await?;
    let interval = ctx.config.queue_runner.retry_interval as f64;
    let backoff = ctx.config.queue_runner.retry_backoff;
    let delay = interval * backoff.powi(tries as i32 - 1);
    tracing::warn!(drv = %drv_path, tries, retry_in = delay, error = %error, "step failed; it will be tried again");
    Stats::add(&queue.stats.retries, 1);
    queue
        .stats
        .max_retries
        .fetch_max(u64::from(tries), std::sync::atomic::Ordering::Relaxed);
    let mut state = queue.lock();
    if let Some(step) = state.steps.get_mut(drv_path) {
        step.tries = tries;
    }
    state.stop(
        drv_path,
        Some(Instant::now() + Duration::from_secs_f64(delay.max(0.0))),
    );
    Ok(())
}

/// A step stopped because no build needs it any more, or the queue
/// runner stops.
async fn cancelled(job: Job<'_>, run: &finish::StepRun<'_>) -> Result<(), QueueError> {
    let Job {
        queue, drv_path, ..
    } = job;
    let (code, why) = if queue.stopping.is_cancelled() {
        (StepStatus::Aborted, "the queue runner stopped")
    } else {
        (StepStatus::Cancelled, "no build needs this step any more")
    };
    finish::step_will_retry(
        &queue.ctx.pool,
        run.build,
        stepnr_of(run)?,
        code,
        why,
        run.stop,
        run.log,
    )
    .await?;
    tracing::info!(drv = %drv_path, "step cancelled: {why}");
    let mut state = queue.lock();
    state.stop(drv_path, None);
    state.release([drv_path.to_string()]);
    Ok(())
}

/// A step that failed for good: `run`'s builds and every build that
/// needs the step fail.
async fn fail_for_good(
    queue: &Arc<Queue>,
    plan: &Plan,
    first: &finish::StepRun<'_>,
    failure: &Failure,
) -> Result<(), QueueError> {
    let drv_path = first.drv_path;
    // Builds that were linked to the step while its failure was written
    // (a load in progress) fail too, in further rounds, until none is left;
    // only then does the step leave the queue, under the same lock, and is
    // remembered as failed for loads that saw it queued.
    let mut handled: BTreeSet<BuildId> = BTreeSet::new();
    let mut round = 0;
    loop {
        let (dependents, toplevel_of) = {
            let mut state = queue.lock();
            let dependents: BTreeSet<BuildId> = state
                .dependent_builds(drv_path)
                .difference(&handled)
                .copied()
                .collect();
            if round > 0 && dependents.is_empty() {
                let mut tops = Vec::new();
                for id in &handled {
                    if let Some(build) = state.builds.remove(id) {
                        tops.push(build.toplevel);
                    }
                }
                state.remove_step(drv_path);
                state.note_failed(drv_path);
                state.release(tops);
                break;
            }
            let toplevel_of: BTreeSet<BuildId> = if round == 0 {
                plan.toplevel_of.iter().copied().collect()
            } else {
                dependents
                    .iter()
                    .copied()
                    .filter(|id| state.builds.get(id).is_some_and(|b| b.toplevel == drv_path))
                    .collect()
            };
            (dependents, toplevel_of)
        };
        let run = finish::StepRun {
            stepnr: if round == 0 { first.stepnr } else { None },
            ..*first
        };
        let finished =
            finish::step_failed(&queue.ctx.pool, &run, &toplevel_of, &dependents, failure).await?;
        if round == 0 {
            tracing::info!(drv = %drv_path, status = failure.status.describe(), builds = finished.len(), "step failed");
        } else {
            tracing::info!(drv = %drv_path, builds = finished.len(), "builds linked to a failing step failed with it");
        }
        let n = finished.len() as u64;
        Stats::add(&queue.stats.builds_done, n);
        Stats::add(&queue.stats.builds_failed, n);
        handled.extend(dependents);
        handled.insert(plan.build);
        handled.extend(finished);
        round += 1;
    }
    queue.dispatch.notify_one();
    Ok(())
}

/// A step no machine supports: every build that needs it fails with 9.
pub(crate) async fn fail_unsupported(queue: &Arc<Queue>, drv_path: &str) {
    let Some(plan) = plan(queue, drv_path) else {
        return;
    };
    let message = format!("unsupported system type '{}'{}", plan.system, {
        let state = queue.lock();
        state
            .steps
            .get(drv_path)
            .filter(|s| !s.required_features.is_empty())
            .map(|s| {
                format!(
                    " with features {}",
                    s.required_features
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .unwrap_or_default()
    });
    tracing::warn!(drv = %drv_path, "{message}");
    let failure = Failure::of(StepStatus::Unsupported, Some(message));
    let t = hydra_db::now();
    Stats::add(&queue.stats.unsupported_aborted, 1);
    let run = finish::StepRun {
        build: plan.build,
        stepnr: None,
        drv_path,
        machine: "",
        outputs: &plan.outputs,
        start: t,
        stop: t,
        log: None,
    };
    if let Err(e) = fail_for_good(queue, &plan, &run, &failure).await {
        tracing::error!(error = %e, "cannot record an unsupported step");
    }
}

/// The machine's error, as a retryable outcome, backing the machine off.
fn machine_trouble(queue: &Queue, machine: &str, error: impl std::fmt::Display) -> Outcome {
    let mut state = queue.lock();
    if let Some(m) = state.machines.get_mut(machine) {
        m.failed(Instant::now());
    }
    Outcome::Retry {
        status: StepStatus::Aborted,
        error: error.to_string(),
    }
}

/// The step's derivation and the output paths of its inputs, read from
/// their `.drv` files.
async fn read_derivations(
    queue: &Queue,
    drv_path: &str,
) -> Result<(Derivation, BTreeMap<String, BTreeMap<String, String>>), String> {
    let ctx = queue.ctx.clone();
    let drv_path = drv_path.to_string();
    tokio::task::spawn_blocking(move || {
        let drv = ctx.read_derivation(&drv_path)?;
        let mut inputs = BTreeMap::new();
        for path in drv.input_drvs.keys() {
            let d = ctx.read_derivation(path)?;
            inputs.insert(
                path.clone(),
                d.outputs.into_iter().map(|(n, o)| (n, o.path)).collect(),
            );
        }
        Ok((drv, inputs))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Records the step's progress (a failure to is only logged).
async fn set_busy(job: Job<'_>, stepnr: i32, state: Busy) {
    if let Err(e) = finish::set_busy(&job.queue.ctx.pool, job.plan.build, stepnr, state).await {
        tracing::warn!(error = %e, "cannot record the step's progress");
    }
}

/// A failure of the step itself, not worth another try.
fn aborted(error: String) -> Outcome {
    Outcome::Failed(Failure::of(StepStatus::Aborted, Some(error)))
}

/// A failure around the step (a file, the machine list, a store), worth
/// another try.
fn retry(error: String) -> Outcome {
    Outcome::Retry {
        status: StepStatus::Aborted,
        error,
    }
}

/// What the build reported.
struct Built {
    times_built: i32,
    non_deterministic: bool,
}

/// Builds the step on its machine: inputs copied there, the derivation
/// built with its log written to `log_path`, outputs copied back and
/// analysed.
async fn build(
    job: Job<'_>,
    stepnr: i32,
    log_path: &std::path::Path,
    slot: &mut Slot<'_>,
) -> Outcome {
    match build_stages(job, stepnr, log_path, slot).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

async fn build_stages(
    job: Job<'_>,
    stepnr: i32,
    log_path: &std::path::Path,
    slot: &mut Slot<'_>,
) -> Result<Outcome, Outcome> {
    let basic = basic_derivation(job).await?;
    set_busy(job, stepnr, Busy::Connecting).await;
    let (mut remote, is_local) = connect(job).await?;
    send_inputs(job, stepnr, &mut remote, is_local, &basic).await?;
    set_busy(job, stepnr, Busy::Building).await;
    let built = run_build(job, &mut remote, &basic, log_path).await?;
    let scans = receive(job, stepnr, remote, is_local, slot, &built).await?;
    set_busy(job, stepnr, Busy::PostProcessing).await;
    let ctx = &job.queue.ctx;
    let analysis = products::analyse(&scans);
    let closure_size = ctx
        .dest
        .closure_size(&job.plan.outputs.values().cloned().collect())
        .await
        .unwrap_or(0);
    ctx.register_roots(job.plan.outputs.values());
    Ok(Outcome::Succeeded {
        results: Results {
            status: if analysis.failed {
                Status::FailedWithOutput
            } else {
                Status::Succeeded
            },
            analysis,
            closure_size,
        },
        times_built: built.times_built,
        non_deterministic: built.non_deterministic,
    })
}

/// The basic derivation: inputs replaced by their outputs.
async fn basic_derivation(job: Job<'_>) -> Result<hydra_nix::derivation::BasicDerivation, Outcome> {
    let (drv, inputs) = read_derivations(job.queue, job.drv_path)
        .await
        .map_err(retry)?;
    drv.to_basic(&mut |p: &str| {
        inputs
            .get(p)
            .cloned()
            .ok_or_else(|| DerivationError::Invalid(format!("input {p} not read")))
    })
    .map_err(|e| aborted(e.to_string()))
}

/// A connection to the step's machine (a pooled one that still answers,
/// else a new one), and whether the machine is this one.
async fn connect(job: Job<'_>) -> Result<(ServeClient, bool), Outcome> {
    let Job { queue, machine, .. } = job;
    let (transport, is_local) = {
        let state = queue.lock();
        let m = state
            .machines
            .list()
            .iter()
            .find(|m| m.machine.store_uri == machine)
            .ok_or_else(|| retry(format!("machine {machine} is gone")))?;
        (m.transport(&queue.ctx), m.is_local())
    };
    let transport = transport.map_err(|e| machine_trouble(queue, machine, e))?;
    let mut pooled = queue.take_connection(machine);
    if let Some(client) = pooled.as_mut()
        && client
            .query_valid_paths(&BTreeSet::new(), false, false)
            .await
            .is_err()
    {
        pooled = None;
    }
    let remote = match pooled {
        Some(c) => c,
        None => ServeClient::connect(&transport, Duration::from_secs(60))
            .await
            .map_err(|e| machine_trouble(queue, machine, e))?,
    };
    Ok((remote, is_local))
}

/// Inputs only in the destination cache are fetched into the local store
/// first; then everything in the closure of the inputs that the machine
/// lacks is sent to it.
async fn send_inputs(
    job: Job<'_>,
    stepnr: i32,
    remote: &mut ServeClient,
    is_local: bool,
    basic: &hydra_nix::derivation::BasicDerivation,
) -> Result<(), Outcome> {
    let Job { queue, machine, .. } = job;
    let ctx = &queue.ctx;
    let local_store = hydra_store::LocalStore::new(ctx.local.clone());
    if let Err(e) = ctx
        .dest
        .copy_to_local(&local_store, &basic.input_srcs)
        .await
    {
        return Err(retry(format!(
            "cannot get the inputs from {}: {e}",
            ctx.dest.describe()
        )));
    }
    if is_local {
        return Ok(());
    }
    set_busy(job, stepnr, Busy::SendingInputs).await;
    Stats::add(&queue.stats.steps_copying_to, 1);
    let copied = copy_inputs(queue, remote, &basic.input_srcs).await;
    queue
        .stats
        .steps_copying_to
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let bytes = copied.map_err(|e| machine_trouble(queue, machine, e))?;
    Stats::add(&queue.stats.bytes_sent, bytes);
    Ok(())
}

/// Builds the derivation, with the log written to `log_path` as it
/// arrives; a build that did not succeed is the step's outcome.
async fn run_build(
    job: Job<'_>,
    remote: &mut ServeClient,
    basic: &hydra_nix::derivation::BasicDerivation,
    log_path: &std::path::Path,
) -> Result<Built, Outcome> {
    let Job {
        queue,
        drv_path,
        machine,
        plan,
        cancel,
    } = job;
    if let Some(dir) = log_path.parent()
        && let Err(e) = tokio::fs::create_dir_all(dir).await
    {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot create the log directory");
    }
    match tokio::fs::File::create(log_path).await {
        Ok(file) => {
            remote.set_log_sink(Some(Box::new(file))).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, log = %log_path.display(), "cannot write the build log")
        }
    }
    Stats::add(&queue.stats.steps_building, 1);
    let build_started = Instant::now();
    let result = remote
        .build_derivation(drv_path, basic, &plan.options, cancel)
        .await;
    queue
        .stats
        .steps_building
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    Stats::add(
        &queue.stats.total_step_build_time_ms,
        build_started.elapsed().as_millis() as u64,
    );
    remote.sync_log(Duration::from_secs(5)).await;
    if let Some(mut sink) = remote.set_log_sink(None).await {
        let _ = sink.flush().await;
    }
    {
        let mut state = queue.lock();
        if let Some(m) = state.machines.get_mut(machine) {
            m.total_build_time += build_started.elapsed();
        }
    }
    let result = match result {
        Ok(r) => r,
        Err(ServeError::Cancelled { .. }) => return Err(Outcome::Cancelled),
        Err(e) => return Err(machine_trouble(queue, machine, e)),
    };
    let built = Built {
        times_built: result.times_built as i32,
        non_deterministic: result.is_non_deterministic,
    };
    let failed = |status: StepStatus, cacheable: bool| {
        Err(Outcome::Failed(Failure {
            status,
            error: Some(result.error_text()),
            cacheable,
            times_built: built.times_built,
            non_deterministic: built.non_deterministic,
        }))
    };
    match result.status {
        s if s.is_success() => Ok(built),
        BuildStatus::PermanentFailure
        | BuildStatus::InputRejected
        | BuildStatus::OutputRejected => failed(StepStatus::Failed, true),
        BuildStatus::TransientFailure => Err(Outcome::Retry {
            status: StepStatus::Failed,
            error: result.error_text(),
        }),
        BuildStatus::TimedOut => failed(StepStatus::TimedOut, false),
        BuildStatus::LogLimitExceeded => failed(StepStatus::LogLimitExceeded, false),
        BuildStatus::NotDeterministic => failed(StepStatus::NotDeterministic, true),
        _ => Err(retry(result.error_text())),
    }
}

/// Brings the outputs over (the machine's slot is given back first, so it
/// may start its next step meanwhile) and scans them.
async fn receive(
    job: Job<'_>,
    stepnr: i32,
    mut remote: ServeClient,
    is_local: bool,
    slot: &mut Slot<'_>,
    built: &Built,
) -> Result<Vec<OutputScan>, Outcome> {
    let Job {
        queue,
        machine,
        plan,
        ..
    } = job;
    set_busy(job, stepnr, Busy::WaitingForLocalSlot).await;
    Stats::add(&queue.stats.steps_waiting_local, 1);
    let permit = queue.local_slots.acquire().await;
    queue
        .stats
        .steps_waiting_local
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    slot.release();
    set_busy(job, stepnr, Busy::ReceivingOutputs).await;
    Stats::add(&queue.stats.steps_copying_from, 1);
    let received = receive_outputs(queue, &mut remote, is_local, plan).await;
    queue
        .stats
        .steps_copying_from
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(permit);
    if received.is_ok() {
        queue.give_back_connection(machine, remote);
    } else {
        let _ = remote.close().await;
    }
    match received {
        Ok(Received::Scans(scans)) => Ok(scans),
        Ok(Received::TooBig(size)) => Err(Outcome::Failed(Failure {
            status: StepStatus::OutputLimitExceeded,
            error: Some(format!(
                "the outputs are {size} bytes, more than max_output_size ({})",
                queue.ctx.config.queue_runner.max_output_size
            )),
            cacheable: false,
            times_built: built.times_built,
            non_deterministic: built.non_deterministic,
        })),
        Err(e) => Err(machine_trouble(queue, machine, e)),
    }
}

/// Copies the closure of `inputs` from the local store to the machine,
/// sending only what it lacks (locked there while the connection lasts).
async fn copy_inputs(
    queue: &Queue,
    remote: &mut ServeClient,
    inputs: &BTreeSet<String>,
) -> Result<u64, String> {
    let mut local =
        ServeClient::connect(&queue.ctx.local.serve_transport(), Duration::from_secs(60))
            .await
            .map_err(|e| format!("cannot open the local store: {e}"))?;
    let report = hydra_nix::copy::copy_closure(&mut local, remote, inputs, true)
        .await
        .map_err(|e| e.to_string())?;
    let _ = local.close().await;
    Ok(report.bytes)
}

enum Received {
    Scans(Vec<OutputScan>),
    TooBig(u64),
}

/// Brings the outputs into the local store (unless they were built there)
/// and the destination store, scanning them for `nix-support/` files.
async fn receive_outputs(
    queue: &Queue,
    remote: &mut ServeClient,
    is_local: bool,
    plan: &Plan,
) -> Result<Received, String> {
    let ctx = &queue.ctx;
    let paths: BTreeSet<String> = plan
        .outputs
        .values()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect();
    let infos: BTreeMap<String, PathInfo> = remote
        .query_path_infos(&paths)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
    if let Some(missing) = paths.iter().find(|p| !infos.contains_key(*p)) {
        return Err(format!("the machine did not produce {missing}"));
    }
    let total: u64 = infos.values().map(|i| i.nar_size).sum();
    let limit = ctx.config.queue_runner.max_output_size;
    if limit > 0 && total > limit {
        return Ok(Received::TooBig(total));
    }
    let order = hydra_nix::copy::topological_order(&infos);
    let name_of: BTreeMap<&String, &String> = plan.outputs.iter().map(|(n, p)| (p, n)).collect();
    let local_store = hydra_store::LocalStore::new(ctx.local.clone());
    let mut scans = Vec::new();
    for path in order {
        let Some(info) = infos.get(&path) else {
            continue;
        };
        let scan = if is_local {
            remote
                .dump_store_path(&path, None, &products::scan_options())
                .await
                .map_err(|e| e.to_string())?
        } else {
            let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
            let (scan, added) = tokio::join!(
                async {
                    let r = remote
                        .dump_store_path(&path, Some(&mut tx), &products::scan_options())
                        .await;
                    drop(tx);
                    r
                },
                local_store.add_nar(info, &mut rx)
            );
            added.map_err(|e| format!("cannot add {path} to the local store: {e}"))?;
            let scan = scan.map_err(|e| e.to_string())?;
            Stats::add(&queue.stats.bytes_received, info.nar_size);
            scan
        };
        ctx.dest
            .copy_from_local(&local_store, &BTreeSet::from([path.clone()]))
            .await
            .map_err(|e| format!("cannot copy {path} to {}: {e}", ctx.dest.describe()))?;
        scans.push(OutputScan {
            name: name_of
                .get(&path)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            path: path.clone(),
            nar_size: info.nar_size,
            scan,
        });
    }
    Ok(Received::Scans(scans))
}
