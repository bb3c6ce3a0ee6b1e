//! `EvaluationCosts`: what each evaluation cost, per top-level attribute
//! and for its slowest jobs.

use serde::Serialize;
use sqlx::PgPool;

use crate::ids::{EvalId, JobsetId};

/// What evaluating a top-level attribute (`kind` `attrset`) or a job
/// (`job`) cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Cost {
    pub kind: String,
    pub name: String,
    pub milliseconds: i64,
    pub jobs: i32,
    #[sqlx(rename = "peakmemory")]
    #[serde(rename = "peakMemory")]
    pub peak_memory: i64,
}

/// Records the costs of evaluation `eval`.
pub async fn record(pool: &PgPool, eval: EvalId, costs: &[Cost]) -> Result<(), sqlx::Error> {
    if costs.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = costs.iter().map(|c| c.kind.as_str()).collect();
    let names: Vec<&str> = costs.iter().map(|c| c.name.as_str()).collect();
    let milliseconds: Vec<i64> = costs.iter().map(|c| c.milliseconds).collect();
    let jobs: Vec<i32> = costs.iter().map(|c| c.jobs).collect();
    let memory: Vec<i64> = costs.iter().map(|c| c.peak_memory).collect();
    sqlx::query(
        "insert into EvaluationCosts (eval, kind, name, milliseconds, jobs, peakMemory) \
         select $1, * from unnest($2::text[], $3::text[], $4::bigint[], $5::integer[], $6::bigint[]) \
         on conflict (eval, kind, name) do update set milliseconds = excluded.milliseconds, \
         jobs = excluded.jobs, peakMemory = excluded.peakMemory",
    )
    .bind(eval)
    .bind(&kinds)
    .bind(&names)
    .bind(&milliseconds)
    .bind(&jobs)
    .bind(&memory)
    .execute(pool)
    .await?;
    Ok(())
}

/// The costs of evaluation `eval`, most expensive first.
pub async fn of_eval(pool: &PgPool, eval: EvalId) -> Result<Vec<Cost>, sqlx::Error> {
    sqlx::query_as(
        "select kind, name, milliseconds, jobs, peakMemory from EvaluationCosts \
         where eval = $1 order by kind, milliseconds desc, name",
    )
    .bind(eval)
    .fetch_all(pool)
    .await
}

/// One evaluation in the trend of a jobset's costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Point {
    pub eval: EvalId,
    pub timestamp: i32,
    /// `JobsetEvals.evalTime`: seconds from start to end.
    #[serde(rename = "evalTime")]
    pub eval_time: Option<i32>,
    /// The workers' time, summed.
    pub milliseconds: i64,
    #[serde(rename = "peakMemory")]
    pub peak_memory: i64,
    pub jobs: i64,
}

/// The costs of `jobset`'s latest `limit` evaluations that recorded them,
/// newest first.
pub async fn trend(pool: &PgPool, jobset: JobsetId, limit: i64) -> Result<Vec<Point>, sqlx::Error> {
    sqlx::query_as(
        "select e.id as eval, e.timestamp, e.evalTime as eval_time, \
         sum(c.milliseconds)::bigint as milliseconds, max(c.peakMemory)::bigint as peak_memory, \
         sum(c.jobs)::bigint as jobs \
         from JobsetEvals e join EvaluationCosts c on c.eval = e.id and c.kind = 'attrset' \
         where e.jobset_id = $1 group by e.id order by e.id desc limit $2",
    )
    .bind(jobset)
    .bind(limit)
    .fetch_all(pool)
    .await
}
