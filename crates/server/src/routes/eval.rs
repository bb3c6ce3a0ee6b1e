//! `/eval/<id>`: an evaluation, its builds, and actions on all of them.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;

use super::{parse_id, redirect, redirect_below};
use crate::auth::{SameOrigin, Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;
use crate::views;

/// The evaluation's id and its jobset's project, checked to exist.
async fn find(state: &AppState, id: &str) -> ApiResult<(i32, String)> {
    let id = parse_id(id, "evaluation")?;
    let project: Option<String> = sqlx::query_scalar(
        "select j.project from JobsetEvals e join Jobsets j on j.id = e.jobset_id where e.id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    project
        .map(|p| (id, p))
        .ok_or_else(|| ApiError::not_found(format!("Evaluation {id} doesn't exist.")))
}

async fn members(state: &AppState, id: i32) -> ApiResult<Vec<i32>> {
    Ok(
        sqlx::query_scalar("select build from JobsetEvalMembers where eval = $1 order by build")
            .bind(id)
            .fetch_all(&state.pool)
            .await?,
    )
}

pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Page> {
    let (id, _) = find(&state, &id).await?;
    let mut evals = views::evals_json(&state.pool, &[id]).await?;
    Ok(Page::value("eval", evals.pop().unwrap_or(Value::Null)))
}

pub async fn builds(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    let (id, _) = find(&state, &id).await?;
    let ids = members(&state, id).await?;
    Ok(crate::negotiate::json_text(
        "eval-builds",
        views::builds_json_text(&state.pool, &ids).await?,
    ))
}

/// Output paths of the successful builds that have a `nix-build` product.
pub async fn store_paths(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Page> {
    let (id, _) = find(&state, &id).await?;
    let paths: Vec<String> = sqlx::query_scalar(
        "select distinct o.path from JobsetEvalMembers m join Builds b on b.id = m.build \
         join BuildOutputs o on o.build = b.id \
         where m.eval = $1 and b.finished = 1 and b.buildStatus = $2 and o.path is not null \
         and exists (select 1 from BuildProducts p where p.build = b.id and p.type = 'nix-build') \
         order by o.path",
    )
    .bind(id)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(&state.pool)
    .await?;
    Ok(Page::new("eval-store-paths", paths))
}

pub async fn errors(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Page> {
    let (id, _) = find(&state, &id).await?;
    let mut evals = views::evals_json(&state.pool, &[id]).await?;
    let mut eval = evals.pop().unwrap_or(Value::Null);
    let error: Option<Option<String>> = sqlx::query_scalar(
        "select x.errorMsg from JobsetEvals e join EvaluationErrors x on x.id = e.evaluationerror_id where e.id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    if let Value::Object(map) = &mut eval {
        map.insert(
            "errormsg".into(),
            Value::from(error.flatten().unwrap_or_default()),
        );
    }
    Ok(Page::value("eval-errors", eval))
}

async fn job_to(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    job: &str,
    rest: Option<&str>,
) -> ApiResult<Response> {
    let (id, _) = find(state, id).await?;
    let build: Option<i32> = sqlx::query_scalar(
        "select b.id from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = $1 and b.job = $2 order by b.id desc limit 1",
    )
    .bind(id)
    .bind(job)
    .fetch_optional(&state.pool)
    .await?;
    let build = build.ok_or_else(|| {
        ApiError::not_found(format!("Evaluation {id} has no build of job ‘{job}’."))
    })?;
    Ok(redirect_below(
        state,
        headers,
        &format!("build/{build}"),
        rest,
    ))
}

pub async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
) -> ApiResult<Response> {
    job_to(&state, &headers, &id, &job, None).await
}

pub async fn job_rest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, job, rest)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    job_to(&state, &headers, &id, &job, Some(&rest)).await
}

fn back_to_eval(state: &AppState, headers: &HeaderMap, id: i32) -> Response {
    redirect(&format!("{}eval/{id}", base_url(state, headers)))
}

pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, project) = find(&state, &id).await?;
    viewer
        .require_role_or_owner(&state.pool, "cancel-build", &project)
        .await?;
    let ids = members(&state, id).await?;
    hydra_db::builds::cancel_builds(&state.pool, &ids).await?;
    Ok(back_to_eval(&state, &headers, id))
}

async fn restart_where(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    id: &str,
    which: hydra_db::builds::Statuses<'_>,
) -> ApiResult<Response> {
    let (id, project) = find(state, id).await?;
    viewer
        .require_role_or_owner(&state.pool, "restart-jobs", &project)
        .await?;
    let ids = hydra_db::builds::finished_in_eval(&state.pool, id, which).await?;
    hydra_db::builds::restart_builds(&state.pool, &ids).await?;
    Ok(back_to_eval(state, headers, id))
}

/// Restarts the aborted, cancelled and unsupported builds.
pub async fn restart_aborted(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    use hydra_db::status::BuildStatus::{Aborted, Cancelled, Unsupported};
    let which = hydra_db::builds::Statuses::AnyOf(&[Aborted, Cancelled, Unsupported]);
    restart_where(&state, &headers, &viewer, &id, which).await
}

/// Restarts every build that did not succeed.
pub async fn restart_failed(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let which = hydra_db::builds::Statuses::NoneOf(&[hydra_db::status::BuildStatus::Succeeded]);
    restart_where(&state, &headers, &viewer, &id, which).await
}

pub async fn bump(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, project) = find(&state, &id).await?;
    viewer
        .require_role_or_owner(&state.pool, "bump-to-front", &project)
        .await?;
    let ids = members(&state, id).await?;
    hydra_db::builds::bump_builds(&state.pool, &ids, hydra_db::now()).await?;
    Ok(back_to_eval(&state, &headers, id))
}
