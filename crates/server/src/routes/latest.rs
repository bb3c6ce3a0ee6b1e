//! Hydra's build lists and `latest` redirects, the same under `/`,
//! `/project/<p>`, `/jobset/<p>/<j>` and `/job/<p>/<j>/<job>`, each scope
//! meaning "all builds below it".

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;

use super::redirect_below;
use super::root::{PER_PAGE, PageQuery, page_number};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;
use crate::views::{self, BUILD_SUMMARY_COLUMNS, BuildSummary};

pub const SCOPES: &[&str] = &[
    "",
    "/project/{project}",
    "/jobset/{project}/{jobset}",
    "/job/{project}/{jobset}/{job}",
];

pub fn routes() -> Router<AppState> {
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
        let exists: bool = match &scope.jobset {
            Some(jobset) => {
                sqlx::query_scalar(
                    "select exists (select 1 from Jobsets where project = $1 and name = $2)",
                )
                .bind(project)
                .bind(jobset)
                .fetch_one(&state.pool)
                .await?
            }
            None => {
                sqlx::query_scalar("select exists (select 1 from Projects where name = $1)")
                    .bind(project)
                    .fetch_one(&state.pool)
                    .await?
            }
        };
        if !exists {
            return Err(match &scope.jobset {
                Some(jobset) => {
                    ApiError::not_found(format!("Jobset ‘{project}:{jobset}’ doesn't exist."))
                }
                None => ApiError::not_found(format!("Project ‘{project}’ doesn't exist.")),
            });
        }
    }
    Ok(scope)
}

const FILTER: &str = "($1::text is null or j.project = $1) and ($2::text is null or j.name = $2) \
    and ($3::text is null or b.job = $3) and ($4::text is null or b.system = $4)";

async fn redirect_to_build(
    state: &AppState,
    headers: &HeaderMap,
    scope: &Scope,
    finished_evals: bool,
) -> ApiResult<Response> {
    let extra = if finished_evals {
        " and exists (select 1 from JobsetEvalMembers m where m.build = b.id and not exists \
         (select 1 from JobsetEvalMembers m2 join Builds b2 on b2.id = m2.build \
          where m2.eval = m.eval and b2.finished = 0))"
    } else {
        ""
    };
    let sql = format!(
        "select b.id from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and b.buildStatus = $5 and {FILTER}{extra} order by b.id desc limit 1"
    );
    let id: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&scope.project)
        .bind(&scope.jobset)
        .bind(&scope.job)
        .bind(&scope.system)
        .bind(hydra_db::status::BuildStatus::Succeeded)
        .fetch_optional(&state.pool)
        .await?;
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
    let page = page_number(&q);
    let count_sql = format!(
        "select count(*) from Builds b join Jobsets j on j.id = b.jobset_id where b.finished = 1 and {FILTER}"
    );
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
        .bind(&scope.project)
        .bind(&scope.jobset)
        .bind(&scope.job)
        .bind(&scope.system)
        .fetch_one(&state.pool)
        .await?;
    let sql = format!(
        "select {BUILD_SUMMARY_COLUMNS} from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and {FILTER} order by b.stopTime desc, b.id desc offset $5 limit $6"
    );
    let builds: Vec<BuildSummary> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&scope.project)
        .bind(&scope.jobset)
        .bind(&scope.job)
        .bind(&scope.system)
        .bind((page - 1) * PER_PAGE)
        .bind(PER_PAGE)
        .fetch_all(&state.pool)
        .await?;
    let mut body = views::pages(page, PER_PAGE, total);
    body.insert("total".into(), Value::from(total));
    body.insert(
        "builds".into(),
        serde_json::to_value(builds).unwrap_or(Value::Null),
    );
    Ok(Page::value("all", Value::Object(body)))
}
