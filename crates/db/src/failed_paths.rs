//! `FailedPaths`: outputs whose build failed in a way that is cached, so
//! later builds that need them fail at once instead of building again.

use std::collections::BTreeSet;

use sqlx::{PgConnection, PgPool};

/// Which of `paths` are known to fail.
pub async fn known(
    pool: &PgPool,
    paths: &BTreeSet<String>,
) -> Result<BTreeSet<String>, sqlx::Error> {
    if paths.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: Vec<&str> = paths.iter().map(String::as_str).collect();
    let found: Vec<String> =
        sqlx::query_scalar("select path from FailedPaths where path = any($1)")
            .bind(&list)
            .fetch_all(pool)
            .await?;
    Ok(found.into_iter().collect())
}

/// Records that `paths` fail.
pub async fn add(conn: &mut PgConnection, paths: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query("insert into FailedPaths (path) select unnest($1::text[]) on conflict do nothing")
        .bind(paths)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets every failed path; returns how many there were.
pub async fn clear(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("delete from FailedPaths")
        .execute(pool)
        .await?
        .rows_affected())
}
