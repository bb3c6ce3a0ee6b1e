//! `/job/<p>/<j>/<job>`: a job's builds over time, its badge, its
//! Prometheus figures and its series (build times, sizes, metrics), and
//! starring it.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hydra_db::status::BuildStatus;
use serde_json::{Value, json};

use super::form::{self, Body};
use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::params::Params;
use crate::state::AppState;
use crate::views::{BUILD_SUMMARY_COLUMNS, BuildSummary};

/// Points of a series, at most (the most recent).
const SERIES_LIMIT: i64 = 1000;

/// The jobset's id, checked to exist.
async fn jobset_id(state: &AppState, project: &str, jobset: &str) -> ApiResult<i32> {
    let id: Option<i32> =
        sqlx::query_scalar("select id from Jobsets where project = $1 and name = $2")
            .bind(project)
            .bind(jobset)
            .fetch_optional(&state.pool)
            .await?;
    id.ok_or_else(|| ApiError::not_found(format!("Jobset ‘{project}:{jobset}’ doesn't exist.")))
}

async fn summaries(
    state: &AppState,
    jobset: i32,
    job: &str,
    finished: bool,
) -> ApiResult<Vec<BuildSummary>> {
    let sql = format!(
        "select {BUILD_SUMMARY_COLUMNS} from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.jobset_id = $1 and b.job = $2 and b.finished = $3 \
         order by b.id desc limit 10"
    );
    Ok(sqlx::query_as::<_, BuildSummary>(sqlx::AssertSqlSafe(sql))
        .bind(jobset)
        .bind(job)
        .bind(i32::from(finished))
        .fetch_all(&state.pool)
        .await?)
}

/// `/job/<p>/<j>/<job>`: the last ten finished builds, the queued ones,
/// and whether the viewer starred it.
pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, jobset, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    // Hydra answers any job of an existing jobset: a job whose builds are
    // still to come (or whose evaluation failed) has a page too.
    if !super::names::job(&job) {
        return Err(ApiError::not_found(format!(
            "Job ‘{project}:{jobset}:{job}’ doesn't exist."
        )));
    }
    let id = jobset_id(&state, &project, &jobset).await?;
    let finished = summaries(&state, id, &job, true).await?;
    let queued = summaries(&state, id, &job, false).await?;
    let starred = match &viewer.account {
        Some(a) => {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from StarredJobs where userName = $1 and project = $2 \
                 and jobset = $3 and job = $4)",
            )
            .bind(&a.name)
            .bind(&project)
            .bind(&jobset)
            .bind(&job)
            .fetch_one(&state.pool)
            .await?
        }
        None => false,
    };
    Ok(Page::new(
        "job",
        json!({
            "project": project,
            "jobset": jobset,
            "job": job,
            "latestbuilds": finished,
            "queuedbuilds": queued,
            "starred": starred,
        }),
    ))
}

/// The latest finished build's id and status.
async fn latest_finished(
    state: &AppState,
    jobset: i32,
    job: &str,
) -> ApiResult<Option<(i32, Option<i32>)>> {
    Ok(sqlx::query_as(
        "select id, buildStatus from Builds \
         where jobset_id = $1 and job = $2 and finished = 1 order by id desc limit 1",
    )
    .bind(jobset)
    .bind(job)
    .fetch_optional(&state.pool)
    .await?)
}

/// `/job/<p>/<j>/<job>/shield`: a shields.io endpoint badge.
pub async fn shield(
    State(state): State<AppState>,
    Path((project, jobset, job)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let id = jobset_id(&state, &project, &jobset).await?;
    // Hydra's colours and messages.
    let (color, message) = match latest_finished(&state, id, &job).await? {
        None => {
            return Err(ApiError::not_found(format!(
                "Job ‘{project}:{jobset}:{job}’ has no finished build."
            )));
        }
        Some((_, status)) => match status.and_then(BuildStatus::from_code) {
            Some(BuildStatus::Succeeded) => ("green", "passing"),
            Some(BuildStatus::Cancelled) => ("yellow", "cancelled"),
            _ => ("red", "failing"),
        },
    };
    let body = json!({
        "schemaVersion": 1,
        "label": "hydra build",
        "color": color,
        "message": message,
    });
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Id, stop time, status, closure size and output size.
type LatestFigures = (i32, Option<i32>, Option<i32>, Option<i64>, Option<i64>);

/// `/job/<p>/<j>/<job>/prometheus`: the latest finished build's figures.
pub async fn prometheus(
    State(state): State<AppState>,
    Path((project, jobset, job)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let id = jobset_id(&state, &project, &jobset).await?;
    let row: Option<LatestFigures> = sqlx::query_as(
        "select id, stopTime, buildStatus, closureSize, size from Builds \
         where jobset_id = $1 and job = $2 and finished = 1 order by id desc limit 1",
    )
    .bind(id)
    .bind(&job)
    .fetch_optional(&state.pool)
    .await?;
    let Some((_, stop, status, closure, size)) = row else {
        return Err(ApiError::not_found(format!(
            "Job ‘{project}:{jobset}:{job}’ has no finished build."
        )));
    };
    let labels = format!(
        "project=\"{}\",jobset=\"{}\",job=\"{}\"",
        label(&project),
        label(&jobset),
        label(&job)
    );
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: i64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}\n"
        ));
    };
    metric(
        "hydra_job_completion_time",
        "Unix time the latest build of the job finished",
        i64::from(stop.unwrap_or(0)),
    );
    metric(
        "hydra_job_failed",
        "Whether the latest build of the job failed",
        i64::from(status != Some(BuildStatus::Succeeded.code())),
    );
    metric(
        "hydra_build_closure_size",
        "Closure size of the latest build's outputs, in bytes",
        closure.unwrap_or(0),
    );
    metric(
        "hydra_build_output_size",
        "Size of the latest build's outputs, in bytes",
        size.unwrap_or(0),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}

/// The series of one column over the job's successful builds, oldest
/// first.
async fn series(
    state: &AppState,
    project: &str,
    jobset: &str,
    job: &str,
    column: &str,
) -> ApiResult<Page> {
    let id = jobset_id(state, project, jobset).await?;
    let sql = format!(
        "select id, timestamp, value from (select id, timestamp, ({column})::float8 as value from Builds \
         where jobset_id = $1 and job = $2 and finished = 1 and buildStatus = $4 and ({column}) is not null \
         order by id desc limit $3) s order by id"
    );
    let rows: Vec<(i32, i32, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(job)
        .bind(SERIES_LIMIT)
        .bind(hydra_db::status::BuildStatus::Succeeded)
        .fetch_all(&state.pool)
        .await?;
    let points: Vec<Value> = rows
        .into_iter()
        .map(|(id, timestamp, value)| json!({ "id": id, "timestamp": timestamp, "value": crate::views::json_number(value) }))
        .collect();
    Ok(Page::value("job-series", Value::Array(points)))
}

pub async fn build_times(
    State(state): State<AppState>,
    Path((p, j, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    series(&state, &p, &j, &job, "stopTime - startTime").await
}

pub async fn closure_sizes(
    State(state): State<AppState>,
    Path((p, j, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    series(&state, &p, &j, &job, "closureSize").await
}

pub async fn output_sizes(
    State(state): State<AppState>,
    Path((p, j, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    series(&state, &p, &j, &job, "size").await
}

/// `/job/<p>/<j>/<job>/metric/<name>`.
pub async fn metric(
    State(state): State<AppState>,
    Path((project, jobset, job, name)): Path<(String, String, String, String)>,
) -> ApiResult<Page> {
    jobset_id(&state, &project, &jobset).await?;
    let rows: Vec<(i32, i32, f64, Option<String>)> = sqlx::query_as(
        "select build, timestamp, value, unit from (select build, timestamp, value, unit from BuildMetrics \
         where project = $1 and jobset = $2 and job = $3 and name = $4 \
         order by build desc limit $5) m order by build",
    )
    .bind(&project)
    .bind(&jobset)
    .bind(&job)
    .bind(&name)
    .bind(SERIES_LIMIT)
    .fetch_all(&state.pool)
    .await?;
    let points: Vec<Value> = rows
        .into_iter()
        .map(|(id, timestamp, value, unit)| {
            json!({ "id": id, "timestamp": timestamp, "value": crate::views::json_number(value), "unit": unit })
        })
        .collect();
    Ok(Page::value("job-series", Value::Array(points)))
}

/// `POST /job/<p>/<j>/<job>/star` with `star=1` or `star=0`.
pub async fn star(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, jobset, job)): Path<(String, String, String)>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    let account = viewer.require_login()?;
    jobset_id(&state, &project, &jobset).await?;
    let star = form::flag(&body, "star");
    if star {
        sqlx::query(
            "insert into StarredJobs (userName, project, jobset, job) values ($1, $2, $3, $4) \
             on conflict do nothing",
        )
        .bind(&account.name)
        .bind(&project)
        .bind(&jobset)
        .bind(&job)
        .execute(&state.pool)
        .await?;
    } else {
        sqlx::query(
            "delete from StarredJobs where userName = $1 and project = $2 and jobset = $3 and job = $4",
        )
        .bind(&account.name)
        .bind(&project)
        .bind(&jobset)
        .bind(&job)
        .execute(&state.pool)
        .await?;
    }
    Ok(Page::value("job-star", json!({ "starred": star })))
}
