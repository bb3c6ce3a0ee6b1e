//! What downloads read: a build's products.

use sqlx::PgPool;

use crate::error::ApiResult;

/// A product as a download serves it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Product {
    pub productnr: i32,
    pub path: Option<String>,
    pub name: Option<String>,
    pub defaultpath: Option<String>,
    pub stoptime: Option<i32>,
}

const PRODUCT: &str = "select p.productnr, p.path, p.name, p.defaultPath as defaultpath, b.stopTime as stoptime \
     from BuildProducts p join Builds b on b.id = p.build where p.build = $1";

/// Build `build`'s product numbered or named `nr`.
pub(crate) async fn by_number_or_name(
    pool: &PgPool,
    build: i32,
    nr: &str,
) -> ApiResult<Option<Product>> {
    let sql = format!(
        "{PRODUCT} and (p.productnr::text = $2 or p.name = $2) order by p.productnr limit 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(build)
        .bind(nr)
        .fetch_optional(pool)
        .await?)
}

/// Build `build`'s first product of type `kind`/`subtype`.
pub(crate) async fn by_type(
    pool: &PgPool,
    build: i32,
    kind: &str,
    subtype: &str,
) -> ApiResult<Option<Product>> {
    let sql = format!("{PRODUCT} and p.type = $2 and p.subtype = $3 order by p.productnr limit 1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(build)
        .bind(kind)
        .bind(subtype)
        .fetch_optional(pool)
        .await?)
}
