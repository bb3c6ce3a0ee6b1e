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
pub mod api;
pub mod build;
pub mod eval;
pub mod form;
pub mod jobset;
pub mod latest;
pub mod project;
pub mod root;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root::index))
        .route("/robots.txt", get(root::robots))
        .route("/queue", get(root::queue))
        .route("/status", get(root::status))
        .route("/evals", get(root::evals))
        .route("/steps", get(root::steps))
        .route("/search", get(root::search))
        .merge(latest::routes())
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
        .route("/login", post(account::login))
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
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), auth::guard))
        .layer(from_fn(negotiate::negotiate))
        .with_state(state)
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

/// A build or evaluation id from the URL.
pub fn parse_id(text: &str, what: &str) -> Result<i32, ApiError> {
    text.parse::<i32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid {what} ID ‘{text}’.")))
}

/// Hydra's name rules (URL segments and created names).
pub mod names {
    fn valid(name: &str, extra_first: &str, rest: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || extra_first.contains(c))
            && chars.all(|c| c.is_ascii_alphanumeric() || rest.contains(c))
    }

    pub fn project(name: &str) -> bool {
        valid(name, "_", "-_")
    }

    pub fn jobset(name: &str) -> bool {
        valid(name, "_", "-_.")
    }

    pub fn job(name: &str) -> bool {
        !name.is_empty() && name.split('.').all(|part| valid(part, "_", "-_"))
    }

    pub fn user(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    }

    pub fn system(name: &str) -> bool {
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        name.split_once('-').is_some_and(|(a, b)| ok(a) && ok(b))
    }
}
