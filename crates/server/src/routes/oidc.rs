//! Sign-in with OpenID Connect providers (`<oidc><provider NAME>`):
//! `GET /oidc-redirect/NAME?after=PATH` sends the browser to the
//! provider with a fresh `state`, `nonce` and PKCE challenge (S256), kept
//! in `OidcLogins` for ten minutes and bound to the browser by a cookie;
//! `GET /oidc-callback/NAME` takes that state once (a replay finds
//! nothing), trades the code (HTTP Basic client authentication and the
//! PKCE verifier) for an ID token, and checks it: RS256 signature by a
//! key of the provider's JWKS (cached for a minute, fetched again for an
//! unknown `kid`), `iss`, `aud`, `exp`, `nbf`, the `nonce` and `sub`.
//! The account is `NAME:sub` of type `oidc`; a `hydra_roles` claim
//! replaces its roles.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hydra_config::oidc::OidcProvider;
use serde_json::Value;
use sha2::Digest;

use super::account::{local_path, signed_in};
use super::redirect;
use crate::auth::{Viewer, base_url, is_secure, same_secret, set_cookie};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The cookie that binds a sign-in to the browser that started it.
const COOKIE: &str = "hydra_oidc";
/// Seconds a sign-in may take.
const LOGIN_SECONDS: i32 = 600;
/// Seconds of clock difference allowed with the provider.
const LEEWAY: i64 = 60;

/// Fetched documents (discovery for an hour, key sets for a minute).
static CACHE: LazyLock<Mutex<HashMap<String, (Instant, Value)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The HTTP client of the sign-in routes (rustls with ring).
pub(crate) fn client() -> ApiResult<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("hydra/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ApiError::Internal(format!("cannot make an HTTP client: {e}")))
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "OpenID Connect: {what}");
    ApiError::Unavailable(format!(
        "The sign-in provider could not be asked ({what}); try again."
    ))
}

/// `url`'s JSON, from the cache when younger than `max_age` (unless
/// `fresh`).
async fn fetch_json(url: &str, max_age: Duration, fresh: bool) -> ApiResult<Value> {
    if !fresh
        && let Some((at, value)) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(url)
        && at.elapsed() < max_age
    {
        return Ok(value.clone());
    }
    let response = client()?
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| unavailable(url, &e))?;
    if !response.status().is_success() {
        return Err(unavailable(url, &response.status()));
    }
    let value: Value = response.json().await.map_err(|e| unavailable(url, &e))?;
    CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(url.to_owned(), (Instant::now(), value.clone()));
    Ok(value)
}

/// A provider's endpoints: explicit ones, else discovered.
struct Endpoints {
    issuer: String,
    authorization: String,
    token: String,
    jwks: String,
}

async fn endpoints(p: &OidcProvider) -> ApiResult<Endpoints> {
    let discovered = match &p.discovery_url {
        Some(url) => fetch_json(url, Duration::from_secs(3600), false).await?,
        None => Value::Null,
    };
    let pick = |explicit: &Option<String>, key: &str| {
        explicit
            .clone()
            .or_else(|| discovered[key].as_str().map(str::to_owned))
            .ok_or_else(|| {
                ApiError::Internal(format!("OpenID Connect provider {} has no {key}", p.name))
            })
    };
    Ok(Endpoints {
        issuer: pick(&p.issuer, "issuer")?,
        authorization: pick(&p.authorization_endpoint, "authorization_endpoint")?,
        token: pick(&p.token_endpoint, "token_endpoint")?,
        jwks: pick(&p.jwks_uri, "jwks_uri")?,
    })
}

fn provider<'a>(state: &'a AppState, name: &str) -> ApiResult<&'a OidcProvider> {
    state
        .config
        .web
        .oidc
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("There is no sign-in provider ‘{name}’.")))
}

/// Everything but RFC 3986's unreserved characters.
const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` for a query, a form body or (RFC 6749 §2.3.1) HTTP Basic client
/// credentials.
pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ENCODED).to_string()
}

/// `pairs` as `k=v&…`, each value percent-encoded: a query string or an
/// `application/x-www-form-urlencoded` body.
pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// `?after=`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Start {
    after: Option<String>,
}

/// `GET /oidc-redirect/NAME?after=PATH`.
async fn oidc_redirect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(start): Query<Start>,
) -> ApiResult<Response> {
    let p = provider(&state, &name)?;
    let ends = endpoints(p).await?;
    let nonce_state = random();
    let nonce = random();
    let verifier = random();
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let after = start
        .after
        .as_deref()
        .and_then(local_path)
        .unwrap_or_default()
        .to_owned();
    let now = hydra_db::now();
    hydra_db::users::start_oidc_login(
        &state.pool,
        &nonce_state,
        &hydra_db::users::OidcLogin {
            provider: name.clone(),
            nonce: nonce.clone(),
            verifier,
            after,
            expires: now + LOGIN_SECONDS,
        },
        now,
    )
    .await?;
    let base = base_url(&state, &headers);
    let mut scope = "openid profile email".to_owned();
    for extra in &p.extra_scopes {
        scope.push(' ');
        scope.push_str(extra);
    }
    let query = form(&[
        ("response_type", "code"),
        ("client_id", p.client_id.as_str()),
        ("redirect_uri", &format!("{base}oidc-callback/{name}")),
        ("scope", &scope),
        ("state", &nonce_state),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let sep = if ends.authorization.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut response = redirect(&format!("{}{sep}{query}", ends.authorization));
    set_cookie(
        response.headers_mut(),
        COOKIE,
        &nonce_state,
        LOGIN_SECONDS,
        is_secure(&state, &headers),
    );
    Ok(response)
}

/// The provider's answer.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oidc-callback/NAME?code=&state=`.
async fn oidc_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(back): Query<Callback>,
) -> ApiResult<Response> {
    let p = provider(&state, &name)?;
    let given = back
        .state
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("The answer has no state; start again."))?;
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(&headers);
    let bound = jar
        .get(COOKIE)
        .is_some_and(|c| same_secret(c.value(), given));
    // Taken whatever happens next: a state is good for one answer.
    let login = hydra_db::users::take_oidc_login(&state.pool, given).await?;
    let Some(login) = login.filter(|l| bound && l.provider == name) else {
        return Err(ApiError::bad_request(
            "This sign-in was not started from this browser, was already used, or is unknown; start again.",
        ));
    };
    if login.expires < hydra_db::now() {
        return Err(ApiError::bad_request(
            "This sign-in took too long; start again.",
        ));
    }
    let ends = endpoints(p).await?;
    if let Some(iss) = &back.iss
        && iss != &ends.issuer
    {
        return Err(ApiError::bad_request(
            "The answer comes from another issuer.",
        ));
    }
    if let Some(error) = back.error {
        let why = back.error_description.unwrap_or_else(|| error.clone());
        return Err(match error.as_str() {
            "access_denied" => {
                ApiError::forbidden(format!("The provider did not sign you in: {why}"))
            }
            "temporarily_unavailable" => {
                ApiError::Unavailable(format!("The provider is busy: {why}"))
            }
            _ => ApiError::Internal(format!("the provider answered {error}: {why}")),
        });
    }
    let code = back
        .code
        .ok_or_else(|| ApiError::bad_request("The answer has no code."))?;
    let base = base_url(&state, &headers);
    let token = exchange(
        p,
        &ends,
        &code,
        &login.verifier,
        &format!("{base}oidc-callback/{name}"),
    )
    .await?;
    let claims = verify(&token, p, &ends, &login.nonce).await?;
    let sub = claims["sub"].as_str().unwrap_or_default();
    let user = format!("{name}:{sub}");
    let email = claims["email"].as_str().unwrap_or_default().to_owned();
    let full_name = claims["name"]
        .as_str()
        .or(claims["preferred_username"].as_str())
        .unwrap_or_default()
        .to_owned();
    let roles: Option<Vec<String>> = claims.get("hydra_roles").map(|r| {
        let list: Vec<String> = match r {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<String> = list
            .into_iter()
            .map(|r| r.replace('_', "-"))
            .filter(|r| hydra_db::users::ROLES.contains(&r.as_str()))
            .collect();
        roles.sort();
        roles.dedup();
        roles
    });
    if !email.is_empty() {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let allowed = &state.config.web.allowed_domains;
        if !allowed.is_empty() && !allowed.iter().any(|d| d == domain) {
            return Err(ApiError::forbidden(format!(
                "Accounts of the domain ‘{domain}’ cannot sign in here."
            )));
        }
    }
    let person = hydra_db::users::External {
        name: &user,
        full_name: &full_name,
        email: &email,
        kind: "oidc",
        roles: roles.as_deref(),
    };
    if let Err(refused) = hydra_db::users::external_login(&state.pool, &person).await? {
        return Err(ApiError::forbidden(format!("Cannot sign in: {refused}.")));
    }
    tracing::info!(%user, provider = %name, "signed in with OpenID Connect");
    let mut response = signed_in(&state, &headers, &viewer, &user, &login.after).await?;
    set_cookie(response.headers_mut(), COOKIE, "", 0, false);
    Ok(response.into_response())
}

/// Trades `code` for the ID token.
async fn exchange(
    p: &OidcProvider,
    ends: &Endpoints,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> ApiResult<String> {
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ]);
    let response = client()?
        .post(&ends.token)
        .basic_auth(encode(&p.client_id), Some(encode(p.client_secret.expose())))
        .header("Accept", "application/json")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable("the token", &e))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let why = answer["error_description"]
            .as_str()
            .or(answer["error"].as_str())
            .unwrap_or("no reason given");
        return Err(ApiError::forbidden(format!(
            "The provider refused the sign-in: {why}"
        )));
    }
    answer["id_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::forbidden("The provider gave no ID token."))
}

fn refused(why: &str) -> ApiError {
    tracing::warn!("OpenID Connect: refused an ID token: {why}");
    ApiError::forbidden(format!("The ID token is not valid: {why}."))
}

/// The claims of `token` once its signature, issuer, audience, times and
/// nonce are right.
async fn verify(token: &str, p: &OidcProvider, ends: &Endpoints, nonce: &str) -> ApiResult<Value> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, signature] = parts[..] else {
        return Err(refused("not a JSON Web Token"));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok();
    let header: Value = decode(head)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refused("its header is unreadable"))?;
    if header["alg"] != "RS256" {
        return Err(refused("it is not signed with RS256"));
    }
    let kid = header["kid"].as_str();
    let signature = decode(signature).ok_or_else(|| refused("its signature is unreadable"))?;
    let signed = format!("{head}.{body}");
    let mut checked = false;
    for fresh in [false, true] {
        let keys = fetch_json(&ends.jwks, Duration::from_secs(60), fresh).await?;
        let candidates: Vec<&Value> = keys["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| k["kty"] == "RSA")
            .filter(|k| kid.is_none() || k["kid"].as_str() == kid)
            .collect();
        if candidates.is_empty() && !fresh {
            continue;
        }
        for key in candidates {
            let (Some(n), Some(e)) = (
                key["n"].as_str().and_then(decode),
                key["e"].as_str().and_then(decode),
            ) else {
                continue;
            };
            let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
            if public
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &signature,
                )
                .is_ok()
            {
                checked = true;
                break;
            }
        }
        break;
    }
    if !checked {
        return Err(refused("its signature is not by the provider's keys"));
    }
    let claims: Value = decode(body)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refused("its claims are unreadable"))?;
    if claims["iss"].as_str() != Some(ends.issuer.as_str()) {
        return Err(refused("another issuer made it"));
    }
    let for_us = match &claims["aud"] {
        Value::String(a) => a == &p.client_id,
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str() == Some(p.client_id.as_str())),
        _ => false,
    };
    if !for_us {
        return Err(refused("it is meant for another client"));
    }
    let now = i64::from(hydra_db::now());
    match claims["exp"].as_i64() {
        Some(exp) if exp + LEEWAY > now => {}
        _ => return Err(refused("it has expired")),
    }
    if let Some(nbf) = claims["nbf"].as_i64()
        && nbf - LEEWAY > now
    {
        return Err(refused("it is not valid yet"));
    }
    if !claims["nonce"]
        .as_str()
        .is_some_and(|n| same_secret(n, nonce))
    {
        return Err(refused("its nonce is not this sign-in's"));
    }
    if claims["sub"].as_str().is_none_or(str::is_empty) {
        return Err(refused("it names no subject"));
    }
    Ok(claims)
}

/// Where signing out sends an OpenID Connect user: the provider's
/// end-session endpoint (explicit or discovered), back to `base`
/// afterwards; `None` for other users or providers without one.
pub(crate) async fn end_session(
    state: &AppState,
    account: &hydra_db::users::Account,
    base: &str,
) -> Option<String> {
    if account.kind != "oidc" {
        return None;
    }
    let (name, _) = account.name.split_once(':')?;
    let p = state.config.web.oidc.iter().find(|p| p.name == name)?;
    let end = match &p.end_session_endpoint {
        Some(end) => end.clone(),
        None => {
            let url = p.discovery_url.as_ref()?;
            let discovered = fetch_json(url, Duration::from_secs(3600), false)
                .await
                .ok()?;
            discovered["end_session_endpoint"].as_str()?.to_owned()
        }
    };
    let sep = if end.contains('?') { '&' } else { '?' };
    Some(format!(
        "{end}{sep}post_logout_redirect_uri={}&client_id={}",
        encode(base),
        encode(&p.client_id)
    ))
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/oidc-redirect/{name}", get(oidc_redirect))
        .route("/oidc-callback/{name}", get(oidc_callback))
}
