//! `JobsetEvals` and what hangs off an evaluation: its error text, members,
//! inputs and aggregate constituents.

use sqlx::{PgConnection, PgPool};

use crate::ids::{BuildId, EvalId, JobsetId};
use crate::keyset::Position;

/// An evaluation row to add.
#[derive(Clone, Copy, Debug)]
pub struct NewEvalRow<'a> {
    pub jobset_id: JobsetId,
    /// The per-job errors as one text, empty when there are none.
    pub error_text: &'a str,
    pub timestamp: i32,
    pub checkout_time: i32,
    pub eval_time: i32,
    pub hash: &'a str,
    pub flake: Option<&'a str>,
    pub nix_expr_input: Option<&'a str>,
    pub nix_expr_path: Option<&'a str>,
}

/// Adds an evaluation (with its `EvaluationErrors` row) that has no new
/// builds yet; returns its id.
pub async fn insert(conn: &mut PgConnection, eval: &NewEvalRow<'_>) -> Result<EvalId, sqlx::Error> {
    let error_id: i32 = sqlx::query_scalar(
        "insert into EvaluationErrors (errorMsg, errorTime) values ($1, $2) returning id",
    )
    .bind(eval.error_text)
    .bind(eval.timestamp)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "insert into JobsetEvals (jobset_id, evaluationerror_id, timestamp, checkoutTime, evalTime, hasNewBuilds, \
         hash, flake, nixExprInput, nixExprPath) values ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9) returning id",
    )
    .bind(eval.jobset_id)
    .bind(error_id)
    .bind(eval.timestamp)
    .bind(eval.checkout_time)
    .bind(eval.eval_time)
    .bind(eval.hash)
    .bind(eval.flake)
    .bind(eval.nix_expr_input)
    .bind(eval.nix_expr_path)
    .fetch_one(conn)
    .await
}

/// The latest evaluation of jobset `jobset_id` that added builds, other
/// than `except`.
pub async fn latest_with_new_builds<'c, E: sqlx::PgExecutor<'c>>(
    conn: E,
    jobset_id: JobsetId,
    except: Option<EvalId>,
) -> Result<Option<EvalId>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from JobsetEvals where jobset_id = $1 and hasNewBuilds = 1 \
         and ($2::int is null or id <> $2) order by id desc limit 1",
    )
    .bind(jobset_id)
    .bind(except)
    .fetch_optional(conn)
    .await
}

/// The latest evaluation of jobset `jobset_id`: id, inputs hash and flake.
pub async fn latest(
    pool: &PgPool,
    jobset_id: JobsetId,
) -> Result<Option<(EvalId, Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "select id, hash, flake from JobsetEvals where jobset_id = $1 order by id desc limit 1",
    )
    .bind(jobset_id)
    .fetch_optional(pool)
    .await
}

/// A build of an evaluation, as the next evaluation compares its jobs.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MemberBuild {
    pub id: BuildId,
    pub job: String,
    #[sqlx(rename = "drvpath")]
    pub drv_path: String,
    pub finished: i32,
    /// Its first output's path, by output name.
    pub first_output: Option<String>,
}

/// The builds of evaluation `eval`.
pub async fn member_builds(
    conn: &mut PgConnection,
    eval: EvalId,
) -> Result<Vec<MemberBuild>, sqlx::Error> {
    sqlx::query_as(
        "select b.id, b.job, b.drvPath, b.finished, \
         (select o.path from BuildOutputs o where o.build = b.id order by o.name limit 1) as first_output \
         from JobsetEvalMembers m join Builds b on b.id = m.build where m.eval = $1",
    )
    .bind(eval)
    .fetch_all(conn)
    .await
}

/// Sets whether evaluation `id` added builds, and how many it has.
pub async fn set_new_builds(
    conn: &mut PgConnection,
    id: EvalId,
    changed: bool,
    nr_builds: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query("update JobsetEvals set hasNewBuilds = $2, nrBuilds = $3 where id = $1")
        .bind(id)
        .bind(i32::from(changed))
        .bind(nr_builds)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds builds to evaluation `eval`: (build, whether it is new).
pub async fn add_members(
    conn: &mut PgConnection,
    eval: EvalId,
    members: &[(BuildId, bool)],
) -> Result<(), sqlx::Error> {
    let (builds, is_new): (Vec<BuildId>, Vec<i32>) =
        members.iter().map(|(b, n)| (*b, i32::from(*n))).unzip();
    sqlx::query(
        "insert into JobsetEvalMembers (eval, build, isNew) select $1, b, n from unnest($2::int[], $3::int[]) as t(b, n) \
         on conflict do nothing",
    )
    .bind(eval)
    .bind(&builds)
    .bind(&is_new)
    .execute(conn)
    .await?;
    Ok(())
}

/// Links aggregate builds to their constituents, pairwise.
pub async fn add_constituents(
    conn: &mut PgConnection,
    aggregates: &[BuildId],
    constituents: &[BuildId],
) -> Result<(), sqlx::Error> {
    if aggregates.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into AggregateConstituents (aggregate, constituent) select * from unnest($1::int[], $2::int[]) \
         on conflict do nothing",
    )
    .bind(aggregates)
    .bind(constituents)
    .execute(conn)
    .await?;
    Ok(())
}

/// An input as an evaluation used it.
#[derive(Clone, Copy, Debug)]
pub struct EvalInput<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub uri: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub short_rev_length: Option<i16>,
    pub value: Option<&'a str>,
    /// The build whose output it is.
    pub dependency: Option<BuildId>,
    pub store_path: Option<&'a str>,
    pub sha256: Option<&'a str>,
}

/// Records the inputs of evaluation `eval`.
pub async fn add_inputs(
    conn: &mut PgConnection,
    eval: EvalId,
    inputs: &[EvalInput<'_>],
) -> Result<(), sqlx::Error> {
    for input in inputs {
        sqlx::query(
            "insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision, shortRevLength, value, dependency, \
             path, sha256hash) values ($1, $2, 0, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(eval)
        .bind(input.name)
        .bind(input.kind)
        .bind(input.uri)
        .bind(input.revision)
        .bind(input.short_rev_length)
        .bind(input.value)
        .bind(input.dependency)
        .bind(input.store_path)
        .bind(input.sha256)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records what the evaluation `trace` of jobset `jobset` fetched
/// (`flake`, `inputs`) at `now`, prunes the jobset's records older than a
/// day, and NOTIFYs `eval_checked_out`.
pub async fn record_checkout(
    pool: &PgPool,
    jobset: JobsetId,
    trace: &str,
    flake: Option<&str>,
    inputs: &[EvalInput<'_>],
    now: i32,
) -> Result<(), sqlx::Error> {
    let inputs: Vec<serde_json::Value> = inputs
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name, "type": i.kind, "uri": i.uri,
                "revision": i.revision, "value": i.value,
            })
        })
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query("delete from JobsetCheckouts where jobset_id = $1 and createdAt < $2")
        .bind(jobset)
        .bind(now.saturating_sub(86_400))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into JobsetCheckouts (traceId, jobset_id, flake, inputs, createdAt) \
         values ($1, $2, $3, $4::jsonb, $5) on conflict (traceId) do nothing",
    )
    .bind(trace)
    .bind(jobset)
    .bind(flake)
    .bind(serde_json::Value::Array(inputs).to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    crate::notify::send(&mut tx, "eval_checked_out", &format!("{trace}\t{jobset}")).await?;
    tx.commit().await
}

/// Whether `isCurrent` disagrees with evaluation `eval` of jobset
/// `jobset_id`: a member not current, or a current build not a member.
pub async fn is_current_wrong(
    pool: &PgPool,
    eval: EvalId,
    jobset_id: JobsetId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                        where m.eval = $1 and b.isCurrent is distinct from 1) \
             or exists (select 1 from Builds b where b.jobset_id = $2 and b.isCurrent = 1 \
                        and not exists (select 1 from JobsetEvalMembers m where m.eval = $1 and m.build = b.id))",
    )
    .bind(eval)
    .bind(jobset_id)
    .fetch_one(pool)
    .await
}

/// Newest first, the evaluations of jobset `jobset_id` that added builds,
/// with whether each still has unfinished builds.
pub async fn with_new_builds(
    pool: &PgPool,
    jobset_id: JobsetId,
) -> Result<Vec<(EvalId, bool)>, sqlx::Error> {
    sqlx::query_as(
        "select e.id, exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                              where m.eval = e.id and b.finished = 0) \
         from JobsetEvals e where e.jobset_id = $1 and e.hasNewBuilds = 1 order by e.id desc",
    )
    .bind(jobset_id)
    .fetch_all(pool)
    .await
}

/// The latest evaluation of `project:jobset` that added builds and has
/// none unfinished; with `job`, one in which that job succeeded.
pub async fn latest_finished(
    pool: &PgPool,
    project: &str,
    jobset: &str,
    job: Option<&str>,
) -> Result<Option<EvalId>, sqlx::Error> {
    sqlx::query_scalar(
        "select e.id from JobsetEvals e join Jobsets j on j.id = e.jobset_id \
         where j.project = $1 and j.name = $2 and e.hasNewBuilds = 1 \
         and not exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                         where m.eval = e.id and b.finished = 0) \
         and ($3::text is null or exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                         where m.eval = e.id and b.job = $3 and b.buildStatus = $4)) \
         order by e.id desc limit 1",
    )
    .bind(project)
    .bind(jobset)
    .bind(job)
    .bind(crate::status::BuildStatus::Succeeded)
    .fetch_optional(pool)
    .await
}

/// Job and `out` path of each successful build of evaluation `eval`, by
/// job.
pub async fn succeeded_outputs(
    pool: &PgPool,
    eval: EvalId,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "select b.job, o.path from JobsetEvalMembers m join Builds b on b.id = m.build \
         join BuildOutputs o on o.build = b.id and o.name = 'out' \
         where m.eval = $1 and b.finished = 1 and b.buildStatus = $2 and o.path is not null order by b.job",
    )
    .bind(eval)
    .bind(crate::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await
}

/// The project and jobset of evaluation `id`.
pub async fn jobset_of(pool: &PgPool, id: EvalId) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("select j.project, j.name from JobsetEvals e join Jobsets j on j.id = e.jobset_id where e.id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The ids of evaluation `eval`'s builds, in order.
pub async fn member_ids(pool: &PgPool, eval: EvalId) -> Result<Vec<BuildId>, sqlx::Error> {
    sqlx::query_scalar("select build from JobsetEvalMembers where eval = $1 order by build")
        .bind(eval)
        .fetch_all(pool)
        .await
}

/// One page of the evaluations that added builds, newest first (of jobset
/// `jobset` only, if given), its links, and how many there are in all.
pub async fn page(
    pool: &PgPool,
    jobset: Option<JobsetId>,
    position: &Position,
    per_page: i64,
) -> Result<(i64, Vec<EvalId>, serde_json::Map<String, serde_json::Value>), sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "select count(*) from JobsetEvals where hasNewBuilds = 1 and ($1::int is null or jobset_id = $1)",
    )
    .bind(jobset)
    .fetch_one(pool)
    .await?;
    let sql = format!(
        "select id from JobsetEvals where hasNewBuilds = 1 and ($1::int is null or jobset_id = $1) \
         and {} {}",
        position.condition(&["id"], 2),
        position.order(&["id"], per_page)
    );
    let rows: Vec<EvalId> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(jobset)
        .bind(position.key())
        .fetch_all(pool)
        .await?;
    let (ids, links) = position.page(rows, per_page, |id| vec![i64::from(id.0)]);
    Ok((total, ids, links))
}
