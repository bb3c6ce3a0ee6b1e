//! One evaluation of one jobset (Hydra's `hydra-eval-jobset`): announce it,
//! fetch the inputs, skip it when nothing changed, evaluate, resolve
//! aggregates, and record the result. Failures are recorded on the jobset
//! (`fetchErrorMsg` for inputs, `errorMsg` otherwise) and announced with
//! `eval_failed`; they are outcomes, not errors of this function.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hydra_db::ids::JobsetId;
use hydra_db::status::JobsetType;
use hydra_db::{DbError, rows};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tracing::Instrument;

use crate::aggregates;
pub use crate::context::Context;
pub(crate) use crate::context::RunError;
use crate::declarative::{self, Decl};
use crate::engine::{self, Expression, NixEnv, Request};
use crate::inputs::{self, Fetched, Input};
pub use crate::outcome::{Outcome, Summary};
use crate::record::{self, NewEval};

/// Errors that keep an evaluation from even being attempted or recorded.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("jobset {project}:{jobset} does not exist")]
    NoSuchJobset { project: String, jobset: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for EvalError {
    fn from(e: sqlx::Error) -> Self {
        EvalError::Db(DbError::from(e))
    }
}

/// A trace id for the NOTIFYs of one evaluation: start time and process.
fn trace_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}.{}", std::process::id())
}

/// Evaluates `project:jobset` once. `deadline` bounds the whole
/// evaluation (the scheduler's time limit).
pub async fn evaluate_jobset(
    ctx: &Context,
    project: &str,
    jobset: &str,
) -> Result<Summary, EvalError> {
    let started = Instant::now();
    let mut conn = ctx.pool.acquire().await.map_err(DbError::from)?;
    let row = rows::jobset(&mut conn, project, jobset)
        .await?
        .ok_or_else(|| EvalError::NoSuchJobset {
            project: project.into(),
            jobset: jobset.into(),
        })?;
    drop(conn);
    let trace = trace_id();
    let span = tracing::info_span!("evaluation", project, jobset, trace = %trace);
    evaluate_row(ctx, row, trace, started)
        .instrument(span)
        .await
}

async fn evaluate_row(
    ctx: &Context,
    row: rows::Jobset,
    trace: String,
    started: Instant,
) -> Result<Summary, EvalError> {
    hydra_db::notify::publish(&ctx.pool, "eval_started", &format!("{trace}\t{}", row.id)).await?;
    ctx.metrics.evaluation_started();

    let mut times = Times::default();
    let result = match awaiting_approval(ctx, &row).await {
        Ok(Some(text)) => Err(RunError::Message(text)),
        Ok(None) => run(ctx, &row, &trace, &mut times).await,
        Err(e) => Err(e.into()),
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            // Recorded like Hydra's die(): the jobset shows the error.
            let text = e.to_string();
            tracing::error!(error = %text, "evaluation failed");
            fail(ctx, row.id, &trace, &text).await?;
            Outcome::Failed(text)
        }
    };
    // Whatever the outcome, the next evaluation starts afresh.
    if let Err(e) = hydra_db::evaluation_journal::clear(&ctx.pool, row.id).await {
        tracing::warn!(error = %e, "cannot clear the evaluation journal");
    }
    let summary = Summary {
        project: row.project.clone(),
        jobset: row.name.clone(),
        outcome,
        checkout_time: times.checkout,
        eval_time: times.eval,
        total_time: started.elapsed(),
    };
    ctx.metrics.evaluation_finished(&summary);
    tracing::info!("{summary}");
    Ok(summary)
}

#[derive(Default)]
struct Times {
    checkout: Duration,
    eval: Duration,
}

/// Records a failed evaluation on the jobset and announces it.
async fn fail(
    ctx: &Context,
    jobset_id: JobsetId,
    trace: &str,
    text: &str,
) -> Result<(), EvalError> {
    let now = hydra_db::now();
    hydra_db::jobsets::record_eval_error(&ctx.pool, jobset_id, text, now).await?;
    hydra_db::notify::publish(&ctx.pool, "eval_failed", &format!("{trace}\t{jobset_id}")).await?;
    Ok(())
}

/// The inputs of a jobset as configured; several alternatives are refused
/// as Hydra does.
pub(crate) async fn jobset_inputs(
    pool: &PgPool,
    project: &str,
    jobset: &str,
) -> Result<Vec<Input>, RunError> {
    let mut conn = pool.acquire().await.map_err(DbError::from)?;
    let mut inputs = Vec::new();
    for (input, alts) in rows::jobset_inputs(&mut conn, project, jobset).await? {
        if alts.len() > 1 {
            return Err(RunError::Message(format!(
                "input `{}` has {} alternatives; multiple alternatives per input are no longer supported",
                input.name,
                alts.len()
            )));
        }
        inputs.push(Input {
            name: input.name,
            kind: input.kind,
            value: alts
                .into_iter()
                .next()
                .and_then(|a| a.value)
                .unwrap_or_default(),
            email_responsible: input.email_responsible != 0,
        });
    }
    Ok(inputs)
}

/// How the stages of an evaluation end early: with its outcome, or failed
/// as a whole.
enum Stop {
    Done(Outcome),
    Failed(RunError),
}

impl<E: Into<RunError>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

/// The stage's outcome as the end of the evaluation.
fn done(outcome: Result<Outcome, RunError>) -> Stop {
    match outcome {
        Ok(outcome) => Stop::Done(outcome),
        Err(e) => Stop::Failed(e),
    }
}

/// What was checked out: the jobset as it is now, its fetched inputs and
/// the locked flake.
struct Checkout {
    row: rows::Jobset,
    fetched: Vec<Fetched>,
    flake: Option<String>,
    /// The inputs come from a generated declarative specification (its
    /// evaluation must produce a `jobsets` job).
    generated_spec: bool,
    started: Instant,
}

async fn run(
    ctx: &Context,
    row: &rows::Jobset,
    trace: &str,
    times: &mut Times,
) -> Result<Outcome, RunError> {
    match stages(ctx, row, trace, times).await {
        Ok(outcome) | Err(Stop::Done(outcome)) => Ok(outcome),
        Err(Stop::Failed(e)) => Err(e),
    }
}

async fn stages(
    ctx: &Context,
    row: &rows::Jobset,
    trace: &str,
    times: &mut Times,
) -> Result<Outcome, Stop> {
    let checkout = checkout(ctx, row, trace, times).await?;
    let hash = inputs_hash(&checkout.row, checkout.flake.as_deref(), &checkout.fetched);
    skip_if_unchanged(ctx, &checkout, &hash, trace).await?;
    record::checkout(
        &ctx.pool,
        &checkout.row,
        trace,
        checkout.flake.as_deref(),
        &checkout.fetched,
    )
    .await?;
    let eval_start = Instant::now();
    let (evaluated, broken_aggregates) = evaluate(ctx, &checkout, &hash).await?;
    times.eval = eval_start.elapsed();
    let error_text = error_text(&evaluated.errors);
    let new_eval = NewEval {
        jobset_id: checkout.row.id,
        trace_id: trace,
        hash: &hash,
        checkout_time: times.checkout.as_secs() as i32,
        eval_time: times.eval.as_secs() as i32,
        flake: checkout.flake.as_deref(),
        nix_expr_input: checkout.row.nix_expr_input.as_deref(),
        nix_expr_path: checkout.row.nix_expr_path.as_deref(),
        jobs: &evaluated.jobs,
        error_text: &error_text,
        broken_aggregates: &broken_aggregates,
        inputs: &checkout.fetched,
    };
    let recorded = match record::record(&ctx.pool, &new_eval).await {
        Ok(recorded) => recorded,
        Err(record::RecordError::Db(e)) => return Err(e.into()),
        Err(e @ record::RecordError::BrokenAggregate { .. }) => {
            return Err(RunError::Message(e.to_string()).into());
        }
    };
    supersede(ctx, &checkout.row, recorded.eval_id).await;
    record_costs(ctx, recorded.eval_id, &evaluated.stats).await;
    Ok(Outcome::Evaluated {
        eval_id: recorded.eval_id.0,
        new_builds: recorded.new_builds.len(),
        reused: recorded.reused,
        job_errors: evaluated.errors.len(),
        changed: recorded.has_new_builds,
    })
}

/// Keeps what evaluation `eval` cost, per top-level attribute and for its
/// slowest jobs. A failure here is logged; the evaluation stands.
async fn record_costs(ctx: &Context, eval: hydra_db::ids::EvalId, stats: &crate::engine::Stats) {
    use hydra_db::evaluation_costs::Cost;
    let cost = |kind: &str, name: &str, c: &crate::engine::Cost| Cost {
        kind: kind.into(),
        name: name.into(),
        milliseconds: i64::try_from(c.milliseconds).unwrap_or(i64::MAX),
        jobs: i32::try_from(c.jobs).unwrap_or(i32::MAX),
        peak_memory: i64::try_from(c.peak_rss).unwrap_or(i64::MAX),
    };
    let costs: Vec<Cost> = stats
        .attrsets
        .iter()
        .map(|(name, c)| cost("attrset", name, c))
        .chain(stats.slowest.iter().map(|(name, c)| cost("job", name, c)))
        .collect();
    if let Err(e) = hydra_db::evaluation_costs::record(&ctx.pool, eval, &costs).await {
        tracing::warn!(error = %e, eval = eval.0, "cannot record what the evaluation cost");
    }
}

/// A pull request's jobset whose head is neither trusted nor approved is
/// never evaluated, even when someone forces an evaluation: the reason.
async fn awaiting_approval(ctx: &Context, row: &rows::Jobset) -> Result<Option<String>, DbError> {
    let pr = hydra_db::pull_requests::of_jobset(&ctx.pool, row.id).await?;
    Ok(pr
        .filter(|pr| !pr.trusted && !pr.head_approved())
        .map(|pr| {
            format!(
                "pull request #{} (head {}) by {} waits for an approval by a project member; it is not evaluated before",
                pr.number, pr.head_sha, pr.author
            )
        }))
}

/// The new evaluation `eval` of `row` supersedes its earlier ones: the
/// project's policy decides what happens to the queued builds only they
/// wanted. A failure here is logged; the evaluation stands.
async fn supersede(ctx: &Context, row: &rows::Jobset, eval: hydra_db::ids::EvalId) {
    use hydra_db::superseded;
    let result = async {
        let policy = superseded::policy(&ctx.pool, &row.project).await?;
        superseded::apply(
            &ctx.pool,
            row.id,
            policy,
            hydra_db::builds::CancelReason::Superseded(Some(eval)),
        )
        .await
        .map(|builds| (policy, builds))
    };
    match result.await {
        Ok((_, builds)) if builds.is_empty() => {}
        Ok((policy, builds)) => tracing::info!(
            project = %row.project,
            jobset = %row.name,
            eval = eval.0,
            policy = policy.as_str(),
            ?builds,
            "superseded queued builds"
        ),
        Err(e) => tracing::error!(error = %e, "cannot deal with superseded builds"),
    }
}

/// Applies a declarative specification (for `.jobsets`), fetches the
/// inputs and locks the flake; a fetch that fails ends the evaluation.
async fn checkout(
    ctx: &Context,
    row: &rows::Jobset,
    trace: &str,
    times: &mut Times,
) -> Result<Checkout, Stop> {
    let started = Instant::now();
    let failed_fetch = |times: &mut Times, text: String| {
        times.checkout = started.elapsed();
        async move { done(fetch_failed(ctx, row.id, trace, text).await) }
    };
    let mut extra_inputs = Vec::new();
    let mut generated_spec = false;
    if row.name == ".jobsets" {
        match declarative::evaluate_spec(ctx, row).await? {
            Decl::Applied(outcome) => {
                times.checkout = started.elapsed();
                return Err(Stop::Done(outcome));
            }
            Decl::FetchFailed(text) => return Err(failed_fetch(times, text).await),
            Decl::Generated(inputs) => {
                extra_inputs = inputs;
                generated_spec = true;
            }
        }
    }
    // Re-read: a declarative specification may have changed the jobset.
    let row = rows::jobset_by_id(
        &mut *ctx.pool.acquire().await.map_err(DbError::from)?,
        row.id,
    )
    .await?
    .ok_or_else(|| RunError::Message("the jobset was deleted".into()))?;
    let inputs = jobset_inputs(&ctx.pool, &row.project, &row.name).await?;
    record::repair_is_current(&ctx.pool, row.id).await?;

    let fetch_ctx = ctx.fetch_context(&row.project, &row.name);
    let mut fetched: Vec<Fetched> = Vec::with_capacity(inputs.len());
    for input in &inputs {
        match inputs::fetch(&fetch_ctx, input).await {
            Ok(Some(f)) => fetched.push(f),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(input = %input.name, error = %e, "fetching an input failed");
                return Err(failed_fetch(times, e.to_string()).await);
            }
        }
    }
    fetched.extend(extra_inputs);
    let flake = if row.kind == JobsetType::Flake.code() {
        let Some(flake) = row.flake.as_deref().filter(|f| !f.is_empty()) else {
            return Err(
                RunError::Message("the jobset is a flake jobset without a flake".into()).into(),
            );
        };
        match lock_flake(&ctx.nix, flake).await {
            Ok(locked) => Some(locked),
            Err(text) => return Err(failed_fetch(times, text).await),
        }
    } else {
        None
    };
    times.checkout = started.elapsed();
    Ok(Checkout {
        row,
        fetched,
        flake,
        generated_spec,
        started,
    })
}

/// Ends the evaluation as unchanged when the inputs (`hash`) and the flake
/// are those of the latest evaluation and none is forced.
async fn skip_if_unchanged(
    ctx: &Context,
    checkout: &Checkout,
    hash: &str,
    trace: &str,
) -> Result<(), Stop> {
    let row = &checkout.row;
    let latest = hydra_db::evals::latest(&ctx.pool, row.id).await?;
    if let Some((previous, prev_hash, prev_flake)) = latest
        && prev_hash.as_deref() == Some(hash)
        && row.force_eval != Some(true)
        && prev_flake == checkout.flake
    {
        hydra_db::jobsets::record_unchanged(&ctx.pool, row.id, hydra_db::now()).await?;
        hydra_db::notify::publish(
            &ctx.pool,
            "eval_cached",
            &format!("{trace}\t{}\t{previous}", row.id),
        )
        .await?;
        return Err(Stop::Done(Outcome::Unchanged {
            previous_eval: previous.0,
        }));
    }
    Ok(())
}

/// The expression a jobset evaluates: its flake, or `nixexprpath` in
/// input `nixexprinput` (which must be a fetched path).
fn expression(checkout: &Checkout) -> Result<Expression, RunError> {
    if let Some(url) = &checkout.flake {
        return Ok(Expression::Flake { url: url.clone() });
    }
    let row = &checkout.row;
    let (Some(input), Some(path)) = (
        row.nix_expr_input.as_deref().filter(|s| !s.is_empty()),
        row.nix_expr_path.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(RunError::Message(
            "the jobset has no Nix expression (nixexprinput and nixexprpath)".into(),
        ));
    };
    let fetched = &checkout.fetched;
    if !fetched
        .iter()
        .any(|f| f.name == input && f.store_path.is_some())
    {
        return Err(RunError::Message(format!(
            "the jobset's Nix expression is in input `{input}`, which {}",
            if fetched.iter().any(|f| f.name == input) {
                "is not a path in the store"
            } else {
                "does not exist"
            }
        )));
    }
    Ok(Expression::Legacy {
        expr: format!("{input}/{path}"),
    })
}

/// Evaluates the jobset's expression with its inputs and resolves the
/// aggregates; returns the jobs and the aggregates that are broken.
async fn evaluate(
    ctx: &Context,
    checkout: &Checkout,
    hash: &str,
) -> Result<(engine::Outcome, BTreeMap<String, String>), RunError> {
    let expression = expression(checkout)?;
    let fetched = &checkout.fetched;
    let gc_roots_dir = ctx.config.gc_roots_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&gc_roots_dir) {
        tracing::warn!(dir = %gc_roots_dir.display(), error = %e, "cannot create the garbage collector roots directory");
    }
    let request = Request {
        expression,
        search_path: fetched.iter().flat_map(Fetched::search_path).collect(),
        args: fetched.iter().map(Fetched::to_arg).collect(),
        workers: ctx.config.evaluator.workers as usize,
        max_memory_mib: ctx.config.evaluator.max_memory_size_mib,
        allow_import_from_derivation: ctx.config.evaluator.allow_import_from_derivation,
        nix: ctx.nix.clone(),
        gc_roots_dir: Some(gc_roots_dir),
        timeout: Duration::from_secs(ctx.config.evaluator.time_limit)
            .saturating_sub(checkout.started.elapsed()),
    };
    let jobset = checkout.row.id;
    let journal = open_journal(ctx, jobset, hash).await?;
    if !journal.known.is_empty() {
        tracing::info!(
            reports = journal.known.len(),
            "carrying on from an interrupted evaluation of the same inputs"
        );
    }
    let (sink, reports) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(write_journal(
        ctx.pool.clone(),
        jobset,
        hash.to_string(),
        reports,
    ));
    let result = engine::evaluate_journaled(
        &request,
        engine::Journal {
            sink: Some(sink),
            ..journal
        },
    )
    .await;
    // The engine dropped its sink: the writer ends once it wrote the rest.
    let _ = writer.await;
    let mut evaluated = match result {
        Ok(evaluated) => evaluated,
        Err(engine::EngineError::Timeout) => {
            return Err(RunError::Message(format!(
                "the evaluation took longer than {} s (evaluator_time_limit) and was stopped",
                ctx.config.evaluator.time_limit
            )));
        }
        Err(e) => return Err(e.into()),
    };
    ctx.metrics.engine_stats(&evaluated);
    refuse_unusable_job_names(&mut evaluated);
    let broken_aggregates =
        aggregates::resolve(&ctx.nix, &mut evaluated, request.gc_roots_dir.as_deref())
            .await
            .map_err(RunError::Message)?;
    if checkout.generated_spec && !evaluated.jobs.contains_key("jobsets") {
        return Err(RunError::Message(match evaluated.errors.get("jobsets") {
            Some(e) => format!("the job `jobsets` of the declarative specification failed to evaluate:\n{e}"),
            None => "the evaluation of a generated declarative specification must produce a job named `jobsets`".into(),
        }));
    }
    Ok((evaluated, broken_aggregates))
}

/// The reports an interrupted evaluation of the same inputs left.
async fn open_journal(
    ctx: &Context,
    jobset: JobsetId,
    hash: &str,
) -> Result<engine::Journal, DbError> {
    let mut known = std::collections::HashMap::new();
    for (path, report) in hydra_db::evaluation_journal::open(&ctx.pool, jobset, hash).await? {
        // A report this version cannot read is evaluated again.
        if let Ok(report) = serde_json::from_value::<engine::Report>(report) {
            known.insert(path, report);
        }
    }
    Ok(engine::Journal { known, sink: None })
}

/// Writes the engine's reports to the journal as they come, all that
/// waits in one statement.
async fn write_journal(
    pool: sqlx::PgPool,
    jobset: JobsetId,
    key: String,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<engine::Reports>,
) {
    while let Some(first) = reports.recv().await {
        let mut entries: Vec<hydra_db::evaluation_journal::Entry> = Vec::new();
        let mut add = |batch: engine::Reports| {
            for (path, report) in batch {
                if let Ok(report) = serde_json::to_value(&report) {
                    entries.push((path, report));
                }
            }
        };
        add(first);
        while let Ok(more) = reports.try_recv() {
            add(more);
        }
        if let Err(e) = hydra_db::evaluation_journal::append(&pool, jobset, &key, &entries).await {
            // Only resuming suffers: the evaluation goes on.
            tracing::warn!(error = %e, "cannot write the evaluation journal");
        }
    }
}

/// Records a failed fetch (`fetchErrorMsg`) and announces it.
async fn fetch_failed(
    ctx: &Context,
    jobset_id: JobsetId,
    trace: &str,
    text: String,
) -> Result<Outcome, RunError> {
    hydra_db::jobsets::record_fetch_error(&ctx.pool, jobset_id, &text, hydra_db::now()).await?;
    hydra_db::notify::publish(&ctx.pool, "eval_failed", &format!("{trace}\t{jobset_id}")).await?;
    Ok(Outcome::FetchFailed(text))
}

/// Jobs whose names cannot be URL segments (an attribute with a space,
/// a dot, a slash, an empty one…) become job errors that name the
/// attribute, instead of builds that no page could show.
fn refuse_unusable_job_names(outcome: &mut engine::Outcome) {
    let unusable: Vec<String> = outcome
        .jobs
        .keys()
        .filter(|name| !hydra_db::names::job(name))
        .cloned()
        .collect();
    for name in unusable {
        outcome.jobs.remove(&name);
        outcome.errors.insert(
            name.clone(),
            format!(
                "error: the attribute path ‘{name}’ cannot be a job name: each attribute must be a letter \
                 or _ followed by letters, digits, - and _"
            ),
        );
    }
}

/// Hydra's error text: `in job ‘NAME’:\nERROR\n\n` for each job, empty
/// when every job evaluated.
fn error_text(errors: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (job, error) in errors {
        text.push_str(&format!("in job ‘{job}’:\n{error}\n\n"));
    }
    text
}

/// The hash that says whether the inputs changed: the expression and every
/// input as it reaches Nix.
fn inputs_hash(row: &rows::Jobset, flake: Option<&str>, fetched: &[Fetched]) -> String {
    let mut words: Vec<String> = match flake {
        Some(url) => vec![url.to_string()],
        None => vec![
            row.nix_expr_input.clone().unwrap_or_default(),
            row.nix_expr_path.clone().unwrap_or_default(),
        ],
    };
    words.extend(fetched.iter().map(Fetched::identity));
    hex::encode(Sha256::digest(words.join(" ").as_bytes()))
}

/// The locked reference of a flake (`nix flake metadata --refresh`).
async fn lock_flake(nix: &NixEnv, flake: &str) -> Result<String, String> {
    let mut cmd = nix.command("nix");
    cmd.args([
        "--experimental-features",
        "nix-command flakes",
        "flake",
        "metadata",
        "--refresh",
        "--json",
        "--",
        flake,
    ]);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .map_err(|_| format!("locking flake `{flake}` took longer than 600 s"))?
        .map_err(|e| format!("cannot run nix flake metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot lock flake `{flake}`: {}",
            hydra_nix::serve::strip_ansi(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable output of nix flake metadata for `{flake}`: {e}"))?;
    meta.get("url")
        .and_then(|u| u.as_str())
        .map(String::from)
        .ok_or_else(|| format!("nix flake metadata gave no locked URL for `{flake}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_hydras() {
        let mut errors = BTreeMap::new();
        errors.insert("b".to_string(), "error: two".to_string());
        errors.insert("a".to_string(), "error: one".to_string());
        assert_eq!(
            error_text(&errors),
            "in job ‘a’:\nerror: one\n\nin job ‘b’:\nerror: two\n\n"
        );
        assert_eq!(error_text(&BTreeMap::new()), "");
    }
}
