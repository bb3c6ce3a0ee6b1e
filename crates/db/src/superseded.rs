//! Work that a newer evaluation supersedes: when a jobset (a branch or a
//! pull request) gets a new head and is evaluated again, the queued builds
//! that only its earlier evaluations wanted are cancelled, lowered or kept,
//! as the project's policy (`ProjectSupersededPolicy`) says.
//!
//! A build is still wanted while it is a member of a *live* evaluation:
//! the latest evaluation of an enabled jobset of an enabled project. Steps
//! are shared between builds by derivation, so cancelling a build never
//! stops a step that a live build still needs (the queue runner drops only
//! steps no queued build wants).

use sqlx::PgPool;

use crate::DbError;
use crate::builds::CancelReason;
use crate::ids::{BuildId, JobsetId};

/// What a project does with superseded queued builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Build them anyway (Hydra's behaviour, the default).
    #[default]
    Keep,
    /// Cancel them (status 4, reason "superseded").
    Cancel,
    /// Move them behind all other work.
    Lower,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Keep => "keep",
            Policy::Cancel => "cancel",
            Policy::Lower => "lower",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s.trim() {
            "keep" => Some(Policy::Keep),
            "cancel" => Some(Policy::Cancel),
            "lower" => Some(Policy::Lower),
            _ => None,
        }
    }
}

/// The global priority superseded builds get under [`Policy::Lower`]:
/// behind every build that was never bumped (0).
pub const LOWERED_PRIORITY: i32 = -1;

/// Project `project`'s policy.
pub async fn policy(pool: &PgPool, project: &str) -> Result<Policy, sqlx::Error> {
    let policy: Option<Policy> =
        sqlx::query_scalar("select policy from ProjectSupersededPolicy where project = $1")
            .bind(project)
            .fetch_optional(pool)
            .await?;
    Ok(policy.unwrap_or_default())
}

/// Sets project `project`'s policy.
pub async fn set_policy(pool: &PgPool, project: &str, policy: Policy) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into ProjectSupersededPolicy (project, policy) values ($1, $2) \
         on conflict (project) do update set policy = excluded.policy",
    )
    .bind(project)
    .bind(policy)
    .execute(pool)
    .await?;
    Ok(())
}

/// The queued builds of `jobset`'s evaluations that no live evaluation
/// wants.
pub async fn unwanted(pool: &PgPool, jobset: JobsetId) -> Result<Vec<BuildId>, sqlx::Error> {
    sqlx::query_scalar(
        "select b.id from Builds b \
         where b.finished = 0 and b.jobset_id = $1 \
           and exists (select 1 from JobsetEvalMembers m join JobsetEvals e on e.id = m.eval \
                       where m.build = b.id and e.jobset_id = $1) \
           and not exists ( \
             select 1 from JobsetEvalMembers m join JobsetEvals e on e.id = m.eval \
             join Jobsets j on j.id = e.jobset_id join Projects p on p.name = j.project \
             where m.build = b.id and j.enabled <> 0 and p.enabled = 1 \
               and not exists (select 1 from JobsetEvals later \
                               where later.jobset_id = e.jobset_id and later.id > e.id)) \
         order by b.id",
    )
    .bind(jobset)
    .fetch_all(pool)
    .await
}

/// Applies `policy` to the queued builds of `jobset` that no live
/// evaluation wants; returns the builds cancelled or lowered.
pub async fn apply(
    pool: &PgPool,
    jobset: JobsetId,
    policy: Policy,
    reason: CancelReason,
) -> Result<Vec<BuildId>, DbError> {
    if policy == Policy::Keep {
        return Ok(Vec::new());
    }
    let ids = unwanted(pool, jobset).await?;
    if ids.is_empty() {
        return Ok(ids);
    }
    match policy {
        Policy::Keep => Ok(Vec::new()),
        Policy::Cancel => crate::builds::cancel_builds_because(pool, &ids, Some(reason)).await,
        Policy::Lower => {
            let lowered: Vec<BuildId> = sqlx::query_scalar(
                "update Builds set globalPriority = $2 \
                 where id = any($1) and finished = 0 and globalPriority > $2 returning id",
            )
            .bind(&ids)
            .bind(LOWERED_PRIORITY)
            .fetch_all(pool)
            .await?;
            Ok(lowered)
        }
    }
}
