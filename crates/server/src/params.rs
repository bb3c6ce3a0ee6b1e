//! Request parameters from a JSON body or a form, as Hydra accepts both.

use axum::extract::{Form, FromRequest, Json, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::negotiate::wants_json;

/// `T` from a JSON body (`Content-Type: application/json`), else from a form
/// body (or, for GET, the query string).
#[derive(Debug)]
pub(crate) struct Params<T>(pub T);

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
        let value: serde_json::Value = if json && !empty {
            let Json(value) = Json::<serde_json::Value>::from_request(req, state)
                .await
                .map_err(|e| {
                    ApiError::bad_request(format!("invalid JSON body: {}", e.body_text()))
                })?;
            value
        } else if json || (empty && wants_json(req.headers())) {
            serde_json::Value::Object(Default::default())
        } else {
            let Form(value) = Form::<serde_json::Value>::from_request(req, state)
                .await
                .map_err(|e| {
                    ApiError::bad_request(format!("invalid parameters: {}", e.body_text()))
                })?;
            value
        };
        if let Some(key) = with_nul(&value, "") {
            return Err(ApiError::bad_request(format!(
                "The parameter ‘{key}’ contains a NUL character."
            )));
        }
        serde_json::from_value(value)
            .map(Params)
            .map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")))
    }
}

/// The first parameter (by its path) whose name or text holds a NUL
/// character, which no column of the database can store.
pub(crate) fn with_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(path.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| with_nul(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(here.replace('\0', "\\0"))
            } else {
                with_nul(v, &here)
            }
        }),
        _ => None,
    }
}
