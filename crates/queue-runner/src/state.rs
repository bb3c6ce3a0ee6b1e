//! The queue in memory: builds, the steps they need (one per derivation,
//! shared, linked to the steps they wait for and the steps waiting for
//! them), jobsets' fair-share accounting and the machines.

use hydra_db::ids::{BuildId, JobsetId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hydra_nix::derivation::Derivation;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::machines::Machines;
use crate::ready::{Rank, Ready};
use crate::{Context, QueueError};

/// The window over which jobsets' build time counts for fair sharing.
pub(crate) const SHARE_WINDOW: i64 = 24 * 3600;

/// A queued build.
#[derive(Clone, Debug)]
pub struct Build {
    pub id: BuildId,
    pub drv_path: String,
    pub jobset_id: JobsetId,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub max_silent: Option<i32>,
    pub timeout: Option<i32>,
    pub timestamp: i32,
    pub local_priority: i32,
    pub global_priority: i32,
    /// The drv path of its top-level step.
    pub toplevel: String,
}

/// A step being built on a machine.
#[derive(Debug)]
pub struct Running {
    pub machine: String,
    /// When it was given to the machine.
    pub started: Instant,
    pub cancel: CancellationToken,
}

/// One derivation to build.
#[derive(Debug)]
pub struct Step {
    pub drv_path: String,
    /// Output name → path.
    pub outputs: BTreeMap<String, String>,
    pub system: String,
    pub required_features: BTreeSet<String>,
    /// Steps this one waits for.
    pub deps: BTreeSet<String>,
    /// Steps waiting for this one.
    pub rdeps: BTreeSet<String>,
    /// Builds whose top-level step this is.
    pub builds: BTreeSet<BuildId>,
    pub highest_global_priority: i32,
    pub highest_local_priority: i32,
    pub lowest_build_id: BuildId,
    pub jobsets: BTreeSet<JobsetId>,
    pub tries: u32,
    /// Not to be retried before.
    pub after: Option<Instant>,
    pub running: Option<Running>,
    /// When it was queued: a step no machine supports fails
    /// `max_unsupported_time` after this or after some machine last
    /// supported its group, whichever is later.
    pub queued_at: Instant,
    /// The length of the longest chain of steps waiting for it, itself
    /// included.
    pub critical_path: u32,
    /// Whether its derivation asks to be built more than once
    /// (`isDetermistic`).
    pub check_determinism: bool,
    /// Its group in the index of runnable steps.
    pub group: usize,
    /// Where it is in that index.
    pub listed: Listed,
}

/// Whether a step is in the index of runnable steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    No,
    /// Runnable, ranked for the dispatcher.
    Ranked,
    /// Runnable once its retry time (`after`) comes.
    Delayed(Instant),
}

impl Step {
    pub fn is_runnable(&self) -> bool {
        self.deps.is_empty() && self.running.is_none()
    }

    /// The dispatcher's key of the step, with the share its jobsets used
    /// (as its [`Rank`] gives it, without copying its path).
    pub(crate) fn key(&self, share_used: f64) -> crate::dispatch::StepKey {
        crate::dispatch::StepKey {
            global_priority: self.highest_global_priority,
            share_used,
            critical_path: self.critical_path,
            local_priority: self.highest_local_priority,
            lowest_build_id: self.lowest_build_id,
        }
    }

    pub(crate) fn rank(&self) -> Rank {
        Rank {
            global_priority: Reverse(self.highest_global_priority),
            critical_path: Reverse(self.critical_path),
            local_priority: Reverse(self.highest_local_priority),
            lowest_build_id: self.lowest_build_id,
            drv: self.drv_path.clone(),
        }
    }
}

/// A jobset's use of the build farm, for fair sharing.
#[derive(Debug, Default)]
pub struct JobsetShare {
    pub shares: i32,
    /// (start, seconds) of steps started in the window.
    pub steps: VecDeque<(i64, i64)>,
    pub seconds: i64,
}

impl JobsetShare {
    pub fn add(&mut self, start: i64, seconds: i64) {
        self.steps.push_back((start, seconds));
        self.seconds += seconds;
    }

    pub fn prune(&mut self, now: i64) {
        while let Some(&(start, seconds)) = self.steps.front() {
            if start >= now - SHARE_WINDOW {
                break;
            }
            self.steps.pop_front();
            self.seconds -= seconds;
        }
    }

    pub fn share_used(&self) -> f64 {
        self.seconds as f64 / f64::from(self.shares.max(1))
    }
}

/// The whole queue.
#[derive(Debug, Default)]
pub struct State {
    pub builds: HashMap<BuildId, Build>,
    pub steps: HashMap<String, Step>,
    pub jobsets: HashMap<JobsetId, JobsetShare>,
    pub machines: Machines,
    /// Steps that failed for good lately (derivation → when): a load that
    /// saw one queued and finds it gone learns here that it failed.
    pub failed_steps: HashMap<String, Instant>,
    /// The runnable steps in the dispatcher's order. Kept by the methods
    /// below: a step's priorities, jobsets, critical path, dependencies
    /// and running state change only through them.
    pub(crate) ready: Ready,
}

/// How long a failed step is remembered for loads in progress.
const FAILED_STEP_MEMORY: std::time::Duration = std::time::Duration::from_secs(3600);

impl State {
    /// Records that `drv` failed for good (see `failed_steps`).
    pub fn note_failed(&mut self, drv: &str) {
        let now = Instant::now();
        if self.failed_steps.len() > 10_000 {
            self.failed_steps
                .retain(|_, at| now.duration_since(*at) < FAILED_STEP_MEMORY);
        }
        self.failed_steps.insert(drv.to_string(), now);
    }

    /// Every build that needs `drv` (its own and those of the steps waiting
    /// for it, transitively).
    pub fn dependent_builds(&self, drv: &str) -> BTreeSet<BuildId> {
        let mut builds = BTreeSet::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo = vec![drv];
        while let Some(d) = todo.pop() {
            if !seen.insert(d) {
                continue;
            }
            if let Some(step) = self.steps.get(d) {
                builds.extend(step.builds.iter().copied());
                todo.extend(step.rdeps.iter().map(String::as_str));
            }
        }
        builds
    }

    /// The unfinished steps queued build `id` needs, its own included.
    pub fn closure(&self, id: BuildId) -> Vec<&Step> {
        let Some(top) = self.builds.get(&id).map(|b| b.toplevel.as_str()) else {
            return Vec::new();
        };
        let mut seen: HashSet<&str> = HashSet::new();
        let mut steps = Vec::new();
        let mut todo = vec![top];
        while let Some(d) = todo.pop() {
            if let Some(step) = self.steps.get(d)
                && seen.insert(d)
            {
                todo.extend(step.deps.iter().map(String::as_str));
                steps.push(step);
            }
        }
        steps
    }

    /// Adds a step without dependencies yet (see [`State::link`]); it is
    /// runnable until it gets one.
    pub fn add_step(
        &mut self,
        drv_path: &str,
        drv: &Derivation,
        outputs: BTreeMap<String, String>,
        now: Instant,
    ) {
        if self.steps.contains_key(drv_path) {
            return;
        }
        let required_features: BTreeSet<String> = drv
            .env
            .get("requiredSystemFeatures")
            .map(|f| f.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let system = drv.platform.clone();
        let group = self.ready.group(&system, &required_features, now);
        self.steps.insert(
            drv_path.to_string(),
            Step {
                drv_path: drv_path.to_string(),
                system,
                outputs,
                check_determinism: drv.env.get("isDetermistic").map(String::as_str) == Some("1"),
                required_features,
                deps: BTreeSet::new(),
                rdeps: BTreeSet::new(),
                builds: BTreeSet::new(),
                highest_global_priority: i32::MIN,
                highest_local_priority: i32::MIN,
                lowest_build_id: BuildId(i32::MAX),
                jobsets: BTreeSet::new(),
                tries: 0,
                after: None,
                running: None,
                queued_at: now,
                critical_path: 1,
                group,
                listed: Listed::No,
            },
        );
        self.list(drv_path, now);
    }

    /// Makes `drv` wait for `input` (both queued); the chain of steps
    /// waiting for `input` grows with it.
    pub fn link(&mut self, drv: &str, input: &str) {
        let Some(path) = self.steps.get(drv).map(|s| s.critical_path) else {
            return;
        };
        let Some(dep) = self.steps.get_mut(input) else {
            return;
        };
        dep.rdeps.insert(drv.to_string());
        self.unlist(drv);
        if let Some(step) = self.steps.get_mut(drv) {
            step.deps.insert(input.to_string());
        }
        self.raise_paths(input, path + 1);
    }

    /// Lengthens the critical path of `drv` to at least `length`, and of
    /// what it waits for after it.
    fn raise_paths(&mut self, drv: &str, length: u32) {
        let mut todo = vec![(drv.to_string(), length)];
        while let Some((d, length)) = todo.pop() {
            let Some(step) = self.steps.get(&d) else {
                continue;
            };
            if step.critical_path >= length {
                continue;
            }
            todo.extend(step.deps.iter().map(|dep| (dep.clone(), length + 1)));
            self.rerank(&d, |s| s.critical_path = length);
        }
    }

    /// Recomputes the critical paths of `drvs` after steps waiting for them
    /// left, and of what they wait for where it shrinks.
    fn lower_paths(&mut self, drvs: Vec<String>) {
        let mut todo = drvs;
        while let Some(d) = todo.pop() {
            let Some(step) = self.steps.get(&d) else {
                continue;
            };
            let length = 1 + step
                .rdeps
                .iter()
                .filter_map(|r| self.steps.get(r).map(|s| s.critical_path))
                .max()
                .unwrap_or(0);
            if length >= step.critical_path {
                continue;
            }
            todo.extend(step.deps.iter().cloned());
            self.rerank(&d, |s| s.critical_path = length);
        }
    }

    /// Changes what ranks `drv` among runnable steps.
    pub fn rerank(&mut self, drv: &str, change: impl FnOnce(&mut Step)) {
        let listed = self.steps.get(drv).map(|s| s.listed);
        if listed == Some(Listed::Ranked) {
            self.unlist(drv);
        }
        if let Some(step) = self.steps.get_mut(drv) {
            change(step);
        }
        if listed == Some(Listed::Ranked) {
            self.list(drv, Instant::now());
        }
    }

    /// Takes `drv` out of the index of runnable steps.
    fn unlist(&mut self, drv: &str) {
        let Some(step) = self.steps.get_mut(drv) else {
            return;
        };
        match step.listed {
            Listed::No => {}
            Listed::Ranked => self.ready.remove(step.group, &step.jobsets, &step.rank()),
            Listed::Delayed(at) => self.ready.undelay(at, drv),
        }
        step.listed = Listed::No;
    }

    /// Puts `drv` in the index if it is runnable: ranked, or delayed until
    /// its retry time.
    fn list(&mut self, drv: &str, now: Instant) {
        let Some(step) = self.steps.get_mut(drv) else {
            return;
        };
        if step.listed != Listed::No || !step.is_runnable() {
            return;
        }
        match step.after {
            Some(at) if at > now => {
                self.ready.delay(at, drv);
                step.listed = Listed::Delayed(at);
            }
            _ => {
                step.after = None;
                self.ready.insert(step.group, &step.jobsets, step.rank());
                step.listed = Listed::Ranked;
            }
        }
    }

    /// Ranks the delayed steps whose retry time has come; returns when the
    /// next one's comes.
    pub fn list_due(&mut self, now: Instant) -> Option<Instant> {
        for drv in self.ready.due(now) {
            if let Some(step) = self.steps.get_mut(&drv) {
                step.listed = Listed::No;
            }
            self.list(&drv, now);
        }
        self.ready.next_delayed()
    }

    /// Marks `drv` as running.
    pub fn start(&mut self, drv: &str, running: Running) {
        self.unlist(drv);
        if let Some(step) = self.steps.get_mut(drv) {
            step.running = Some(running);
        }
    }

    /// Marks `drv` as not running any more, to run again (after `after`,
    /// if given) unless it leaves the queue.
    pub fn stop(&mut self, drv: &str, after: Option<Instant>) {
        if let Some(step) = self.steps.get_mut(drv) {
            step.running = None;
            if after.is_some() {
                step.after = after;
            }
        }
        self.list(drv, Instant::now());
    }

    /// Raises the priorities of `drv` and everything it needs to those of
    /// `build`, and counts its jobset. A step whose priorities are already
    /// at least those is left, with what it needs: they were raised with it.
    pub fn propagate(&mut self, drv: &str, build: &Build) {
        let mut todo = vec![drv.to_string()];
        while let Some(d) = todo.pop() {
            let Some(step) = self.steps.get(&d) else {
                continue;
            };
            if step.highest_global_priority >= build.global_priority
                && step.highest_local_priority >= build.local_priority
                && step.lowest_build_id <= build.id
                && step.jobsets.contains(&build.jobset_id)
            {
                continue;
            }
            todo.extend(step.deps.iter().cloned());
            self.rerank(&d, |step| {
                step.highest_global_priority =
                    step.highest_global_priority.max(build.global_priority);
                step.highest_local_priority = step.highest_local_priority.max(build.local_priority);
                step.lowest_build_id = step.lowest_build_id.min(build.id);
                step.jobsets.insert(build.jobset_id);
            });
        }
    }

    /// Whether a build in the queue needs `step` itself.
    fn wanted(&self, step: &Step) -> bool {
        step.builds.iter().any(|b| self.builds.contains_key(b))
    }

    /// Removes the steps of `drvs` that no queued build needs any more (no
    /// build of theirs is queued, no step waits for them) and are not
    /// running, with what only they needed; returns the running steps no
    /// build needs (to be cancelled).
    pub fn release(&mut self, drvs: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut orphans_running = Vec::new();
        let mut todo: Vec<String> = drvs.into_iter().collect();
        while let Some(d) = todo.pop() {
            let Some(step) = self.steps.get(&d) else {
                continue;
            };
            if !step.rdeps.is_empty() || self.wanted(step) {
                continue;
            }
            if step.running.is_some() {
                orphans_running.push(d);
                continue;
            }
            if let Some(step) = self.remove_step(&d) {
                todo.extend(step.deps);
            }
        }
        orphans_running
    }

    /// Unlinks and removes a step; what waited for it only may run.
    pub fn remove_step(&mut self, drv: &str) -> Option<Step> {
        self.unlist(drv);
        let step = self.steps.remove(drv)?;
        for dep in &step.deps {
            if let Some(d) = self.steps.get_mut(dep) {
                d.rdeps.remove(drv);
            }
        }
        if !step.deps.is_empty() {
            self.lower_paths(step.deps.iter().cloned().collect());
        }
        let now = Instant::now();
        for rdep in &step.rdeps {
            if let Some(r) = self.steps.get_mut(rdep) {
                r.deps.remove(drv);
            }
            self.list(rdep, now);
        }
        Some(step)
    }

    /// The share `jobset` used (the largest for steps of no jobset).
    pub(crate) fn jobset_share_used(&self, jobset: Option<JobsetId>) -> f64 {
        jobset
            .and_then(|j| self.jobsets.get(&j))
            .map_or(f64::MAX, JobsetShare::share_used)
    }

    /// The fair-share figure of a step: the least share used among its
    /// jobsets.
    pub fn share_used(&self, step: &Step) -> f64 {
        step.jobsets
            .iter()
            .filter_map(|j| self.jobsets.get(j))
            .map(JobsetShare::share_used)
            .fold(f64::INFINITY, f64::min)
            .min(f64::MAX)
    }
}

/// Counters for the status and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub builds_read: AtomicU64,
    pub build_read_time_ms: AtomicU64,
    pub builds_done: AtomicU64,
    pub builds_succeeded: AtomicU64,
    pub builds_failed: AtomicU64,
    pub steps_started: AtomicU64,
    pub steps_done: AtomicU64,
    pub steps_building: AtomicU64,
    pub steps_copying_to: AtomicU64,
    pub steps_copying_from: AtomicU64,
    pub steps_waiting_local: AtomicU64,
    pub retries: AtomicU64,
    pub max_retries: AtomicU64,
    pub unsupported_aborted: AtomicU64,
    pub substitutes_succeeded: AtomicU64,
    pub queue_wakeups: AtomicU64,
    pub dispatcher_wakeups: AtomicU64,
    pub dispatch_time_us: AtomicU64,
    pub predictions: AtomicU64,
    pub prediction_time_us: AtomicU64,
    pub prediction_lock_time_us: AtomicU64,
    pub prediction_last_us: AtomicU64,
    pub prediction_last_lock_us: AtomicU64,
    pub queue_checks_started: AtomicU64,
    pub queue_checks_finished: AtomicU64,
    pub queue_steps_created: AtomicU64,
    pub total_step_time_ms: AtomicU64,
    pub total_step_build_time_ms: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The queue runner's shared state.
#[derive(Debug)]
pub struct Queue {
    pub ctx: Context,
    state: Mutex<State>,
    /// Wakes the dispatcher (a step became runnable, a slot freed).
    pub dispatch: Notify,
    /// Wakes the monitor (builds to load or cancel; also NOTIFY).
    pub monitor: Notify,
    /// Output downloads running at once (`max_local_worker_threads`).
    pub local_slots: Semaphore,
    pub stats: Stats,
    pub started: Instant,
    pub started_unix: i64,
    /// Cancels every running step when the queue runner stops.
    pub stopping: CancellationToken,
    /// Running step tasks.
    pub tasks: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    /// Whether this queue runner holds the single-instance lock now; the
    /// dispatcher starts nothing while it does not.
    pub lock_held: std::sync::atomic::AtomicBool,
    /// Idle serve-protocol connections by machine, for the next step.
    connections: Mutex<HashMap<String, Vec<hydra_nix::serve::ServeClient>>>,
    /// Wakes the predictions (builds loaded, steps finished).
    pub predict: Notify,
    /// How long steps took lately, for predicting.
    history: Mutex<crate::eta::History>,
    /// The latest predictions.
    predictions: Mutex<crate::eta::Predictions>,
}

impl Queue {
    /// Runs `work` beside the queue until it is done or the queue stops.
    pub fn background(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = work => {}
                () = stopping.cancelled() => {}
            }
        });
    }

    /// Sets up the queue: clears the busy marks left by an earlier run and
    /// reads the machines.
    pub async fn start(ctx: Context) -> Result<Arc<Queue>, QueueError> {
        let cleared = hydra_db::steps::abort_busy(&ctx.pool, hydra_db::now()).await?;
        if cleared > 0 {
            tracing::info!(
                steps = cleared,
                "marked steps interrupted by an earlier run as aborted"
            );
        }
        let machines = Machines::load(&ctx)?;
        for m in machines.list() {
            tracing::info!(machine = %m.machine.store_uri, systems = ?m.machine.systems, max_jobs = m.machine.max_jobs, "build machine");
        }
        let slots = ctx.config.queue_runner.max_local_worker_threads.max(1) as usize;
        let queue = Arc::new(Queue {
            ctx,
            state: Mutex::new(State {
                machines,
                ..Default::default()
            }),
            dispatch: Notify::new(),
            monitor: Notify::new(),
            local_slots: Semaphore::new(slots),
            stats: Stats::default(),
            started: Instant::now(),
            started_unix: i64::from(hydra_db::now()),
            stopping: CancellationToken::new(),
            tasks: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
            connections: Mutex::new(HashMap::new()),
            predict: Notify::new(),
            history: Mutex::default(),
            predictions: Mutex::default(),
            lock_held: std::sync::atomic::AtomicBool::new(true),
        });
        Ok(queue)
    }

    /// The state, locked. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            // A panic while holding the lock leaves consistent data here:
            // every mutation is a few assignments.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The history of step durations, locked (after the state, if both).
    pub(crate) fn history(&self) -> MutexGuard<'_, crate::eta::History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest predictions, locked (after the state, if both).
    pub(crate) fn predictions(&self) -> MutexGuard<'_, crate::eta::Predictions> {
        self.predictions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection to `machine`, if there is one. Starting a
    /// `nix-store --serve` (or an ssh session) costs more than a small
    /// build.
    pub fn take_connection(&self, machine: &str) -> Option<hydra_nix::serve::ServeClient> {
        let mut pool = match self.connections.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        pool.get_mut(machine).and_then(Vec::pop)
    }

    /// Keeps a healthy connection for the next step on `machine` (as many
    /// as the machine has slots).
    pub fn give_back_connection(&self, machine: &str, client: hydra_nix::serve::ServeClient) {
        let slots = self
            .lock()
            .machines
            .list()
            .iter()
            .find(|m| m.machine.store_uri == machine && m.enabled)
            .map_or(0, |m| m.machine.max_jobs as usize);
        let mut pool = match self.connections.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        let idle = pool.entry(machine.to_string()).or_default();
        if idle.len() < slots {
            idle.push(client);
        }
    }

    /// Cancels running steps and waits for their tasks.
    pub async fn stop(&self) {
        self.stopping.cancel();
        match self.connections.lock() {
            Ok(mut p) => p.clear(),
            Err(p) => p.into_inner().clear(),
        }
        let mut tasks = self.tasks.lock().await;
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    tasks.abort_all();
                    break;
                }
            }
        }
    }
}

/// Only one queue runner per database: a session-level advisory lock held
/// on a connection of its own.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    /// The connection holding the advisory lock; it listens on a channel
    /// nobody sends to, so that its loss is seen at once.
    listener: sqlx::postgres::PgListener,
}

/// The advisory lock's key.
const LOCK_KEY: i64 = 0x6879_6472_6171_7275;

impl InstanceLock {
    pub(crate) async fn acquire(pool: &sqlx::PgPool) -> Result<InstanceLock, QueueError> {
        // A pool of its own: the connection holding the lock must never be
        // handed to other work, and closes when the lock is dropped.
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*pool.connect_options()).clone())
            .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
        listener.listen("hydra_queue_runner_lock").await?;
        if !Self::try_lock(&mut listener).await? {
            return Err(QueueError::AlreadyRunning);
        }
        Ok(InstanceLock { listener })
    }

    async fn try_lock(listener: &mut sqlx::postgres::PgListener) -> Result<bool, QueueError> {
        Ok(hydra_db::tx::try_advisory_lock(&mut *listener, LOCK_KEY).await?)
    }

    /// Holds the lock while `held` says the queue runner may dispatch: when
    /// the connection is lost (PostgreSQL restarted, the backend was
    /// killed), the lock is gone with it, so `held` goes false at once and
    /// the lock is taken again as soon as the database answers. Returns an
    /// error when another queue runner took it meanwhile.
    pub(crate) async fn keep(
        mut self,
        held: &std::sync::atomic::AtomicBool,
        regained: &Notify,
    ) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering;
        loop {
            // Only a lost connection ends this wait (nothing is sent here).
            if let Ok(Some(_)) = self.listener.try_recv().await {
                continue;
            }
            held.store(false, Ordering::SeqCst);
            tracing::error!(
                "lost the database connection holding the queue runner's lock; not dispatching until it is taken again"
            );
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                match Self::try_lock(&mut self.listener).await {
                    Ok(true) => break,
                    Ok(false) => {
                        return Err(QueueError::LockLost);
                    }
                    Err(e) => tracing::debug!(error = %e, "the lock cannot be taken yet"),
                }
            }
            held.store(true, Ordering::SeqCst);
            tracing::info!("took the queue runner's lock again; dispatching");
            regained.notify_one();
        }
    }
}
