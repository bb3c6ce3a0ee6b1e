//! `/project/<p>`: show, create or update (PUT), delete.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::json;

use super::form::{self, Body};
use super::names;
use crate::auth::{Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::params::Params;
use crate::state::AppState;
use crate::views;

pub async fn show(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Page> {
    let project = views::project(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Project ‘{name}’ doesn't exist.")))?;
    Ok(Page::new("project", project))
}

/// The declarative fields of a body: `declarative: {file, type, value}` or
/// the form's `declfile`, `decltype`, `declvalue`.
fn declarative(body: &Body) -> (String, String, String) {
    if let Some(serde_json::Value::Object(d)) = body.get("declarative") {
        return (
            form::text(d, "file").unwrap_or_default(),
            form::text(d, "type").unwrap_or_default(),
            form::text(d, "value").unwrap_or_default(),
        );
    }
    (
        form::text(body, "declfile").unwrap_or_default(),
        form::text(body, "decltype").unwrap_or_default(),
        form::text(body, "declvalue").unwrap_or_default(),
    )
}

pub async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(name): Path<String>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    let account = viewer.require_login()?.clone();
    let mut conn = state.pool.acquire().await?;
    let existing = hydra_db::rows::project(&mut conn, &name).await?;
    let creating = existing.is_none();
    if creating {
        if !(viewer.is_admin() || viewer.has_role("create-projects")) {
            return Err(ApiError::forbidden(
                "You are not authorised to create projects.",
            ));
        }
    } else {
        viewer.require_project_owner(&state.pool, &name).await?;
    }
    let new_name = form::text(&body, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name.clone());
    if !names::project(&new_name) {
        return Err(ApiError::bad_request(format!(
            "Invalid project identifier ‘{new_name}’."
        )));
    }
    let display_name = form::text(&body, "displayname").unwrap_or_default();
    if display_name.trim().is_empty() {
        return Err(ApiError::bad_request("The display name is required."));
    }
    let owner = match form::text(&body, "owner").filter(|o| !o.is_empty()) {
        Some(owner) if viewer.is_admin() => owner,
        Some(owner) if existing.as_ref().is_some_and(|p| p.owner == owner) => owner,
        Some(owner) if !creating || owner != account.name => {
            return Err(ApiError::forbidden(
                "Only administrators can change the owner.",
            ));
        }
        _ => existing
            .as_ref()
            .map(|p| p.owner.clone())
            .unwrap_or_else(|| account.name.clone()),
    };
    if hydra_db::rows::user(&mut conn, &owner).await?.is_none() {
        return Err(ApiError::bad_request(format!(
            "User ‘{owner}’ doesn't exist."
        )));
    }
    if new_name != name
        && hydra_db::rows::project(&mut conn, &new_name)
            .await?
            .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "Project ‘{new_name}’ already exists."
        )));
    }
    let (decl_file, decl_type, decl_value) = declarative(&body);
    let enabled = if body.contains_key("enabled") {
        form::flag(&body, "enabled")
    } else {
        creating || existing.as_ref().is_some_and(|p| p.enabled == 1)
    };
    let visible = if body.contains_key("visible") {
        form::flag(&body, "visible")
    } else {
        creating || existing.as_ref().is_some_and(|p| p.hidden == 0)
    };
    let description = form::text(&body, "description").unwrap_or_default();
    let homepage = form::text(&body, "homepage").unwrap_or_default();
    let dyn_rc = form::flag(&body, "enable_dynamic_run_command");
    let declarative = !decl_file.is_empty();
    let decl = |v: &String| declarative.then(|| v.clone());
    if declarative && (decl_type.is_empty() || decl_value.is_empty()) {
        return Err(ApiError::bad_request(
            "A declarative project needs the type and value of its input.",
        ));
    }

    let mut tx = state.pool.begin().await?;
    if creating {
        sqlx::query(
            "insert into Projects (name, displayName, description, homepage, owner, enabled, hidden, \
             enable_dynamic_run_command, declfile, decltype, declvalue) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&new_name)
        .bind(&display_name)
        .bind(&description)
        .bind(&homepage)
        .bind(&owner)
        .bind(i32::from(enabled))
        .bind(i32::from(!visible))
        .bind(dyn_rc)
        .bind(decl(&decl_file))
        .bind(decl(&decl_type))
        .bind(decl(&decl_value))
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(
            "update Projects set name = $12, displayName = $2, description = $3, homepage = $4, owner = $5, \
             enabled = $6, hidden = $7, enable_dynamic_run_command = $8, declfile = $9, decltype = $10, \
             declvalue = $11 where name = $1",
        )
        .bind(&name)
        .bind(&display_name)
        .bind(&description)
        .bind(&homepage)
        .bind(&owner)
        .bind(i32::from(enabled))
        .bind(i32::from(!visible))
        .bind(dyn_rc)
        .bind(decl(&decl_file))
        .bind(decl(&decl_type))
        .bind(decl(&decl_value))
        .bind(&new_name)
        .execute(&mut *tx)
        .await?;
    }
    if declarative {
        hydra_db::declarative::ensure_jobsets_jobset(&mut tx, &new_name).await?;
    } else {
        sqlx::query("delete from Jobsets where project = $1 and name = '.jobsets'")
            .bind(&new_name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    let uri = format!("{}project/{new_name}", base_url(&state, &headers));
    if creating {
        Ok(Page::value(
            "project-created",
            json!({ "name": new_name, "uri": uri, "redirect": uri, "type": "project" }),
        )
        .with_status(StatusCode::CREATED)
        .with_header(header::LOCATION, &uri))
    } else {
        Ok(Page::value("project-updated", json!({ "redirect": uri })))
    }
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    let mut conn = state.pool.acquire().await?;
    if hydra_db::rows::project(&mut conn, &name).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "Project ‘{name}’ doesn't exist."
        )));
    }
    viewer.require_project_owner(&state.pool, &name).await?;
    // The delete trigger tells the queue runner.
    let jobsets: Vec<i32> = sqlx::query_scalar("select id from Jobsets where project = $1")
        .bind(&name)
        .fetch_all(&mut *conn)
        .await?;
    drop(conn);
    let mut tx = state.pool.begin().await?;
    views::delete_builds_of_jobsets(&mut tx, &jobsets).await?;
    sqlx::query("delete from Projects where name = $1")
        .bind(&name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Page::value(
        "project-deleted",
        json!({ "redirect": base_url(&state, &headers) }),
    ))
}
