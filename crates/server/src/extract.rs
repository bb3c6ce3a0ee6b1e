//! Typed path extractors: each parses its segments, loads the object it
//! names and answers the one 404 its routes share, so handlers start from
//! an object that exists.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use hydra_db::ids::{BuildId, EvalId, JobsetId};

use crate::error::ApiError;
use crate::state::AppState;

/// A build or evaluation id from the URL.
pub(crate) fn parse_id(text: &str, what: &str) -> Result<i32, ApiError> {
    text.parse::<i32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid {what} ID ‘{text}’.")))
}

/// The value of path segment `name`.
async fn segment(parts: &mut Parts, state: &AppState, name: &str) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .ok_or_else(|| ApiError::Internal(format!("the route has no {{{name}}} segment")))
}

/// `/build/{id}/…`: a build that exists.
#[derive(Clone, Debug)]
pub(crate) struct BuildPath {
    pub id: BuildId,
    pub finished: bool,
    pub project: String,
}

impl FromRequestParts<AppState> for BuildPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = BuildId(parse_id(&segment(parts, state, "id").await?, "build")?);
        let (finished, project) = hydra_db::builds::whereabouts(&state.pool, id)
            .await?
            .ok_or_else(|| BuildPath::missing(id))?;
        Ok(BuildPath {
            id,
            finished,
            project,
        })
    }
}

impl BuildPath {
    /// The 404 of a build that does not exist.
    pub(crate) fn missing(id: BuildId) -> ApiError {
        ApiError::not_found(format!("Build with ID {id} doesn't exist."))
    }
}

/// `/eval/{id}/…`: an evaluation that exists.
#[derive(Clone, Debug)]
pub(crate) struct EvalPath {
    pub id: EvalId,
    pub project: String,
    pub jobset: String,
}

impl FromRequestParts<AppState> for EvalPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = EvalId(parse_id(&segment(parts, state, "id").await?, "evaluation")?);
        let (project, jobset) = hydra_db::evals::jobset_of(&state.pool, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("Evaluation {id} doesn't exist.")))?;
        Ok(EvalPath {
            id,
            project,
            jobset,
        })
    }
}

/// `/jobset/{project}/{jobset}/…` (and `/job/…`): a jobset that exists.
#[derive(Clone, Debug)]
pub(crate) struct JobsetPath {
    pub id: JobsetId,
    pub project: String,
    pub jobset: String,
}

impl FromRequestParts<AppState> for JobsetPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let project = segment(parts, state, "project").await?;
        let jobset = segment(parts, state, "jobset").await?;
        let id = hydra_db::jobsets::id_of(&state.pool, &project, &jobset)
            .await?
            .ok_or_else(|| JobsetPath::missing(&project, &jobset))?;
        Ok(JobsetPath {
            id,
            project,
            jobset,
        })
    }
}

impl JobsetPath {
    /// The 404 of a jobset that does not exist.
    pub(crate) fn missing(project: &str, jobset: &str) -> ApiError {
        ApiError::not_found(format!("Jobset ‘{project}:{jobset}’ doesn't exist."))
    }
}

/// `/project/{project}/…`: a project that exists.
#[derive(Clone, Debug)]
pub(crate) struct ProjectPath {
    pub name: String,
}

impl FromRequestParts<AppState> for ProjectPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = segment(parts, state, "project").await?;
        if !hydra_db::projects::exists(&state.pool, &name).await? {
            return Err(ProjectPath::missing(&name));
        }
        Ok(ProjectPath { name })
    }
}

impl ProjectPath {
    /// The 404 of a project that does not exist.
    pub(crate) fn missing(name: &str) -> ApiError {
        ApiError::not_found(format!("Project ‘{name}’ doesn't exist."))
    }
}
