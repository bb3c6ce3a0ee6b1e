//! `/api/push-github`, `/api/push-gitea` and `/api/push-gitlab`: webhooks
//! that trigger the evaluation of the jobsets following the pushed
//! repository (any event, as Hydra), and record what `pull_request`
//! (GitLab: `Merge Request Hook`) deliveries say for the projects that
//! build that repository's pull requests.
//!
//! The body must carry an HMAC-SHA256 signature by one of the configured
//! secrets (several may be configured, so a secret can be rotated without
//! downtime); signatures are compared in constant time. No session and no
//! CSRF check: the signature is the authentication.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use hydra_config::Secret;
use hydra_db::pull_requests::{Forge, Observed};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(message.to_string())
}

/// Checks `signature` (hex) against the body under each secret.
fn verify(secrets: &[Secret], body: &[u8], signature: Option<&str>) -> ApiResult<()> {
    if secrets.is_empty() {
        return Err(unauthorized("No webhook secret is configured."));
    }
    let signature = signature.ok_or_else(|| unauthorized("Missing webhook signature"))?;
    let given =
        hex::decode(signature.trim()).map_err(|_| unauthorized("Invalid webhook signature"))?;
    let mut ok = false;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            continue;
        };
        mac.update(body);
        // Every secret is tried, so the time taken does not say which matched.
        ok |= mac.verify_slice(&given).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(unauthorized("Invalid webhook signature"))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("Empty request body."));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not JSON: {e}.")))?;
    if let Some(key) = crate::params::with_nul(&value, "") {
        return Err(ApiError::bad_request(format!(
            "The field ‘{key}’ contains a NUL character."
        )));
    }
    Ok(value)
}

/// `%` and `_` are LIKE wildcards; a repository name must match literally.
fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Sets `triggerTime` on the enabled jobsets whose flake URI or an input
/// value matches `pattern` (a LIKE pattern), returning `p:j` names.
async fn trigger(
    state: &AppState,
    flake_pattern: &str,
    input_pattern: &str,
) -> ApiResult<Vec<String>> {
    let rows = hydra_db::jobsets::trigger_matching(
        &state.pool,
        flake_pattern,
        input_pattern,
        hydra_db::now(),
    )
    .await?;
    let mut names: Vec<String> = rows.into_iter().map(|(p, j)| format!("{p}:{j}")).collect();
    names.sort();
    Ok(names)
}

/// `POST /api/push-github`: header `X-Hub-Signature-256: sha256=<hex>`.
pub(crate) async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Page> {
    let signature = header(&headers, "x-hub-signature-256").map(|s| {
        s.strip_prefix("sha256=")
            .unwrap_or("not a sha256 signature")
    });
    verify(&state.config.web.github_webhook_secrets, &body, signature)?;
    let payload = parse_body(&body)?;
    let repo = &payload["repository"];
    let owner = repo["owner"]["name"]
        .as_str()
        .or_else(|| repo["owner"]["login"].as_str())
        .ok_or_else(|| ApiError::bad_request("The payload names no repository owner."))?;
    let name = repo["name"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("The payload names no repository."))?;
    let path = format!("{}/{}", like_literal(owner), like_literal(name));
    let triggered = trigger(
        &state,
        &format!("%github%{path}%"),
        &format!("%github.com%{path}%"),
    )
    .await?;
    tracing::info!(owner, repository = name, ?triggered, "GitHub push");
    let event = header(&headers, "x-github-event");
    let pulls = match event {
        Some("pull_request") => pull_request(&state, Forge::Github, &payload).await?,
        _ => Vec::new(),
    };
    let rebuilt = match event {
        Some("check_run") => rerun(&state, &payload).await?,
        _ => None,
    };
    Ok(answer(triggered, pulls, rebuilt))
}

/// A check run's "Re-run" (its requested action `rerun`, or GitHub's own
/// re-run): restarts the build the check run is about; the build.
async fn rerun(state: &AppState, payload: &Value) -> ApiResult<Option<i32>> {
    let action = payload["action"].as_str().unwrap_or_default();
    let wanted = match action {
        "rerequested" => true,
        "requested_action" => payload["requested_action"]["identifier"] == json!("rerun"),
        _ => false,
    };
    if !wanted {
        return Ok(None);
    }
    let run = &payload["check_run"];
    let ours = run["external_id"]
        .as_str()
        .and_then(|e| e.parse::<i32>().ok());
    let remote = run["id"].as_i64();
    let Some(build) =
        hydra_db::commit_statuses::build_of(&state.pool, "github-checks", ours, remote).await?
    else {
        return Ok(None);
    };
    let restarted = hydra_db::builds::restart_builds(&state.pool, &[build]).await?;
    tracing::info!(build = build.0, restarted, "check run re-run requested");
    Ok(Some(build.0))
}

/// Hydra's answer, with what pull-request deliveries did and the build a
/// check run's re-run restarted, when there are any.
fn answer(triggered: Vec<String>, pulls: Vec<Value>, rebuilt: Option<i32>) -> Page {
    let mut body = json!({ "jobsetsTriggered": triggered });
    if !pulls.is_empty() {
        body["pullRequests"] = json!(pulls);
    }
    if let Some(build) = rebuilt {
        body["rebuilt"] = json!(build);
    }
    Page::value("api", body)
}

/// Records a GitHub or Gitea `pull_request` delivery.
async fn pull_request(state: &AppState, forge: Forge, payload: &Value) -> ApiResult<Vec<Value>> {
    let repository = payload["repository"]["full_name"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("The payload has no repository.full_name."))?;
    let seen = Observed::from_github(&payload["pull_request"])
        .map_err(|e| ApiError::bad_request(format!("The payload's pull_request: {e}.")))?;
    super::pull_requests::record_delivery(state, forge, repository, &seen).await
}

/// `POST /api/push-gitea`: header `X-Gitea-Signature: <hex>`.
pub(crate) async fn gitea(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Page> {
    verify(
        &state.config.web.gitea_webhook_secrets,
        &body,
        header(&headers, "x-gitea-signature"),
    )?;
    let payload = parse_body(&body)?;
    let url = payload["repository"]["clone_url"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("The payload has no repository.clone_url."))?;
    let url = url.strip_suffix(".git").unwrap_or(url);
    let pattern = format!("%{}%", like_literal(url));
    let triggered = trigger(&state, &pattern, &pattern).await?;
    tracing::info!(repository = url, ?triggered, "Gitea push");
    let pulls = match header(&headers, "x-gitea-event") {
        Some("pull_request") => pull_request(&state, Forge::Gitea, &payload).await?,
        _ => Vec::new(),
    };
    Ok(answer(triggered, pulls, None))
}

/// Checks GitLab's `X-Gitlab-Token` (the secret itself) against each
/// configured secret, in constant time.
fn verify_token(secrets: &[Secret], token: Option<&str>) -> ApiResult<()> {
    if secrets.is_empty() {
        return Err(unauthorized("No webhook secret is configured."));
    }
    let token = token.ok_or_else(|| unauthorized("Missing webhook token"))?;
    let mut ok = false;
    for secret in secrets {
        // Every secret is tried, so the time taken does not say which.
        ok |= crate::auth::same_secret(secret.expose(), token);
    }
    if ok {
        Ok(())
    } else {
        Err(unauthorized("Invalid webhook token"))
    }
}

/// `POST /api/push-gitlab`: header `X-Gitlab-Token: <secret>`.
pub(crate) async fn gitlab(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Page> {
    verify_token(
        &state.config.web.gitlab_webhook_secrets,
        header(&headers, "x-gitlab-token"),
    )?;
    let payload = parse_body(&body)?;
    let project = &payload["project"];
    let url = project["git_http_url"]
        .as_str()
        .or_else(|| project["web_url"].as_str())
        .ok_or_else(|| ApiError::bad_request("The payload has no project.git_http_url."))?;
    let url = url.strip_suffix(".git").unwrap_or(url);
    let pattern = format!("%{}%", like_literal(url));
    let triggered = trigger(&state, &pattern, &pattern).await?;
    tracing::info!(repository = url, ?triggered, "GitLab push");
    let pulls = match header(&headers, "x-gitlab-event") {
        Some("Merge Request Hook") => {
            let repository = project["path_with_namespace"].as_str().ok_or_else(|| {
                ApiError::bad_request("The payload has no project.path_with_namespace.")
            })?;
            let seen = Observed::from_gitlab(&payload, None, None)
                .map_err(|e| ApiError::bad_request(format!("The payload's merge request: {e}.")))?;
            super::pull_requests::record_delivery(&state, Forge::Gitlab, repository, &seen).await?
        }
        _ => Vec::new(),
    };
    Ok(answer(triggered, pulls, None))
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/push-github", post(github))
        .route("/api/push-gitea", post(gitea))
        .route("/api/push-gitlab", post(gitlab))
}
