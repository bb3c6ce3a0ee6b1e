//! Sign-in with GitHub (Hydra's `/github-redirect` and `/github-login`),
//! with what Hydra lacks: a `state` parameter bound to the browser (a
//! cookie, checked in constant time and spent once), and the return path
//! (`after`, a path of this site only) honoured.
//!
//! Accounts follow Hydra's email rule (`hydra_db::users::email_login`):
//! the user name is the verified primary address, a new account has no
//! roles, and an account of another type is refused.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use super::account::{local_path, signed_in};
use super::oidc::{encode, form};
use super::redirect;
use crate::auth::{Viewer, base_url, is_secure, new_secret, same_secret, set_cookie};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The cookie that carries a sign-in's state and return path.
const COOKIE: &str = "hydra_oauth";

/// `?after=`: where to go once signed in.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Start {
    after: Option<String>,
}

/// The client id and secret, when GitHub sign-in is configured.
fn github_client(state: &AppState) -> ApiResult<(String, String)> {
    let web = &state.config.web;
    let id = web
        .github_client_id
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| ApiError::not_found("Signing in with GitHub is not configured here."))?;
    let secret = match (&web.github_client_secret, &web.github_client_secret_file) {
        (Some(s), _) => s.expose().trim().to_owned(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| {
                tracing::error!(file = %file.display(), error = %e, "cannot read github_client_secret_file");
                ApiError::Internal("The GitHub client secret cannot be read.".into())
            })?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(ApiError::Internal(
                "github_client_id is set without github_client_secret.".into(),
            ));
        }
    };
    Ok((id, secret))
}

/// `GET /github-redirect?after=/path`: to GitHub's authorization page,
/// with a fresh `state` remembered in a cookie for 10 minutes.
async fn github_redirect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(start): Query<Start>,
) -> ApiResult<Response> {
    let (client_id, _) = github_client(&state)?;
    let nonce = new_secret();
    let after = start
        .after
        .as_deref()
        .and_then(local_path)
        .unwrap_or_default()
        .to_owned();
    let base = base_url(&state, &headers);
    let query = form(&[
        ("client_id", client_id.as_str()),
        ("scope", "user:email"),
        ("state", nonce.as_str()),
        ("redirect_uri", &format!("{base}github-login")),
    ]);
    let mut response = redirect(&format!(
        "{}/login/oauth/authorize?{query}",
        state.config.web.github_url
    ));
    set_cookie(
        response.headers_mut(),
        COOKIE,
        &format!("{nonce}.{}", encode(&after)),
        600,
        is_secure(&state, &headers),
    );
    Ok(response)
}

/// GitHub's answer: `?code=&state=` (or `?error=`).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The state and return path the browser's cookie remembers.
fn remembered(headers: &HeaderMap) -> Option<(String, String)> {
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
    let raw = jar.get(COOKIE)?.value().to_owned();
    let (nonce, after) = raw.split_once('.')?;
    let after = percent_encoding::percent_decode_str(after)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((nonce.to_owned(), after))
}

/// `GET /github-login?code=&state=`: checks the state, trades the code for
/// a token, reads the verified primary address and signs in.
async fn github_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Query(back): Query<Callback>,
) -> ApiResult<Response> {
    let (client_id, client_secret) = github_client(&state)?;
    let secure = is_secure(&state, &headers);
    let (nonce, after) = remembered(&headers).ok_or_else(|| {
        ApiError::bad_request(
            "This sign-in was not started from this browser (or took over 10 minutes); start again.",
        )
    })?;
    // Spent whatever happens next: a state is good for one try.
    let spend = |mut response: Response| {
        set_cookie(response.headers_mut(), COOKIE, "", 0, secure);
        response
    };
    if !back
        .state
        .as_deref()
        .is_some_and(|s| same_secret(s, &nonce))
    {
        return Ok(spend(
            ApiError::bad_request("The sign-in's state does not match; start again.")
                .into_response(),
        ));
    }
    if let Some(error) = back.error {
        let why = back.error_description.unwrap_or(error);
        return Ok(spend(
            ApiError::forbidden(format!("GitHub did not sign you in: {why}")).into_response(),
        ));
    }
    let code = back
        .code
        .ok_or_else(|| ApiError::bad_request("GitHub's answer has no code."))?;
    let base = base_url(&state, &headers);
    let identity = github_identity(&state, &client_id, &client_secret, &code, &base).await;
    let (email, name) = match identity {
        Ok(found) => found,
        Err(e) => return Ok(spend(e.into_response())),
    };
    let login = hydra_db::users::email_login(
        &state.pool,
        &email,
        &name,
        "github",
        &state.config.web.allowed_domains,
    )
    .await?;
    let user = match login {
        Ok(user) => user,
        Err(refused) => {
            return Ok(spend(
                ApiError::forbidden(format!("Cannot sign in: {refused}.")).into_response(),
            ));
        }
    };
    tracing::info!(%user, "signed in with GitHub");
    let response = signed_in(&state, &headers, &viewer, &user, &after).await?;
    Ok(spend(response))
}

/// The verified primary address and the name of the GitHub user who
/// granted `code`.
async fn github_identity(
    state: &AppState,
    client_id: &str,
    client_secret: &str,
    code: &str,
    base: &str,
) -> ApiResult<(String, String)> {
    let client = super::oidc::client()?;
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "GitHub sign-in: {what}");
        ApiError::Unavailable(format!("GitHub could not be asked ({what}); try again."))
    };
    let token: Value = client
        .post(format!(
            "{}/login/oauth/access_token",
            state.config.web.github_url
        ))
        .header("Accept", "application/json")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("code", code),
            ("redirect_uri", &format!("{base}github-login")),
        ]))
        .send()
        .await
        .map_err(|e| unavailable("the token", &e))?
        .json()
        .await
        .map_err(|e| unavailable("the token", &e))?;
    let Some(access) = token["access_token"].as_str() else {
        let why = token["error_description"]
            .as_str()
            .or(token["error"].as_str())
            .unwrap_or("no access token");
        return Err(ApiError::forbidden(format!(
            "GitHub refused the sign-in: {why}"
        )));
    };
    let api = &state.config.evaluator.github_api_url;
    let get = |path: &str| {
        client
            .get(format!("{api}{path}"))
            .header("Accept", "application/vnd.github+json")
            .header("Authorization", format!("token {access}"))
            .send()
    };
    let emails: Value = get("/user/emails")
        .await
        .map_err(|e| unavailable("the addresses", &e))?
        .json()
        .await
        .map_err(|e| unavailable("the addresses", &e))?;
    let email = emails
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["verified"] == Value::Bool(true) && e["primary"] == Value::Bool(true))
        .and_then(|e| e["email"].as_str())
        .ok_or_else(|| {
            ApiError::forbidden("Your GitHub account has no verified primary email address.")
        })?
        .to_owned();
    let user: Value = get("/user")
        .await
        .map_err(|e| unavailable("the user", &e))?
        .json()
        .await
        .map_err(|e| unavailable("the user", &e))?;
    let name = user["name"]
        .as_str()
        .or(user["login"].as_str())
        .unwrap_or_default()
        .to_owned();
    Ok((email, name))
}

/// `POST /google-login` with `id_token` (what Google's sign-in button
/// gives the page): Google's `tokeninfo` vouches for the token, which must
/// be for `google_client_id` with a verified address; 204 with a session.
async fn google_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    crate::params::Params(body): crate::params::Params<super::form::Body>,
) -> ApiResult<Response> {
    let web = &state.config.web;
    let client_id = web
        .google_client_id
        .as_deref()
        .filter(|id| web.enable_google_login && !id.trim().is_empty())
        .ok_or_else(|| ApiError::not_found("Signing in with Google is not enabled here."))?;
    let token = super::form::text(&body, "id_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("id_token is missing."))?;
    let response = super::oidc::client()?
        .post(&web.google_tokeninfo_url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("id_token={}", encode(&token)))
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Google sign-in: tokeninfo");
            ApiError::Unavailable("Google could not be asked; try again.".into())
        })?;
    if !response.status().is_success() {
        return Err(ApiError::forbidden("Google does not vouch for this token."));
    }
    let info: Value = response.json().await.unwrap_or_default();
    if info["aud"].as_str() != Some(client_id) {
        return Err(ApiError::forbidden(
            "The token is meant for another client.",
        ));
    }
    let verified = matches!(&info["email_verified"], Value::Bool(true))
        || info["email_verified"].as_str() == Some("true");
    if !verified {
        return Err(ApiError::forbidden(
            "The Google account's address is not verified.",
        ));
    }
    let email = info["email"].as_str().unwrap_or_default();
    let name = info["name"].as_str().unwrap_or_default();
    let login =
        hydra_db::users::email_login(&state.pool, email, name, "google", &web.allowed_domains)
            .await?;
    let user =
        login.map_err(|refused| ApiError::forbidden(format!("Cannot sign in: {refused}.")))?;
    tracing::info!(%user, "signed in with Google");
    let mut response = signed_in(&state, &headers, &viewer, &user, "").await?;
    *response.status_mut() = axum::http::StatusCode::NO_CONTENT;
    response.headers_mut().remove(header::LOCATION);
    *response.body_mut() = axum::body::Body::empty();
    Ok(response)
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/github-redirect", get(github_redirect))
        .route("/github-login", get(github_login))
        .route("/google-login", axum::routing::post(google_login))
}
