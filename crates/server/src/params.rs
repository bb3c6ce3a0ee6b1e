//! Request parameters from a JSON body or a form, as Hydra accepts both.

use axum::extract::{Form, FromRequest, Json, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::negotiate::wants_json;

/// `T` from a JSON body (`Content-Type: application/json`), else from a form
/// body (or, for GET, the query string).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S, T> FromRequest<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "0");
        if json && !empty {
            let Json(value) = Json::<T>::from_request(req, state).await.map_err(|e| {
                ApiError::bad_request(format!("invalid JSON body: {}", e.body_text()))
            })?;
            return Ok(Params(value));
        }
        if json || (empty && wants_json(req.headers())) {
            return serde_json::from_str("{}")
                .map(Params)
                .map_err(|e| ApiError::bad_request(format!("missing parameters: {e}")));
        }
        let Form(value) = Form::<T>::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid parameters: {}", e.body_text())))?;
        Ok(Params(value))
    }
}
