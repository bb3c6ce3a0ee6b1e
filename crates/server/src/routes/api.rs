//! `/api/*`: Hydra's small JSON endpoints for scripts.

use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct BuildFilter {
    pub nr: Option<String>,
    pub project: Option<String>,
    pub jobset: Option<String>,
    pub job: Option<String>,
    pub system: Option<String>,
    pub period: Option<String>,
}

const MAX_NR: i64 = 1000;

fn nr(filter: &BuildFilter) -> ApiResult<i64> {
    let raw = filter
        .nr
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("Parameter ‘nr’ is required."))?;
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.min(MAX_NR))
        .ok_or_else(|| ApiError::bad_request(format!("Invalid value ‘{raw}’ for ‘nr’.")))
}

const FILTER: &str = "($1::text is null or j.project = $1) and ($2::text is null or j.name = $2) \
    and ($3::text is null or b.job = $3) and ($4::text is null or b.system = $4)";

pub async fn latest_builds(
    State(state): State<AppState>,
    Query(f): Query<BuildFilter>,
) -> ApiResult<Page> {
    let nr = nr(&f)?;
    let sql = format!(
        "select coalesce(json_agg(json_build_object('id', x.id, 'project', x.project, 'jobset', x.jobset, \
         'job', x.job, 'system', x.system, 'nixname', x.nixName, 'finished', x.finished, \
         'timestamp', x.timestamp, 'buildstatus', x.buildStatus) order by x.id desc), '[]'::json)::text \
         from (select b.id, j.project, j.name as jobset, b.job, b.system, b.nixName, b.finished, b.timestamp, \
               b.buildStatus from Builds b join Jobsets j on j.id = b.jobset_id \
               where b.finished = 1 and {FILTER} order by b.id desc limit $5) x"
    );
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&f.project)
        .bind(&f.jobset)
        .bind(&f.job)
        .bind(&f.system)
        .bind(nr)
        .fetch_one(&state.pool)
        .await?;
    Ok(Page::value("api", parse(&text)?))
}

pub async fn queue(State(state): State<AppState>, Query(f): Query<BuildFilter>) -> ApiResult<Page> {
    let nr = nr(&f)?;
    let text: String = sqlx::query_scalar(
        "select coalesce(json_agg(json_build_object('id', x.id, 'project', x.project, 'jobset', x.jobset, \
         'job', x.job, 'system', x.system, 'nixname', x.nixName, 'finished', x.finished, \
         'timestamp', x.timestamp, 'priority', x.priority) order by x.globalPriority desc, x.priority desc, x.id), \
         '[]'::json)::text \
         from (select b.id, j.project, j.name as jobset, b.job, b.system, b.nixName, b.finished, b.timestamp, \
               b.priority, b.globalPriority from Builds b join Jobsets j on j.id = b.jobset_id \
               where b.finished = 0 order by b.globalPriority desc, b.priority desc, b.id limit $1) x",
    )
    .bind(nr)
    .fetch_one(&state.pool)
    .await?;
    Ok(Page::value("api", parse(&text)?))
}

pub async fn nr_queue(State(state): State<AppState>) -> ApiResult<Page> {
    let n: i64 = sqlx::query_scalar("select count(*) from Builds where finished = 0")
        .fetch_one(&state.pool)
        .await?;
    Ok(Page::value("api", Value::from(n)))
}

/// Finished builds per hour or day over the last `nr` periods, oldest first.
pub async fn nr_builds(
    State(state): State<AppState>,
    Query(f): Query<BuildFilter>,
) -> ApiResult<Page> {
    let nr = nr(&f)?;
    let period: i64 = match f.period.as_deref() {
        Some("hour") => 3600,
        Some("day") => 86400,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid period ‘{}’: use ‘hour’ or ‘day’.",
                other.unwrap_or("")
            )));
        }
    };
    let now = i64::from(hydra_db::now());
    let last = now - now % period;
    let first = last - (nr - 1) * period;
    let sql = format!(
        "select (b.timestamp - b.timestamp % $5)::bigint, count(*) from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and b.timestamp >= $6 and {FILTER} group by 1"
    );
    let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&f.project)
        .bind(&f.jobset)
        .bind(&f.job)
        .bind(&f.system)
        .bind(period as i32)
        .bind(first as i32)
        .fetch_all(&state.pool)
        .await?;
    let counts: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
    let series: Vec<i64> = (0..nr)
        .map(|i| counts.get(&(first + i * period)).copied().unwrap_or(0))
        .collect();
    Ok(Page::new("api", series))
}

#[derive(Debug, Deserialize)]
pub struct ProjectQuery {
    pub project: Option<String>,
}

pub async fn jobsets(
    State(state): State<AppState>,
    Query(q): Query<ProjectQuery>,
) -> ApiResult<Page> {
    let project = q
        .project
        .ok_or_else(|| ApiError::bad_request("Parameter ‘project’ is required."))?;
    let text: String = sqlx::query_scalar(
        "select coalesce(json_agg(json_build_object('project', j.project, 'name', j.name, \
         'nrscheduled', coalesce(c.scheduled, 0), 'nrsucceeded', coalesce(c.succeeded, 0), \
         'nrfailed', coalesce(c.failed, 0), 'nrtotal', coalesce(c.total, 0), \
         'lastcheckedtime', j.lastCheckedTime, 'starttime', j.startTime, 'checkinterval', j.checkInterval, \
         'triggertime', j.triggerTime, 'fetcherrormsg', j.fetchErrorMsg, 'errortime', j.errorTime, \
         'haserrormsg', coalesce(j.errorMsg, '') <> '') order by j.name), '[]'::json)::text \
         from Jobsets j left join (select jobset_id, \
              count(*) filter (where finished = 0) as scheduled, \
              count(*) filter (where finished = 1 and buildStatus = $2) as succeeded, \
              count(*) filter (where finished = 1 and buildStatus <> $2) as failed, \
              count(*) as total \
              from Builds where isCurrent = 1 group by jobset_id) c on c.jobset_id = j.id \
         where j.project = $1",
    )
    .bind(&project)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_one(&state.pool)
    .await?;
    Ok(Page::value("api", parse(&text)?))
}

#[derive(Debug, Deserialize)]
pub struct PushQuery {
    pub jobsets: Option<String>,
    pub repos: Option<String>,
    pub force: Option<String>,
}

/// Triggers evaluations of the named jobsets and of the enabled jobsets
/// with an input on one of the repositories.
pub async fn push(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PushQuery>,
) -> ApiResult<Page> {
    viewer.require_login()?;
    let force = q.force.is_some();
    let mut targets: Vec<(String, String, i32)> = Vec::new();
    for spec in q
        .jobsets
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((project, jobset)) = spec.split_once(':') else {
            return Err(ApiError::bad_request(format!(
                "Invalid jobset ‘{spec}’: use ‘project:jobset’."
            )));
        };
        let enabled: Option<i32> =
            sqlx::query_scalar("select enabled from Jobsets where project = $1 and name = $2")
                .bind(project)
                .bind(jobset)
                .fetch_optional(&state.pool)
                .await?;
        let enabled = enabled.ok_or_else(|| {
            ApiError::not_found(format!("Jobset ‘{project}:{jobset}’ doesn't exist."))
        })?;
        targets.push((project.into(), jobset.into(), enabled));
    }
    let repos: Vec<String> = q
        .repos
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if !repos.is_empty() {
        let by_repo: Vec<(String, String, i32)> = sqlx::query_as(
            "select distinct j.project, j.name, j.enabled from Jobsets j \
             join JobsetInputAlts a on a.project = j.project and a.jobset = j.name \
             where j.enabled <> 0 and a.value = any($1) order by 1, 2",
        )
        .bind(&repos)
        .fetch_all(&state.pool)
        .await?;
        targets.extend(by_repo);
    }
    let mut triggered = Vec::new();
    for (project, jobset, enabled) in targets {
        if enabled == 0 && !force {
            continue;
        }
        viewer
            .require_role_or_owner(&state.pool, "eval-jobset", &project)
            .await?;
        let name = format!("{project}:{jobset}");
        if triggered.contains(&name) {
            continue;
        }
        sqlx::query(
            "update Jobsets set triggerTime = $3, forceEval = (coalesce(forceEval, false) or $4) where project = $1 and name = $2",
        )
        .bind(&project)
        .bind(&jobset)
        .bind(hydra_db::now())
        .bind(force)
        .execute(&state.pool)
        .await?;
        triggered.push(name);
    }
    Ok(Page::value("api", json!({ "jobsetsTriggered": triggered })))
}

fn parse(text: &str) -> ApiResult<Value> {
    serde_json::from_str(text).map_err(|e| ApiError::Internal(e.to_string()))
}
