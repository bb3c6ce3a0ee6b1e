//! `/jobset/<p>/<j>`: show (renamed jobsets redirect), create or update
//! (PUT), delete, and its evaluations.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::form::{self, Body};
use super::root::{PER_PAGE, PageQuery, page_number};
use super::{names, redirect, redirect_below};
use crate::auth::{Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::params::Params;
use crate::state::AppState;
use crate::views;

/// Input types the evaluator knows.
pub const INPUT_TYPES: &[&str] = &[
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
];

fn missing(project: &str, jobset: &str) -> ApiError {
    ApiError::not_found(format!("Jobset ‘{project}:{jobset}’ doesn't exist."))
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Response> {
    if let Some(j) = views::jobset(&state.pool, &project, &jobset).await? {
        return Ok(Page::new("jobset", j).into_response());
    }
    let renamed: Option<String> =
        sqlx::query_scalar("select to_ from JobsetRenames where project = $1 and from_ = $2")
            .bind(&project)
            .bind(&jobset)
            .fetch_optional(&state.pool)
            .await?;
    match renamed {
        Some(to) => {
            let mut response = redirect(&format!(
                "{}jobset/{project}/{to}",
                base_url(&state, &headers)
            ));
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            Ok(response)
        }
        None => Err(missing(&project, &jobset)),
    }
}

/// A validated jobset body.
struct JobsetForm {
    name: String,
    kind: i32,
    description: String,
    nix_expr_input: Option<String>,
    nix_expr_path: Option<String>,
    flake: Option<String>,
    enabled: i32,
    enable_email: bool,
    dynamic_run_command: bool,
    email_override: String,
    hidden: bool,
    keepnr: i32,
    check_interval: i32,
    scheduling_shares: i32,
    inputs: Vec<(String, String, String, bool)>,
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

fn parse_inputs(body: &Body) -> ApiResult<Vec<(String, String, String, bool)>> {
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
        out.push((
            name.clone(),
            kind,
            value,
            form::flag(input, "emailresponsible"),
        ));
    }
    Ok(out)
}

fn parse_form(
    body: &Body,
    path_name: &str,
    existing: Option<&hydra_db::rows::Jobset>,
) -> ApiResult<JobsetForm> {
    let name = form::text(body, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| path_name.to_string());
    if !names::jobset(&name) {
        return Err(ApiError::bad_request(format!(
            "Invalid jobset identifier ‘{name}’."
        )));
    }
    let kind = form::integer(body, "type", existing.map_or(0, |j| j.kind), 0..=1)?;
    let (nix_expr_input, nix_expr_path, flake) = if kind == 0 {
        let input = form::text(body, "nixexprinput").unwrap_or_default();
        let path = form::text(body, "nixexprpath").unwrap_or_default();
        if !valid_input_name(&input) {
            return Err(ApiError::bad_request(format!(
                "Invalid input name ‘{input}’ for the Nix expression."
            )));
        }
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(ApiError::bad_request(format!(
                "Invalid Nix expression path ‘{path}’: it must be relative, without ‘..’."
            )));
        }
        (Some(input), Some(path), None)
    } else {
        let flake = form::text(body, "flake").unwrap_or_default();
        if flake.trim().is_empty() {
            return Err(ApiError::bad_request("A flake jobset needs a flake URI."));
        }
        (None, None, Some(flake))
    };
    let enabled = form::integer(body, "enabled", existing.map_or(1, |j| j.enabled), 0..=3)?;
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
    )?;
    if scheduling_shares <= 0 {
        return Err(ApiError::bad_request(format!(
            "The number of scheduling shares must be positive, not {scheduling_shares}."
        )));
    }
    Ok(JobsetForm {
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
        )?,
        check_interval: form::integer(
            body,
            "checkinterval",
            existing.map_or(300, |j| j.check_interval),
            0..=i32::MAX,
        )?,
        scheduling_shares,
        inputs: parse_inputs(body)?,
    })
}

async fn require_not_declarative(state: &AppState, project: &str) -> ApiResult<()> {
    let decl: Option<Option<String>> =
        sqlx::query_scalar("select declfile from Projects where name = $1")
            .bind(project)
            .fetch_optional(&state.pool)
            .await?;
    match decl {
        None => Err(ApiError::not_found(format!(
            "Project ‘{project}’ doesn't exist."
        ))),
        Some(Some(file)) if !file.is_empty() => Err(ApiError::forbidden(
            "The jobsets of a declarative project can only be changed in its specification.",
        )),
        Some(_) => Ok(()),
    }
}

pub async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path((project, jobset)): Path<(String, String)>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    viewer.require_login()?;
    require_not_declarative(&state, &project).await?;
    viewer.require_project_owner(&state.pool, &project).await?;
    let mut conn = state.pool.acquire().await?;
    let existing = hydra_db::rows::jobset(&mut conn, &project, &jobset).await?;
    drop(conn);
    let f = parse_form(&body, &jobset, existing.as_ref())?;
    let now = hydra_db::now();
    let mut tx = state.pool.begin().await?;
    if f.name != jobset {
        let taken: bool = sqlx::query_scalar(
            "select exists (select 1 from Jobsets where project = $1 and name = $2)",
        )
        .bind(&project)
        .bind(&f.name)
        .fetch_one(&mut *tx)
        .await?;
        if taken {
            return Err(ApiError::Conflict(format!(
                "Jobset ‘{project}:{}’ already exists.",
                f.name
            )));
        }
    }
    let trigger = (f.enabled != 0 && f.check_interval > 0).then_some(now);
    if existing.is_some() {
        sqlx::query(
            "update Jobsets set name = $3, description = $4, type = $5, nixExprInput = $6, nixExprPath = $7, \
             flake = $8, enabled = $9, enableEmail = $10, enable_dynamic_run_command = $11, emailOverride = $12, \
             hidden = $13, keepnr = $14, checkInterval = $15, schedulingShares = $16, \
             triggerTime = coalesce(triggerTime, $17) where project = $1 and name = $2",
        )
        .bind(&project)
        .bind(&jobset)
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.kind)
        .bind(&f.nix_expr_input)
        .bind(&f.nix_expr_path)
        .bind(&f.flake)
        .bind(f.enabled)
        .bind(i32::from(f.enable_email))
        .bind(f.dynamic_run_command)
        .bind(&f.email_override)
        .bind(i32::from(f.hidden))
        .bind(f.keepnr)
        .bind(f.check_interval)
        .bind(f.scheduling_shares)
        .bind(trigger)
        .execute(&mut *tx)
        .await?;
        if f.name != jobset {
            sqlx::query(
                "insert into JobsetRenames (project, from_, to_) values ($1, $2, $3) \
                 on conflict (project, from_) do update set to_ = excluded.to_",
            )
            .bind(&project)
            .bind(&jobset)
            .bind(&f.name)
            .execute(&mut *tx)
            .await?;
        }
    } else {
        sqlx::query(
            "insert into Jobsets (project, name, description, type, nixExprInput, nixExprPath, flake, enabled, \
             enableEmail, enable_dynamic_run_command, emailOverride, hidden, keepnr, checkInterval, \
             schedulingShares, triggerTime) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&project)
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.kind)
        .bind(&f.nix_expr_input)
        .bind(&f.nix_expr_path)
        .bind(&f.flake)
        .bind(f.enabled)
        .bind(i32::from(f.enable_email))
        .bind(f.dynamic_run_command)
        .bind(&f.email_override)
        .bind(i32::from(f.hidden))
        .bind(f.keepnr)
        .bind(f.check_interval)
        .bind(f.scheduling_shares)
        .bind(trigger)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("delete from JobsetInputs where project = $1 and jobset = $2")
        .bind(&project)
        .bind(&f.name)
        .execute(&mut *tx)
        .await?;
    for (name, kind, value, responsible) in &f.inputs {
        sqlx::query(
            "insert into JobsetInputs (project, jobset, name, type, emailResponsible) values ($1, $2, $3, $4, $5)",
        )
        .bind(&project)
        .bind(&f.name)
        .bind(name)
        .bind(kind)
        .bind(i32::from(*responsible))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into JobsetInputAlts (project, jobset, input, altnr, value) values ($1, $2, $3, 0, $4)",
        )
        .bind(&project)
        .bind(&f.name)
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    let uri = format!("{}jobset/{project}/{}", base_url(&state, &headers), f.name);
    if existing.is_none() {
        Ok(Page::value(
            "jobset-created",
            json!({ "name": f.name, "uri": uri, "redirect": uri, "type": "jobset" }),
        )
        .with_status(StatusCode::CREATED)
        .with_header(header::LOCATION, &uri))
    } else {
        Ok(Page::value("jobset-updated", json!({ "redirect": uri })))
    }
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Page> {
    viewer.require_admin()?;
    require_not_declarative(&state, &project).await?;
    let id = jobset_id(&state, &project, &jobset).await?;
    let mut tx = state.pool.begin().await?;
    views::delete_builds_of_jobsets(&mut tx, &[id]).await?;
    sqlx::query("delete from Jobsets where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Page::value(
        "jobset-deleted",
        json!({ "redirect": format!("{}project/{project}", base_url(&state, &headers)) }),
    ))
}

async fn jobset_id(state: &AppState, project: &str, jobset: &str) -> ApiResult<i32> {
    sqlx::query_scalar("select id from Jobsets where project = $1 and name = $2")
        .bind(project)
        .bind(jobset)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| missing(project, jobset))
}

pub async fn evals(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Page> {
    let id = jobset_id(&state, &project, &jobset).await?;
    let page = page_number(&q);
    let total: i64 = sqlx::query_scalar(
        "select count(*) from JobsetEvals where jobset_id = $1 and hasNewBuilds = 1",
    )
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    let ids: Vec<i32> = sqlx::query_scalar(
        "select id from JobsetEvals where jobset_id = $1 and hasNewBuilds = 1 \
         order by id desc offset $2 limit $3",
    )
    .bind(id)
    .bind((page - 1) * PER_PAGE)
    .bind(PER_PAGE)
    .fetch_all(&state.pool)
    .await?;
    let mut body = views::pages(page, PER_PAGE, total);
    body.insert(
        "evals".into(),
        Value::Array(views::evals_json(&state.pool, &ids).await?),
    );
    Ok(Page::value("jobset-evals", Value::Object(body)))
}

pub async fn errors(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Page> {
    let j = views::jobset(&state.pool, &project, &jobset)
        .await?
        .ok_or_else(|| missing(&project, &jobset))?;
    Ok(Page::new("jobset-errors", j))
}

async fn latest_eval_to(
    state: &AppState,
    headers: &HeaderMap,
    project: &str,
    jobset: &str,
    rest: Option<&str>,
) -> ApiResult<Response> {
    let id = jobset_id(state, project, jobset).await?;
    let eval: Option<i32> = sqlx::query_scalar(
        "select e.id from JobsetEvals e where e.jobset_id = $1 and e.hasNewBuilds = 1 \
         and not exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                         where m.eval = e.id and b.finished = 0) \
         order by e.id desc limit 1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let eval = eval.ok_or_else(|| ApiError::not_found("No finished evaluation."))?;
    Ok(redirect_below(
        state,
        headers,
        &format!("eval/{eval}"),
        rest,
    ))
}

pub async fn latest_eval(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Response> {
    latest_eval_to(&state, &headers, &project, &jobset, None).await
}

pub async fn latest_eval_rest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, jobset, rest)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    latest_eval_to(&state, &headers, &project, &jobset, Some(&rest)).await
}
