//! `BuildEtas`: the queue runner's predictions of when queued builds
//! finish, kept with the time each was made so that they can be compared
//! with the outcome (`Builds.stopTime`).

use serde::Serialize;
use sqlx::PgPool;

use crate::ids::{BuildId, EvalId};

/// When a build is expected to finish (Unix times).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Eta {
    #[sqlx(rename = "madeat")]
    pub made_at: i32,
    #[sqlx(rename = "finishat")]
    pub finish_at: i32,
    /// The earliest it may finish.
    pub low: i32,
    /// The latest it may finish.
    pub high: i32,
}

/// Records the predictions made at `made_at` for `builds` (same order as
/// `etas`); builds that left meanwhile are skipped.
pub async fn record(pool: &PgPool, builds: &[BuildId], etas: &[Eta]) -> Result<(), sqlx::Error> {
    if builds.is_empty() {
        return Ok(());
    }
    let ids = crate::ids::numbers(builds);
    let made: Vec<i32> = etas.iter().map(|e| e.made_at).collect();
    let finish: Vec<i32> = etas.iter().map(|e| e.finish_at).collect();
    let low: Vec<i32> = etas.iter().map(|e| e.low).collect();
    let high: Vec<i32> = etas.iter().map(|e| e.high).collect();
    sqlx::query(
        "insert into BuildEtas (build, madeAt, finishAt, low, high) \
         select u.* from unnest($1::integer[], $2::integer[], $3::integer[], $4::integer[], $5::integer[]) \
         as u(build, madeAt, finishAt, low, high) \
         where exists (select 1 from Builds b where b.id = u.build) \
         on conflict (build, madeAt) do update set finishAt = excluded.finishAt, \
         low = excluded.low, high = excluded.high",
    )
    .bind(&ids)
    .bind(&made)
    .bind(&finish)
    .bind(&low)
    .bind(&high)
    .execute(pool)
    .await?;
    Ok(())
}

/// The latest prediction for `build`.
pub async fn latest(pool: &PgPool, build: BuildId) -> Result<Option<Eta>, sqlx::Error> {
    sqlx::query_as(
        "select madeAt, finishAt, low, high from BuildEtas where build = $1 \
         order by madeAt desc limit 1",
    )
    .bind(build)
    .fetch_optional(pool)
    .await
}

/// The latest prediction for each of `builds` that has one.
pub async fn latest_of(pool: &PgPool, builds: &[BuildId]) -> Result<Vec<Outcome>, sqlx::Error> {
    sqlx::query_as(
        "select distinct on (e.build) e.build, e.madeAt, e.finishAt, e.low, e.high, \
         null::integer as stopTime from BuildEtas e where e.build = any($1) \
         order by e.build, e.madeAt desc",
    )
    .bind(crate::ids::numbers(builds))
    .fetch_all(pool)
    .await
}

/// When an evaluation's unfinished builds are expected to be done: the
/// latest of their predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalEta {
    /// Its builds not finished yet.
    pub unfinished: i64,
    /// How many of those have a prediction.
    pub predicted: i64,
    /// The latest predicted finish among them, with its range (`None`
    /// when none has a prediction).
    pub eta: Option<Eta>,
}

/// The prediction for evaluation `eval` (from its builds' latest ones).
pub async fn of_eval(pool: &PgPool, eval: EvalId) -> Result<EvalEta, sqlx::Error> {
    let row: (i64, i64, Option<i32>, Option<i32>, Option<i32>, Option<i32>) = sqlx::query_as(
        "select count(*), count(e.build), min(e.madeAt), max(e.finishAt), max(e.low), max(e.high) \
         from JobsetEvalMembers m join Builds b on b.id = m.build and b.finished = 0 \
         left join lateral (select x.build, x.madeAt, x.finishAt, x.low, x.high from BuildEtas x \
           where x.build = b.id order by x.madeAt desc limit 1) e on true \
         where m.eval = $1",
    )
    .bind(eval)
    .fetch_one(pool)
    .await?;
    let (unfinished, predicted, made_at, finish_at, low, high) = row;
    let eta = match (made_at, finish_at, low, high) {
        (Some(made_at), Some(finish_at), Some(low), Some(high)) => Some(Eta {
            made_at,
            finish_at,
            low,
            high,
        }),
        _ => None,
    };
    Ok(EvalEta {
        unfinished,
        predicted,
        eta,
    })
}

/// A prediction next to what happened: `stop_time` is the build's finish
/// (`None` while it runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Outcome {
    pub build: BuildId,
    #[sqlx(flatten)]
    pub eta: Eta,
    #[sqlx(rename = "stoptime")]
    pub stop_time: Option<i32>,
}

/// Every prediction made for `builds`, with their outcome, by build and
/// time.
pub async fn outcomes(pool: &PgPool, builds: &[BuildId]) -> Result<Vec<Outcome>, sqlx::Error> {
    sqlx::query_as(
        "select e.build, e.madeAt, e.finishAt, e.low, e.high, \
         case when b.finished = 1 then b.stopTime end as stopTime \
         from BuildEtas e join Builds b on b.id = e.build \
         where e.build = any($1) order by e.build, e.madeAt",
    )
    .bind(crate::ids::numbers(builds))
    .fetch_all(pool)
    .await
}

/// A finished step, for predicting how long steps take.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StepTime {
    #[sqlx(rename = "drvpath")]
    pub drv_path: String,
    pub system: Option<String>,
    pub machine: String,
    pub seconds: i32,
    pub jobset_id: crate::ids::JobsetId,
    pub job: String,
    /// Whether it was its build's own derivation.
    pub toplevel: bool,
}

/// The latest `limit` successful build steps, newest first.
pub async fn recent_step_times(pool: &PgPool, limit: i64) -> Result<Vec<StepTime>, sqlx::Error> {
    sqlx::query_as(
        "select s.drvPath, s.system, s.machine, s.stopTime - s.startTime as seconds, \
         b.jobset_id, b.job, s.drvPath = b.drvPath as toplevel \
         from BuildSteps s join Builds b on b.id = s.build \
         where s.busy = 0 and s.stopTime is not null and s.status = 0 and s.type = 0 \
         and s.startTime is not null and s.drvPath is not null \
         order by s.stopTime desc, s.build desc, s.stepnr desc limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
