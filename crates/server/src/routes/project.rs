//! `/project/<p>`: show, create or update (PUT), delete.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hydra_db::projects::ProjectRow;
use serde_json::json;

use super::form::{self, Body, Invalid, refuse};
use super::names;
use crate::auth::{Viewer, base_url};
use crate::error::{ApiError, ApiResult};
use crate::extract::ProjectPath;
use crate::negotiate::{Page, WantsPage};
use crate::params::Params;
use crate::state::AppState;
use crate::views;

pub(crate) async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    WantsPage(page): WantsPage,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    let project = views::project(&state.pool, &name)
        .await?
        .ok_or_else(|| ProjectPath::missing(&name))?;
    let mut shown = Page::new("project", project);
    if page {
        // Owners see the hidden jobsets too.
        let owner = viewer.is_project_owner(&state.pool, &name).await?;
        let jobsets = views::project::jobsets(&state.pool, &name, owner).await?;
        shown = shown
            .with_extra("jobsets", json!(jobsets))
            .with_extra("owner", json!(owner))
            .with_extra(
                "server_dynamic",
                json!(state.config.web.dynamic_run_command),
            )
            .with_extra(
                "pull_requests",
                super::pull_requests::overview(&state, &name).await?,
            );
    }
    Ok(shown)
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

/// Who saves a project.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Editor<'a> {
    pub name: &'a str,
    pub is_admin: bool,
}

/// The project a body describes, checked: `path_name` is the project in
/// the URL, `existing` its row when it exists.
pub(crate) fn project_form(
    body: &Body,
    path_name: &str,
    existing: Option<&hydra_db::rows::Project>,
    editor: Editor<'_>,
) -> Result<ProjectRow, Invalid> {
    let name = form::text(body, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| path_name.to_string());
    if !names::project(&name) {
        return Err(refuse(
            "name",
            format!("Invalid project identifier ‘{name}’."),
        ));
    }
    let display_name = form::text(body, "displayname").unwrap_or_default();
    if display_name.trim().is_empty() {
        return Err(refuse("displayname", "The display name is required."));
    }
    let creating = existing.is_none();
    let owner = match form::text(body, "owner").filter(|o| !o.is_empty()) {
        Some(owner) if editor.is_admin => owner,
        Some(owner) if existing.is_some_and(|p| p.owner == owner) => owner,
        Some(owner) if !creating || owner != editor.name => {
            return Err(Invalid {
                field: "owner",
                error: ApiError::forbidden("Only administrators can change the owner."),
            });
        }
        _ => existing.map_or_else(|| editor.name.to_string(), |p| p.owner.clone()),
    };
    let (decl_file, decl_type, decl_value) = declarative(body);
    let declarative = if decl_file.is_empty() {
        None
    } else if decl_type.is_empty() || decl_value.is_empty() {
        return Err(refuse(
            if decl_type.is_empty() {
                "decltype"
            } else {
                "declvalue"
            },
            "A declarative project needs the type and value of its input.",
        ));
    } else {
        Some((decl_file, decl_type, decl_value))
    };
    let enabled = if body.contains_key("enabled") {
        form::flag(body, "enabled")
    } else {
        existing.is_none_or(|p| p.enabled == 1)
    };
    let visible = if body.contains_key("visible") {
        form::flag(body, "visible")
    } else {
        existing.is_none_or(|p| p.hidden == 0)
    };
    Ok(ProjectRow {
        name,
        display_name,
        description: form::text(body, "description").unwrap_or_default(),
        homepage: form::text(body, "homepage").unwrap_or_default(),
        owner,
        enabled,
        hidden: !visible,
        dynamic_run_command: form::flag(body, "enable_dynamic_run_command"),
        declarative,
    })
}

/// Creates (when `existing` is `None`) or updates project `name` from
/// `body`; the project's name afterwards.
async fn store(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
    body: &Body,
) -> Result<(String, bool), Invalid> {
    let account = viewer.require_login()?.clone();
    let mut conn = state.pool.acquire().await?;
    let existing = hydra_db::rows::project(&mut conn, name).await?;
    let creating = existing.is_none();
    if creating {
        if !(viewer.is_admin() || viewer.has_role("create-projects")) {
            return Err(ApiError::forbidden("You are not authorised to create projects.").into());
        }
    } else {
        viewer.require_project_owner(&state.pool, name).await?;
    }
    let editor = Editor {
        name: &account.name,
        is_admin: viewer.is_admin(),
    };
    let project = project_form(body, name, existing.as_ref(), editor)?;
    if hydra_db::rows::user(&mut conn, &project.owner)
        .await?
        .is_none()
    {
        return Err(refuse(
            "owner",
            format!("User ‘{}’ doesn't exist.", project.owner),
        ));
    }
    if project.name != name
        && hydra_db::rows::project(&mut conn, &project.name)
            .await?
            .is_some()
    {
        return Err(Invalid {
            field: "name",
            error: ApiError::Conflict(format!("Project ‘{}’ already exists.", project.name)),
        });
    }
    drop(conn);

    let mut tx = state.pool.begin().await?;
    if creating {
        hydra_db::projects::insert(&mut tx, &project).await?;
    } else {
        hydra_db::projects::update(&mut tx, name, &project).await?;
    }
    if project.declarative.is_some() {
        hydra_db::declarative::ensure_jobsets_jobset(&mut tx, &project.name).await?;
    } else {
        hydra_db::declarative::remove_jobsets_jobset(&mut tx, &project.name).await?;
    }
    tx.commit().await?;
    Ok((project.name, creating))
}

pub(crate) async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(name): Path<String>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    let (new_name, creating) = store(&state, &viewer, &name, &body).await?;
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

/// The project form's page: `project` (JSON like `/project/P`'s) filled
/// in, and a refusal next to its field.
fn form_page(
    state: &AppState,
    path: Option<&str>,
    project: serde_json::Value,
    refused: Option<&Invalid>,
) -> Page {
    let mut page = Page::value("project-form", project)
        .with_extra("path", json!(path))
        .with_extra(
            "dynamic_allowed",
            json!(state.config.web.dynamic_run_command),
        );
    if let Some(e) = refused {
        page = page
            .with_extra("field", json!(e.field))
            .with_extra("error", json!(e.error.to_string()))
            .with_status(e.error.status());
    }
    page
}

/// The form's fields as a project's JSON, to show them again.
fn entered(body: &Body) -> serde_json::Value {
    let (file, kind, value) = declarative(body);
    json!({
        "name": form::text(body, "name"),
        "displayname": form::text(body, "displayname"),
        "description": form::text(body, "description"),
        "homepage": form::text(body, "homepage"),
        "owner": form::text(body, "owner"),
        "enabled": form::flag(body, "enabled"),
        "hidden": !form::flag(body, "visible"),
        "enable_dynamic_run_command": form::flag(body, "enable_dynamic_run_command"),
        "declarative": {"file": file, "type": kind, "value": value},
    })
}

/// `GET /create-project`.
pub(crate) async fn create_form(State(state): State<AppState>, viewer: Viewer) -> ApiResult<Page> {
    let account = viewer.require_login()?;
    if !(viewer.is_admin() || viewer.has_role("create-projects")) {
        return Err(ApiError::forbidden(
            "You are not authorised to create projects.",
        ));
    }
    Ok(form_page(
        &state,
        None,
        json!({"owner": account.name, "enabled": true, "hidden": false}),
        None,
    ))
}

/// `GET /project/<p>/edit`.
pub(crate) async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    project: ProjectPath,
) -> ApiResult<Page> {
    viewer
        .require_project_owner(&state.pool, &project.name)
        .await?;
    let json = views::project(&state.pool, &project.name)
        .await?
        .ok_or_else(|| ProjectPath::missing(&project.name))?;
    Ok(form_page(&state, Some(&project.name), json!(json), None))
}

/// A browser's submission of the project form: on success to the
/// project's page, else the form again with the refusal by its field.
async fn submitted(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    name: &str,
    creating: bool,
    body: &Body,
) -> ApiResult<Response> {
    // A form leaves unticked boxes out: here that means "off".
    let mut body = body.clone();
    for flag in ["enabled", "visible", "enable_dynamic_run_command"] {
        body.entry(flag).or_insert_with(|| json!("0"));
    }
    let body = &body;
    match store(state, viewer, name, body).await {
        Ok((new_name, _)) => {
            let anchor = if creating { "" } else { "#tabs-configuration" };
            Ok(super::actions::back_to(
                state,
                headers,
                &format!("project/{new_name}{anchor}"),
            ))
        }
        Err(e) if e.shown_on_form() => {
            let path = (!creating).then_some(name);
            Ok(form_page(state, path, entered(body), Some(&e)).into_response())
        }
        Err(e) => Err(e.error),
    }
}

/// `POST /create-project`: the name is the form's identifier.
pub(crate) async fn create_submitted(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    let name = form::text(&body, "name").unwrap_or_default();
    if !names::project(&name) {
        let e = refuse("name", format!("Invalid project identifier ‘{name}’."));
        return Ok(form_page(&state, None, entered(&body), Some(&e)).into_response());
    }
    if hydra_db::projects::exists(&state.pool, &name).await? {
        let e = Invalid {
            field: "name",
            error: ApiError::Conflict(format!("Project ‘{name}’ already exists.")),
        };
        return Ok(form_page(&state, None, entered(&body), Some(&e)).into_response());
    }
    submitted(&state, &headers, &viewer, &name, true, &body).await
}

/// `POST /project/<p>/edit`.
pub(crate) async fn edit_submitted(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    project: ProjectPath,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    submitted(&state, &headers, &viewer, &project.name, false, &body).await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    project: ProjectPath,
) -> ApiResult<Page> {
    remove_project(&state, &viewer, &project.name).await?;
    Ok(Page::value(
        "project-deleted",
        json!({ "redirect": base_url(&state, &headers) }),
    ))
}

/// `POST /project/<p>/delete`: a browser's deletion, then the front page.
pub(crate) async fn delete_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    project: ProjectPath,
) -> ApiResult<Response> {
    remove_project(&state, &viewer, &project.name).await?;
    Ok(super::actions::back_saying(
        &state,
        &headers,
        "",
        &format!("Project ‘{}’ has been deleted.", project.name),
    ))
}

/// Deletes project `name` with its jobsets and their builds, if `viewer`
/// owns it.
async fn remove_project(state: &AppState, viewer: &Viewer, name: &str) -> ApiResult<()> {
    viewer.require_project_owner(&state.pool, name).await?;
    let jobsets = hydra_db::projects::jobset_ids(&state.pool, name).await?;
    let mut tx = state.pool.begin().await?;
    hydra_db::jobsets::delete_with_builds(&mut tx, &jobsets).await?;
    hydra_db::projects::delete(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/project/{project}", get(show).put(save).delete(delete))
        .route("/project/{project}/delete", post(delete_form))
        .route("/create-project", get(create_form).post(create_submitted))
        .route(
            "/project/{project}/edit",
            get(edit_form).post(edit_submitted),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: serde_json::Value) -> Body {
        match value {
            serde_json::Value::Object(map) => map,
            _ => Body::new(),
        }
    }

    const ALICE: Editor<'static> = Editor {
        name: "alice",
        is_admin: false,
    };

    fn existing(owner: &str) -> hydra_db::rows::Project {
        hydra_db::rows::Project {
            name: "p".into(),
            display_name: "P".into(),
            description: None,
            enabled: 0,
            hidden: 1,
            owner: owner.into(),
            homepage: None,
            declfile: None,
            decltype: None,
            declvalue: None,
            enable_dynamic_run_command: false,
        }
    }

    #[test]
    fn a_new_project_is_enabled_visible_and_owned_by_its_creator() {
        let p = project_form(&body(json!({"displayname": "Hello"})), "hello", None, ALICE)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.name, "hello");
        assert_eq!(p.owner, "alice");
        assert!(p.enabled && !p.hidden);
        assert_eq!(p.declarative, None);
    }

    #[test]
    fn an_update_keeps_what_the_body_leaves_out() {
        let old = existing("bob");
        let p = project_form(
            &body(json!({"displayname": "P", "name": "q"})),
            "p",
            Some(&old),
            ALICE,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((p.name.as_str(), p.owner.as_str()), ("q", "bob"));
        assert!(!p.enabled && p.hidden);
    }

    #[test]
    fn bad_bodies_are_refused_with_the_field_named() {
        let refused =
            |v: serde_json::Value, existing: Option<&hydra_db::rows::Project>| match project_form(
                &body(v),
                "p",
                existing,
                ALICE,
            ) {
                Err(Invalid {
                    error: ApiError::BadRequest(m) | ApiError::Forbidden(m),
                    ..
                }) => m,
                other => panic!("accepted: {other:?}"),
            };
        assert!(refused(json!({}), None).contains("display name"));
        assert!(refused(json!({"displayname": "P", "name": "1 bad"}), None).contains("‘1 bad’"));
        assert!(refused(json!({"displayname": "P", "owner": "carol"}), None).contains("owner"));
        assert!(
            refused(json!({"displayname": "P", "declfile": "spec.json"}), None)
                .contains("type and value")
        );
        let old = existing("bob");
        assert!(
            refused(json!({"displayname": "P", "owner": "alice"}), Some(&old)).contains("owner")
        );
    }

    #[test]
    fn refusals_name_their_field_for_the_form() {
        let field = |v: serde_json::Value| {
            project_form(&body(v), "p", None, ALICE)
                .map(|_| ())
                .unwrap_err()
                .field
        };
        assert_eq!(field(json!({})), "displayname");
        assert_eq!(field(json!({"displayname": "P", "name": "1"})), "name");
        assert_eq!(
            field(json!({"displayname": "P", "owner": "carol"})),
            "owner"
        );
        assert_eq!(
            field(json!({"displayname": "P", "declfile": "s.json", "decltype": "git"})),
            "declvalue"
        );
    }

    #[test]
    fn administrators_may_give_a_project_to_anyone() {
        let admin = Editor {
            name: "root",
            is_admin: true,
        };
        let p = project_form(
            &body(json!({"displayname": "P", "owner": "carol"})),
            "p",
            None,
            admin,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.owner, "carol");
    }
}
