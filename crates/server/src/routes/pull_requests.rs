//! Pull requests built as jobsets: a project's "build pull requests"
//! settings (`/project/P/pull-requests`), the approval of an untrusted
//! pull request's head (`POST /jobset/P/J/approve`), and what the forges'
//! `pull_request` webhooks say (recorded for the evaluator, which owns
//! the jobsets).

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hydra_db::pull_requests::{self as prs, Forge, Observed, Recorded, Settings};
use hydra_db::superseded::{self, Policy};
use serde_json::{Value, json};

use super::form::{Body, text};
use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JobsetPath, ProjectPath};
use crate::negotiate::{Page, WantsPage};
use crate::params::Params;
use crate::state::AppState;

/// The settings as the API shows them.
fn settings_json(settings: Option<&Settings>, policy: Policy) -> Value {
    json!({
        "enabled": settings.is_some(),
        "forge": settings.map(|s| s.forge.as_str()),
        "repository": settings.map(|s| &s.repository),
        "apiUrl": settings.and_then(|s| s.api_url.as_ref()),
        "template": settings.map(|s| &s.template),
        "input": settings.and_then(|s| s.input.as_ref()),
        "trustedAuthors": settings.map(|s| &s.trusted_authors),
        "trustedAssociations": settings.map(|s| &s.trusted_associations),
        "superseded": policy.as_str(),
    })
}

/// The settings and the pull requests of `project`.
pub(crate) async fn overview(state: &AppState, project: &str) -> ApiResult<Value> {
    let settings = prs::settings(&state.pool, project).await?;
    let policy = superseded::policy(&state.pool, project).await?;
    let mut shown = settings_json(settings.as_ref(), policy);
    let pulls = prs::of_project(&state.pool, project).await?;
    shown["pullRequests"] = json!(pulls);
    Ok(shown)
}

/// `GET /project/P/pull-requests`: the settings and the pull requests.
async fn show(State(state): State<AppState>, project: ProjectPath) -> ApiResult<Page> {
    Ok(Page::value("api", overview(&state, &project.name).await?))
}

/// Checks a settings body; pure, so each refusal is tested.
fn parse_settings(project: &str, body: &Body) -> Result<(Option<Settings>, Policy), String> {
    let policy = match text(body, "superseded") {
        None => Policy::Keep,
        Some(p) => Policy::parse(&p)
            .ok_or_else(|| format!("superseded must be keep, cancel or lower, not `{p}`"))?,
    };
    let enabled = match body.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true" | "on"),
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        Some(_) => return Err("enabled must be true or false".into()),
    };
    if !enabled {
        return Ok((None, policy));
    }
    let forge = text(body, "forge").unwrap_or_default();
    let forge = Forge::parse(&forge)
        .ok_or_else(|| format!("forge must be github, gitea or gitlab, not `{forge}`"))?;
    let repository = text(body, "repository")
        .map(|r| r.trim().trim_matches('/').to_owned())
        .unwrap_or_default();
    let valid_repo = repository.split('/').count() >= 2
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if !valid_repo {
        return Err(format!(
            "repository must be OWNER/NAME (GitLab: GROUP/…/NAME), not `{repository}`"
        ));
    }
    let api_url = text(body, "apiUrl")
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty());
    if let Some(url) = &api_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(format!("apiUrl must be an http(s) URL, not `{url}`"));
    }
    if forge != Forge::Github && api_url.is_none() {
        return Err(format!(
            "apiUrl is needed for {} (the forge's address, e.g. https://codeberg.org)",
            forge.as_str()
        ));
    }
    let template = text(body, "template")
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    if template.is_empty() {
        return Err(
            "template must name the jobset each pull request's jobset is copied from".into(),
        );
    }
    let input = text(body, "input")
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty());
    Ok((
        Some(Settings {
            project: project.to_owned(),
            forge,
            repository,
            api_url,
            template,
            input,
            trusted_authors: text(body, "trustedAuthors").unwrap_or_default(),
            trusted_associations: text(body, "trustedAssociations")
                .unwrap_or_else(|| "OWNER MEMBER COLLABORATOR".into()),
        }),
        policy,
    ))
}

/// `PUT /project/P/pull-requests`: turn building pull requests on (or
/// off with `enabled: false`) and set the superseded policy.
async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    WantsPage(page): WantsPage,
    project: ProjectPath,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    viewer
        .require_project_owner(&state.pool, &project.name)
        .await?;
    let saved = save_settings(&state, &project.name, &body).await;
    if page {
        let message = match &saved {
            Ok(_) => "The pull-request settings are saved.".to_owned(),
            Err(ApiError::BadRequest(why)) => format!("Not saved: {why}"),
            Err(_) => return saved.map(IntoResponse::into_response),
        };
        return Ok(super::actions::back_saying(
            &state,
            &headers,
            &format!("project/{}#tabs-pull-requests", project.name),
            &message,
        ));
    }
    saved.map(IntoResponse::into_response)
}

/// Checks and stores the settings in `body`; the page of the result.
async fn save_settings(state: &AppState, project: &str, body: &Body) -> ApiResult<Page> {
    let (settings, policy) = parse_settings(project, body).map_err(ApiError::bad_request)?;
    if let Some(s) = &settings {
        let template = hydra_db::jobsets::id_of(&state.pool, project, &s.template).await?;
        if template.is_none() {
            return Err(ApiError::bad_request(format!(
                "template: project {} has no jobset `{}`",
                project, s.template
            )));
        }
        if let Some(input) = &s.input {
            let spec = prs::template_spec(&state.pool, project, &s.template).await?;
            if spec.as_ref().and_then(|v| v["inputs"].get(input)).is_none() {
                return Err(ApiError::bad_request(format!(
                    "input: jobset {} has no input `{input}`",
                    s.template
                )));
            }
        }
        prs::save_settings(&state.pool, s).await?;
    } else {
        prs::remove_settings(&state.pool, project).await?;
    }
    superseded::set_policy(&state.pool, project, policy).await?;
    Ok(Page::value("api", settings_json(settings.as_ref(), policy)))
}

/// `POST /jobset/P/J/approve` (`sha`: the head the approver looked at):
/// a project member approves the current head of an untrusted pull
/// request, which is then evaluated.
async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    WantsPage(page): WantsPage,
    jobset: JobsetPath,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    let account = viewer.require_login()?.clone();
    if !viewer
        .is_project_owner(&state.pool, &jobset.project)
        .await?
    {
        return Err(ApiError::forbidden(
            "Only members of the project (and administrators) can approve a pull request.",
        ));
    }
    let pr = prs::of_jobset(&state.pool, jobset.id)
        .await?
        .ok_or_else(|| ApiError::not_found("This jobset does not build a pull request."))?;
    if pr.state != prs::State::Open {
        return Err(ApiError::Conflict(format!(
            "Pull request #{} is closed.",
            pr.number
        )));
    }
    if let Some(seen) = text(&body, "sha").filter(|s| !s.is_empty())
        && !seen.eq_ignore_ascii_case(&pr.head_sha)
    {
        return Err(ApiError::Conflict(format!(
            "The head of pull request #{} moved on to {}: look at that one before approving it.",
            pr.number, pr.head_sha
        )));
    }
    let approved = prs::approve(
        &state.pool,
        &jobset.project,
        pr.number,
        &account.name,
        hydra_db::now(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("The pull request is gone."))?;
    tracing::info!(project = %jobset.project, number = pr.number, head = %approved, by = %account.name, "pull request approved");
    if page {
        return Ok(super::actions::back_saying(
            &state,
            &headers,
            &format!("jobset/{}/{}", jobset.project, jobset.jobset),
            &format!(
                "Head {} of pull request #{} is approved and will be evaluated.",
                approved.get(..12).unwrap_or(&approved),
                pr.number
            ),
        ));
    }
    Ok(Page::value(
        "api",
        json!({ "number": pr.number, "approved": approved, "approvedBy": account.name }),
    )
    .into_response())
}

/// What a webhook delivery about a pull request did, per project.
pub(crate) async fn record_delivery(
    state: &AppState,
    forge: Forge,
    repository: &str,
    seen: &Observed,
) -> ApiResult<Vec<Value>> {
    let mut done = Vec::new();
    for settings in prs::following(&state.pool, forge, repository).await? {
        let recorded = prs::record(&state.pool, &settings.project, forge, seen).await?;
        tracing::info!(
            project = %settings.project,
            number = seen.number,
            head = %seen.head_sha,
            ?recorded,
            "pull request webhook"
        );
        done.push(json!({
            "project": settings.project,
            "number": seen.number,
            "result": match recorded {
                Recorded::Applied => "recorded",
                Recorded::Stale => "ignored: older than what is known",
            },
        }));
    }
    Ok(done)
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/project/{project}/pull-requests",
            get(show).put(save).post(save),
        )
        .route("/jobset/{project}/{jobset}/approve", post(approve))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::routes::form::body_of as body;

    fn refusal(value: Value) -> String {
        parse_settings("p", &body(value)).unwrap_err()
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        let ok = json!({"forge": "github", "repository": "o/r", "template": "main", "input": "src", "superseded": "cancel"});
        let (settings, policy) = parse_settings("p", &body(ok)).unwrap();
        let settings = settings.unwrap();
        assert_eq!(settings.forge, Forge::Github);
        assert_eq!(settings.trusted_associations, "OWNER MEMBER COLLABORATOR");
        assert_eq!(policy, Policy::Cancel);
        assert!(refusal(json!({"forge": "svn"})).contains("forge must be"));
        assert!(
            refusal(json!({"forge": "github", "repository": "just-one"})).contains("OWNER/NAME")
        );
        assert!(refusal(json!({"forge": "github", "repository": "o/r;rm"})).contains("OWNER/NAME"));
        assert!(
            refusal(json!({"forge": "gitea", "repository": "o/r", "template": "main"}))
                .contains("apiUrl is needed")
        );
        assert!(
            refusal(json!({"forge": "github", "repository": "o/r", "apiUrl": "ftp://x", "template": "m"}))
                .contains("http(s) URL")
        );
        assert!(refusal(json!({"forge": "github", "repository": "o/r"})).contains("template"));
        assert!(refusal(json!({"superseded": "sometimes"})).contains("keep, cancel or lower"));
        let (off, policy) =
            parse_settings("p", &body(json!({"enabled": false, "superseded": "lower"}))).unwrap();
        assert!(off.is_none());
        assert_eq!(policy, Policy::Lower);
    }
}
