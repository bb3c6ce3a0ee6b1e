//! Errors of the web layer and how they reach clients: Hydra's status codes
//! and `{"error": "..."}` bodies. Internal details (SQL, paths) are logged,
//! never shown.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::pages::Rendered;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// Too many failed attempts: wait `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// The server cannot take this now (a bounded resource is in use).
    #[error("{0}")]
    Unavailable(String),
    /// A cross-site POST: Hydra's text, with 403 (Hydra answers 500, which
    /// reads as a server fault).
    #[error("POST requests should come from ‘{base}’.")]
    CrossSite { base: String },
    #[error("a database error occurred")]
    Database(#[from] sqlx::Error),
    #[error("a database error occurred")]
    Db(#[from] hydra_db::DbError),
    #[error("an internal error occurred")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::NotFound(what.into())
    }

    pub fn forbidden(what: impl Into<String>) -> ApiError {
        ApiError::Forbidden(what.into())
    }

    pub fn bad_request(what: impl Into<String>) -> ApiError {
        ApiError::BadRequest(what.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) | ApiError::CrossSite { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Db(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Database(e) => tracing::error!("database: {e}"),
            ApiError::Db(e) => tracing::error!("database: {e}"),
            ApiError::Internal(e) => tracing::error!("internal: {e}"),
            _ => {}
        }
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (status, [(header::VARY, "Accept")], Json(body.clone())).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self
            && let Ok(v) = header::HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        let mut page = Rendered::new("error", body);
        page.extra.insert(
            "status".into(),
            serde_json::json!(format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            )),
        );
        response.extensions_mut().insert(page);
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
