//! The queue monitor: loads unfinished builds into the queue and reacts to
//! cancellations, deletions, priority bumps and share changes.
//!
//! New builds are loaded together, level by level over their derivations:
//! each level's `.drv` files are read, and one query each asks which of
//! their outputs failed before (`FailedPaths`) and which the destination
//! store has. A derivation whose outputs are all there is not a step; one
//! with a failed output fails every build that needs it (a cached
//! failure); the others become steps (shared with those already queued),
//! and their inputs form the next level.

use hydra_db::ids::{BuildId, JobsetId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hydra_db::builds::QueuedBuild;
use hydra_db::status::BuildStatus;
use hydra_db::{Listener, Wakeup};
use hydra_nix::derivation::Derivation;

use crate::finish;
use crate::state::{Build, Queue, State, Stats};
use crate::{Context, QueueError};

/// The channels the monitor listens on.
pub(crate) const CHANNELS: &[&str] = &[
    "builds_added",
    "builds_restarted",
    "builds_cancelled",
    "builds_deleted",
    "builds_bumped",
    "jobset_shares_changed",
];

/// Builds loaded per batch; the dispatcher starts on each batch.
const BATCH: usize = 2000;
/// A periodic full re-scan, in case anything was missed.
const RESCAN: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    load: bool,
    changes: bool,
    shares: bool,
}

impl Pending {
    fn all() -> Pending {
        Pending {
            load: true,
            changes: true,
            shares: true,
        }
    }

    fn note(&mut self, channel: &str) {
        match channel {
            "builds_added" | "builds_restarted" => self.load = true,
            "jobset_shares_changed" => self.shares = true,
            _ => self.changes = true,
        }
    }
}

/// Runs the monitor loop.
pub(crate) async fn run(queue: Arc<Queue>) -> Result<(), QueueError> {
    let mut listener = Listener::connect(&queue.ctx.pool, CHANNELS).await?;
    let mut pending = Pending::all();
    loop {
        if pending.changes {
            pending.changes = false;
            process_changes(&queue).await?;
        }
        if pending.shares {
            pending.shares = false;
            reload_shares(&queue).await?;
        }
        if pending.load {
            pending.load = false;
            Stats::add(&queue.stats.queue_checks_started, 1);
            if !load_builds(&queue, None).await? {
                // Stopped early to look at cancellations and bumps.
                pending.load = true;
                pending.changes = true;
            }
            Stats::add(&queue.stats.queue_checks_finished, 1);
        }
        if pending.load || pending.changes || pending.shares {
            continue;
        }
        tokio::select! {
            wakeup = listener.recv() => match wakeup? {
                Wakeup::Notification { channel, .. } => pending.note(&channel),
                Wakeup::Rescan => pending = Pending::all(),
            },
            _ = queue.monitor.notified() => pending.load = true,
            _ = tokio::time::sleep(RESCAN) => pending = Pending::all(),
        }
        Stats::add(&queue.stats.queue_wakeups, 1);
        // Take whatever else arrived in the same burst.
        while let Ok(Ok(Wakeup::Notification { channel, .. })) =
            tokio::time::timeout(Duration::from_millis(10), listener.recv()).await
        {
            pending.note(&channel);
        }
    }
}

/// Loads unfinished builds not in the queue yet (only `only` if given);
/// returns false if it stopped early (after a minute) to let other work in.
pub(crate) async fn load_builds(
    queue: &Arc<Queue>,
    only: Option<BuildId>,
) -> Result<bool, QueueError> {
    let started = Instant::now();
    let rows = hydra_db::builds::queued(&queue.ctx.pool, only).await?;
    let new: Vec<QueuedBuild> = {
        let state = queue.lock();
        rows.into_iter()
            .filter(|r| !state.builds.contains_key(&r.id))
            .collect()
    };
    if new.is_empty() {
        return Ok(true);
    }
    tracing::debug!(builds = new.len(), "loading builds");
    for chunk in new.chunks(BATCH) {
        load_chunk(queue, chunk).await?;
        queue.dispatch.notify_one();
        if only.is_none() && started.elapsed() > Duration::from_secs(60) {
            return Ok(false);
        }
    }
    Stats::add(
        &queue.stats.build_read_time_ms,
        started.elapsed().as_millis() as u64,
    );
    Ok(true)
}

/// What a derivation turned out to be.
enum Node {
    /// Its outputs are all in the destination store.
    Done,
    /// An output is in `FailedPaths`.
    Failed,
    /// A step already in the queue.
    Queued,
    /// A new step.
    New(Box<NewStep>),
}

struct NewStep {
    drv: Derivation,
    outputs: BTreeMap<String, String>,
}

/// Reads `.drv` files, several at a time off the async threads.
async fn read_drvs(ctx: &Context, paths: Vec<String>) -> Vec<(String, Result<Derivation, String>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in paths.chunks(500) {
        let chunk = chunk.to_vec();
        let ctx = ctx.clone();
        tasks.spawn_blocking(move || {
            chunk
                .into_iter()
                .map(|path| {
                    let parsed = ctx.read_derivation(&path);
                    (path, parsed)
                })
                .collect::<Vec<_>>()
        });
    }
    let mut out = Vec::with_capacity(paths.len());
    while let Some(done) = tasks.join_next().await {
        if let Ok(items) = done {
            out.extend(items);
        }
    }
    out
}

/// An output set copied to the destination store instead of built.
struct Substituted {
    drv: String,
    outputs: BTreeMap<String, String>,
    start: i32,
    stop: i32,
}

/// A build that fails at once because `failed_drv`, which it needs,
/// failed.
struct CachedFailure {
    build: BuildId,
    drv: String,
    failed_drv: String,
}

/// What linking a chunk's builds decided.
#[derive(Default)]
struct Linked {
    cached_successes: Vec<BuildId>,
    cached_failures: Vec<CachedFailure>,
    /// Builds whose derivation was garbage-collected.
    gone: Vec<BuildId>,
    registered: usize,
}

/// Loads a chunk of builds: their derivation graphs explored without the
/// lock, then linked into the queue with it (a step seen queued may be
/// gone by then: one that failed makes its dependants fail; one that
/// finished otherwise, or was dropped, means exploring again), then what
/// needs no building is recorded.
async fn load_chunk(queue: &Arc<Queue>, rows: &[QueuedBuild]) -> Result<(), QueueError> {
    // Derivations that were garbage-collected cannot be built.
    let drvs: BTreeSet<String> = rows.iter().map(|r| r.drv_path.clone()).collect();
    let valid = local_valid(&queue.ctx, &drvs).await?;
    let mut errors: HashMap<String, String> = HashMap::new();
    let mut substituted: Vec<Substituted> = Vec::new();
    let (nodes, linked) = loop {
        let mut nodes = explore(queue, &valid, &mut errors, &mut substituted).await?;
        if let Some(linked) = link(queue, rows, &valid, &mut nodes) {
            break (nodes, linked);
        }
    };
    Stats::add(&queue.stats.builds_read, rows.len() as u64);
    if linked.registered > 0 {
        tracing::debug!(builds = linked.registered, "builds queued");
        queue.predict.notify_one();
    }
    record_chunk(queue, rows, &nodes, linked, &substituted, &errors).await
}

/// A derivation read from its file, with its outputs.
struct Parsed {
    path: String,
    drv: Derivation,
    outputs: BTreeMap<String, String>,
}

/// What the stores and the database say about a round's outputs.
struct OutputFacts {
    /// Known to fail (`FailedPaths`).
    failed: BTreeSet<String>,
    /// In the destination store.
    present: BTreeSet<String>,
    /// Missing from the destination but in the local store (or
    /// substitutable into it).
    local: BTreeSet<String>,
}

/// The derivation graph below `valid`: each derivation queued already,
/// failed, done (outputs present or substituted now) or new.
async fn explore(
    queue: &Arc<Queue>,
    valid: &BTreeSet<String>,
    errors: &mut HashMap<String, String>,
    substituted: &mut Vec<Substituted>,
) -> Result<HashMap<String, Node>, QueueError> {
    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut frontier: BTreeSet<String> = valid.clone();
    while !frontier.is_empty() {
        let parsed = read_frontier(queue, &frontier, &mut nodes, errors).await;
        let facts = output_facts(queue, &parsed).await?;
        let mut next = BTreeSet::new();
        for Parsed { path, drv, outputs } in parsed {
            let paths: Vec<&String> = outputs.values().collect();
            let missing: BTreeSet<String> = paths
                .iter()
                .filter(|p| !facts.present.contains(**p))
                .map(|p| p.to_string())
                .collect();
            if paths.iter().any(|p| facts.failed.contains(*p)) {
                nodes.insert(path, Node::Failed);
            } else if !paths.is_empty()
                && paths
                    .iter()
                    .all(|p| !p.is_empty() && facts.present.contains(*p))
            {
                nodes.insert(path, Node::Done);
            } else if !missing.is_empty()
                && missing
                    .iter()
                    .all(|p| !p.is_empty() && facts.local.contains(p))
            {
                substituted.push(substitute(queue, path.clone(), outputs, &missing).await?);
                nodes.insert(path, Node::Done);
            } else {
                next.extend(drv.input_drvs.keys().cloned());
                nodes.insert(path, Node::New(Box::new(NewStep { drv, outputs })));
            }
        }
        frontier = next
            .into_iter()
            .filter(|d| !nodes.contains_key(d))
            .collect();
    }
    Ok(nodes)
}

/// Reads the derivations of `frontier` that are neither queued (noted as
/// such) nor seen; one that cannot be read is failed, with its error.
async fn read_frontier(
    queue: &Arc<Queue>,
    frontier: &BTreeSet<String>,
    nodes: &mut HashMap<String, Node>,
    errors: &mut HashMap<String, String>,
) -> Vec<Parsed> {
    let to_read: Vec<String> = {
        let state = queue.lock();
        let mut to_read = Vec::new();
        for drv in frontier {
            if state.steps.contains_key(drv) {
                nodes.insert(drv.clone(), Node::Queued);
            } else if !nodes.contains_key(drv) {
                to_read.push(drv.clone());
            }
        }
        to_read
    };
    let mut parsed = Vec::new();
    for (path, result) in read_drvs(&queue.ctx, to_read).await {
        match result {
            Ok(drv) => {
                let outputs: BTreeMap<String, String> = drv
                    .outputs
                    .iter()
                    .map(|(name, o)| (name.clone(), o.path.clone()))
                    .collect();
                parsed.push(Parsed { path, drv, outputs });
            }
            Err(e) => {
                errors.insert(path.clone(), e);
                nodes.insert(path, Node::Failed);
            }
        }
    }
    parsed
}

/// Which of the outputs of `parsed` failed before, are in the destination
/// store, or can be copied there from the local store instead of built
/// (with `use-substitutes`, also after substituting them locally).
async fn output_facts(queue: &Arc<Queue>, parsed: &[Parsed]) -> Result<OutputFacts, QueueError> {
    let ctx = &queue.ctx;
    let all_outputs: BTreeSet<String> = parsed
        .iter()
        .flat_map(|p| p.outputs.values().filter(|p| !p.is_empty()).cloned())
        .collect();
    let failed = finish::failed_paths(&ctx.pool, &all_outputs).await?;
    let present =
        ctx.dest.query_valid(&all_outputs).await.map_err(|e| {
            QueueError::Machines(format!("cannot query the destination store: {e}"))
        })?;
    let substitute = ctx.config.queue_runner.use_substitutes;
    let wanted: BTreeSet<String> = if !ctx.dest.is_machine_store() || substitute {
        parsed
            .iter()
            .filter(|p| !p.outputs.values().any(|p| failed.contains(p)))
            .flat_map(|p| {
                p.outputs
                    .values()
                    .filter(|p| !p.is_empty() && !present.contains(*p))
                    .cloned()
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    let local = if wanted.is_empty() {
        BTreeSet::new()
    } else {
        local_valid_substituting(ctx, &wanted, substitute).await?
    };
    Ok(OutputFacts {
        failed,
        present,
        local,
    })
}

/// Copies `missing` outputs of `drv` from the local store to the
/// destination.
async fn substitute(
    queue: &Arc<Queue>,
    drv: String,
    outputs: BTreeMap<String, String>,
    missing: &BTreeSet<String>,
) -> Result<Substituted, QueueError> {
    let ctx = &queue.ctx;
    let local_store = hydra_store::LocalStore::new(ctx.local.clone());
    let start = hydra_db::now();
    ctx.dest
        .copy_from_local(&local_store, missing)
        .await
        .map_err(|e| QueueError::Machines(format!("cannot copy to the destination store: {e}")))?;
    Stats::add(&queue.stats.substitutes_succeeded, 1);
    Ok(Substituted {
        drv,
        outputs,
        start,
        stop: hydra_db::now(),
    })
}

/// The failed derivation that `start`'s closure reaches, if any.
fn reaches_failure(start: &str, nodes: &HashMap<String, Node>) -> Option<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        match nodes.get(&d) {
            Some(Node::Failed) => return Some(d),
            Some(Node::New(step)) => todo.extend(step.drv.input_drvs.keys().cloned()),
            _ => {}
        }
    }
    None
}

/// Links the explored graph into the queue under the lock: new steps,
/// their dependencies, and the chunk's builds. `None` when a step seen
/// queued finished meanwhile (explore again).
fn link(
    queue: &Arc<Queue>,
    rows: &[QueuedBuild],
    valid: &BTreeSet<String>,
    nodes: &mut HashMap<String, Node>,
) -> Option<Linked> {
    let now = std::time::Instant::now();
    let mut state = queue.lock();
    let vanished: Vec<String> = nodes
        .iter()
        .filter(|(path, node)| matches!(node, Node::Queued) && !state.steps.contains_key(*path))
        .map(|(path, _)| path.clone())
        .collect();
    for path in vanished {
        if state.failed_steps.contains_key(&path) {
            nodes.insert(path, Node::Failed);
        } else {
            drop(state);
            tracing::debug!(drv = %path, "a queued step finished while loading; loading again");
            return None;
        }
    }
    add_steps(&mut state, &queue.stats, nodes, now);
    let linked = add_builds(&mut state, rows, valid, nodes);
    // Steps that only failed or finished builds needed.
    let new = nodes
        .iter()
        .filter(|(_, node)| matches!(node, Node::New(_)))
        .map(|(path, _)| path.clone());
    state.release(new);
    Some(linked)
}

/// Adds the new steps, then links them to their inputs; those without
/// unfinished inputs are runnable from `now`.
fn add_steps(state: &mut State, stats: &Stats, nodes: &HashMap<String, Node>, now: Instant) {
    for (path, node) in nodes.iter() {
        if let Node::New(new) = node
            && !state.steps.contains_key(path)
        {
            state.add_step(path, &new.drv, new.outputs.clone(), now);
            Stats::add(&stats.queue_steps_created, 1);
        }
    }
    for (path, node) in nodes.iter() {
        if let Node::New(new) = node {
            for input in new.drv.input_drvs.keys() {
                state.link(path, input);
            }
        }
    }
}

/// Adds the chunk's builds to their steps; the others are decided here
/// (gone, a cached failure, a cached success).
fn add_builds(
    state: &mut State,
    rows: &[QueuedBuild],
    valid: &BTreeSet<String>,
    nodes: &HashMap<String, Node>,
) -> Linked {
    let mut linked = Linked::default();
    for row in rows {
        if !valid.contains(&row.drv_path) {
            linked.gone.push(row.id);
            continue;
        }
        if let Some(failed_drv) = reaches_failure(&row.drv_path, nodes) {
            linked.cached_failures.push(CachedFailure {
                build: row.id,
                drv: row.drv_path.clone(),
                failed_drv,
            });
            continue;
        }
        match nodes.get(&row.drv_path) {
            Some(Node::Done) => linked.cached_successes.push(row.id),
            Some(Node::New(_) | Node::Queued) if state.steps.contains_key(&row.drv_path) => {
                let build = Build {
                    id: row.id,
                    drv_path: row.drv_path.clone(),
                    jobset_id: row.jobset_id,
                    project: row.project.clone(),
                    jobset: row.jobset.clone(),
                    job: row.job.clone(),
                    max_silent: row.max_silent,
                    timeout: row.timeout,
                    timestamp: row.timestamp,
                    local_priority: row.priority,
                    global_priority: row.global_priority,
                    toplevel: row.drv_path.clone(),
                };
                if let Some(step) = state.steps.get_mut(&row.drv_path) {
                    step.builds.insert(row.id);
                }
                state.propagate(&row.drv_path, &build);
                state.jobsets.entry(row.jobset_id).or_default();
                state.builds.insert(row.id, build);
                linked.registered += 1;
            }
            _ => linked.cached_failures.push(CachedFailure {
                build: row.id,
                drv: row.drv_path.clone(),
                failed_drv: row.drv_path.clone(),
            }),
        }
    }
    linked
}

/// Records what needs no building: substitutions (as a step of the first
/// build needing each), builds whose derivation is gone, cached failures
/// and cached successes.
async fn record_chunk(
    queue: &Arc<Queue>,
    rows: &[QueuedBuild],
    nodes: &HashMap<String, Node>,
    linked: Linked,
    substituted: &[Substituted],
    errors: &HashMap<String, String>,
) -> Result<(), QueueError> {
    let ctx = &queue.ctx;
    for s in substituted {
        ctx.register_roots(s.outputs.values());
        let needing = rows.iter().find(|r| needs(&r.drv_path, &s.drv, nodes));
        if let Some(row) = needing {
            finish::substitution_step(&ctx.pool, row.id, &s.drv, &s.outputs, s.start, s.stop)
                .await?;
        }
    }
    for id in linked.gone {
        finish::aborted_build(queue, id, "the derivation was garbage-collected").await?;
    }
    for f in linked.cached_failures {
        let message = errors.get(&f.failed_drv).cloned();
        finish::cached_failure(queue, f.build, &f.drv, &f.failed_drv, message.as_deref()).await?;
    }
    for id in linked.cached_successes {
        finish::cached_success(queue, id).await?;
    }
    load_new_jobset_shares(queue).await?;
    Ok(())
}

/// Whether `from`'s closure (through new steps) includes `drv`.
fn needs(from: &str, drv: &str, nodes: &HashMap<String, Node>) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(d) = todo.pop() {
        if d == drv {
            return true;
        }
        if !seen.insert(d.clone()) {
            continue;
        }
        if let Some(Node::New(step)) = nodes.get(&d) {
            todo.extend(step.drv.input_drvs.keys().cloned());
        }
    }
    false
}

/// Which of `paths` the local store has, substituting missing ones first
/// if asked.
async fn local_valid_substituting(
    ctx: &Context,
    paths: &BTreeSet<String>,
    substitute: bool,
) -> Result<BTreeSet<String>, QueueError> {
    let mut client = hydra_nix::serve::ServeClient::connect(
        &ctx.local.serve_transport(),
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| QueueError::Machines(format!("cannot open the local store: {e}")))?;
    let valid = client
        .query_valid_paths(paths, false, substitute)
        .await
        .map_err(|e| QueueError::Machines(format!("cannot query the local store: {e}")))?;
    let _ = client.close().await;
    Ok(valid)
}

/// Which of `paths` the local store has.
async fn local_valid(
    ctx: &Context,
    paths: &BTreeSet<String>,
) -> Result<BTreeSet<String>, QueueError> {
    local_valid_substituting(ctx, paths, false).await
}

/// Loads shares and the last day's step times of jobsets seen for the
/// first time.
async fn load_new_jobset_shares(queue: &Arc<Queue>) -> Result<(), QueueError> {
    let unknown: Vec<JobsetId> = {
        let state = queue.lock();
        state
            .jobsets
            .iter()
            .filter(|(_, j)| j.shares == 0)
            .map(|(id, _)| *id)
            .collect()
    };
    if unknown.is_empty() {
        return Ok(());
    }
    set_shares(queue, &unknown).await?;
    let since = hydra_db::now() - crate::state::SHARE_WINDOW as i32;
    let history = hydra_db::steps::recent_times(&queue.ctx.pool, &unknown, since).await?;
    let mut state = queue.lock();
    for (jobset, start, stop) in history {
        if let Some(j) = state.jobsets.get_mut(&jobset) {
            j.add(i64::from(start), i64::from((stop - start).max(0)));
        }
    }
    Ok(())
}

/// Reads the scheduling shares of jobsets `ids`.
async fn set_shares(queue: &Arc<Queue>, ids: &[JobsetId]) -> Result<(), QueueError> {
    let shares = hydra_db::jobsets::scheduling_shares(&queue.ctx.pool, ids).await?;
    let mut state = queue.lock();
    for (id, n) in shares {
        if let Some(j) = state.jobsets.get_mut(&id) {
            j.shares = n.max(1);
        }
    }
    Ok(())
}

async fn reload_shares(queue: &Arc<Queue>) -> Result<(), QueueError> {
    let ids: Vec<JobsetId> = queue.lock().jobsets.keys().copied().collect();
    if ids.is_empty() {
        return Ok(());
    }
    set_shares(queue, &ids).await?;
    queue.dispatch.notify_one();
    Ok(())
}

/// Cancellations, deletions and bumps: builds that are no longer queued
/// leave the queue (running steps no build needs are cancelled), and
/// raised priorities spread to the steps.
pub(crate) async fn process_changes(queue: &Arc<Queue>) -> Result<(), QueueError> {
    let rows = hydra_db::builds::queued_priorities(&queue.ctx.pool).await?;
    let current: HashMap<BuildId, i32> = rows.into_iter().collect();
    let to_cancel = {
        let mut state = queue.lock();
        let gone: Vec<BuildId> = state
            .builds
            .keys()
            .filter(|id| !current.contains_key(id))
            .copied()
            .collect();
        let mut tops = Vec::new();
        for id in &gone {
            if let Some(build) = state.builds.remove(id)
                && let Some(step) = state.steps.get_mut(&build.toplevel)
            {
                step.builds.remove(id);
                tops.push(build.toplevel);
            }
        }
        let mut bumped = Vec::new();
        for (id, build) in state.builds.iter_mut() {
            if let Some(&prio) = current.get(id)
                && prio > build.global_priority
            {
                build.global_priority = prio;
                bumped.push(build.clone());
            }
        }
        for build in &bumped {
            let top = build.toplevel.clone();
            state.propagate(&top, build);
        }
        if !gone.is_empty() {
            tracing::info!(builds = ?gone, "builds left the queue (cancelled, deleted or finished elsewhere)");
        }
        let orphans = state.release(tops);
        orphans
            .into_iter()
            .filter_map(|drv| {
                state
                    .steps
                    .get(&drv)
                    .and_then(|s| s.running.as_ref())
                    .map(|r| r.cancel.clone())
            })
            .collect::<Vec<_>>()
    };
    for cancel in to_cancel {
        cancel.cancel();
    }
    queue.dispatch.notify_one();
    Ok(())
}

/// Loads one build and waits until it is finished; returns its status.
pub(crate) async fn build_one(
    queue: &Arc<Queue>,
    build_id: BuildId,
) -> Result<BuildStatus, QueueError> {
    use hydra_db::builds::Progress;
    match hydra_db::builds::progress(&queue.ctx.pool, build_id).await? {
        None => return Err(QueueError::NoSuchBuild(build_id)),
        Some(Progress::Finished(status)) => return Ok(status),
        Some(Progress::Queued) => {}
    }
    load_builds(queue, Some(build_id)).await?;
    loop {
        let progress = hydra_db::builds::progress(&queue.ctx.pool, build_id).await?;
        match progress {
            Some(Progress::Finished(status)) => return Ok(status),
            None => return Err(QueueError::NoSuchBuild(build_id)),
            Some(Progress::Queued) => {}
        }
        if !queue.lock().builds.contains_key(&build_id) {
            // Left the queue without being finished (cancelled elsewhere).
            return Ok(BuildStatus::Cancelled);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
