//! `/jobset/<p>/<j>`: show (renamed jobsets redirect), create or update
//! (PUT), delete, and its evaluations.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hydra_db::jobsets::{InputRow, JobsetRow};
use hydra_db::status::{JobsetState, JobsetType};
use serde_json::{Value, json};

use super::form::{self, Body, Invalid, OnField, refuse};
use super::root::PER_PAGE;
use super::{names, redirect, redirect_below};
use crate::auth::{Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::extract::{EvalPath, JobsetPath, ProjectPath};
use crate::negotiate::{Page, WantsPage};
use crate::params::Params;
use crate::state::AppState;
use crate::views;
use hydra_db::ids::EvalId;
use hydra_db::keyset::{PageQuery, Position};

/// Input types the evaluator knows.
pub(crate) const INPUT_TYPES: &[&str] = &[
    "string",
    "boolean",
    "nix",
    "path",
    "git",
    "hg",
    "svn",
    "svn-checkout",
    "bzr",
    "bzr-checkout",
    "darcs",
    "build",
    "sysbuild",
    "eval",
    "githubpulls",
    "github_refs",
    "gitlabpulls",
    "giteapulls",
    "bitbucketpulls",
];

pub(crate) async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    WantsPage(page): WantsPage,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Response> {
    if let Some(j) = views::jobset(&state.pool, &project, &jobset).await? {
        let jobset_dynamic = j.enable_dynamic_run_command;
        let mut shown = Page::new("jobset", j);
        if page && let Some(id) = hydra_db::jobsets::id_of(&state.pool, &project, &jobset).await? {
            let evals = views::eval::latest(&state.pool, id, 10).await?;
            let owner = viewer.is_project_owner(&state.pool, &project).await?;
            let declarative = hydra_db::projects::decl_file(&state.pool, &project)
                .await?
                .flatten()
                .is_some_and(|f| !f.is_empty());
            let other_shares =
                hydra_db::jobsets::other_shares(&state.pool, &project, &jobset).await?;
            let dynamic = dynamic_run_command_state(&state, &project, jobset_dynamic).await?;
            let pull_request = hydra_db::pull_requests::of_jobset(&state.pool, id).await?;
            shown = shown
                .with_extra("pull_request", json!(pull_request))
                .with_extra("evals", json!(evals))
                .with_extra("other_shares", json!(other_shares))
                .with_extra("dynamic_run_command", json!(dynamic))
                .with_extra(
                    "email_notification",
                    json!(state.config.notify.email_notification),
                )
                .with_extra("owner", json!(owner))
                .with_extra("declarative", json!(declarative));
        }
        return Ok(shown.into_response());
    }
    let renamed = hydra_db::jobsets::renamed_to(&state.pool, &project, &jobset).await?;
    match renamed {
        Some(to) => {
            let mut response = redirect(&format!(
                "{}jobset/{project}/{to}",
                base_url(&state, &headers)
            ));
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            Ok(response)
        }
        None => Err(JobsetPath::missing(&project, &jobset)),
    }
}

fn valid_input_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(char::is_alphabetic)
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

fn valid_eval_input(value: &str) -> bool {
    if value.parse::<u32>().is_ok() {
        return true;
    }
    let parts: Vec<&str> = value.split(':').collect();
    match parts.as_slice() {
        [p, j] => names::project(p) && names::jobset(j),
        [p, j, job] => names::project(p) && names::jobset(j) && names::job(job),
        _ => false,
    }
}

fn parse_inputs(body: &Body) -> ApiResult<Vec<InputRow>> {
    let Some(inputs) = body.get("inputs") else {
        return Ok(Vec::new());
    };
    let Value::Object(inputs) = inputs else {
        return Err(ApiError::bad_request("‘inputs’ must be an object."));
    };
    let mut out = Vec::new();
    for (name, input) in inputs {
        if !valid_input_name(name) {
            return Err(ApiError::bad_request(format!(
                "Invalid input name ‘{name}’."
            )));
        }
        let Value::Object(input) = input else {
            return Err(ApiError::bad_request(format!(
                "Input ‘{name}’ must be an object."
            )));
        };
        let kind = form::text(input, "type").unwrap_or_default();
        if !INPUT_TYPES.contains(&kind.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Invalid input type ‘{kind}’ of input ‘{name}’."
            )));
        }
        let value = form::text(input, "value")
            .unwrap_or_default()
            .trim()
            .to_string();
        if kind == "boolean" && value != "true" && value != "false" {
            return Err(ApiError::bad_request(format!(
                "The value ‘{value}’ of input ‘{name}’ is not a Boolean (‘true’ or ‘false’)."
            )));
        }
        if kind == "eval" && !valid_eval_input(&value) {
            return Err(ApiError::bad_request(format!(
                "The value ‘{value}’ of input ‘{name}’ is not an evaluation ID, ‘project:jobset’ or ‘project:jobset:job’."
            )));
        }
        out.push(InputRow {
            name: name.clone(),
            kind,
            value: Some(value),
            email_responsible: form::flag(input, "emailresponsible"),
        });
    }
    Ok(out)
}

/// The jobset a body describes, checked: `path_name` is the jobset in the
/// URL, `existing` its row when it exists.
pub(crate) fn jobset_form(
    body: &Body,
    path_name: &str,
    existing: Option<&hydra_db::rows::Jobset>,
) -> Result<JobsetRow, Invalid> {
    let name = form::text(body, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| path_name.to_string());
    if !names::jobset(&name) {
        return Err(refuse(
            "name",
            format!("Invalid jobset identifier ‘{name}’."),
        ));
    }
    let kind =
        match form::integer(body, "type", existing.map_or(0, |j| j.kind), 0..=1).on("type")? {
            0 => JobsetType::Legacy,
            _ => JobsetType::Flake,
        };
    let (nix_expr_input, nix_expr_path, flake) = if kind == JobsetType::Legacy {
        let input = form::text(body, "nixexprinput").unwrap_or_default();
        let path = form::text(body, "nixexprpath").unwrap_or_default();
        if !valid_input_name(&input) {
            return Err(refuse(
                "nixexprinput",
                format!("Invalid input name ‘{input}’ for the Nix expression."),
            ));
        }
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(refuse(
                "nixexprpath",
                format!("Invalid Nix expression path ‘{path}’: it must be relative, without ‘..’."),
            ));
        }
        (Some(input), Some(path), None)
    } else {
        let flake = form::text(body, "flake").unwrap_or_default();
        if flake.trim().is_empty() {
            return Err(refuse("flake", "A flake jobset needs a flake URI."));
        }
        (None, None, Some(flake))
    };
    let enabled = JobsetState::from(
        form::integer(
            body,
            "enabled",
            existing.map_or(JobsetState::Enabled.code(), |j| j.enabled),
            0..=3,
        )
        .on("enabled")?,
    );
    let hidden = if body.contains_key("visible") {
        !form::flag(body, "visible")
    } else {
        existing.is_some_and(|j| j.hidden == 1)
    };
    let scheduling_shares = form::integer(
        body,
        "schedulingshares",
        existing.map_or(100, |j| j.scheduling_shares),
        i32::MIN..=i32::MAX,
    )
    .on("schedulingshares")?;
    if scheduling_shares <= 0 {
        return Err(refuse(
            "schedulingshares",
            format!("The number of scheduling shares must be positive, not {scheduling_shares}."),
        ));
    }
    Ok(JobsetRow {
        name,
        kind,
        description: form::text(body, "description").unwrap_or_default(),
        nix_expr_input,
        nix_expr_path,
        flake,
        enabled,
        enable_email: form::flag(body, "enableemail"),
        dynamic_run_command: form::flag(body, "enable_dynamic_run_command"),
        email_override: form::text(body, "emailoverride").unwrap_or_default(),
        hidden,
        keepnr: form::integer(
            body,
            "keepnr",
            existing.map_or(3, |j| j.keepnr),
            0..=i32::MAX,
        )
        .on("keepnr")?,
        check_interval: form::integer(
            body,
            "checkinterval",
            existing.map_or(300, |j| j.check_interval),
            0..=i32::MAX,
        )
        .on("checkinterval")?,
        scheduling_shares,
        inputs: parse_inputs(body).on("inputs")?,
    })
}

async fn require_not_declarative(state: &AppState, project: &str) -> ApiResult<()> {
    let decl = hydra_db::projects::decl_file(&state.pool, project).await?;
    match decl {
        None => Err(ProjectPath::missing(project)),
        Some(Some(file)) if !file.is_empty() => Err(ApiError::forbidden(
            "The jobsets of a declarative project can only be changed in its specification.",
        )),
        Some(_) => Ok(()),
    }
}

/// Creates or updates jobset `project:jobset` from `body`: whether it
/// was created, and its name afterwards.
async fn store(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    jobset: &str,
    body: &Body,
) -> Result<(bool, String), Invalid> {
    viewer.require_login()?;
    require_not_declarative(state, project).await?;
    viewer.require_project_owner(&state.pool, project).await?;
    let mut conn = state.pool.acquire().await?;
    let existing = hydra_db::rows::jobset(&mut conn, project, jobset).await?;
    drop(conn);
    let f = jobset_form(body, jobset, existing.as_ref())?;
    let now = hydra_db::now();
    let mut tx = state.pool.begin().await?;
    if f.name != jobset && hydra_db::jobsets::exists(&mut tx, project, &f.name).await? {
        return Err(Invalid {
            field: "name",
            error: ApiError::Conflict(format!("Jobset ‘{project}:{}’ already exists.", f.name)),
        });
    }
    let trigger = (f.enabled != JobsetState::Disabled && f.check_interval > 0).then_some(now);
    let old_name = existing.is_some().then_some(jobset);
    hydra_db::jobsets::save(&mut tx, project, old_name, &f, trigger).await?;
    tx.commit().await?;
    Ok((existing.is_none(), f.name))
}

pub(crate) async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path((project, jobset)): Path<(String, String)>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    let (created, name) = store(&state, &viewer, &project, &jobset, &body).await?;
    let uri = format!("{}jobset/{project}/{name}", base_url(&state, &headers));
    if created {
        Ok(Page::value(
            "jobset-created",
            json!({ "name": name, "uri": uri, "redirect": uri, "type": "jobset" }),
        )
        .with_status(StatusCode::CREATED)
        .with_header(header::LOCATION, &uri))
    } else {
        Ok(Page::value("jobset-updated", json!({ "redirect": uri })))
    }
}

/// `POST /jobset/<p>/<j>/evaluate`: the page's "Evaluate this jobset"
/// (`eval-jobset`, the owner or an administrator), as `/api/push` with
/// `force`; then back to the jobset.
pub(crate) async fn evaluate(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    jobset: JobsetPath,
) -> ApiResult<Response> {
    viewer.require_login()?;
    viewer
        .require_role_or_owner(&state.pool, "eval-jobset", &jobset.project)
        .await?;
    hydra_db::jobsets::trigger(
        &state.pool,
        &jobset.project,
        &jobset.jobset,
        hydra_db::now(),
        true,
    )
    .await?;
    Ok(super::actions::back_saying(
        &state,
        &headers,
        &format!("jobset/{}/{}", jobset.project, jobset.jobset),
        "The jobset will be evaluated as soon as an evaluator is free.",
    ))
}

/// Who turned dynamic RunCommand hooks off for the jobsets of `project`:
/// the server, or the project; `None` when both allow them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DynamicOff {
    Server,
    Project,
}

async fn dynamic_off(state: &AppState, project: &str) -> ApiResult<Option<DynamicOff>> {
    if !state.config.web.dynamic_run_command {
        return Ok(Some(DynamicOff::Server));
    }
    let mut conn = state.pool.acquire().await?;
    let allows = hydra_db::rows::project(&mut conn, project)
        .await?
        .is_some_and(|p| p.enable_dynamic_run_command);
    Ok((!allows).then_some(DynamicOff::Project))
}

/// Whether dynamic RunCommand hooks run for a jobset of `project` whose
/// own flag is `jobset_flag`: "Yes", or "No" with who turned them off
/// (the server, the project or the jobset).
pub(crate) async fn dynamic_run_command_state(
    state: &AppState,
    project: &str,
    jobset_flag: bool,
) -> ApiResult<String> {
    Ok(match (dynamic_off(state, project).await?, jobset_flag) {
        (Some(DynamicOff::Server), _) => "No (disabled on this server)".into(),
        (Some(DynamicOff::Project), _) => format!("No (disabled in project ‘{project}’)"),
        (None, false) => "No (disabled in this jobset)".into(),
        (None, true) => "Yes".into(),
    })
}

/// `?filter=` (name), `?status=`, `?system=`, `?all=1` and
/// `?showInactive=1` of the jobs matrix.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct MatrixQuery {
    filter: Option<String>,
    /// `succeeded`, `failed` or `queued`: of the job's newest build shown.
    status: Option<String>,
    system: Option<String>,
    all: Option<String>,
    #[serde(rename = "showInactive")]
    show_inactive: Option<String>,
}

/// Jobs the matrix shows without a filter, unless `all=1`.
const MATRIX_JOBS: usize = 250;
/// Inactive jobs the matrix lists at most (it says how many there are).
const INACTIVE_JOBS: i64 = 1000;

/// `/jobset/<p>/<j>/jobs-tab`: the status of each job in the latest
/// evaluations (rows: jobs; columns: evaluations, newest first).
pub(crate) async fn jobs_tab(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Query(q): Query<MatrixQuery>,
) -> ApiResult<Page> {
    matrix(&state, &jobset, &q, false).await
}

/// `/jobset/<p>/<j>/channels-tab`: the same for the jobs that make
/// channels.
pub(crate) async fn channels_tab(
    State(state): State<AppState>,
    jobset: JobsetPath,
    Query(q): Query<MatrixQuery>,
) -> ApiResult<Page> {
    matrix(&state, &jobset, &q, true).await
}

async fn matrix(
    state: &AppState,
    jobset: &JobsetPath,
    q: &MatrixQuery,
    channels: bool,
) -> ApiResult<Page> {
    let filter = q.filter.as_deref().unwrap_or_default().trim().to_string();
    let evals = views::eval::matrix_evals(&state.pool, jobset.id).await?;
    let ids: Vec<EvalId> = evals.iter().map(|(id, _)| *id).collect();
    let cells = views::eval::matrix_cells(&state.pool, &ids, &filter, channels).await?;
    // The systems there are, for the filter's choices; then the filters.
    let mut systems: Vec<String> = cells.iter().map(|c| c.system.clone()).collect();
    systems.sort();
    systems.dedup();
    let status = q.status.as_deref().map(str::trim).unwrap_or_default();
    let system = q.system.as_deref().map(str::trim).unwrap_or_default();
    if !matches!(status, "" | "succeeded" | "failed" | "queued") {
        return Err(ApiError::bad_request(format!(
            "Invalid status ‘{status}’: use succeeded, failed or queued."
        )));
    }
    // Jobs with a build in these evaluations are active, filtered or not.
    let mut active: Vec<String> = cells.iter().map(|c| c.job.clone()).collect();
    active.dedup();
    let cells = filter_cells(cells, status, system);
    let mut jobs: Vec<String> = cells.iter().map(|c| c.job.clone()).collect();
    jobs.dedup();
    let total = jobs.len();
    let limited = filter.is_empty() && q.all.as_deref() != Some("1") && total > MATRIX_JOBS;
    // Jobs with builds, but none in these evaluations.
    let show_inactive = !channels && q.show_inactive.as_deref() == Some("1");
    let (inactive, inactive_total) = if show_inactive {
        views::eval::inactive_jobs(&state.pool, jobset.id, &active, &filter, INACTIVE_JOBS).await?
    } else {
        (Vec::new(), 0)
    };
    // Cells come by job name: those up to the last job shown.
    let last = limited.then(|| jobs[MATRIX_JOBS - 1].clone());
    let cells: Vec<_> = cells
        .into_iter()
        .filter(|c| last.as_ref().is_none_or(|l| c.job <= *l))
        .collect();
    let mut page = matrix_page(jobset, &filter, &evals, json!(cells), total, limited)
        .with_extra("channels", json!(channels))
        .with_extra("status", json!(status))
        .with_extra("system", json!(system))
        .with_extra("systems", json!(systems));
    if show_inactive {
        page = page
            .with_extra("inactive", json!(inactive))
            .with_extra("inactive_total", json!(inactive_total));
    }
    Ok(page)
}

/// The cells of `system` (all when empty), of the jobs whose newest build
/// shown is in `status` (all when empty). Cells come by job, newest first.
fn filter_cells(
    cells: Vec<views::eval::MatrixCell>,
    status: &str,
    system: &str,
) -> Vec<views::eval::MatrixCell> {
    let cells: Vec<_> = cells
        .into_iter()
        .filter(|c| system.is_empty() || c.system == system)
        .collect();
    if status.is_empty() {
        return cells;
    }
    let mut wanted = std::collections::HashSet::new();
    let mut last: Option<&str> = None;
    for c in &cells {
        if last != Some(c.job.as_str()) {
            last = Some(c.job.as_str());
            if c.state() == status {
                wanted.insert(c.job.clone());
            }
        }
    }
    cells
        .into_iter()
        .filter(|c| wanted.contains(&c.job))
        .collect()
}

fn matrix_page(
    jobset: &JobsetPath,
    filter: &str,
    evals: &[(EvalId, i32)],
    cells: Value,
    total: usize,
    limited: bool,
) -> Page {
    Page::value(
        "jobset-jobs",
        json!({
            "project": jobset.project,
            "jobset": jobset.jobset,
            "evals": evals.iter().map(|(id, t)| json!({"id": id, "timestamp": t})).collect::<Vec<_>>(),
            "cells": cells,
            "jobs": total,
            "limited": limited,
            "filter": filter,
        }),
    )
}

/// Which jobset form a page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FormKind {
    Create,
    Edit,
    Clone,
    FromEval(EvalId),
}

/// The jobset form's page: `jobset` (JSON like `/jobset/P/J`'s) filled
/// in, where it posts to, a refusal by its field, and what the form says
/// beside its fields: the shares of all jobsets, and who turned off
/// dynamic RunCommand or email notification.
async fn form_page(
    state: &AppState,
    project: &str,
    jobset: Option<&str>,
    kind: FormKind,
    data: Value,
    refused: Option<&Invalid>,
) -> ApiResult<Page> {
    // A new jobset (or a clone) is not among them yet.
    let own = if kind == FormKind::Edit { jobset } else { None };
    let other_shares =
        hydra_db::jobsets::other_shares(&state.pool, project, own.unwrap_or_default()).await?;
    let dynamic_blocker = dynamic_off(state, project).await?.map(|off| match off {
        DynamicOff::Server => "Dynamic RunCommand is disabled on this server (<dynamicruncommand> enable = 1 in hydra.conf turns it on).".to_string(),
        DynamicOff::Project => format!("Dynamic RunCommand is disabled in project ‘{project}’."),
    });
    let email = state.config.notify.email_notification;
    let (title, action) = match kind {
        FormKind::Create => (
            format!("Creating jobset in project {project}"),
            format!("/project/{project}/create-jobset"),
        ),
        FormKind::Edit => (
            format!("Editing jobset {project}:{}", jobset.unwrap_or_default()),
            format!("/jobset/{project}/{}/edit", jobset.unwrap_or_default()),
        ),
        FormKind::Clone => (
            format!("Cloning jobset {project}:{}", jobset.unwrap_or_default()),
            format!("/project/{project}/create-jobset"),
        ),
        FormKind::FromEval(id) => (
            format!(
                "Creating jobset from evaluation {id} of {project}:{}",
                jobset.unwrap_or_default()
            ),
            format!("/project/{project}/create-jobset"),
        ),
    };
    let mut page = Page::value("jobset-form", data)
        .with_extra("title", json!(title))
        .with_extra("action", json!(action))
        .with_extra("project", json!(project))
        .with_extra("input_types", json!(INPUT_TYPES))
        .with_extra("other_shares", json!(other_shares))
        .with_extra("dynamic_blocker", json!(dynamic_blocker))
        .with_extra("email_notification", json!(email));
    if let Some(e) = refused {
        page = page
            .with_extra("field", json!(e.field))
            .with_extra("error", json!(e.error.to_string()))
            .with_status(e.error.status());
    }
    Ok(page)
}

/// The form's fields back as a jobset's JSON: the inputs come as rows
/// `input-N-name`, `-type`, `-value`, `-emailresponsible` and `-remove`.
fn form_body(body: &Body) -> Body {
    let mut out = body.clone();
    out.retain(|k, _| !k.starts_with("input-"));
    let mut inputs = serde_json::Map::new();
    for n in 0.. {
        let field = |f: &str| form::text(body, &format!("input-{n}-{f}"));
        let Some(name) = field("name") else { break };
        let name = name.trim().to_string();
        if name.is_empty() || form::flag(body, &format!("input-{n}-remove")) {
            continue;
        }
        inputs.insert(
            name,
            json!({
                "type": field("type").unwrap_or_default(),
                "value": field("value").unwrap_or_default(),
                "emailresponsible": form::flag(body, &format!("input-{n}-emailresponsible")),
            }),
        );
    }
    out.insert("inputs".into(), Value::Object(inputs));
    // Unticked boxes are left out of a form: here they mean "off".
    for flag in ["visible", "enableemail", "enable_dynamic_run_command"] {
        out.entry(flag).or_insert_with(|| json!("0"));
    }
    out
}

/// `GET /project/<p>/create-jobset`.
pub(crate) async fn create_form(
    State(state): State<AppState>,
    viewer: Viewer,
    project: ProjectPath,
) -> ApiResult<Page> {
    viewer.require_login()?;
    require_not_declarative(&state, &project.name).await?;
    viewer
        .require_project_owner(&state.pool, &project.name)
        .await?;
    let defaults = json!({
        "enabled": 1, "visible": true, "type": 0, "checkinterval": 300,
        "schedulingshares": 100, "keepnr": 3, "nixexprpath": "release.nix",
        "inputs": {},
    });
    form_page(
        &state,
        &project.name,
        None,
        FormKind::Create,
        defaults,
        None,
    )
    .await
}

/// `?cloneJobset=1` on the edit form.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EditQuery {
    #[serde(rename = "cloneJobset")]
    clone_jobset: Option<String>,
}

/// `GET /jobset/<p>/<j>/edit` (`?cloneJobset=1` to clone).
pub(crate) async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    jobset: JobsetPath,
    Query(q): Query<EditQuery>,
) -> ApiResult<Page> {
    let kind = if q.clone_jobset.is_some_and(|c| c != "0") {
        FormKind::Clone
    } else {
        FormKind::Edit
    };
    existing_form(&state, &viewer, &jobset, kind).await
}

/// `GET /jobset/<p>/<j>/clone`.
pub(crate) async fn clone_form(
    State(state): State<AppState>,
    viewer: Viewer,
    jobset: JobsetPath,
) -> ApiResult<Page> {
    existing_form(&state, &viewer, &jobset, FormKind::Clone).await
}

/// The form filled from jobset `jobset`; a clone's name is left blank.
async fn existing_form(
    state: &AppState,
    viewer: &Viewer,
    jobset: &JobsetPath,
    kind: FormKind,
) -> ApiResult<Page> {
    viewer.require_login()?;
    require_not_declarative(state, &jobset.project).await?;
    viewer
        .require_project_owner(&state.pool, &jobset.project)
        .await?;
    let mut data = json!(
        views::jobset(&state.pool, &jobset.project, &jobset.jobset)
            .await?
            .ok_or_else(|| JobsetPath::missing(&jobset.project, &jobset.jobset))?
    );
    if kind != FormKind::Edit
        && let Value::Object(map) = &mut data
    {
        map.insert("name".into(), json!(""));
    }
    form_page(
        state,
        &jobset.project,
        Some(&jobset.jobset),
        kind,
        data,
        None,
    )
    .await
}

/// `GET /eval/<id>/create-jobset`: the evaluation's jobset with its
/// inputs fixed at the evaluation's values (`URI REVISION`).
pub(crate) async fn from_eval_form(
    State(state): State<AppState>,
    viewer: Viewer,
    eval: EvalPath,
) -> ApiResult<Page> {
    viewer.require_login()?;
    require_not_declarative(&state, &eval.project).await?;
    viewer
        .require_project_owner(&state.pool, &eval.project)
        .await?;
    let mut data = json!(
        views::jobset(&state.pool, &eval.project, &eval.jobset)
            .await?
            .ok_or_else(|| JobsetPath::missing(&eval.project, &eval.jobset))?
    );
    let evals = views::evals_json(&state.pool, &[eval.id]).await?;
    let fixed = evals
        .first()
        .and_then(|e| e.get("jobsetevalinputs"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Value::Object(map) = &mut data {
        map.insert("name".into(), json!(""));
        if let Some(Value::Object(inputs)) = map.get_mut("inputs") {
            for (name, input) in inputs.iter_mut() {
                let Some(e) = fixed.get(name) else { continue };
                let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
                let value = match (text("uri"), text("revision")) {
                    ("", _) => text("value").to_string(),
                    (uri, "") => uri.to_string(),
                    (uri, rev) => format!("{uri} {rev}"),
                };
                if let Value::Object(input) = input {
                    input.insert("value".into(), json!(value));
                }
            }
        }
    }
    form_page(
        &state,
        &eval.project,
        Some(&eval.jobset),
        FormKind::FromEval(eval.id),
        data,
        None,
    )
    .await
}

/// A browser's submission: on success to the jobset's page, else the form
/// again with the refusal by its field.
async fn submitted(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    project: &str,
    jobset: Option<&str>,
    body: &Body,
) -> ApiResult<Response> {
    let body = form_body(body);
    let name = jobset.map_or_else(
        || form::text(&body, "name").unwrap_or_default(),
        String::from,
    );
    let kind = if jobset.is_some() {
        FormKind::Edit
    } else {
        FormKind::Create
    };
    let refused = if jobset.is_none() && !names::jobset(&name) {
        Err(refuse(
            "name",
            format!("Invalid jobset identifier ‘{name}’."),
        ))
    } else if jobset.is_none()
        && hydra_db::jobsets::id_of(&state.pool, project, &name)
            .await?
            .is_some()
    {
        Err(Invalid {
            field: "name",
            error: ApiError::Conflict(format!("Jobset ‘{project}:{name}’ already exists.")),
        })
    } else {
        store(state, viewer, project, &name, &body).await
    };
    match refused {
        Ok((created, name)) => {
            let anchor = if created { "" } else { "#tabs-configuration" };
            Ok(super::actions::back_to(
                state,
                headers,
                &format!("jobset/{project}/{name}{anchor}"),
            ))
        }
        Err(e) if e.shown_on_form() => {
            Ok(
                form_page(state, project, jobset, kind, Value::Object(body), Some(&e))
                    .await?
                    .into_response(),
            )
        }
        Err(e) => Err(e.error),
    }
}

/// `POST /project/<p>/create-jobset` (also for clones and evaluations).
pub(crate) async fn create_submitted(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    project: ProjectPath,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    submitted(&state, &headers, &viewer, &project.name, None, &body).await
}

/// `POST /jobset/<p>/<j>/edit`.
pub(crate) async fn edit_submitted(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    jobset: JobsetPath,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    submitted(
        &state,
        &headers,
        &viewer,
        &jobset.project,
        Some(&jobset.jobset),
        &body,
    )
    .await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Page> {
    viewer.require_admin()?;
    require_not_declarative(&state, &project).await?;
    let id = jobset_id(&state, &project, &jobset).await?;
    let mut tx = state.pool.begin().await?;
    hydra_db::jobsets::delete_with_builds(&mut tx, &[id]).await?;
    tx.commit().await?;
    Ok(Page::value(
        "jobset-deleted",
        json!({ "redirect": format!("{}project/{project}", base_url(&state, &headers)) }),
    ))
}

async fn jobset_id(
    state: &AppState,
    project: &str,
    jobset: &str,
) -> ApiResult<hydra_db::ids::JobsetId> {
    hydra_db::jobsets::id_of(&state.pool, project, jobset)
        .await?
        .ok_or_else(|| JobsetPath::missing(project, jobset))
}

pub(crate) async fn evals(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    jobset: JobsetPath,
    Query(q): Query<PageQuery>,
) -> ApiResult<Page> {
    let position = Position::of(&q);
    let list = views::evals_page(&state.pool, Some(jobset.id), &position, PER_PAGE).await?;
    let page = Page::value("jobset-evals", list.body)
        .with_extra("project", json!(jobset.project))
        .with_extra("jobset", json!(jobset.jobset));
    if !wanted {
        return Ok(page);
    }
    let first = position.first_index(PER_PAGE);
    super::eval::with_summaries(&state, page, &list.ids, first, list.total).await
}

pub(crate) async fn errors(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Page> {
    let j = views::jobset(&state.pool, &project, &jobset)
        .await?
        .ok_or_else(|| JobsetPath::missing(&project, &jobset))?;
    Ok(Page::new("jobset-errors", j))
}

async fn latest_eval_to(
    state: &AppState,
    headers: &HeaderMap,
    jobset: &JobsetPath,
    rest: Option<&str>,
) -> ApiResult<Response> {
    let eval = hydra_db::evals::latest_finished(&state.pool, &jobset.project, &jobset.jobset, None)
        .await?;
    let eval = eval.ok_or_else(|| ApiError::not_found("No finished evaluation."))?;
    Ok(redirect_below(
        state,
        headers,
        &format!("eval/{eval}"),
        rest,
    ))
}

pub(crate) async fn latest_eval(
    State(state): State<AppState>,
    headers: HeaderMap,
    jobset: JobsetPath,
) -> ApiResult<Response> {
    latest_eval_to(&state, &headers, &jobset, None).await
}

pub(crate) async fn latest_eval_rest(
    State(state): State<AppState>,
    headers: HeaderMap,
    jobset: JobsetPath,
    Path((_, _, rest)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    latest_eval_to(&state, &headers, &jobset, Some(&rest)).await
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/jobset/{project}/{jobset}",
            get(show).put(save).delete(delete),
        )
        .route("/jobset/{project}/{jobset}/evals", get(evals))
        .route("/jobset/{project}/{jobset}/blockers", get(blockers))
        .route(
            "/jobset/{project}/{jobset}/edit",
            get(edit_form).post(edit_submitted),
        )
        .route("/jobset/{project}/{jobset}/clone", get(clone_form))
        .route("/jobset/{project}/{jobset}/jobs-tab", get(jobs_tab))
        .route("/jobset/{project}/{jobset}/channels-tab", get(channels_tab))
        .route(
            "/jobset/{project}/{jobset}/evaluate",
            axum::routing::post(evaluate),
        )
        .route(
            "/project/{project}/create-jobset",
            get(create_form).post(create_submitted),
        )
        .route("/eval/{id}/create-jobset", get(from_eval_form))
        .route("/jobset/{project}/{jobset}/errors", get(errors))
        .route("/jobset/{project}/{jobset}/latest-eval", get(latest_eval))
        .route(
            "/jobset/{project}/{jobset}/latest-eval/{*rest}",
            get(latest_eval_rest),
        )
}

/// The failed steps that block the most of the jobset's current builds.
async fn blockers(State(state): State<AppState>, jobset: JobsetPath) -> ApiResult<Page> {
    let ranked =
        views::blockers::ranked(&state.pool, views::blockers::Scope::Jobset(jobset.id)).await?;
    Ok(Page::new("blockers", ranked)
        .with_extra("scope", json!("jobset"))
        .with_extra(
            "name",
            json!(format!("{}:{}", jobset.project, jobset.jobset)),
        )
        .with_extra(
            "href",
            json!(format!("/jobset/{}/{}", jobset.project, jobset.jobset)),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::routes::form::body_of as body;

    fn refused(value: Value) -> String {
        match jobset_form(&body(value), "j", None) {
            Err(Invalid {
                error: ApiError::BadRequest(m),
                ..
            }) => m,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn a_legacy_jobset_gets_hydras_defaults_and_its_inputs() {
        let j = jobset_form(
            &body(json!({
                "nixexprinput": "src", "nixexprpath": "release.nix",
                "inputs": {"src": {"type": "git", "value": " https://example.org/r.git ", "emailresponsible": "on"}},
            })),
            "j",
            None,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(j.name, "j");
        assert_eq!(j.kind, JobsetType::Legacy);
        assert_eq!(j.enabled, JobsetState::Enabled);
        assert_eq!(
            (j.keepnr, j.check_interval, j.scheduling_shares),
            (3, 300, 100)
        );
        assert!(!j.hidden);
        assert_eq!(
            j.inputs,
            [InputRow {
                name: "src".into(),
                kind: "git".into(),
                value: Some("https://example.org/r.git".into()),
                email_responsible: true,
            }]
        );
    }

    #[test]
    fn a_flake_jobset_needs_its_uri_and_no_expression() {
        let j = jobset_form(&body(json!({"type": 1, "flake": "github:o/r"})), "j", None)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(j.kind, JobsetType::Flake);
        assert_eq!(
            (j.flake.as_deref(), j.nix_expr_input, j.nix_expr_path),
            (Some("github:o/r"), None, None)
        );
        assert!(refused(json!({"type": 1})).contains("flake URI"));
    }

    #[test]
    fn bad_fields_are_refused_with_their_name() {
        let legacy = |extra: Value| {
            let mut b = json!({"nixexprinput": "src", "nixexprpath": "release.nix"});
            if let (Value::Object(b), Value::Object(extra)) = (&mut b, extra) {
                b.extend(extra);
            }
            b
        };
        assert!(refused(json!({"name": "no spaces"})).contains("‘no spaces’"));
        assert!(
            refused(json!({"nixexprinput": "src", "nixexprpath": "/abs.nix"})).contains("relative")
        );
        assert!(
            refused(json!({"nixexprinput": "src", "nixexprpath": "a/../b.nix"}))
                .contains("relative")
        );
        assert!(refused(legacy(json!({"enabled": 4}))).contains("enabled"));
        assert!(refused(legacy(json!({"schedulingshares": 0}))).contains("positive"));
        assert!(refused(legacy(json!({"inputs": {"1x": {"type": "git"}}}))).contains("‘1x’"));
        assert!(refused(legacy(json!({"inputs": {"x": {"type": "cvs"}}}))).contains("‘cvs’"));
        assert!(
            refused(legacy(
                json!({"inputs": {"x": {"type": "boolean", "value": "yes"}}})
            ))
            .contains("Boolean")
        );
        assert!(
            refused(legacy(
                json!({"inputs": {"x": {"type": "eval", "value": "a:b:c:d"}}})
            ))
            .contains("evaluation ID")
        );
    }
}
