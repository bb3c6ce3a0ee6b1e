//! `/api/*`: Hydra's small JSON endpoints for scripts.

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use hydra_db::status::JobsetState;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::extract::JobsetPath;
use crate::negotiate::Page;
use crate::state::AppState;
use crate::views::{self, Filter};

#[derive(Debug, Deserialize)]
pub(crate) struct BuildFilter {
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

impl BuildFilter {
    fn filter(&self) -> Filter<'_> {
        Filter::of(&self.project, &self.jobset, &self.job, &self.system)
    }
}

pub(crate) async fn latest_builds(
    State(state): State<AppState>,
    Query(f): Query<BuildFilter>,
) -> ApiResult<Page> {
    let nr = nr(&f)?;
    let builds = views::api::latest_builds(&state.pool, &f.filter(), nr).await?;
    Ok(Page::value("api", builds))
}

pub(crate) async fn queue(
    State(state): State<AppState>,
    Query(f): Query<BuildFilter>,
) -> ApiResult<Page> {
    let nr = nr(&f)?;
    let builds = views::api::queue(&state.pool, nr).await?;
    Ok(Page::value("api", builds))
}

pub(crate) async fn nr_queue(State(state): State<AppState>) -> ApiResult<Page> {
    let n = views::api::nr_queued(&state.pool).await?;
    Ok(Page::value("api", Value::from(n)))
}

/// Finished builds per hour or day over the last `nr` periods, oldest first.
pub(crate) async fn nr_builds(
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
    let rows =
        views::api::finished_per_period(&state.pool, &f.filter(), period as i32, first as i32)
            .await?;
    let counts: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
    let series: Vec<i64> = (0..nr)
        .map(|i| counts.get(&(first + i * period)).copied().unwrap_or(0))
        .collect();
    Ok(Page::new("api", series))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProjectQuery {
    pub project: Option<String>,
}

pub(crate) async fn jobsets(
    State(state): State<AppState>,
    Query(q): Query<ProjectQuery>,
) -> ApiResult<Page> {
    let project = q
        .project
        .ok_or_else(|| ApiError::bad_request("Parameter ‘project’ is required."))?;
    let jobsets = views::api::jobsets(&state.pool, &project).await?;
    Ok(Page::value("api", jobsets))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PushQuery {
    pub jobsets: Option<String>,
    pub repos: Option<String>,
    pub force: Option<String>,
}

/// Triggers evaluations of the named jobsets and of the enabled jobsets
/// with an input on one of the repositories.
pub(crate) async fn push(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PushQuery>,
) -> ApiResult<Page> {
    viewer.require_login()?;
    let force = q.force.is_some();
    let mut targets: Vec<(String, String, JobsetState)> = Vec::new();
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
        let enabled = hydra_db::jobsets::state_of(&state.pool, project, jobset)
            .await?
            .ok_or_else(|| JobsetPath::missing(project, jobset))?;
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
        let by_repo = hydra_db::jobsets::with_input_value(&state.pool, &repos).await?;
        targets.extend(by_repo);
    }
    let mut triggered = Vec::new();
    for (project, jobset, enabled) in targets {
        if enabled == JobsetState::Disabled && !force {
            continue;
        }
        viewer
            .require_role_or_owner(&state.pool, "eval-jobset", &project)
            .await?;
        let name = format!("{project}:{jobset}");
        if triggered.contains(&name) {
            continue;
        }
        hydra_db::jobsets::trigger(&state.pool, &project, &jobset, hydra_db::now(), force).await?;
        triggered.push(name);
    }
    Ok(Page::value("api", json!({ "jobsetsTriggered": triggered })))
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/latestbuilds", get(latest_builds))
        .route("/api/queue", get(queue))
        .route("/api/nrqueue", get(nr_queue))
        .route("/api/nrbuilds", get(nr_builds))
        .route("/api/jobsets", get(jobsets))
        .route("/api/push", post(push).get(push))
}
