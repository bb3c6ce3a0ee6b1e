//! What the evaluator's garbage-collector roots keep: the derivations of
//! unfinished builds, the outputs of kept builds, and for every jobset
//! that is not an abandoned hidden one, the builds of its evaluations
//! with unfinished builds and of its latest `keepnr` finished ones, plus
//! the latest successful build of each of their jobs.

use std::collections::BTreeSet;

use sqlx::PgPool;

use crate::status::{BuildStatus, JobsetState};

/// The store paths that must be kept.
pub async fn wanted_paths(pool: &PgPool, now: i32) -> Result<BTreeSet<String>, sqlx::Error> {
    // Statuses whose builds have outputs.
    let with_outputs: Vec<i32> = [BuildStatus::Succeeded, BuildStatus::FailedWithOutput]
        .iter()
        .map(|s| s.code())
        .collect();
    let mut wanted = BTreeSet::new();
    let unfinished: Vec<String> =
        sqlx::query_scalar("select drvPath from Builds where finished = 0")
            .fetch_all(pool)
            .await?;
    wanted.extend(unfinished);
    let kept: Vec<String> = sqlx::query_scalar(
        "select o.path from Builds b join BuildOutputs o on o.build = b.id where b.keep = 1 and o.path is not null",
    )
    .fetch_all(pool)
    .await?;
    wanted.extend(kept);

    let week_ago = now - 7 * 24 * 3600;
    let jobsets: Vec<(i32, i32)> = sqlx::query_as(
        "select j.id, j.keepnr from Jobsets j join Projects p on p.name = j.project \
         where not (j.enabled = $2 and (j.hidden = 1 or p.hidden = 1) and coalesce(j.lastCheckedTime, 0) < $1)",
    )
    .bind(week_ago)
    .bind(JobsetState::Disabled)
    .fetch_all(pool)
    .await?;
    for (jobset_id, keepnr) in jobsets {
        // Newest first: evaluations with unfinished builds, and the first
        // keepnr finished ones.
        let evals: Vec<(i32, bool)> = sqlx::query_as(
            "select e.id, exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                                  where m.eval = e.id and b.finished = 0) \
             from JobsetEvals e where e.jobset_id = $1 and e.hasNewBuilds = 1 order by e.id desc",
        )
        .bind(jobset_id)
        .fetch_all(pool)
        .await?;
        let mut finished_kept = 0;
        let mut keep_evals = Vec::new();
        for (id, unfinished) in evals {
            if unfinished {
                keep_evals.push(id);
            } else if finished_kept < keepnr.max(0) {
                finished_kept += 1;
                keep_evals.push(id);
            }
        }
        if keep_evals.is_empty() {
            continue;
        }
        let paths: Vec<String> = sqlx::query_scalar(
            "select case when b.buildStatus = any($2) then o.path else b.drvPath end \
             from JobsetEvalMembers m join Builds b on b.id = m.build \
             left join BuildOutputs o on o.build = b.id and b.buildStatus = any($2) \
             where m.eval = any($1) and (not b.buildStatus = any($2) or b.buildStatus is null or o.path is not null)",
        )
        .bind(&keep_evals)
        .bind(&with_outputs)
        .fetch_all(pool)
        .await?;
        wanted.extend(paths);
        // The latest successful build of every job in those evaluations.
        let latest: Vec<String> = sqlx::query_scalar(
            "select o.path from BuildOutputs o where o.path is not null and o.build in ( \
                 select max(b.id) from Builds b where b.jobset_id = $1 and b.finished = 1 \
                 and b.buildStatus = any($3) and b.job in ( \
                     select b2.job from JobsetEvalMembers m join Builds b2 on b2.id = m.build where m.eval = any($2)) \
                 group by b.job)",
        )
        .bind(jobset_id)
        .bind(&keep_evals)
        .bind(&with_outputs)
        .fetch_all(pool)
        .await?;
        wanted.extend(latest);
    }
    Ok(wanted)
}
