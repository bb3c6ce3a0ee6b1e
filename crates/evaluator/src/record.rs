//! Writing an evaluation to the database, by Hydra's rules (`checkBuild`):
//! a job reuses the build of the previous evaluation with new builds that
//! has the same name and output, else gets a new build; the evaluation
//! records its members, inputs and aggregate constituents; the NOTIFY
//! sequence is Hydra's. Everything happens in one transaction that is
//! retried on conflicts; moving `isCurrent` and repointing builds happen
//! after it, in short batches that lock builds in id order.

use std::collections::{BTreeMap, HashMap, HashSet};

use hydra_db::builds::NewBuild;
use hydra_db::evals::{EvalInput, NewEvalRow};
use hydra_db::ids::{BuildId, EvalId, JobsetId};
use hydra_db::{DbError, Transient, Tx, lock_builds, notify, transaction};
use sqlx::{PgConnection, PgPool};

use crate::engine::Job;
use crate::inputs::Fetched;

/// An evaluation to record.
#[derive(Debug)]
pub(crate) struct NewEval<'a> {
    pub jobset_id: JobsetId,
    pub trace_id: &'a str,
    pub hash: &'a str,
    pub checkout_time: i32,
    pub eval_time: i32,
    pub flake: Option<&'a str>,
    pub nix_expr_input: Option<&'a str>,
    pub nix_expr_path: Option<&'a str>,
    pub jobs: &'a BTreeMap<String, Job>,
    /// The per-job errors as one text, empty when there are none (Hydra's
    /// `errorMsg = ''` means "no error").
    pub error_text: &'a str,
    /// Aggregates whose constituents could not be resolved (name → error):
    /// they fail the evaluation if it adds builds.
    pub broken_aggregates: &'a BTreeMap<String, String>,
    pub inputs: &'a [Fetched],
}

/// Why an evaluation was not recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// Hydra's rule: an evaluation that changes the jobset fails as a whole
    /// when one of its aggregates is broken.
    #[error("aggregate job ‘{name}’ failed with the error: {error}")]
    BrokenAggregate { name: String, error: String },
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        RecordError::Db(DbError::from(e))
    }
}

impl Transient for RecordError {
    fn is_transient(&self) -> bool {
        matches!(self, RecordError::Db(e) if e.is_transient())
    }
}

/// What was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub eval_id: EvalId,
    pub new_builds: Vec<BuildId>,
    pub reused: usize,
    pub has_new_builds: bool,
    /// Builds of the evaluation (new and reused).
    pub members: Vec<BuildId>,
    /// Reused builds whose derivation changed: (build, new drvPath).
    pub repointed: Vec<(BuildId, String)>,
}

struct Previous {
    id: BuildId,
    drv_path: String,
    finished: bool,
}

/// The output that identifies a job's build: the first output by name, or
/// the derivation when that output has no fixed path.
fn representative(job: &Job) -> String {
    job.outputs
        .iter()
        .next()
        .and_then(|(_, p)| p.clone())
        .unwrap_or_else(|| job.drv_path.clone())
}

/// Records an evaluation; see the module documentation.
pub(crate) async fn record(pool: &PgPool, eval: &NewEval<'_>) -> Result<Recorded, RecordError> {
    let recorded = transaction(pool, |mut tx: Tx| {
        Box::pin(async move { record_in(&mut tx, eval).await })
    })
    .await?;
    if !recorded.repointed.is_empty() {
        repoint(pool, &recorded.repointed).await?;
    }
    if recorded.has_new_builds {
        move_is_current(pool, eval.jobset_id, &recorded.members).await?;
    }
    Ok(recorded)
}

/// A job's identity across evaluations: its name and representative
/// output.
type JobKey = (String, String);

/// The builds of the previous evaluation with new builds, by job.
#[derive(Default)]
struct PreviousEval {
    builds: HashMap<JobKey, Previous>,
    /// How many members it had (`None`: there is none).
    count: Option<usize>,
}

/// Hydra's `checkBuild` over every job, in name order: the evaluation's
/// members so far and the NOTIFYs to send.
struct Checked<'a> {
    notes: Vec<(&'static str, String)>,
    /// (build, whether it is new).
    members: Vec<(BuildId, bool)>,
    /// Jobs that need a new build.
    to_insert: Vec<&'a Job>,
    /// Job name → its build.
    job_builds: HashMap<&'a str, BuildId>,
    reused: usize,
    /// Reused builds whose derivation changed: (build, new drvPath).
    repointed: Vec<(BuildId, String)>,
}

async fn record_in(conn: &mut PgConnection, eval: &NewEval<'_>) -> Result<Recorded, RecordError> {
    let now = hydra_db::now();
    let eval_id = hydra_db::evals::insert(
        conn,
        &NewEvalRow {
            jobset_id: eval.jobset_id,
            error_text: eval.error_text,
            timestamp: now,
            checkout_time: eval.checkout_time,
            eval_time: eval.eval_time,
            hash: eval.hash,
            flake: eval.flake,
            nix_expr_input: eval.nix_expr_input,
            nix_expr_path: eval.nix_expr_path,
        },
    )
    .await?;
    let previous = previous_eval(conn, eval.jobset_id, eval_id).await?;
    let mut checked = check_builds(eval, &previous, eval_id);
    let new_builds = add_new_builds(conn, eval, now, &mut checked).await?;
    notify::send_all(conn, &checked.notes).await?;

    // Hydra's `jobsetChanged`: builds were added, or the previous
    // evaluation with new builds had another number of members.
    let members = &checked.members;
    let changed =
        !new_builds.is_empty() || previous.count.is_some_and(|count| count != members.len());
    if changed && let Some((name, error)) = eval.broken_aggregates.iter().next() {
        return Err(RecordError::BrokenAggregate {
            name: name.clone(),
            error: error.clone(),
        });
    }
    hydra_db::evals::set_new_builds(
        conn,
        eval_id,
        changed,
        changed.then_some(members.len() as i32),
    )
    .await?;
    notify::send(
        conn,
        "eval_added",
        &format!("{}\t{}\t{eval_id}", eval.trace_id, eval.jobset_id),
    )
    .await?;
    if changed {
        hydra_db::evals::add_members(conn, eval_id, members).await?;
        insert_constituents(conn, eval, &checked.job_builds).await?;
        insert_eval_inputs(conn, eval_id, eval.inputs).await?;
        if let Some(lowest) = new_builds.iter().min() {
            notify::send(conn, "builds_added", &lowest.to_string()).await?;
        }
    }
    hydra_db::jobsets::record_checked(conn, eval.jobset_id, eval.error_text, now).await?;
    Ok(Recorded {
        eval_id,
        members: members.iter().map(|(id, _)| *id).collect(),
        new_builds,
        reused: checked.reused,
        has_new_builds: changed,
        repointed: checked.repointed,
    })
}

/// The builds of the latest evaluation of jobset `jobset_id` with new
/// builds (other than `eval_id`), by job and representative output.
async fn previous_eval(
    conn: &mut PgConnection,
    jobset_id: JobsetId,
    eval_id: EvalId,
) -> Result<PreviousEval, sqlx::Error> {
    let Some(prev) =
        hydra_db::evals::latest_with_new_builds(&mut *conn, jobset_id, Some(eval_id)).await?
    else {
        return Ok(PreviousEval::default());
    };
    let rows = hydra_db::evals::member_builds(conn, prev).await?;
    let count = Some(rows.len());
    let builds = rows
        .into_iter()
        .map(|row| {
            let key = (
                row.job,
                row.first_output.unwrap_or_else(|| row.drv_path.clone()),
            );
            let previous = Previous {
                id: row.id,
                drv_path: row.drv_path,
                finished: row.finished == 1,
            };
            (key, previous)
        })
        .collect();
    Ok(PreviousEval { builds, count })
}

/// `checkBuild` for every job: a job reuses the previous build with its
/// name and representative output, else needs a new one (its
/// `build_queued` note gets the id once the build exists).
fn check_builds<'a>(eval: &NewEval<'a>, previous: &PreviousEval, eval_id: EvalId) -> Checked<'a> {
    let mut checked = Checked {
        notes: Vec::new(),
        members: Vec::new(),
        to_insert: Vec::new(),
        job_builds: HashMap::new(),
        reused: 0,
        repointed: Vec::new(),
    };
    let mut seen: HashSet<JobKey> = HashSet::new();
    for job in eval.jobs.values() {
        let key = (job.name.clone(), representative(job));
        if !seen.insert(key.clone()) {
            continue;
        }
        if let Some(prev) = previous.builds.get(&key) {
            checked.members.push((prev.id, false));
            checked.job_builds.insert(&job.name, prev.id);
            checked.reused += 1;
            let channel = if prev.drv_path != job.drv_path {
                checked.repointed.push((prev.id, job.drv_path.clone()));
                "cached_build_queued"
            } else if prev.finished {
                "cached_build_finished"
            } else {
                "cached_build_queued"
            };
            checked
                .notes
                .push((channel, format!("{eval_id}\t{}", prev.id)));
        } else {
            checked.to_insert.push(job);
            // Placeholder for the id; filled when the build exists.
            checked.notes.push(("build_queued", String::new()));
        }
    }
    checked
}

/// Adds the builds `checked` needs, makes them members and fills in their
/// notes; returns their ids.
async fn add_new_builds<'a>(
    conn: &mut PgConnection,
    eval: &NewEval<'a>,
    now: i32,
    checked: &mut Checked<'a>,
) -> Result<Vec<BuildId>, sqlx::Error> {
    if checked.to_insert.is_empty() {
        return Ok(Vec::new());
    }
    let ids = hydra_db::builds::reserve_ids(conn, checked.to_insert.len()).await?;
    insert_builds(conn, eval.jobset_id, now, &checked.to_insert, &ids).await?;
    let mut next = ids.iter();
    for note in checked
        .notes
        .iter_mut()
        .filter(|(c, p)| *c == "build_queued" && p.is_empty())
    {
        if let Some(id) = next.next() {
            note.1 = id.to_string();
        }
    }
    for (job, id) in checked.to_insert.iter().zip(&ids) {
        checked.members.push((*id, true));
        checked.job_builds.insert(&job.name, *id);
    }
    Ok(ids)
}

async fn insert_builds(
    conn: &mut PgConnection,
    jobset_id: JobsetId,
    now: i32,
    jobs: &[&Job],
    ids: &[BuildId],
) -> Result<(), sqlx::Error> {
    let int = |v: Option<i64>| v.and_then(|v| i32::try_from(v).ok());
    let builds: Vec<NewBuild<'_>> = jobs
        .iter()
        .map(|j| NewBuild {
            job: &j.name,
            nix_name: &j.nix_name,
            description: j.meta.description.as_deref(),
            drv_path: &j.drv_path,
            system: &j.system,
            license: j.meta.license.as_deref(),
            homepage: j.meta.homepage.as_deref(),
            maintainers: j.meta.maintainers.as_deref(),
            max_silent: int(j.meta.max_silent),
            timeout: int(j.meta.timeout),
            is_channel: j.meta.is_channel,
            priority: int(j.meta.scheduling_priority).unwrap_or(100),
            outputs: &j.outputs,
        })
        .collect();
    hydra_db::builds::insert_queued(conn, jobset_id, now, &builds, ids).await
}

/// `AggregateConstituents`: each aggregate's constituent derivations, mapped
/// to the builds of this evaluation with those derivations (by the shortest,
/// then smallest, job name when several share one).
async fn insert_constituents(
    conn: &mut PgConnection,
    eval: &NewEval<'_>,
    job_builds: &HashMap<&str, BuildId>,
) -> Result<(), sqlx::Error> {
    let mut by_drv: HashMap<&str, &Job> = HashMap::new();
    for job in eval.jobs.values() {
        let better = match by_drv.get(job.drv_path.as_str()) {
            Some(other) => (job.name.len(), &job.name) < (other.name.len(), &other.name),
            None => true,
        };
        if better {
            by_drv.insert(&job.drv_path, job);
        }
    }
    let mut aggregates = Vec::new();
    let mut constituents = Vec::new();
    for job in eval.jobs.values().filter(|j| j.aggregate) {
        let Some(aggregate) = job_builds.get(job.name.as_str()) else {
            continue;
        };
        for drv in &job.constituents {
            match by_drv
                .get(drv.as_str())
                .and_then(|j| job_builds.get(j.name.as_str()))
            {
                Some(build) => {
                    aggregates.push(*aggregate);
                    constituents.push(*build);
                }
                None => {
                    tracing::warn!(aggregate = %job.name, constituent = %drv, "aggregate constituent has no build")
                }
            }
        }
    }
    hydra_db::evals::add_constituents(conn, &aggregates, &constituents).await?;
    Ok(())
}

async fn insert_eval_inputs(
    conn: &mut PgConnection,
    eval_id: EvalId,
    inputs: &[Fetched],
) -> Result<(), sqlx::Error> {
    hydra_db::evals::add_inputs(conn, eval_id, &eval_inputs(inputs)).await?;
    Ok(())
}

/// Records what an evaluation of `jobset` fetched, before it is evaluated
/// (for evaluation-level commit statuses).
pub(crate) async fn checkout(
    pool: &sqlx::PgPool,
    jobset: &hydra_db::rows::Jobset,
    trace: &str,
    flake: Option<&str>,
    inputs: &[Fetched],
) -> Result<(), sqlx::Error> {
    hydra_db::evals::record_checkout(
        pool,
        jobset.id,
        trace,
        flake,
        &eval_inputs(inputs),
        hydra_db::now(),
    )
    .await
}

/// The rows of `inputs`.
fn eval_inputs(inputs: &[Fetched]) -> Vec<EvalInput<'_>> {
    inputs
        .iter()
        .map(|i| EvalInput {
            name: &i.name,
            kind: &i.kind,
            uri: i.uri.as_deref(),
            revision: i.revision.as_deref(),
            short_rev_length: i.short_rev_length,
            value: i.value.as_deref(),
            dependency: i.dependency,
            store_path: i.store_path.as_deref(),
            sha256: i.sha256.as_deref(),
        })
        .collect()
}

const BATCH: usize = 10_000;

/// Puts `isCurrent` where the latest evaluation with new builds says, if
/// an evaluator died between recording an evaluation and moving it (the
/// next run of an unchanged jobset would otherwise never move it).
/// Returns whether anything was wrong.
pub(crate) async fn repair_is_current(pool: &PgPool, jobset_id: JobsetId) -> Result<bool, DbError> {
    let latest = hydra_db::evals::latest_with_new_builds(pool, jobset_id, None).await?;
    let Some(eval) = latest else {
        return Ok(false);
    };
    let wrong = hydra_db::evals::is_current_wrong(pool, eval, jobset_id).await?;
    if wrong {
        let members = hydra_db::evals::member_ids(pool, eval).await?;
        move_is_current(pool, jobset_id, &members).await?;
        tracing::info!(
            eval = eval.0,
            "moved isCurrent to the latest evaluation, which an interrupted evaluator had left undone"
        );
    }
    Ok(wrong)
}

/// Points reused builds at their new derivation and queues them again.
async fn repoint(pool: &PgPool, repointed: &[(BuildId, String)]) -> Result<(), DbError> {
    let mut sorted = repointed.to_vec();
    sorted.sort();
    for batch in sorted.chunks(BATCH) {
        let ids: Vec<BuildId> = batch.iter().map(|(id, _)| *id).collect();
        let drvs: Vec<&str> = batch.iter().map(|(_, d)| d.as_str()).collect();
        transaction(pool, |mut tx: Tx| {
            let (ids, drvs) = (&ids, &drvs);
            Box::pin(async move {
                lock_builds(&mut tx, ids).await?;
                hydra_db::builds::repoint(&mut tx, ids, drvs).await?;
                Ok::<_, DbError>(())
            })
        })
        .await?;
    }
    Ok(())
}

/// The builds of the newest evaluation are current, no other build of the
/// jobset is.
async fn move_is_current(
    pool: &PgPool,
    jobset_id: JobsetId,
    members: &[BuildId],
) -> Result<(), DbError> {
    let mut current = members.to_vec();
    current.sort_unstable();
    for batch in current.chunks(BATCH) {
        transaction(pool, |mut tx: Tx| {
            Box::pin(async move {
                lock_builds(&mut tx, batch).await?;
                hydra_db::builds::set_current(&mut tx, batch, true).await?;
                Ok::<_, DbError>(())
            })
        })
        .await?;
    }
    let stale = hydra_db::builds::current_except(pool, jobset_id, &current).await?;
    for batch in stale.chunks(BATCH) {
        transaction(pool, |mut tx: Tx| {
            Box::pin(async move {
                lock_builds(&mut tx, batch).await?;
                hydra_db::builds::set_current(&mut tx, batch, false).await?;
                Ok::<_, DbError>(())
            })
        })
        .await?;
    }
    Ok(())
}
