//! Reading Hydra's PUT bodies, which arrive as JSON or as forms: fields may
//! be strings, numbers or booleans, and checkboxes count when present.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

pub(crate) type Body = Map<String, Value>;

/// The body a JSON object makes (anything else: an empty one), for tests.
#[cfg(test)]
pub(crate) fn body_of(value: Value) -> Body {
    match value {
        Value::Object(map) => map,
        _ => Body::new(),
    }
}

/// A text field; numbers and booleans are accepted as their text.
pub(crate) fn text(body: &Body, key: &str) -> Option<String> {
    match body.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        _ => None,
    }
}

/// A checkbox: present means on, except the explicit offs JSON clients
/// send (`false`, `0`, `"0"`, `"false"`, `"off"`).
pub(crate) fn flag(body: &Body, key: &str) -> bool {
    match body.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !matches!(s.as_str(), "0" | "false" | "off" | ""),
        Some(_) => true,
    }
}

/// An integer field within `range`, or `default` when absent.
pub(crate) fn integer(
    body: &Body,
    key: &str,
    default: i32,
    range: std::ops::RangeInclusive<i32>,
) -> ApiResult<i32> {
    let Some(raw) = text(body, key).filter(|s| !s.trim().is_empty()) else {
        return Ok(default);
    };
    raw.trim()
        .parse::<i32>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid value ‘{raw}’ for {key}: expected an integer from {} to {}.",
                range.start(),
                range.end()
            ))
        })
}

/// A refused form: the error and the field it is about (empty when it is
/// about the whole form), so that a page can show it next to the field.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub field: &'static str,
    pub error: ApiError,
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> ApiError {
        invalid.error
    }
}

impl From<ApiError> for Invalid {
    fn from(error: ApiError) -> Invalid {
        Invalid { field: "", error }
    }
}

impl From<sqlx::Error> for Invalid {
    fn from(error: sqlx::Error) -> Invalid {
        ApiError::from(error).into()
    }
}

impl From<hydra_db::DbError> for Invalid {
    fn from(error: hydra_db::DbError) -> Invalid {
        ApiError::from(error).into()
    }
}

/// Ties an error to a field.
pub(crate) trait OnField<T> {
    fn on(self, field: &'static str) -> Result<T, Invalid>;
}

impl<T> OnField<T> for ApiResult<T> {
    fn on(self, field: &'static str) -> Result<T, Invalid> {
        self.map_err(|error| Invalid { field, error })
    }
}

/// A refusal of `field` with `message` (400).
pub(crate) fn refuse(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        error: ApiError::bad_request(message),
    }
}

impl Invalid {
    /// Whether a form can show this error next to its fields (the client
    /// sent something wrong), rather than on an error page.
    pub(crate) fn shown_on_form(&self) -> bool {
        matches!(
            self.error,
            ApiError::BadRequest(_) | ApiError::Forbidden(_) | ApiError::Conflict(_)
        )
    }
}
