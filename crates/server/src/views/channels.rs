//! What channels read: the packages of a scope.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;

use crate::error::ApiResult;

/// A package of a channel: a build and its outputs.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct Package {
    pub id: i32,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub system: String,
    pub nixname: Option<String>,
    #[sqlx(skip)]
    pub outputs: BTreeMap<String, String>,
}

/// What a channel holds.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    pub project: Option<String>,
    pub jobset: Option<String>,
    pub job: Option<String>,
    pub eval: Option<hydra_db::ids::EvalId>,
    pub build: Option<hydra_db::ids::BuildId>,
}

/// The latest successful build with a `nix-build` product of each job and
/// system in `scope`, with its outputs.
pub(crate) async fn packages(pool: &PgPool, scope: &Scope) -> ApiResult<Vec<Package>> {
    let mut packages: Vec<Package> = sqlx::query_as(
        "select distinct on (j.project, j.name, b.job, b.system) \
           b.id, j.project, j.name as jobset, b.job, b.system, b.nixName as nixname \
         from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and b.buildStatus = $6 \
           and exists (select 1 from BuildProducts p where p.build = b.id and p.type = 'nix-build') \
           and ($1::text is null or j.project = $1) and ($2::text is null or j.name = $2) \
           and ($3::text is null or b.job = $3) \
           and ($4::int is null or b.id in (select build from JobsetEvalMembers where eval = $4)) \
           and ($5::int is null or b.id = $5) \
         order by j.project, j.name, b.job, b.system, b.id desc",
    )
    .bind(&scope.project)
    .bind(&scope.jobset)
    .bind(&scope.job)
    .bind(scope.eval)
    .bind(scope.build)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await?;
    let ids: Vec<i32> = packages.iter().map(|p| p.id).collect();
    let outputs: Vec<(i32, String, String)> = sqlx::query_as(
        "select build, name, path from BuildOutputs where build = any($1) and path is not null",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut by_build: BTreeMap<i32, BTreeMap<String, String>> = BTreeMap::new();
    for (build, name, path) in outputs {
        by_build.entry(build).or_default().insert(name, path);
    }
    for p in &mut packages {
        p.outputs = by_build.remove(&p.id).unwrap_or_default();
    }
    Ok(packages)
}

/// The build behind custom channel `job` of `project:jobset`: its latest
/// successful build in an evaluation that added builds.
pub(crate) async fn custom(
    pool: &PgPool,
    project: &str,
    jobset: &str,
    job: &str,
) -> ApiResult<Option<hydra_db::ids::BuildId>> {
    Ok(sqlx::query_scalar(
        "select b.id from Builds b join Jobsets j on j.id = b.jobset_id \
         where j.project = $1 and j.name = $2 and b.job = $3 and b.finished = 1 and b.buildStatus = $4 \
         and exists (select 1 from JobsetEvalMembers m join JobsetEvals e on e.id = m.eval \
                     where m.build = b.id and e.hasNewBuilds = 1) \
         order by b.id desc limit 1",
    )
    .bind(project)
    .bind(jobset)
    .bind(job)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_optional(pool)
    .await?)
}

/// Build `build`'s channel product named `name`: its number.
pub(crate) async fn channel_product(
    pool: &PgPool,
    build: hydra_db::ids::BuildId,
    name: &str,
) -> ApiResult<Option<i32>> {
    Ok(sqlx::query_scalar(
        "select productnr from BuildProducts where build = $1 and type = 'channel' and name = $2 \
         order by productnr limit 1",
    )
    .bind(build)
    .bind(name)
    .fetch_optional(pool)
    .await?)
}
