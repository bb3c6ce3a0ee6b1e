//! Reading Hydra's PUT bodies, which arrive as JSON or as forms: fields may
//! be strings, numbers or booleans, and checkboxes count when present.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

pub(crate) type Body = Map<String, Value>;

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
