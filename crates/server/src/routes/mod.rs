//! The URL space, Hydra's. Each module owns the routes under one prefix.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::error::ApiError;
use crate::negotiate;
use crate::state::AppState;

pub(crate) mod account;
pub(crate) mod actions;
pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod build;
pub(crate) mod cache;
pub(crate) mod channels;
pub(crate) mod downloads;
pub(crate) mod eval;
pub(crate) mod form;
pub(crate) mod job;
pub(crate) mod jobset;
pub(crate) mod latest;
pub(crate) mod logs;
pub(crate) mod oauth;
pub(crate) mod oidc;
pub(crate) mod project;
pub(crate) mod pull_requests;
pub(crate) mod root;
pub(crate) mod setup;
pub(crate) mod webhooks;

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
        .layer(from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The layer: counts, times and logs every request. Routes are labelled by
/// their pattern (`/build/{id}`), never by the concrete path, so the number
/// of series stays bounded.
async fn track(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let code = response.status().as_u16();
    state
        .metrics
        .record(&method, &route, code, elapsed.as_secs_f64());
    tracing::debug!(
        target: "hydra_server::request",
        %method,
        %path,
        %route,
        status = code,
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
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
        .merge(latest::routes())
        .merge(account::routes())
        .merge(admin::routes())
        .merge(api::routes())
        .merge(build::routes())
        .merge(cache::routes())
        .merge(channels::routes())
        .merge(downloads::routes())
        .merge(eval::routes())
        .merge(job::routes())
        .merge(jobset::routes())
        .merge(logs::routes())
        .merge(project::routes())
        .merge(oauth::routes())
        .merge(oidc::routes())
        .merge(pull_requests::routes())
        .merge(root::routes())
        .merge(setup::routes())
        .merge(webhooks::routes())
}

async fn not_found() -> ApiError {
    ApiError::not_found("Page not found.")
}

/// Prometheus' text exposition as a response.
pub(crate) fn metrics_text(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(hydra_metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// A 302 to `location` (Hydra's redirects after actions and for `latest`).
pub(crate) fn redirect(location: &str) -> Response {
    let mut response = axum::http::StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A 302 to `path` under the server's base URL, with the trailing path
/// segments of a `latest`-style URL appended.
pub(crate) fn redirect_below(
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
pub(crate) fn path_param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

pub(crate) use crate::extract::parse_id;

/// Hydra's name rules (URL segments and created names).
pub(crate) use hydra_db::names;
