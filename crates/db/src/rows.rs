//! Row types of the main tables, with the Rust types that match the column
//! types exactly (`integer` → `i32`, `bigint` → `i64`, nullable → `Option`),
//! and the queries that read them by key. Timestamps are Unix seconds.

use sqlx::{FromRow, PgConnection};

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct User {
    #[sqlx(rename = "username")]
    pub name: String,
    #[sqlx(rename = "fullname")]
    pub full_name: Option<String>,
    #[sqlx(rename = "emailaddress")]
    pub email_address: String,
    pub password: String,
    #[sqlx(rename = "emailonerror")]
    pub email_on_error: i32,
    #[sqlx(rename = "type")]
    pub kind: String,
    #[sqlx(rename = "publicdashboard")]
    pub public_dashboard: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Project {
    pub name: String,
    #[sqlx(rename = "displayname")]
    pub display_name: String,
    pub description: Option<String>,
    pub enabled: i32,
    pub hidden: i32,
    pub owner: String,
    pub homepage: Option<String>,
    pub declfile: Option<String>,
    pub decltype: Option<String>,
    pub declvalue: Option<String>,
    pub enable_dynamic_run_command: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Jobset {
    pub name: String,
    pub id: crate::ids::JobsetId,
    pub project: String,
    pub description: Option<String>,
    #[sqlx(rename = "nixexprinput")]
    pub nix_expr_input: Option<String>,
    #[sqlx(rename = "nixexprpath")]
    pub nix_expr_path: Option<String>,
    #[sqlx(rename = "errormsg")]
    pub error_msg: Option<String>,
    #[sqlx(rename = "errortime")]
    pub error_time: Option<i32>,
    #[sqlx(rename = "lastcheckedtime")]
    pub last_checked_time: Option<i32>,
    #[sqlx(rename = "triggertime")]
    pub trigger_time: Option<i32>,
    pub enabled: i32,
    #[sqlx(rename = "enableemail")]
    pub enable_email: i32,
    pub hidden: i32,
    #[sqlx(rename = "emailoverride")]
    pub email_override: String,
    pub keepnr: i32,
    #[sqlx(rename = "checkinterval")]
    pub check_interval: i32,
    #[sqlx(rename = "schedulingshares")]
    pub scheduling_shares: i32,
    #[sqlx(rename = "fetcherrormsg")]
    pub fetch_error_msg: Option<String>,
    #[sqlx(rename = "forceeval")]
    pub force_eval: Option<bool>,
    #[sqlx(rename = "starttime")]
    pub start_time: Option<i32>,
    #[sqlx(rename = "type")]
    pub kind: i32,
    pub flake: Option<String>,
    pub enable_dynamic_run_command: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct JobsetInput {
    pub project: String,
    pub jobset: String,
    pub name: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    #[sqlx(rename = "emailresponsible")]
    pub email_responsible: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct JobsetInputAlt {
    pub project: String,
    pub jobset: String,
    pub input: String,
    pub altnr: i32,
    pub value: Option<String>,
    pub revision: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Build {
    pub id: i32,
    pub finished: i32,
    pub timestamp: i32,
    pub jobset_id: i32,
    pub job: String,
    #[sqlx(rename = "nixname")]
    pub nix_name: Option<String>,
    pub description: Option<String>,
    #[sqlx(rename = "drvpath")]
    pub drv_path: String,
    pub system: String,
    pub license: Option<String>,
    pub homepage: Option<String>,
    pub maintainers: Option<String>,
    #[sqlx(rename = "maxsilent")]
    pub max_silent: Option<i32>,
    pub timeout: Option<i32>,
    #[sqlx(rename = "ischannel")]
    pub is_channel: i32,
    #[sqlx(rename = "iscurrent")]
    pub is_current: Option<i32>,
    pub priority: i32,
    #[sqlx(rename = "globalpriority")]
    pub global_priority: i32,
    #[sqlx(rename = "starttime")]
    pub start_time: Option<i32>,
    #[sqlx(rename = "stoptime")]
    pub stop_time: Option<i32>,
    #[sqlx(rename = "iscachedbuild")]
    pub is_cached_build: Option<i32>,
    #[sqlx(rename = "buildstatus")]
    pub build_status: Option<i32>,
    pub size: Option<i64>,
    #[sqlx(rename = "closuresize")]
    pub closure_size: Option<i64>,
    #[sqlx(rename = "releasename")]
    pub release_name: Option<String>,
    pub keep: i32,
    #[sqlx(rename = "notificationpendingsince")]
    pub notification_pending_since: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct BuildOutput {
    pub build: i32,
    pub name: String,
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct BuildStep {
    pub build: i32,
    pub stepnr: i32,
    #[sqlx(rename = "type")]
    pub kind: i32,
    #[sqlx(rename = "drvpath")]
    pub drv_path: String,
    pub busy: i32,
    pub status: Option<i32>,
    #[sqlx(rename = "errormsg")]
    pub error_msg: Option<String>,
    #[sqlx(rename = "starttime")]
    pub start_time: Option<i32>,
    #[sqlx(rename = "stoptime")]
    pub stop_time: Option<i32>,
    pub machine: String,
    pub system: Option<String>,
    #[sqlx(rename = "propagatedfrom")]
    pub propagated_from: Option<i32>,
    pub overhead: Option<i32>,
    #[sqlx(rename = "timesbuilt")]
    pub times_built: Option<i32>,
    #[sqlx(rename = "isnondeterministic")]
    pub is_non_deterministic: Option<bool>,
    #[sqlx(rename = "resolveddrvpath")]
    pub resolved_drv_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct BuildStepOutput {
    pub build: i32,
    pub stepnr: i32,
    pub name: String,
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct BuildProduct {
    pub build: i32,
    pub productnr: i32,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub subtype: String,
    #[sqlx(rename = "filesize")]
    pub file_size: Option<i64>,
    pub sha256hash: Option<String>,
    pub path: Option<String>,
    pub name: String,
    #[sqlx(rename = "defaultpath")]
    pub default_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, FromRow)]
pub struct BuildMetric {
    pub build: i32,
    pub name: String,
    pub unit: Option<String>,
    pub value: f64,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub timestamp: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct JobsetEval {
    pub id: i32,
    pub jobset_id: i32,
    pub evaluationerror_id: Option<i32>,
    pub timestamp: i32,
    #[sqlx(rename = "checkouttime")]
    pub checkout_time: i32,
    #[sqlx(rename = "evaltime")]
    pub eval_time: i32,
    #[sqlx(rename = "hasnewbuilds")]
    pub has_new_builds: i32,
    pub hash: String,
    #[sqlx(rename = "nrbuilds")]
    pub nr_builds: Option<i32>,
    #[sqlx(rename = "nrsucceeded")]
    pub nr_succeeded: Option<i32>,
    pub flake: Option<String>,
    #[sqlx(rename = "nixexprinput")]
    pub nix_expr_input: Option<String>,
    #[sqlx(rename = "nixexprpath")]
    pub nix_expr_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct JobsetEvalInput {
    pub eval: i32,
    pub name: String,
    #[sqlx(rename = "altnr")]
    pub alt_nr: i32,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub uri: Option<String>,
    pub revision: Option<String>,
    #[sqlx(rename = "shortrevlength")]
    pub short_rev_length: Option<i16>,
    pub value: Option<String>,
    pub dependency: Option<i32>,
    pub path: Option<String>,
    pub sha256hash: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct JobsetEvalMember {
    pub eval: i32,
    pub build: i32,
    #[sqlx(rename = "isnew")]
    pub is_new: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct EvaluationError {
    pub id: i32,
    #[sqlx(rename = "errormsg")]
    pub error_msg: Option<String>,
    #[sqlx(rename = "errortime")]
    pub error_time: Option<i32>,
}

pub async fn user(conn: &mut PgConnection, name: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "select userName, fullName, emailAddress, password, emailOnError, type, publicDashboard \
         from Users where userName = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

pub async fn project(conn: &mut PgConnection, name: &str) -> Result<Option<Project>, sqlx::Error> {
    sqlx::query_as(
        "select name, displayName, description, enabled, hidden, owner, homepage, declfile, decltype, \
         declvalue, enable_dynamic_run_command from Projects where name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

macro_rules! jobset_columns {
    () => {
        "name, id, project, description, nixExprInput, nixExprPath, errorMsg, errorTime, lastCheckedTime, \
         triggerTime, enabled, enableEmail, hidden, emailOverride, keepnr, checkInterval, schedulingShares, \
         fetchErrorMsg, forceEval, startTime, type, flake, enable_dynamic_run_command"
    };
}

pub async fn jobset(
    conn: &mut PgConnection,
    project: &str,
    name: &str,
) -> Result<Option<Jobset>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        jobset_columns!(),
        " from Jobsets where project = $1 and name = $2"
    ))
    .bind(project)
    .bind(name)
    .fetch_optional(conn)
    .await
}

pub async fn jobset_by_id(
    conn: &mut PgConnection,
    id: crate::ids::JobsetId,
) -> Result<Option<Jobset>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        jobset_columns!(),
        " from Jobsets where id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn jobset_inputs(
    conn: &mut PgConnection,
    project: &str,
    jobset: &str,
) -> Result<Vec<(JobsetInput, Vec<JobsetInputAlt>)>, sqlx::Error> {
    let inputs: Vec<JobsetInput> = sqlx::query_as(
        "select project, jobset, name, type, emailResponsible from JobsetInputs \
         where project = $1 and jobset = $2 order by name",
    )
    .bind(project)
    .bind(jobset)
    .fetch_all(&mut *conn)
    .await?;
    let alts: Vec<JobsetInputAlt> = sqlx::query_as(
        "select project, jobset, input, altnr, value, revision from JobsetInputAlts \
         where project = $1 and jobset = $2 order by input, altnr",
    )
    .bind(project)
    .bind(jobset)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inputs
        .into_iter()
        .map(|input| {
            let mine = alts
                .iter()
                .filter(|a| a.input == input.name)
                .cloned()
                .collect();
            (input, mine)
        })
        .collect())
}

pub async fn build(conn: &mut PgConnection, id: i32) -> Result<Option<Build>, sqlx::Error> {
    sqlx::query_as(
        "select id, finished, timestamp, jobset_id, job, nixName, description, drvPath, system, license, \
         homepage, maintainers, maxsilent, timeout, isChannel, isCurrent, priority, globalPriority, startTime, \
         stopTime, isCachedBuild, buildStatus, size, closureSize, releaseName, keep, notificationPendingSince \
         from Builds where id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn build_outputs(
    conn: &mut PgConnection,
    build: i32,
) -> Result<Vec<BuildOutput>, sqlx::Error> {
    sqlx::query_as("select build, name, path from BuildOutputs where build = $1 order by name")
        .bind(build)
        .fetch_all(conn)
        .await
}

pub async fn build_steps(
    conn: &mut PgConnection,
    build: i32,
) -> Result<Vec<BuildStep>, sqlx::Error> {
    sqlx::query_as(
        "select build, stepnr, type, drvPath, busy, status, errorMsg, startTime, stopTime, machine, system, \
         propagatedFrom, overhead, timesBuilt, isNonDeterministic, resolvedDrvPath \
         from BuildSteps where build = $1 order by stepnr",
    )
    .bind(build)
    .fetch_all(conn)
    .await
}

pub async fn build_step_outputs(
    conn: &mut PgConnection,
    build: i32,
    stepnr: i32,
) -> Result<Vec<BuildStepOutput>, sqlx::Error> {
    sqlx::query_as(
        "select build, stepnr, name, path from BuildStepOutputs where build = $1 and stepnr = $2 order by name",
    )
    .bind(build)
    .bind(stepnr)
    .fetch_all(conn)
    .await
}

pub async fn build_products(
    conn: &mut PgConnection,
    build: i32,
) -> Result<Vec<BuildProduct>, sqlx::Error> {
    sqlx::query_as(
        "select build, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath \
         from BuildProducts where build = $1 order by productnr",
    )
    .bind(build)
    .fetch_all(conn)
    .await
}

pub async fn build_metrics(
    conn: &mut PgConnection,
    build: i32,
) -> Result<Vec<BuildMetric>, sqlx::Error> {
    sqlx::query_as(
        "select build, name, unit, value, project, jobset, job, timestamp from BuildMetrics \
         where build = $1 order by name",
    )
    .bind(build)
    .fetch_all(conn)
    .await
}

pub async fn jobset_eval(
    conn: &mut PgConnection,
    id: i32,
) -> Result<Option<JobsetEval>, sqlx::Error> {
    sqlx::query_as(
        "select id, jobset_id, evaluationerror_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, \
         nrBuilds, nrSucceeded, flake, nixExprInput, nixExprPath from JobsetEvals where id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn jobset_eval_inputs(
    conn: &mut PgConnection,
    eval: i32,
) -> Result<Vec<JobsetEvalInput>, sqlx::Error> {
    sqlx::query_as(
        "select eval, name, altNr, type, uri, revision, shortRevLength, value, dependency, path, sha256hash \
         from JobsetEvalInputs where eval = $1 order by name, altNr",
    )
    .bind(eval)
    .fetch_all(conn)
    .await
}

pub async fn jobset_eval_members(
    conn: &mut PgConnection,
    eval: i32,
) -> Result<Vec<JobsetEvalMember>, sqlx::Error> {
    sqlx::query_as(
        "select eval, build, isNew from JobsetEvalMembers where eval = $1 order by build",
    )
    .bind(eval)
    .fetch_all(conn)
    .await
}

pub async fn evaluation_error(
    conn: &mut PgConnection,
    id: i32,
) -> Result<Option<EvaluationError>, sqlx::Error> {
    sqlx::query_as("select id, errorMsg, errorTime from EvaluationErrors where id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}
