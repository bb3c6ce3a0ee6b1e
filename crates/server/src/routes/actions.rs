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

/// The redirect back to the page an action was taken on (`build/1`,
/// `eval/2`).
pub(crate) fn back_to(state: &AppState, headers: &HeaderMap, page: &str) -> Response {
    redirect(&format!("{}{page}", base_url(state, headers)))
}
