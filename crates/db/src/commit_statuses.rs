//! `CommitStatuses`: the outbox of commit statuses. A row is the state one
//! forge should show for one revision under one context, and what of it
//! was delivered. The notify role's status plugins write desired states
//! (`desire`); its reporter leases what is due (`lease_due`), sends it and
//! records the outcome (`delivered`, `failed`). The policy (what is due
//! when) is the reporter's; this module only stores it.
//!
//! Also what the status plugins read of a build (`BuildFacts`, under a
//! share lock) and of the evaluations it belongs to (`sources`).

use sqlx::{PgConnection, PgPool};

use crate::ids::{BuildId, EvalId};

/// A state a forge should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// `github`, `gitlab`, `gitea` or `bitbucket`.
    pub forge: &'a str,
    /// Where it is POSTed.
    pub url: &'a str,
    pub context: &'a str,
    /// Which configured credential signs it.
    pub credential: &'a str,
    /// `project:jobset:job` (or `project:jobset` for an evaluation).
    pub job: &'a str,
    pub build: Option<BuildId>,
    pub eval: Option<EvalId>,
    pub state: &'a str,
    /// The JSON document sent.
    pub body: &'a str,
}

/// What `desire` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desire {
    /// A new context: its first state is due.
    Created,
    /// The context's state (or document) changed: the new one is due, and
    /// an undelivered earlier one will never be sent.
    Changed,
    /// The context already had this state (or a newer build's or
    /// evaluation's): nothing to send.
    Unchanged,
}

/// Records `desired` at `now`. A context already showing (or about to
/// show) the same state and document is left alone, and so is one that a
/// newer build or evaluation owns.
pub async fn desire(
    conn: &mut PgConnection,
    desired: &Desired<'_>,
    now: i32,
) -> Result<Desire, sqlx::Error> {
    let row: Option<(bool,)> = sqlx::query_as(
        "insert into CommitStatuses \
           (forge, url, context, credential, job, build, eval, state, body, nextAttempt, createdAt, updatedAt) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10) \
         on conflict (url, context) do update set \
           forge = excluded.forge, credential = excluded.credential, job = excluded.job, \
           build = excluded.build, eval = excluded.eval, state = excluded.state, \
           body = excluded.body, version = CommitStatuses.version + 1, attempts = 0, \
           nextAttempt = excluded.nextAttempt, lastError = null, dropped = false, \
           updatedAt = excluded.updatedAt \
         where (CommitStatuses.state, CommitStatuses.body) is distinct from (excluded.state, excluded.body) \
           and (CommitStatuses.build is null or excluded.build is null or excluded.build >= CommitStatuses.build) \
           and (CommitStatuses.eval is null or excluded.eval is null or excluded.eval >= CommitStatuses.eval) \
         returning version = 1",
    )
    .bind(desired.forge)
    .bind(desired.url)
    .bind(desired.context)
    .bind(desired.credential)
    .bind(desired.job)
    .bind(desired.build)
    .bind(desired.eval)
    .bind(desired.state)
    .bind(desired.body)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => Desire::Unchanged,
        Some((true,)) => Desire::Created,
        Some((false,)) => Desire::Changed,
    })
}

/// A state to send.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: i32,
    pub forge: String,
    pub url: String,
    pub context: String,
    pub credential: String,
    pub job: String,
    pub state: String,
    pub body: String,
    pub version: i32,
    /// Failed deliveries of this version so far.
    pub attempts: i32,
    /// When this version was written.
    #[sqlx(rename = "updatedat")]
    pub updated_at: i32,
    /// The forge's id of what this row made (a GitHub check run), once
    /// known.
    #[sqlx(rename = "remoteid")]
    pub remote_id: Option<i64>,
}

/// Which due states to take.
#[derive(Clone, Copy, Debug)]
pub struct Lease<'a> {
    pub now: i32,
    /// Until when they are taken: another reporter does not take them,
    /// and a reporter that dies with them in flight leaves them due again
    /// then.
    pub until: i32,
    pub limit: i64,
    /// `forge credential` pairs held back (rate-limited): their states
    /// wait.
    pub held: &'a [String],
    /// Statuses in flight here: a newer version waits for the older's
    /// answer, so a forge never gets them out of order.
    pub busy: &'a [i32],
}

/// Up to `lease.limit` states due at `lease.now`, oldest first, leased.
pub async fn lease_due(pool: &PgPool, lease: Lease<'_>) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "update CommitStatuses s set nextAttempt = $2 \
         from (select id from CommitStatuses \
               where sentVersion is distinct from version and not dropped and nextAttempt <= $1 \
                 and not ((forge || ' ' || credential) = any($4)) and not (id = any($5)) \
               order by nextAttempt, id limit $3 for update skip locked) due \
         where s.id = due.id \
         returning s.id, s.forge, s.url, s.context, s.credential, s.job, s.state, s.body, s.version, \
           s.attempts, s.updatedAt, s.remoteId",
    )
    .bind(lease.now)
    .bind(lease.until)
    .bind(lease.limit)
    .bind(lease.held)
    .bind(lease.busy)
    .fetch_all(pool)
    .await
}

/// Records the forge's id of what status `id` made (a check run).
pub async fn set_remote_id(pool: &PgPool, id: i32, remote: i64) -> Result<(), sqlx::Error> {
    sqlx::query("update CommitStatuses set remoteId = $2 where id = $1")
        .bind(id)
        .bind(remote)
        .execute(pool)
        .await?;
    Ok(())
}

/// The build whose status row of `forge` is `id` (the external id a
/// check run carries) or whose check run is `remote`.
pub async fn build_of(
    pool: &PgPool,
    forge: &str,
    id: Option<i32>,
    remote: Option<i64>,
) -> Result<Option<BuildId>, sqlx::Error> {
    let build: Option<Option<BuildId>> = sqlx::query_scalar(
        "select build from CommitStatuses where forge = $1 and (id = $2 or remoteId = $3) \
         order by id limit 1",
    )
    .bind(forge)
    .bind(id)
    .bind(remote)
    .fetch_optional(pool)
    .await?;
    Ok(build.flatten())
}

/// Records that the forge accepted version `version` of status `id` at
/// `now`. A newer version written meanwhile stays due.
pub async fn delivered(pool: &PgPool, id: i32, version: i32, now: i32) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update CommitStatuses set sentVersion = $2, sentAt = $3, lastError = null, \
           attempts = case when version = $2 then 0 else attempts end, \
           nextAttempt = case when version = $2 then nextAttempt else $3 end \
         where id = $1",
    )
    .bind(id)
    .bind(version)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// How a delivery failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again at the given time.
    RetryAt(i32),
    /// Given up until the admin tries again.
    Dropped,
}

/// Records that version `version` of status `id` was not delivered, with
/// `error`. When a newer version was written meanwhile, that one is due
/// at once instead, with a clean count.
pub async fn failed(
    pool: &PgPool,
    id: i32,
    version: i32,
    error: &str,
    failure: Failure,
    now: i32,
) -> Result<(), sqlx::Error> {
    let (retry_at, dropped) = match failure {
        Failure::RetryAt(at) => (at, false),
        Failure::Dropped => (now, true),
    };
    sqlx::query(
        "update CommitStatuses set lastError = $3, \
           attempts = case when version = $2 then attempts + 1 else 0 end, \
           nextAttempt = case when version = $2 then $4 else $6 end, \
           dropped = case when version = $2 then $5 else false end \
         where id = $1",
    )
    .bind(id)
    .bind(version)
    .bind(error)
    .bind(retry_at)
    .bind(dropped)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Seconds from `now` until the next state is due, leaving out `held`
/// credentials and `busy` statuses (as `Lease`): 0 when one is overdue,
/// `None` when there is none.
pub async fn seconds_to_next(
    pool: &PgPool,
    now: i32,
    held: &[String],
    busy: &[i32],
) -> Result<Option<i64>, sqlx::Error> {
    let next: Option<i32> = sqlx::query_scalar(
        "select min(nextAttempt) from CommitStatuses \
         where sentVersion is distinct from version and not dropped \
           and not ((forge || ' ' || credential) = any($1)) and not (id = any($2))",
    )
    .bind(held)
    .bind(busy)
    .fetch_one(pool)
    .await?;
    Ok(next.map(|at| i64::from(at.saturating_sub(now)).max(0)))
}

/// A status as the build page shows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct StatusRow {
    pub id: i32,
    pub forge: String,
    pub url: String,
    pub context: String,
    pub state: String,
    pub build: Option<BuildId>,
    pub eval: Option<EvalId>,
    /// Whether the forge has the current state.
    pub sent: bool,
    #[sqlx(rename = "sentat")]
    #[serde(rename = "sentAt")]
    pub sent_at: Option<i32>,
    pub attempts: i32,
    /// When the next attempt is due (for a state not yet sent).
    #[sqlx(rename = "nextattempt")]
    #[serde(rename = "nextAttempt")]
    pub next_attempt: i32,
    #[sqlx(rename = "lasterror")]
    #[serde(rename = "lastError")]
    pub last_error: Option<String>,
    pub dropped: bool,
}

/// The statuses written for `build`, by context.
pub async fn of_build(pool: &PgPool, build: BuildId) -> Result<Vec<StatusRow>, sqlx::Error> {
    listed(pool, Some(build), None).await
}

/// The statuses written for evaluation `eval` itself.
pub async fn of_eval(pool: &PgPool, eval: EvalId) -> Result<Vec<StatusRow>, sqlx::Error> {
    listed(pool, None, Some(eval)).await
}

async fn listed(
    pool: &PgPool,
    build: Option<BuildId>,
    eval: Option<EvalId>,
) -> Result<Vec<StatusRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, forge, url, context, state, build, eval, \
           sentVersion is not distinct from version as sent, sentAt, attempts, nextAttempt, \
           lastError, dropped \
         from CommitStatuses \
         where ($1::integer is null or build = $1) \
           and ($2::integer is null or (eval = $2 and build is null)) \
         order by url, context",
    )
    .bind(build)
    .bind(eval)
    .fetch_all(pool)
    .await
}

/// Makes status `id` of `build`, given up, due again at `now` with a
/// clean count, and tells the notify role; whether there was such a
/// status.
pub async fn retry_dropped(
    pool: &PgPool,
    id: i32,
    build: BuildId,
    now: i32,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "update CommitStatuses set dropped = false, attempts = 0, nextAttempt = $3 \
         where id = $1 and build = $2 and dropped",
    )
    .bind(id)
    .bind(build)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if done {
        crate::notify::send(&mut tx, crate::notify::NOTIFICATIONS_DUE, "").await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// What the status plugins need of a build.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildFacts {
    pub id: BuildId,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub system: String,
    pub finished: bool,
    /// `Builds.buildStatus`, once finished.
    pub status: Option<i32>,
    /// A step of it has started.
    pub started: bool,
    /// The derivation of its last failed step (whose log says why).
    pub failed_drv: Option<String>,
}

impl BuildFacts {
    /// `project:jobset:job`.
    pub fn full_name(&self) -> String {
        format!("{}:{}:{}", self.project, self.jobset, self.job)
    }
}

/// `build`'s facts, read under a share lock held until `conn`'s
/// transaction ends: the build cannot finish (or restart) in between, so
/// a status derived from this reading is never older than the build.
pub async fn build_facts_locked(
    conn: &mut PgConnection,
    build: BuildId,
) -> Result<Option<BuildFacts>, sqlx::Error> {
    sqlx::query_as(
        "select b.id, j.project, j.name as jobset, b.job, b.system, b.finished = 1 as finished, \
           case when b.finished = 1 then b.buildStatus end as status, \
           exists (select 1 from BuildSteps s where s.build = b.id) as started, \
           (select s.drvPath from BuildSteps s where s.build = b.id and s.status is not null \
              and s.status <> 0 order by s.stepnr desc limit 1) as failed_drv \
         from Builds b join Jobsets j on j.id = b.jobset_id where b.id = $1 for share of b",
    )
    .bind(build)
    .fetch_optional(conn)
    .await
}

/// An input of an evaluation, as the status plugins read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInput {
    pub name: String,
    pub kind: String,
    pub uri: Option<String>,
    pub revision: Option<String>,
    pub value: Option<String>,
    /// Whether the jobset's current input of that name has
    /// `emailResponsible` set; `None` when the jobset has no such input
    /// any more.
    pub responsible: Option<bool>,
}

/// An evaluation a build belongs to: its locked flake, or its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub eval: EvalId,
    pub project: String,
    pub jobset: String,
    pub flake: Option<String>,
    pub inputs: Vec<SourceInput>,
}

impl Source {
    /// The input called `name` (its first alternative).
    pub fn input(&self, name: &str) -> Option<&SourceInput> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The value of the string input called `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.input(name).and_then(|i| i.value.as_deref())
    }
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    eval: EvalId,
    project: String,
    jobset: String,
    flake: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    uri: Option<String>,
    revision: Option<String>,
    value: Option<String>,
    responsible: Option<bool>,
}

/// The evaluations `build` belongs to (only `only`, when given), oldest
/// first, with their inputs' first alternatives.
pub async fn sources(
    conn: &mut PgConnection,
    build: BuildId,
    only: Option<EvalId>,
) -> Result<Vec<Source>, sqlx::Error> {
    let rows: Vec<SourceRow> = sqlx::query_as(
        "select e.id as eval, j.project, j.name as jobset, e.flake, i.name, i.type as kind, i.uri, \
           i.revision, i.value, ji.emailResponsible = 1 as responsible \
         from JobsetEvalMembers m \
         join JobsetEvals e on e.id = m.eval \
         join Jobsets j on j.id = e.jobset_id \
         left join JobsetEvalInputs i on i.eval = e.id and i.altNr = 0 \
         left join JobsetInputs ji on ji.project = j.project and ji.jobset = j.name and ji.name = i.name \
         where m.build = $1 and ($2::integer is null or e.id = $2) \
         order by e.id, i.name",
    )
    .bind(build)
    .bind(only)
    .fetch_all(conn)
    .await?;
    Ok(group_sources(rows))
}

/// Evaluation `eval` itself, as `sources` gives it.
pub async fn source_of_eval(
    conn: &mut PgConnection,
    eval: EvalId,
) -> Result<Option<Source>, sqlx::Error> {
    let rows: Vec<SourceRow> = sqlx::query_as(
        "select e.id as eval, j.project, j.name as jobset, e.flake, i.name, i.type as kind, i.uri, \
           i.revision, i.value, ji.emailResponsible = 1 as responsible \
         from JobsetEvals e \
         join Jobsets j on j.id = e.jobset_id \
         left join JobsetEvalInputs i on i.eval = e.id and i.altNr = 0 \
         left join JobsetInputs ji on ji.project = j.project and ji.jobset = j.name and ji.name = i.name \
         where e.id = $1 order by i.name",
    )
    .bind(eval)
    .fetch_all(conn)
    .await?;
    Ok(group_sources(rows).pop())
}

fn group_sources(rows: Vec<SourceRow>) -> Vec<Source> {
    let mut sources: Vec<Source> = Vec::new();
    for row in rows {
        if sources.last().is_none_or(|s| s.eval != row.eval) {
            sources.push(Source {
                eval: row.eval,
                project: row.project,
                jobset: row.jobset,
                flake: row.flake,
                inputs: Vec::new(),
            });
        }
        if let (Some(source), Some(name), Some(kind)) = (sources.last_mut(), row.name, row.kind) {
            source.inputs.push(SourceInput {
                name,
                kind,
                uri: row.uri,
                revision: row.revision,
                value: row.value,
                responsible: row.responsible,
            });
        }
    }
    sources
}

/// What an evaluation fetched, by its trace id (see
/// `evals::record_checkout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    pub project: String,
    pub jobset: String,
    pub flake: Option<String>,
    pub inputs: Vec<SourceInput>,
}

/// The checkout of evaluation `trace`, if it got that far.
pub async fn checkout(pool: &PgPool, trace: &str) -> Result<Option<Checkout>, sqlx::Error> {
    let row: Option<(String, String, Option<String>, String)> = sqlx::query_as(
        "select j.project, j.name, c.flake, c.inputs::text from JobsetCheckouts c \
         join Jobsets j on j.id = c.jobset_id where c.traceId = $1",
    )
    .bind(trace)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(project, jobset, flake, inputs)| {
        let inputs: Vec<serde_json::Value> = serde_json::from_str(&inputs).unwrap_or_default();
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|s| s.as_str()).map(String::from);
        Checkout {
            project,
            jobset,
            flake,
            inputs: inputs
                .iter()
                .map(|i| SourceInput {
                    name: text(i, "name").unwrap_or_default(),
                    kind: text(i, "type").unwrap_or_default(),
                    uri: text(i, "uri"),
                    revision: text(i, "revision"),
                    value: text(i, "value"),
                    responsible: None,
                })
                .collect(),
        }
    }))
}

/// How far evaluation `eval`'s builds are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Progress {
    pub total: i64,
    pub unfinished: i64,
    pub failed: i64,
}

/// The builds of evaluation `eval`: how many, unfinished, and finished
/// other than successfully.
pub async fn eval_progress(pool: &PgPool, eval: EvalId) -> Result<Progress, sqlx::Error> {
    sqlx::query_as(
        "select count(*) as total, count(*) filter (where b.finished = 0) as unfinished, \
           count(*) filter (where b.finished = 1 and b.buildStatus <> $2) as failed \
         from JobsetEvalMembers m join Builds b on b.id = m.build where m.eval = $1",
    )
    .bind(eval)
    .bind(crate::status::BuildStatus::Succeeded.code())
    .fetch_one(pool)
    .await
}
