//! Root-level pages: projects, queue, running builds, evaluations, steps,
//! search.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::negotiate::{Page, WantsPage};
use crate::state::AppState;
use crate::views;
use hydra_db::keyset::{PageQuery, Position};

pub(crate) async fn index(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    viewer: Viewer,
) -> ApiResult<Page> {
    let projects = views::projects(&state.pool, viewer.is_admin()).await?;
    let page = Page::new("overview", projects);
    if !wanted {
        return Ok(page);
    }
    // The news, newest first, on the page only.
    let news: Vec<Value> = hydra_db::news::list(&state.pool)
        .await?
        .into_iter()
        .take(5)
        .map(|n| json!({ "contents": n.contents, "createtime": n.create_time, "author": n.author }))
        .collect();
    Ok(page.with_extra("news", Value::Array(news)))
}

pub(crate) async fn robots() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        "User-agent: *\nDisallow: /\n",
    )
        .into_response()
}

pub(crate) async fn queue(State(state): State<AppState>) -> ApiResult<Page> {
    let queued = views::root::queue(&state.pool).await?;
    let ids: Vec<hydra_db::ids::BuildId> = queued
        .iter()
        .map(|b| hydra_db::ids::BuildId(b.id))
        .collect();
    let etas = views::build::etas(&state.pool, &ids).await?;
    Ok(Page::new("queue", queued).with_extra("etas", etas))
}

/// The queue summed up by jobset and by system type.
pub(crate) async fn queue_summary(State(state): State<AppState>) -> ApiResult<Page> {
    let (jobsets, systems) = views::root::queue_summary(&state.pool).await?;
    Ok(Page::new(
        "queue-summary",
        json!({ "jobsets": jobsets, "systems": systems }),
    ))
}

/// Builds with a running step, and the step.
pub(crate) async fn status(State(state): State<AppState>) -> ApiResult<Page> {
    Ok(Page::new(
        "status",
        views::root::running_steps(&state.pool).await?,
    ))
}

pub(crate) const PER_PAGE: i64 = 20;

/// Every evaluation with new builds, newest first, 20 per page.
pub(crate) async fn evals(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    Query(q): Query<PageQuery>,
) -> ApiResult<Page> {
    let position = Position::of(&q);
    let list = views::evals_page(&state.pool, None, &position, PER_PAGE).await?;
    let page = Page::value("evals", list.body);
    if !wanted {
        return Ok(page);
    }
    let first = position.first_index(PER_PAGE);
    super::eval::with_summaries(&state, page, &list.ids, first, list.total).await
}

/// Recently finished steps, 20 per page.
pub(crate) async fn steps(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    Query(q): Query<PageQuery>,
) -> ApiResult<Page> {
    let position = Position::of(&q);
    let (steps, mut body) = views::root::finished_steps(&state.pool, &position, PER_PAGE).await?;
    let mut jobs = serde_json::Map::new();
    if wanted {
        let ids: Vec<i32> = steps
            .iter()
            .filter_map(|s| s.get("build")?.as_i64()?.try_into().ok())
            .collect();
        for (id, name) in views::root::job_names(&state.pool, &ids).await? {
            jobs.insert(id.to_string(), Value::from(name));
        }
    }
    body.insert("steps".into(), Value::Array(steps));
    Ok(Page::value("steps", Value::Object(body)).with_extra("jobs", Value::Object(jobs)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    pub query: Option<String>,
    pub limit: Option<String>,
}

/// Hydra's search: names, descriptions, current jobs, output and drv
/// paths; hidden projects and jobsets are left out.
pub(crate) async fn search(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
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
    let found = views::root::search(&state.pool, &pattern, limit).await?;
    let mut projects = Vec::new();
    for name in found.projects {
        if let Some(p) = views::project(&state.pool, &name).await? {
            projects.push(p);
        }
    }
    let mut jobset_objects = Vec::new();
    for (project, name) in found.jobsets {
        if let Some(j) = views::jobset(&state.pool, &project, &name).await? {
            jobset_objects.push(j);
        }
    }
    let shown = Page::value(
        "search",
        json!({
            "projects": projects,
            "jobsets": jobset_objects,
            "builds": views::builds_json(&state.pool, &found.builds).await?,
            "buildsdrv": views::builds_json(&state.pool, &found.builds_drv).await?,
        }),
    );
    if !wanted {
        return Ok(shown);
    }
    let mut jobs = views::root::search_jobs(&state.pool, &pattern, limit).await?;
    let more = jobs.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    jobs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(shown
        .with_extra("jobs", json!(jobs))
        .with_extra("more_jobs", json!(more)))
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/robots.txt", get(robots))
        .route("/static/{file}", get(crate::assets::serve))
        .route("/static/images/{file}", get(crate::assets::image))
        .route("/queue", get(queue))
        .route("/status", get(status))
        .route("/evals", get(evals))
        .route("/queue-summary", get(queue_summary))
        .route("/blockers", get(blockers))
        .route("/events", get(crate::live::events))
        .route("/steps", get(steps))
        .route("/search", get(search))
}

/// The failed steps that block the most current builds of every jobset.
pub(crate) async fn blockers(State(state): State<AppState>) -> ApiResult<Page> {
    let ranked = views::blockers::ranked(&state.pool, views::blockers::Scope::All).await?;
    Ok(Page::new("blockers", ranked))
}
