//! `BuildProducts` and `BuildMetrics`: what a finished build offers for
//! download and the figures it reported.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::ids::BuildId;

/// A `BuildProducts` row (without the build and number).
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    pub kind: String,
    pub subtype: String,
    pub file_size: Option<i64>,
    /// SHA-256, hex.
    pub sha256: Option<String>,
    pub path: String,
    pub name: String,
    pub default_path: Option<String>,
}

/// A metric: value and unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub value: f64,
    pub unit: Option<String>,
}

/// Replaces build `id`'s products and metrics (numbered in order).
pub async fn replace(
    conn: &mut PgConnection,
    id: BuildId,
    products: &[Product],
    metrics: &BTreeMap<String, Metric>,
) -> Result<(), sqlx::Error> {
    delete(conn, id).await?;
    for (i, p) in products.iter().enumerate() {
        sqlx::query(
            "insert into BuildProducts (build, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(i as i32 + 1)
        .bind(&p.kind)
        .bind(&p.subtype)
        .bind(p.file_size)
        .bind(&p.sha256)
        .bind(&p.path)
        .bind(&p.name)
        .bind(&p.default_path)
        .execute(&mut *conn)
        .await?;
    }
    for (name, m) in metrics {
        sqlx::query(
            "insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp) \
             select b.id, $2, $3, $4, j.project, j.name, b.job, b.timestamp from Builds b \
             join Jobsets j on j.id = b.jobset_id where b.id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(&m.unit)
        .bind(m.value)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Gives build `id` the products and metrics of build `from`.
pub async fn copy(conn: &mut PgConnection, id: BuildId, from: BuildId) -> Result<(), sqlx::Error> {
    delete(conn, id).await?;
    sqlx::query(
        "insert into BuildProducts (build, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath) \
         select $1, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath \
         from BuildProducts where build = $2",
    )
    .bind(id)
    .bind(from)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp) \
         select $1, m.name, m.unit, m.value, j.project, j.name, b.job, b.timestamp \
         from BuildMetrics m, Builds b join Jobsets j on j.id = b.jobset_id \
         where m.build = $2 and b.id = $1",
    )
    .bind(id)
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn delete(conn: &mut PgConnection, id: BuildId) -> Result<(), sqlx::Error> {
    sqlx::query("delete from BuildProducts where build = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from BuildMetrics where build = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A product as the notification plugins read it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Listed {
    #[sqlx(rename = "productnr")]
    pub nr: i32,
    pub subtype: String,
    pub name: String,
    pub path: Option<String>,
}

/// Build `id`'s products, by number.
pub async fn of_build(pool: &sqlx::PgPool, id: BuildId) -> Result<Vec<Listed>, sqlx::Error> {
    sqlx::query_as(
        "select productnr, subtype, name, path from BuildProducts where build = $1 order by productnr",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
