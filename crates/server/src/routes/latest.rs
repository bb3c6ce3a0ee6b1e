//! Hydra's build lists and `latest` redirects, the same under `/`,
//! `/project/<p>`, `/jobset/<p>/<j>` and `/job/<p>/<j>/<job>`, each scope
//! meaning "all builds below it".

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::redirect_below;
use super::root::PER_PAGE;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JobsetPath, ProjectPath};
use crate::negotiate::Page;
use crate::state::AppState;
use crate::views::{self, Filter};
use hydra_db::keyset::{PageQuery, Position};

pub(crate) const SCOPES: &[&str] = &[
    "",
    "/project/{project}",
    "/jobset/{project}/{jobset}",
    "/job/{project}/{jobset}/{job}",
];

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for scope in SCOPES {
        router = router
            .route(&format!("{scope}/all"), get(all))
            .route(&format!("{scope}/latest"), get(latest))
            .route(&format!("{scope}/latest/{{*rest}}"), get(latest))
            .route(&format!("{scope}/latest-for/{{system}}"), get(latest))
            .route(
                &format!("{scope}/latest-for/{{system}}/{{*rest}}"),
                get(latest),
            )
            .route(&format!("{scope}/latest-finished"), get(latest_finished))
            .route(
                &format!("{scope}/latest-finished/{{*rest}}"),
                get(latest_finished),
            );
    }
    router
}

/// The scope of a request, checked to exist.
struct Scope {
    project: Option<String>,
    jobset: Option<String>,
    job: Option<String>,
    system: Option<String>,
    rest: Option<String>,
}

async fn scope(state: &AppState, mut params: HashMap<String, String>) -> ApiResult<Scope> {
    let scope = Scope {
        project: params.remove("project"),
        jobset: params.remove("jobset"),
        job: params.remove("job"),
        system: params.remove("system"),
        rest: params.remove("rest"),
    };
    if let Some(project) = &scope.project {
        let exists = match &scope.jobset {
            Some(jobset) => hydra_db::jobsets::id_of(&state.pool, project, jobset)
                .await?
                .is_some(),
            None => hydra_db::projects::exists(&state.pool, project).await?,
        };
        if !exists {
            return Err(match &scope.jobset {
                Some(jobset) => JobsetPath::missing(project, jobset),
                None => ProjectPath::missing(project),
            });
        }
    }
    Ok(scope)
}

impl Scope {
    fn filter(&self) -> Filter<'_> {
        Filter::of(&self.project, &self.jobset, &self.job, &self.system)
    }
}

async fn redirect_to_build(
    state: &AppState,
    headers: &HeaderMap,
    scope: &Scope,
    finished_evals: bool,
) -> ApiResult<Response> {
    let id = views::latest_success(&state.pool, &scope.filter(), finished_evals).await?;
    let id = id.ok_or_else(|| ApiError::not_found("No build found."))?;
    Ok(redirect_below(
        state,
        headers,
        &format!("build/{id}"),
        scope.rest.as_deref(),
    ))
}

async fn latest(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Option<Path<HashMap<String, String>>>,
) -> ApiResult<Response> {
    let scope = scope(&state, params.map(|p| p.0).unwrap_or_default()).await?;
    redirect_to_build(&state, &headers, &scope, false).await
}

async fn latest_finished(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Option<Path<HashMap<String, String>>>,
) -> ApiResult<Response> {
    let scope = scope(&state, params.map(|p| p.0).unwrap_or_default()).await?;
    redirect_to_build(&state, &headers, &scope, true).await
}

/// Finished builds of the scope, newest first, 20 per page.
async fn all(
    State(state): State<AppState>,
    params: Option<Path<HashMap<String, String>>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Page> {
    let scope = scope(&state, params.map(|p| p.0).unwrap_or_default()).await?;
    let position = Position::of(&q);
    let (total, builds, mut body) =
        views::finished_page(&state.pool, &scope.filter(), &position, PER_PAGE).await?;
    body.insert("total".into(), Value::from(total.count));
    body.insert(
        "builds".into(),
        serde_json::to_value(builds).unwrap_or(Value::Null),
    );
    Ok(Page::value("all", Value::Object(body))
        .with_extra("project", json!(scope.project))
        .with_extra("jobset", json!(scope.jobset))
        .with_extra("job", json!(scope.job))
        .with_extra("first", json!(position.first_index(PER_PAGE)))
        .with_extra("estimated", json!(total.estimated)))
}
