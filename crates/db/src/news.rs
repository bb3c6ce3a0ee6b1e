//! `NewsItems`: the administrators' announcements on the front page.

use sqlx::PgPool;

/// A news item.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct NewsItem {
    pub id: i32,
    pub contents: String,
    #[sqlx(rename = "createtime")]
    pub create_time: i32,
    pub author: String,
}

/// Every news item, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<NewsItem>, sqlx::Error> {
    sqlx::query_as(
        "select id, contents, createTime, author from NewsItems order by createTime desc, id desc",
    )
    .fetch_all(pool)
    .await
}

/// Adds a news item by `author` at `now`.
pub async fn add(pool: &PgPool, contents: &str, author: &str, now: i32) -> Result<(), sqlx::Error> {
    sqlx::query("insert into NewsItems (contents, createTime, author) values ($1, $2, $3)")
        .bind(contents)
        .bind(now)
        .bind(author)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes news item `id`; false if there was none.
pub async fn delete(pool: &PgPool, id: i32) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from NewsItems where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
