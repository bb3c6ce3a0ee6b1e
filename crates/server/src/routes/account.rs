//! Accounts: signing in and out, the current user, user records, and API
//! tokens.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::form::{self, Body};
use super::names;
use crate::auth::{self, Account, ClientAddress, Viewer, base_url, digest, is_secure, new_secret};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::{Page, WantsPage};
use crate::params::Params;
use crate::state::AppState;

/// Hydra's User JSON.
fn user_json(account: &Account) -> Value {
    json!({
        "username": account.name,
        "fullname": account.full_name.clone().unwrap_or_default(),
        "emailaddress": account.email_address,
        "userroles": account.roles,
    })
}

/// The 404 of a user that does not exist.
fn no_such_user(name: &str) -> ApiError {
    ApiError::not_found(format!("User ‘{name}’ doesn't exist."))
}

async fn load_account(state: &AppState, name: &str) -> ApiResult<Account> {
    auth::account(&state.pool, name)
        .await?
        .ok_or_else(|| no_such_user(name))
}

/// `POST /login` with `{username, password}` (JSON or form): a new session,
/// a 302 to `/current-user` with the user as the body.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    ClientAddress(address): ClientAddress,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    let username = form::text(&body, "username").unwrap_or_default();
    let password = form::text(&body, "password").unwrap_or_default();
    state.passwords.may_try(&username, &address)?;
    if let Some(ldap) = &state.config.web.ldap {
        // The directory first, as Hydra; a refusal falls back to the
        // local accounts.
        match crate::ldap::authenticate(ldap, &username, &password).await {
            Ok(Some(person)) => {
                let login = hydra_db::users::external_login(
                    &state.pool,
                    &hydra_db::users::External {
                        name: &username,
                        full_name: &person.full_name,
                        email: &person.email,
                        kind: "LDAP",
                        roles: Some(&person.roles),
                    },
                )
                .await?;
                match login {
                    Ok(()) => {
                        state.passwords.succeeded(&username, &address);
                        tracing::info!(user = %username, roles = ?person.roles, "signed in with LDAP");
                        let next = form::text(&body, "next")
                            .and_then(|n| local_path(&n).map(String::from))
                            .unwrap_or_else(|| "current-user".into());
                        return signed_in(&state, &headers, &viewer, &username, &next).await;
                    }
                    Err(refused) => {
                        tracing::warn!(user = %username, "LDAP sign-in refused: {refused}")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(user = %username, error = %e, "LDAP cannot be asked; trying local accounts")
            }
        }
    }
    let stored = hydra_db::users::password_hash(&state.pool, &username).await?;
    let check = state.passwords.check(&password, stored.as_deref()).await?;
    let hydra_db::password::Verified::Yes { rehash } = check else {
        state.passwords.failed(&username, &address);
        tracing::info!(user = %username, %address, "failed sign-in");
        // A browser's form shows the sign-in page again with the reason;
        // API clients read `{"error": …}` with 403, as from Hydra.
        return Ok(
            Page::value("login", json!({ "error": "Bad username or password." }))
                .with_extra("next", json!(form::text(&body, "next")))
                .with_extra("username", json!(username))
                .with_extra("github", json!(github_sign_in(&state)))
                .with_extra("oidc", oidc_providers(&state))
                .with_extra("google_client_id", json!(google_sign_in(&state)))
                .with_status(StatusCode::FORBIDDEN)
                .into_response(),
        );
    };
    state.passwords.succeeded(&username, &address);
    if rehash {
        let hashed = state.passwords.hash(password).await?;
        hydra_db::users::set_password_hash(&state.pool, &username, &hashed).await?;
    }
    // The sign-in page says where to go next; API clients get the user.
    let next = form::text(&body, "next")
        .and_then(|n| local_path(&n).map(String::from))
        .unwrap_or_else(|| "current-user".into());
    signed_in(&state, &headers, &viewer, &username, &next).await
}

/// `path` below the base URL, without its leading `/`, when it is a path
/// of this site (not `//host`, not a URL, no backslash).
pub(crate) fn local_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let safe =
        !rest.starts_with('/') && !path.contains('\\') && !path.chars().any(char::is_control);
    safe.then_some(rest)
}

/// A new session for `username` (ending the viewer's old one): a 302 to
/// `next` under the base URL with the session cookie, and the User JSON.
pub(crate) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    username: &str,
    next: &str,
) -> ApiResult<Response> {
    let secret = auth::start_session(&state.pool, username, viewer.session.as_deref()).await?;
    let account = load_account(state, username).await?;
    let mut response = Page::value("current-user", user_json(&account))
        .with_status(StatusCode::FOUND)
        .with_header(
            header::LOCATION,
            &format!("{}{next}", base_url(state, headers)),
        )
        .into_response();
    auth::set_session_cookie(
        response.headers_mut(),
        Some(&secret),
        is_secure(state, headers),
    );
    Ok(response)
}

/// Where the sign-in page returns to: `?next=`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the sign-in page, which returns to `?next=` (a path of
/// this site), else to the page that linked to it.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Page {
    let base = base_url(&state, &headers);
    let from_referer = headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix(base.as_str()))
        .map(|rest| format!("/{rest}"));
    let next = q
        .next
        .or(from_referer)
        .filter(|n| local_path(n).is_some() && !n.starts_with("/login"))
        .unwrap_or_else(|| "/".into());
    Page::value("login", json!({}))
        .with_extra("next", json!(next))
        .with_extra("github", json!(github_sign_in(&state)))
        .with_extra("oidc", oidc_providers(&state))
        .with_extra("google_client_id", json!(google_sign_in(&state)))
}

/// Google's client id, when Google sign-in is enabled.
pub(crate) fn google_sign_in(state: &AppState) -> Option<String> {
    let web = &state.config.web;
    web.google_client_id
        .clone()
        .filter(|id| web.enable_google_login && !id.trim().is_empty())
}

/// The OpenID Connect providers: `[[name, display name], …]`.
pub(crate) fn oidc_providers(state: &AppState) -> serde_json::Value {
    json!(
        state
            .config
            .web
            .oidc
            .iter()
            .map(|p| [p.name.clone(), p.display_name.clone()])
            .collect::<Vec<_>>()
    )
}

/// Whether GitHub sign-in is configured.
pub(crate) fn github_sign_in(state: &AppState) -> bool {
    state
        .config
        .web
        .github_client_id
        .as_deref()
        .is_some_and(|id| !id.trim().is_empty())
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
) -> ApiResult<Response> {
    if let Some(session) = &viewer.session {
        hydra_db::sessions::end(&state.pool, session).await?;
    }
    // A browser's form goes back to the front page; API clients get 204.
    let mut response = if crate::negotiate::wants_json(&headers) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let base = base_url(&state, &headers);
        // An OpenID Connect user is signed out at the provider too.
        let to = match &viewer.account {
            Some(account) => super::oidc::end_session(&state, account, &base).await,
            None => None,
        }
        .unwrap_or(base);
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(to) = HeaderValue::from_str(&to) {
            r.headers_mut().insert(header::LOCATION, to);
        }
        r
    };
    auth::set_session_cookie(response.headers_mut(), None, is_secure(&state, &headers));
    if response.status() == StatusCode::SEE_OTHER {
        super::actions::say(&mut response, "You are signed out.");
    }
    Ok(response)
}

pub(crate) async fn current_user(viewer: Viewer) -> ApiResult<Page> {
    let account = viewer.require_login()?;
    Ok(Page::value("current-user", user_json(account)))
}

/// Only the user themselves or an admin.
fn require_self_or_admin(viewer: &Viewer, name: &str) -> ApiResult<()> {
    let account = viewer.require_login()?;
    if account.name == name || viewer.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("You can only change your own account."))
    }
}

pub(crate) async fn show(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    require_self_or_admin(&viewer, &name)?;
    let account = load_account(&state, &name).await?;
    let page = Page::value("user", user_json(&account));
    if !wanted {
        return Ok(page);
    }
    preferences(&state, page, &name).await
}

/// What only the preferences page shows: the settings, the API tokens and
/// the roles there are.
async fn preferences(state: &AppState, page: Page, name: &str) -> ApiResult<Page> {
    let mut conn = state.pool.acquire().await?;
    let user = hydra_db::rows::user(&mut conn, name)
        .await?
        .ok_or_else(|| no_such_user(name))?;
    drop(conn);
    Ok(page
        .with_extra(
            "settings",
            json!({
                "emailonerror": user.email_on_error != 0,
                "publicdashboard": user.public_dashboard,
                "type": user.kind,
            }),
        )
        .with_extra(
            "tokens",
            crate::views::account::tokens(&state.pool, name).await?,
        )
        .with_extra("roles", json!(hydra_db::users::ROLES)))
}

/// `POST /user/<name>`: the preferences form. Unticked checkboxes are
/// absent from a form, so here they mean "off"; roles come as one
/// checkbox each (`role-<name>`), read only from administrators.
pub(crate) async fn save_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(name): Path<String>,
    Params(mut body): Params<Body>,
) -> ApiResult<Response> {
    require_self_or_admin(&viewer, &name)?;
    for flag in ["emailonerror", "publicdashboard"] {
        body.entry(flag).or_insert_with(|| json!("0"));
    }
    let roles: Vec<Value> = hydra_db::users::ROLES
        .iter()
        .filter(|r| form::flag(&body, &format!("role-{r}")))
        .map(|r| json!(r))
        .collect();
    body.retain(|k, _| !k.starts_with("role-"));
    if viewer.is_admin() {
        body.insert("roles".into(), Value::Array(roles));
    }
    if !viewer.is_admin() {
        // Only administrators change email addresses; the form shows it
        // to others without letting them.
        body.remove("emailaddress");
    }
    match apply_user(&state, &viewer, &name, &body, false).await {
        Ok(()) => Ok(super::actions::back_saying(
            &state,
            &headers,
            &format!("user/{name}"),
            "The changes have been saved.",
        )),
        Err(e @ (ApiError::BadRequest(_) | ApiError::Forbidden(_) | ApiError::Conflict(_))) => {
            let account = load_account(&state, &name).await?;
            let page = Page::value("user", user_json(&account))
                .with_extra("error", json!(e.to_string()))
                .with_status(e.status());
            Ok(preferences(&state, page, &name).await?.into_response())
        }
        Err(e) => Err(e),
    }
}

pub(crate) use crate::passwords::MIN_PASSWORD_LENGTH;

/// The hash of the password a body sets (`password`, checked against
/// `password2` when given), or `None` when it sets none.
pub(crate) async fn new_password(state: &AppState, body: &Body) -> ApiResult<Option<String>> {
    let Some(password) = form::text(body, "password").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if let Some(again) = form::text(body, "password2")
        && again != password
    {
        return Err(ApiError::bad_request(
            "The passwords you specified did not match.",
        ));
    }
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(ApiError::bad_request(format!(
            "The password must be at least {MIN_PASSWORD_LENGTH} characters long."
        )));
    }
    Ok(Some(state.passwords.hash(password).await?))
}

/// Applies a user body: fullname, password (twice, ≥ 6 characters),
/// emailaddress and roles (admin only), emailonerror, publicdashboard.
async fn apply_user(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
    body: &Body,
    creating: bool,
) -> ApiResult<()> {
    let mut conn = state.pool.acquire().await?;
    let mut user = match hydra_db::rows::user(&mut conn, name).await? {
        Some(user) if !creating => user,
        Some(_) => {
            return Err(ApiError::Conflict(format!("User ‘{name}’ already exists.")));
        }
        None if creating => hydra_db::rows::User {
            name: name.to_string(),
            full_name: None,
            email_address: String::new(),
            password: "!".into(),
            email_on_error: 0,
            kind: "hydra".into(),
            public_dashboard: false,
        },
        None => return Err(no_such_user(name)),
    };
    if let Some(full) = form::text(body, "fullname") {
        user.full_name = Some(full);
    }
    if let Some(hashed) = new_password(state, body).await? {
        user.password = hashed;
    }
    if body.contains_key("emailaddress") {
        if !viewer.is_admin() && !creating {
            return Err(ApiError::forbidden(
                "Only administrators can change email addresses.",
            ));
        }
        user.email_address = form::text(body, "emailaddress").unwrap_or_default();
    }
    if body.contains_key("emailonerror") {
        user.email_on_error = i32::from(form::flag(body, "emailonerror"));
    }
    if body.contains_key("publicdashboard") {
        user.public_dashboard = form::flag(body, "publicdashboard");
    }
    let roles: Option<Vec<String>> = match body.get("roles") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        ),
        Some(Value::String(s)) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect(),
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "‘roles’ must be a list of role names.",
            ));
        }
    };
    if let Some(roles) = &roles {
        if !viewer.is_admin() {
            return Err(ApiError::forbidden("Only administrators can change roles."));
        }
        if let Some(bad) = roles
            .iter()
            .find(|r| !hydra_db::users::ROLES.contains(&r.as_str()))
        {
            return Err(ApiError::bad_request(format!("Unknown role ‘{bad}’.")));
        }
        if !creating && !roles.iter().any(|r| r == "admin") {
            keep_an_administrator(&mut conn, name).await?;
        }
    }
    let mut tx = state.pool.begin().await?;
    if creating {
        hydra_db::users::insert(&mut tx, &user).await?;
    } else {
        hydra_db::users::update(&mut tx, &user).await?;
    }
    if let Some(roles) = roles {
        hydra_db::users::wipe_roles(&mut tx, name).await?;
        for role in roles {
            hydra_db::users::add_role(&mut tx, name, &role).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn save(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    require_self_or_admin(&viewer, &name)?;
    apply_user(&state, &viewer, &name, &body, false).await?;
    let account = load_account(&state, &name).await?;
    Ok(Page::value("user", user_json(&account)))
}

/// Refuses a change that would take the `admin` role from `name` when no
/// one else has it: someone must stay able to administer the server.
async fn keep_an_administrator(conn: &mut sqlx::PgConnection, name: &str) -> ApiResult<()> {
    let is_admin = hydra_db::users::roles(conn, name)
        .await?
        .iter()
        .any(|r| r == "admin");
    if is_admin && !hydra_db::users::has_other_admin(conn, name).await? {
        return Err(ApiError::bad_request(format!(
            "‘{name}’ is the only administrator: make someone else one first."
        )));
    }
    Ok(())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    remove_account(&state, &viewer, &name).await?;
    Ok(Page::value("user-deleted", json!({ "deleted": name })))
}

/// `POST /user/<name>/delete`: a browser's deletion. An administrator
/// goes back to the users; someone who deleted their own account is
/// signed out, to the front page.
pub(crate) async fn delete_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    remove_account(&state, &viewer, &name).await?;
    let own = viewer.account.as_ref().is_some_and(|a| a.name == name);
    if !own {
        return Ok(super::actions::back_saying(
            &state,
            &headers,
            "admin/users",
            &format!("User ‘{name}’ has been deleted."),
        ));
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(to) = HeaderValue::from_str(&base_url(&state, &headers)) {
        response.headers_mut().insert(header::LOCATION, to);
    }
    auth::set_session_cookie(response.headers_mut(), None, is_secure(&state, &headers));
    super::actions::say(&mut response, "Your account has been deleted.");
    Ok(response)
}

/// `POST /user/<name>/reset-password` (administrators): a new random
/// password for an account that signs in with one here, shown once to the
/// administrator to pass on; the account's sessions end.
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    viewer.require_admin()?;
    let account = load_account(&state, &name).await?;
    if !matches!(account.kind.as_str(), "hydra" | "") {
        return Err(ApiError::bad_request(format!(
            "‘{name}’ signs in with {}, not with a password here.",
            account.kind
        )));
    }
    let password = random_password();
    let hash = state.passwords.hash(password.clone()).await?;
    hydra_db::users::set_password_hash(&state.pool, &name, &hash).await?;
    hydra_db::sessions::end_all(&state.pool, &name).await?;
    Ok(Page::value(
        "user-password",
        json!({ "username": name, "password": password }),
    ))
}

/// A random password of 20 letters and digits (about 119 bits), without
/// the ones that look alike.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Deletes account `name` if `viewer` may: themselves or an
/// administrator; not while it owns projects, nor the only administrator.
async fn remove_account(state: &AppState, viewer: &Viewer, name: &str) -> ApiResult<()> {
    require_self_or_admin(viewer, name)?;
    let owns = hydra_db::projects::owned_by(&state.pool, name).await?;
    if owns > 0 {
        return Err(ApiError::Conflict(format!(
            "User ‘{name}’ owns {owns} project(s); give them to someone else first."
        )));
    }
    keep_an_administrator(&mut *state.pool.acquire().await?, name).await?;
    if !hydra_db::users::delete(&state.pool, name).await? {
        return Err(no_such_user(name));
    }
    Ok(())
}

/// `GET /register` (admin): the form for a new user.
pub(crate) async fn register_form(viewer: Viewer) -> ApiResult<Page> {
    viewer.require_admin()?;
    Ok(Page::value("register", json!({})).with_extra("roles", json!(hydra_db::users::ROLES)))
}

/// `PUT /register` (admin): a new user from `{username, fullname,
/// emailaddress, password, roles}`.
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    WantsPage(wanted): WantsPage,
    viewer: Viewer,
    Params(mut body): Params<Body>,
) -> ApiResult<Response> {
    viewer.require_admin()?;
    if wanted {
        // The form's role boxes, one per role.
        let roles: Vec<Value> = hydra_db::users::ROLES
            .iter()
            .filter(|r| form::flag(&body, &format!("role-{r}")))
            .map(|r| json!(r))
            .collect();
        body.retain(|k, _| !k.starts_with("role-"));
        body.insert("roles".into(), Value::Array(roles));
    }
    let name = form::text(&body, "username").unwrap_or_default();
    let created = if names::user(&name) {
        apply_user(&state, &viewer, &name, &body, true).await
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid user name ‘{name}’."
        )))
    };
    match created {
        Ok(()) if wanted => Ok(super::actions::back_to(&state, &headers, "admin/users")),
        Ok(()) => {
            let account = load_account(&state, &name).await?;
            let uri = format!("{}user/{name}", base_url(&state, &headers));
            Ok(Page::value("user", user_json(&account))
                .with_status(StatusCode::CREATED)
                .with_header(header::LOCATION, &uri)
                .into_response())
        }
        Err(e @ (ApiError::BadRequest(_) | ApiError::Conflict(_))) if wanted => {
            let mut shown = body.clone();
            shown.remove("password");
            shown.remove("password2");
            Ok(Page::value("register", Value::Object(shown))
                .with_extra("roles", json!(hydra_db::users::ROLES))
                .with_extra("error", json!(e.to_string()))
                .with_status(e.status())
                .into_response())
        }
        Err(e) => Err(e),
    }
}

/// Tokens are managed by their owner (admins may list and revoke).
fn require_token_owner(viewer: &Viewer, name: &str) -> ApiResult<()> {
    require_self_or_admin(viewer, name)
}

pub(crate) async fn tokens(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    require_token_owner(&viewer, &name)?;
    let value = crate::views::account::tokens(&state.pool, &name).await?;
    Ok(Page::value("user-tokens", value))
}

/// A new token for the signed-in user, shown once.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Params(body): Params<Body>,
) -> ApiResult<Page> {
    let account = viewer.require_login()?;
    if account.name != name {
        return Err(ApiError::forbidden(
            "Tokens can only be created by their owner.",
        ));
    }
    let label = form::text(&body, "name").unwrap_or_default();
    if label.trim().is_empty() || label.len() > 200 {
        return Err(ApiError::bad_request(
            "A token needs a name (up to 200 characters).",
        ));
    }
    let token = format!("{}{}", auth::TOKEN_PREFIX, new_secret());
    let id =
        hydra_db::sessions::add_token(&state.pool, &name, &label, &digest(&token), hydra_db::now())
            .await?;
    Ok(Page::value(
        "user-token",
        json!({ "id": id, "name": label, "token": token }),
    )
    .with_extra("user", json!(name))
    .with_status(StatusCode::CREATED))
}

/// `POST /user/<name>/tokens/<id>/delete`: a browser's revocation, then
/// back to the preferences.
pub(crate) async fn revoke_token_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    revoke_token(State(state.clone()), viewer, Path((name.clone(), id))).await?;
    Ok(super::actions::back_saying(
        &state,
        &headers,
        &format!("user/{name}#tabs-tokens"),
        "The token has been revoked: it no longer works.",
    ))
}

pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require_token_owner(&viewer, &name)?;
    let id: i32 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid token ID ‘{id}’.")))?;
    if !hydra_db::sessions::revoke_token(&state.pool, &name, id).await? {
        return Err(ApiError::not_found(format!(
            "User ‘{name}’ has no token {id}."
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `/dashboard/<name>`: the user's starred jobs with their latest builds,
/// the current builds they maintain, the jobsets of their projects. For
/// them, administrators, or anyone when they made it public.
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Page> {
    let mut conn = state.pool.acquire().await?;
    let user = hydra_db::rows::user(&mut conn, &name)
        .await?
        .ok_or_else(|| no_such_user(&name))?;
    drop(conn);
    let mine = viewer.account.as_ref().is_some_and(|a| a.name == name);
    if !(mine || viewer.is_admin() || user.public_dashboard) {
        return Err(ApiError::forbidden(format!(
            "The dashboard of ‘{name}’ is not public."
        )));
    }
    let pool = &state.pool;
    let mut starred: Vec<Value> = Vec::new();
    for row in crate::views::account::starred_builds(pool, &name).await? {
        let same = starred.last().is_some_and(|s| {
            s["project"] == row.project && s["jobset"] == row.jobset && s["job"] == row.job
        });
        if !same {
            starred.push(json!({
                "project": row.project, "jobset": row.jobset, "job": row.job, "builds": [],
            }));
        }
        if let (Some(id), Some(last)) = (row.id, starred.last_mut())
            && let Some(Value::Array(builds)) = last.get_mut("builds")
        {
            builds
                .push(json!({"id": id, "finished": row.finished, "buildstatus": row.buildstatus}));
        }
    }
    let my_jobs = if user.email_address.is_empty() {
        Vec::new()
    } else {
        crate::views::account::maintained_builds(pool, &user.email_address).await?
    };
    let mut my_jobsets = Vec::new();
    for project in crate::views::account::owned_projects(pool, &name).await? {
        let jobsets = crate::views::project::jobsets(pool, &project, true).await?;
        my_jobsets.push(json!({"project": project, "jobsets": jobsets}));
    }
    Ok(Page::value(
        "dashboard",
        json!({
            "user": name,
            "emailaddress": user.email_address,
            "starred": starred,
            "myjobs": my_jobs,
            "myjobsets": my_jobsets,
        }),
    ))
}

/// `/user/<name>/dashboard`: Hydra's other address of the dashboard.
pub(crate) async fn dashboard_redirect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    super::actions::back_to(&state, &headers, &format!("dashboard/{name}"))
}

/// `/dashboard/<name>/my-jobs-tab` and `…/my-jobsets-tab`: the pieces
/// Hydra's dashboard loads into its tabs; here the tabs are in the page,
/// so these lead to them.
pub(crate) async fn dashboard_tab(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, tab)): Path<(String, String)>,
) -> ApiResult<Response> {
    let anchor = match tab.as_str() {
        "my-jobs-tab" => "my-jobs",
        "my-jobsets-tab" => "my-jobsets",
        _ => return Err(ApiError::not_found("Page not found.")),
    };
    Ok(super::actions::back_to(
        &state,
        &headers,
        &format!("dashboard/{name}#tabs-{anchor}"),
    ))
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/current-user", get(current_user))
        .route("/register", get(register_form).put(register).post(register))
        .route(
            "/user/{name}",
            get(show).put(save).post(save_form).delete(delete),
        )
        .route("/user/{name}/tokens", get(tokens).post(create_token))
        .route("/dashboard/{name}", get(dashboard))
        .route("/dashboard/{name}/{tab}", get(dashboard_tab))
        .route("/user/{name}/dashboard", get(dashboard_redirect))
        .route(
            "/user/{name}/tokens/{id}",
            axum::routing::delete(revoke_token),
        )
        .route("/user/{name}/tokens/{id}/delete", post(revoke_token_form))
        .route("/user/{name}/delete", post(delete_form))
        .route("/user/{name}/reset-password", post(reset_password))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_paths_of_this_site_are_followed_after_signing_in() {
        use super::local_path;
        assert_eq!(local_path("/jobset/p/j"), Some("jobset/p/j"));
        assert_eq!(local_path("/"), Some(""));
        assert_eq!(local_path("//evil.example"), None);
        assert_eq!(local_path("https://evil.example/"), None);
        assert_eq!(local_path("/\\evil.example"), None);
        assert_eq!(local_path("/a\nb"), None);
    }
}
