//! When will it be done: each step's duration is predicted from the
//! history of steps of the same derivation name (without hash and
//! version), system and machine; the queue is then played forward as the
//! dispatcher would run it (running steps, runnable steps in the
//! dispatcher's order, retry times, the machines' slots) three times:
//! with the quick, the usual and the slow durations. Every queued build
//! and step gets a finish time with its range; the builds' are recorded in
//! `BuildEtas` when they are new or move, so that their error can be
//! measured against the outcome.
//!
//! A step's duration comes from, in this order: the same name, system and
//! machine; the same name and system on any machine; for a build's own
//! step, the job's earlier builds; the jobset's steps; all steps (these
//! two once they hold five runs). Each is the median of the recent
//! successful runs, with the quartiles as its range (widened where few
//! runs or only a broad fallback are known).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hydra_db::etas::{Eta, StepTime};
use hydra_db::ids::{BuildId, JobsetId};
use serde::Serialize;

use crate::QueueError;
use crate::state::{Queue, State, Stats};

/// Runs of one kind kept, newest first.
const KEEP_NAMED: usize = 16;
const KEEP_JOBSET: usize = 64;
const KEEP_ALL: usize = 256;
/// Runs a broad fallback (the jobset's or all steps) needs to be used.
const BROAD_MIN: usize = 5;
/// Successful steps read at start.
const HISTORY_ROWS: i64 = 20_000;
/// A step nothing is known of is taken to last this long (seconds).
const UNKNOWN: Spread = Spread {
    low: 10.0,
    mid: 60.0,
    high: 600.0,
};
/// Predictions recorded per statement.
const RECORD_CHUNK: usize = 10_000;
/// Predictions are made at most this often...
const MIN_GAP: Duration = Duration::from_secs(2);
/// ...and at least this often while builds are queued.
const MAX_GAP: Duration = Duration::from_secs(30);

/// The name of a derivation without its hash and version: Nix's rule,
/// the name ends at the first dash not followed by a letter.
pub(crate) fn drv_name(drv_path: &str) -> &str {
    let base = drv_path.rsplit('/').next().unwrap_or(drv_path);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    let name = match base.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 => rest,
        _ => base,
    };
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return &name[..i];
        }
    }
    name
}

/// A duration (seconds) or a time offset: quick, usual and slow.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Spread {
    pub(crate) low: f64,
    pub(crate) mid: f64,
    pub(crate) high: f64,
}

impl Spread {
    fn get(&self, case: usize) -> f64 {
        match case {
            0 => self.low,
            1 => self.mid,
            _ => self.high,
        }
    }

    /// At least `low` below and `high` above the median, as factors.
    fn widened(self, low: f64, high: f64) -> Spread {
        Spread {
            low: self.low.min(self.mid * low),
            mid: self.mid,
            high: self.high.max(self.mid * high),
        }
    }
}

/// Recent durations of one kind of step (seconds), newest first.
#[derive(Clone, Debug, Default)]
struct Samples(VecDeque<u32>);

impl Samples {
    fn push(&mut self, seconds: u32, keep: usize) {
        self.0.push_front(seconds);
        self.0.truncate(keep);
    }

    /// Median and quartiles; fewer than three runs give a wider range.
    fn spread(&self) -> Option<Spread> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.0.iter().map(|&s| f64::from(s.max(1))).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let x = p * (sorted.len() - 1) as f64;
            let (i, f) = (x.floor() as usize, x.fract());
            let next = sorted.get(i + 1).copied().unwrap_or(sorted[i]);
            sorted[i] + (next - sorted[i]) * f
        };
        let spread = Spread {
            low: at(0.25),
            mid: at(0.5),
            high: at(0.75),
        };
        Some(if sorted.len() < 3 {
            spread.widened(0.75, 1.5)
        } else {
            spread
        })
    }
}

/// What a duration was predicted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Basis {
    /// The same name and system on the same machine.
    Machine,
    /// The same name and system.
    Name,
    /// The job's earlier builds.
    Job,
    /// The jobset's steps.
    Jobset,
    /// All steps.
    All,
    /// Nothing known.
    Guess,
}

#[derive(Clone, Debug, Default)]
struct ByMachine {
    any: Samples,
    machines: HashMap<String, Samples>,
}

/// The durations of recent successful steps.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    /// Name → system → durations.
    names: HashMap<String, HashMap<String, ByMachine>>,
    /// A job's own steps (its builds' derivations).
    jobs: HashMap<(JobsetId, String), Samples>,
    jobsets: HashMap<JobsetId, Samples>,
    all: Samples,
}

/// A successful step, as history learns it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run<'a> {
    pub(crate) drv_path: &'a str,
    pub(crate) system: &'a str,
    pub(crate) machine: &'a str,
    pub(crate) seconds: u32,
    pub(crate) jobset: Option<JobsetId>,
    /// The job, when the step was its build's own derivation.
    pub(crate) job: Option<&'a str>,
}

/// What a step is, for predicting its duration.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    pub(crate) name: String,
    pub(crate) system: String,
    /// The job whose own step it is.
    pub(crate) job: Option<(JobsetId, String)>,
    pub(crate) jobsets: Vec<JobsetId>,
}

impl History {
    /// History from the latest successful steps (newest first).
    pub(crate) fn from_rows(rows: &[StepTime]) -> History {
        let mut history = History::default();
        for row in rows.iter().rev() {
            history.learn(Run {
                drv_path: &row.drv_path,
                system: row.system.as_deref().unwrap_or(""),
                machine: &row.machine,
                seconds: row.seconds.max(0) as u32,
                jobset: Some(row.jobset_id),
                job: row.toplevel.then_some(row.job.as_str()),
            });
        }
        history
    }

    /// Adds a successful step.
    pub(crate) fn learn(&mut self, run: Run<'_>) {
        let by = self
            .names
            .entry(drv_name(run.drv_path).to_string())
            .or_default()
            .entry(run.system.to_string())
            .or_default();
        by.any.push(run.seconds, KEEP_NAMED);
        by.machines
            .entry(run.machine.to_string())
            .or_default()
            .push(run.seconds, KEEP_NAMED);
        if let Some(jobset) = run.jobset {
            if let Some(job) = run.job {
                self.jobs
                    .entry((jobset, job.to_string()))
                    .or_default()
                    .push(run.seconds, KEEP_NAMED);
            }
            self.jobsets
                .entry(jobset)
                .or_default()
                .push(run.seconds, KEEP_JOBSET);
        }
        self.all.push(run.seconds, KEEP_ALL);
    }

    /// How long a step like `facts` takes on `machine` (any machine when
    /// `None`), and from what that is known.
    pub(crate) fn estimate(&self, facts: &Facts, machine: Option<&str>) -> (Spread, Basis) {
        if let Some(by) = self
            .names
            .get(&facts.name)
            .and_then(|s| s.get(&facts.system))
        {
            if let Some(spread) = machine
                .and_then(|m| by.machines.get(m))
                .and_then(Samples::spread)
            {
                return (spread, Basis::Machine);
            }
            if let Some(spread) = by.any.spread() {
                return (spread, Basis::Name);
            }
        }
        if let Some(spread) = facts
            .job
            .as_ref()
            .and_then(|(jobset, job)| self.jobs.get(&(*jobset, job.clone())))
            .and_then(Samples::spread)
        {
            return (spread.widened(0.75, 1.5), Basis::Job);
        }
        let broad = |s: &Samples| (s.0.len() >= BROAD_MIN).then(|| s.spread()).flatten();
        let jobsets: Option<Spread> = facts
            .jobsets
            .iter()
            .filter_map(|j| self.jobsets.get(j).and_then(broad))
            .next();
        if let Some(spread) = jobsets {
            return (spread.widened(0.5, 2.0), Basis::Jobset);
        }
        if let Some(spread) = broad(&self.all) {
            return (spread.widened(0.5, 2.0), Basis::All);
        }
        (UNKNOWN, Basis::Guess)
    }
}

/// A machine as the simulation sees it.
#[derive(Clone, Debug)]
pub(crate) struct SimMachine {
    pub(crate) uri: String,
    pub(crate) slots: u32,
    /// Seconds until it takes steps again (backed off).
    pub(crate) back_in: f64,
    /// Which groups of steps it takes.
    pub(crate) fits: Vec<bool>,
}

/// A queued step as the simulation sees it.
#[derive(Clone, Debug)]
pub(crate) struct SimStep {
    pub(crate) drv: String,
    pub(crate) facts: Facts,
    pub(crate) group: usize,
    /// Steps it waits for.
    pub(crate) deps: usize,
    /// Steps waiting for it (indexes).
    pub(crate) rdeps: Vec<usize>,
    /// Its place in the dispatcher's order (lower goes first).
    pub(crate) order: usize,
    /// The machine running it and for how long it has been (seconds).
    pub(crate) running: Option<(usize, f64)>,
    /// Seconds until it may be retried.
    pub(crate) after: f64,
}

/// The queue, copied for predicting.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) steps: Vec<SimStep>,
    pub(crate) machines: Vec<SimMachine>,
    /// Each queued build and its own step.
    pub(crate) builds: Vec<(BuildId, usize)>,
}

impl Snapshot {
    /// Copies what predicting needs from the queue (at once; see
    /// `predict` for the part done under the lock).
    #[cfg(test)]
    pub(crate) fn of(state: &State, now: Instant) -> Snapshot {
        Snapshot::copy(state, now).finish()
    }

    /// The part of [`Snapshot::of`] done with the queue locked; the rest
    /// (names, systems, the order) is left to [`Copied::finish`].
    fn copy(state: &State, now: Instant) -> Copied {
        let groups = state.ready.groups();
        let machines: Vec<SimMachine> = state
            .machines
            .list()
            .iter()
            .filter(|m| m.enabled)
            .map(|m| SimMachine {
                uri: m.machine.store_uri.clone(),
                slots: m.machine.max_jobs,
                back_in: m
                    .disabled_until
                    .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64()),
                fits: groups
                    .iter()
                    .map(|g| m.machine.supports(&g.system, &g.features))
                    .collect(),
            })
            .collect();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(state.steps.len());
        let mut order: Vec<(crate::dispatch::StepKey, usize)> =
            Vec::with_capacity(state.steps.len());
        let mut steps = Vec::with_capacity(state.steps.len());
        for (drv, step) in &state.steps {
            index.insert(drv.as_str(), steps.len());
            order.push((step.key(state.share_used(step)), steps.len()));
            let job = step
                .builds
                .iter()
                .find_map(|b| state.builds.get(b))
                .map(|b| (b.jobset_id, b.job.clone()));
            steps.push(SimStep {
                drv: drv.clone(),
                facts: Facts {
                    name: String::new(),
                    system: String::new(),
                    job,
                    jobsets: step.jobsets.iter().copied().collect(),
                },
                group: step.group,
                deps: 0,
                rdeps: Vec::new(),
                order: 0,
                running: step.running.as_ref().and_then(|r| {
                    let m = machines.iter().position(|m| m.uri == r.machine)?;
                    Some((m, now.saturating_duration_since(r.started).as_secs_f64()))
                }),
                after: step
                    .after
                    .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64()),
            });
        }
        for (drv, step) in &state.steps {
            let i = index[drv.as_str()];
            let deps = step
                .deps
                .iter()
                .filter(|d| index.contains_key(d.as_str()))
                .count();
            steps[i].deps = deps;
            for r in &step.rdeps {
                if let Some(&j) = index.get(r.as_str()) {
                    steps[i].rdeps.push(j);
                }
            }
        }
        let builds = state
            .builds
            .values()
            .filter_map(|b| Some((b.id, *index.get(b.toplevel.as_str())?)))
            .collect();
        Copied {
            snapshot: Snapshot {
                steps,
                machines,
                builds,
            },
            systems: groups.iter().map(|g| g.system.clone()).collect(),
            keys: order,
        }
    }
}

/// The queue as copied under its lock.
struct Copied {
    snapshot: Snapshot,
    /// Each group's system.
    systems: Vec<String>,
    /// Each step's key in the dispatcher's order.
    keys: Vec<(crate::dispatch::StepKey, usize)>,
}

impl Copied {
    /// Puts the steps in the dispatcher's order and fills in their names
    /// and systems.
    fn finish(mut self) -> Snapshot {
        self.keys.sort_by(|a, b| a.0.order(&b.0));
        let steps = &mut self.snapshot.steps;
        for (place, (_, i)) in self.keys.into_iter().enumerate() {
            steps[i].order = place;
        }
        for step in steps.iter_mut() {
            step.facts.name = drv_name(&step.drv).to_string();
            step.facts.system = self.systems.get(step.group).cloned().unwrap_or_default();
        }
        self.snapshot
    }
}

/// Durations of each step: on any machine, and on machines where its
/// kind ran before.
#[derive(Clone, Debug)]
pub(crate) struct Durations {
    any: Vec<Spread>,
    on: Vec<Vec<(usize, Spread)>>,
}

impl Durations {
    pub(crate) fn of(snapshot: &Snapshot, history: &History) -> Durations {
        let mut any = Vec::with_capacity(snapshot.steps.len());
        let mut on = Vec::with_capacity(snapshot.steps.len());
        for step in &snapshot.steps {
            any.push(history.estimate(&step.facts, None).0);
            on.push(
                snapshot
                    .machines
                    .iter()
                    .enumerate()
                    .filter_map(|(m, machine)| {
                        match history.estimate(&step.facts, Some(&machine.uri)) {
                            (spread, Basis::Machine) => Some((m, spread)),
                            _ => None,
                        }
                    })
                    .collect(),
            );
        }
        Durations { any, on }
    }

    fn of_step(&self, step: usize, machine: usize) -> Spread {
        self.on[step]
            .iter()
            .find(|(m, _)| *m == machine)
            .map_or(self.any[step], |(_, s)| *s)
    }
}

/// Something that happens in the simulation, at `at` seconds from now.
#[derive(Debug, PartialEq)]
struct Event {
    at: f64,
    what: What,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Done { step: usize, machine: usize },
    Due(usize),
    Back(usize),
}

impl Eq for Event {}

impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        // The earliest first from a max-heap.
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.what.cmp(&self.what))
    }
}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Plays the queue forward with the `case` durations (0 quick, 1 usual,
/// 2 slow); returns when each step would finish, in seconds from now
/// (infinite for steps no machine takes).
fn simulate(snapshot: &Snapshot, durations: &Durations, case: usize) -> Vec<f64> {
    let steps = &snapshot.steps;
    let machines = &snapshot.machines;
    let groups = steps.iter().map(|s| s.group + 1).max().unwrap_or(0);
    let mut finish = vec![f64::INFINITY; steps.len()];
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.deps).collect();
    let mut ready: Vec<BinaryHeap<Reverse<(usize, usize)>>> = vec![BinaryHeap::new(); groups];
    let mut free: Vec<u32> = machines.iter().map(|m| m.slots).collect();
    let mut events = BinaryHeap::new();
    for (m, machine) in machines.iter().enumerate() {
        if machine.back_in > 0.0 {
            events.push(Event {
                at: machine.back_in,
                what: What::Back(m),
            });
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if let Some((m, elapsed)) = step.running {
            let expected = durations.of_step(i, m).get(case);
            // Past its time: a little more, the longer it has run.
            let rest = if elapsed < expected {
                expected - elapsed
            } else {
                1.0 + elapsed * [0.05, 0.15, 0.5][case.min(2)]
            };
            free[m] = free[m].saturating_sub(1);
            events.push(Event {
                at: rest,
                what: What::Done {
                    step: i,
                    machine: m,
                },
            });
        } else if step.deps == 0 {
            if step.after > 0.0 {
                events.push(Event {
                    at: step.after,
                    what: What::Due(i),
                });
            } else {
                ready[step.group].push(Reverse((step.order, i)));
            }
        }
    }
    let mut now = 0.0;
    loop {
        // Every free slot of a machine that is back takes the first step
        // of the groups it builds.
        for (m, machine) in machines.iter().enumerate() {
            if machine.back_in > now {
                continue;
            }
            while free[m] > 0 {
                let best = (0..groups)
                    .filter(|&g| machine.fits.get(g).copied().unwrap_or(false))
                    .filter_map(|g| ready[g].peek().map(|Reverse((o, _))| (*o, g)))
                    .min();
                let Some((_, g)) = best else { break };
                let Some(Reverse((_, i))) = ready[g].pop() else {
                    break;
                };
                free[m] -= 1;
                events.push(Event {
                    at: now + durations.of_step(i, m).get(case),
                    what: What::Done {
                        step: i,
                        machine: m,
                    },
                });
            }
        }
        let Some(event) = events.pop() else { break };
        now = event.at;
        match event.what {
            What::Done { step, machine } => {
                free[machine] += 1;
                finish[step] = now;
                for &r in &steps[step].rdeps {
                    waiting[r] = waiting[r].saturating_sub(1);
                    if waiting[r] == 0 && steps[r].running.is_none() {
                        if steps[r].after > now {
                            events.push(Event {
                                at: steps[r].after,
                                what: What::Due(r),
                            });
                        } else {
                            ready[steps[r].group].push(Reverse((steps[r].order, r)));
                        }
                    }
                }
            }
            What::Due(i) => ready[steps[i].group].push(Reverse((steps[i].order, i))),
            What::Back(_) => {}
        }
    }
    finish
}

/// When each step and build would finish, in seconds from now.
#[derive(Clone, Debug, Default)]
pub(crate) struct Forecast {
    pub(crate) steps: Vec<Option<Spread>>,
    pub(crate) builds: Vec<(BuildId, Option<Spread>)>,
}

/// Plays the queue forward three times (quick, usual and slow durations).
pub(crate) fn forecast(snapshot: &Snapshot, history: &History) -> Forecast {
    let durations = Durations::of(snapshot, history);
    let runs: Vec<Vec<f64>> = (0..3)
        .map(|case| simulate(snapshot, &durations, case))
        .collect();
    let steps: Vec<Option<Spread>> = (0..snapshot.steps.len())
        .map(|i| {
            let mid = runs[1][i];
            if !mid.is_finite() {
                return None;
            }
            let (a, b) = (runs[0][i], runs[2][i]);
            Some(Spread {
                low: a.min(b).min(mid),
                mid,
                high: a.max(b).max(mid),
            })
        })
        .collect();
    let builds = snapshot
        .builds
        .iter()
        .map(|&(id, top)| (id, steps[top]))
        .collect();
    Forecast { steps, builds }
}

/// A finish time as Unix seconds, with its range.
fn eta(made_at: i64, at: Spread) -> Eta {
    let t = |s: f64| {
        (made_at as f64 + s.max(0.0))
            .round()
            .min(f64::from(i32::MAX)) as i32
    };
    Eta {
        made_at: made_at as i32,
        finish_at: t(at.mid),
        low: t(at.low),
        high: t(at.high),
    }
}

/// The latest predictions, for the status endpoint.
#[derive(Debug, Default)]
pub(crate) struct Predictions {
    pub(crate) steps: HashMap<String, Eta>,
    pub(crate) builds: HashMap<BuildId, Eta>,
    /// The finish time last recorded per build.
    recorded: HashMap<BuildId, i32>,
}

impl Predictions {
    /// Takes a new forecast made at `made_at`; returns the builds whose
    /// prediction is new or moved by more than 30 s and a tenth of the
    /// time left (to be recorded).
    pub(crate) fn update(
        &mut self,
        snapshot: &Snapshot,
        forecast: &Forecast,
        made_at: i64,
    ) -> Vec<(BuildId, Eta)> {
        self.steps = snapshot
            .steps
            .iter()
            .zip(&forecast.steps)
            .filter_map(|(s, f)| Some((s.drv.clone(), eta(made_at, (*f)?))))
            .collect();
        self.builds = forecast
            .builds
            .iter()
            .filter_map(|(id, f)| Some((*id, eta(made_at, (*f)?))))
            .collect();
        self.recorded.retain(|id, _| self.builds.contains_key(id));
        let mut moved = Vec::new();
        for (id, eta) in &self.builds {
            let left = i64::from(eta.finish_at) - made_at;
            // New, moved by 30 s and a tenth of the time left, or still
            // queued past the recorded time.
            let changed = self.recorded.get(id).is_none_or(|&was| {
                let by = (i64::from(eta.finish_at) - i64::from(was)).abs();
                (by > 30 && by * 10 > left) || (i64::from(was) < made_at && by > 0)
            });
            if changed {
                self.recorded.insert(*id, eta.finish_at);
                moved.push((*id, *eta));
            }
        }
        moved.sort_by_key(|(id, _)| *id);
        moved
    }
}

/// Reads the history, then predicts whenever the queue changed (at most
/// every 2 s, and every 30 s while builds are queued; a prediction that
/// takes long waits twenty times as long before the next).
pub(crate) async fn run(queue: Arc<Queue>) -> Result<(), QueueError> {
    match hydra_db::etas::recent_step_times(&queue.ctx.pool, HISTORY_ROWS).await {
        Ok(rows) => *queue.history() = History::from_rows(&rows),
        Err(e) => tracing::warn!(error = %e, "cannot read the durations of earlier steps"),
    }
    loop {
        tokio::select! {
            _ = queue.predict.notified() => {}
            _ = tokio::time::sleep(MAX_GAP) => {}
            _ = queue.stopping.cancelled() => return Ok(()),
        }
        let started = Instant::now();
        let q = queue.clone();
        let moved = tokio::task::spawn_blocking(move || predict(&q))
            .await
            .unwrap_or_default();
        // In chunks: a first prediction of a large queue is one row per
        // build.
        for chunk in moved.chunks(RECORD_CHUNK) {
            let (ids, etas): (Vec<BuildId>, Vec<Eta>) = chunk.iter().copied().unzip();
            if let Err(e) = hydra_db::etas::record(&queue.ctx.pool, &ids, &etas).await {
                tracing::warn!(error = %e, "cannot record the builds' predicted finish times");
                break;
            }
        }
        let pause = MIN_GAP.max(started.elapsed() * 20);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = queue.stopping.cancelled() => return Ok(()),
        }
    }
}

/// Learns the duration of a step that succeeded on `machine`, built for
/// `build`.
pub(crate) fn learn(
    queue: &Queue,
    drv_path: &str,
    system: &str,
    machine: &str,
    seconds: i32,
    build: BuildId,
) {
    let (jobset, job) = {
        let state = queue.lock();
        match state.builds.get(&build) {
            Some(b) => (
                Some(b.jobset_id),
                (b.toplevel == drv_path).then(|| b.job.clone()),
            ),
            None => (None, None),
        }
    };
    queue.history().learn(Run {
        drv_path,
        system,
        machine,
        seconds: seconds.max(0) as u32,
        jobset,
        job: job.as_deref(),
    });
}

/// One prediction of the whole queue; returns what to record.
fn predict(queue: &Queue) -> Vec<(BuildId, Eta)> {
    let now = Instant::now();
    let made_at = i64::from(hydra_db::now());
    let copied = Snapshot::copy(&queue.lock(), now);
    let locked = now.elapsed();
    let snapshot = copied.finish();
    let forecast = forecast(&snapshot, &queue.history());
    let moved = queue.predictions().update(&snapshot, &forecast, made_at);
    let s = &queue.stats;
    Stats::add(&s.predictions, 1);
    let took = now.elapsed().as_micros() as u64;
    Stats::add(&s.prediction_time_us, took);
    Stats::add(&s.prediction_lock_time_us, locked.as_micros() as u64);
    Stats::set(&s.prediction_last_us, took);
    Stats::set(&s.prediction_last_lock_us, locked.as_micros() as u64);
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::tests::{build, machine, step};
    use crate::machines::Machines;

    #[test]
    fn names_lose_their_hash_and_version() {
        assert_eq!(drv_name(&path("hello-2.12.1")), "hello");
        assert_eq!(drv_name(&path("gtk-doc-1.33")), "gtk-doc");
        assert_eq!(drv_name(&path("source")), "source");
        assert_eq!(drv_name("x-deep"), "x-deep");
    }

    const H: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    fn path(name: &str) -> String {
        format!("/nix/store/{H}-{name}.drv")
    }

    fn run<'a>(drv: &'a str, machine: &'a str, seconds: u32) -> Run<'a> {
        Run {
            drv_path: drv,
            system: "x86_64-linux",
            machine,
            seconds,
            jobset: Some(JobsetId(1)),
            job: None,
        }
    }

    fn facts(name: &str) -> Facts {
        Facts {
            name: name.into(),
            system: "x86_64-linux".into(),
            job: None,
            jobsets: vec![JobsetId(1)],
        }
    }

    #[test]
    fn durations_come_from_the_closest_history() {
        let mut h = History::default();
        let (gcc13, gcc12) = (path("gcc-13"), path("gcc-12"));
        for s in [100, 120, 110, 400] {
            h.learn(run(&gcc13, "fast", s));
        }
        for s in [300, 310, 290] {
            h.learn(run(&gcc12, "slow", s));
        }
        // The same name on the same machine: that machine's runs.
        let (on_fast, basis) = h.estimate(&facts("gcc"), Some("fast"));
        assert_eq!(basis, Basis::Machine);
        assert_eq!(on_fast.mid, 115.0);
        assert!(on_fast.low <= 110.0 && on_fast.high >= 120.0, "{on_fast:?}");
        let (on_slow, _) = h.estimate(&facts("gcc"), Some("slow"));
        assert_eq!(on_slow.mid, 300.0);
        // Elsewhere: every machine's runs of that name.
        let (any, basis) = h.estimate(&facts("gcc"), Some("other"));
        assert_eq!(basis, Basis::Name);
        assert_eq!(any.mid, 290.0);
        // Another name: the jobset's steps, widened.
        let (other, basis) = h.estimate(&facts("zlib"), None);
        assert_eq!(basis, Basis::Jobset);
        assert!(other.low <= other.mid * 0.5 && other.high >= other.mid * 2.0);
        // One run of a jobset is not enough to go by.
        let mut few = History::default();
        few.learn(run(&gcc13, "fast", 4));
        assert_eq!(few.estimate(&facts("zlib"), None), (UNKNOWN, Basis::Guess));
        // Another jobset: all steps; nothing at all: a guess.
        let mut f = facts("zlib");
        f.jobsets = vec![JobsetId(9)];
        assert_eq!(h.estimate(&f, None).1, Basis::All);
        assert_eq!(
            History::default().estimate(&f, None),
            (UNKNOWN, Basis::Guess)
        );
        // A job's own step: its earlier builds before the jobset.
        let tests = path("tests-1");
        h.learn(Run {
            job: Some("tests"),
            ..run(&tests, "fast", 42)
        });
        let mut t = facts("vm-test");
        t.job = Some((JobsetId(1), "tests".into()));
        let (job, basis) = h.estimate(&t, None);
        assert_eq!(basis, Basis::Job);
        assert_eq!(job.mid, 42.0);
    }

    #[test]
    fn recent_runs_replace_old_ones() {
        let mut h = History::default();
        let (app1, app2) = (path("app-1"), path("app-2"));
        for _ in 0..KEEP_NAMED {
            h.learn(run(&app1, "m", 1000));
        }
        for _ in 0..KEEP_NAMED {
            h.learn(run(&app2, "m", 10));
        }
        assert_eq!(h.estimate(&facts("app"), Some("m")).0.mid, 10.0);
    }

    /// A queue of known steps on known machines.
    fn queue(machines: &[(&str, u32)]) -> State {
        let mut state = State {
            machines: Machines::of(
                machines
                    .iter()
                    .map(|(uri, jobs)| machine(uri, "x86_64-linux", *jobs, &[]))
                    .collect(),
            ),
            ..Default::default()
        };
        state.jobsets.insert(JobsetId(1), Default::default());
        state
    }

    fn history(durations: &[(&str, u32)]) -> History {
        let mut h = History::default();
        for (name, seconds) in durations {
            for _ in 0..3 {
                h.learn(run(name, "m", *seconds));
            }
        }
        h
    }

    fn mid(forecast: &Forecast, snapshot: &Snapshot, drv: &str) -> Option<f64> {
        let i = snapshot.steps.iter().position(|s| s.drv == drv)?;
        forecast.steps[i].map(|s| s.mid)
    }

    #[test]
    fn a_known_dag_finishes_when_its_longest_chain_allows() {
        // top needs a and b; a needs c. One machine with two slots.
        let mut state = queue(&[("m", 2)]);
        step(&mut state, "c", "x86_64-linux", &[], "");
        step(&mut state, "a", "x86_64-linux", &["c"], "");
        step(&mut state, "b", "x86_64-linux", &[], "");
        step(&mut state, "top", "x86_64-linux", &["a", "b"], "");
        build(&mut state, 1, 1, "top", 0);
        let h = history(&[("c", 10), ("a", 20), ("b", 50), ("top", 5)]);
        let snapshot = Snapshot::of(&state, Instant::now());
        let f = forecast(&snapshot, &h);
        // Two slots: c (0–10) then a (10–30) beside b (0–50); top 50–55.
        assert_eq!(mid(&f, &snapshot, "c"), Some(10.0));
        assert_eq!(mid(&f, &snapshot, "a"), Some(30.0));
        assert_eq!(mid(&f, &snapshot, "b"), Some(50.0));
        assert_eq!(mid(&f, &snapshot, "top"), Some(55.0));
        assert_eq!(f.builds, [(BuildId(1), f.steps[snapshot.builds[0].1])]);
        // One slot: everything in a row (the longest chain first: c, a,
        // b or b first, whichever; 85 s in all).
        let mut state1 = queue(&[("m", 1)]);
        for (d, deps) in [
            ("c", &[][..]),
            ("a", &["c"]),
            ("b", &[]),
            ("top", &["a", "b"]),
        ] {
            step(&mut state1, d, "x86_64-linux", deps, "");
        }
        build(&mut state1, 1, 1, "top", 0);
        let s1 = Snapshot::of(&state1, Instant::now());
        assert_eq!(mid(&forecast(&s1, &h), &s1, "top"), Some(85.0));
    }

    #[test]
    fn running_steps_count_what_is_left_and_unbuildable_steps_never_finish() {
        let mut state = queue(&[("m", 1)]);
        step(&mut state, "long", "x86_64-linux", &[], "");
        step(&mut state, "next", "x86_64-linux", &[], "");
        step(&mut state, "arm", "aarch64-linux", &[], "");
        step(&mut state, "top", "x86_64-linux", &["arm"], "");
        let started = Instant::now() - Duration::from_secs(40);
        state.start(
            "long",
            crate::state::Running {
                machine: "m".into(),
                started,
                cancel: tokio_util::sync::CancellationToken::new(),
            },
        );
        let h = history(&[("long", 100), ("next", 10)]);
        let snapshot = Snapshot::of(&state, Instant::now());
        let f = forecast(&snapshot, &h);
        let long = mid(&f, &snapshot, "long").unwrap_or_default();
        assert!((59.0..=61.0).contains(&long), "{long}");
        let next = mid(&f, &snapshot, "next").unwrap_or_default();
        assert!((69.0..=71.0).contains(&next), "{next}");
        assert_eq!(mid(&f, &snapshot, "arm"), None);
        assert_eq!(mid(&f, &snapshot, "top"), None);
        // The range holds the usual case.
        let i = snapshot
            .steps
            .iter()
            .position(|s| s.drv == "next")
            .unwrap_or(0);
        let spread = f.steps[i].unwrap_or(UNKNOWN);
        assert!(spread.low <= spread.mid && spread.mid <= spread.high);
    }

    #[test]
    fn predictions_are_recorded_when_new_or_moved() {
        let mut p = Predictions::default();
        let snapshot = Snapshot {
            builds: vec![(BuildId(1), 0)],
            ..Default::default()
        };
        let at = |mid: f64| Forecast {
            steps: vec![],
            builds: vec![(
                BuildId(1),
                Some(Spread {
                    low: mid,
                    mid,
                    high: mid,
                }),
            )],
        };
        assert_eq!(p.update(&snapshot, &at(1000.0), 0).len(), 1);
        // 20 s later, 20 s sooner: the same finish time, not recorded.
        assert!(p.update(&snapshot, &at(980.0), 20).is_empty());
        // Moved by 500 s: recorded.
        let moved = p.update(&snapshot, &at(1480.0), 20);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].1.finish_at, 1500);
        // Still queued once the recorded time has passed: recorded again.
        let late = p.update(&snapshot, &at(20.0), 1510);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].1.finish_at, 1530);
        assert!(p.update(&snapshot, &at(20.0), 1510).is_empty());
        // Gone from the queue: forgotten.
        let none = Forecast::default();
        assert!(p.update(&Snapshot::default(), &none, 30).is_empty());
        assert!(p.builds.is_empty() && p.recorded.is_empty());
    }
}
