//! First-run setup: while no account has the `admin` role, the link that
//! `hydra up` (or `hydra server`) prints, `/setup?token=…`, lets a browser
//! create the first administrator and signs them in. The token is random,
//! only its digest is kept in memory, and it is refused once an
//! administrator exists, however that administrator was made.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::account::{new_password, signed_in};
use super::form::{self, Body};
use super::names;
use crate::auth::{Viewer, digest};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::params::Params;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// Whether `token` is the one this server offered.
fn valid_token(state: &AppState, token: &str) -> bool {
    state.setup_token.get().is_some_and(|wanted| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            wanted.as_bytes(),
            digest(token).as_bytes(),
        ))
    })
}

/// Refuses unless setup is still open and `token` is this server's.
async fn check(state: &AppState, token: &str) -> ApiResult<()> {
    let mut conn = state.pool.acquire().await?;
    if hydra_db::users::has_admin(&mut conn).await? {
        return Err(ApiError::Gone(
            "This instance already has an administrator: sign in at /login.".into(),
        ));
    }
    if !valid_token(state, token) {
        return Err(ApiError::forbidden(
            "This setup link is not valid. Use the link the running hydra printed in its log.",
        ));
    }
    Ok(())
}

/// `GET /setup?token=…`: the form.
pub(crate) async fn show(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> ApiResult<Page> {
    let token = query.token.unwrap_or_default();
    check(&state, &token).await?;
    Ok(Page::value("setup", json!({ "token": token })))
}

/// `POST /setup` with `token, username, fullname, emailaddress, password,
/// password2` (form or JSON): creates the administrator, signs them in and
/// goes to the front page.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Params(body): Params<Body>,
) -> ApiResult<Response> {
    let token = form::text(&body, "token").unwrap_or_default();
    check(&state, &token).await?;
    let username = form::text(&body, "username").unwrap_or_default();
    let fullname = form::text(&body, "fullname").unwrap_or_default();
    let emailaddress = form::text(&body, "emailaddress").unwrap_or_default();
    // The form again, with what was typed and what is wrong.
    let again = |error: String| {
        Page::value(
            "setup",
            json!({
                "error": error,
                "token": token,
                "username": username,
                "fullname": fullname,
                "emailaddress": emailaddress,
            }),
        )
        .with_status(StatusCode::BAD_REQUEST)
        .into_response()
    };
    if !names::user(&username) {
        return Ok(again(format!(
            "‘{username}’ is not a valid user name: use lower-case letters, digits, _ and ., starting with a letter."
        )));
    }
    let password = match new_password(&state, &body).await {
        Ok(Some(hashed)) => hashed,
        Ok(None) => return Ok(again("Choose a password.".into())),
        Err(ApiError::BadRequest(e)) => return Ok(again(e)),
        Err(e) => return Err(e),
    };
    let user = hydra_db::rows::User {
        name: username.clone(),
        full_name: Some(fullname.clone()).filter(|f| !f.is_empty()),
        email_address: emailaddress.clone(),
        password,
        email_on_error: 0,
        kind: "hydra".into(),
        public_dashboard: false,
    };
    if !hydra_db::users::create_first_admin(&state.pool, &user).await? {
        return Err(ApiError::Gone(
            "This instance already has an administrator: sign in at /login.".into(),
        ));
    }
    tracing::info!(user = %username, "the first administrator was created");
    signed_in(&state, &headers, &viewer, &username, "").await
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/setup", get(show).post(create))
}
