//! What blocks the most: the failed steps under an evaluation, a jobset or
//! the whole instance, ranked by how many jobs they make fail.
//!
//! Every failed build has a step row naming the derivation that failed: its
//! own (status 1 and the like) or a dependency's (status 2, the row's
//! `propagatedFrom` naming the build the step ran under), cached failures
//! included. A build's blocker is the derivation of its last failed step;
//! blockers are ranked by the builds they hold, so that a dependency that
//! fails 50 jobs comes before one that fails 3. Aborted and cancelled
//! builds are no one's failure and are left out.

use serde::Serialize;
use sqlx::PgPool;

use super::eval::{InputChange, summaries};
use crate::error::ApiResult;
use hydra_db::ids::{EvalId, JobsetId};
use hydra_db::status::BuildStatus;

/// Which builds the ranking is over.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope {
    /// An evaluation's builds.
    Eval(EvalId),
    /// A jobset's current builds (those of its latest evaluation).
    Jobset(JobsetId),
    /// Every jobset's current builds.
    All,
}

/// How many blockers a ranking lists.
const LIMIT: i64 = 50;
/// How many of a blocker's failed builds it names.
const EXAMPLES: i64 = 10;

/// A failed derivation and what it blocks.
#[derive(Debug, Serialize)]
pub(crate) struct Blocker {
    pub drvpath: String,
    /// The builds of the scope that fail because of it.
    pub jobs: i64,
    /// The first of them, by id.
    pub builds: Vec<i32>,
    /// Where it failed itself (build and step: its log), the latest time.
    pub build: Option<i32>,
    pub stepnr: Option<i32>,
    /// That step's status.
    pub status: Option<i32>,
    /// The first evaluation of the jobset in which a build failed on it,
    /// and what changed in its inputs then.
    pub firstfailedeval: Option<EvalId>,
    pub changes: Vec<InputChange>,
}

#[derive(sqlx::FromRow)]
struct RankRow {
    drvpath: String,
    jobs: i64,
    builds: Vec<i32>,
    jobset_id: i32,
}

/// The blockers of `scope`, most jobs first.
pub(crate) async fn ranked(pool: &PgPool, scope: Scope) -> ApiResult<Vec<Blocker>> {
    let (builds, key) = match scope {
        Scope::Eval(id) => (
            "select build as id from JobsetEvalMembers where eval = $1",
            id.0,
        ),
        Scope::Jobset(id) => (
            "select id from Builds where jobset_id = $1 and isCurrent = 1",
            id.0,
        ),
        Scope::All => ("select id from Builds where isCurrent = 1 and $1 = $1", 0),
    };
    let sql = format!(
        "select s.drvPath as drvpath, count(*) as jobs, \
         (array_agg(b.id order by b.id))[1:{EXAMPLES}] as builds, min(b.jobset_id) as jobset_id \
         from ({builds}) c join Builds b on b.id = c.id \
         cross join lateral (select s.drvPath from BuildSteps s where s.build = b.id and s.busy = 0 \
             and s.status is not null and s.status <> 0 order by s.stepnr desc limit 1) s \
         where b.finished = 1 and b.buildStatus not in ($2, $3, $4) \
         group by s.drvPath order by count(*) desc, s.drvPath limit {LIMIT}"
    );
    let rows: Vec<RankRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(BuildStatus::Succeeded)
        .bind(BuildStatus::Aborted)
        .bind(BuildStatus::Cancelled)
        .fetch_all(pool)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let drvs: Vec<&str> = rows.iter().map(|r| r.drvpath.as_str()).collect();
    let jobsets: Vec<i32> = rows.iter().map(|r| r.jobset_id).collect();
    // Where each failed itself, the latest time.
    let own: Vec<(String, i32, i32, Option<i32>)> = sqlx::query_as(
        "select distinct on (drvPath) drvPath, build, stepnr, status from BuildSteps \
         where drvPath = any($1) and propagatedFrom is null and busy = 0 \
         and status is not null and status <> 0 order by drvPath, build desc, stepnr desc",
    )
    .bind(&drvs)
    .fetch_all(pool)
    .await?;
    // The first evaluation of its jobset with a build that failed on it.
    let first: Vec<(String, EvalId)> = sqlx::query_as(
        "select w.drv, min(m.eval) from unnest($1::text[], $2::integer[]) as w(drv, jobset) \
         join BuildSteps s on s.drvPath = w.drv and s.busy = 0 and s.status <> 0 \
         join Builds b on b.id = s.build and b.jobset_id = w.jobset \
         join JobsetEvalMembers m on m.build = b.id group by w.drv",
    )
    .bind(&drvs)
    .bind(&jobsets)
    .fetch_all(pool)
    .await?;
    let first_evals: Vec<EvalId> = first.iter().map(|(_, e)| *e).collect();
    let changes = summaries(pool, &first_evals).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let own = own.iter().find(|o| o.0 == r.drvpath);
            let first = first.iter().find(|f| f.0 == r.drvpath).map(|f| f.1);
            let changes = first
                .and_then(|e| changes.iter().find(|s| s.id == e))
                .map(|s| s.changes.clone())
                .unwrap_or_default();
            Blocker {
                jobs: r.jobs,
                builds: r.builds,
                build: own.map(|o| o.1),
                stepnr: own.map(|o| o.2),
                status: own.and_then(|o| o.3),
                firstfailedeval: first,
                changes,
                drvpath: r.drvpath,
            }
        })
        .collect())
}
