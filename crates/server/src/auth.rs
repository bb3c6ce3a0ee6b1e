//! Who is asking, and what they may do.
//!
//! A request is authenticated by the session cookie (`hydra_session`,
//! sessions in PostgreSQL so several server processes share them) or by an
//! API token (`Authorization: Bearer …`). Only SHA-256 digests of either
//! secret are stored. The [`guard`] layer resolves the viewer once per
//! request, enforces `private = 1` and Hydra's CSRF rule, and handlers read
//! the result with the [`Viewer`] extractor and decide with the checks here,
//! which follow the role table of Hydra's web interface.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(crate) const SESSION_COOKIE: &str = "hydra_session";
/// Sessions last a week, as Hydra's.
pub(crate) const SESSION_SECONDS: i32 = 7 * 24 * 3600;
/// API tokens start with this, so they are recognisable in logs and leaks.
pub(crate) const TOKEN_PREFIX: &str = "hydra_";

/// A signed-in user with their roles.
pub(crate) use hydra_db::users::Account;

/// The user behind a request, if any.
#[derive(Clone, Debug, Default)]
pub(crate) struct Viewer {
    pub account: Option<Account>,
    /// Authenticated by an API token rather than a cookie.
    pub by_token: bool,
    /// The digest of the session cookie, when a session was presented.
    pub session: Option<String>,
}

impl Viewer {
    pub(crate) fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.account
            .as_ref()
            .is_some_and(|a| a.roles.iter().any(|r| r == role))
    }

    /// The account, or Hydra's refusal for anonymous writers.
    pub(crate) fn require_login(&self) -> ApiResult<&Account> {
        self.account
            .as_ref()
            .ok_or_else(|| ApiError::forbidden("This page requires you to sign in."))
    }

    pub(crate) fn require_admin(&self) -> ApiResult<&Account> {
        let account = self.require_login()?;
        if self.is_admin() {
            Ok(account)
        } else {
            Err(ApiError::forbidden("Only administrators can do this."))
        }
    }

    /// Owner, member or admin: may edit the project and its jobsets.
    pub(crate) async fn is_project_owner(&self, pool: &PgPool, project: &str) -> ApiResult<bool> {
        let Some(account) = &self.account else {
            return Ok(false);
        };
        if self.is_admin() {
            return Ok(true);
        }
        let owner = hydra_db::projects::is_owner_or_member(pool, project, &account.name).await?;
        Ok(owner.unwrap_or(false))
    }

    pub(crate) async fn require_project_owner(
        &self,
        pool: &PgPool,
        project: &str,
    ) -> ApiResult<()> {
        self.require_login()?;
        if self.is_project_owner(pool, project).await? {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "Only the project members or administrators can perform this operation.",
            ))
        }
    }

    /// `role` (restart-jobs, cancel-build, bump-to-front, eval-jobset), or
    /// ownership of the project, or admin.
    pub(crate) async fn require_role_or_owner(
        &self,
        pool: &PgPool,
        role: &str,
        project: &str,
    ) -> ApiResult<()> {
        self.require_login()?;
        if self.has_role(role) || self.is_project_owner(pool, project).await? {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "Only the project members, administrators, and accounts with the {role} role can perform this operation."
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .unwrap_or_default())
    }
}

pub(crate) use crate::passwords::{digest, new_secret, same_secret};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The account named `name` with its roles.
pub(crate) async fn account(pool: &PgPool, name: &str) -> ApiResult<Option<Account>> {
    Ok(hydra_db::users::account(pool, name).await?)
}

/// Resolves the viewer from the request's cookie or token.
async fn resolve(pool: &PgPool, headers: &HeaderMap) -> ApiResult<Viewer> {
    let now = hydra_db::now();
    if let Some(token) = bearer(headers) {
        let user = hydra_db::sessions::token_user(pool, &digest(token), now).await?;
        let Some(user) = user else {
            return Err(ApiError::Unauthorized("Invalid API token.".into()));
        };
        return Ok(Viewer {
            account: account(pool, &user).await?,
            by_token: true,
            session: None,
        });
    }
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
    let Some(cookie) = jar.get(SESSION_COOKIE) else {
        return Ok(Viewer::default());
    };
    let id = digest(cookie.value_trimmed());
    let user = hydra_db::sessions::user_of(pool, &id, now).await?;
    Ok(Viewer {
        account: match user {
            Some(user) => account(pool, &user).await?,
            None => None,
        },
        by_token: false,
        session: Some(id),
    })
}

/// `s` ending in `/` (base URLs, `Referer` and `Origin` are compared in
/// this form, so `http://host:3000` and `http://host:3000/` are the same).
fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

/// The base URL of the server as the client sees it, ending in `/`
/// (Catalyst's `uri_for('/')`): `base_uri` when it is configured, else the
/// request's own host; behind a proxy (`using_frontend_proxy`),
/// `X-Request-Base`, else `base_uri`, else the forwarded host and scheme.
/// A client's `Host` never overrides a configured `base_uri`: redirects and
/// the CSRF rule would follow what the client claims.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let web = &state.config.web;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !web.using_frontend_proxy {
        if web.base_uri_configured {
            return with_slash(&web.base_uri);
        }
        return with_slash(&format!("http://{}", header("host").unwrap_or("localhost")));
    }
    if let Some(base) = header("x-request-base") {
        return with_slash(base);
    }
    if !web.base_uri.is_empty() {
        return with_slash(&web.base_uri);
    }
    let scheme = header("x-forwarded-proto").unwrap_or("http");
    let host = header("x-forwarded-host")
        .and_then(|h| h.split(',').next())
        .map(str::trim)
        .or_else(|| header("host"))
        .unwrap_or("localhost");
    with_slash(&format!("{scheme}://{host}"))
}

/// Whether the client reached us over TLS (as far as a proxy tells).
pub(crate) fn is_secure(state: &AppState, headers: &HeaderMap) -> bool {
    base_url(state, headers).starts_with("https://")
}

/// Hydra's CSRF rule: a state-changing request must come from a page of
/// this server: its `Referer` or `Origin`, ending in `/` once normalised,
/// starts with the base URL (so `Referer: http://host:3000` is accepted).
pub(crate) fn check_same_origin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let base = base_url(state, headers);
    let from_here = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| with_slash(v).starts_with(&base))
    };
    if from_here(header::REFERER) || from_here(header::ORIGIN) {
        Ok(())
    } else {
        Err(ApiError::CrossSite { base })
    }
}

/// Paths that need no login on a private server.
fn public_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    matches!(
        path,
        "/login"
            | "/setup"
            | "/logo"
            | "/api/push-github"
            | "/api/push-gitea"
            | "/api/push-gitlab"
            | "/github-redirect"
            | "/github-login"
            | "/google-login"
            | "/robots.txt"
    ) || path.starts_with("/static/")
        || path.starts_with("/oidc-redirect/")
        || path.starts_with("/oidc-callback/")
}

/// Webhooks authenticate with signatures, not with the browser's cookies.
fn webhook_path(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/api/push-github" | "/api/push-gitea" | "/api/push-gitlab"
    )
}

fn readonly_ip(state: &AppState, headers: &HeaderMap) -> bool {
    let ips = &state.config.web.readonly_ips;
    if ips.is_empty() {
        return false;
    }
    let client = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    client.is_some_and(|c| ips.iter().any(|ip| ip == c))
}

/// The layer in front of every route: who is asking, `private`, CSRF.
pub(crate) async fn guard(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let viewer = match resolve(&state.pool, request.headers()).await {
        Ok(viewer) => viewer,
        Err(e) => return e.into_response(),
    };
    let path = request.uri().path().to_string();
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // Only POST is checked, as in Hydra: a browser cannot send PUT or
    // DELETE to another site without a CORS preflight, which is never
    // granted here.
    let checked = *request.method() == Method::POST;
    let shut_out = state.config.web.private
        && viewer.account.is_none()
        && !(safe && readonly_ip(&state, request.headers()));
    let page_user = crate::pages::PageUser {
        name: viewer.account.as_ref().map(|a| a.name.clone()),
        admin: viewer.is_admin(),
        creates_projects: viewer.is_admin() || viewer.has_role("create-projects"),
        shut_out,
        events_since: state.live.last_id(),
        queue: None,
        flash: None,
    };
    if shut_out && !public_path(&path) {
        let mut refused =
            ApiError::forbidden("This server is private: please sign in.").into_response();
        refused.extensions_mut().insert(page_user);
        return refused;
    }
    if checked
        && !viewer.by_token
        && !webhook_path(&path)
        && let Err(e) = check_same_origin(&state, request.headers())
    {
        return e.into_response();
    }
    let wants_page = !crate::negotiate::wants_json(request.headers()) && !path.starts_with("/api/");
    request.extensions_mut().insert(viewer);
    let mut response = next.run(request).await;
    let mut page_user = page_user;
    // The Status menu counts what runs and waits, for pages only.
    if wants_page
        && response
            .extensions()
            .get::<crate::pages::Rendered>()
            .is_some()
    {
        page_user.queue = hydra_db::builds::queue_counts(&state.pool).await.ok();
    }
    response.extensions_mut().insert(page_user);
    response
}

/// The client's address, for throttling sign-in attempts: the peer of the
/// connection, or behind a proxy (`using_frontend_proxy`) the first
/// address of `X-Forwarded-For`.
#[derive(Clone, Debug)]
pub(crate) struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let forwarded = state
            .config
            .web
            .using_frontend_proxy
            .then(|| {
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .map(|v| v.trim().to_string())
            })
            .flatten();
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(ClientAddress(
            forwarded.or(peer).unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// For actions Hydra performs on GET (build restart, cancel, …): the CSRF
/// rule applies to them too, unless a token authenticated the request.
/// Hydra leaves them unchecked, which lets another site cancel builds by
/// linking to them; here they need a same-origin `Referer` like a POST.
#[derive(Debug)]
pub(crate) struct SameOrigin;

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let by_token = parts.extensions.get::<Viewer>().is_some_and(|v| v.by_token);
        if !by_token {
            check_same_origin(state, &parts.headers)?;
        }
        Ok(SameOrigin)
    }
}

/// Starts a session for `user`: a new random id every time (no fixation),
/// and the old session, if any, ends.
pub async fn start_session(pool: &PgPool, user: &str, old: Option<&str>) -> ApiResult<String> {
    let secret = new_secret();
    let now = hydra_db::now();
    hydra_db::sessions::start(
        pool,
        &digest(&secret),
        user,
        (now, now + SESSION_SECONDS),
        old,
    )
    .await?;
    Ok(secret)
}

/// Adds a `Set-Cookie` to `headers` for the site-wide cookie `name`,
/// which scripts cannot read: `value` for `max_age` seconds (0 removes
/// it), sent on navigations from other sites (`SameSite=Lax`), only over
/// HTTPS when `secure`.
pub(crate) fn set_cookie(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
    max_age: i32,
    secure: bool,
) {
    let secure = if secure { "; Secure" } else { "" };
    if let Ok(cookie) = axum::http::HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    )) {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// Adds the session cookie `secret` (or its removal when `None`).
pub(crate) fn set_session_cookie(headers: &mut HeaderMap, secret: Option<&str>, secure: bool) {
    let max_age = if secret.is_some() { SESSION_SECONDS } else { 0 };
    set_cookie(
        headers,
        SESSION_COOKIE,
        secret.unwrap_or_default(),
        max_age,
        secure,
    );
}
