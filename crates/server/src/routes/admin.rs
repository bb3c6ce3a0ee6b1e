//! Administration and operations: the admin actions of Hydra's `/admin`,
//! news, the queue runner's status and machines (read from its status
//! endpoint), running-step ages for Prometheus, and `/api/scmdiff`.

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hydra_db::runner_status::{MachineStatus, RunnerStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::form::{self, Body};
use super::{parse_id, redirect};
use crate::auth::{SameOrigin, Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::params::Params;
use crate::state::AppState;

/// How long the queue runner's status endpoint may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `git log`/`git diff` may take.
const SCM_TIMEOUT: Duration = Duration::from_secs(30);

/// Back to the page the action came from (a page of this site), else to
/// the front page.
fn back_to_admin(state: &AppState, headers: &HeaderMap, message: &str) -> Response {
    let base = base_url(state, headers);
    let from = headers
        .get(axum::http::header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix(base.as_str()))
        .filter(|rest| super::account::local_path(&format!("/{rest}")).is_some())
        .unwrap_or_default()
        .to_string();
    super::actions::back_saying(state, headers, &from, message)
}

/// `/admin/users`: every user with their roles.
pub(crate) async fn users(State(state): State<AppState>, viewer: Viewer) -> ApiResult<Page> {
    viewer.require_admin()?;
    Ok(Page::new(
        "admin-users",
        crate::views::admin::users(&state.pool).await?,
    ))
}

/// `/admin/machines`: the build machines as the queue runner reports
/// them.
pub(crate) async fn admin_machines(
    State(state): State<AppState>,
    viewer: Viewer,
) -> ApiResult<Page> {
    viewer.require_admin()?;
    let machines = match queue_runner_json::<BTreeMap<String, MachineStatus>>(
        &state,
        "/status/machines",
    )
    .await
    {
        Ok(machines) => serde_json::to_value(machines).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    Ok(Page::value(
        "admin-machines",
        json!({ "machines": machines }),
    ))
}

/// The clearing actions of `/admin`.
#[derive(Clone, Copy, Debug)]
enum Clear {
    /// Cancels the queued builds that are not in the latest evaluation
    /// (with new builds) of their jobset.
    QueueNonCurrent,
    /// Forgets every cached failure.
    FailedCache,
    /// Forgets every fetched input revision.
    VcsCache,
}

/// `/admin/clear-…`, for administrators, then back to `/admin`.
fn clear(what: Clear) -> MethodRouter<AppState> {
    let handler = move |State(state): State<AppState>,
                        headers: HeaderMap,
                        viewer: Viewer,
                        _csrf: SameOrigin| async move {
        viewer.require_admin()?;
        let message = match what {
            Clear::QueueNonCurrent => {
                let ids = hydra_db::builds::queued_not_current(&state.pool).await?;
                let n = hydra_db::builds::cancel_builds(&state.pool, &ids).await?;
                tracing::info!(cancelled = n, "cleared the queue of non-current builds");
                format!("{n} queued builds that are not current have been cancelled.")
            }
            Clear::FailedCache => {
                hydra_db::failed_paths::clear(&state.pool).await?;
                "The failed builds cache has been cleared.".to_string()
            }
            Clear::VcsCache => {
                hydra_db::input_cache::clear(&state.pool).await?;
                "The VCS caches have been cleared.".to_string()
            }
        };
        Ok::<_, ApiError>(back_to_admin(&state, &headers, &message))
    };
    get(handler).post(handler)
}

/// `/admin/news`: the news items, newest first.
pub(crate) async fn news(State(state): State<AppState>, viewer: Viewer) -> ApiResult<Page> {
    viewer.require_admin()?;
    let items: Vec<Value> = hydra_db::news::list(&state.pool)
        .await?
        .into_iter()
        .map(|n| {
            json!({ "id": n.id, "contents": n.contents, "createtime": n.create_time, "author": n.author })
        })
        .collect();
    Ok(Page::value("news", Value::Array(items)))
}

/// `POST /admin/news/submit` with `contents`.
pub(crate) async fn news_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    let admin = viewer.require_admin()?;
    let contents = form::text(&body, "contents")
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("The news item is empty."))?;
    hydra_db::news::add(&state.pool, &contents, &admin.name, hydra_db::now()).await?;
    Ok(redirect(&format!(
        "{}admin/news",
        base_url(&state, &headers)
    )))
}

/// `POST /admin/news/delete/<id>`.
pub(crate) async fn news_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    viewer.require_admin()?;
    let id = parse_id(&id, "news item")?;
    let deleted = hydra_db::news::delete(&state.pool, id).await?;
    if !deleted {
        return Err(ApiError::not_found(format!(
            "News item {id} doesn't exist."
        )));
    }
    Ok(redirect(&format!(
        "{}admin/news",
        base_url(&state, &headers)
    )))
}

// --- the queue runner's status ---------------------------------------------------

/// Why the queue runner's status could not be read.
#[derive(Debug)]
pub(crate) enum StatusError {
    NotConfigured,
    Unreachable(String),
}

/// GETs `<queue_runner_endpoint><path>` and reads the JSON answer as `T`.
pub(crate) async fn queue_runner_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    path: &str,
) -> Result<T, StatusError> {
    let base = state
        .config
        .web
        .queue_runner_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(StatusError::NotConfigured)?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    tokio::time::timeout(STATUS_TIMEOUT, http_get_json(state, &url))
        .await
        .map_err(|_| StatusError::Unreachable(format!("{url}: timed out")))?
        .map_err(|e| StatusError::Unreachable(format!("{url}: {e}")))
}

/// A GET of JSON over plain HTTP (the status endpoint is the queue
/// runner's own small server, normally on loopback), with the server's
/// pooled client.
async fn http_get_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    url: &str,
) -> Result<T, String> {
    use http_body_util::BodyExt;
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// endpoints are supported".into());
    }
    let request = axum::http::Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = state
        .http
        .request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not the queue runner's status: {e}"))
}

/// `/queue-runner-status`.
pub(crate) async fn queue_runner_status(State(state): State<AppState>) -> Page {
    let data = match queue_runner_json::<RunnerStatus>(&state, "/status").await {
        Ok(status) => serde_json::to_value(status).unwrap_or(Value::Null),
        Err(StatusError::NotConfigured) => json!({ "status": "unknown" }),
        Err(StatusError::Unreachable(why)) => {
            tracing::warn!(error = %why, "cannot read the queue runner's status");
            json!({ "status": "unreachable" })
        }
    };
    Page::value("queue-runner-status", data)
}

/// `/machines`: the queue runner's machines and the steps running now.
pub(crate) async fn machines(State(state): State<AppState>) -> ApiResult<Page> {
    let machines = match queue_runner_json::<BTreeMap<String, MachineStatus>>(
        &state,
        "/status/machines",
    )
    .await
    {
        Ok(machines) => serde_json::to_value(machines).unwrap_or(Value::Null),
        Err(StatusError::NotConfigured) => Value::Null,
        Err(StatusError::Unreachable(why)) => {
            tracing::warn!(error = %why, "cannot read the queue runner's machines");
            Value::Null
        }
    };
    let steps = crate::views::admin::running_steps(&state.pool).await?;
    Ok(Page::value(
        "machines",
        json!({ "machines": machines, "steps": steps }),
    ))
}

/// `/prometheus`: a histogram of the running steps' ages per machine.
pub(crate) async fn prometheus(State(state): State<AppState>) -> ApiResult<Response> {
    const BUCKETS: [f64; 12] = [
        60.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 172800.0, 259200.0,
        345600.0, 691200.0,
    ];
    let rows = crate::views::admin::running_step_starts(&state.pool).await?;
    let now = i64::from(hydra_db::now());
    let ages: hydra_metrics::Family<hydra_metrics::Histogram> =
        hydra_metrics::Family::new(|| hydra_metrics::Histogram::new(BUCKETS.to_vec()));
    for (machine, start) in rows {
        ages.get(&[("machine", &machine)])
            .observe((now - i64::from(start)).max(0) as f64);
    }
    let mut t = hydra_metrics::Text::new();
    t.histograms(
        "hydra_machine_build_duration",
        "How long the steps running now have been running, per machine",
        &ages,
    );
    Ok(super::metrics_text(t.finish()))
}

// --- /api/scmdiff ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct ScmDiffQuery {
    uri: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rev1: Option<String>,
    rev2: Option<String>,
}

fn revision(q: &Option<String>, name: &str) -> ApiResult<String> {
    let rev = q.as_deref().unwrap_or("");
    if rev.is_empty()
        || !rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(ApiError::bad_request(format!(
            "Invalid revision ‘{rev}’ for {name}."
        )));
    }
    Ok(rev.to_string())
}

async fn run(dir: &std::path::Path, program: &str, args: &[&str]) -> ApiResult<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HGPLAIN", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCM_TIMEOUT, cmd.output())
        .await
        .map_err(|_| ApiError::Internal(format!("{program} {args:?} timed out")))?
        .map_err(|e| ApiError::Internal(format!("{program}: {e}")))?;
    if !output.status.success() {
        return Err(ApiError::bad_request(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `/api/scmdiff?uri=…&type=git|hg&rev1=…&rev2=…`: the log and diff between
/// two revisions, from the evaluator's clone of the repository.
pub(crate) async fn scmdiff(
    State(state): State<AppState>,
    Query(q): Query<ScmDiffQuery>,
) -> ApiResult<Response> {
    let uri = q
        .uri
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing ‘uri’."))?;
    let rev1 = revision(&q.rev1, "rev1")?;
    let rev2 = revision(&q.rev2, "rev2")?;
    let kind = q.kind.as_deref().unwrap_or("git");
    let dir = match kind {
        "git" | "hg" => state.data_dir.scm_clone(kind, uri),
        other => {
            return Err(ApiError::bad_request(format!(
                "Unsupported repository type ‘{other}’: use git or hg."
            )));
        }
    };
    if !dir.is_dir() {
        return Err(ApiError::not_found(format!(
            "No clone of ‘{uri}’ is cached here."
        )));
    }
    let range = format!("{rev1}..{rev2}");
    let text = if kind == "git" {
        let log = run(&dir, "git", &["log", &range, "--"]).await?;
        let diff = run(&dir, "git", &["diff", &range, "--"]).await?;
        format!("{log}\n{diff}")
    } else {
        let log = run(&dir, "hg", &["log", "-r", &format!("{rev1}:{rev2}")]).await?;
        let diff = run(&dir, "hg", &["diff", "-r", &rev1, "-r", &rev2]).await?;
        format!("{log}\n{diff}")
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        text,
    )
        .into_response())
}

/// `/metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    super::metrics_text(state.metrics.render())
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/prometheus", get(prometheus))
        .route("/queue-runner-status", get(queue_runner_status))
        .route("/machines", get(machines))
        .route(
            "/admin/clear-queue-non-current",
            clear(Clear::QueueNonCurrent),
        )
        .route("/admin/clear-failed-cache", clear(Clear::FailedCache))
        .route("/admin/clear-vcs-cache", clear(Clear::VcsCache))
        .route("/admin/news", get(news))
        .route("/admin/users", get(users))
        .route("/admin/machines", get(admin_machines))
        .route("/admin/news/submit", post(news_submit))
        .route("/admin/news/delete/{id}", post(news_delete))
        .route("/api/scmdiff", get(scmdiff))
}

/// Why queued build `id` waits, as the queue runner tells it; `None` when
/// the queue runner cannot be asked (its answer is then not known).
pub(crate) async fn waiting(state: &AppState, id: hydra_db::ids::BuildId) -> Option<Value> {
    match queue_runner_json::<Value>(state, &format!("/status/build/{id}")).await {
        Ok(answer) => Some(answer),
        Err(StatusError::NotConfigured) => None,
        Err(StatusError::Unreachable(why)) => {
            tracing::warn!(error = %why, "cannot ask the queue runner why a build waits");
            None
        }
    }
}
