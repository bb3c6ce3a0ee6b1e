//! `/eval/<id>`: an evaluation, its builds, and actions on all of them.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use hydra_db::builds::Statuses;
use hydra_db::status::BuildStatus;

use super::actions::{self, Action};
use super::redirect_below;
use crate::auth::{SameOrigin, Viewer};
use crate::error::{ApiError, ApiResult};
use crate::extract::EvalPath;
use crate::negotiate::{Page, WantsPage};
use crate::state::AppState;
use crate::views;

/// An evaluation list's page with the rows of its evaluations table:
/// `ids`, the `first` (from 0) of `total` evaluations.
pub(crate) async fn with_summaries(
    state: &AppState,
    page: Page,
    ids: &[hydra_db::ids::EvalId],
    first: Option<i64>,
    total: i64,
) -> ApiResult<Page> {
    let rows = views::eval::summaries(&state.pool, ids).await?;
    Ok(page
        .with_extra("summaries", json!(rows))
        .with_extra("first", json!(first))
        .with_extra("total", json!(total)))
}

/// The evaluation page's parameters: what to compare with, which jobs,
/// and whether to list every build.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EvalQuery {
    compare: Option<String>,
    filter: Option<String>,
    full: Option<String>,
}

/// How many builds a tab of the evaluation page lists unless `full=1`.
const TAB_ROWS: usize = 250;

pub(crate) async fn show(
    State(state): State<AppState>,
    WantsPage(page): WantsPage,
    Query(q): Query<EvalQuery>,
    eval: EvalPath,
) -> ApiResult<Page> {
    let mut evals = views::evals_json(&state.pool, &[eval.id]).await?;
    let shown = Page::value("eval", evals.pop().unwrap_or(Value::Null));
    if !page {
        return Ok(shown);
    }
    let pool = &state.pool;
    let filter = q.filter.as_deref().unwrap_or_default().trim();
    let full = q.full.as_deref() == Some("1");
    let compare = views::eval::CompareTo::parse(q.compare.as_deref());
    let other = views::eval::comparison_target(pool, eval.id, &eval.project, &compare).await?;
    let this = views::eval::members(pool, eval.id, filter).await?;
    let (theirs, other_json) = match other {
        Some(o) => (
            views::eval::members(pool, o, filter).await?,
            views::evals_json(pool, &[o]).await?.pop(),
        ),
        None => (Vec::new(), None),
    };
    let c = views::eval::compare(this, &theirs);
    let counts = c.counts();
    let (other_project, other_jobset) = match other {
        Some(o) => hydra_db::evals::jobset_of(pool, o)
            .await?
            .unwrap_or_default(),
        None => Default::default(),
    };
    let tab = |list: &[views::eval::Member]| {
        let shown = if full {
            list.len()
        } else {
            list.len().min(TAB_ROWS)
        };
        json!({"count": list.len(), "builds": &list[..shown]})
    };
    let removed_shown = if full {
        c.removed.len()
    } else {
        c.removed.len().min(TAB_ROWS)
    };
    let tabs = json!({
        "aborted": tab(&c.aborted),
        "now_fail": tab(&c.now_fail),
        "now_succeed": tab(&c.now_succeed),
        "new": tab(&c.new),
        "removed": {"count": c.removed.len(), "builds": &c.removed[..removed_shown]},
        "still_fail": tab(&c.still_fail),
        "still_succeed": tab(&c.still_succeed),
        "unfinished": tab(&c.unfinished),
    });
    let eta = if counts.queued == 0 {
        Value::Null
    } else {
        json!(hydra_db::etas::of_eval(pool, eval.id).await?)
    };
    Ok(shown
        .with_extra("eta", eta)
        .with_extra("project", json!(eval.project))
        .with_extra("jobset", json!(eval.jobset))
        .with_extra("tabs", tabs)
        .with_extra("counts", json!(counts))
        .with_extra("other_project", json!(other_project))
        .with_extra("other_jobset", json!(other_jobset))
        .with_extra("other", other_json.unwrap_or(Value::Null))
        .with_extra(
            "other_jobsets",
            json!(views::eval::other_jobsets(pool, &eval.project, &eval.jobset).await?),
        )
        .with_extra(
            "errors",
            json!(views::eval::error_text(pool, eval.id).await?),
        )
        .with_extra("compare", json!(q.compare.unwrap_or_default()))
        .with_extra("filter", json!(filter))
        .with_extra("full", json!(full)))
}

/// The evaluation's builds. API clients get the JSON streamed, a few
/// hundred builds at a time (the first bytes at once, memory flat
/// whatever the size); browsers get the page.
pub(crate) async fn builds(
    State(state): State<AppState>,
    eval: EvalPath,
    page: crate::negotiate::WantsPage,
) -> ApiResult<Response> {
    if page.0 {
        // People read the builds on the evaluation's page, every one of
        // them with `full=1`, not as the API's JSON.
        return Ok(super::redirect(&format!("/eval/{}?full=1", eval.id)));
    }
    let ids = hydra_db::evals::member_ids(&state.pool, eval.id).await?;
    Ok(crate::negotiate::json_stream(views::builds_json_stream(
        state.pool.clone(),
        ids,
    )))
}

/// Output paths of the successful builds that have a `nix-build` product.
pub(crate) async fn store_paths(State(state): State<AppState>, eval: EvalPath) -> ApiResult<Page> {
    let paths = views::eval::store_paths(&state.pool, eval.id).await?;
    Ok(Page::new("eval-store-paths", paths))
}

pub(crate) async fn errors(State(state): State<AppState>, eval: EvalPath) -> ApiResult<Page> {
    let mut evals = views::evals_json(&state.pool, &[eval.id]).await?;
    let mut value = evals.pop().unwrap_or(Value::Null);
    let error = views::eval::error_text(&state.pool, eval.id).await?;
    if let Value::Object(map) = &mut value {
        map.insert("errormsg".into(), Value::from(error));
    }
    Ok(Page::value("eval-errors", value))
}

async fn job_to(
    state: &AppState,
    headers: &HeaderMap,
    eval: &EvalPath,
    job: &str,
    rest: Option<&str>,
) -> ApiResult<Response> {
    let id = eval.id;
    let build = views::eval::build_of_job(&state.pool, id, job)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("Evaluation {id} has no build of job ‘{job}’."))
        })?;
    Ok(redirect_below(
        state,
        headers,
        &format!("build/{build}"),
        rest,
    ))
}

pub(crate) async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    eval: EvalPath,
    Path((_, job)): Path<(String, String)>,
) -> ApiResult<Response> {
    job_to(&state, &headers, &eval, &job, None).await
}

pub(crate) async fn job_rest(
    State(state): State<AppState>,
    headers: HeaderMap,
    eval: EvalPath,
    Path((_, job, rest)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    job_to(&state, &headers, &eval, &job, Some(&rest)).await
}

/// `/eval/<id>/<action>`: `action` on the evaluation's builds (those
/// `which` chooses among the finished ones, else all), then back to its
/// page.
fn act(action: Action, which: Option<Statuses<'static>>) -> MethodRouter<AppState> {
    let handler = move |State(state): State<AppState>,
                        headers: HeaderMap,
                        viewer: Viewer,
                        _csrf: SameOrigin,
                        eval: EvalPath| async move {
        actions::authorize(&state, &viewer, &eval.project, action).await?;
        let ids = match which {
            Some(which) => hydra_db::builds::finished_in_eval(&state.pool, eval.id, which).await?,
            None => hydra_db::evals::member_ids(&state.pool, eval.id).await?,
        };
        let n = actions::take(&state, action, &ids).await?;
        Ok::<_, ApiError>(actions::back_saying(
            &state,
            &headers,
            &format!("eval/{}", eval.id),
            &action.done(n),
        ))
    };
    get(handler).post(handler)
}

/// The aborted, cancelled and unsupported builds.
const ABORTED: Statuses<'static> = Statuses::AnyOf(&[
    BuildStatus::Aborted,
    BuildStatus::Cancelled,
    BuildStatus::Unsupported,
]);

/// Every build that did not succeed.
const FAILED: Statuses<'static> = Statuses::NoneOf(&[BuildStatus::Succeeded]);

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/eval/{id}", get(show))
        .route("/eval/{id}/builds", get(builds))
        .route("/eval/{id}/store-paths", get(store_paths))
        .route("/eval/{id}/errors", get(errors))
        .route("/eval/{id}/blockers", get(blockers))
        .route("/eval/{id}/cost", get(cost))
        .route("/eval/{id}/eta", get(eta))
        .route("/eval/{id}/job/{job}", get(job))
        .route("/eval/{id}/job/{job}/{*rest}", get(job_rest))
        .route("/eval/{id}/cancel", act(Action::Cancel, None))
        .route(
            "/eval/{id}/restart-aborted",
            act(Action::Restart, Some(ABORTED)),
        )
        .route(
            "/eval/{id}/restart-failed",
            act(Action::Restart, Some(FAILED)),
        )
        .route("/eval/{id}/bump", act(Action::Bump, None))
}

/// What the evaluation cost: per top-level attribute, its slowest jobs,
/// and the jobset's latest evaluations for comparison.
async fn cost(State(state): State<AppState>, eval: EvalPath) -> ApiResult<Page> {
    let costs = hydra_db::evaluation_costs::of_eval(&state.pool, eval.id).await?;
    let jobset = hydra_db::jobsets::id_of(&state.pool, &eval.project, &eval.jobset).await?;
    let trend = match jobset {
        Some(id) => hydra_db::evaluation_costs::trend(&state.pool, id, 20).await?,
        None => Vec::new(),
    };
    let (attrsets, slowest): (Vec<_>, Vec<_>) =
        costs.into_iter().partition(|c| c.kind == "attrset");
    Ok(Page::new(
        "eval-cost",
        json!({ "id": eval.id, "attrsets": attrsets, "slowest": slowest, "trend": trend }),
    ))
}

/// When the evaluation's unfinished builds are expected to be done
/// (JSON).
async fn eta(State(state): State<AppState>, eval: EvalPath) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!(
        hydra_db::etas::of_eval(&state.pool, eval.id).await?
    )))
}

/// The failed steps that block the most builds of the evaluation.
async fn blockers(State(state): State<AppState>, eval: EvalPath) -> ApiResult<Page> {
    let ranked =
        views::blockers::ranked(&state.pool, views::blockers::Scope::Eval(eval.id)).await?;
    Ok(Page::new("blockers", ranked)
        .with_extra("scope", json!("evaluation"))
        .with_extra("name", json!(eval.id.to_string()))
        .with_extra("href", json!(format!("/eval/{}", eval.id))))
}
