//! What the account pages read besides the user.

use serde_json::Value;
use sqlx::PgPool;

use crate::error::{ApiError, ApiResult};

/// `user`'s API tokens (never their secrets), by id.
pub(crate) async fn tokens(pool: &PgPool, user: &str) -> ApiResult<Value> {
    let text: String = sqlx::query_scalar(
        "select coalesce(json_agg(json_build_object('id', id, 'name', name, 'created', created, \
         'lastused', lastUsed) order by id), '[]'::json)::text from ApiTokens where userName = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await?;
    serde_json::from_str(&text).map_err(|e| ApiError::Internal(e.to_string()))
}
