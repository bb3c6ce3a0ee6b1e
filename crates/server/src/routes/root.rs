//! Root-level pages: projects, queue, running builds, evaluations, steps,
//! search.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;
use crate::views::{self, BUILD_SUMMARY_COLUMNS, BuildSummary};

pub async fn index(State(state): State<AppState>, viewer: Viewer) -> ApiResult<Page> {
    let projects = views::projects(&state.pool, viewer.is_admin()).await?;
    Ok(Page::new("overview", projects))
}

pub async fn robots() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        "User-agent: *\nDisallow: /\n",
    )
        .into_response()
}

pub async fn queue(State(state): State<AppState>) -> ApiResult<Page> {
    let sql = format!(
        "select {BUILD_SUMMARY_COLUMNS} from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 0 order by b.globalPriority desc, b.id"
    );
    let builds: Vec<BuildSummary> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&state.pool)
        .await?;
    Ok(Page::new("queue", builds))
}

/// Builds with a running step, and the step.
pub async fn status(State(state): State<AppState>) -> ApiResult<Page> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "select json_build_object('id', b.id, 'project', j.project, 'jobset', j.name, 'job', b.job, \
         'system', b.system, 'nixname', b.nixName, 'timestamp', b.timestamp, 'priority', b.priority, \
         'stepnr', s.stepnr, 'drvpath', s.drvPath, 'machine', s.machine, 'busy', s.busy, \
         'type', s.type, 'starttime', s.startTime)::text \
         from BuildSteps s join Builds b on b.id = s.build join Jobsets j on j.id = b.jobset_id \
         where s.busy != 0 order by s.machine, s.stepnr",
    )
    .fetch_all(&state.pool)
    .await?;
    let steps: Vec<Value> = rows
        .iter()
        .filter_map(|(r,)| serde_json::from_str(r).ok())
        .collect();
    Ok(Page::new("status", steps))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub page: Option<String>,
}

/// The page number of `?page=N` (1 when absent or nonsense).
pub fn page_number(q: &PageQuery) -> i64 {
    q.page
        .as_deref()
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| (1..=1_000_000).contains(p))
        .unwrap_or(1)
}

pub const PER_PAGE: i64 = 20;

/// Every evaluation with new builds, newest first, 20 per page.
pub async fn evals(State(state): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult<Page> {
    let body = views::evals_page(&state.pool, None, page_number(&q), PER_PAGE).await?;
    Ok(Page::value("evals", body))
}

/// Recently finished steps, 20 per page.
pub async fn steps(State(state): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult<Page> {
    let page = page_number(&q);
    let rows: Vec<(String,)> = sqlx::query_as(
        "select json_build_object('build', s.build, 'stepnr', s.stepnr, 'drvpath', s.drvPath, \
         'system', s.system, 'machine', s.machine, 'status', s.status, 'starttime', s.startTime, \
         'stoptime', s.stopTime, 'type', s.type)::text \
         from BuildSteps s where s.busy = $3 and s.stopTime is not null \
         order by s.stopTime desc offset $1 limit $2",
    )
    .bind((page - 1) * PER_PAGE)
    .bind(PER_PAGE)
    .bind(hydra_db::status::Busy::NotRunning)
    .fetch_all(&state.pool)
    .await?;
    let steps: Vec<Value> = rows
        .iter()
        .filter_map(|(r,)| serde_json::from_str(r).ok())
        .collect();
    let mut body = serde_json::Map::new();
    body.insert("steps".into(), Value::Array(steps));
    if page > 1 {
        body.insert("previous".into(), json!(format!("?page={}", page - 1)));
    }
    body.insert("next".into(), json!(format!("?page={}", page + 1)));
    Ok(Page::value("steps", Value::Object(body)))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub query: Option<String>,
    pub limit: Option<String>,
}

/// Hydra's search: names, descriptions, current jobs, output and drv
/// paths; hidden projects and jobsets are left out.
pub async fn search(
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Page> {
    let query = q.query.unwrap_or_default();
    if query.is_empty() {
        return Err(ApiError::bad_request("Query is empty."));
    }
    if !query
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-/.".contains(c))
    {
        return Err(ApiError::bad_request("Invalid character in query."));
    }
    let limit = q
        .limit
        .as_deref()
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(10)
        .clamp(1, 50);
    let pattern = format!("%{query}%");
    let mut tx = state.pool.begin().await?;
    sqlx::query("set local statement_timeout = 20000")
        .execute(&mut *tx)
        .await?;
    let projects: Vec<String> = sqlx::query_scalar(
        "select name from Projects where hidden = 0 and (name ilike $1 or displayName ilike $1 or description ilike $1) \
         order by name limit $2",
    )
    .bind(&pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let projects = {
        let mut out = Vec::new();
        for name in projects {
            if let Some(p) = views::project(&state.pool, &name).await? {
                out.push(p);
            }
        }
        out
    };
    let jobsets: Vec<(String, String)> = sqlx::query_as(
        "select j.project, j.name from Jobsets j join Projects p on p.name = j.project \
         where j.hidden = 0 and p.hidden = 0 and (j.name ilike $1 or j.description ilike $1) \
         order by j.project, j.name limit $2",
    )
    .bind(&pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let builds: Vec<i32> = sqlx::query_scalar(
        "select distinct b.id from Builds b join BuildOutputs o on o.build = b.id \
         join Jobsets j on j.id = b.jobset_id join Projects p on p.name = j.project \
         where j.hidden = 0 and p.hidden = 0 and o.path ilike $1 order by b.id desc limit $2",
    )
    .bind(&pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let builds_drv: Vec<i32> = sqlx::query_scalar(
        "select b.id from Builds b join Jobsets j on j.id = b.jobset_id join Projects p on p.name = j.project \
         where j.hidden = 0 and p.hidden = 0 and b.drvPath ilike $1 order by b.id desc limit $2",
    )
    .bind(&pattern)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut jobset_objects = Vec::new();
    for (project, name) in jobsets {
        if let Some(j) = views::jobset(&state.pool, &project, &name).await? {
            jobset_objects.push(j);
        }
    }
    Ok(Page::value(
        "search",
        json!({
            "projects": projects,
            "jobsets": jobset_objects,
            "builds": views::builds_json(&state.pool, &builds).await?,
            "buildsdrv": views::builds_json(&state.pool, &builds_drv).await?,
        }),
    ))
}
