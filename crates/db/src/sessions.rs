//! `WebSessions` and `ApiTokens`: who a request comes from. Both store
//! only a digest of the secret the client holds.

use sqlx::PgPool;

/// Starts session `id` (a digest) for `user` from `now` to `expires`;
/// `old`, if given, ends, and so does every expired session.
pub async fn start(
    pool: &PgPool,
    id: &str,
    user: &str,
    (now, expires): (i32, i32),
    old: Option<&str>,
) -> Result<(), sqlx::Error> {
    if let Some(old) = old {
        end(pool, old).await?;
    }
    sqlx::query("delete from WebSessions where expires <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query("insert into WebSessions (id, userName, created, expires) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(user)
        .bind(now)
        .bind(expires)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends session `id`.
pub async fn end(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from WebSessions where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The user of session `id` if it has not expired at `now`.
/// Ends every web session of user `name` (their password changed).
pub async fn end_all(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from WebSessions where userName = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub async fn user_of(pool: &PgPool, id: &str, now: i32) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select userName from WebSessions where id = $1 and expires > $2")
        .bind(id)
        .bind(now)
        .fetch_optional(pool)
        .await
}

/// The user of the API token with digest `hash`; its last use is
/// recorded at most once a minute, not on every request.
pub async fn token_user(
    pool: &PgPool,
    hash: &str,
    now: i32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "with t as (select id, userName, lastUsed from ApiTokens where hash = $1), \
         touched as (update ApiTokens a set lastUsed = $2 from t where a.id = t.id \
                     and (t.lastUsed is null or t.lastUsed < $2 - 60)) \
         select userName from t",
    )
    .bind(hash)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// Adds an API token (its digest `hash`) named `name` for `user`;
/// returns its id.
pub async fn add_token(
    pool: &PgPool,
    user: &str,
    name: &str,
    hash: &str,
    now: i32,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("insert into ApiTokens (userName, name, hash, created) values ($1, $2, $3, $4) returning id")
        .bind(user)
        .bind(name)
        .bind(hash)
        .bind(now)
        .fetch_one(pool)
        .await
}

/// Revokes `user`'s token `id`; false if they have none with that id.
pub async fn revoke_token(pool: &PgPool, user: &str, id: i32) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from ApiTokens where id = $1 and userName = $2")
        .bind(id)
        .bind(user)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
