//! `/job/<p>/<j>/<job>`: a job's builds over time, its badge, its
//! Prometheus figures and its series (build times, sizes, metrics), and
//! starring it.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hydra_db::status::BuildStatus;
use serde_json::{Value, json};

use super::form::{self, Body};
use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::extract::JobsetPath;
use crate::negotiate::{Page, WantsPage};
use crate::params::Params;
use crate::state::AppState;
use crate::views::{self, job::Series};

/// `/job/<p>/<j>/<job>`: the last ten finished builds, the queued ones,
/// and whether the viewer starred it.
pub(crate) async fn show(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
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
    let id = hydra_db::jobsets::id_of(&state.pool, &project, &jobset)
        .await?
        .ok_or_else(|| JobsetPath::missing(&project, &jobset))?;
    let finished = views::job::recent(&state.pool, id, &job, true).await?;
    let queued = views::job::recent(&state.pool, id, &job, false).await?;
    let queued_ids: Vec<hydra_db::ids::BuildId> = queued
        .iter()
        .map(|b| hydra_db::ids::BuildId(b.id))
        .collect();
    let starred = match &viewer.account {
        Some(a) => views::job::starred(&state.pool, &a.name, &project, &jobset, &job).await?,
        None => false,
    };
    let shown = Page::new(
        "job",
        json!({
            "project": project,
            "jobset": jobset,
            "job": job,
            "latestbuilds": finished,
            "queuedbuilds": queued,
            "starred": starred,
        }),
    );
    if !wanted {
        return Ok(shown);
    }
    let pool = &state.pool;
    let points = |rows: Vec<(i32, i32, f64)>| {
        rows.into_iter()
            .map(|(id, t, v)| json!([id, t, v]))
            .collect::<Vec<_>>()
    };
    let mut charts = vec![
        json!({"title": "Build time (in seconds)", "unit": "s",
               "points": points(views::job::series(pool, id, &job, Series::BuildTimes).await?)}),
        json!({"title": "Closure size (in MiB)", "unit": "MiB", "scale": 1_048_576,
               "points": points(views::job::series(pool, id, &job, Series::ClosureSizes).await?)}),
        json!({"title": "Output size (in MiB)", "unit": "MiB", "scale": 1_048_576,
               "points": points(views::job::series(pool, id, &job, Series::OutputSizes).await?)}),
    ];
    for name in views::job::metric_names(pool, &project, &jobset, &job).await? {
        let rows = views::job::metric(pool, &project, &jobset, &job, &name).await?;
        let unit = rows.last().and_then(|r| r.3.clone()).unwrap_or_default();
        charts.push(json!({
            "title": format!("Metric: {name}"), "metric": name, "unit": unit,
            "points": points(rows.into_iter().map(|(b, t, v, _)| (b, t, v)).collect()),
        }));
    }
    let (aggregates, constituents) = views::job::constituents(pool, id, &job, 15).await?;
    Ok(shown
        .with_extra("etas", views::build::etas(pool, &queued_ids).await?)
        .with_extra("charts", Value::Array(charts))
        .with_extra(
            "current",
            json!(views::job::is_current(pool, id, &job).await?),
        )
        .with_extra("aggregates", json!(aggregates))
        .with_extra("constituents", json!(constituents)))
}

/// `/job/<p>/<j>/<job>/metric-tab`: the piece Hydra's job page loads
/// into its Charts tab; here the charts are in the page, so this leads to
/// them.
pub(crate) async fn metric_tab(
    State(state): State<AppState>,
    headers: HeaderMap,
    jobset: JobsetPath,
    Path((_, _, job)): Path<(String, String, String)>,
) -> Response {
    super::actions::back_to(
        &state,
        &headers,
        &format!(
            "job/{}/{}/{}#tabs-charts",
            jobset.project,
            jobset.jobset,
            crate::pages::encode_segment(&job)
        ),
    )
}

/// `/job/<p>/<j>/<job>/shield`: a shields.io endpoint badge.
pub(crate) async fn shield(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Path((_, _, job)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    // Hydra's colours and messages.
    let (color, message) = match views::job::latest_finished(&state.pool, jobset.id, &job).await? {
        None => return Err(no_finished_build(&jobset, &job)),
        Some(latest) => match latest.status.and_then(BuildStatus::from_code) {
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

/// The 404 of a job without a finished build.
fn no_finished_build(jobset: &JobsetPath, job: &str) -> ApiError {
    ApiError::not_found(format!(
        "Job ‘{}:{}:{job}’ has no finished build.",
        jobset.project, jobset.jobset
    ))
}

/// `/job/<p>/<j>/<job>/prometheus`: the latest finished build's figures.
pub(crate) async fn prometheus(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Path((_, _, job)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let latest = views::job::latest_finished(&state.pool, jobset.id, &job)
        .await?
        .ok_or_else(|| no_finished_build(&jobset, &job))?;
    let (project, jobset) = (&jobset.project, &jobset.jobset);
    let labels = [
        ("project", project.as_str()),
        ("jobset", jobset.as_str()),
        ("job", job.as_str()),
    ];
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut t = hydra_metrics::Text::new();
    let mut gauge = |name: &str, help: &str, value: i64| {
        t.samples(name, help, "gauge", &[(labels.clone(), value as f64)]);
    };
    gauge(
        "hydra_job_completion_time",
        "Unix time the latest build of the job finished",
        i64::from(latest.stop_time.unwrap_or(0)),
    );
    gauge(
        "hydra_job_failed",
        "Whether the latest build of the job failed",
        i64::from(latest.status != Some(BuildStatus::Succeeded.code())),
    );
    gauge(
        "hydra_build_closure_size",
        "Closure size of the latest build's outputs, in bytes",
        latest.closure_size.unwrap_or(0),
    );
    gauge(
        "hydra_build_output_size",
        "Size of the latest build's outputs, in bytes",
        latest.size.unwrap_or(0),
    );
    Ok(super::metrics_text(t.finish()))
}

/// The series of one figure over the job's successful builds, oldest
/// first.
async fn series(
    state: &AppState,
    jobset: &JobsetPath,
    job: &str,
    which: Series,
) -> ApiResult<Page> {
    let rows = views::job::series(&state.pool, jobset.id, job, which).await?;
    let points: Vec<Value> = rows
        .into_iter()
        .map(|(id, timestamp, value)| json!({ "id": id, "timestamp": timestamp, "value": views::json_number(value) }))
        .collect();
    Ok(Page::value("job-series", Value::Array(points)))
}

pub(crate) async fn build_times(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Path((_, _, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    series(&state, &jobset, &job, Series::BuildTimes).await
}

pub(crate) async fn closure_sizes(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Path((_, _, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    series(&state, &jobset, &job, Series::ClosureSizes).await
}

pub(crate) async fn output_sizes(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Path((_, _, job)): Path<(String, String, String)>,
) -> ApiResult<Page> {
    series(&state, &jobset, &job, Series::OutputSizes).await
}

/// `/job/<p>/<j>/<job>/metric/<name>`.
pub(crate) async fn metric(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Path((_, _, job, name)): Path<(String, String, String, String)>,
) -> ApiResult<Page> {
    let rows =
        views::job::metric(&state.pool, &jobset.project, &jobset.jobset, &job, &name).await?;
    let points: Vec<Value> = rows
        .into_iter()
        .map(|(id, timestamp, value, unit)| {
            json!({ "id": id, "timestamp": timestamp, "value": views::json_number(value), "unit": unit })
        })
        .collect();
    Ok(Page::value("job-metric", Value::Array(points))
        .with_extra(
            "job",
            json!(format!("{}:{}:{job}", jobset.project, jobset.jobset)),
        )
        .with_extra("metric", json!(name)))
}

/// `POST /job/<p>/<j>/<job>/star` with `star=1` or `star=0`.
pub(crate) async fn star(
    State(state): State<AppState>,
    headers: HeaderMap,
    WantsPage(wanted): WantsPage,
    viewer: Viewer,
    Path((project, jobset, job)): Path<(String, String, String)>,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    let account = viewer.require_login()?;
    if hydra_db::jobsets::id_of(&state.pool, &project, &jobset)
        .await?
        .is_none()
    {
        return Err(JobsetPath::missing(&project, &jobset));
    }
    let star = form::flag(&body, "star");
    hydra_db::users::set_starred(&state.pool, &account.name, (&project, &jobset, &job), star)
        .await?;
    if wanted {
        // A browser's star button: back to the job.
        let page = format!("job/{project}/{jobset}/{job}");
        return Ok(super::actions::back_to(&state, &headers, &page));
    }
    Ok(Page::value("job-star", json!({ "starred": star })).into_response())
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/job/{project}/{jobset}/{job}", get(show))
        .route("/job/{project}/{jobset}/{job}/shield", get(shield))
        .route("/job/{project}/{jobset}/{job}/prometheus", get(prometheus))
        .route(
            "/job/{project}/{jobset}/{job}/build-times",
            get(build_times),
        )
        .route(
            "/job/{project}/{jobset}/{job}/closure-sizes",
            get(closure_sizes),
        )
        .route(
            "/job/{project}/{jobset}/{job}/output-sizes",
            get(output_sizes),
        )
        .route("/job/{project}/{jobset}/{job}/metric/{name}", get(metric))
        .route("/job/{project}/{jobset}/{job}/star", post(star))
        .route("/job/{project}/{jobset}/{job}/metric-tab", get(metric_tab))
}
