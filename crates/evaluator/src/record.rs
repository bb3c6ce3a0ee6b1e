//! Writing an evaluation to the database, by Hydra's rules (`checkBuild`):
//! a job reuses the build of the previous evaluation with new builds that
//! has the same name and output, else gets a new build; the evaluation
//! records its members, inputs and aggregate constituents; the NOTIFY
//! sequence is Hydra's. Everything happens in one transaction that is
//! retried on conflicts; moving `isCurrent` and repointing builds happen
//! after it, in short batches that lock builds in id order.

use std::collections::{BTreeMap, HashMap, HashSet};

use hydra_db::{DbError, Transient, Tx, lock_builds, transaction};
use sqlx::{PgConnection, PgPool};

use crate::engine::Job;
use crate::inputs::Fetched;

/// An evaluation to record.
#[derive(Debug)]
pub struct NewEval<'a> {
    pub jobset_id: i32,
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
pub enum RecordError {
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub eval_id: i32,
    pub new_builds: Vec<i32>,
    pub reused: usize,
    pub has_new_builds: bool,
    /// Builds of the evaluation (new and reused).
    pub members: Vec<i32>,
    /// Reused builds whose derivation changed: (build, new drvPath).
    pub repointed: Vec<(i32, String)>,
}

struct Previous {
    id: i32,
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

async fn notify_all(conn: &mut PgConnection, notes: &[(&str, String)]) -> Result<(), sqlx::Error> {
    if notes.is_empty() {
        return Ok(());
    }
    let channels: Vec<&str> = notes.iter().map(|(c, _)| *c).collect();
    let payloads: Vec<&str> = notes.iter().map(|(_, p)| p.as_str()).collect();
    sqlx::query("select pg_notify(c, p) from unnest($1::text[], $2::text[]) as n(c, p)")
        .bind(&channels)
        .bind(&payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records an evaluation; see the module documentation.
pub async fn record(pool: &PgPool, eval: &NewEval<'_>) -> Result<Recorded, RecordError> {
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

async fn record_in(conn: &mut PgConnection, eval: &NewEval<'_>) -> Result<Recorded, RecordError> {
    let now = hydra_db::now();
    let error_id: i32 = sqlx::query_scalar(
        "insert into EvaluationErrors (errorMsg, errorTime) values ($1, $2) returning id",
    )
    .bind(eval.error_text)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let eval_id: i32 = sqlx::query_scalar(
        "insert into JobsetEvals (jobset_id, evaluationerror_id, timestamp, checkoutTime, evalTime, hasNewBuilds, \
         hash, flake, nixExprInput, nixExprPath) values ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9) returning id",
    )
    .bind(eval.jobset_id)
    .bind(error_id)
    .bind(now)
    .bind(eval.checkout_time)
    .bind(eval.eval_time)
    .bind(eval.hash)
    .bind(eval.flake)
    .bind(eval.nix_expr_input)
    .bind(eval.nix_expr_path)
    .fetch_one(&mut *conn)
    .await?;

    // The builds of the previous evaluation with new builds, by job and
    // representative output.
    let previous_eval: Option<i32> = sqlx::query_scalar(
        "select id from JobsetEvals where jobset_id = $1 and hasNewBuilds = 1 and id <> $2 order by id desc limit 1",
    )
    .bind(eval.jobset_id)
    .bind(eval_id)
    .fetch_optional(&mut *conn)
    .await?;
    let mut previous: HashMap<(String, String), Previous> = HashMap::new();
    let mut previous_count = None;
    if let Some(prev) = previous_eval {
        let rows: Vec<(i32, String, String, i32, Option<String>)> = sqlx::query_as(
            "select b.id, b.job, b.drvPath, b.finished, \
             (select o.path from BuildOutputs o where o.build = b.id order by o.name limit 1) \
             from JobsetEvalMembers m join Builds b on b.id = m.build where m.eval = $1",
        )
        .bind(prev)
        .fetch_all(&mut *conn)
        .await?;
        previous_count = Some(rows.len());
        for (id, job, drv_path, finished, out) in rows {
            let key = (job, out.unwrap_or_else(|| drv_path.clone()));
            previous.insert(
                key,
                Previous {
                    id,
                    drv_path,
                    finished: finished == 1,
                },
            );
        }
    }

    // checkBuild for every job, in name order.
    let mut notes: Vec<(&str, String)> = Vec::new();
    let mut recorded = Recorded {
        eval_id,
        ..Default::default()
    };
    let mut member_new: Vec<(i32, bool)> = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut to_insert: Vec<&Job> = Vec::new();
    let mut job_builds: HashMap<&str, i32> = HashMap::new();
    for job in eval.jobs.values() {
        let key = (job.name.clone(), representative(job));
        if !seen.insert(key.clone()) {
            continue;
        }
        if let Some(prev) = previous.get(&key) {
            member_new.push((prev.id, false));
            job_builds.insert(&job.name, prev.id);
            recorded.reused += 1;
            let channel = if prev.drv_path != job.drv_path {
                recorded.repointed.push((prev.id, job.drv_path.clone()));
                "cached_build_queued"
            } else if prev.finished {
                "cached_build_finished"
            } else {
                "cached_build_queued"
            };
            notes.push((channel, format!("{eval_id}\t{}", prev.id)));
        } else {
            to_insert.push(job);
            // Placeholder for the id; filled below.
            notes.push(("build_queued", String::new()));
        }
    }

    if !to_insert.is_empty() {
        let ids: Vec<i32> =
            sqlx::query_scalar("select nextval('builds_id_seq')::int from generate_series(1, $1)")
                .bind(to_insert.len() as i32)
                .fetch_all(&mut *conn)
                .await?;
        insert_builds(conn, eval.jobset_id, now, &to_insert, &ids).await?;
        let mut next = ids.iter();
        for note in notes
            .iter_mut()
            .filter(|(c, p)| *c == "build_queued" && p.is_empty())
        {
            if let Some(id) = next.next() {
                note.1 = id.to_string();
            }
        }
        for (job, id) in to_insert.iter().zip(&ids) {
            member_new.push((*id, true));
            job_builds.insert(&job.name, *id);
        }
        recorded.new_builds = ids;
    }
    notify_all(conn, &notes).await?;

    // Hydra's `jobsetChanged`: builds were added, or the previous
    // evaluation with new builds had another number of members.
    let changed = !recorded.new_builds.is_empty()
        || previous_count.is_some_and(|count| count != member_new.len());
    if changed && let Some((name, error)) = eval.broken_aggregates.iter().next() {
        return Err(RecordError::BrokenAggregate {
            name: name.clone(),
            error: error.clone(),
        });
    }
    recorded.has_new_builds = changed;
    recorded.members = member_new.iter().map(|(id, _)| *id).collect();
    sqlx::query("update JobsetEvals set hasNewBuilds = $2, nrBuilds = $3 where id = $1")
        .bind(eval_id)
        .bind(i32::from(changed))
        .bind(changed.then_some(member_new.len() as i32))
        .execute(&mut *conn)
        .await?;
    notify_all(
        conn,
        &[(
            "eval_added",
            format!("{}\t{}\t{eval_id}", eval.trace_id, eval.jobset_id),
        )],
    )
    .await?;

    if changed {
        let (builds, is_new): (Vec<i32>, Vec<i32>) =
            member_new.iter().map(|(b, n)| (*b, i32::from(*n))).unzip();
        sqlx::query(
            "insert into JobsetEvalMembers (eval, build, isNew) select $1, b, n from unnest($2::int[], $3::int[]) as t(b, n) \
             on conflict do nothing",
        )
        .bind(eval_id)
        .bind(&builds)
        .bind(&is_new)
        .execute(&mut *conn)
        .await?;
        insert_constituents(conn, eval, &job_builds).await?;
        insert_eval_inputs(conn, eval_id, eval.inputs).await?;
        if let Some(lowest) = recorded.new_builds.iter().min() {
            notify_all(conn, &[("builds_added", lowest.to_string())]).await?;
        }
    }

    sqlx::query(
        "update Jobsets set lastCheckedTime = $2, forceEval = null, fetchErrorMsg = null, errorMsg = $3, \
         errorTime = $4, enabled = case when enabled = 2 then 0 else enabled end where id = $1",
    )
    .bind(eval.jobset_id)
    .bind(now)
    .bind(eval.error_text)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(recorded)
}

async fn insert_builds(
    conn: &mut PgConnection,
    jobset_id: i32,
    now: i32,
    jobs: &[&Job],
    ids: &[i32],
) -> Result<(), sqlx::Error> {
    let col = |f: &dyn Fn(&Job) -> Option<String>| {
        jobs.iter().map(|j| f(j)).collect::<Vec<Option<String>>>()
    };
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let nix_names: Vec<&str> = jobs.iter().map(|j| j.nix_name.as_str()).collect();
    let drvs: Vec<&str> = jobs.iter().map(|j| j.drv_path.as_str()).collect();
    let systems: Vec<&str> = jobs.iter().map(|j| j.system.as_str()).collect();
    let descriptions = col(&|j| j.meta.description.clone());
    let licenses = col(&|j| j.meta.license.clone());
    let homepages = col(&|j| j.meta.homepage.clone());
    let maintainers = col(&|j| j.meta.maintainers.clone());
    let int = |v: Option<i64>| v.and_then(|v| i32::try_from(v).ok());
    let max_silent: Vec<Option<i32>> = jobs.iter().map(|j| int(j.meta.max_silent)).collect();
    let timeouts: Vec<Option<i32>> = jobs.iter().map(|j| int(j.meta.timeout)).collect();
    let priorities: Vec<i32> = jobs
        .iter()
        .map(|j| int(j.meta.scheduling_priority).unwrap_or(100))
        .collect();
    let channels: Vec<i32> = jobs.iter().map(|j| i32::from(j.meta.is_channel)).collect();
    sqlx::query(
        "insert into Builds (id, finished, timestamp, jobset_id, job, nixName, description, drvPath, system, license, \
         homepage, maintainers, maxsilent, timeout, isChannel, isCurrent, priority, globalPriority) \
         select id, 0, $2, $3, job, nix, descr, drv, sys, lic, home, maint, silent, tmo, chan, 1, prio, 0 \
         from unnest($1::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::text[], $12::int[], $13::int[], $14::int[], $15::int[]) \
              as t(id, job, nix, descr, drv, sys, lic, home, maint, silent, tmo, chan, prio)",
    )
    .bind(ids)
    .bind(now)
    .bind(jobset_id)
    .bind(&names)
    .bind(&nix_names)
    .bind(&descriptions)
    .bind(&drvs)
    .bind(&systems)
    .bind(&licenses)
    .bind(&homepages)
    .bind(&maintainers)
    .bind(&max_silent)
    .bind(&timeouts)
    .bind(&channels)
    .bind(&priorities)
    .execute(&mut *conn)
    .await?;
    let mut out_builds = Vec::new();
    let mut out_names = Vec::new();
    let mut out_paths: Vec<Option<String>> = Vec::new();
    for (job, id) in jobs.iter().zip(ids) {
        for (name, path) in &job.outputs {
            out_builds.push(*id);
            out_names.push(name.clone());
            out_paths.push(path.clone());
        }
    }
    sqlx::query("insert into BuildOutputs (build, name, path) select * from unnest($1::int[], $2::text[], $3::text[])")
        .bind(&out_builds)
        .bind(&out_names)
        .bind(&out_paths)
        .execute(conn)
        .await?;
    Ok(())
}

/// `AggregateConstituents`: each aggregate's constituent derivations, mapped
/// to the builds of this evaluation with those derivations (by the shortest,
/// then smallest, job name when several share one).
async fn insert_constituents(
    conn: &mut PgConnection,
    eval: &NewEval<'_>,
    job_builds: &HashMap<&str, i32>,
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
    if !aggregates.is_empty() {
        sqlx::query(
            "insert into AggregateConstituents (aggregate, constituent) select * from unnest($1::int[], $2::int[]) \
             on conflict do nothing",
        )
        .bind(&aggregates)
        .bind(&constituents)
        .execute(conn)
        .await?;
    }
    Ok(())
}

async fn insert_eval_inputs(
    conn: &mut PgConnection,
    eval_id: i32,
    inputs: &[Fetched],
) -> Result<(), sqlx::Error> {
    for input in inputs {
        sqlx::query(
            "insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision, shortRevLength, value, dependency, \
             path, sha256hash) values ($1, $2, 0, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(eval_id)
        .bind(&input.name)
        .bind(&input.kind)
        .bind(&input.uri)
        .bind(&input.revision)
        .bind(input.short_rev_length)
        .bind(&input.value)
        .bind(input.dependency)
        .bind(&input.store_path)
        .bind(&input.sha256)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

const BATCH: usize = 10_000;

/// Puts `isCurrent` where the latest evaluation with new builds says, if
/// an evaluator died between recording an evaluation and moving it (the
/// next run of an unchanged jobset would otherwise never move it).
/// Returns whether anything was wrong.
pub async fn repair_is_current(pool: &PgPool, jobset_id: i32) -> Result<bool, DbError> {
    let latest: Option<i32> = sqlx::query_scalar(
        "select id from JobsetEvals where jobset_id = $1 and hasNewBuilds = 1 order by id desc limit 1",
    )
    .bind(jobset_id)
    .fetch_optional(pool)
    .await?;
    let Some(eval) = latest else {
        return Ok(false);
    };
    let wrong: bool = sqlx::query_scalar(
        "select exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build                         where m.eval = $1 and b.isCurrent is distinct from 1)              or exists (select 1 from Builds b where b.jobset_id = $2 and b.isCurrent = 1                         and not exists (select 1 from JobsetEvalMembers m where m.eval = $1 and m.build = b.id))",
    )
    .bind(eval)
    .bind(jobset_id)
    .fetch_one(pool)
    .await?;
    if wrong {
        let members: Vec<i32> =
            sqlx::query_scalar("select build from JobsetEvalMembers where eval = $1")
                .bind(eval)
                .fetch_all(pool)
                .await?;
        move_is_current(pool, jobset_id, &members).await?;
        tracing::info!(
            eval,
            "moved isCurrent to the latest evaluation, which an interrupted evaluator had left undone"
        );
    }
    Ok(wrong)
}

/// Points reused builds at their new derivation and queues them again.
async fn repoint(pool: &PgPool, repointed: &[(i32, String)]) -> Result<(), DbError> {
    let mut sorted = repointed.to_vec();
    sorted.sort();
    for batch in sorted.chunks(BATCH) {
        let ids: Vec<i32> = batch.iter().map(|(id, _)| *id).collect();
        let drvs: Vec<&str> = batch.iter().map(|(_, d)| d.as_str()).collect();
        transaction(pool, |mut tx: Tx| {
            let (ids, drvs) = (&ids, &drvs);
            Box::pin(async move {
                lock_builds(&mut tx, ids).await?;
                sqlx::query(
                    "update Builds b set drvPath = t.drv, finished = 0, buildStatus = null, isCachedBuild = null \
                     from unnest($1::int[], $2::text[]) as t(id, drv) where b.id = t.id",
                )
                .bind(ids)
                .bind(drvs)
                .execute(&mut *tx)
                .await?;
                Ok::<_, DbError>(())
            })
        })
        .await?;
    }
    Ok(())
}

/// The builds of the newest evaluation are current, no other build of the
/// jobset is.
async fn move_is_current(pool: &PgPool, jobset_id: i32, members: &[i32]) -> Result<(), DbError> {
    let mut current = members.to_vec();
    current.sort_unstable();
    for batch in current.chunks(BATCH) {
        transaction(pool, |mut tx: Tx| {
            Box::pin(async move {
                lock_builds(&mut tx, batch).await?;
                sqlx::query("update Builds set isCurrent = 1 where id = any($1) and isCurrent is distinct from 1")
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, DbError>(())
            })
        })
        .await?;
    }
    let stale: Vec<i32> = sqlx::query_scalar(
        "select id from Builds where jobset_id = $1 and isCurrent = 1 and not (id = any($2)) order by id",
    )
    .bind(jobset_id)
    .bind(&current)
    .fetch_all(pool)
    .await?;
    for batch in stale.chunks(BATCH) {
        transaction(pool, |mut tx: Tx| {
            Box::pin(async move {
                lock_builds(&mut tx, batch).await?;
                sqlx::query("update Builds set isCurrent = 0 where id = any($1)")
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, DbError>(())
            })
        })
        .await?;
    }
    Ok(())
}
