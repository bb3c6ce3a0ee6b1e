//! `/build/<id>`: a build, its steps, and the actions on it.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{parse_id, redirect};
use crate::auth::{SameOrigin, Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;
use crate::views;

/// The build's id, whether it finished, and its project; checked to exist.
async fn find(state: &AppState, id: &str) -> ApiResult<(i32, bool, String)> {
    let id = parse_id(id, "build")?;
    let row: Option<(i32, String)> = sqlx::query_as(
        "select b.finished, j.project from Builds b join Jobsets j on j.id = b.jobset_id where b.id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let (finished, project) =
        row.ok_or_else(|| ApiError::not_found(format!("Build with ID {id} doesn't exist.")))?;
    Ok((id, finished == 1, project))
}

/// The Build object, straight from the one query that renders it.
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id, "build")?;
    let json = views::build_json(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Build with ID {id} doesn't exist.")))?;
    Ok(crate::negotiate::json_text("build", json))
}

pub async fn constituents(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, _, _) = find(&state, &id).await?;
    let ids: Vec<i32> = sqlx::query_scalar(
        "select constituent from AggregateConstituents where aggregate = $1 order by constituent",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(crate::negotiate::json_text(
        "build-constituents",
        views::builds_json_text(&state.pool, &ids).await?,
    ))
}

pub async fn evals(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Page> {
    let (id, _, _) = find(&state, &id).await?;
    let ids: Vec<i32> = sqlx::query_scalar(
        "select eval from JobsetEvalMembers where build = $1 order by eval desc",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Page::value(
        "build-evals",
        Value::Array(views::evals_json(&state.pool, &ids).await?),
    ))
}

pub async fn get_info(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Page> {
    let (id, _, _) = find(&state, &id).await?;
    let (drv, out): (String, Option<String>) = sqlx::query_as(
        "select b.drvPath, (select o.path from BuildOutputs o where o.build = b.id \
         order by o.name <> 'out', o.name limit 1) from Builds b where b.id = $1",
    )
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    Ok(Page::value(
        "build-info",
        json!({ "buildId": id, "drvPath": drv, "outPath": out }),
    ))
}

pub async fn step(
    State(state): State<AppState>,
    Path((id, nr)): Path<(String, String)>,
) -> ApiResult<Page> {
    let (id, _, _) = find(&state, &id).await?;
    let nr: i32 = nr
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid step number ‘{nr}’.")))?;
    let step: Option<String> = sqlx::query_scalar(
        "select json_build_object('machine', s.machine, 'system', s.system, 'stepnr', s.stepnr, \
         'drvpath', s.drvPath, 'starttime', s.startTime, 'stoptime', s.stopTime, 'busy', s.busy, \
         'status', s.status, 'errormsg', s.errorMsg, 'resolveddrvpath', s.resolvedDrvPath, \
         'build', json_build_object('id', s.build))::text \
         from BuildSteps s where s.build = $1 and s.stepnr = $2",
    )
    .bind(id)
    .bind(nr)
    .fetch_optional(&state.pool)
    .await?;
    let step = step.ok_or_else(|| ApiError::not_found(format!("Build {id} has no step {nr}.")))?;
    let value: Value =
        serde_json::from_str(&step).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Page::value("build-step", value))
}

fn back_to_build(state: &AppState, headers: &HeaderMap, id: i32) -> Response {
    redirect(&format!("{}build/{id}", base_url(state, headers)))
}

pub async fn restart(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, finished, project) = find(&state, &id).await?;
    viewer
        .require_role_or_owner(&state.pool, "restart-jobs", &project)
        .await?;
    if !finished {
        return Err(ApiError::bad_request(
            "This build cannot be restarted: it has not finished.",
        ));
    }
    hydra_db::builds::restart_builds(&state.pool, &[id]).await?;
    Ok(back_to_build(&state, &headers, id))
}

pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, finished, project) = find(&state, &id).await?;
    viewer
        .require_role_or_owner(&state.pool, "cancel-build", &project)
        .await?;
    if finished {
        return Err(ApiError::bad_request(
            "This build cannot be cancelled: it has finished.",
        ));
    }
    hydra_db::builds::cancel_builds(&state.pool, &[id]).await?;
    Ok(back_to_build(&state, &headers, id))
}

pub async fn bump(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, _, project) = find(&state, &id).await?;
    viewer
        .require_role_or_owner(&state.pool, "bump-to-front", &project)
        .await?;
    hydra_db::builds::bump_builds(&state.pool, &[id], hydra_db::now()).await?;
    Ok(back_to_build(&state, &headers, id))
}

pub async fn keep(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path((id, keep)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (id, _, project) = find(&state, &id).await?;
    viewer.require_project_owner(&state.pool, &project).await?;
    let keep: i32 = match keep.as_str() {
        "1" => 1,
        "0" => 0,
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid keep value ‘{keep}’: use 1 or 0."
            )));
        }
    };
    sqlx::query("update Builds set keep = $2 where id = $1")
        .bind(id)
        .bind(keep)
        .execute(&state.pool)
        .await?;
    Ok(back_to_build(&state, &headers, id))
}
