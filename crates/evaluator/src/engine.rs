//! The evaluation engine: turns a jobset's expression into jobs with a pool
//! of long-lived `nix-instantiate` worker processes, within a memory bound,
//! and keeps going when a job breaks its worker.
//!
//! The attribute tree is explored from a queue: an idle worker gets the
//! next paths (many while there is much to do, fewer towards the end, so
//! that the workers finish together), and the children of an attribute set
//! join the queue as soon as it is listed, so no worker waits for the
//! others. A worker process (`worker.nix`) keeps what it evaluated (the
//! top level, shared attribute sets) from one request to the next; it
//! reads each request from a named pipe and reports each path as a trace
//! line on stderr the moment it is done, so when it dies (an `abort`, a
//! type error, a missing attribute, infinite recursion: errors `tryEval`
//! cannot catch), everything before the culprit is already known, the
//! culprit is the first path not reported, and its error is what Nix
//! printed; a new process carries on after it. Errors `tryEval` does catch
//! (`throw`, `assert`) are found in the same pass; their messages come from
//! a second pass without `tryEval`. A worker whose resident memory passes
//! the limit is killed and its remaining paths go to a fresh one; a path
//! that passes the limit on its own is an error.
//!
//! Reports can be journaled ([`Journal`]): an evaluation that is
//! interrupted carries on from the paths already reported.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const WORKER_NIX: &str = include_str!("worker.nix");
const MARKER: &str = "trace: @@hydra ";
const READY: &str = "trace: @@hydra-ready";
const DONE: &str = "trace: @@hydra-done";
/// Paths that take longer than this on average are reported one per line
/// (so each is timed on its own): a line costs little next to them.
const SLOW_PATH: Duration = Duration::from_millis(2);
/// Paths reported per trace line once nothing has gone wrong.
const BATCH: usize = 64;
/// The most paths in one request to a worker.
const REQUEST_MAX: usize = 512;
/// How often a worker's memory is looked at.
const MEMORY_POLL: Duration = Duration::from_millis(10);

/// What to evaluate.
#[derive(Clone, Debug)]
pub enum Expression {
    /// `<input/path>` from the search path (a legacy jobset).
    Legacy { expr: String },
    /// `hydraJobs` (or `checks`) of a locked flake reference.
    Flake { url: String },
}

/// An argument for the jobset's function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A string (Hydra's `--argstr name value`).
    Str(String, String),
    /// A Nix expression (Hydra's `--arg name expr`).
    Expr(String, String),
}

/// A Nix string literal.
pub fn nix_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The arguments as a Nix attribute set.
fn inputs_nix(args: &[Arg]) -> String {
    let mut s = String::from("{\n");
    for arg in args {
        match arg {
            Arg::Str(name, value) => s.push_str(&format!(
                "  {} = {};\n",
                nix_string(name),
                nix_string(value)
            )),
            Arg::Expr(name, expr) => {
                s.push_str(&format!("  {} = ({}\n);\n", nix_string(name), expr))
            }
        }
    }
    s.push('}');
    s
}

pub use hydra_metrics::resident_memory;
pub use hydra_nix::env::NixEnv;

/// An evaluation to do.
#[derive(Clone, Debug)]
pub struct Request {
    pub expression: Expression,
    /// `-I name=path` entries (the inputs with store paths).
    pub search_path: Vec<(String, String)>,
    pub args: Vec<Arg>,
    pub workers: usize,
    pub max_memory_mib: u64,
    pub allow_import_from_derivation: bool,
    pub nix: NixEnv,
    /// Where `.drv` files are registered as garbage collector roots.
    pub gc_roots_dir: Option<PathBuf>,
    /// The evaluation fails when it takes longer.
    pub timeout: Duration,
}

/// Meta fields read into `Builds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub description: Option<String>,
    pub license: Option<String>,
    pub homepage: Option<String>,
    pub maintainers: Option<String>,
    pub max_silent: Option<i64>,
    pub timeout: Option<i64>,
    pub scheduling_priority: Option<i64>,
    #[serde(default)]
    pub is_channel: bool,
}

/// An evaluated job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The dotted attribute path.
    pub name: String,
    /// The derivation's `name`.
    pub nix_name: String,
    pub system: String,
    pub drv_path: String,
    /// Output name → path (`None` for content-addressed outputs).
    pub outputs: BTreeMap<String, Option<String>>,
    pub meta: Meta,
    pub aggregate: bool,
    /// Constituents given as derivations: their `.drv` paths.
    pub constituents: Vec<String>,
    /// Constituents given as job names (or globs).
    pub named_constituents: Vec<String>,
    pub glob_constituents: bool,
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub jobs: BTreeMap<String, Job>,
    /// Job name → its error text.
    pub errors: BTreeMap<String, String>,
    pub stats: Stats,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Worker processes started.
    pub workers_started: u64,
    /// Workers killed for passing the memory limit.
    pub memory_kills: u64,
    /// Workers that died on a job and were replaced.
    pub crashes: u64,
    /// The highest resident memory seen in a worker, in bytes.
    pub peak_rss: u64,
    /// Paths whose report came from the journal.
    pub resumed: u64,
    /// What evaluating each top-level attribute cost.
    pub attrsets: BTreeMap<String, Cost>,
    /// The jobs that took longest, slowest first (at most [`SLOWEST`]).
    pub slowest: Vec<(String, Cost)>,
}

/// How many of the slowest jobs an evaluation keeps.
pub const SLOWEST: usize = 20;

/// What evaluating a part of the tree cost: the workers' time (a report
/// line's time shared among the paths it reports), the jobs found, and the
/// worker's resident memory when they were reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub milliseconds: u64,
    pub jobs: u64,
    pub peak_rss: u64,
}

impl Cost {
    fn add(&mut self, other: &Cost) {
        self.milliseconds += other.milliseconds;
        self.jobs += other.jobs;
        self.peak_rss = self.peak_rss.max(other.peak_rss);
    }
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.workers_started += other.workers_started;
        self.memory_kills += other.memory_kills;
        self.crashes += other.crashes;
        self.peak_rss = self.peak_rss.max(other.peak_rss);
        self.resumed += other.resumed;
        for (name, cost) in &other.attrsets {
            self.attrsets.entry(name.clone()).or_default().add(cost);
        }
        for (name, cost) in &other.slowest {
            self.note_job(name, cost);
        }
    }

    /// Counts what evaluating `path` cost (on every path reported: no
    /// allocation unless the attribute or the job is new to the counts).
    fn note(&mut self, path: &[String], cost: &Cost) {
        let Some(top) = path.first() else { return };
        match self.attrsets.get_mut(top) {
            Some(counted) => counted.add(cost),
            None => {
                self.attrsets.insert(top.clone(), cost.clone());
            }
        }
        if cost.jobs > 0 && self.among_slowest(cost) {
            self.note_job(&job_name(path), cost);
        }
    }

    /// Whether a job that cost `cost` is one of the slowest so far.
    fn among_slowest(&self, cost: &Cost) -> bool {
        self.slowest.len() < SLOWEST
            || self
                .slowest
                .last()
                .is_some_and(|(_, c)| c.milliseconds < cost.milliseconds)
    }

    /// Keeps `name` among the slowest jobs if it is one of them.
    fn note_job(&mut self, name: &str, cost: &Cost) {
        if !self.among_slowest(cost) {
            return;
        }
        self.slowest.push((name.to_string(), cost.clone()));
        self.slowest
            .sort_by(|a, b| b.1.milliseconds.cmp(&a.1.milliseconds).then(a.0.cmp(&b.0)));
        self.slowest.truncate(SLOWEST);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The expression itself could not be evaluated (syntax error, the top
    /// level throws, is not an attribute set…).
    #[error("{0}")]
    TopLevel(String),
    #[error("the evaluation took longer than its time limit")]
    Timeout,
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("evaluation worker: {0}")]
    Worker(String),
}

#[derive(Debug, Deserialize)]
struct Line {
    i: usize,
    result: RawResult,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum RawResult {
    Job(Box<RawJob>),
    Attrs {
        children: Vec<String>,
    },
    Null,
    Failed,
    Other {
        #[serde(rename = "type")]
        value_type: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawJob {
    name: String,
    system: String,
    drv_path: String,
    outputs: BTreeMap<String, Option<String>>,
    #[serde(flatten)]
    meta: Meta,
    #[serde(default)]
    aggregate: bool,
    #[serde(default)]
    constituents: Vec<String>,
    #[serde(default)]
    named_constituents: Vec<String>,
    #[serde(default)]
    glob_constituents: bool,
}

/// A job name from an attribute path: components joined by `.`, quoted
/// when they contain a `.` themselves.
pub fn job_name(path: &[String]) -> String {
    path.iter()
        .map(|c| {
            if c.contains('.') {
                format!("\"{c}\"")
            } else {
                c.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What a worker said about one path.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Reported {
    Done(RawResult),
    /// The worker died on it (or it passed the memory limit on its own).
    Error(String),
}

/// What was found for one attribute path, as a journal keeps it (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Report(Reported);

/// Working directories are `<temp>/hydra-eval-<pid>-<random>`.
const WORK_PREFIX: &str = "hydra-eval-";

/// Removes the working directories that evaluators which are gone (killed,
/// say) left in the temporary directory; those of running processes stay.
/// Returns how many were removed.
pub fn remove_stale_work_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORK_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a stale evaluation directory")
            }
        }
    }
    removed
}

/// Reports of attribute paths, a worker's trace line at a time.
pub type Reports = Vec<(Vec<String>, Report)>;

/// Where a journal receives reports.
pub type Sink = mpsc::UnboundedSender<Reports>;

/// Reports already known for an evaluation and where new ones go: a journal
/// kept by the caller lets an evaluation that was interrupted (the
/// evaluator restarted, killed) carry on from what was already evaluated.
#[derive(Debug, Default)]
pub struct Journal {
    /// Attribute path → what was reported for it.
    pub known: HashMap<Vec<String>, Report>,
    /// Receives reports as workers make them, a trace line at a time.
    pub sink: Option<Sink>,
}

/// Evaluates `request`.
pub async fn evaluate(request: &Request) -> Result<Outcome, EngineError> {
    evaluate_journaled(request, Journal::default()).await
}

/// Evaluates `request`, taking the reports of `journal.known` as done and
/// sending every new one to `journal.sink`.
pub async fn evaluate_journaled(
    request: &Request,
    journal: Journal,
) -> Result<Outcome, EngineError> {
    let deadline = Instant::now() + request.timeout;
    let work = tempfile::Builder::new()
        .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| EngineError::Worker(format!("cannot create a working directory: {e}")))?;
    // Registering roots is slow file system work; a thread does it while
    // evaluation goes on, and is waited for before returning.
    let (roots_tx, roots_thread) = match &request.gc_roots_dir {
        Some(dir) => {
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let dir = dir.clone();
            let thread = tokio::task::spawn_blocking(move || {
                for drv in rx {
                    register_gc_root(&dir, &drv);
                }
            });
            (Some(tx), Some(thread))
        }
        None => (None, None),
    };
    let request = Arc::new(request.clone());
    let mut workers = Vec::new();
    for id in 0..request.workers.max(1) {
        let mut worker = Worker::new(id, work.path().to_path_buf());
        // Every worker evaluates the top level while the first one lists it.
        worker.start(&request)?;
        workers.push(worker);
    }
    let mut explore = Explore {
        outcome: Outcome::default(),
        queue: VecDeque::new(),
        failed: Vec::new(),
        known: journal.known,
        roots: roots_tx,
        retried: Vec::new(),
    };
    explore.reach(Vec::new())?;
    let sink = journal.sink;
    workers = explore
        .pass(&request, workers, true, deadline, sink.clone())
        .await?;

    // Errors tryEval caught: evaluate them again without it, for the text.
    if !explore.failed.is_empty() {
        explore.queue = std::mem::take(&mut explore.failed).into();
        workers = explore
            .pass(&request, workers, false, deadline, None)
            .await?;
        if let Some(sink) = &sink {
            let texts = explore
                .retried
                .iter()
                .map(|(path, text)| (path.clone(), Report(Reported::Error(text.clone()))))
                .collect();
            let _ = sink.send(texts);
        }
    }
    for worker in workers {
        explore.outcome.stats.add(&worker.stats);
    }
    drop(explore.roots.take());
    if let Some(thread) = roots_thread {
        let _ = thread.await;
    }
    Ok(explore.outcome)
}

/// The exploration of the attribute tree: what is left to evaluate and
/// what was found.
struct Explore {
    outcome: Outcome,
    /// Paths to evaluate, siblings together.
    queue: VecDeque<Vec<String>>,
    /// Paths whose evaluation failed in a way `tryEval` catches.
    failed: Vec<Vec<String>>,
    known: HashMap<Vec<String>, Report>,
    roots: Option<std::sync::mpsc::Sender<String>>,
    /// The texts of the second pass, for the journal.
    retried: Vec<(Vec<String>, String)>,
}

impl Explore {
    /// A path to evaluate: settled from the journal when it is known there,
    /// queued for a worker otherwise.
    fn reach(&mut self, path: Vec<String>) -> Result<(), EngineError> {
        let mut stack = vec![path];
        while let Some(path) = stack.pop() {
            match self.known.remove(&path) {
                Some(Report(report)) => {
                    self.outcome.stats.resumed += 1;
                    let children = self.settle(&path, report)?;
                    // Depth first, in order.
                    stack.extend(children.into_iter().rev());
                }
                None => self.queue.push_back(path),
            }
        }
        Ok(())
    }

    /// Runs the queue through the workers until nothing is left; with
    /// `with_try`, the paths found below attribute sets are explored too.
    async fn pass(
        &mut self,
        request: &Arc<Request>,
        workers: Vec<Worker>,
        with_try: bool,
        deadline: Instant,
        sink: Option<Sink>,
    ) -> Result<Vec<Worker>, EngineError> {
        let count = workers.len();
        let mut idle = workers;
        let mut running = tokio::task::JoinSet::new();
        loop {
            while !self.queue.is_empty() {
                let Some(mut worker) = idle.pop() else { break };
                // Large requests while there is much to do, smaller ones
                // towards the end so that the workers finish together.
                let size = self.queue.len().div_ceil(2 * count).clamp(1, REQUEST_MAX);
                let paths: Vec<Vec<String>> = self.queue.drain(..size).collect();
                let request = request.clone();
                let sink = sink.clone();
                running.spawn(async move {
                    let pass = Pass {
                        request: &request,
                        with_try,
                        deadline,
                        sink: sink.as_ref(),
                    };
                    let reports = worker.evaluate(&pass, &paths).await;
                    (worker, paths, reports)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (worker, paths, reports) =
                joined.map_err(|e| EngineError::Worker(e.to_string()))?;
            let reports = reports?;
            idle.push(worker);
            for (path, report) in paths.into_iter().zip(reports) {
                if with_try {
                    for child in self.settle(&path, report)? {
                        self.reach(child)?;
                    }
                } else {
                    let text = match report {
                        Reported::Error(e) => e,
                        // Evaluating it a second time succeeded: it depends
                        // on the order of evaluation; report it as it first
                        // behaved.
                        Reported::Done(_) => {
                            "the job failed to evaluate (its error could not be reproduced)".into()
                        }
                    };
                    self.outcome.errors.insert(job_name(&path), text.clone());
                    self.retried.push((path, text));
                }
            }
        }
        Ok(idle)
    }

    /// Records what was reported for `path`; returns its children.
    fn settle(
        &mut self,
        path: &[String],
        report: Reported,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        let name = job_name(path);
        match report {
            Reported::Done(RawResult::Attrs { children }) => {
                return Ok(children
                    .into_iter()
                    // Hydra never had jobs with spaces in their names.
                    .filter(|child| !child.contains(' '))
                    .map(|child| {
                        let mut p = path.to_vec();
                        p.push(child);
                        p
                    })
                    .collect());
            }
            Reported::Done(RawResult::Job(raw)) if path.is_empty() => {
                return Err(EngineError::TopLevel(format!(
                    "the top level is the derivation {}, not an attribute set of jobs",
                    raw.name
                )));
            }
            Reported::Done(RawResult::Job(raw)) => {
                let raw = *raw;
                if let Some(tx) = &self.roots {
                    let _ = tx.send(raw.drv_path.clone());
                }
                self.outcome.jobs.insert(
                    name.clone(),
                    Job {
                        name,
                        nix_name: raw.name,
                        system: raw.system,
                        drv_path: raw.drv_path,
                        outputs: raw.outputs,
                        meta: Meta {
                            // Hydra's default.
                            scheduling_priority: raw.meta.scheduling_priority.or(Some(100)),
                            ..raw.meta
                        },
                        aggregate: raw.aggregate,
                        constituents: raw.constituents,
                        named_constituents: raw.named_constituents,
                        glob_constituents: raw.glob_constituents,
                    },
                );
            }
            Reported::Done(RawResult::Null) => {}
            Reported::Done(RawResult::Other { value_type }) if path.is_empty() => {
                return Err(EngineError::TopLevel(format!(
                    "the top level is a {value_type}, not an attribute set of jobs"
                )));
            }
            Reported::Done(RawResult::Other { value_type }) => {
                self.outcome.errors.insert(
                    name,
                    format!("unsupported value: a {value_type} is neither a derivation nor an attribute set"),
                );
            }
            Reported::Done(RawResult::Failed) => self.failed.push(path.to_vec()),
            Reported::Error(e) if path.is_empty() => return Err(EngineError::TopLevel(e)),
            Reported::Error(e) => {
                self.outcome.errors.insert(name, e);
            }
        }
        Ok(Vec::new())
    }
}

/// Registers `store_path` as a garbage collector root: a symlink named
/// after it in `dir`, as `nix-store --add-root` makes.
pub(crate) fn register_gc_root(dir: &Path, store_path: &str) {
    let Some(base) = Path::new(store_path).file_name() else {
        return;
    };
    let link = dir.join(base);
    if link.symlink_metadata().is_ok() {
        return;
    }
    if let Err(e) = std::os::unix::fs::symlink(store_path, &link) {
        tracing::warn!(error = %e, root = %link.display(), "cannot register a garbage collector root");
    }
}

/// What every request of a pass shares.
#[derive(Clone, Copy)]
struct Pass<'a> {
    request: &'a Request,
    /// Whether errors `tryEval` catches are reported as failed.
    with_try: bool,
    deadline: Instant,
    sink: Option<&'a Sink>,
}

/// One worker: a `nix-instantiate` process at a time, replaced when it
/// dies or grows past the memory limit.
struct Worker {
    id: usize,
    work: PathBuf,
    /// Processes started so far (each has its own directory).
    generation: usize,
    process: Option<Process>,
    stats: Stats,
}

/// A running worker process.
struct Process {
    child: tokio::process::Child,
    pid: Option<u32>,
    dir: PathBuf,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    /// The number of the next request (`in-<next>`).
    next: usize,
    /// Whether the top level was evaluated.
    ready: bool,
    /// Whether its last report line took [`SLOW_PATH`] or more per path
    /// (at first, until a line says otherwise): the next request is then
    /// reported one path per line.
    slow: bool,
}

impl Worker {
    fn new(id: usize, work: PathBuf) -> Worker {
        Worker {
            id,
            work,
            generation: 0,
            process: None,
            stats: Stats::default(),
        }
    }

    /// Starts a process unless one runs.
    fn start(&mut self, request: &Request) -> Result<(), EngineError> {
        if self.process.is_none() {
            self.generation += 1;
            let dir = self
                .work
                .join(format!("worker-{}-{}", self.id, self.generation));
            self.process = Some(Process::start(request, dir)?);
            self.stats.workers_started += 1;
        }
        Ok(())
    }

    /// Evaluates `paths`, restarting the process after each death; returns
    /// one report per path, in order.
    async fn evaluate(
        &mut self,
        pass: &Pass<'_>,
        paths: &[Vec<String>],
    ) -> Result<Vec<Reported>, EngineError> {
        let request = pass.request;
        let mut reports: Vec<Reported> = Vec::with_capacity(paths.len());
        // How many of the next paths are reported one at a time: after a
        // worker died in a batch, the culprit is among the next BATCH paths.
        let mut slow_until = 0;
        // Whether the previous process was killed for passing the memory
        // limit.
        let mut retrying_memory = false;
        // Starts that met the store's database locked by another process
        // setting it up (a fresh store, several workers at once).
        let mut busy_starts = 0;
        while reports.len() < paths.len() {
            let pending = &paths[reports.len()..];
            self.start(request)?;
            let Some(process) = self.process.as_mut() else {
                return Err(EngineError::Worker("no worker process".into()));
            };
            // Slow paths go one per line anyway: each is timed on its own.
            let one_per_line = if process.slow {
                pending.len()
            } else {
                slow_until
            };
            let run = process
                .send(pass, pending, one_per_line, &mut self.stats)
                .await?;
            let reported = run.results.len();
            reports.extend(run.results.into_iter().map(Reported::Done));
            if reports.len() == paths.len() {
                break;
            }
            self.process = None;
            // Whether the first unreported path was being reported alone.
            let alone = reported < one_per_line;
            let culprit = &pending[reported];
            let fail = |text: String, reports: &mut Vec<Reported>| {
                if let Some(sink) = pass.sink {
                    let _ = sink.send(vec![(
                        culprit.clone(),
                        Report(Reported::Error(text.clone())),
                    )]);
                }
                reports.push(Reported::Error(text));
            };
            match run.end {
                End::Completed => {
                    return Err(EngineError::Worker(format!(
                        "the worker ended after {reported} of {} paths without an error",
                        pending.len()
                    )));
                }
                End::NotReady(error)
                    if reported == 0 && busy_starts < 5 && error.contains("is busy") =>
                {
                    busy_starts += 1;
                    tokio::time::sleep(Duration::from_millis(100 * busy_starts)).await;
                }
                End::NotReady(error) => return Err(EngineError::TopLevel(error)),
                End::Died(error) => {
                    self.stats.crashes += 1;
                    retrying_memory = false;
                    if alone {
                        // Exactly this path killed the worker.
                        fail(error, &mut reports);
                        slow_until = 0;
                    } else {
                        slow_until = BATCH;
                    }
                }
                End::OutOfMemory => {
                    if retrying_memory && reported == 0 && alone {
                        // First, alone, in a fresh worker, and still too big.
                        retrying_memory = false;
                        slow_until = 0;
                        fail(
                            format!(
                                "evaluating this job used more than the memory limit of {} MiB (evaluator_max_memory_size)",
                                request.max_memory_mib
                            ),
                            &mut reports,
                        );
                    } else {
                        retrying_memory = true;
                        slow_until = BATCH;
                    }
                }
            }
        }
        Ok(reports)
    }
}

enum End {
    /// Every path was reported; the process waits for the next request.
    Completed,
    /// The expression could not even be set up (before any path).
    NotReady(String),
    /// Died while evaluating the first unreported path.
    Died(String),
    OutOfMemory,
}

struct Run {
    results: Vec<RawResult>,
    end: End,
}

fn worker_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Worker(format!("{what}: {e}"))
}

/// Makes the named pipe a worker reads request `k` from.
fn make_request_pipe(dir: &Path, k: usize) -> Result<PathBuf, EngineError> {
    let pipe = dir.join(format!("in-{k}"));
    nix::unistd::mkfifo(
        &pipe,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .map_err(|e| worker_error(&format!("cannot make {}", pipe.display()), e))?;
    Ok(pipe)
}

impl Process {
    fn start(request: &Request, dir: PathBuf) -> Result<Process, EngineError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| worker_error(&format!("cannot create {}", dir.display()), e))?;
        std::fs::write(dir.join("worker.nix"), WORKER_NIX)
            .map_err(|e| worker_error("cannot write the worker", e))?;
        let mut params = match &request.expression {
            Expression::Legacy { expr } => serde_json::json!({"mode": "legacy", "expr": expr}),
            Expression::Flake { url } => serde_json::json!({"mode": "flake", "flake": url}),
        };
        params["batch"] = BATCH.into();
        std::fs::write(dir.join("params.json"), params.to_string())
            .map_err(|e| worker_error("cannot write the worker's parameters", e))?;
        std::fs::write(dir.join("inputs.nix"), inputs_nix(&request.args))
            .map_err(|e| worker_error("cannot write the worker's inputs", e))?;
        make_request_pipe(&dir, 0)?;

        // A worker reads no stdin: without a parent-death signal it would go
        // on evaluating after a killed evaluator.
        let mut cmd = request.nix.command_dying_with_parent("nix-instantiate");
        cmd.args(["--eval", "--read-write-mode"])
            .args(["--option", "allow-import-from-derivation"])
            .arg(if request.allow_import_from_derivation {
                "true"
            } else {
                "false"
            })
            .arg("-I")
            .arg(format!("hydra-worker={}", dir.display()));
        // Restricted evaluation for flakes too: Nix 2.8's pure mode would
        // also refuse the worker's own files, and restricted mode gives what
        // matters here (no files outside the inputs, no environment).
        cmd.args(["--option", "restrict-eval", "true"]);
        if let Expression::Flake { .. } = &request.expression {
            cmd.args(["--option", "experimental-features", "nix-command flakes"]);
        }
        for (name, path) in &request.search_path {
            cmd.arg("-I").arg(format!("{name}={path}"));
        }
        cmd.args(["-E", "import <hydra-worker/worker.nix>"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| EngineError::Spawn {
            program: "nix-instantiate".into(),
            source,
        })?;
        let pid = child.id();
        let Some(stderr) = child.stderr.take() else {
            return Err(EngineError::Worker("the worker has no stderr".into()));
        };
        Ok(Process {
            child,
            pid,
            dir,
            lines: BufReader::new(stderr).lines(),
            next: 0,
            ready: false,
            slow: true,
        })
    }

    /// Sends one request and reads its reports until every path is
    /// reported or the process ends.
    async fn send(
        &mut self,
        pass: &Pass<'_>,
        paths: &[Vec<String>],
        slow_until: usize,
        stats: &mut Stats,
    ) -> Result<Run, EngineError> {
        let Pass {
            request,
            with_try,
            deadline,
            sink,
        } = *pass;
        let pipe = self.dir.join(format!("in-{}", self.next));
        self.next += 1;
        // The pipe of the request after this one exists before the worker
        // asks for it.
        make_request_pipe(&self.dir, self.next)?;
        let body = serde_json::json!({
            "paths": paths,
            "slowUntil": slow_until,
            "withTry": with_try,
        })
        .to_string();
        // Opening a pipe to write waits for its reader: a thread does it.
        let writer = {
            let pipe = pipe.clone();
            tokio::task::spawn_blocking(move || std::fs::write(pipe, body))
        };
        let mut results = Vec::new();
        let mut tail: Vec<String> = Vec::new();
        // When the last report line came (the request's start, first).
        let mut mark = Instant::now();
        let limit = request.max_memory_mib.saturating_mul(1 << 20);
        let mut poll = tokio::time::interval(MEMORY_POLL);
        let mut over_limit = false;
        loop {
            tokio::select! {
                line = self.lines.next_line() => {
                    match line {
                        Ok(Some(line)) => {
                            if let Some(json) = line.strip_prefix(MARKER) {
                                let parsed: Vec<Line> = serde_json::from_str(json)
                                    .map_err(|e| EngineError::Worker(format!("unreadable report `{json}`: {e}")))?;
                                let first = results.len();
                                for line in parsed {
                                    if line.i != results.len() {
                                        return Err(EngineError::Worker(format!("report {} out of order", line.i)));
                                    }
                                    results.push(line.result);
                                }
                                // The line's time, shared among its paths
                                // (one, when paths are slow).
                                let now = Instant::now();
                                let reported = (results.len() - first).max(1) as u32;
                                let each = now.duration_since(mark) / reported;
                                mark = now;
                                // Listing attribute sets costs little: jobs decide.
                                if results[first..].iter().any(|r| matches!(r, RawResult::Job(_))) {
                                    self.slow = each >= SLOW_PATH;
                                }
                                let milliseconds = each.as_millis() as u64;
                                let rss = self.pid.and_then(resident_memory).map_or(0, |(rss, _)| rss);
                                for (path, result) in paths[first..results.len()].iter().zip(&results[first..]) {
                                    let jobs = u64::from(matches!(result, RawResult::Job(_)));
                                    stats.note(path, &Cost { milliseconds, jobs, peak_rss: rss });
                                }
                                if let Some(sink) = sink {
                                    let reports = paths[first..results.len()]
                                        .iter()
                                        .zip(&results[first..])
                                        .map(|(p, r)| (p.clone(), Report(Reported::Done(r.clone()))))
                                        .collect();
                                    let _ = sink.send(reports);
                                }
                                tail.clear();
                                if results.len() == paths.len() {
                                    let _ = writer.await;
                                    return Ok(Run { results, end: End::Completed });
                                }
                            } else if line == READY {
                                self.ready = true;
                            } else if line != DONE {
                                tail.push(line);
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                _ = poll.tick() => {
                    if let Some((rss, peak)) = self.pid.and_then(resident_memory) {
                        stats.peak_rss = stats.peak_rss.max(peak);
                        if limit > 0 && rss > limit {
                            over_limit = true;
                            let _ = self.child.start_kill();
                        }
                    }
                    if Instant::now() > deadline {
                        let _ = self.child.start_kill();
                        let _ = self.child.wait().await;
                        release(&pipe, writer).await;
                        return Err(EngineError::Timeout);
                    }
                }
            }
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| EngineError::Worker(e.to_string()))?;
        release(&pipe, writer).await;
        if over_limit {
            stats.memory_kills += 1;
            return Ok(Run {
                results,
                end: End::OutOfMemory,
            });
        }
        if Instant::now() > deadline {
            return Err(EngineError::Timeout);
        }
        let end = if status.success() {
            End::Completed
        } else {
            let error = error_text(&tail, &status, &self.dir);
            if self.ready {
                End::Died(error)
            } else {
                End::NotReady(error)
            }
        };
        Ok(Run { results, end })
    }
}

/// Ends a request's writer whose reader is gone: opening the pipe to read
/// lets the writer's open return, and its write then fails or lands in a
/// pipe nobody reads.
async fn release(pipe: &Path, writer: tokio::task::JoinHandle<std::io::Result<()>>) {
    use std::os::unix::fs::OpenOptionsExt;
    while !writer.is_finished() {
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(pipe);
        drop(reader);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = writer.await;
}

/// The useful part of what a dying worker printed: from its `error:` line,
/// without the hint about `--show-trace`, and without the places in the
/// worker's own files (`worker.nix`, `inputs.nix` under `dir`): the user
/// reads positions in their own expression, as Nix reported them.
fn error_text(lines: &[String], status: &std::process::ExitStatus, dir: &Path) -> String {
    let start = lines
        .iter()
        .position(|l| l.starts_with("error:"))
        .unwrap_or(0);
    let dir = dir.display().to_string();
    let mut text: Vec<String> = Vec::new();
    let mut skipping = false;
    for line in &lines[start..] {
        let trimmed = line.trim_start();
        if line.contains("--show-trace") {
            continue;
        }
        if trimmed.starts_with("at ") && line.contains(&dir) {
            // A position in the worker, and its excerpt below.
            while text.last().is_some_and(|l| l.trim().is_empty()) {
                text.pop();
            }
            skipping = true;
            continue;
        }
        if skipping {
            let excerpt = trimmed.is_empty()
                || trimmed.starts_with('|')
                || trimmed
                    .split_once('|')
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if excerpt {
                continue;
            }
            skipping = false;
            text.push(String::new());
        }
        text.push(line.replace(&dir, "(the evaluator)"));
    }
    let text = text.join("\n").trim().to_string();
    if text.is_empty() {
        format!("the evaluator worker failed ({status})")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_strings_are_escaped() {
        assert_eq!(nix_string("plain"), "\"plain\"");
        assert_eq!(nix_string("a\"b\\c${d}$e"), "\"a\\\"b\\\\c\\${d}$e\"");
        assert_eq!(
            inputs_nix(&[
                Arg::Str("s".into(), "v".into()),
                Arg::Expr("e".into(), "1 + 1".into())
            ]),
            "{\n  \"s\" = \"v\";\n  \"e\" = (1 + 1\n);\n}"
        );
    }

    #[test]
    fn errors_show_the_users_positions_not_the_workers() {
        use std::os::unix::process::ExitStatusExt;
        let dir = Path::new("/tmp/hydra-eval-1XGX5n/worker-1-0");
        let lines: Vec<String> = "warning: something first
error: anonymous function at /nix/store/h7j9dzqan0n1z6aah9s117zqhlz2g7jk-ex2/release.nix:1:1 called without required argument 'dep'

       at /tmp/hydra-eval-1XGX5n/worker-1-0/worker.nix:15:10:

           14|     if builtins.isFunction f
           15|     then f (builtins.intersectAttrs (builtins.functionArgs f) inputs)
             |          ^
           16|     else f;
(use '--show-trace' to show detailed location information)"
            .lines()
            .map(String::from)
            .collect();
        let status = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(
            error_text(&lines, &status, dir),
            "error: anonymous function at /nix/store/h7j9dzqan0n1z6aah9s117zqhlz2g7jk-ex2/release.nix:1:1 \
             called without required argument 'dep'"
        );
        let user: Vec<String> = "error: attribute 'b' missing

       at /nix/store/3mwsxaldxr1kyiiklxra5m2pbc8g8dca-ex/release.nix:7:13:

            7|   missing = { a = 1; }.b;
             |             ^
       Did you mean a?"
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(error_text(&user, &status, dir), user.join("\n"));
    }

    #[test]
    fn job_names_quote_dotted_components() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            job_name(&p(&["tests", "foo", "x86_64-linux"])),
            "tests.foo.x86_64-linux"
        );
        assert_eq!(job_name(&p(&["packageset", "nested"])), "packageset.nested");
        assert_eq!(job_name(&p(&["pkgs", "a.b"])), "pkgs.\"a.b\"");
    }
}
