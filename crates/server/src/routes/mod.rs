//! The URL space, Hydra's. Each module owns the routes under one prefix.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::auth;
use crate::error::ApiError;
use crate::negotiate;
use crate::state::AppState;

pub mod account;
pub mod actions;
pub mod admin;
pub mod api;
pub mod build;
pub mod cache;
pub mod channels;
pub mod downloads;
pub mod eval;
pub mod form;
pub mod job;
pub mod jobset;
pub mod latest;
pub mod logs;
pub mod project;
pub mod root;
pub mod setup;
pub mod webhooks;

pub fn router(state: AppState) -> Router {
    let routes = routes();
    // Catalyst answers `/project/p/` as `/project/p`: a path that matches no
    // route is tried once more without its trailing slashes. Routes that
    // match with the slash (directories of downloads) keep it.
    let exact = routes.clone().fallback(not_found).with_state(state.clone());
    routes
        .fallback(move |request: axum::extract::Request| without_trailing_slash(exact, request))
        .layer(from_fn_with_state(state.clone(), auth::guard))
        .layer(from_fn(reject_nul))
        .layer(from_fn(negotiate::negotiate))
        .layer(from_fn_with_state(state.clone(), crate::metrics::track))
        .with_state(state)
}

/// A URL whose path or query holds a NUL byte (`%00`) is a client error:
/// no name or value the database stores can contain one.
async fn reject_nul(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    let has_nul = |s: &str| s.contains("%00") || s.contains('\0');
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request("The URL contains a NUL character.").into_response();
    }
    next.run(request).await
}

/// `request` again with the trailing slashes of its path removed, or the
/// 404 when there are none.
async fn without_trailing_slash(exact: Router, mut request: axum::extract::Request) -> Response {
    use tower::ServiceExt;
    let path = request.uri().path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.is_empty() {
        return not_found().await.into_response();
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_string(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    match axum::http::Uri::from_parts(parts) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return not_found().await.into_response(),
    }
    match exact.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Every route, without the layers.
fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root::index))
        .route("/robots.txt", get(root::robots))
        .route("/queue", get(root::queue))
        .route("/status", get(root::status))
        .route("/evals", get(root::evals))
        .route("/steps", get(root::steps))
        .route("/search", get(root::search))
        .route("/metrics", get(crate::metrics::serve))
        .route("/prometheus", get(admin::prometheus))
        .route("/queue-runner-status", get(admin::queue_runner_status))
        .route("/machines", get(admin::machines))
        .route("/nix-cache-info", get(cache::cache_info))
        .route("/nix-cache-public-key", get(cache::public_key))
        .route("/{file}", get(cache::narinfo))
        .route("/nar/{file}", get(cache::nar))
        .route("/log/{drv}", get(logs::log))
        .route(
            "/admin/clear-queue-non-current",
            get(admin::clear_queue_non_current).post(admin::clear_queue_non_current),
        )
        .route(
            "/admin/clear-failed-cache",
            get(admin::clear_failed_cache).post(admin::clear_failed_cache),
        )
        .route(
            "/admin/clear-vcs-cache",
            get(admin::clear_vcs_cache).post(admin::clear_vcs_cache),
        )
        .route("/admin/news", get(admin::news))
        .route("/admin/news/submit", post(admin::news_submit))
        .route("/admin/news/delete/{id}", post(admin::news_delete))
        .route("/job/{project}/{jobset}/{job}", get(job::show))
        .route("/job/{project}/{jobset}/{job}/shield", get(job::shield))
        .route(
            "/job/{project}/{jobset}/{job}/prometheus",
            get(job::prometheus),
        )
        .route(
            "/job/{project}/{jobset}/{job}/build-times",
            get(job::build_times),
        )
        .route(
            "/job/{project}/{jobset}/{job}/closure-sizes",
            get(job::closure_sizes),
        )
        .route(
            "/job/{project}/{jobset}/{job}/output-sizes",
            get(job::output_sizes),
        )
        .route(
            "/job/{project}/{jobset}/{job}/metric/{name}",
            get(job::metric),
        )
        .route("/job/{project}/{jobset}/{job}/star", post(job::star))
        .merge(latest::routes())
        .merge(channel_routes())
        .route("/eval/{id}/channel", get(channels::eval))
        .route("/eval/{id}/channel/{file}", get(channels::eval))
        .route("/build/{id}/nix", get(channels::build))
        .route("/build/{id}/nix/{file}", get(channels::build))
        .route(
            "/project/{project}",
            get(project::show)
                .put(project::save)
                .delete(project::delete),
        )
        .route(
            "/jobset/{project}/{jobset}",
            get(jobset::show).put(jobset::save).delete(jobset::delete),
        )
        .route("/jobset/{project}/{jobset}/evals", get(jobset::evals))
        .route("/jobset/{project}/{jobset}/errors", get(jobset::errors))
        .route(
            "/jobset/{project}/{jobset}/latest-eval",
            get(jobset::latest_eval),
        )
        .route(
            "/jobset/{project}/{jobset}/latest-eval/{*rest}",
            get(jobset::latest_eval_rest),
        )
        .route("/eval/{id}", get(eval::show))
        .route("/eval/{id}/builds", get(eval::builds))
        .route("/eval/{id}/store-paths", get(eval::store_paths))
        .route("/eval/{id}/errors", get(eval::errors))
        .route("/eval/{id}/job/{job}", get(eval::job))
        .route("/eval/{id}/job/{job}/{*rest}", get(eval::job_rest))
        .route("/eval/{id}/cancel", get(eval::cancel).post(eval::cancel))
        .route(
            "/eval/{id}/restart-aborted",
            get(eval::restart_aborted).post(eval::restart_aborted),
        )
        .route(
            "/eval/{id}/restart-failed",
            get(eval::restart_failed).post(eval::restart_failed),
        )
        .route("/eval/{id}/bump", get(eval::bump).post(eval::bump))
        .route("/build/{id}", get(build::show))
        .route("/build/{id}/constituents", get(build::constituents))
        .route("/build/{id}/evals", get(build::evals))
        .route("/build/{id}/api/get-info", get(build::get_info))
        .route("/build/{id}/step/{nr}", get(build::step))
        .route("/build/{id}/log", get(logs::build_log))
        .route("/build/{id}/log/{mode}", get(logs::build_log))
        .route("/build/{id}/step/{nr}/log", get(logs::step_log))
        .route("/build/{id}/step/{nr}/log/{mode}", get(logs::step_log))
        .route("/build/{id}/nixlog/{nr}", get(logs::nixlog))
        .route("/build/{id}/nixlog/{nr}/{mode}", get(logs::nixlog))
        .route("/build/{id}/download/{nr}", get(downloads::download))
        .route(
            "/build/{id}/download/{nr}/{*rest}",
            get(downloads::download),
        )
        .route(
            "/build/{id}/download-by-type/{type}/{subtype}",
            get(downloads::download_by_type),
        )
        .route(
            "/build/{id}/download-by-type/{type}/{subtype}/{*rest}",
            get(downloads::download_by_type),
        )
        .route("/build/{id}/output/{name}", get(cache::output))
        .route(
            "/build/{id}/restart",
            get(build::restart).post(build::restart),
        )
        .route("/build/{id}/cancel", get(build::cancel).post(build::cancel))
        .route("/build/{id}/bump", get(build::bump).post(build::bump))
        .route(
            "/build/{id}/keep/{keep}",
            get(build::keep).post(build::keep),
        )
        .route("/api/latestbuilds", get(api::latest_builds))
        .route("/api/queue", get(api::queue))
        .route("/api/nrqueue", get(api::nr_queue))
        .route("/api/nrbuilds", get(api::nr_builds))
        .route("/api/jobsets", get(api::jobsets))
        .route("/api/push", post(api::push).get(api::push))
        .route("/api/push-github", post(webhooks::github))
        .route("/api/push-gitea", post(webhooks::gitea))
        .route("/api/scmdiff", get(admin::scmdiff))
        .route("/login", get(account::login_form).post(account::login))
        .route("/setup", get(setup::show).post(setup::create))
        .route("/logout", post(account::logout))
        .route("/current-user", get(account::current_user))
        .route("/register", put(account::register).post(account::register))
        .route(
            "/user/{name}",
            get(account::show)
                .put(account::save)
                .delete(account::delete),
        )
        .route(
            "/user/{name}/tokens",
            get(account::tokens).post(account::create_token),
        )
        .route(
            "/user/{name}/tokens/{id}",
            axum::routing::delete(account::revoke_token),
        )
}

/// `…/channel/latest[/<file>]` under every scope.
fn channel_routes() -> Router<AppState> {
    let mut router = Router::new();
    for scope in latest::SCOPES {
        router = router
            .route(&format!("{scope}/channel/latest"), get(channels::latest))
            .route(
                &format!("{scope}/channel/latest/{{file}}"),
                get(channels::latest),
            );
    }
    router
}

async fn not_found() -> ApiError {
    ApiError::not_found("Page not found.")
}

/// A 302 to `location` (Hydra's redirects after actions and for `latest`).
pub fn redirect(location: &str) -> Response {
    let mut response = axum::http::StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A 302 to `path` under the server's base URL, with the trailing path
/// segments of a `latest`-style URL appended.
pub fn redirect_below(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    path: &str,
    rest: Option<&str>,
) -> Response {
    let mut location = format!("{}{path}", auth::base_url(state, headers));
    if let Some(rest) = rest.filter(|r| !r.is_empty()) {
        location.push('/');
        location.push_str(rest);
    }
    redirect(&location)
}

/// A named segment of a route with optional segments (`Path<Vec<(String,
/// String)>>`).
pub fn path_param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// A build or evaluation id from the URL.
pub fn parse_id(text: &str, what: &str) -> Result<i32, ApiError> {
    text.parse::<i32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid {what} ID ‘{text}’.")))
}

/// Hydra's name rules (URL segments and created names).
pub use hydra_db::names;
