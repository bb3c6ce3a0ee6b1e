//! What the notification plugins that report on finished builds (mail,
//! chat, metrics) read of them, and of jobsets whose evaluation failed.

use sqlx::PgPool;

use crate::ids::BuildId;
use crate::status::BuildStatus;

/// A build as a report tells it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildReport {
    pub id: BuildId,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub system: String,
    pub finished: bool,
    /// `Builds.buildStatus` (once finished).
    pub status: Option<i32>,
    pub timestamp: i32,
    pub start_time: Option<i32>,
    pub stop_time: Option<i32>,
    pub cached: bool,
    pub size: Option<i64>,
    pub closure_size: Option<i64>,
    /// `meta.maintainers`, comma-separated.
    pub maintainers: Option<String>,
    /// The jobset's `enableEmail` and `emailOverride`.
    pub enable_email: bool,
    pub email_override: String,
    /// The build before it (see `reports`) and its status.
    pub previous_id: Option<BuildId>,
    pub previous_status: Option<i32>,
    pub has_previous: bool,
}

impl BuildReport {
    /// `project:jobset:job`.
    pub fn full_name(&self) -> String {
        format!("{}:{}:{}", self.project, self.jobset, self.job)
    }

    /// Seconds from start to stop.
    pub fn duration(&self) -> i64 {
        match (self.start_time, self.stop_time) {
            (Some(start), Some(stop)) => i64::from(stop) - i64::from(start),
            _ => 0,
        }
    }

    /// Whether the build was aborted or cancelled (reports skip those).
    pub fn aborted_or_cancelled(&self) -> bool {
        matches!(
            self.status.and_then(BuildStatus::from_code),
            Some(BuildStatus::Aborted | BuildStatus::Cancelled)
        )
    }

    /// Whether the build before it ended the same way (then the news is
    /// no news).
    pub fn status_unchanged(&self) -> bool {
        self.has_previous && self.previous_status == self.status
    }
}

/// The builds among `ids`, in the order of `ids`. Each has the status of
/// its previous build: the newest finished build of the same jobset, job
/// and system with a smaller id, not aborted or cancelled.
pub async fn reports(pool: &PgPool, ids: &[BuildId]) -> Result<Vec<BuildReport>, sqlx::Error> {
    let skipped = [BuildStatus::Aborted.code(), BuildStatus::Cancelled.code()];
    let mut found: Vec<BuildReport> = sqlx::query_as(
        "select b.id, j.project, j.name as jobset, b.job, b.system, b.finished = 1 as finished, \
           case when b.finished = 1 then b.buildStatus end as status, b.timestamp, \
           b.startTime as start_time, b.stopTime as stop_time, \
           coalesce(b.isCachedBuild, 0) = 1 as cached, b.size, b.closureSize as closure_size, \
           b.maintainers, j.enableEmail = 1 as enable_email, j.emailOverride as email_override, \
           p.id as previous_id, p.buildStatus as previous_status, p.id is not null as has_previous \
         from Builds b join Jobsets j on j.id = b.jobset_id \
         left join lateral ( \
           select q.id, q.buildStatus from Builds q \
           where q.jobset_id = b.jobset_id and q.job = b.job and q.system = b.system \
             and q.id < b.id and q.finished = 1 and not (q.buildStatus = any($2)) \
           order by q.id desc limit 1) p on true \
         where b.id = any($1)",
    )
    .bind(ids)
    .bind(&skipped[..])
    .fetch_all(pool)
    .await?;
    found.sort_by_key(|r| ids.iter().position(|id| *id == r.id));
    Ok(found)
}

/// A version-controlled input whose revision changed between two builds'
/// evaluations.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct InputChange {
    pub name: String,
    /// `git` or `hg`.
    pub kind: String,
    pub uri: String,
    pub from: String,
    pub to: String,
    /// The jobset input has `emailResponsible`: its committers hear of it.
    pub responsible: bool,
}

/// The `git` and `hg` inputs whose revision differs between the first
/// evaluations with new builds of `previous` and of `build` (same name,
/// type and URI).
pub async fn input_changes(
    pool: &PgPool,
    previous: BuildId,
    build: BuildId,
) -> Result<Vec<InputChange>, sqlx::Error> {
    sqlx::query_as(
        "with first_eval as ( \
           select m.build, min(m.eval) as eval from JobsetEvalMembers m \
           join JobsetEvals e on e.id = m.eval \
           where m.build = any(array[$1, $2]) and e.hasNewBuilds = 1 group by m.build) \
         select i2.name, i2.type as kind, i2.uri, i1.revision as from, i2.revision as to, \
           coalesce(ji.emailResponsible, 0) = 1 as responsible \
         from JobsetEvalInputs i1 \
         join JobsetEvalInputs i2 on i2.name = i1.name and i2.type = i1.type and i2.uri = i1.uri \
           and i2.altNr = i1.altNr \
         join JobsetEvals e on e.id = i2.eval join Jobsets j on j.id = e.jobset_id \
         left join JobsetInputs ji on ji.project = j.project and ji.jobset = j.name and ji.name = i2.name \
         where i1.eval = (select eval from first_eval where build = $1) \
           and i2.eval = (select eval from first_eval where build = $2) \
           and i1.altNr = 0 and i1.type in ('git', 'hg') \
           and i1.revision is not null and i2.revision is not null and i1.revision <> i2.revision \
         order by i2.name",
    )
    .bind(previous)
    .bind(build)
    .fetch_all(pool)
    .await
}

/// A jobset's evaluation error and who hears of it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JobsetError {
    pub project: String,
    pub jobset: String,
    /// `Jobsets.errorMsg` (empty: none).
    pub message: String,
    /// The project owner's address, and whether they want these mails
    /// (`emailOnError`).
    pub owner_email: String,
    pub owner_wants_mail: bool,
}

/// Jobset `id`'s error and its owner.
pub async fn jobset_error(
    pool: &PgPool,
    id: crate::ids::JobsetId,
) -> Result<Option<JobsetError>, sqlx::Error> {
    sqlx::query_as(
        "select j.project, j.name as jobset, coalesce(j.errorMsg, '') as message, \
           u.emailAddress as owner_email, u.emailOnError = 1 as owner_wants_mail \
         from Jobsets j join Projects p on p.name = j.project \
         join Users u on u.userName = p.owner \
         where j.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Claims the mail about `message` for jobset `id` at `now`: true when
/// no mail about this very error was claimed before, so exactly one of
/// several concurrent handlers of the same error sends it (the upsert
/// locks the row and re-checks against its latest version).
pub async fn claim_error_mail(
    pool: &PgPool,
    id: crate::ids::JobsetId,
    message: &str,
    now: i32,
) -> Result<Option<ErrorMailClaim>, sqlx::Error> {
    let claimed: Option<(Option<String>,)> = sqlx::query_as(
        "with prev as (select errorMsg from JobsetErrorMails where jobset_id = $1) \
         insert into JobsetErrorMails (jobset_id, errorMsg, sentAt) values ($1, $2, $3) \
         on conflict (jobset_id) do update set errorMsg = excluded.errorMsg, sentAt = excluded.sentAt \
         where JobsetErrorMails.errorMsg <> excluded.errorMsg \
         returning (select errorMsg from prev)",
    )
    .bind(id)
    .bind(message)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(claimed.map(|(previous,)| ErrorMailClaim {
        jobset: id,
        message: message.to_owned(),
        previous,
    }))
}

/// A claimed evaluation-error mail, released again if it cannot be sent.
#[derive(Debug)]
pub struct ErrorMailClaim {
    jobset: crate::ids::JobsetId,
    message: String,
    previous: Option<String>,
}

impl ErrorMailClaim {
    /// Gives the claim back (the mail was not sent), so the error is
    /// mailed on its next report; a newer claim is left alone.
    pub async fn release(self, pool: &PgPool) -> Result<(), sqlx::Error> {
        match self.previous {
            Some(previous) => sqlx::query(
                "update JobsetErrorMails set errorMsg = $3 where jobset_id = $1 and errorMsg = $2",
            )
            .bind(self.jobset)
            .bind(&self.message)
            .bind(previous)
            .execute(pool)
            .await?,
            None => {
                sqlx::query("delete from JobsetErrorMails where jobset_id = $1 and errorMsg = $2")
                    .bind(self.jobset)
                    .bind(&self.message)
                    .execute(pool)
                    .await?
            }
        };
        Ok(())
    }
}
