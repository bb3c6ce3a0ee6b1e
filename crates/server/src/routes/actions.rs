//! The actions on sets of builds that Hydra's pages offer (restart,
//! cancel, bump to the front), with the role each needs.

use axum::http::HeaderMap;
use axum::response::Response;

use super::redirect;
use crate::auth::{Viewer, base_url};
use crate::error::ApiResult;
use crate::state::AppState;

/// An action on builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Restart,
    Cancel,
    Bump,
}

impl Action {
    /// What was done to `n` builds, for the page shown next.
    pub(crate) fn done(self, n: u64) -> String {
        let verb = match self {
            Action::Restart => "restarted",
            Action::Cancel => "cancelled",
            Action::Bump => "bumped to the front of the queue",
        };
        match n {
            0 => format!("No build needed to be {verb}."),
            1 => format!("1 build has been {verb}."),
            n => format!("{n} builds have been {verb}."),
        }
    }

    /// The role that allows it (besides owning the project, or admin).
    pub(crate) fn role(self) -> &'static str {
        match self {
            Action::Restart => "restart-jobs",
            Action::Cancel => "cancel-build",
            Action::Bump => "bump-to-front",
        }
    }
}

/// Whether `viewer` may take `action` on builds of `project`: the
/// action's role, the project, or admin.
pub(crate) async fn authorize(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    action: Action,
) -> ApiResult<()> {
    viewer
        .require_role_or_owner(&state.pool, action.role(), project)
        .await
}

/// Takes `action` on builds `ids` (see [`authorize`]); returns how many
/// builds changed.
pub(crate) async fn take(
    state: &AppState,
    action: Action,
    ids: &[hydra_db::ids::BuildId],
) -> ApiResult<u64> {
    Ok(match action {
        Action::Restart => hydra_db::builds::restart_builds(&state.pool, ids).await?,
        Action::Cancel => hydra_db::builds::cancel_builds(&state.pool, ids).await?,
        Action::Bump => hydra_db::builds::bump_builds(&state.pool, ids, hydra_db::now()).await?,
    })
}

/// The cookie that carries an action's message to the next page.
pub(crate) const FLASH_COOKIE: &str = "hydra_flash";

/// The redirect back to the page an action was taken on, saying what the
/// action did: the next page shows `message` once.
pub(crate) fn back_saying(
    state: &AppState,
    headers: &HeaderMap,
    page: &str,
    message: &str,
) -> Response {
    let mut response = back_to(state, headers, page);
    say(&mut response, message);
    response
}

/// Leaves `message` for the page `response` leads to.
pub(crate) fn say(response: &mut Response, message: &str) {
    let value = percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC);
    crate::auth::set_cookie(
        response.headers_mut(),
        FLASH_COOKIE,
        &value.to_string(),
        60,
        false,
    );
}

/// The message an action left for this page (see [`back_saying`]), at
/// most 300 characters.
pub(crate) fn flash_of(headers: &HeaderMap) -> Option<String> {
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
    let raw = jar.get(FLASH_COOKIE)?.value().to_string();
    let text = percent_encoding::percent_decode_str(&raw)
        .decode_utf8()
        .ok()?
        .chars()
        .take(300)
        .collect::<String>();
    (!text.trim().is_empty()).then_some(text)
}

/// The redirect back to the page an action was taken on (`build/1`,
/// `eval/2`).
pub(crate) fn back_to(state: &AppState, headers: &HeaderMap, page: &str) -> Response {
    redirect(&format!("{}{page}", base_url(state, headers)))
}
